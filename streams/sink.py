"""Alerts topic -> search engine, exactly once by id.

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
from .search import BulkWriter, SearchError, alert_stream, make_client
from .settings import Settings

log = logging.getLogger("ueba.sink")


@dataclass(slots=True)
class SinkStats:
    consumed: int = 0
    created: int = 0
    existed: int = 0
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
        self.consumer = Consumer(conf)
        self.producer = producer(settings)
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.clock = clock
        self.stats = SinkStats()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, max_idle: float | None = None) -> SinkStats:
        """Run until :meth:`stop` (or ``max_idle`` seconds without messages)."""
        self.consumer.subscribe([self.settings.topics.alerts])
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
        index = alert_stream(self.namespace)
        docs = []
        now = self.clock()
        for m in msgs:
            try:
                alert = Alert.from_json(m.value())
                doc = alert.to_ecs(self.namespace, ingested=now)
            except Exception as exc:
                self._dead_letter(m, "bad_alert", f"{type(exc).__name__}: {exc}")
                continue
            docs.append((index, alert.id, doc, "create", m))
        while True:
            try:
                res = self.writer.write([(i, d, s, op) for i, d, s, op, _ in docs])
                break
            except SearchError as exc:
                # Nothing is committed: keep retrying the same batch. Offsets only
                # move forward after the engine acknowledged every document.
                log.error("engine unavailable, holding offsets: %s", exc)
                METRICS.sink_retries.inc()
                if self._stop.is_set():
                    return
        self.stats.created += res.created
        self.stats.existed += res.existed
        METRICS.indexed.labels(index=index).inc(res.created + res.existed)
        if res.failures:
            by_id = {d[1]: d[4] for d in docs}
            for f in res.failures:
                self._dead_letter(by_id[f.doc_id], "index_rejected", f"{f.status} {f.reason}")
        self.producer.flush(30)
        self.stats.consumed += len(msgs)
        self.stats.batches += 1
        self.consumer.commit(offsets=_next_offsets(msgs), asynchronous=False)

    def _dead_letter(self, m: Message, reason: str, detail: str) -> None:
        dl = DeadLetter(m.value(), m.key(), reason, detail, m.topic(), m.partition(), m.offset(), stage="sink")
        self.producer.produce(self.settings.topics.deadletter, value=m.value(), key=m.key(), headers=dl.headers())
        self.stats.deadlettered += 1
        METRICS.deadletters.labels(stream=m.topic(), reason=reason).inc()


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
