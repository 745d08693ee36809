"""The backbone end to end on the genuine broker and engine: topics, the
dead-letter topic, worker -> alerts topic -> sink -> OpenSearch, and the
Elasticsearch client path against the API emulator."""

from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from streams.kafka import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC, DeadLetter, KafkaSetupError, ensure_topics
from streams.search import alert_stream, engine_info, install_templates, make_client
from streams.settings import Settings
from streams.sink import AlertSink
from tests.ecs_check import validate

from .conftest import consume, produce, worker


def access_event(i: int, resource: str, user: str = "alice") -> bytes:
    return orjson.dumps(
        {
            "@timestamp": f"2026-11-28T09:{i // 60:02d}:{i % 60:02d}Z",
            "event": {"category": ["file"], "action": "read", "outcome": "success", "dataset": "ueba.access"},
            "user": {"name": user},
            "source": {"ip": "198.51.100.10"},
            "ueba": {"resource": {"type": "dataset", "id": resource}, "transfer": {"bytes": 1000 + i}},
        }
    )


def test_topics_are_created_with_fixed_partitions_and_mismatch_is_refused(settings: Settings):
    first = ensure_topics(settings)
    assert set(first.values()) == {"created"} and len(first) == 8
    # served with a leader for every partition as soon as it returns (a consumer
    # subscribing next must not see "Subscribed topic not available")
    served = AdminClient(settings.kafka.confluent_config()).list_topics(timeout=10)
    for name in first:
        assert served.topics[name].error is None
        assert all(p.leader >= 0 for p in served.topics[name].partitions.values())
    again = ensure_topics(settings)
    assert set(again.values()) == {"exists"}
    md = AdminClient(settings.kafka.confluent_config()).list_topics(timeout=10)
    for name in first:
        assert len(md.topics[name].partitions) == 3
    wrong = settings.model_copy(update={"topics": settings.topics.model_copy(update={"partitions": 5})})
    with pytest.raises(KafkaSetupError, match="has 3 partitions"):
        ensure_topics(wrong)


BAD_INPUT = {
    "not_json": b"{this is not json",
    "not_object": b"[1,2,3]",
    "missing_timestamp": b'{"user": {"name": "mallory"}}',
    "missing_identity": b'{"@timestamp": "2026-11-28T10:00:00Z", "event": {"action": "read"}}',
    "invalid": b'{"@timestamp": "2026-11-28T10:00:00Z", "user": {"name": "m"}, "ueba": {"transfer": {"bytes": "lots"}}}',
    "oversized": b'{"@timestamp": "2026-11-28T10:00:00Z", "user": {"name": "m"}, "message": "' + b"x" * 300_000 + b'"}',
}


def test_bad_input_goes_to_the_dead_letter_topic_with_reason_and_source(settings: Settings, tmp_path):
    ensure_topics(settings)
    t = settings.topics
    # bad records on every input stream, good ones after them
    records = [(b"k", raw) for raw in BAD_INPUT.values()]
    produce(settings, t.access, records)
    produce(settings, t.api, [(None, b"\xff\xfe binary garbage")])
    produce(settings, t.telemetry, [(b"m", b'{"@timestamp": "2026-11-28T10:00:00Z", "ueba": {"model": {"version": "1"}}}')])
    good = [(b"alice", access_event(i, "s3://ok")) for i in range(21)] + [(b"alice", access_event(30, "s3://new-secret-place"))]
    produce(settings, t.access, good)
    with worker(settings, tmp_path) as w:
        dead = consume(settings, t.deadletter, len(BAD_INPUT) + 2, timeout=90)
        alerts = consume(settings, t.alerts, 1, timeout=60)
        assert w.alive(), w.log()[-3000:]
    got = [DeadLetter.from_headers(m.value(), m.key(), m.headers()) for m in dead]
    reasons = sorted(d.reason for d in got if d.source_topic == t.access)
    assert reasons == sorted(BAD_INPUT), f"dead letters: {[(d.reason, d.detail) for d in got]}"
    for d in got:
        assert d.detail, "every dead letter says why"
        assert d.source_offset >= 0 and d.source_partition >= 0
        hdrs = dict(next(m for m in dead if m.value() == d.value).headers())
        assert {DLQ_REASON, DLQ_TOPIC, DLQ_PARTITION, DLQ_OFFSET} <= set(hdrs)
    # the original bytes are kept untouched
    assert {d.value for d in got if d.source_topic == t.access} == set(BAD_INPUT.values())
    api_dead = [d for d in got if d.source_topic == t.api]
    assert [d.reason for d in api_dead] == ["not_json"]
    tel_dead = [d for d in got if d.source_topic == t.telemetry]
    assert [d.reason for d in tel_dead] == ["missing_identity"]
    # and the good events after the bad ones were still processed
    assert len(alerts) == 1
    alert = orjson.loads(alerts[0].value())
    assert alert["entity"] == "alice" and "s3://new-secret-place" in alert["title"]


def test_alert_travels_worker_to_alerts_topic_to_opensearch(settings: Settings, opensearch_url: str, tmp_path):
    ensure_topics(settings)
    client = make_client(settings.search)
    info = engine_info(client)
    assert info["distribution"] == "opensearch" and info["number"].startswith("2.")
    install_templates(client, "opensearch")
    events = [(b"bob", access_event(i, f"s3://team/{i % 4}", "bob")) for i in range(25)]
    events.append((b"bob", access_event(40, "s3://finance/payroll.parquet", "bob")))
    produce(settings, settings.topics.access, events)
    with worker(settings, tmp_path):
        msgs = consume(settings, settings.topics.alerts, 1, timeout=90)
    assert len(msgs) == 1
    alert_id = orjson.loads(msgs[0].value())["id"]
    sink = AlertSink(settings, batch_wait=0.2)
    stats = sink.run(max_idle=3)
    # the alert, plus its risk change (data stream) and the entity's latest risk
    assert stats.created == 3 and stats.deadlettered == 0
    index = alert_stream(settings.search.namespace)
    client.indices.refresh(index=index)
    hits = client.search(index=index, body={"query": {"ids": {"values": [alert_id]}}})["hits"]["hits"]
    assert len(hits) == 1
    doc = hits[0]["_source"]
    assert doc["event"]["kind"] == "alert" and doc["user"]["name"] == "bob"
    assert doc["ueba"]["alert"]["explanation"]["observed"] == "s3://finance/payroll.parquet"
    assert validate(doc) == []
    # Kibana's logs-* data view and a plain event.kind query find it
    # (ids are deterministic, so earlier runs' namespaces hold the same id: filter on ours)
    q = [{"term": {"event.kind": "alert"}}, {"term": {"event.id": alert_id}}, {"term": {"data_stream.namespace": settings.search.namespace}}]
    found = client.search(index="logs-*", body={"query": {"bool": {"filter": q}}})
    assert found["hits"]["total"]["value"] == 1
    # a second sink run from a new group re-reads the topic: ids dedupe, nothing doubles
    again = AlertSink(settings, group_id=f"{settings.worker.app_id}-sink-2").run(max_idle=3)
    # alert and risk change already there by id; the latest-risk doc is overwritten in place
    assert again.existed == 2 and again.created == 1
    client.indices.refresh(index=index)
    assert client.count(index=index)["count"] == 1


def test_elasticsearch_client_path_against_the_api_emulator(settings: Settings, es_emulator_url: str):
    s = settings.model_copy(update={"search": settings.search.model_copy(update={"engine": "elasticsearch", "url": es_emulator_url})})
    client = make_client(s.search)
    info = engine_info(client)  # the 8.x client's product check passed to get here
    assert info["number"].startswith("8.")
    actions = install_templates(client, "elasticsearch")
    assert actions["logs-ueba.alert"] == "installed"
    ensure_topics(s)
    from streams.alerts import Alert

    alert = Alert(
        id="emu-1", ts=time.time(), source="detector:x", kind="detector", rule_id="ueba-x", rule_name="x", title="t",
        description="d", score=75.0, severity=73, level="high", entity_type="user", entity="eve", stream="access",
        explanation={"feature": "f", "observed": 3, "baseline": {"center": 1}, "peers": None, "window": "1h", "reason": "r"},
        techniques=("T1078",),
    )
    produce(s, s.topics.alerts, [(b"user:eve", alert.to_json())] * 2)  # a duplicate delivery
    stats = AlertSink(s).run(max_idle=3)
    assert stats.created == 1 and stats.existed == 1
    index = alert_stream(s.search.namespace)
    client.indices.refresh(index=index)
    assert client.count(index=index)["count"] == 1
    hits = client.search(index=index, query={"ids": {"values": ["emu-1"]}})["hits"]["hits"]
    assert [h["_source"]["threat"]["technique"]["id"] for h in hits] == [["T1078"]]


def test_suppressed_repeats_update_one_alert_and_risk_lands_in_the_engine(settings: Settings, opensearch_url: str, tmp_path):
    ensure_topics(settings)
    client = make_client(settings.search)
    install_templates(client, "opensearch")
    # after warm-up, carol touches four new resources within the suppression window
    events = [(b"carol", access_event(i, "s3://usual", "carol")) for i in range(21)]
    events += [(b"carol", access_event(40 + i, f"s3://new/{i}", "carol")) for i in range(4)]
    produce(settings, settings.topics.access, events)
    with worker(settings, tmp_path):
        alerts = consume(settings, settings.topics.alerts, 3, timeout=90, drain=5)
        risk = consume(settings, settings.topics.risk, 1, timeout=30)
    bodies = [orjson.loads(m.value()) for m in alerts]
    # count updates are throttled: emitted at powers of two (and every 5 min of event time)
    assert [b["count"] for b in bodies] == [1, 2, 4]
    assert len({b["id"] for b in bodies}) == 1  # one alert, counted
    assert risk, "a level change was emitted"
    stats = AlertSink(settings).run(max_idle=3)
    assert stats.created >= 1 + 2 * len(risk) and stats.updated == 1 and stats.deadlettered == 0
    index = alert_stream(settings.search.namespace)
    client.indices.refresh(index=index)
    hits = client.search(index=index, body={"query": {"term": {"user.name": "carol"}}})["hits"]["hits"]
    assert len(hits) == 1
    a = hits[0]["_source"]["ueba"]["alert"]
    assert a["count"] == 4 and a["first_seen"] < a["last_seen"]
    # the risk change and the entity's latest risk
    client.indices.refresh(index=f"logs-ueba.risk-{settings.search.namespace}")
    rc = client.search(index=f"logs-ueba.risk-{settings.search.namespace}", body={"query": {"match_all": {}}})["hits"]["hits"]
    assert rc and rc[0]["_source"]["ueba"]["risk"]["entity"]["id"] == "carol"
    assert validate(rc[0]["_source"]) == []
    ent = client.get(index=f"ueba-entity-risk-{settings.search.namespace}", id="user:carol")["_source"]
    assert ent["ueba"]["risk"]["level"] in ("moderate", "high", "critical") and ent["event"]["kind"] == "state"


def test_worker_reads_every_compression_codec_shippers_use(settings: Settings, tmp_path):
    from confluent_kafka import Producer

    ensure_topics(settings)
    codecs = ["none", "gzip", "snappy", "lz4", "zstd"]
    for codec in codecs:
        p = Producer({**settings.kafka.confluent_config(), "compression.type": codec})
        p.produce(settings.topics.access, key=codec.encode(), value=b"not json: " + codec.encode())
        assert p.flush(30) == 0
    with worker(settings, tmp_path) as w:
        dead = consume(settings, settings.topics.deadletter, len(codecs), timeout=90)
        assert w.alive(), w.log()[-2000:]
    assert sorted(m.key().decode() for m in dead) == sorted(codecs)
