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
