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
