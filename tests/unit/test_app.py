"""The Faust app's wiring: raw bytes end to end, co-partitioned tables, one batch handler per scored topic."""

from streams import batchdrain
from streams.app import create_app
from streams.settings import Settings


def test_every_topic_and_changelog_is_raw_bytes():
    # Faust mutates a Schema shared between topics and derives changelog
    # serializers from key_type/value_type: both once broke raw-bytes decoding.
    s = Settings(topics={"partitions": 6})
    app = create_app(s)
    assert isinstance(app, batchdrain.BatchApp)
    handlers = app.ueba_batch_handlers
    assert set(handlers) == {*s.topics.inputs().values(), s.topics.bysource, s.topics.candidates}
    subscribed = {name: topic for topic in app.topics for name in topic.topics}
    for name in handlers:
        topic = subscribed[name]  # the conductor subscribes it
        assert (topic.schema.key_serializer, topic.schema.value_serializer) == ("raw", "raw"), name
        assert app.topics.acks_enabled_for(name) or not app.topics._acking_topics, name
    assert not app.agents, "scored topics must not also be consumed by a Faust agent"
    assert set(app.tables) == {"state-access", "state-api", "state-telemetry", "state-source", "entities"}
    for name, table in app.tables.items():
        topic = table.changelog_topic
        assert (topic.schema.key_serializer, topic.schema.value_serializer) == ("raw", "raw"), name
        assert table.partitions == 6
    assert app.conf.processing_guarantee.value == "at_least_once"
    assert app.conf.broker_max_poll_records == s.worker.batch_size


def test_the_transport_is_the_batching_one_only_for_kafka_urls():
    app = create_app(Settings())
    assert isinstance(app.transport, batchdrain.BatchTransport)
    assert app.transport.Consumer is batchdrain.BatchingConsumer


def test_an_events_arrival_in_kafka_travels_on_its_candidates():
    from faust.types.tuples import Message

    from streams.app import ARRIVAL_HEADER, _arrival_header, _arrival_of

    def msg(ts, headers):
        return Message("t", 0, 1, ts, 0, headers, b"k", b"v", None)

    first = msg(1_700_000_000.25, [])
    assert _arrival_of(first) == 1_700_000_000.25  # no header: the record's own timestamp
    header = _arrival_header(_arrival_of(first))
    assert header == [(ARRIVAL_HEADER, b"1700000000250")]
    later = msg(1_700_000_009.0, header)  # a candidate (or forwarded login) produced 9 s later
    assert _arrival_of(later) == 1_700_000_000.25
    assert _arrival_of(msg(5.0, {ARRIVAL_HEADER: b"2000"})) == 2.0
    assert _arrival_of(msg(5.0, [(ARRIVAL_HEADER, b"garbage")])) == 5.0


def test_each_partitions_next_offset_is_written_with_the_state_and_read_back_by_partition():
    """streams.app._Progress: what the consumer checks a partition's position against
    after an assignment. Written only at a settle (with the state), per partition, under
    a key no identity can take."""
    from faust.types.tuples import Message

    from streams.app import _Progress, progress_key

    table: dict[bytes, bytes] = {}

    class Reader:
        message = None

        def get(self, key, default=None):
            assert self.message is not None  # the partition's message is current for the read
            return table.get(key, default)

    writes = []

    def write(key, raw, tag):
        writes.append((key, raw, tag.partition))
        table[key] = raw

    p = _Progress(Reader(), write)
    m = lambda part, off: Message("t", part, off, 0.0, 0, {}, b"k", b"v", None)  # noqa: E731
    assert p.resume_at(m(0, 0)) is None  # nothing written yet: no claim
    p.handled([m(0, 5), m(1, 40), m(0, 7), m(0, 6)])
    assert table == {}  # nothing before the settle
    p.flush()
    assert sorted(writes) == [(progress_key(0), b"8", 0), (progress_key(1), b"41", 1)]
    assert p.resume_at(m(0, 99)) == 8 and p.resume_at(m(1, 0)) == 41
    p.flush()
    assert len(writes) == 2  # nothing handled since: nothing rewritten
    try:
        progress_key(3).decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        raise AssertionError("an identity (UTF-8 text) could collide with the progress key")
