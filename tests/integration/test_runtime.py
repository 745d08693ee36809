"""Runtime guarantees on the real broker: the stream and replay agree, and two
workers produce the same alerts as one."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from streams.app import rules_for, scorer_factory_for
from streams.feed import produce_files
from streams.kafka import ensure_topics
from streams.replay import Replayer
from streams.settings import Settings

from .conftest import consume, with_rules, worker

USERS = [f"user{i:02d}" for i in range(12)]


def write_events(path: Path, n_per_user: int = 60, seed: int = 7) -> int:
    """Each user reads a few usual resources, then now and then a new one (first-seen alerts)."""
    rng = random.Random(seed)
    lines = []
    t0 = 1_795_800_000
    for step in range(n_per_user):
        for u in USERS:
            res = f"s3://{u}/usual-{rng.randrange(3)}" if step < 25 or rng.random() < 0.8 else f"s3://{u}/new-{step}"
            lines.append(
                orjson.dumps(
                    {
                        "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + step * 120 + USERS.index(u))),
                        "event": {"dataset": "ueba.access", "action": "read", "outcome": "success"},
                        "user": {"name": u},
                        "ueba": {"resource": {"type": "dataset", "id": res}, "transfer": {"bytes": rng.randrange(1000, 5000)}},
                    }
                )
            )
    path.write_bytes(b"\n".join(lines) + b"\n")
    return len(lines)


def replay_alerts(settings: Settings, path: Path) -> tuple[dict[str, dict], int]:
    """Final alerts by id, and how many alert messages (new + count updates) the stream must emit."""
    rp = Replayer(
        scorer_factory_for(settings),
        min_score=settings.worker.min_score,
        rules=rules_for(settings),
        by_source=settings.worker.scorer == "suite",
    )
    rp.run([path])
    return {a.id: orjson.loads(a.to_json()) for a in rp.alerts.values()}, rp.stats.alerts + rp.stats.suppressed


def stream_alerts(msgs: list) -> dict[str, dict]:
    """Each alert id read from the alerts topic: the first version's content with
    the highest count seen (count updates only move the count and last seen)."""
    out: dict[str, dict] = {}
    for m in msgs:
        a = orjson.loads(m.value())
        if a["count"] == 1 or a["id"] not in out:
            prev = out.get(a["id"])
            out[a["id"]] = a if a["count"] == 1 else {**a}
            if prev is not None:
                out[a["id"]]["count"] = max(prev["count"], a["count"])
        else:
            out[a["id"]]["count"] = max(out[a["id"]]["count"], a["count"])
    return out


def _difference(got: dict[str, dict], expected: dict[str, dict]) -> str:
    """What differs, readable: each missing or extra alert's entity, source, time and title."""
    def show(a: dict) -> str:
        return f"{a['entity']} {a['source']} @{a.get('ts', a.get('@timestamp'))} {a['title'][:60]!r} count={a['count']}"

    lines = [f"missing {show(expected[i])}" for i in sorted(set(expected) - set(got))]
    lines += [f"extra {show(got[i])}" for i in sorted(set(got) - set(expected))]
    lines += [f"differs {show(got[i])} vs {show(expected[i])}" for i in sorted(set(got) & set(expected)) if _comparable({i: got[i]}) != _comparable({i: expected[i]})]
    return "\n".join(lines)


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _group_events(*logs: str) -> str:
    """The lines of worker logs that tell a hand-over's story (for failure messages)."""
    keys = ("Joined group", "Revoking", "Setting newly assigned", "Worker ready", "Signal received", "dropped unprocessed",
            "rewind", "Seek stream", "Restoring state", "LeaveGroup", "rebalance again", "were not processed", "do not exist any more")
    return "\n".join(f"[{'ab'[i]}] {ln[:200]}" for i, log in enumerate(logs) for ln in log.splitlines() if any(k in ln for k in keys))


def _comparable(alerts: dict[str, dict]) -> dict[str, tuple]:
    # what must not differ: who, what, score and the baseline it was judged against
    return {i: (a["entity"], a["source"], a["title"], a["score"], orjson.dumps(a["explanation"], option=orjson.OPT_SORT_KEYS), a["count"]) for i, a in alerts.items()}


def test_replay_and_stream_give_the_same_alerts(settings: Settings, tmp_path):
    settings = with_rules(settings)
    ensure_topics(settings)
    src = tmp_path / "events.jsonl"
    write_events(src)
    expected, n_msgs = replay_alerts(settings, src)
    assert len(expected) >= 10
    produce_files(settings, [src])
    with worker(settings, tmp_path):
        msgs = consume(settings, settings.topics.alerts, n_msgs, timeout=120, drain=8)
    got = stream_alerts(msgs)
    assert _comparable(got) == _comparable(expected)


def test_two_workers_produce_the_same_alerts_as_one(settings: Settings, tmp_path):
    settings = with_rules(settings)
    ensure_topics(settings)
    src = tmp_path / "events.jsonl"
    write_events(src)
    expected, n_msgs = replay_alerts(settings, src)
    produce_files(settings, [src])
    other_port = settings.worker.model_copy(update={"web_port": settings.worker.web_port + 1, "data_dir": tmp_path / "w2"})
    s2 = settings.model_copy(update={"worker": other_port})
    with worker(settings, tmp_path, name="a") as a, worker(s2, tmp_path, name="b") as b:
        msgs = consume(settings, settings.topics.alerts, n_msgs, timeout=150, drain=8)
        assert a.alive() and b.alive()
        logs = a.log() + b.log()
    got = stream_alerts(msgs)
    assert _comparable(got) == _comparable(expected)
    # both workers really took part: each was assigned partitions of the input topic
    assert logs.count(settings.topics.access) >= 2


def _produce_paced(settings: Settings, path: Path, seconds: float) -> None:
    """Send the file's events over ``seconds`` (keyed by identity, in file order)."""
    from confluent_kafka import Producer

    from streams.events import expand_dotted, flatten, identity_of

    lines = path.read_bytes().splitlines()
    p = Producer(settings.kafka.confluent_config())
    t0 = time.monotonic()
    for i, line in enumerate(lines):
        key = identity_of("access", flatten(expand_dotted(orjson.loads(line))))
        p.produce(settings.topics.access, key=key.encode(), value=line)
        p.poll(0)
        ahead = t0 + seconds * (i + 1) / len(lines) - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    p.flush(30)


# A hand-over once lost events (issue 4, session 3-4): right after a worker's recovery,
# Faust resumes the stream partitions and only then seeks them to their committed
# offsets; a fetch drained in between came from the wrong position (the log end) and
# was handed over after the seek, and Faust's gap tracking counted the offsets in
# between as done. The consumer now reads such gaps again, and checks each
# partition's first batch against the offset written with its state
# (streams.batchdrain). Caught in a worker log since: "offsets 250-436 of
# ....access[0] were not processed (the fetch skipped them): reading them again",
# and that run's alerts equal replay's. On failure these tests print each worker's
# group, drop and rewind events.
@dataclass
class _HandOver:
    """Two workers' settings, the labelled events paced into the access topic by
    ``feeder`` once started, and what replay says the alerts must be."""

    first: Settings
    second: Settings
    feeder: threading.Thread
    expected: dict[str, dict]
    n_msgs: int

    def check(self, msgs: list, *logs: str) -> None:
        got = stream_alerts(msgs)
        assert _comparable(got) == _comparable(self.expected), _difference(got, self.expected) + "\n" + _group_events(*logs)


def _hand_over(settings: Settings, tmp_path: Path, feed_seconds: float) -> _HandOver:
    settings = with_rules(settings)
    ensure_topics(settings)
    src = tmp_path / "events.jsonl"
    write_events(src, n_per_user=150)
    expected, n_msgs = replay_alerts(settings, src)
    feeder = threading.Thread(target=_produce_paced, args=(settings, src, feed_seconds), daemon=True)
    other = settings.worker.model_copy(update={"web_port": settings.worker.web_port + 1, "data_dir": tmp_path / "w2"})
    return _HandOver(settings, settings.model_copy(update={"worker": other}), feeder, expected, n_msgs)


def test_workers_joining_and_leaving_mid_stream_lose_and_duplicate_nothing(settings: Settings, tmp_path):
    """Rebalances while events flow: a batch in progress is finished and acked before
    its partitions move; one fetched but not started is dropped unacked and read
    again by the new owner. Either way the alerts equal replay's, counts included."""
    h = _hand_over(settings, tmp_path, 45.0)
    with worker(h.first, tmp_path, name="a") as a:
        # a must be consuming before the clock starts (a loaded machine can take 15 s to start it)
        _wait_for(lambda: "Worker ready" in a.log(), 90, "worker a ready")
        h.feeder.start()
        time.sleep(5)
        with worker(h.second, tmp_path, name="b") as b:
            # a leaves as soon as b asks to join: a's stop overlaps b's join rebalance
            _wait_for(lambda: "(Re-)joining group" in b.log(), 90, "worker b joining")
            time.sleep(1)
            assert a.stop() == 0  # a leaves gracefully: its partitions move to b
            h.feeder.join(60)
            msgs = consume(h.first, h.first.topics.alerts, h.n_msgs, timeout=120, drain=8)
            assert b.alive()
            logs_a, logs_b = a.log(), b.log()
    h.check(msgs, logs_a, logs_b)
    # both took part, and b saw a's partitions come to it
    access = h.first.topics.access
    assert access in logs_a and logs_b.count(access) >= 2


def test_a_worker_taking_over_from_one_that_left_scores_every_event(settings: Settings, tmp_path):
    """The first worker leaves while events flow, before the second one has joined:
    the second starts from nothing but the changelogs and the committed offsets, and
    must score every event the first did not (the hand-over in which a partition was
    once positioned at the log end, skipping events; see the note above)."""
    h = _hand_over(settings, tmp_path, 24.0)
    with worker(h.first, tmp_path, name="a") as a:
        h.feeder.start()
        _wait_for(lambda: "Worker ready" in a.log(), 90, "worker a ready")
        time.sleep(1.5)
        with worker(h.second, tmp_path, name="b") as b:
            assert a.stop() == 0  # gone before b joins
            h.feeder.join(60)
            msgs = consume(h.first, h.first.topics.alerts, h.n_msgs, timeout=120, drain=8)
            assert b.alive()
            logs_a, logs_b = a.log(), b.log()
    h.check(msgs, logs_a, logs_b)
    assert logs_b.count("Joined group") >= 1 and "Signal received" in logs_a
