"""Webhook delivery is at least once across crashes and restarts.

The relay reads the alerts topic with its own consumer group and commits an
offset only once every earlier alert was delivered, filtered out or
dead-lettered. Deliveries queued before a ``kill -9`` of ``ueba sink`` (or a
stop of the relay before it could deliver) are made after the restart, to the
genuine Debian ``webhook`` receiver, with signatures that verify; the search
sink beside the relay is never held back by the unreachable receiver.
"""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import yaml
from confluent_kafka import Producer
from standardwebhooks.webhooks import Webhook

from streams.alerts import Alert
from streams.kafka import ensure_topics
from streams.search import alert_stream, install_templates, make_client
from streams.settings import Settings
from streams.webhooks import WebhookRelay, WebhooksConfig, WebhookTarget

from .conftest import WorkerProcess, caught_up, committed_offsets, consume, end_offsets, free_port
from .test_webhooks import SECRET, WebhookServer, make_alert

ENTITIES = ["alice", "bob", "carol", "dave", "erin"]


def _alerts(severities: list[int]) -> list[Alert]:
    level = {21: "low", 47: "medium", 73: "high", 99: "critical"}
    out = []
    for i, sev in enumerate(severities):
        who = ENTITIES[i % len(ENTITIES)]
        out.append(make_alert(i, id=uuid.uuid4().hex, severity=sev, level=level[sev], entity=who,
                              title=f"{who} downloaded 40x the usual volume", context={"user.name": who, "source.ip": "203.0.113.7"}))
    return out


def _produce(settings: Settings, alerts: list[Alert]) -> dict[str, tuple[int, int]]:
    """Alert id -> (partition, offset) on the alerts topic."""
    where: dict[str, tuple[int, int]] = {}

    def delivered(err, msg):
        assert err is None, err
        where[Alert.from_json(msg.value()).id] = (msg.partition(), msg.offset())

    p = Producer(settings.kafka.confluent_config())
    for a in alerts:
        p.produce(settings.topics.alerts, key=f"user:{a.entity}".encode(), value=a.to_json(), on_delivery=delivered)
    assert p.flush(30) == 0
    return where


def _wait(cond, timeout: float, what) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.2)


def _started(settings: Settings, group: str) -> bool:
    """A new relay group commits its start position as soon as it is assigned."""
    return all(o >= 0 for o in committed_offsets(settings, group, settings.topics.alerts).values())


def _verify_received(server: WebhookServer, alerts: list[Alert], timeout: float = 60) -> None:
    for a in alerts:
        body = server.wait_for(server.out / "ueba" / f"{a.id}.body", timeout=timeout)
        ts, sig = server.wait_for(server.out / "ueba" / f"{a.id}.headers").decode().split("\n")[:2]
        doc = Webhook(SECRET).verify(body, {"webhook-id": a.id, "webhook-timestamp": ts, "webhook-signature": sig})
        assert doc["type"] == "ueba.alert" and doc["data"]["event"]["id"] == a.id


def test_deliveries_queued_before_kill_9_of_the_sink_are_made_after_restart(settings: Settings, opensearch_url: str, tmp_path: Path):
    ensure_topics(settings)
    client = make_client(settings.search)
    install_templates(client, "opensearch")
    port = free_port()  # the receiver is not running yet: every attempt is refused
    (tmp_path / "whsec").write_text(SECRET)
    targets = tmp_path / "webhooks.yaml"
    targets.write_text(yaml.safe_dump({
        "backoff_initial": 0.2,
        "backoff_max": 5.0,  # 50 attempts outlast the test: nothing is dead-lettered before the kill
        "targets": [{"name": "soar", "url": f"http://127.0.0.1:{port}/hooks/ueba", "secret_file": "whsec",
                     "filters": {"min_severity": "high"}, "max_attempts": 50}],
    }))
    s = settings.model_copy(update={"worker": settings.worker.model_copy(update={"webhooks_file": targets})})
    relay_group, sink_group = f"{s.worker.app_id}-webhooks", f"{s.worker.app_id}-sink"
    alerts = _alerts([73, 99, 73, 21, 73])
    selected = [a for a in alerts if a.severity >= 73]
    index = alert_stream(s.search.namespace)

    first = WorkerProcess(s, tmp_path / "sink-1.log", command="sink")
    try:
        _wait(lambda: _started(s, relay_group), 60, lambda: f"relay never started:\n{first.log()[-3000:]}")
        where = _produce(s, alerts)
        end = end_offsets(s, s.topics.alerts)

        def indexed() -> bool:
            if not client.indices.exists(index=index):  # the data stream appears with the first document
                return False
            client.indices.refresh(index=index)
            return client.count(index=index)["count"] == len(alerts)

        # the search sink indexes and commits everything while no delivery can be made
        _wait(lambda: indexed() and caught_up(committed_offsets(s, sink_group, s.topics.alerts), end), 60,
              lambda: f"sink did not index:\n{first.log()[-3000:]}")
        # every selected alert was queued and attempted (and refused) before the crash
        _wait(lambda: first.log().count("webhook soar: ConnectError") >= len(selected), 30, lambda: first.log()[-3000:])
        held = committed_offsets(s, relay_group, s.topics.alerts)
        for a in selected:
            part, off = where[a.id]
            assert held[part] <= off, f"relay committed past undelivered alert {a.id} ({held} vs {where[a.id]})"
        assert first.alive()
    finally:
        first.stop(sig=signal.SIGKILL)  # no chance to deliver, commit or dead-letter anything

    server = WebhookServer(tmp_path, port=port)
    second = WorkerProcess(s, tmp_path / "sink-2.log", command="sink")
    try:
        # (the killed process's group membership lapses first: Kafka's 45 s session timeout)
        _verify_received(server, selected, timeout=120)
        # all delivered or filtered out: the relay's offsets reach the end of the topic
        _wait(lambda: caught_up(committed_offsets(s, relay_group, s.topics.alerts), end), 30,
              lambda: f"relay did not commit:\n{second.log()[-3000:]}")
    finally:
        rc = second.stop(sig=signal.SIGTERM, timeout=60)
        server.stop()
    assert rc == 0, second.log()[-3000:]
    low = next(a for a in alerts if a.severity < 73)
    assert not (server.out / "ueba" / f"{low.id}.body").exists()  # the filter still applies
    assert sorted(p.name for p in (server.out / "ueba").glob("*.body")) == sorted(f"{a.id}.body" for a in selected)
    assert server.log().count("hook triggered successfully") == len(selected)
    assert consume(s, s.topics.deadletter, 1, timeout=3) == []  # nothing was given up on


def test_relay_stopped_before_delivering_leaves_its_deliveries_to_the_next_run(settings: Settings, tmp_path: Path):
    ensure_topics(settings)
    port = free_port()
    config = WebhooksConfig(
        targets=[WebhookTarget(name="soar", url=f"http://127.0.0.1:{port}/hooks/ueba", secret=SECRET, max_attempts=50)],
        backoff_initial=0.2, backoff_max=5.0,
    )
    group = f"{settings.worker.app_id}-webhooks"
    alerts = _alerts([73, 99])

    relay = WebhookRelay(settings, config, drain_timeout=1.0).start()
    try:
        _wait(lambda: _started(settings, group), 60, "relay never started")
        start = committed_offsets(settings, group, settings.topics.alerts)
        _produce(settings, alerts)
        _wait(lambda: relay.dispatcher.stats.attempts >= 2 * len(alerts), 30, lambda: f"no attempts: {relay.dispatcher.stats}")
    finally:
        relay.stop()
    stats = relay.dispatcher.stats
    # stopped undelivered: nothing dead-lettered (webhook_closed), nothing committed past them
    assert stats.delivered == 0 and stats.dead == {} and stats.abandoned == len(alerts)
    assert relay.error is None
    assert committed_offsets(settings, group, settings.topics.alerts) == start
    assert consume(settings, settings.topics.deadletter, 1, timeout=3) == []

    server = WebhookServer(tmp_path, port=port)
    again = WebhookRelay(settings, config).start()
    try:
        _verify_received(server, alerts)
        end = end_offsets(settings, settings.topics.alerts)
        _wait(lambda: caught_up(committed_offsets(settings, group, settings.topics.alerts), end), 30, "relay did not commit")
    finally:
        again.stop()
        server.stop()
    assert again.dispatcher.stats.delivered == len(alerts) and again.error is None
