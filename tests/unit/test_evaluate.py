"""Detection quality report: matching alerts to labelled scenarios, noise per identity-day, end to end."""

import dataclasses
import io
import json
from datetime import datetime, timezone

import orjson
import pytest
from rich.console import Console

from streams.alerts import Alert
from streams.evaluate import (
    Evaluation,
    EvaluationError,
    LabelledScenario,
    evaluate,
    matches,
    read_labels,
)
from streams.settings import Settings
from streams.simulate import SimulationConfig, labels, simulate_labelled, write_jsonl

T0 = datetime(2026, 1, 6, 8, 0, tzinfo=timezone.utc).timestamp()
DAY = 86400.0


def scenario(sid="spray", entities=("116.3.224.213", "sven.patel"), start=T0, end=T0 + 1800, techniques=("T1110.003",), **kw):
    return LabelledScenario(scenario_id=sid, name=sid, techniques=tuple(techniques), entities=frozenset(entities), start=start, end=end, **kw)


def alert(i, ts, entity="someone", *, source="detector:credential_abuse", etype="user", context=None, techniques=(), score=70.0, aid=None):
    return Alert(
        id=aid or f"a{i}", ts=ts, source=source, kind=source.split(":")[0], rule_id=source.split(":")[1],
        rule_name="Rule " + source.split(":")[1], title="t", description="d", score=score, severity=73, level="high",
        entity_type=etype, entity=entity, stream="access", explanation={}, techniques=tuple(techniques),
        context=dict(context or {}), first_seen=ts, last_seen=ts,
    )


def update(first, last_seen, count=2):
    """A suppression update as the Replayer emits it: the first alert, count and last_seen moved on."""
    return dataclasses.replace(first, count=count, last_seen=last_seen)


# ------------------------------------------------------------------ matching


def test_time_window_edges_are_inclusive_and_grace_extends_the_end():
    sc = scenario()
    end = sc.end
    assert matches(alert(0, T0, "sven.patel"), sc, grace_s=3600)
    assert matches(alert(0, end + 3600, "sven.patel"), sc, grace_s=3600)
    assert not matches(alert(0, end + 3600.001, "sven.patel"), sc, grace_s=3600)
    assert not matches(alert(0, T0 - 0.001, "sven.patel"), sc, grace_s=3600)
    assert not matches(alert(0, end + 1, "sven.patel"), sc, grace_s=0)


def test_entity_matches_through_context_fields_and_correlation_keys():
    sc = scenario(entities=("116.3.224.213", "ak_1", "churn-predictor"))
    t = T0 + 60
    # the alert is on a victim user, but the event came from the spraying IP
    assert matches(alert(0, t, "maria.k", context={"source.ip": "116.3.224.213"}), sc)
    assert matches(alert(0, t, "credit-risk", etype="model", context={"ueba.telemetry.caller_api_key": "ak_1"}), sc)
    assert matches(alert(0, t, "tenant-3", etype="tenant", context={"ueba.model.id": "churn-predictor"}), sc)
    assert matches(alert(0, t, "116.3.224.213|maria.k", etype="source_ip"), sc)
    assert not matches(alert(0, t, "maria.k", context={"source.ip": "10.0.0.1", "organization.id": "ak_1"}), sc)


def test_false_alerts_precision_recall_and_time_to_detect():
    a, b = scenario("a", ("alice",), T0, T0 + 600), scenario("b", ("bob",), T0 + DAY, T0 + DAY + 600)
    ev = Evaluation([a, b], grace_s=600)
    ev.observe_alert(alert(1, T0 + 120, "alice", techniques=("T1110.003",)))
    ev.observe_alert(alert(2, T0 + 30, "alice", source="rule:r1"))  # earlier, from a rule: sets the time to detect
    ev.observe_alert(alert(3, T0 + 300, "carol"))  # false: not a scenario entity
    ev.observe_alert(update(alert(3, T0 + 300, "carol"), T0 + 400))  # its suppression update: still one false alert
    ev.observe_alert(alert(4, T0 + 1300, "alice"))  # false: after end + grace
    rep = ev.report()
    ra, rb = rep.scenarios
    assert (ra.detected, ra.time_to_detect_s, ra.alerts) == (True, 30.0, 2)
    assert [d["source"] for d in ra.detectors] == ["detector:credential_abuse", "rule:r1"]
    assert ra.techniques_cited == ["T1110.003"] and ra.techniques_matched == ["T1110.003"]
    assert (rb.detected, rb.time_to_detect_s, rb.alerts) == (False, None, 0)
    t = rep.totals
    assert (t.alerts, t.matched_alerts, t.false_alerts) == (4, 2, 2)
    assert t.precision == 0.5 and t.recall == 0.5 and t.median_time_to_detect_s == 30.0
    assert [(n.source, n.false_alerts) for n in rep.noisy] == [("detector:credential_abuse", 2)]
    assert rep.noisy[0].matched_alerts == 1 and rep.noisy[0].share == 1.0
    # each false alert is listed once (its first version), so it can be found and tuned
    ex = rep.noisy[0].examples
    assert sorted((e["entity"], e["ts"]) for e in ex) == [("user:alice", T0 + 1300), ("user:carol", T0 + 300)]
    assert all(e["alert_id"] in ev.alerts and e["reason"] and e["@timestamp"].endswith("Z") for e in ex)
    from rich.console import Console

    con = Console(width=400, record=True)
    con.print(rep)
    text = con.export_text()
    assert "e.g. 2026-01-06T08:05:00.000Z user:carol score 70" in text  # the earliest of the highest scored
    targets = rep.targets()
    assert targets["all_scenarios_detected"]["met"] is False and targets["median_time_to_detect_s"]["met"] is True


def test_an_alert_whose_later_update_matches_counts_as_matched():
    ev = Evaluation([scenario("a", ("alice",), T0, T0 + 600)])
    first = alert(1, T0 - 100, "alice")
    ev.observe_alert(first)  # raised before the attack (benign)...
    ev.observe_alert(update(first, T0 + 50))  # ...and counted again by an attack event within suppression
    rep = ev.report()
    assert rep.totals.false_alerts == 0 and rep.totals.matched_alerts == 1
    assert rep.scenarios[0].time_to_detect_s == 50.0
    # an update whose last event is after end + grace does not make an alert match
    late = Evaluation([scenario("a", ("alice",), T0, T0 + 600)], grace_s=60)
    late.observe_alert(first)
    late.observe_alert(update(first, T0 + 661))
    assert late.report().totals.false_alerts == 1


def test_identity_days_count_distinct_utc_days_of_benign_identities():
    ev = Evaluation([scenario("a", ("alice",), T0, T0 + 600)])
    for h in (0, 1, 5):
        ev.observe_event("bob", T0 + h * 3600)  # one day however many events
    ev.observe_event("bob", T0 + DAY)
    ev.observe_event("carol", T0 + 2 * DAY)
    ev.observe_event("alice", T0 + 3 * DAY)  # a scenario entity: never benign
    ev.observe_event("admin", T0, attack=True)  # only seen in attack traffic
    ev.observe_event(None, T0)
    # 2026-01-06T23:59:59Z and 2026-01-07T00:00:00Z are two UTC days
    midnight = datetime(2026, 1, 7, tzinfo=timezone.utc).timestamp()
    ev.observe_event("dave", midnight - 1)
    ev.observe_event("dave", midnight)
    assert ev.identity_days == 2 + 1 + 2
    ev.observe_alert(alert(1, T0, "bob"))
    rep = ev.report()
    assert rep.totals.benign_identities == 3 and rep.totals.benign_identity_days == 5
    assert rep.totals.false_per_1000_identity_days == 200.0
    assert ev.events == 10


def test_duplicate_scenario_ids_are_rejected():
    with pytest.raises(EvaluationError, match="duplicate"):
        Evaluation([scenario("a"), scenario("a")])


def test_labels_are_read_with_errors_naming_file_and_line(tmp_path):
    rec = {"scenario_id": "x", "name": "X", "techniques": ["T1078"], "entities": [{"kind": "access", "field": "user.name", "value": "u"}],
           "start": "2026-01-06T08:00:00Z", "end": "2026-01-06T09:00:00.500Z", "event_ids": ["e1"]}
    good = tmp_path / "labels.jsonl"
    good.write_bytes(orjson.dumps(rec) + b"\n\n")
    (sc,) = read_labels(good)
    assert sc.start == T0 and sc.end == T0 + 3600.5 and sc.entities == {"u"} and sc.event_ids == {"e1"}
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(orjson.dumps(rec) + b"\n" + orjson.dumps({**rec, "start": "yesterday"}) + b"\n")
    with pytest.raises(EvaluationError, match=r"bad.jsonl:2: x: start"):
        read_labels(bad)
    with pytest.raises(EvaluationError, match="no such"):
        evaluate(tmp_path / "none.jsonl", good, settings=Settings())


def test_report_json_is_stable_and_the_table_shows_every_scenario(tmp_path):
    ev = Evaluation([scenario("a", ("alice",)), scenario("b", ("bob",))])
    ev.observe_alert(alert(1, T0 + 5, "alice"))
    ev.observe_event("carol", T0)
    rep = ev.report({"mode": "test"})
    d = rep.to_dict()
    assert list(d) == ["run", "scenarios", "totals", "targets", "noisy"]
    assert list(d["totals"])[:3] == ["scenarios", "detected", "recall"]
    rep.write_json(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(d))
    buf = io.StringIO()
    Console(file=buf, width=200).print(rep)
    text = buf.getvalue()
    assert "a " in text and "b " in text and "1/2" in text and "missed" in text


# ------------------------------------------------------------------ end to end


SCENARIOS = ("prompt-injection", "shadow-ai", "password-spraying")


@pytest.fixture(scope="module")
def small():
    # the tiny preset cut to its shortest attack-capable run, so the suite stays fast
    return SimulationConfig.preset("tiny", duration="6h", humans=10, scenarios=SCENARIOS)


@pytest.fixture(scope="module")
def simulated(small):
    return evaluate(settings=Settings(), simulation=small)


def test_end_to_end_report_has_a_row_per_scenario_and_consistent_totals(small, simulated):
    rep = simulated
    assert [r.scenario_id for r in rep.scenarios] == [r["scenario_id"] for r in labels(small)]
    assert {r.scenario_id for r in rep.scenarios} == set(SCENARIOS)
    t = rep.totals
    assert t.alerts > 0 and t.matched_alerts + t.false_alerts == t.alerts
    assert sum(n.false_alerts for n in rep.noisy) == t.false_alerts
    assert t.detected == sum(r.detected for r in rep.scenarios) and t.recall == round(t.detected / 3, 4)
    assert all((r.time_to_detect_s is not None) == r.detected == (r.alerts > 0) for r in rep.scenarios)
    assert all(r.time_to_detect_s is None or r.time_to_detect_s >= 0 for r in rep.scenarios)
    assert t.benign_identities > 0 and t.benign_identity_days >= t.benign_identities
    assert rep.run["events"] == sum(1 for _ in simulate_labelled(small))
    json.dumps(rep.to_dict())


def test_files_give_the_same_report_as_the_in_memory_run(tmp_path, small, simulated):
    events, lab = tmp_path / "e.jsonl", tmp_path / "e.jsonl.labels.jsonl"
    write_jsonl(small, events, lab)
    rep = evaluate(events, None, settings=Settings())  # labels found beside the events
    assert rep.run["mode"] == "files"
    d, m = rep.to_dict(), simulated.to_dict()
    assert d["scenarios"] == m["scenarios"] and d["totals"] == m["totals"] and d["noisy"] == m["noisy"]


def test_policy_is_applied(tmp_path, small, simulated):
    pol = tmp_path / "policy.yml"
    # switching off (allow-listing) every source that caught a scenario leaves it undetected
    row = next(r for r in simulated.scenarios if r.scenario_id == "prompt-injection")
    assert row.detected and row.alerts > 0
    sources = sorted(d["source"] for d in row.detectors)
    pol.write_text("allow: {rules: [" + ", ".join(f"'{s}'" for s in sources) + "]}\n")
    rep = evaluate(settings=Settings(), simulation=small, policy=pol)
    assert rep.run["policy"] == str(pol)
    after = next(r for r in rep.scenarios if r.scenario_id == "prompt-injection")
    assert not after.detected and after.alerts == 0
    assert rep.totals.alerts <= simulated.totals.alerts - row.alerts
    assert not {n.source for n in rep.noisy} & set(sources)


def test_the_eval_policy_file_is_valid():
    from pathlib import Path

    from streams.policy import Policy

    from detectors.defaults import DEFAULT_MIN_SCORE

    pol = Policy.load(Path(__file__).resolve().parents[2] / "deploy" / "policy-eval.yml")
    # nothing is switched off: the calibrated detectors and the context-aware rules all run
    assert not pol.allow.rules and not pol.allow.identities
    assert pol.thresholds.for_source("detector:telemetry_drift", "ueba-telemetry_drift") == DEFAULT_MIN_SCORE
