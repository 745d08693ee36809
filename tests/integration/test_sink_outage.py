"""The search sink's delivery guarantees on the genuine engine.

* The engine goes away for more than 30 seconds while alerts keep arriving:
  the sink holds, commits nothing, stays alive and in its consumer group, and
  once the engine is back every alert is in it exactly once by id.
* Documents the engine rejects for good (a mapping error) and undecodable
  records go to the dead-letter topic; the rest of their batch is indexed and
  every offset committed.

The engine is a genuine OpenSearch 2.19 node of its own, started, stopped
and started again with ``deploy/opensearch.sh up|down`` (its data directory
survives, as a restarted node's does) on private ports and a private state
directory (``OS_WORK``): the shared node other tests and sessions use on
9200 keeps running throughout. The sink runs as ``ueba sink`` in a child
process, like production runs it, with a 10 s ``max.poll.interval``: an
outage three times as long only passes if the sink keeps polling its
consumer while it holds its batches.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from confluent_kafka import Producer

from streams.alerts import Alert
from streams.kafka import ensure_topics
from streams.search import alert_stream, install_templates, make_client
from streams.settings import Settings

from .conftest import ROOT, WorkerProcess, _http_answers, caught_up, committed_offsets, end_offsets, free_port

USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
OUTAGE_S = 32.0


def _alert(run: str, i: int, count: int = 1) -> Alert:
    user = USERS[i % len(USERS)]
    ts = time.time()
    return Alert(
        id=hashlib.sha256(f"{run}:{i}".encode()).hexdigest()[:40],
        ts=ts,
        source="detector:exfiltration" if i % 3 else "rule:adf19aad-f8a6-44da-9b0a-e68ae0d56a2a",
        kind="detector" if i % 3 else "rule",
        rule_id="ueba-exfiltration" if i % 3 else "adf19aad-f8a6-44da-9b0a-e68ae0d56a2a",
        rule_name="exfiltration" if i % 3 else "Model Artifact Download",
        title=f"{user} read {10 + i % 40}x the usual volume of training data",
        description=f"{user} read {(i % 90) / 10 + 1:.1f} GB within an hour; the usual is 120 MB.",
        score=55.0 + i % 45,
        severity=(47, 73, 99)[i % 3],
        level=("medium", "high", "critical")[i % 3],
        entity_type="user",
        entity=user,
        stream="access",
        explanation={
            "feature": "ueba.transfer.bytes",
            "observed": 1.0e9 + i,
            "baseline": {"center": 1.2e8, "n": 400},
            "peers": {"center": 2.0e8, "percentile": 99.5},
            "window": "1h",
            "reason": f"{user} read far more training data than usual",
        },
        techniques=("T1530", "AML.T0025"),
        context={"user.name": user, "source.ip": f"198.51.100.{i % 250 + 1}", "event.action": "read",
                 "ueba.resource.type": "dataset", "ueba.resource.id": f"s3://training/{i % 17}.parquet"},
        count=count,
        first_seen=ts - 60 if count > 1 else None,
        last_seen=ts if count > 1 else None,
    )


class AlertFeed(threading.Thread):
    """Produces alerts at a steady rate until stopped; every 20th record re-sends an
    earlier alert (a redelivery: the same id), every 50th is a suppressed repeat
    of an earlier alert (count 2: an update of the first, or the alert itself
    when its first form was never sent)."""

    def __init__(self, settings: Settings, rate: float = 40.0) -> None:
        super().__init__(name="alert-feed", daemon=True)
        self.settings = settings
        self.rate = rate
        self.run_id = uuid.uuid4().hex[:8]
        self.ids: set[str] = set()
        self.repeated: set[str] = set()
        self.records = 0
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            p = Producer({**self.settings.kafka.confluent_config(), "linger.ms": 5})
            topic = self.settings.topics.alerts
            t0 = time.monotonic()
            i = 0
            while not self.stop_event.is_set():
                if i % 20 == 19 and self.ids:
                    a = _alert(self.run_id, i // 2)  # an earlier alert, sent again (same id)
                elif i % 50 == 49:
                    a = _alert(self.run_id, i - 40, count=2)
                    self.repeated.add(a.id)
                else:
                    a = _alert(self.run_id, i)
                self.ids.add(a.id)
                p.produce(topic, key=f"user:{a.entity}".encode(), value=a.to_json())
                p.poll(0)
                self.records += 1
                i += 1
                ahead = i / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            assert p.flush(30) == 0
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.stop_event.set()
        self.join(60)
        assert self.error is None, self.error


class PrivateOpenSearch:
    """``deploy/opensearch.sh`` driving a node of this test's own (ports, state directory; the shared jars)."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "OS_WORK": str(work),
            "OS_LIB": str(ROOT / "deploy" / ".work" / "opensearch" / "lib"),
            "OS_PORT": str(self.port),
            "OS_TRANSPORT_PORT": str(free_port()),
        }

    def __call__(self, command: str) -> str:
        proc = subprocess.run(["bash", str(ROOT / "deploy" / "opensearch.sh"), command], env=self.env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"deploy/opensearch.sh {command} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout + proc.stderr

    def answers(self) -> bool:
        return _http_answers(self.url) is not None


def _engine_count(client, index: str) -> int:
    try:
        client.indices.refresh(index=index)
        return client.count(index=index)["count"]
    except Exception:
        return -1


def _wait(cond, timeout: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(step)


def test_engine_down_for_over_30s_mid_stream_loses_and_duplicates_no_alert(settings: Settings, opensearch_url: str, tmp_path: Path):
    # opensearch_url: the shared node is up, so its jars are fetched for the private one
    engine = PrivateOpenSearch(tmp_path / "opensearch")
    banner = engine("up")
    assert "opensearch 2.19" in banner, banner
    s = settings.model_copy(update={
        "sink": settings.sink.model_copy(update={"max_poll_interval": 10.0}),
        "search": settings.search.model_copy(update={"url": engine.url}),
    })
    ensure_topics(s)
    client = make_client(s.search)
    install_templates(client, "opensearch")
    index = alert_stream(s.search.namespace)
    group = f"{s.worker.app_id}-sink"
    topic = s.topics.alerts

    sink = WorkerProcess(s, tmp_path / "sink.log", command="sink")
    feed = AlertFeed(s)
    feed.start()
    try:
        # the sink indexes while the engine is up
        _wait(lambda: _engine_count(client, index) >= 100, 90, f"the sink to index alerts; sink log:\n{sink.log()[-3000:]}")

        engine("down")
        down_at = time.monotonic()
        assert not engine.answers(), "OpenSearch still answers after deploy/opensearch.sh down"
        time.sleep(2)
        held_at = committed_offsets(s, group, topic)
        produced_at = feed.records
        while time.monotonic() - down_at < OUTAGE_S:
            assert sink.alive(), f"the sink died during the outage:\n{sink.log()[-4000:]}"
            time.sleep(1)
        # nothing was committed while the engine could not acknowledge, though alerts kept coming
        assert committed_offsets(s, group, topic) == held_at
        assert feed.records - produced_at >= 0.8 * feed.rate * (OUTAGE_S - 2)
        assert end_offsets(s, topic) != held_at
        engine("up")
        outage = time.monotonic() - down_at
        assert outage >= 30

        time.sleep(5)  # alerts keep arriving after the restart too
        feed.stop()
        end = end_offsets(s, topic)
        _wait(lambda: caught_up(committed_offsets(s, group, topic), end), 180,
              f"the sink to catch up and commit everything; sink log:\n{sink.log()[-4000:]}")
        assert sink.alive(), sink.log()[-4000:]
    finally:
        if feed.is_alive():
            feed.stop_event.set()
            feed.join(30)
        sink_rc = sink.stop(signal.SIGTERM, timeout=60)

    log = sink.log()
    assert sink_rc == 0, log[-4000:]
    assert "engine unavailable: holding" in log  # it held (partitions paused) ...
    assert "MAXPOLL" not in log and "offset commit failed" not in log  # ... and stayed in its group
    assert "Traceback" not in log

    expected = feed.ids
    assert len(expected) >= 1500
    client.indices.refresh(index=index)
    # exactly once by id: as many documents as distinct alerts, one per id, no id missing
    assert client.count(index=index)["count"] == len(expected)
    agg = client.search(
        index=index,
        body={"size": 0, "aggs": {"ids": {"terms": {"field": "event.id", "size": len(expected) + 100}}}},
    )
    # (exact terms buckets: a cardinality aggregation is a HyperLogLog estimate, and once
    # counted 2,064 of 2,065 distinct ids)
    buckets = agg["aggregations"]["ids"]["buckets"]
    assert {b["key"] for b in buckets} == expected
    assert [b for b in buckets if b["doc_count"] != 1] == []
    hits = client.search(index=index, body={"size": 10_000, "_source": ["ueba.alert.count"], "query": {"match_all": {}}})["hits"]["hits"]
    assert len(hits) == len(expected) and {h["_id"] for h in hits} == expected
    # the suppressed repeats updated their first alert in place (count 2), wherever the outage caught them
    counts = {h["_id"]: h["_source"]["ueba"]["alert"]["count"] for h in hits}
    assert feed.repeated and all(counts[i] == 2 for i in feed.repeated)
    assert all(c == 1 for i, c in counts.items() if i not in feed.repeated)
    print(f"outage {outage:.0f} s; {feed.records} records, {len(expected)} distinct alerts, all present once")


@pytest.fixture(autouse=True)
def _stop_private_engines(tmp_path: Path) -> Iterator[None]:
    yield
    work = tmp_path / "opensearch"
    if (work / "opensearch.pid").exists():
        PrivateOpenSearch(work)("down")


def test_documents_the_engine_rejects_are_dead_lettered_and_the_rest_of_the_batch_commits(settings: Settings, opensearch_url: str):
    from streams.kafka import DeadLetter
    from streams.sink import AlertSink

    from .conftest import consume, produce

    ensure_topics(settings)
    client = make_client(settings.search)
    install_templates(client, "opensearch")
    run = uuid.uuid4().hex[:8]
    good = [_alert(run, i) for i in range(30)]
    bad = _alert(run, 99)
    bad.context["source.ip"] = "not-an-ip"  # source.ip is mapped as ip: a mapping error, for good
    records = [(f"user:{a.entity}".encode(), a.to_json()) for a in good[:15]]
    records += [(b"user:alice", bad.to_json()), (b"user:bob", b"{not json")]
    records += [(f"user:{a.entity}".encode(), a.to_json()) for a in good[15:]]
    produce(settings, settings.topics.alerts, records)

    stats = AlertSink(settings).run(max_idle=3)
    assert (stats.created, stats.existed, stats.deadlettered, stats.consumed) == (30, 0, 2, 32)
    index = alert_stream(settings.search.namespace)
    client.indices.refresh(index=index)
    assert client.count(index=index)["count"] == 30
    ids = {h["_id"] for h in client.search(index=index, body={"size": 100, "_source": False})["hits"]["hits"]}
    assert ids == {a.id for a in good}
    dead = [DeadLetter.from_headers(m.value(), m.key(), m.headers()) for m in consume(settings, settings.topics.deadletter, 2, timeout=30)]
    by_reason = {d.reason: d for d in dead}
    assert set(by_reason) == {"index_rejected", "bad_record"}
    rejected = by_reason["index_rejected"]
    assert Alert.from_json(rejected.value).id == bad.id and rejected.stage == "sink"
    assert "source.ip" in rejected.detail and rejected.source_topic == settings.topics.alerts and rejected.source_offset >= 0
    assert by_reason["bad_record"].value == b"{not json"
    # every offset committed: the poison records did not hold the stream
    assert caught_up(committed_offsets(settings, f"{settings.worker.app_id}-sink", settings.topics.alerts),
                     end_offsets(settings, settings.topics.alerts))
