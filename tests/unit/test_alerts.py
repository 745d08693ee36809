"""The alert model: deterministic ids, severity levels, ECS conformance."""

import orjson
import pytest

from detectors.base import Explanation, Finding
from streams.alerts import Alert, alert_id, event_fingerprint, severity_of
from streams.events import parse_event
from streams.pipeline import alert_from_finding
from tests.ecs_check import validate

EVENT = {
    "@timestamp": "2026-11-28T10:00:00Z",
    "event": {"action": "download", "outcome": "success"},
    "user": {"name": "alice", "roles": ["data_scientist"]},
    "source": {"ip": "203.0.113.7", "geo": {"country_iso_code": "DE"}},
    "ueba": {"resource": {"type": "dataset", "id": "s3://ml-data/x"}, "transfer": {"bytes": 10}},
}


def finding(score=83.0, techniques=("T1530", "AML.T0025")):
    return Finding(
        detector="exfil_volume",
        entity_type="user",
        entity="alice",
        score=score,
        title="alice downloaded 40x her usual hourly volume",
        explanation=Explanation(
            feature="ueba.transfer.bytes",
            observed=4.1e9,
            baseline={"center": 1.0e8, "spread": 2.0e7, "n": 300},
            peers={"center": 2.0e8, "percentile": 99.9},
            window="1h",
            reason="alice read 4.1 GB in an hour against a usual 100 MB (peers 200 MB).",
        ),
        techniques=techniques,
    )


@pytest.mark.parametrize("score,level,number", [(0, "low", 21), (39.9, "low", 21), (40, "medium", 47), (70, "high", 73), (89.99, "high", 73), (90, "critical", 99), (100, "critical", 99)])
def test_severity_is_quantised_like_kibana(score, level, number):
    assert severity_of(score) == (level, number)


def test_alert_id_is_deterministic_and_sensitive_to_every_part():
    base = alert_id("detector:x", "user", "alice", "sha256:1")
    assert base == alert_id("detector:x", "user", "alice", "sha256:1")
    assert len({base, alert_id("detector:y", "user", "alice", "sha256:1"), alert_id("detector:x", "api_key", "alice", "sha256:1"),
                alert_id("detector:x", "user", "bob", "sha256:1"), alert_id("detector:x", "user", "alice", "sha256:2")}) == 5


def test_event_fingerprint_prefers_event_id_and_ignores_key_order():
    assert event_fingerprint({"event": {"id": "e-1"}, "a": 1}) == "id:e-1"
    a = event_fingerprint({"a": 1, "b": {"c": 2, "d": 3}})
    b = event_fingerprint({"b": {"d": 3, "c": 2}, "a": 1})
    assert a == b and a.startswith("sha256:")


def test_alert_from_finding_same_event_same_id():
    ev1 = parse_event("access", orjson.dumps(EVENT))
    ev2 = parse_event("access", orjson.dumps(dict(reversed(list(EVENT.items())))))
    a1, a2 = alert_from_finding(finding(), ev1), alert_from_finding(finding(), ev2)
    assert a1.id == a2.id
    assert a1.level == "high" and a1.severity == 73


def test_wire_form_round_trips():
    a = alert_from_finding(finding(), parse_event("access", orjson.dumps(EVENT)))
    assert Alert.from_json(a.to_json()) == a


def test_ecs_document_conforms_and_explains():
    a = alert_from_finding(finding(), parse_event("access", orjson.dumps(EVENT)))
    doc = a.to_ecs("prod", ingested=1795860005.0)
    assert validate(doc) == []
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["dataset"] == doc["data_stream"]["dataset"] == "ueba.alert"
    assert doc["data_stream"]["namespace"] == "prod"
    assert doc["message"] == a.title
    assert doc["event"]["severity"] == 73 and doc["event"]["risk_score"] == 83.0
    assert doc["threat"]["technique"]["id"] == ["T1530", "AML.T0025"]
    assert doc["threat"]["technique"]["name"][0] == "Data from Cloud Storage"
    assert doc["threat"]["framework"] == "MITRE ATT&CK"
    assert doc["user"]["name"] == "alice" and doc["source"]["ip"] == "203.0.113.7"
    assert doc["related"] == {"user": ["alice"], "ip": ["203.0.113.7"]}
    ex = doc["ueba"]["alert"]["explanation"]
    assert ex["observed_value"] == 4.1e9 and ex["baseline"]["center"] == 1.0e8 and ex["peers"]["percentile"] == 99.9
    assert ex["window"] == "1h" and "usual 100 MB" in ex["reason"]
    assert doc["event"]["ingested"].startswith("2026-11-28T10:00:05")


def test_atlas_only_alerts_say_atlas():
    a = alert_from_finding(finding(techniques=("AML.T0024",)), parse_event("access", orjson.dumps(EVENT)))
    doc = a.to_ecs()
    assert doc["threat"]["framework"] == "MITRE ATLAS"
    assert doc["threat"]["tactic"]["name"] == ["Exfiltration"]
    assert validate(doc) == []


def test_validator_catches_non_ecs_fields_and_wrong_types():
    assert validate({"event": {"kind": "alrt"}})
    assert validate({"event": {"severity": "high"}})
    assert validate({"madeup": {"field": 1}})
    assert validate({"source": {"ip": "not-an-ip"}})
    assert validate({"event": {"action": ["a", "b"]}})  # not an array field
    assert validate({"ueba": {"anything": {"goes": 1}}, "event": {"kind": "alert"}}) == []
