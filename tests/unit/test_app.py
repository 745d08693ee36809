"""The Faust app's wiring: raw bytes end to end, co-partitioned tables, one stateful agent each."""

from streams.app import create_app
from streams.settings import Settings


def test_every_topic_and_changelog_is_raw_bytes():
    # Faust mutates a Schema shared between topics and derives changelog
    # serializers from key_type/value_type: both once broke raw-bytes decoding.
    app = create_app(Settings(topics={"partitions": 6}))
    for name, agent in app.agents.items():
        ch = agent.channel.clone(is_iterator=True)
        assert (ch.schema.key_serializer, ch.schema.value_serializer) == ("raw", "raw"), name
        assert agent.concurrency == 1, name
    assert set(app.tables) == {"state-access", "state-api", "state-telemetry", "state-source", "entities"}
    for name, table in app.tables.items():
        topic = table.changelog_topic
        assert (topic.schema.key_serializer, topic.schema.value_serializer) == ("raw", "raw"), name
        assert table.partitions == 6
    assert app.conf.processing_guarantee.value == "at_least_once"
