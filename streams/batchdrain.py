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
  are *tracked* before the handler runs; the handler sends the batch's
  outputs and returns without waiting for the broker's acknowledgement (it
  hands the futures to :func:`expect`). At the next *settle* the consumer
  waits until Kafka acknowledged every output sent since the last one, then
  state is written and the messages *acked*: every ``SETTLE_SECONDS`` or
  ``SETTLE_MESSAGES``, when a rebalance stops the flow, and on shutdown. So a
  rebalance waits for handled work (``wait_empty``) exactly as it waits for
  an agent's event, a committed offset never runs ahead of written state, and
  a busy key's state is written once per settle, not once per small batch (at
  a low event rate batches are small, and per-batch writes cost more than the
  scoring).
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
#: Given a partition's first message after an assignment: the offset the handler's
#: own persisted state says that partition continues at (None: no record).
ResumeAt = Callable[[Any], "int | None"]

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
        #: the handled batches' outputs, sent and not yet known to be acknowledged: the
        #: next settle waits for them before it writes state (see :func:`expect`)
        self._outputs: list[Any] = []
        #: set while no handler runs; no new batch starts while a revocation settles
        self._idle = asyncio.Event()
        self._idle.set()
        self._revoking = False
        #: partitions whose position was checked against the handler's state since the
        #: last assignment, and the offset each partition was last sought back to
        self._checked: set[Any] = set()
        self._rewound: dict[Any, int] = {}
        #: partitions sought back because offsets were skipped, and batches dropped
        #: across a rebalance (counters, for tests and metrics)
        self.ueba_rewinds = 0
        self.ueba_dropped_batches = 0

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Before Faust lets go of anything (it first forgets the revoked partitions'
        acks and offsets, then releases their table stores, and only then waits for
        in-flight work): finish the batch in progress, write every handler's state
        and ack. Batches fetched meanwhile are dropped unacked and read again."""
        self._revoking = True
        try:
            await self._idle.wait()
            if self._pending:
                await self._settle_acked()
            self._checked.clear()
            await super().on_partitions_revoked(revoked)
        finally:
            self._revoking = False

    async def on_partitions_assigned(self, assigned: Any, generation_id: int = 0) -> None:
        # every partition's position is checked again against the state it resumes
        self._checked.clear()
        self._rewound.clear()
        await super().on_partitions_assigned(assigned, generation_id)

    def _new_consumer_thread(self) -> Any:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs inside a worker
        handlers: dict[str, BatchHandler] = getattr(self.app, "ueba_batch_handlers", {})
        resume_at: dict[str, ResumeAt] = getattr(self.app, "ueba_resume_at", {})
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
                # (No await between this check and getmany's own but the settle's wait for
                # the outputs, after which nothing is left pending.)
                if self._pending and (not self.flow_active or monotonic() >= self._settle_at):
                    await self._settle_acked()
                batches: dict[str, list[Any]] = {}
                resought: set[Any] = set()
                async for tp, message in ait:
                    if tp in resought:
                        continue  # sought back this round: read again from there
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue  # already handed over (Faust drops these too)
                    gap = offset - (r_offset or 0)
                    topic = message.topic
                    if gap > 1 and r_offset and acks_enabled_for(topic):
                        if topic in handlers and await self._rewind(tp, r_offset + 1, offset, "the fetch skipped them"):
                            resought.add(tp)
                            continue
                        await self._add_gap(tp, r_offset + 1, offset)
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
                    await self._run_batch(handlers[topic], batch, generation, resume_at.get(topic))
                if self._pending and (len(self._pending) >= self._settle_messages or monotonic() >= self._settle_at or not self.flow_active):
                    await self._settle_acked()
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
                if self._outputs_delivered():
                    self._settle()  # stopping: their outputs are in Kafka, write their state and ack
                else:  # (cancelled while outputs were in flight: redelivered, like a crash)
                    self.untrack_all(self._pending)
                    self._pending = []
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    async def _rewind(self, tp: Any, expected: int, found: int, why: str) -> bool:
        """Offsets ``expected``..``found - 1`` of ``tp`` were not handed to us: seek back to
        ``expected`` so they are read, unless this partition was already sought back
        there once and the log still starts later (retention deleted them, or they
        are a transaction's control records): then accept it. True if sought."""
        if self._rewound.get(tp) == expected:
            log.warning("offsets %d-%d of %s[%d] do not exist any more (%s); continuing at %d",
                        expected, found - 1, tp.topic, tp.partition, why, found)
            self._rewound.pop(tp, None)
            return False
        log.warning("offsets %d-%d of %s[%d] were not processed (%s): reading them again",
                    expected, found - 1, tp.topic, tp.partition, why)
        if not await self._seek_back(tp, expected):
            return False
        self._rewound[tp] = expected
        self.ueba_rewinds += 1
        return True

    async def _seek_back(self, tp: Any, offset: int) -> bool:
        """Seek ``tp`` to ``offset``; False if it cannot be (revoked meanwhile: its
        new owner, or the rebalance's seek to the committed offset, takes over)."""
        try:
            await self.seek(tp, offset)
        except Exception as exc:
            log.info("could not seek %s[%s] back to %s (%s)", tp.topic, tp.partition, offset, exc)
            return False
        return True

    @staticmethod
    def _firsts(batch: list[Any], skip: set[Any] | frozenset[Any] = frozenset()) -> dict[Any, Any]:
        """Each partition's first (lowest-offset) message in ``batch``, but for those in ``skip``."""
        firsts: dict[Any, Any] = {}
        for m in batch:
            if m.tp not in skip and m.tp not in firsts:
                firsts[m.tp] = m
        return firsts

    async def _verify_positions(self, batch: list[Any], resume_at: ResumeAt) -> list[Any]:
        """The first batch of a partition after an assignment must start where the
        handler's persisted state says it left off. Faust and the client position a
        partition at its committed offset, which never runs ahead of the written
        state; a partition positioned *later* than the state's next offset would
        silently skip events (a fetch drained before Faust's post-recovery seek did
        so in a hand-over between two workers), so it is sought back instead."""
        firsts = self._firsts(batch, self._checked)
        if not firsts:
            return batch
        skip: set[Any] = set()
        for tp, m in firsts.items():
            try:
                expected = resume_at(m)
            except Exception as exc:  # the check must never stop the worker
                log.warning("could not read the resume offset of %s[%d]: %s", tp.topic, tp.partition, exc)
                expected = None
            if expected is not None and m.offset > expected and await self._rewind(tp, expected, m.offset, "the partition was positioned past them"):
                skip.add(tp)
                continue
            self._checked.add(tp)
            self._rewound.pop(tp, None)
        if not skip:
            return batch
        return [m for m in batch if m.tp not in skip]

    async def _run_batch(self, handler: BatchHandler, batch: list[Any], generation: int, resume_at: ResumeAt | None = None) -> None:
        why = (
            "revoking" if self._revoking
            else "flow stopped" if not self.flow_active
            else "generation changed" if self.app.consumer_generation_id != generation
            else "stopping" if self.should_stop
            else None
        )
        if why is not None:
            # A rebalance began (or the worker is stopping) after these were fetched:
            # not processed, not acked, and read again (rewind below).
            await self._drop_batch(batch, why)
            return
        if resume_at is not None:
            batch = await self._verify_positions(batch, resume_at)
            if not batch:
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
            self._outputs = []
            self.untrack_all(batch)
            raise
        finally:
            self._idle.set()
        # outputs are sent; their acknowledgement, the state and the acks follow at the next settle
        if not self._pending:
            self._settle_at = monotonic() + self._settle_seconds
        self._pending.extend(batch)

    async def _settle_acked(self) -> None:
        """Wait until Kafka acknowledged every output of the batches handled since
        the last settle, then :meth:`_settle`. If an output cannot be written (Kafka
        unreachable past the producer's retries), nothing handled since the last
        settle is written or acked, and the worker stops: the batches are redelivered
        to the restarted worker, whose state never saw them."""
        outputs, self._outputs = self._outputs, []
        if outputs:
            # Not idle while waiting: a revocation (which settles too, after waiting
            # for idle) must not write state and ack before these are acknowledged.
            self._idle.clear()
            try:
                await asyncio.gather(*outputs)
            except BaseException as exc:
                self.untrack_all(self._pending)
                self._pending = []
                if not isinstance(exc, asyncio.CancelledError):
                    log.critical("could not write the outputs of handled batches (%s: %s); stopping the worker so they are redelivered", type(exc).__name__, exc)
                    await self.app.crash(exc)
                raise
            finally:
                self._idle.set()
        self._settle()

    def _outputs_delivered(self) -> bool:
        """Whether every output awaiting acknowledgement was acknowledged."""
        for f in self._outputs:
            if not f.done() or f.cancelled() or f.exception() is not None:
                return False
        self._outputs = []
        return True

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

    async def _drop_batch(self, batch: list[Any], why: str) -> None:
        """Leave ``batch`` unprocessed and unacked, and make sure it is read again.

        Forgetting the read offsets is not enough: the client's fetch position is
        already past the batch, so the next round would return later messages,
        and Faust's gap tracking (:meth:`_add_gap`, meant for compacted topics)
        would then count the skipped offsets as done and commit past them. A
        rebalance seeks to the committed offsets, but a batch dropped *after*
        that seek (fetched while the generation changed under ``getmany``) is
        followed by no seek at all. So each partition this worker still owns
        is sought back to the batch's first offset (or the committed offset if
        that is later: another worker already did those)."""
        first = {tp: m.offset for tp, m in self._firsts(batch).items()}
        self._forget_read_offsets(batch)
        self.ueba_dropped_batches += 1
        log.info("batch of %d message(s) dropped unprocessed (%s); reading %s again", len(batch), why,
                 ", ".join(f"{tp.topic}[{tp.partition}]@{o}" for tp, o in sorted(first.items())))
        if self.should_stop:
            return  # stopping: the next owner starts at the committed offset
        try:
            assigned = self.assignment()
        except Exception:  # no assignment yet (a rebalance in progress): it will seek
            return
        for tp, offset in first.items():
            if tp not in assigned:
                continue  # revoked: its new owner starts at the committed offset
            committed = self._committed_offset.get(tp)
            await self._seek_back(tp, max(offset, committed) if committed is not None else offset)

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


def register(app: faust.App, topic: Any, handler: BatchHandler, flush: StateFlush | None = None,
             resume_at: ResumeAt | None = None) -> None:
    """Deliver ``topic``'s messages to ``handler`` in lists (subscribes the topic).

    ``handler`` processes a batch, sends its outputs and hands their futures to
    :func:`expect` (or returns once they are in Kafka); ``flush`` writes the
    handler's cached state. At least every ``SETTLE_SECONDS`` the consumer waits
    for the outputs, calls every flush, then acks. ``resume_at`` (optional)
    reads, for a partition's first message after an assignment, the offset the
    handler's written state continues at (see :meth:`BatchingConsumer._verify_positions`)."""
    handlers = getattr(app, "ueba_batch_handlers", None)
    if handlers is None:
        handlers = app.ueba_batch_handlers = {}  # type: ignore[attr-defined]
        app.ueba_state_flushes = []  # type: ignore[attr-defined]
        app.ueba_resume_at = {}  # type: ignore[attr-defined]
    for name in topic.topics:
        handlers[name] = handler
        if resume_at is not None:
            app.ueba_resume_at[name] = resume_at  # type: ignore[attr-defined]
    if flush is not None:
        app.ueba_state_flushes.append(flush)  # type: ignore[attr-defined]
    app.topics.add(topic)


async def expect(app: faust.App, outputs: list[Any]) -> None:
    """Hand the consumer the futures of a handled batch's outputs (sent, not yet
    acknowledged): the next settle waits for every one before it writes state
    and acks, so the handler need not wait for a round trip to the broker before
    the next batch. Outside a :class:`BatchingConsumer`, waits for them here."""
    if not outputs:
        return
    pending = getattr(app.consumer, "_outputs", None)
    if pending is None:
        await asyncio.gather(*outputs)
    else:
        pending.extend(outputs)


def event_for(app: faust.App, message: Any) -> Any:
    """A Faust event for ``message`` (what tables take their partition from)."""
    return app.create_event(message.key, message.value, message.headers, message)


def enter(event: Any) -> None:
    """Make ``event`` the current event of this task (until the next ``enter``)."""
    _current_event.set(weakref.ref(event))
