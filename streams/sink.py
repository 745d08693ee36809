"""Alerts and risk topics -> search engine, exactly once by id.

The sink reads the alerts topic with its own consumer group and commits a
batch's offsets only after the engine acknowledged every document of it
(created, or already present by id). While the engine is down it keeps
retrying the same batch and commits nothing, so a crash or restart re-reads
it; ``_id`` = alert id makes the second write a no-op. A document the engine
rejects for good (a mapping error) goes to the dead-letter topic with the
engine's reason instead of blocking the stream.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from .alerts import Alert
from .errors import UebaError
from .kafka import DeadLetter, producer
from .metrics import METRICS
from .risk import RiskChange
from .search import BulkWriter, SearchError, alert_stream, locate, make_client, risk_index, risk_stream
from .settings import Settings

log = logging.getLogger("ueba.sink")


@dataclass(slots=True)
class SinkStats:
    consumed: int = 0
    created: int = 0
    existed: int = 0
    updated: int = 0
    deadlettered: int = 0
    batches: int = 0


class AlertSink:
    """Consumes alerts and writes them as ECS documents; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str | None = None,
        client: Any = None,
        batch_size: int = 1000,
        batch_wait: float = 0.2,
        max_wait: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.namespace = settings.search.namespace
        self.client = client if client is not None else make_client(settings.search)
        self.writer = BulkWriter(self.client, settings.search.engine, max_wait=max_wait)
        conf = settings.kafka.confluent_config()
        conf.update(
            {
                "group.id": group_id or f"{settings.worker.app_id}-sink",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )
        # Webhook targets load before anything connects: a bad file fails first.
        from .webhooks import WebhookDispatcher, kafka_dead_letter, load_targets

        targets = load_targets(settings.worker.webhooks_file) if settings.worker.webhooks_file else None
        self.consumer = Consumer(conf)
        self.producer = producer(settings)
        self.webhooks = (
            None
            if targets is None
            else WebhookDispatcher(
                targets,
                kafka_dead_letter(self.producer, settings.topics.deadletter, settings.topics.alerts, metrics=METRICS),
                namespace=self.namespace,
            )
        )
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.clock = clock
        self.stats = SinkStats()
        self._stop = threading.Event()
        #: alert id -> backing index, for suppression count updates (bounded)
        self._where: dict[str, str] = {}

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, max_idle: float | None = None) -> SinkStats:
        """Run until :meth:`stop` (or ``max_idle`` seconds without messages)."""
        self.consumer.subscribe([self.settings.topics.alerts, self.settings.topics.risk])
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                msgs = self.consumer.consume(self.batch_size, timeout=self.batch_wait)
                msgs = [m for m in msgs if not self._is_error(m)]
                if not msgs:
                    if max_idle is not None and time.monotonic() - idle_since > max_idle:
                        break
                    continue
                idle_since = time.monotonic()
                self._handle(msgs)
        finally:
            if self.webhooks is not None:
                self.webhooks.close(10)  # may still write dead letters
            self.producer.flush(10)
            self.consumer.close()
        return self.stats

    def _is_error(self, m: Message) -> bool:
        err = m.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error: %s", err)
        return True

    def _handle(self, msgs: list[Message]) -> None:
        """Write one batch; commit its offsets only once every document is acknowledged."""
        ns = self.namespace
        alerts_index, risk_stream_name, risk_idx = alert_stream(ns), risk_stream(ns), risk_index(ns)
        creates: list[tuple[str, str, dict[str, Any], str, Message]] = []
        updates: dict[str, tuple[Alert, Message]] = {}
        fresh: list[Alert] = []
        now = self.clock()
        for m in msgs:
            try:
                if m.topic() == self.settings.topics.risk:
                    rc = RiskChange.from_json(m.value())
                    creates.append((risk_stream_name, rc.id, rc.to_ecs(ns), "create", m))
                    creates.append((risk_idx, f"{rc.entity_type}:{rc.entity}", _entity_doc(rc), "index", m))
                    continue
                alert = Alert.from_json(m.value())
                if alert.count > 1:
                    # A suppressed repeat: the count of the first alert (same id) goes up.
                    prev = updates.get(alert.id)
                    if prev is None or prev[0].count < alert.count:
                        updates[alert.id] = (alert, m)
                    continue
                creates.append((alerts_index, alert.id, alert.to_ecs(ns, ingested=now), "create", m))
                fresh.append(alert)
            except Exception as exc:
                self._dead_letter(m, "bad_record", f"{type(exc).__name__}: {exc}")
        res = self._write([(i, d, src, op) for i, d, src, op, _ in creates])
        if res is None:
            return
        self._record(res, {d[1]: d[4] for d in creates})
        if updates:
            for doc_id, index in res.locations.items():
                if doc_id in updates:
                    self._where[doc_id] = index
            unknown = [i for i in updates if i not in self._where]
            self._where.update(locate(self.client, self.settings.search.engine, alerts_index, unknown))
            ops = []
            for doc_id, (alert, m) in updates.items():
                where = self._where.get(doc_id)
                if where is None:
                    # Its first occurrence is not indexed (it was lost or deleted):
                    # index this version, which carries the count, as the alert.
                    ops.append((alerts_index, doc_id, alert.to_ecs(ns, ingested=now), "create"))
                else:
                    ops.append((where, doc_id, _count_patch(alert), "update"))
            ures = self._write(ops)
            if ures is None:
                return
            self.stats.updated += ures.updated
            self._record(ures, {d: m for d, (_, m) in updates.items()})
            while len(self._where) > 100_000:
                self._where.pop(next(iter(self._where)))
        self.producer.flush(30)
        self.stats.consumed += len(msgs)
        self.stats.batches += 1
        self.consumer.commit(offsets=_next_offsets(msgs), asynchronous=False)
        if self.webhooks is not None:
            # Only after the engine acknowledged them; never blocks (bounded queue).
            rejected = {f.doc_id for f in res.failures}
            for a in fresh:
                if a.id not in rejected:
                    self.webhooks.submit(a)

    def _write(self, ops: list[tuple[str, str, dict[str, Any], str]]):
        while True:
            try:
                return self.writer.write(ops)
            except SearchError as exc:
                # Nothing is committed: keep retrying the same batch. Offsets only
                # move forward after the engine acknowledged every document.
                log.error("engine unavailable, holding offsets: %s", exc)
                METRICS.sink_retries.inc()
                if self._stop.is_set():
                    return None

    def _record(self, res: Any, by_id: dict[str, Message]) -> None:
        self.stats.created += res.created
        self.stats.existed += res.existed
        METRICS.indexed.labels(index="all").inc(res.created + res.existed + res.updated)
        for f in res.failures:
            self._dead_letter(by_id[f.doc_id], "index_rejected", f"{f.index}: {f.status} {f.reason}")

    def _dead_letter(self, m: Message, reason: str, detail: str) -> None:
        dl = DeadLetter(m.value(), m.key(), reason, detail, m.topic(), m.partition(), m.offset(), stage="sink")
        self.producer.produce(self.settings.topics.deadletter, value=m.value(), key=m.key(), headers=dl.headers())
        self.stats.deadlettered += 1
        METRICS.deadletters.labels(stream=m.topic(), reason=reason).inc()


def _count_patch(alert: Alert) -> dict[str, Any]:
    doc = alert.to_ecs()
    return {"ueba": {"alert": {k: doc["ueba"]["alert"][k] for k in ("count", "first_seen", "last_seen") if k in doc["ueba"]["alert"]}}}


def _entity_doc(rc: RiskChange) -> dict[str, Any]:
    """The latest-risk document of an entity (one per entity, overwritten)."""
    doc = rc.to_ecs()
    doc.pop("data_stream", None)
    doc["event"]["kind"] = "state"
    doc["event"]["dataset"] = "ueba.entity_risk"
    doc["event"].pop("id", None)
    doc["message"] = f"{rc.entity_type} {rc.entity}: risk {rc.level} ({rc.score:.0f}/100)"
    return doc


def _next_offsets(msgs: list[Message]) -> list[TopicPartition]:
    high: dict[tuple[str, int], int] = {}
    for m in msgs:
        k = (m.topic(), m.partition())
        high[k] = max(high.get(k, -1), m.offset())
    return [TopicPartition(t, p, o + 1) for (t, p), o in high.items()]


def run_sink(settings: Settings) -> None:
    """``ueba sink``: run until SIGINT/SIGTERM."""
    sink = AlertSink(settings)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sink.stop())
    stats = sink.run()
    log.info("sink stopped: %s", dataclasses.asdict(stats))


class SinkThread(threading.Thread):
    """The sink in a background thread (demo, tests)."""

    def __init__(self, settings: Settings, **kw: Any) -> None:
        super().__init__(name="ueba-sink", daemon=True)
        self.sink = AlertSink(settings, **kw)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.sink.run()
        except BaseException as exc:  # surfaced to the owner via .error
            self.error = exc

    def stop(self, timeout: float = 30.0) -> None:
        self.sink.stop()
        self.join(timeout)
        if self.error:
            raise UebaError(f"sink failed: {self.error}")
