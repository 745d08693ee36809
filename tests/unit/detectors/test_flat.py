"""The flat view every detector reads (compiled with the detectors; these run on both builds)."""

from detectors.flat import FLAT_LEAVES, flatten, has_dotted_keys


def test_flatten_dots_nested_objects_and_keeps_values_whole():
    doc = {
        "@timestamp": "2026-11-29T08:00:00Z",
        "user": {"name": "ana", "group": {"name": "ml"}, "roles": ["admin"]},
        "source": {"geo": {}},  # an empty object stays a value
        "features": {"a.b": {"mean": 1.0}},  # a leaf map: feature names are not ECS fields
        "histograms": {"confidence": [1, 2]},
        "ueba": {"model": {"features": {"x": 1}}},  # leaves are kept whole at any depth
    }
    assert flatten(doc) == {
        "@timestamp": "2026-11-29T08:00:00Z",
        "user.name": "ana",
        "user.group.name": "ml",
        "user.roles": ["admin"],
        "source.geo": {},
        "features": {"a.b": {"mean": 1.0}},
        "histograms": {"confidence": [1, 2]},
        "ueba.model.features": {"x": 1},
    }
    assert FLAT_LEAVES == {"features", "histograms"}
    assert flatten({}) == {}


def test_dotted_top_level_keys_are_found_but_not_the_timestamp():
    assert has_dotted_keys({"@timestamp": "t", "user.name": "ana"})
    assert not has_dotted_keys({"@timestamp": "t", "user": {"name.x": 1}})  # only the top level
    assert not has_dotted_keys({"@timestamp.x": "t"})
    assert not has_dotted_keys({})
