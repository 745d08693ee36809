"""The event model: valid events of each stream, and every way an event is refused."""

import orjson
import pytest
from jsonschema import Draft202012Validator

from streams.errors import EventError
from streams.events import STREAM_KINDS, expand_dotted, flatten, json_schemas, parse_event

ACCESS = {
    "@timestamp": "2026-11-28T10:00:00Z",
    "event": {"category": ["file"], "action": "download", "outcome": "success", "dataset": "ueba.access"},
    "user": {"name": "alice", "roles": ["data_scientist"], "group": {"name": "vision"}},
    "source": {"ip": "203.0.113.7", "geo": {"country_iso_code": "DE", "location": {"lat": 52.5, "lon": 13.4}}, "as": {"number": 3320}},
    "ueba": {"resource": {"type": "dataset", "id": "s3://ml-data/vision/train"}, "transfer": {"bytes": 1234, "rows": 10}},
    "user_agent": {"original": "python-requests/2.31"},
}
API = {
    "@timestamp": "2026-11-28T10:00:01.250+01:00",
    "event": {"duration": 120_000_000, "outcome": "success"},
    "user": {"name": "svc-chatbot"},
    "organization": {"id": "tenant-7"},
    "url": {"path": "/v1/chat/completions"},
    "http": {"request": {"method": "POST", "body": {"bytes": 900}}, "response": {"status_code": 200, "body": {"bytes": 4000}}},
    "gen_ai": {"system": "openai", "operation": {"name": "chat"}, "request": {"model": "gpt-x"}, "usage": {"input_tokens": 12, "output_tokens": 300}},
    "ueba": {"api_key": {"id": "key-123", "owner": "tenant-7"}, "model": {"id": "chat-1", "version": "3"}, "input": {"fingerprint": [0.1] * 16}, "gen_ai": {"prompt": "hello"}},
}
TELEMETRY = {
    "@timestamp": "2026-11-28T10:00:02Z",
    "event": {"duration": 5_000_000},
    "ueba": {
        "model": {"id": "fraud-clf", "version": "7", "artifact_hash": "sha256:ab"},
        "telemetry": {"prediction": "fraud", "confidence": 0.93, "features": {"amount": 12.5, "age_days": 3}, "caller_api_key": "key-123"},
    },
}


@pytest.mark.parametrize(
    "kind,doc,identity",
    [("access", ACCESS, "alice"), ("api", API, "key-123"), ("telemetry", TELEMETRY, "fraud-clf")],
)
def test_valid_events_parse_with_identity_and_utc_time(kind, doc, identity):
    ev = parse_event(kind, orjson.dumps(doc))
    assert ev.kind == kind
    assert ev.identity == identity
    assert ev.doc == doc
    if kind == "api":
        assert ev.ts == pytest.approx(1795856401.25)  # +01:00 honoured
        assert ev.flat["gen_ai.usage.output_tokens"] == 300
    if kind == "telemetry":
        # maps of user-chosen names stay whole in the flat view
        assert ev.flat["ueba.telemetry.features"] == {"amount": 12.5, "age_days": 3}


def test_dotted_keys_are_expanded_and_flatten_round_trips():
    dotted = {"@timestamp": "2026-11-28T10:00:00Z", "user.name": "bob", "ueba.transfer.bytes": 5, "user": {"roles": ["x"]}}
    nested = expand_dotted(dotted)
    assert nested == {"@timestamp": "2026-11-28T10:00:00Z", "user": {"name": "bob", "roles": ["x"]}, "ueba": {"transfer": {"bytes": 5}}}
    ev = parse_event("access", orjson.dumps(dotted))
    assert ev.identity == "bob"
    assert flatten(nested)["ueba.transfer.bytes"] == 5


def test_api_identity_falls_back_to_user_name():
    doc = {**API, "ueba": {"model": {"id": "m"}}}
    assert parse_event("api", orjson.dumps(doc)).identity == "svc-chatbot"


BAD = [
    (b"not json at all", "not_json"),
    (b"[1, 2]", "not_object"),
    (b'"a string"', "not_object"),
    (b'{"user": {"name": "a"}}', "missing_timestamp"),
    (b'{"@timestamp": "yesterday", "user": {"name": "a"}}', "invalid"),
    (b'{"@timestamp": "2026-11-28T10:00:00Z"}', "missing_identity"),
    (b'{"@timestamp": "2026-11-28T10:00:00Z", "user": {"name": 42}}', "invalid"),
    (b'{"@timestamp": "2026-11-28T10:00:00Z", "user": {"name": "a"}, "ueba": {"transfer": {"bytes": -1}}}', "invalid"),
    (b'{"@timestamp": "2026-11-28T10:00:00Z", "user": {"name": "a"}, "source": {"ip": "999.1.1.1"}}', "invalid"),
    (b'{"@timestamp": "2026-11-28T10:00:00Z", "user": {"name": "a"}, "event": {"outcome": "maybe"}}', "invalid"),
    (b'{"@timestamp": "2026-11-28T10:00:00Z", "user": {"name": ""}}', "invalid"),
]


@pytest.mark.parametrize("raw,reason", BAD)
def test_bad_input_is_refused_with_a_reason(raw, reason):
    with pytest.raises(EventError) as info:
        parse_event("access", raw)
    assert info.value.reason == reason
    assert info.value.detail  # a human explanation, never empty


def test_oversized_events_are_refused_before_parsing():
    raw = orjson.dumps({**ACCESS, "message": "x" * 5000})
    with pytest.raises(EventError) as info:
        parse_event("access", raw, max_bytes=4096)
    assert info.value.reason == "oversized"
    assert str(len(raw)) in info.value.detail


def test_attacker_sized_lists_are_bounded():
    doc = {**API, "ueba": {"api_key": {"id": "k"}, "input": {"fingerprint": [0.0] * 10_000}}}
    with pytest.raises(EventError) as info:
        parse_event("api", orjson.dumps(doc))
    assert "fingerprint" in info.value.detail


def test_unknown_stream_is_an_error():
    with pytest.raises(EventError) as info:
        parse_event("nope", b"{}")
    assert info.value.reason == "unknown_stream"


def test_json_schemas_accept_the_examples_and_reject_bad_types():
    schemas = json_schemas()
    assert set(schemas) == set(STREAM_KINDS)
    for kind, doc in (("access", ACCESS), ("api", API), ("telemetry", TELEMETRY)):
        v = Draft202012Validator(schemas[kind])
        assert list(v.iter_errors(doc)) == []
    bad = {**ACCESS, "ueba": {"transfer": {"bytes": "lots"}}}
    assert list(Draft202012Validator(schemas["access"]).iter_errors(bad))


def test_published_schema_files_are_up_to_date():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "streams" / "schemas"
    for kind, schema in json_schemas().items():
        path = folder / f"{kind}.schema.json"
        assert path.exists(), f"run `ueba schemas` to write {path}"
        assert orjson.loads(path.read_bytes()) == orjson.loads(orjson.dumps(schema)), f"{path} is stale: run `ueba schemas`"
