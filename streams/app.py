"""The Faust worker: one stateful batch handler per input stream.

Design choices (see the faust-streaming pitfalls in the README):

* Faust runs the consumer group, partition assignment, offset commits, the
  changelog-backed tables and their recovery, the producer, rebalances and the
  web server. The per-message hand-off to agents (two tasks, a queue, an event
  and sensors per message: ~170 us, a ceiling near 6,000 messages/s) is
  replaced for the scored topics by :mod:`streams.batchdrain`, which hands each
  fetched batch of a topic to its handler as one list and acks it after the
  handler returned.
* Values and keys are read as raw bytes and decoded by :func:`parse_event`,
  so a value that does not decode is *our* error to route: it goes to the
  dead-letter topic with its reason instead of being logged and skipped by
  Faust's ``on_value_decode_error``.
* One handler per topic, run inline by the consumer's drain loop: batches of
  a topic are processed one at a time, in order (the ``concurrency=1`` of
  faust#606), ``at_least_once``, and idempotent state updates
  (``pipeline.InputProcessor``).
* Each event is guarded on its own, so one bad event never takes down the
  worker.
* Decoded per-identity state lives in a write-behind cache
  (``streams.statecache``). Per batch: score; send the outputs and wait for
  Kafka's acknowledgement; write each changed key to its table once; then ack
  the offsets. A committed offset never runs ahead of its state, and a state
  that survives a crash never has lost outputs.
* Tables take their partition from Faust's *current event* (faust#497): the
  reader and writer make one from the message whose key they touch.
* Table keys are bytes (the identity), equal to the message key, so state is
  co-partitioned with the input topic.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, Callable

import faust

from . import batchdrain
from .errors import EventError
from .events import STREAM_KINDS, parse_event
from .kafka import DeadLetter
from .metrics import METRICS
from .alerts import Alert
from .pipeline import EntityScorer, InputProcessor, source_view
from .policy import Policy
from .risk import AlertProcessor
from .settings import Settings

log = logging.getLogger("ueba.worker")


def rules_for(settings: Settings) -> Any:
    """The rule runner for ``settings`` (None when rules are switched off)."""
    if not settings.worker.rules_enabled:
        return None
    from .rulerun import RuleRunner

    return RuleRunner(settings.worker.rules_paths or None, placeholders=settings.worker.rules_placeholders or None)


def scorer_factory_for(settings: Settings) -> Callable[[str], EntityScorer]:
    """Per-stream scorer chosen by ``worker.scorer``."""
    if settings.worker.scorer == "first_seen":
        from .firstseen import FirstSeenScorer

        return FirstSeenScorer

    def suite(kind: str) -> EntityScorer:
        from detectors.suite import build_suite

        return build_suite(kind)

    return suite


def faust_app(settings: Settings, **faust_overrides: Any) -> faust.App:
    """The worker's Faust app with its batch consumer, configured from
    ``settings``, with no topics or handlers yet (:func:`create_app` adds them;
    ``streams.bench`` measures the framework's own cost with handlers that only
    count)."""
    t = settings.topics
    conf: dict[str, Any] = dict(
        broker=settings.kafka.faust_broker_url(),
        broker_credentials=settings.kafka.faust_credentials(),
        store=settings.worker.store,
        datadir=str(settings.worker.data_dir),
        topic_partitions=t.partitions,
        topic_replication_factor=t.replication_factor,
        processing_guarantee="at_least_once",
        key_serializer="raw",
        value_serializer="raw",
        web_port=settings.worker.web_port,
        web_bind="127.0.0.1",
        web_host="127.0.0.1",
        consumer_auto_offset_reset="earliest",
        broker_commit_every=1000,
        # one fetched batch is at most this many messages (streams.batchdrain)
        broker_max_poll_records=settings.worker.batch_size,
        broker_commit_interval=1.0,
        producer_acks=-1,
        table_cleanup_interval=60.0,
        # No standby replicas: with them, a worker that took over partitions from one
        # that left during a rebalance lost changelog records the standby had not
        # applied (suppression counts reset, alerts missing; cf. faust-streaming#212),
        # in 2 of 3 runs of test_workers_joining_and_leaving_mid_stream. Without them
        # the new owner recovers from the changelog itself: slower failover, exact state.
        table_standby_replicas=0,
    )
    conf.update(faust_overrides)
    app = batchdrain.BatchApp(settings.worker.app_id, **conf)
    app.ueba_fetch_max_wait_ms = settings.worker.fetch_max_wait_ms  # type: ignore[attr-defined]
    app.ueba_settle_seconds = settings.worker.settle_seconds  # type: ignore[attr-defined]
    return app


def raw_schema() -> faust.Schema:
    """Raw bytes keys and values (decoded by :func:`parse_event`). A fresh Schema
    per topic/table: Faust mutates a Schema shared between topics (the last
    topic's serializers win), which made raw keys JSON-decoded."""
    return faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def run_worker(app: faust.App, settings: Settings) -> None:
    """Serve the metrics and run ``app`` as a Faust worker until it stops (``ueba
    worker``; the benchmark's counting worker)."""
    METRICS.serve(settings.worker.metrics_port)
    level = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error"}[settings.log_level]
    sys.argv = [sys.argv[0], "worker", "-l", level, "--web-port", str(settings.worker.web_port), "--web-host", "127.0.0.1"]
    app.main()


def create_app(
    settings: Settings,
    *,
    scorer_factory: Callable[[str], EntityScorer] | None = None,
    **faust_overrides: Any,
) -> faust.App:
    """Build the Faust app for ``settings`` (nothing connects until it starts)."""
    t = settings.topics
    app = faust_app(settings, **faust_overrides)
    max_bytes = settings.worker.max_event_bytes
    min_score = settings.worker.min_score
    scorer_factory = scorer_factory or scorer_factory_for(settings)

    candidates_topic = app.topic(t.candidates, schema=raw_schema(), partitions=t.partitions, internal=False)
    alerts_topic = app.topic(t.alerts, schema=raw_schema(), partitions=t.partitions, internal=False)
    risk_topic = app.topic(t.risk, schema=raw_schema(), partitions=t.partitions, internal=False)
    dlq_topic = app.topic(t.deadletter, schema=raw_schema(), partitions=t.partitions, internal=False)
    policy = Policy.load(settings.worker.policy_file)
    rules = rules_for(settings)
    bysource_topic = app.topic(t.bysource, schema=raw_schema(), partitions=t.partitions, internal=False)

    async def dead_letter(message: Any, reason: str, detail: str, stage: str) -> Any:
        """Send ``message`` to the dead-letter topic; returns the send's future."""
        dl = DeadLetter(
            value=message.value,
            key=message.key,
            reason=reason,
            detail=detail,
            source_topic=message.topic,
            source_partition=message.partition,
            source_offset=message.offset,
            stage=stage,
        )
        fut = await dlq_topic.send(key=message.key, value=message.value or b"", headers=dl.headers())
        METRICS.deadletters.labels(stream=message.topic, reason=reason).inc()
        return fut

    cache_keys = settings.worker.state_cache_keys
    caches: list[Any] = []
    progresses: list[_Progress] = []

    def register(topic: Any, handle: Callable[[list[Any]], Any], flush_state: Callable[[Any], Any], reader: _TableReader,
                 write: Callable[[bytes, bytes, Any], None]) -> None:
        """Hand ``topic``'s batches to ``handle``; at each settle write its cached
        state (``flush_state(write)``) and then, per partition, the next offset
        after it (what a partition's position is checked against, see _Progress)."""
        progress = _Progress(reader, write)
        progresses.append(progress)

        async def handler(batch: list[Any]) -> None:
            await handle(batch)
            progress.handled(batch)

        def flush() -> None:
            flush_state(write)
            progress.flush()

        batchdrain.register(app, topic, handler, flush=flush, resume_at=progress.resume_at)

    def make_handler(kind: str, topic_name: str) -> None:
        topic = app.topic(topic_name, schema=raw_schema(), partitions=t.partitions, internal=False)
        table = app.Table(f"state-{kind}", default=None, key_type=bytes, value_type=bytes, schema=raw_schema(), partitions=t.partitions)
        # The "source" processor sees login events re-keyed by source.ip and runs the rule
        # correlations grouped by source.ip (password spraying); the others run their stream's rules.
        # A batch redelivered onto older state forwards its logins again at new offsets:
        # the source agent recognises the repeats by their fingerprint.
        processor = InputProcessor(
            kind,
            scorer_factory(kind),
            min_score=min_score,
            rules=rules,
            cache_keys=cache_keys,
            dedupe=kind == "source",
            policy=policy,
        )
        caches.append(processor.cache)
        events_counter = METRICS.events.labels(stream=kind)
        processing = METRICS.processing.labels(stream=kind)
        forward_by_source = kind == "access" and settings.worker.scorer == "suite"
        parse_kind = "access" if kind == "source" else kind
        reader = _TableReader(app, table)
        write = _table_writer(app, table)

        async def score(batch: list[Any]) -> None:
            # One fetched batch of this topic: state is read through the decoded-state
            # cache and outputs are sent; at the next settle, once Kafka acknowledged
            # the outputs, each changed key is written to the table once, and only
            # then are the batch's offsets acked.
            sends: list[tuple[Any, bytes, bytes, Any]] = []
            dead: list[tuple[Any, str, str, str]] = []
            stamps: list[float] = []
            held: dict[str, int] = {}
            for message in batch:
                reader.message = message
                try:
                    event = parse_event(parse_kind, message.value, max_bytes=max_bytes)
                    if kind == "source":
                        event = source_view(event) or event
                except EventError as exc:
                    dead.append((message, exc.reason, exc.detail, "decode"))
                    continue
                try:
                    result = processor.process(reader, event, message.offset, tag=message)
                except Exception as exc:  # a bug or odd data must never stop the worker
                    log.exception("processing %s offset %s failed", topic_name, message.offset)
                    dead.append((message, "processing_error", f"{type(exc).__name__}: {exc}", "process"))
                    continue
                arrival = _arrival_of(message)
                stamps.append(arrival)
                for reason in result.held:
                    held[reason] = held.get(reason, 0) + 1
                if result.alerts:
                    # the input's arrival in Kafka travels with its candidates (event-to-alert latency)
                    arrived = _arrival_header(arrival)
                    for alert in result.alerts:
                        # keyed by entity: the alert agent's state is co-partitioned by entity
                        sends.append((candidates_topic, f"{alert.entity_type}:{alert.entity}".encode(), alert.to_json(), arrived))
                if forward_by_source and not result.redelivered:
                    sv = source_view(event)
                    if sv is not None:
                        sends.append((bysource_topic, sv.identity.encode(), message.value, _arrival_header(arrival)))
            reader.message = None
            # Outputs sent; the consumer's next settle waits for Kafka to acknowledge
            # them, then writes the state (processor.flush) and acks the offsets.
            # (the latency is observed once Kafka acknowledged the outputs)
            await _deliver_batch(app, sends, dead, dead_letter, lambda: _observe_live(processing, stamps))
            events_counter.inc(len(batch))
            for reason, n in held.items():
                METRICS.held.labels(stream=kind, reason=reason).inc(n)
            METRICS.last_progress.set(time.time())

        register(topic, score, processor.flush, reader, write)

    entities = app.Table("entities", default=None, key_type=bytes, value_type=bytes, schema=raw_schema(), partitions=t.partitions)
    alert_processor = AlertProcessor(policy, cache_keys=cache_keys)
    caches.append(alert_processor.cache)
    entity_reader = _TableReader(app, entities)
    write_entities = _table_writer(app, entities)

    async def decide(batch: list[Any]) -> None:
        """Policy, suppression and entity risk, keyed by entity (batched like the scorers)."""
        sends: list[tuple[Any, bytes, bytes, Any]] = []
        dead: list[tuple[Any, str, str, str]] = []
        arrivals: list[float] = []
        for message in batch:
            entity_reader.message = message
            try:
                candidate = Alert.from_json(message.value)
                outcome = alert_processor.process(entity_reader, candidate, position=message.offset, tag=message)
            except Exception as exc:
                log.exception("candidate %s offset %s failed", t.candidates, message.offset)
                dead.append((message, "processing_error", f"{type(exc).__name__}: {exc}", "alert"))
                continue
            if outcome.alert is not None:
                a = outcome.alert
                sends.append((alerts_topic, message.key, a.to_json(), None))
                arrivals.append(_arrival_of(message))
                METRICS.alerts.labels(source=a.source).inc()
            if outcome.risk_change is not None:
                sends.append((risk_topic, message.key, outcome.risk_change.to_json(), None))
        entity_reader.message = None
        await _deliver_batch(app, sends, dead, dead_letter, lambda: _observe_live(METRICS.latency, arrivals))
        METRICS.last_progress.set(time.time())

    register(candidates_topic, decide, alert_processor.flush, entity_reader, write_entities)

    @app.on_partitions_revoked.connect
    async def _forget_cached_state(sender: Any, revoked: Any, **kwargs: Any) -> None:
        # Faust waited for every taken event to be acked (so every cache is flushed);
        # the partitions may now move to another worker: the tables are the truth again.
        for cache in caches:
            if cache is not None:
                cache.discard()
        for progress in progresses:
            progress.last.clear()

    for kind, topic_name in t.inputs().items():
        assert kind in STREAM_KINDS
        make_handler(kind, topic_name)
    if settings.worker.scorer == "suite":
        make_handler("source", t.bysource)
    if rules is not None:

        @app.timer(10.0)
        async def reload_rules() -> None:
            rules.maybe_reload()

    _add_health(app, stall_seconds=settings.worker.stall_seconds)
    return app


async def _deliver_batch(app: faust.App, sends: list[tuple[Any, bytes, bytes, Any]], dead: list[tuple[Any, ...]], dead_letter: Callable[..., Any],
                         on_acked: Callable[[], Any] | None = None) -> None:
    """Send a batch's outputs. The consumer's next settle waits until Kafka
    acknowledged every one (``batchdrain.expect``), and only then writes the
    batch's state and acks its offsets: a state that survives a crash never has
    outputs that were lost, so a redelivered event whose state was applied needs
    nothing re-sent. If they cannot be written (Kafka unreachable past the
    producer's retries), the worker stops instead of going on: everything handled
    since the last settle stays unacked and unwritten, and a restarted worker gets
    it redelivered. ``on_acked`` is called once Kafka acknowledged them all (not if
    one failed)."""
    try:
        futures = [await topic.send(key=key, value=value, headers=headers) for topic, key, value, headers in sends]
        for args in dead:
            futures.append(await dead_letter(*args))
        if on_acked is not None:
            if futures:
                asyncio.gather(*futures).add_done_callback(lambda done: _call_if_delivered(done, on_acked))
            else:
                on_acked()
        await batchdrain.expect(app, futures)
    except Exception as exc:
        log.critical("could not write a batch's outputs (%s: %s); stopping the worker so the batch is redelivered", type(exc).__name__, exc)
        await app.crash(exc)
        raise


#: Header carrying an input event's Kafka record timestamp (ms) onto its candidates.
ARRIVAL_HEADER = "ueba-arrival-ms"


def _arrival_header(arrival: float) -> list[tuple[str, bytes]]:
    return [(ARRIVAL_HEADER, str(int(arrival * 1000)).encode())]


def _arrival_of(message: Any) -> float:
    """When the input event behind ``message`` arrived in Kafka (seconds): the
    header a worker set when it forwarded the event or raised a candidate for it,
    else the message's own record timestamp."""
    headers = message.headers or ()
    items = headers.items() if isinstance(headers, dict) else headers
    for k, v in items:
        if k == ARRIVAL_HEADER:
            try:
                return int(v) / 1000.0
            except (TypeError, ValueError):
                break
    return message.timestamp


def _call_if_delivered(done: "asyncio.Future[Any]", call: Callable[[], Any]) -> None:
    if not done.cancelled() and done.exception() is None:
        call()


def _observe_live(histogram: Any, stamps: list[float]) -> float:
    """Seconds from each arrival time to now into ``histogram``, for live traffic
    only (not a backlog older than an hour); returns now."""
    now = time.time()
    for ts in stamps:
        if ts > now - 3600:
            histogram.observe(max(0.0, now - ts))
    return now


class _TableReader:
    """What the state caches read a missing key through: the table, with the
    message being processed made Faust's current event (the table reads the
    key from that message's partition)."""

    __slots__ = ("app", "table", "message")

    def __init__(self, app: faust.App, table: Any) -> None:
        self.app = app
        self.table = table
        self.message: Any = None

    def get(self, key: bytes, default: Any = None) -> Any:
        if self.message is None:
            return self.table.get(key, default)
        event = batchdrain.event_for(self.app, self.message)
        batchdrain.enter(event)
        return self.table.get(key, default)


def progress_key(partition: int) -> bytes:
    """The table key of a partition's next offset. Not valid UTF-8, so no identity
    (always encoded from text) can collide with it."""
    return b"\xff\xffueba-next-offset:%d" % partition


class _Progress:
    """Per partition of one scored topic, the offset after the last message whose
    state is written: stored in the topic's own table with that state, at each
    settle, so it survives crashes and moves with the partition (changelog). The
    consumer checks a partition's first batch after an assignment against it
    (``batchdrain.BatchingConsumer._verify_positions``): a partition positioned
    past it would skip events."""

    __slots__ = ("reader", "write", "last")

    def __init__(self, reader: "_TableReader", write: Callable[[bytes, bytes, Any], None]) -> None:
        self.reader = reader
        self.write = write
        self.last: dict[int, Any] = {}  # partition -> latest handled message, until the next flush

    def handled(self, batch: list[Any]) -> None:
        last = self.last
        for m in batch:
            prev = last.get(m.partition)
            if prev is None or m.offset > prev.offset:
                last[m.partition] = m

    def flush(self) -> None:
        for partition, m in self.last.items():
            self.write(progress_key(partition), b"%d" % (m.offset + 1), m)
        self.last.clear()

    def resume_at(self, message: Any) -> int | None:
        reader = self.reader
        reader.message = message
        try:
            raw = reader.get(progress_key(message.partition))
        finally:
            reader.message = None
        return int(raw) if raw else None


def _table_writer(app: faust.App, table: Any) -> Callable[[bytes, bytes, Any], None]:
    """A state-cache writer into a Faust table: the tag is the key's latest
    message, whose partition the store and the changelog message use."""

    def write(key: bytes, raw: bytes, message: Any) -> None:
        event = batchdrain.event_for(app, message)
        batchdrain.enter(event)
        table[key] = raw

    return write


def _table_size(table: Any) -> int:
    """Keys in a table: RocksDB's own estimate (no full scan), else len()."""
    data = table.data
    dbs = getattr(data, "_dbs_for_actives", None)
    if dbs is not None:
        total = 0
        for db in dbs():
            try:
                total += int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
            except Exception:
                return -1
        return total
    return len(data)


class Health:
    """Liveness: a worker that has unread messages (lag) but made no progress for
    ``stall_seconds`` is unhealthy; ``/health`` then answers 503."""

    def __init__(self, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self.lag: dict[str, int] = {}
        self.last_progress = time.time()

    def verdict(self, now: float) -> tuple[bool, dict[str, Any]]:
        total = sum(self.lag.values())
        idle = now - self.last_progress
        healthy = total == 0 or idle < self.stall_seconds
        return healthy, {"status": "ok" if healthy else "stalled", "lag": total, "seconds_since_progress": round(idle, 1), "partitions": self.lag}


def _add_health(app: faust.App, stall_seconds: float) -> None:
    health = Health(stall_seconds)
    app.ueba_health = health  # type: ignore[attr-defined]

    @app.timer(5.0)
    async def observe() -> None:
        consumer = app.consumer
        lag: dict[str, int] = {}
        for tp in consumer.assignment():
            if tp.topic.endswith("-changelog") or "__assignor" in tp.topic:
                continue
            try:
                hw = consumer.highwater(tp)
            except Exception:
                continue
            read = consumer._read_offset.get(tp)  # last offset handed to an agent
            behind = max(0, (hw or 0) - ((read + 1) if read is not None else 0))
            lag[f"{tp.topic}/{tp.partition}"] = behind
            METRICS.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(behind)
        progressed = METRICS.last_progress._value.get()
        if progressed:
            health.last_progress = max(health.last_progress, progressed)
        health.lag = lag
        for name, table in app.tables.items():
            METRICS.table_keys.labels(table=name).set(_table_size(table))

    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        ok, body = health.verdict(time.time())
        return web.json(body, status=200 if ok else 503)
