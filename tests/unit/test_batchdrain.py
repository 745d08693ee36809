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


def test_a_dropped_batch_is_sought_back_so_its_offsets_are_never_skipped(monkeypatch):
    """The client's fetch position is already past a dropped batch: without a seek
    the next round returns later offsets and Faust's gap tracking would commit past
    the batch. Partitions still owned are sought back to the batch's first offset
    (or the committed offset, if another worker already went further); revoked
    ones are left to their new owner."""
    app, c, topic = _consumer()
    owned, revoked, ahead = TP(topic, 0), TP(topic, 1), TP(topic, 2)
    monkeypatch.setattr(c, "assignment", lambda: {owned, ahead})
    sought = []

    async def _seek(tp, offset):
        sought.append((tp, offset))

    monkeypatch.setattr(c, "_seek", _seek)
    c._committed_offset[ahead] = 40
    for tp, o in ((owned, 12), (revoked, 3), (ahead, 31)):
        c._read_offset[tp] = o
    batch = _msgs(topic, 0, [10, 11, 12]) + _msgs(topic, 1, [3]) + _msgs(topic, 2, [30, 31])
    called = []

    async def handler(msgs):
        called.append(msgs)

    asyncio.run(c._run_batch(handler, batch, app.consumer_generation_id - 1))
    assert not called and not any(m.acked for m in batch)
    assert sorted(sought) == sorted([(owned, 10), (ahead, 40)])
    assert c._read_offset[owned] == 10 and c._read_offset[ahead] == 40
    assert c._read_offset[revoked] == 2
    assert c.ueba_dropped_batches == 1
    # the next round's first message of the owned partition is offset 10 again: no gap is recorded
    assert not c._gap.get(owned)


def test_acks_below_the_committed_offset_are_ignored():
    app, c, topic = _consumer()
    c._committed_offset[TP(topic, 0)] = 8
    c.ack_all(_msgs(topic, 0, [6, 7, 8, 9]))
    assert list(c._acked[TP(topic, 0)]) == [8, 9] and c._n_acked == 2


def _seeking(monkeypatch, c, owned):
    monkeypatch.setattr(c, "assignment", lambda: set(owned))
    sought = []

    async def _seek(tp, offset):
        sought.append((tp, offset))

    monkeypatch.setattr(c, "_seek", _seek)
    return sought


def test_a_partition_positioned_past_its_written_state_is_sought_back_before_anything_is_handled(monkeypatch):
    """After an assignment, a partition's first batch must start where the handler's
    written state says it left off: one positioned later would skip events."""
    app, c, topic = _consumer()
    ok, late = TP(topic, 0), TP(topic, 1)
    sought = _seeking(monkeypatch, c, {ok, late})
    state_next = {0: 10, 1: 376}  # what the handler's table says each partition continues at
    handled = []

    async def handler(msgs):
        handled.extend(msgs)

    def resume_at(m):
        return state_next[m.partition]

    batch = _msgs(topic, 0, [8, 9, 10, 11]) + _msgs(topic, 1, [498, 499])
    asyncio.run(c._run_batch(handler, batch, app.consumer_generation_id, resume_at))
    # partition 0 starts at or before its state's offset (redelivery: the state's
    # last-offset guard applies it once); partition 1 skipped 376-497: not handled, sought back
    assert [(m.partition, m.offset) for m in handled] == [(0, 8), (0, 9), (0, 10), (0, 11)]
    assert sought == [(late, 376)] and c.ueba_rewinds == 1
    assert not any(m.acked or m in c._unacked_messages for m in batch[4:])
    # read again from 376: handled, and not checked again until the next assignment
    again = _msgs(topic, 1, [376, 377])
    asyncio.run(c._run_batch(handler, again, app.consumer_generation_id, resume_at))
    assert handled[-2:] == again and sought == [(late, 376)]
    later = _msgs(topic, 1, [900])
    asyncio.run(c._run_batch(handler, later, app.consumer_generation_id, resume_at))
    assert handled[-1] is later[0]
    # a new assignment checks every partition again
    c._checked.clear()  # what on_partitions_assigned does first
    asyncio.run(c._run_batch(handler, _msgs(topic, 1, [950]), app.consumer_generation_id, resume_at))
    assert sought[-1] == (late, 376) and len(sought) == 2


def test_a_partition_whose_missing_offsets_no_longer_exist_is_accepted_after_one_seek(monkeypatch):
    """Retention deleted the offsets the state expects (or they are transaction
    markers): sought back once, the log still starts later, so processing goes on."""
    app, c, topic = _consumer()
    tp = TP(topic, 0)
    sought = _seeking(monkeypatch, c, {tp})
    handled = []

    async def handler(msgs):
        handled.extend(msgs)

    batch = _msgs(topic, 0, [5000, 5001])
    asyncio.run(c._run_batch(handler, batch, app.consumer_generation_id, lambda m: 100))
    assert not handled and sought == [(tp, 100)]
    asyncio.run(c._run_batch(handler, _msgs(topic, 0, [5000, 5001]), app.consumer_generation_id, lambda m: 100))
    assert [m.offset for m in handled] == [5000, 5001] and sought == [(tp, 100)]


def test_no_written_state_or_a_failing_lookup_never_blocks_a_partition(monkeypatch):
    app, c, topic = _consumer()
    sought = _seeking(monkeypatch, c, {TP(topic, 0), TP(topic, 1)})
    handled = []

    async def handler(msgs):
        handled.extend(msgs)

    def resume_at(m):
        if m.partition == 1:
            raise RuntimeError("store closed")
        return None

    batch = _msgs(topic, 0, [40]) + _msgs(topic, 1, [7])
    asyncio.run(c._run_batch(handler, batch, app.consumer_generation_id, resume_at))
    assert handled == batch and not sought


def test_a_gap_in_a_scored_topic_is_read_again_once_then_accepted(monkeypatch):
    app, c, topic = _consumer()
    tp = TP(topic, 0)
    sought = _seeking(monkeypatch, c, {tp})
    assert asyncio.run(c._rewind(tp, 11, 20, "the fetch skipped them")) is True
    assert sought == [(tp, 11)] and c._read_offset[tp] == 11
    # the log really has nothing between 11 and 19 (e.g. transaction markers): accepted
    assert asyncio.run(c._rewind(tp, 11, 20, "the fetch skipped them")) is False
    assert sought == [(tp, 11)]


def test_state_is_written_and_offsets_acked_only_once_kafka_acknowledged_the_outputs():
    # The handler sends and hands the futures to batchdrain.expect instead of waiting:
    # the settle waits for them, then writes state, then acks.
    from streams import batchdrain

    app, c, topic = _consumer()
    batch = _msgs(topic, 0, [1, 2, 3])
    order = []
    app.ueba_state_flushes.append(lambda: order.append(("flush", [m.acked for m in batch])))

    async def scenario():
        ack = asyncio.get_running_loop().create_future()

        async def handler(msgs):
            await batchdrain.expect(app, [ack])

        await c._run_batch(handler, batch, app.consumer_generation_id)
        settling = asyncio.ensure_future(c._settle_acked())
        await asyncio.sleep(0.05)
        assert not settling.done() and not order  # the broker has not acknowledged yet
        assert not any(m.acked for m in batch) and set(c._unacked_messages) == set(batch)
        ack.set_result(None)
        await settling

    asyncio.run(scenario())
    assert order == [("flush", [False, False, False])]  # state before any ack
    assert all(m.acked for m in batch) and not c._pending and not c._outputs


def test_an_output_kafka_refused_leaves_everything_since_the_last_settle_unwritten_and_unacked():
    from streams import batchdrain

    app, c, topic = _consumer()
    earlier, batch = _msgs(topic, 0, [1, 2]), _msgs(topic, 0, [3])
    flushed, crashed = [], []
    app.ueba_state_flushes.append(lambda: flushed.append(1))

    async def crash(exc):
        crashed.append(exc)

    app.crash = crash  # the worker would stop here; the test only records it

    async def scenario():
        loop = asyncio.get_running_loop()
        good, bad = loop.create_future(), loop.create_future()
        good.set_result(None)
        bad.set_exception(OSError("broker unreachable"))

        async def first(msgs):
            await batchdrain.expect(app, [good])

        async def second(msgs):
            await batchdrain.expect(app, [bad])

        await c._run_batch(first, earlier, app.consumer_generation_id)
        await c._run_batch(second, batch, app.consumer_generation_id)
        with pytest.raises(OSError):
            await c._settle_acked()

    asyncio.run(scenario())
    assert not flushed and len(crashed) == 1
    assert not any(m.acked for m in earlier + batch) and not c._unacked_messages and not c._pending
    assert c._n_acked == 0


def test_outputs_still_in_flight_are_not_counted_as_delivered():
    app, c, _topic = _consumer()

    async def scenario():
        loop = asyncio.get_running_loop()
        done, waiting, failed = loop.create_future(), loop.create_future(), loop.create_future()
        done.set_result(None)
        failed.set_exception(OSError("x"))
        c._outputs = [done, waiting]
        assert not c._outputs_delivered()  # stopping now must not write state or ack
        c._outputs = [done, failed]
        assert not c._outputs_delivered()
        c._outputs = [done]
        assert c._outputs_delivered() and c._outputs == []

    asyncio.run(scenario())


def test_outside_a_batching_consumer_expect_waits_for_the_outputs_itself():
    from types import SimpleNamespace

    from streams import batchdrain

    async def scenario():
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.02, fut.set_result, None)
        await batchdrain.expect(SimpleNamespace(consumer=object()), [fut])
        return fut.done()

    assert asyncio.run(scenario())


def test_the_worker_observes_latency_when_kafka_acknowledged_a_batchs_outputs_not_when_it_sent_them():
    from streams.app import _deliver_batch

    app, c, _topic = _consumer()
    observed = []

    class Topic:  # the one call _deliver_batch makes on a Faust topic
        def __init__(self, fut):
            self.fut = fut

        async def send(self, key, value, headers):
            return self.fut

    async def no_dead_letters(*args):
        raise AssertionError("no dead letters here")

    async def scenario():
        loop = asyncio.get_running_loop()
        ack, refused = loop.create_future(), loop.create_future()
        await _deliver_batch(app, [(Topic(ack), b"k", b"v", None)], [], no_dead_letters, lambda: observed.append("ok"))
        await asyncio.sleep(0.01)
        assert observed == [] and c._outputs == [ack]  # sent, not acknowledged yet
        ack.set_result(None)
        await asyncio.sleep(0.01)
        assert observed == ["ok"]
        await _deliver_batch(app, [(Topic(refused), b"k", b"v", None)], [], no_dead_letters, lambda: observed.append("bad"))
        refused.set_exception(OSError("refused"))
        await asyncio.sleep(0.01)
        assert observed == ["ok"]  # a refused output is never counted as delivered
        await _deliver_batch(app, [], [], no_dead_letters, lambda: observed.append("empty"))
        assert observed == ["ok", "empty"]  # nothing to send: observed at once
        c._outputs.clear()

    asyncio.run(scenario())


def test_a_revocation_waits_while_the_settle_waits_for_outputs():
    # on_partitions_revoked waits for idle before it settles: while the drain loop's
    # settle waits for Kafka, it must not write state and ack on its own.
    from streams import batchdrain

    app, c, topic = _consumer()
    batch = _msgs(topic, 0, [1])
    flushed = []
    app.ueba_state_flushes.append(lambda: flushed.append(1))

    async def scenario():
        ack = asyncio.get_running_loop().create_future()

        async def handler(msgs):
            await batchdrain.expect(app, [ack])

        await c._run_batch(handler, batch, app.consumer_generation_id)
        assert c._idle.is_set()
        settling = asyncio.ensure_future(c._settle_acked())
        await asyncio.sleep(0.01)
        waiter = asyncio.ensure_future(c._idle.wait())
        await asyncio.sleep(0.01)
        assert not waiter.done() and not flushed  # a revocation would still be waiting
        ack.set_result(None)
        await settling
        await asyncio.wait_for(waiter, 1)
        assert flushed == [1] and batch[0].acked and not c._pending  # nothing left for it to settle

    asyncio.run(scenario())
