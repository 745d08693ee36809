"""``python -m streams.bench`` leaves nothing behind on the real broker: repeated
runs used to pile up partitions until the broker ran out of file handles."""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka.admin import NewTopic

from streams.bench import _settings, cleanup
from streams.kafka import admin, ensure_topics
from streams.settings import Settings


def _topics(s: Settings) -> set[str]:
    return set(admin(s).list_topics(timeout=10).topics)


def test_a_benchmark_runs_topics_and_state_directories_are_deleted(settings: Settings):
    run = _settings(settings, "cleanup", 2, "suite")
    kept = _settings(settings, "kept", 2, "suite")
    ensure_topics(run)
    ensure_topics(kept)
    # what a worker of the run creates besides: a Faust changelog and state directories
    changelog = f"{run.worker.app_id}-state-access-changelog"
    adm = admin(run)  # (kept: a client collected before its futures resolve cancels them)
    for fut in adm.create_topics([NewTopic(changelog, 2, 1)]).values():
        fut.result(30)
    dirs = [Path(f"{run.worker.data_dir}-{i}") for i in range(2)]
    for d in dirs:
        (d / "rocksdb").mkdir(parents=True)
        (d / "rocksdb" / "CURRENT").write_text("x")
    log = Path(f"{run.worker.data_dir}-0.log")
    log.write_text("worker log")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and changelog not in _topics(run):
        time.sleep(0.2)  # a created topic reaches the broker's metadata a moment later
    assert changelog in _topics(run) and run.topics.access in _topics(run)

    cleanup(run)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(t.startswith(run.worker.app_id) for t in _topics(run)):
        time.sleep(0.5)  # deletion completes asynchronously on the broker
    left = _topics(run)
    assert not [t for t in left if t.startswith(run.worker.app_id)]
    assert kept.topics.access in left and kept.topics.alerts in left  # another run's topics stay
    assert not any(d.exists() for d in dirs)
    assert log.read_text() == "worker log"  # the logs stay for reading
    log.unlink()
    cleanup(kept)


def test_partition_loads_are_read_from_the_broker_per_partition_number(settings: Settings):
    # the benchmark's bound on two workers comes from these counts
    from confluent_kafka import Producer

    from streams.bench import partition_loads, split_bound

    run = _settings(settings, "loads", 3, "suite")
    ensure_topics(run)
    try:
        p = Producer(run.kafka.confluent_config())
        sent = {0: 0, 1: 0, 2: 0}
        for i, (topic, part) in enumerate([(run.topics.access, 0), (run.topics.api, 0), (run.topics.telemetry, 0),
                                           (run.topics.api, 1), (run.topics.access, 2), (run.topics.api, 2)] * 5):
            p.produce(topic, key=b"k%d" % i, value=b"{}", partition=part)
            sent[part] += 1
        p.flush(30)
        assert partition_loads(run) == sent == {0: 15, 1: 5, 2: 10}
        assert split_bound(partition_loads(run)) == 30 / 15
    finally:
        cleanup(run)
