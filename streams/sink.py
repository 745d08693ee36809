"""Alerts and risk topics -> search engine, exactly once by id.

The sink reads the alerts and risk topics with its own consumer group and
commits a batch's offsets only after the engine acknowledged every document
of it (created, or already present by id). ``_id`` = alert id makes a second
write of the same alert a no-op, so a crash or restart that re-reads a batch
never duplicates anything. A document the engine rejects for good (a mapping
error) goes to the dead-letter topic with the engine's reason instead of
blocking the stream.

Throughput: each batch is serialised once (orjson, NDJSON) and up to
``max_in_flight`` bulk requests run at once, so building the next batch
overlaps the engine's indexing of the previous ones. Batches complete, and
their offsets are committed, strictly in the order they were read.

Engine outages: a bulk request that fails for a transient reason (connection
refused, timeouts, 429, 5xx) is retried with capped exponential backoff, for
as long as it takes. While it waits, the sink *holds* its batches: it pauses
its partitions (nothing more is fetched, nothing is committed) and keeps
polling the consumer, so it stays in its consumer group however long the
outage lasts. When the engine answers again the held batches are written and
committed in order and consumption resumes. A request the engine refuses as
a whole for a non-transient reason (e.g. 401/403) is held and retried the
same way, with the error logged: the stream stops moving rather than lose or
skip alerts. Offsets are committed only for partitions still assigned to the
sink when the batch completes; after a rebalance the new owner re-reads from
the last commit, and ids dedupe.

SOAR webhooks are not fed from here: :class:`streams.webhooks.WebhookRelay`
reads the alerts topic with its own consumer group (started alongside the
sink when ``UEBA_WORKER__WEBHOOKS_FILE`` is set), so a slow or unreachable
receiver never holds the search sink back, and vice versa.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from .alerts import Alert
from .errors import UebaError
from .kafka import DeadLetter, producer
from .metrics import METRICS
from .risk import RiskChange
from .search import BulkResult, BulkWriter, SearchError, WriteAborted, _safe, _transient, alert_stream, locate, make_client, risk_index, risk_stream
from .settings import Settings

log = logging.getLogger("ueba.sink")

#: Seconds a batch may be outstanding (with the engine answering, only slowly)
#: before the sink pauses its partitions and holds: keeps polling the consumer
#: without fetching. When the engine fails a request the sink holds at once.
HOLD_AFTER = 5.0


@dataclass(slots=True)
class SinkStats:
    consumed: int = 0
    created: int = 0
    existed: int = 0
    updated: int = 0
    deadlettered: int = 0
    batches: int = 0
    #: bulk requests retried (engine down, 429/5xx) and whole batches re-sent after a refusal
    retries: int = 0
    #: times the sink paused its partitions to hold batches while the engine did not answer
    holds: int = 0
    #: commits skipped because the partition had been revoked meanwhile
    stale_commits: int = 0


@dataclass(slots=True)
class _Batch:
    """One consumed batch on its way into the engine."""

    msgs: list[Message]
    creates: list[tuple[str, str, dict[str, Any], str, Message]]
    updates: dict[str, tuple[Alert, Message]]
    gens: dict[tuple[str, int], int]
    deadlettered: int = 0
    future: Future | None = None
    started: float = field(default_factory=time.monotonic)
    refusals: int = 0
    retry_at: float = 0.0


@dataclass(slots=True)
class _Outcome:
    res: BulkResult
    ures: BulkResult | None
    update_msgs: dict[str, Message]


class AlertSink:
    """Consumes alerts and risk changes and writes them as ECS documents; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        group_id: str | None = None,
        client: Any = None,
        batch_size: int | None = None,
        batch_wait: float = 0.2,
        max_in_flight: int | None = None,
        max_delay: float = 10.0,
        clock: Callable[[], float] = time.time,
        webhooks: bool = True,
    ) -> None:
        self.settings = settings
        sk = settings.sink
        self.namespace = settings.search.namespace
        self.client = client if client is not None else make_client(settings.search)
        self._stop = threading.Event()
        self.writer = BulkWriter(self.client, settings.search.engine, max_wait=None, max_delay=max_delay, stop=self._stop)
        self.max_delay = max_delay
        poll_ms = int(sk.max_poll_interval * 1000)
        conf = settings.kafka.confluent_config()
        conf.update(
            {
                "group.id": group_id or f"{settings.worker.app_id}-sink",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                "max.poll.interval.ms": poll_ms,
                "session.timeout.ms": min(45_000, poll_ms),
            }
        )
        # Webhook targets load before anything connects: a bad file fails first.
        self.relay = None
        if webhooks and settings.worker.webhooks_file:
            from .webhooks import WebhookRelay, load_targets

            self.relay = WebhookRelay(settings, load_targets(settings.worker.webhooks_file))
        self.consumer = Consumer(conf)
        self.producer = producer(settings)
        self.batch_size = batch_size or sk.batch_size
        self.batch_wait = batch_wait
        self.max_in_flight = max_in_flight or sk.max_in_flight
        self.hold_after = min(HOLD_AFTER, sk.max_poll_interval / 4)
        self.clock = clock
        self.stats = SinkStats()
        self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="ueba-sink-bulk")
        self._inflight: deque[_Batch] = deque()
        self._stash: list[Message] = []
        self._paused: list[TopicPartition] = []
        #: (topic, partition) -> assignment generation; a batch commits only partitions whose generation did not move
        self._gen: dict[tuple[str, int], int] = {}
        #: alert id -> backing index, for suppression count updates (bounded)
        self._where: dict[str, str] = {}

    @property
    def webhooks(self) -> Any:
        """The webhook dispatcher of the relay running beside the sink (None without targets)."""
        return None if self.relay is None else self.relay.dispatcher

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ main loop

    def run(self, *, max_idle: float | None = None, drain_timeout: float = 10.0) -> SinkStats:
        """Run until :meth:`stop` (or ``max_idle`` seconds without messages and nothing in flight)."""
        topics = [self.settings.topics.alerts, self.settings.topics.risk]
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        if self.relay is not None:
            self.relay.start()
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                self._reap()
                if len(self._inflight) >= self.max_in_flight or (self._inflight and self._inflight[0].future is None):
                    self._wait_oldest()
                    continue
                msgs = self._next_messages()
                if not msgs:
                    if self._inflight:
                        self._wait_oldest()
                        idle_since = time.monotonic()
                    elif max_idle is not None and time.monotonic() - idle_since > max_idle:
                        break
                    continue
                idle_since = time.monotonic()
                self._submit(msgs)
            self._finish(drain_timeout)
        finally:
            self._stop.set()  # aborts bulk retries still running in the pool
            self._pool.shutdown(wait=True, cancel_futures=True)
            if self.relay is not None:
                self.relay.stop()
            self.producer.flush(10)
            try:
                self.consumer.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("closing the consumer: %s", exc)
        return self.stats

    def _finish(self, timeout: float) -> None:
        """On stop: give in-flight batches ``timeout`` seconds to be acknowledged and committed.

        Whatever is still outstanding is simply not committed: it is re-read on restart.
        """
        deadline = time.monotonic() + timeout
        while self._inflight and time.monotonic() < deadline:
            b = self._inflight[0]
            if b.future is None:
                break
            try:
                b.future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:
                break
            self._reap()
        if self._inflight:
            log.warning("stopping with %d batch(es) not acknowledged; they are re-read on restart", len(self._inflight))

    def _next_messages(self) -> list[Message]:
        if self._stash:
            msgs, self._stash = self._stash, []
            return msgs
        msgs = self.consumer.consume(self.batch_size, timeout=self.batch_wait)
        return [m for m in msgs if not self._is_error(m)]

    def _is_error(self, m: Message) -> bool:
        err = m.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error: %s", err)
        return True

    # ------------------------------------------------------------------ rebalances

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            k = (tp.topic, tp.partition)
            self._gen[k] = self._gen.get(k, 0) + 1
        log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing")

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Batches already acknowledged are committed while the partitions are still ours.
        self._reap()
        gone = {(tp.topic, tp.partition) for tp in partitions}
        for k in gone:
            self._gen[k] = self._gen.get(k, 0) + 1
        self._stash = [m for m in self._stash if (m.topic(), m.partition()) not in gone]
        self._paused = [tp for tp in self._paused if (tp.topic, tp.partition) not in gone]
        if self._inflight:
            log.info("partitions revoked with %d batch(es) in flight: their offsets there are left to the new owner", len(self._inflight))

    # ------------------------------------------------------------------ batches

    def _submit(self, msgs: list[Message]) -> None:
        ns = self.namespace
        alerts_index, risk_stream_name, risk_idx = alert_stream(ns), risk_stream(ns), risk_index(ns)
        risk_topic = self.settings.topics.risk
        creates: list[tuple[str, str, dict[str, Any], str, Message]] = []
        updates: dict[str, tuple[Alert, Message]] = {}
        now = self.clock()
        dead = 0
        for m in msgs:
            try:
                if m.topic() == risk_topic:
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
            except Exception as exc:
                self._dead_letter(m, "bad_record", f"{type(exc).__name__}: {exc}")
                dead += 1
        gens = {}
        for m in msgs:
            k = (m.topic(), m.partition())
            if k not in gens:
                gens[k] = self._gen.get(k, 0)
        batch = _Batch(msgs, creates, updates, gens, deadlettered=dead)
        if updates:
            # An update needs its first occurrence acknowledged: let earlier batches land first.
            while self._inflight and not self._stop.is_set():
                self._wait_oldest()
        batch.future = self._pool.submit(self._write_batch, batch)
        self._inflight.append(batch)

    def _write_batch(self, b: _Batch) -> _Outcome:
        """Runs in a pool thread: the bulk writes of one batch (retrying until acknowledged or stopped)."""
        res = self.writer.write([(i, d, src, op) for i, d, src, op, _ in b.creates])
        if not b.updates:
            return _Outcome(res, None, {})
        ns = self.namespace
        alerts_index = alert_stream(ns)
        where = {d: res.locations[d] for d in b.updates if d in res.locations}
        unknown = [i for i in b.updates if i not in where and i not in self._where]
        if unknown:
            where.update(self._retrying(lambda: locate(self.client, self.settings.search.engine, alerts_index, unknown)))
        ops = []
        now = self.clock()
        for doc_id, (alert, _) in b.updates.items():
            idx = where.get(doc_id) or self._where.get(doc_id)
            if idx is None:
                # Its first occurrence is not indexed (it was lost or deleted):
                # index this version, which carries the count, as the alert.
                ops.append((alerts_index, doc_id, alert.to_ecs(ns, ingested=now), "create"))
            else:
                where[doc_id] = idx
                ops.append((idx, doc_id, _count_patch(alert), "update"))
        ures = self.writer.write(ops)
        ures.locations.update(where)
        return _Outcome(res, ures, {d: m for d, (_, m) in b.updates.items()})

    def _retrying(self, fn: Callable[[], Any]) -> Any:
        attempt = 0
        while True:
            if self._stop.is_set():
                raise WriteAborted("stopped")
            try:
                return fn()
            except Exception as exc:
                if not _transient(exc):
                    raise SearchError(f"search request rejected: {_safe(exc)}") from None
                attempt += 1
                self.writer._sleep(attempt)

    def _reap(self) -> None:
        """Complete finished batches from the oldest on, in order."""
        while self._inflight and self._inflight[0].future is not None and self._inflight[0].future.done():
            if not self._complete(self._inflight[0]):
                return
            self._inflight.popleft()
            if self._paused and (not self._inflight or not self._slow(self._inflight[0])):
                self._resume()

    def _slow(self, b: _Batch) -> bool:
        return self.writer.failing or time.monotonic() - b.started > self.hold_after

    def _wait_oldest(self) -> None:
        """Wait for the oldest batch; past HOLD_AFTER, hold: pause partitions and keep polling."""
        b = self._inflight[0]
        while not self._stop.is_set():
            fut = b.future
            if fut is None:  # refused earlier: re-send once its back-off elapsed
                if time.monotonic() >= b.retry_at:
                    b.future = self._pool.submit(self._write_batch, b)
                    continue
            elif fut.done():
                self._reap()
                return
            if self._slow(b) or fut is None:
                self._hold()
                self._poll_while_holding(0.5)
            else:
                try:
                    fut.result(timeout=0.1)
                except Exception:
                    pass

    def _hold(self) -> None:
        if self._paused:
            return
        try:
            parts = self.consumer.assignment()
            if parts:
                self.consumer.pause(parts)
            self._paused = list(parts)
        except KafkaException as exc:
            log.warning("could not pause partitions: %s", exc)
            return
        self.stats.holds += 1
        if self.writer.failing or self._inflight[0].future is None:
            log.warning("engine unavailable: holding %d batch(es), partitions paused, nothing committed until it acknowledges",
                        len(self._inflight))
        else:
            log.info("engine slow (a batch outstanding for over %.0fs): holding %d batch(es), partitions paused",
                     self.hold_after, len(self._inflight))

    def _poll_while_holding(self, timeout: float) -> None:
        """Keeps the group membership alive; messages only arrive from newly assigned partitions."""
        msgs = [m for m in self.consumer.consume(self.batch_size, timeout=timeout) if not self._is_error(m)]
        if msgs:
            self._stash.extend(msgs)
            try:
                parts = self.consumer.assignment()
                self.consumer.pause(parts)
                self._paused = list(parts)
            except KafkaException as exc:
                log.warning("could not pause partitions: %s", exc)

    def _resume(self) -> None:
        try:
            self.consumer.resume(self._paused)
        except KafkaException as exc:
            log.warning("could not resume partitions: %s", exc)
        self._paused = []
        log.info("engine acknowledging again: resumed consumption")

    def _complete(self, b: _Batch) -> bool:
        """Account for a finished batch and commit it. False: it was re-queued (refused as a whole)."""
        assert b.future is not None
        try:
            out: _Outcome = b.future.result()
        except WriteAborted:
            return False
        except Exception as exc:
            # Refused as a whole for a non-transient reason: hold it and try again later.
            b.refusals += 1
            delay = min(60.0, 2.0 * 2 ** min(b.refusals - 1, 5))
            b.future = None
            b.retry_at = time.monotonic() + delay
            self.stats.retries += 1
            METRICS.sink_retries.inc()
            log.error("engine refused a batch of %d records (attempt %d), holding it and retrying in %.0fs: %s",
                      len(b.msgs), b.refusals, delay, exc if isinstance(exc, SearchError) else _safe(exc))
            return False
        res = out.res
        by_id = {d[1]: d[4] for d in b.creates}
        self._record(res, by_id)
        if out.ures is not None:
            self.stats.updated += out.ures.updated
            self._record(out.ures, out.update_msgs)
            for doc_id, index in out.ures.locations.items():
                self._where[doc_id] = index
            while len(self._where) > 100_000:
                self._where.pop(next(iter(self._where)))
        if res.retries:
            self.stats.retries += res.retries
            METRICS.sink_retries.inc(res.retries)
        if b.deadlettered or res.failures or (out.ures is not None and out.ures.failures):
            # Dead letters are durable before the offsets that hand them over move.
            while self.producer.flush(10) > 0:
                log.warning("dead-letter topic not acknowledging; offsets held")
                if self._stop.is_set():
                    return True
        self._commit(b)
        self.stats.consumed += len(b.msgs)
        self.stats.batches += 1
        return True

    def _commit(self, b: _Batch) -> None:
        high: dict[tuple[str, int], int] = {}
        for m in b.msgs:
            k = (m.topic(), m.partition())
            high[k] = max(high.get(k, -1), m.offset())
        offsets = []
        for k, off in high.items():
            if self._gen.get(k, 0) != b.gens.get(k):
                self.stats.stale_commits += 1
                continue
            offsets.append(TopicPartition(k[0], k[1], off + 1))
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # E.g. a rebalance raced this commit: the new owner re-reads from the
            # last commit and ids dedupe. Nothing is lost; never crash on it.
            self.stats.stale_commits += 1
            log.warning("offset commit failed (re-read after the rebalance; ids dedupe): %s", exc)

    def _record(self, res: Any, by_id: dict[str, Message]) -> None:
        self.stats.created += res.created
        self.stats.existed += res.existed
        METRICS.indexed.labels(index="all").inc(res.created + res.existed + res.updated)
        for f in res.failures:
            self._dead_letter(by_id[f.doc_id], "index_rejected", f"{f.index}: {f.status} {f.reason}")

    def _dead_letter(self, m: Message, reason: str, detail: str) -> None:
        dl = DeadLetter(m.value(), m.key(), reason, detail, m.topic(), m.partition(), m.offset(), stage="sink")
        while True:
            try:
                self.producer.produce(self.settings.topics.deadletter, value=m.value(), key=m.key(), headers=dl.headers())
                break
            except BufferError:
                self.producer.poll(1.0)
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


def run_sink(settings: Settings, *, webhooks: bool = True) -> None:
    """``ueba sink``: run until SIGINT/SIGTERM."""
    if settings.log_level != "DEBUG":
        # The clients log every request, and every failed one with a traceback
        # (four per retry during an outage); the sink logs what matters itself.
        for name in ("opensearch", "elastic_transport.transport"):
            logging.getLogger(name).setLevel(logging.ERROR)
    sink = AlertSink(settings, webhooks=webhooks)
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
