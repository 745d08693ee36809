"""streams.batchdrain: the bookkeeping that makes batch delivery as safe as Faust's own
(tracked while in progress, acked only after the handler, dropped unacked across a rebalance)."""

import asyncio

import pytest
from faust.types import TP
from faust.types.tuples import Message

from streams.app import create_app
from streams.settings import Settings


def _consumer():
    s = Settings(topics={"partitions": 2})
    app = create_app(s)
    asyncio.run(app.topics._update_indices())
    return app, app.consumer, s.topics.access


def _msgs(topic, partition, offsets):
    return [Message(topic, partition, o, 0.0, 0, {}, b"k", b"v", None) for o in offsets]


def test_a_batch_is_tracked_while_handled_and_acked_only_after_its_state_is_written():
    app, c, topic = _consumer()
    batch = _msgs(topic, 0, [5, 6, 7]) + _msgs(topic, 1, [0])
    seen = {}

    async def handler(msgs):
        seen["unacked_during"] = set(c._unacked_messages)
        seen["acked_during"] = [m.acked for m in msgs]

    def flush():
        seen["acked_at_flush"] = [m.acked for m in batch]

    app.ueba_state_flushes.append(flush)
    asyncio.run(c._run_batch(handler, batch, app.consumer_generation_id))
    assert seen["unacked_during"] == set(batch)  # a rebalance's wait_empty waits for these
    assert seen["acked_during"] == [False] * 4
    # handled, outputs in Kafka: still unacked until the state is written
    assert not any(m.acked for m in batch) and set(c._unacked_messages) == set(batch)
    c._settle()
    assert seen["acked_at_flush"] == [False] * 4  # state written before any ack
    assert all(m.acked for m in batch) and not c._unacked_messages and not c._pending
    assert list(c._acked[TP(topic, 0)]) == [5, 6, 7] and list(c._acked[TP(topic, 1)]) == [0]
    assert c._n_acked == 4
    c.ack_all(batch)  # acking twice changes nothing
    assert c._n_acked == 4 and list(c._acked[TP(topic, 0)]) == [5, 6, 7]


def test_a_failing_handler_leaves_everything_since_the_last_settle_unacked_and_unwritten():
    app, c, topic = _consumer()
    earlier = _msgs(topic, 0, [1, 2])
    batch = _msgs(topic, 0, [3, 4])
    flushed = []
    app.ueba_state_flushes.append(lambda: flushed.append(1))

    async def ok(msgs):
        pass

    async def failing(msgs):
        raise RuntimeError("outputs could not be written")

    asyncio.run(c._run_batch(ok, earlier, app.consumer_generation_id))
    with pytest.raises(RuntimeError):
        asyncio.run(c._run_batch(failing, batch, app.consumer_generation_id))
    assert not flushed and not c._pending
    assert not any(m.acked for m in earlier + batch)
    assert not c._unacked_messages and not c._acked[TP(topic, 0)] and c._n_acked == 0


def test_a_failing_state_write_acks_nothing():
    app, c, topic = _consumer()
    batch = _msgs(topic, 0, [1, 2])

    def broken():
        raise OSError("store gone")

    app.ueba_state_flushes.append(broken)

    async def scenario():
        async def ok(msgs):
            pass

        await c._run_batch(ok, batch, app.consumer_generation_id)
        with pytest.raises(OSError):
            c._settle()

    asyncio.run(scenario())
    assert not any(m.acked for m in batch) and not c._unacked_messages and c._n_acked == 0


def test_a_batch_fetched_before_a_rebalance_is_dropped_not_acked():
    app, c, topic = _consumer()
    batch = _msgs(topic, 0, [10, 11])
    c._read_offset[TP(topic, 0)] = 11
    called = []

    async def handler(msgs):
        called.append(msgs)

    asyncio.run(c._run_batch(handler, batch, app.consumer_generation_id - 1))  # generation moved on
    assert not called and not any(m.acked for m in batch) and c._n_acked == 0
    assert c._read_offset[TP(topic, 0)] == 9  # offsets 10 and 11 will be read again


def test_acks_below_the_committed_offset_are_ignored():
    app, c, topic = _consumer()
    c._committed_offset[TP(topic, 0)] = 8
    c.ack_all(_msgs(topic, 0, [6, 7, 8, 9]))
    assert list(c._acked[TP(topic, 0)]) == [8, 9] and c._n_acked == 2
