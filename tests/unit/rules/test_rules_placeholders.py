"""Sigma placeholders (``field|expand: '%name%'``): the operator's registry of
sanctioned models and inference endpoints, and any other value list."""

from __future__ import annotations

import pytest

from rules import RuleLoadError, RuleSet, validate_paths
from rules.placeholders import DEFAULT_FILE

from rules_helpers import PACK, rule_doc, write_rules

ENDPOINT_RULE = "LLM Call to an Endpoint Outside the Allow-List"
MODEL_RULE = "Inference on an Unregistered Model (Shadow AI)"


def llm_call(domain: str) -> dict:
    return {"ueba.api_key.id": "k", "gen_ai.system": "openai", "url.domain": domain}


def fired(rs: RuleSet, kind: str, flat: dict) -> list[str]:
    return [h.title for h in rs.match(kind, flat, 0.0)]


def test_the_pack_ships_example_values_that_the_operator_replaces(tmp_path):
    pack = RuleSet.load([PACK])
    assert fired(pack, "api", llm_call("prod.openai.azure.com")) == []
    assert fired(pack, "api", llm_call("api.free-llm.example")) == [ENDPOINT_RULE]
    assert pack.placeholders.defined_in["registered_endpoints"].startswith(f"{DEFAULT_FILE}:")

    ours = tmp_path / "registry.placeholders.yml"
    ours.write_text("vars:\n  registered_endpoints:\n    - '*.corp.example'\n    - llm.partner.example\n")
    rs = RuleSet.load([PACK], placeholders=[ours])
    # the whole list is replaced: the example endpoints are no longer sanctioned
    assert fired(rs, "api", llm_call("prod.openai.azure.com")) == [ENDPOINT_RULE]
    assert fired(rs, "api", llm_call("gpu.eu.CORP.example")) == []
    assert fired(rs, "api", llm_call("llm.partner.example")) == []
    assert fired(rs, "api", llm_call("evil-llm.partner.example")) == [ENDPOINT_RULE]
    assert fired(rs, "api", llm_call("localhost")) == []  # local endpoints stay exempt in the rule itself
    assert rs.placeholders.defined_in["registered_endpoints"] == f"{ours}:2"


def test_placeholder_files_next_to_the_rules_are_found_and_later_paths_win(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "site.placeholders.yml").write_text("vars: {registered_endpoints: [one.example]}\n")
    (b / "team.placeholders.yaml").write_text("vars: {registered_endpoints: [two.example]}\n")
    rs = RuleSet.load([PACK, a])
    assert fired(rs, "api", llm_call("one.example")) == []
    assert fired(rs, "api", llm_call("two.example")) == [ENDPOINT_RULE]
    rs = RuleSet.load([PACK, a, b])
    assert fired(rs, "api", llm_call("one.example")) == [ENDPOINT_RULE]
    assert fired(rs, "api", llm_call("two.example")) == []
    assert len(rs.detections) == len(RuleSet.load([PACK]).detections)  # placeholder files are not rules


def test_the_model_registry(tmp_path):
    pack = RuleSet.load([PACK])
    rule = next(r for r in pack.detections if r.meta.title == MODEL_RULE)
    # default '*': only the event's own flag counts, and the index tries the rule only on it
    assert rule.condition.pre == [("ueba.model.registered", "eq", frozenset({"false"}))]
    assert fired(pack, "telemetry", {"ueba.model.id": "anything"}) == []
    assert fired(pack, "telemetry", {"ueba.model.id": "x", "ueba.model.registered": False}) == [MODEL_RULE]
    ours = tmp_path / "models.placeholders.yml"
    ours.write_text("vars:\n  registered_models: [fraud-v3, 'churn-*']\n")
    rs = RuleSet.load([PACK], placeholders=[ours])
    assert fired(rs, "telemetry", {"ueba.model.id": "fraud-v3"}) == []
    assert fired(rs, "telemetry", {"ueba.model.id": "Churn-V2"}) == []
    assert fired(rs, "telemetry", {"ueba.model.id": "side-llm"}) == [MODEL_RULE]
    assert fired(rs, "api", {"ueba.api_key.id": "k", "ueba.model.id": "side-llm"}) == [MODEL_RULE]
    assert fired(rs, "telemetry", {"ueba.model.id": "fraud-v3", "ueba.model.registered": False}) == [MODEL_RULE]
    hit = rs.match("telemetry", {"ueba.model.id": "side-llm"}, 0.0)[0]
    assert [(m.selection, m.field, m.value) for m in hit.matched] == [("model", "ueba.model.id", "side-llm")]


def _rules(tmp_path, detection: dict, vars_yaml: str | None) -> RuleSet:
    write_rules(tmp_path / "r.yml", [rule_doc("p", detection)])
    if vars_yaml is not None:
        (tmp_path / "v.placeholders.yml").write_text(vars_yaml)
    return RuleSet.load([tmp_path])


@pytest.mark.parametrize(
    "detection, vars_yaml, cases",
    [
        # values are Sigma strings: wildcards, escapes, case-insensitive
        ({"sel": {"f|expand": "%l%"}, "condition": "sel"}, "vars: {l: ['a*', 'x\\*y', 'B?']}\n",
         [("abc", True), ("A", True), ("x*y", True), ("xzy", False), ("bq", True), ("b", False)]),
        # other modifiers apply around the expansion
        ({"sel": {"f|expand|contains": "%l%"}, "condition": "sel"}, "vars: {l: [foo, bar]}\n",
         [("xxFOOxx", True), ("bar", True), ("baz", False)]),
        ({"sel": {"f|expand|cased": "%l%"}, "condition": "sel"}, "vars: {l: [Foo]}\n",
         [("Foo", True), ("foo", False)]),
        # text around the placeholder, and numbers as values
        ({"sel": {"f|expand": "svc-%l%-prod"}, "condition": "sel"}, "vars: {l: [a, 7]}\n",
         [("svc-a-prod", True), ("svc-7-prod", True), ("svc-b-prod", False)]),
        # an empty list matches nothing
        ({"sel": {"f|expand": "%l%"}, "condition": "sel"}, "vars: {l: []}\n", [("", False), ("x", False)]),
        ({"sel": {"g": 1}, "f": {"f|expand": "%l%"}, "condition": "sel and not f"}, "vars: {l: []}\n", [("x", True)]),
        # |all: every listed value must match; each placeholder value is one alternative of its value
        ({"sel": {"f|expand|contains|all": ["%l%", "zz"]}, "condition": "sel"}, "vars: {l: [aa, bb]}\n",
         [("aazz", True), ("bbzz", True), ("aabb", False)]),
        # without expand, %name% is literal text
        ({"sel": {"f": "%l%"}, "condition": "sel"}, "vars: {l: [x]}\n", [("%l%", True), ("x", False)]),
    ],
)
def test_expansion_semantics(tmp_path, detection, vars_yaml, cases):
    rs = _rules(tmp_path, detection, vars_yaml)
    for value, want in cases:
        flat = {"f": value, "g": 1}
        assert bool(rs.match("access", flat, 0.0)) is want, (value, want)


def test_long_registries_expand_past_pysigmas_default_limit(tmp_path):
    values = [f"host-{i}.example" for i in range(5000)]
    rs = _rules(tmp_path, {"sel": {"f|expand": "%l%"}, "condition": "sel"}, "vars:\n  l:\n" + "".join(f"    - {v}\n" for v in values))
    assert rs.match("access", {"f": "host-4999.example"}, 0.0)
    assert not rs.match("access", {"f": "host-5000.example"}, 0.0)
    # plain values: the rule is in the exact-value index, not tried on other values
    assert rs._parts["access"].candidates({"f": "nope"}, {}) == []


def test_undefined_placeholders_and_bad_files_are_errors_with_lines(tmp_path):
    write_rules(tmp_path / "r.yml", [rule_doc("p", {"sel": {"f|expand": "%nope%"}, "condition": "sel"})])
    with pytest.raises(RuleLoadError) as exc:
        RuleSet.load([tmp_path])
    (err,) = [e for e in exc.value.errors if e.severity == "error"]
    assert err.line == 9 and "placeholder %nope% is not defined" in err.message

    bad = tmp_path / "bad.placeholders.yml"
    bad.write_text("vars:\n  a: [x, true]\n  b: {k: v}\ntransformations: []\n")
    issues = [i for i in validate_paths([bad]) if i.severity == "error"]
    assert sorted((i.line, i.message.split(":")[0]) for i in issues) == [
        (2, "placeholder 'a'"), (3, "placeholder 'b'"), (4, "placeholder file")]

    write_rules(tmp_path / "r.yml", [rule_doc("p", {"sel": {"f|re|expand": "%x%"}, "condition": "sel"})])
    bad.write_text("vars: {x: [a]}\n")
    issues = [i for i in validate_paths([tmp_path]) if i.severity == "error"]
    assert [i.line for i in issues] == [9] and "unsupported: placeholders in regular expressions" in issues[0].message


def test_the_runner_reloads_when_the_registry_changes(tmp_path):
    from streams.events import parse_event
    from streams.rulerun import RuleRunner

    reg = tmp_path / "registry.placeholders.yml"
    reg.write_text("vars: {registered_endpoints: [a.example]}\n")
    clock = [0.0]
    runner = RuleRunner([PACK], placeholders=[reg], reload_seconds=1, clock=lambda: clock[0])
    ev = parse_event("api", {"@timestamp": "2026-01-05T12:00:00Z", **llm_call("b.example")})
    assert [a.rule_name for a in runner.alerts(ev)] == [ENDPOINT_RULE]
    reg.write_text("vars: {registered_endpoints: [a.example, b.example]}\n")
    clock[0] = 5.0
    assert runner.maybe_reload()
    assert runner.alerts(ev) == []
