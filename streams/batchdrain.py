"""Batch delivery of Kafka messages inside a Faust worker.

Faust hands every message on its own to an agent: for each one, the
consumer's drain loop creates two tasks and an ``asyncio.wait``
(``Service.wait_first``), the conductor decodes and queues it, and the stream
iterator wraps it in an event, calls the sensors and acks it. On this machine
that costs about 170 microseconds per message before any work is done: an
agent that only counts its messages tops out near 6,000 messages/s.

This module keeps everything Faust does well (consumer group and partition
assignment, offset tracking and commits, changelog-backed tables and their
recovery, the producer, rebalance handling, the web server and timers) and
replaces only that per-message hand-off for the topics the worker scores:

* :class:`BatchingConsumer` is Faust's aiokafka consumer with a drain loop
  that collects the messages of *batch topics* from each ``getmany`` round
  and hands them, per topic, as one list to a handler registered with
  :func:`register`. Messages of every other topic (table changelogs during
  recovery, ordinary agents) take Faust's usual path unchanged.
* A batch is processed inline in the drain loop (aiokafka keeps fetching in
  its own thread meanwhile, so this is natural back-pressure). Its messages
  are *tracked* before the handler runs; the handler returns once the batch's
  outputs are in Kafka. State is written, and the messages *acked*, at the
  next *settle*: every ``SETTLE_SECONDS`` or ``SETTLE_MESSAGES``, when a
  rebalance stops the flow, and on shutdown. So a rebalance waits for handled
  work (``wait_empty``) exactly as it waits for an agent's event, a committed
  offset never runs ahead of written state, and a busy key's state is written
  once per settle, not once per small batch (at a low event rate batches are
  small, and per-batch writes cost more than the scoring).
* A batch fetched before a rebalance began, and not started yet, is dropped
  without acking: the new owner of its partitions (perhaps this worker)
  reads it again from the committed offset. Faust's streams instead *ack*
  such messages unprocessed (``Stream.__aiter__``: "skipped" values), which
  could commit past work never done.
* A handler that raises stops the worker (its messages stay unacked, so they
  are redelivered after the restart): the handler is expected to deal with
  bad data itself (dead-letter topic) and to raise only when its outputs or
  state cannot be written.

Tables need a *current event* for their partition (faust#497): handlers get
:func:`event_for` to make one from a message when they read or write state.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from time import monotonic
from typing import Any, Awaitable, Callable, Iterable

import faust
from faust.streams import _current_event
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as _aiokafka
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

log = logging.getLogger("ueba.worker")

BatchHandler = Callable[[list[Any]], Awaitable[None]]
StateFlush = Callable[[], Any]

#: Default: write the handlers' state (and then ack) at least this often (seconds) ...
#: 0 = after every fetch round (the conservative default: less work to redeliver
#: after a rebalance). Longer settles measured cheaper at low event rates.
SETTLE_SECONDS = 0.0
#: ... or once this many handled messages wait for it.
SETTLE_MESSAGES = 10_000

__all__ = ["BatchingConsumer", "BatchTransport", "BatchApp", "register", "event_for", "enter"]


#: Default for how long the broker may hold a fetch that found no data (ms;
#: the worker sets it from ``UEBA_WORKER__FETCH_MAX_WAIT_MS``).
FETCH_MAX_WAIT_MS = 25
#: Default for how many bytes a fetch may wait (up to the max wait) to gather.
FETCH_MIN_BYTES = 256 * 1024


class _ConsumerThread(_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust hard-codes fetch_max_wait_ms=1500. aiokafka keeps one fetch in
        # flight per broker, for the partitions with nothing buffered: once the
        # busy partitions' data is buffered, that fetch covers only quiet ones
        # (alert candidates, changelogs), the broker holds it for the full wait,
        # and the busy partitions cannot be fetched again until it returns.
        # Measured: 40-70% of a worker's time idle in getmany.
        consumer._fetch_max_wait_ms = int(getattr(self.app, "ueba_fetch_max_wait_ms", FETCH_MAX_WAIT_MS))
        # ... and answers a fetch as soon as it has one byte: at a moderate rate every
        # round then carried a handful of events, and per-round costs (the thread
        # hop, a produce request and an ack wait per topic) dominated. Let the
        # broker gather up to this much within the wait instead.
        consumer._fetch_min_bytes = int(getattr(self.app, "ueba_fetch_min_bytes", FETCH_MIN_BYTES))
        return consumer


class BatchingConsumer(_aiokafka.Consumer):
    """Faust's aiokafka consumer, delivering the batch topics' messages in lists."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: handled messages whose state is not written yet (acked at the next settle)
        self._pending: list[Any] = []
        self._settle_at = 0.0
        self._settle_seconds = float(getattr(self.app, "ueba_settle_seconds", SETTLE_SECONDS))
        self._settle_messages = int(getattr(self.app, "ueba_settle_messages", SETTLE_MESSAGES))
        #: set while no handler runs; no new batch starts while a revocation settles
        self._idle = asyncio.Event()
        self._idle.set()
        self._revoking = False

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Before Faust lets go of anything (it first forgets the revoked partitions'
        acks and offsets, then releases their table stores, and only then waits for
        in-flight work): finish the batch in progress, write every handler's state
        and ack. Batches fetched meanwhile are dropped unacked and read again."""
        self._revoking = True
        try:
            await self._idle.wait()
            if self._pending:
                self._settle()
            await super().on_partitions_revoked(revoked)
        finally:
            self._revoking = False

    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs inside a worker
        handlers: dict[str, BatchHandler] = getattr(self.app, "ueba_batch_handlers", {})
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        app = self.app
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                generation = app.consumer_generation_id
                ait = getmany(timeout=1.0)
                # getmany can return at once round after round: let others run
                await self.sleep(0)
                if self.should_stop:
                    break
                # getmany blocks while the flow is stopped (a rebalance), and the
                # rebalance waits for every tracked message to be acked: settle first.
                # (No await between this check and getmany's own.)
                if self._pending and (not self.flow_active or monotonic() >= self._settle_at):
                    self._settle()
                batches: dict[str, list[Any]] = {}
                async for tp, message in ait:
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue  # already handed over (Faust drops these too)
                    gap = offset - (r_offset or 0)
                    if gap > 1 and r_offset and acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    topic = message.topic
                    if topic in handlers:
                        batch = batches.get(topic)
                        if batch is None:
                            batches[topic] = batch = []
                        batch.append(message)
                    else:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    set_read_offset(tp, offset)
                unset_flag(CONSUMER_FETCHING)
                for topic, batch in batches.items():
                    await self._run_batch(handlers[topic], batch, generation)
                if self._pending and (len(self._pending) >= self._settle_messages or monotonic() >= self._settle_at or not self.flow_active):
                    self._settle()
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self._pending:
                self._settle()  # stopping: their outputs are in Kafka, write their state and ack
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    async def _run_batch(self, handler: BatchHandler, batch: list[Any], generation: int) -> None:
        if self._revoking or not self.flow_active or self.app.consumer_generation_id != generation or self.should_stop:
            # A rebalance began after these were fetched: not processed, not acked.
            # Faust seeks the assigned partitions back to their committed offsets.
            self._forget_read_offsets(batch)
            return
        self.track_all(batch)
        self._idle.clear()
        try:
            await handler(batch)
        except BaseException:
            # Nothing handled since the last settle is acked, and no state of it
            # is written: the cached state may hold effects whose outputs never
            # reached Kafka. (Handlers raise only when outputs cannot be written.)
            self.untrack_all(self._pending)
            self._pending = []
            self.untrack_all(batch)
            raise
        finally:
            self._idle.set()
        # outputs are in Kafka; state and acks follow at the next settle
        if not self._pending:
            self._settle_at = monotonic() + self._settle_seconds
        self._pending.extend(batch)

    def _settle(self) -> None:
        """Write every handler's cached state, then ack the messages handled since
        the last settle: a committed offset never runs ahead of written state, and
        a hot key is written once per settle rather than once per batch."""
        pending, self._pending = self._pending, []
        try:
            for flush in getattr(self.app, "ueba_state_flushes", ()):
                flush()
        except Exception as exc:
            self.untrack_all(pending)
            log.critical("could not write the handlers' state (%s: %s); stopping the worker so the batches are redelivered", type(exc).__name__, exc)
            asyncio.ensure_future(self.app.crash(exc))
            raise
        self.ack_all(pending)

    def _forget_read_offsets(self, batch: Iterable[Any]) -> None:
        read = self._read_offset
        for m in batch:
            r = read.get(m.tp)
            if r is not None and r >= m.offset:
                read[m.tp] = m.offset - 1 if m.offset > 0 else None

    def track_all(self, batch: list[Any]) -> None:
        """Mark ``batch`` in progress: a rebalance now waits for its acks."""
        unacked = self._unacked_messages
        for m in batch:
            m.tracked = True
            unacked.add(m)

    def untrack_all(self, batch: list[Any]) -> None:
        discard = self._unacked_messages.discard
        for m in batch:
            discard(m)
        notify(self._waiting_for_ack)

    def ack_all(self, batch: list[Any]) -> None:
        """``Consumer.ack`` for every message of ``batch`` under one lock."""
        acks_enabled_for = self.app.topics.acks_enabled_for
        committed_offset = self._committed_offset
        acked_index = self._acked_index
        acked = self._acked
        discard = self._unacked_messages.discard
        n = 0
        with ack_lock:
            enabled: dict[str, bool] = {}
            for m in batch:
                if m.acked:
                    continue
                m.acked = True
                topic = m.topic
                on = enabled.get(topic)
                if on is None:
                    on = enabled[topic] = acks_enabled_for(topic)
                discard(m)
                if not on:
                    continue
                tp = m.tp
                offset = m.offset
                committed = committed_offset[tp]
                if committed is None or offset >= committed:
                    index = acked_index[tp]
                    if offset not in index:
                        index.add(offset)
                        acked[tp].append(offset)
                        n += 1
            self._n_acked += n
            notify(self._waiting_for_ack)


class BatchTransport(_aiokafka.Transport):
    """The aiokafka transport with :class:`BatchingConsumer`."""

    Consumer = BatchingConsumer


class BatchApp(faust.App):
    """A Faust app whose Kafka consumer delivers registered topics in batches."""

    def _new_transport(self) -> Any:
        url = self.conf.broker_consumer[0]
        if url.scheme in ("kafka", "aiokafka"):
            return BatchTransport(self.conf.broker_consumer, self)
        return super()._new_transport()


def register(app: faust.App, topic: Any, handler: BatchHandler, flush: StateFlush | None = None) -> None:
    """Deliver ``topic``'s messages to ``handler`` in lists (subscribes the topic).

    ``handler`` processes a batch and returns once its outputs are in Kafka;
    ``flush`` writes the handler's cached state. The consumer calls every
    flush, then acks, at least every ``SETTLE_SECONDS``."""
    handlers = getattr(app, "ueba_batch_handlers", None)
    if handlers is None:
        handlers = app.ueba_batch_handlers = {}  # type: ignore[attr-defined]
        app.ueba_state_flushes = []  # type: ignore[attr-defined]
    for name in topic.topics:
        handlers[name] = handler
    if flush is not None:
        app.ueba_state_flushes.append(flush)  # type: ignore[attr-defined]
    app.topics.add(topic)


def event_for(app: faust.App, message: Any) -> Any:
    """A Faust event for ``message`` (what tables take their partition from)."""
    return app.create_event(message.key, message.value, message.headers, message)


def enter(event: Any) -> None:
    """Make ``event`` the current event of this task (until the next ``enter``)."""
    _current_event.set(weakref.ref(event))
