"""Golden valid/invalid rule files: every error with its message and line."""

from __future__ import annotations

import pytest

from rules import RuleLoadError, RuleSet, run_rule_tests, validate_paths

from rules_helpers import FILES

INVALID = FILES / "invalid"

# file -> [(line, text the message must contain)], exactly the errors expected
EXPECTED: dict[str, list[tuple[int, str]]] = {
    "duplicate_key.yml": [(8, "duplicate key 'event.action' (first at line 7)")],
    "unknown_modifier.yml": [(8, "unsupported: unknown modifier 'containz'")],
    "expand_placeholder.yml": [(7, "placeholder %admins% is not defined")],
    "undefined_detection.yml": [(8, "condition references undefined detection 'filter'")],
    "bad_level_and_service.yml": [
        (3, "schema: level: 'severe' is not valid"),
        (6, "logsource service 'web' is not one of access, api, telemetry"),
    ],
    "several_errors.yml": [
        (7, "Regular expression '(unclosed' is invalid"),
        (9, "Invalid CIDR expression: '300.1.2.0/24'"),
        (11, "Base64 encoding of strings with wildcards is not allowed"),
        (13, "unsupported: timestamp part modifier on 'event.created'"),
    ],
    "bad_yaml.yml": [(5, "invalid YAML: expected ',' or '}'")],
    "bad_correlation.yml": [
        (18, "correlation references unknown (or broken) rule 'no_such_rule'"),
        (31, "Timespan '10x' is invalid."),
        (39, "unsupported: correlation type 'value_percentile'"),
        (55, "schema: correlation.condition"),
        (55, "unsupported: extended (string) correlation conditions"),
    ],
    "bad_tests.yml": [
        (12, "x_tests.match[1]: a test event is a mapping of fields"),
        (13, "x_tests.nomatch must be a list"),
    ],
    "duplicate_id.yml": [(10, "duplicate rule id 1b0f4c8e-9f7e-4a51-8f3c-2a1d7e6b5c0e")],
    "schema_types.yml": [
        (2, "schema: id: 'not-a-uuid' is not a 'uuid'"),
        (3, "schema: status: 'wip'"),
        (4, "schema: date: '28.11.2026' does not match"),
        (7, "schema: tags.0: 'Attack T1110' does not match"),
    ],
}


def test_every_invalid_golden_file_is_covered():
    assert sorted(p.name for p in INVALID.glob("*.yml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_file_errors_have_message_and_line(name):
    path = INVALID / name
    errors = [i for i in validate_paths([path]) if i.severity == "error"]
    got = sorted((i.line, i.message) for i in errors)
    want = sorted(EXPECTED[name])
    assert len(got) == len(want), got
    for (gl, gm), (wl, wm) in zip(got, want):
        assert gl == wl and wm in gm, (gl, gm, wl, wm)
    assert all(i.file == str(path) for i in errors)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_raises_with_all_errors(name):
    with pytest.raises(RuleLoadError) as exc:
        RuleSet.load([INVALID / name])
    assert len([i for i in exc.value.errors if i.severity == "error"]) == len(EXPECTED[name])
    assert f"{name}:{EXPECTED[name][0][0]}" in exc.value.diagnostics() or name in exc.value.diagnostics()


def test_whole_invalid_directory_collects_errors_of_all_files():
    rs, issues = RuleSet.load([INVALID], collect=True)
    errors = [i for i in issues if i.severity == "error"]
    assert len(errors) == sum(len(v) for v in EXPECTED.values())
    # the rules without errors still load in collect mode
    ids = {r.meta.id for r in rs.detections}
    assert "1b0f4c8e-9f7e-4a51-8f3c-2a1d7e6b5c08" in ids  # golden_base_rule
    assert "1b0f4c8e-9f7e-4a51-8f3c-2a1d7e6b5c01" not in ids  # duplicate key file


def test_broken_rule_never_matches_in_collect_mode():
    rs, _ = RuleSet.load([INVALID / "unknown_modifier.yml"], collect=True)
    assert len(rs) == 0
    assert rs.match("api", {"event.action": "chat", "ueba.gen_ai.prompt": "ignore"}, 0.0) == []


def test_valid_golden_files_load_and_their_tests_pass():
    rs = RuleSet.load([FILES / "valid"])
    warnings = [i for i in rs.issues if i.severity == "warning"]
    assert [(w.line, "product 'windows'" in w.message) for w in warnings] == [(5, True)]
    report = run_rule_tests(rs)
    assert report.ok, report.text()
    assert report.total == 6  # 2 embedded + 4 from golden.tests.yml
    assert report.untested == []


def test_failures_from_a_sibling_tests_file_point_into_that_file(tmp_path):
    (tmp_path / "r.yml").write_text((FILES / "valid" / "detection_and_correlation.yml").read_text())
    (tmp_path / "r.tests.yml").write_text(
        "golden_guardrail_block:\n  match:\n    - {ueba.gen_ai.guardrail_action: allowed}\n"
    )
    report = run_rule_tests(RuleSet.load([tmp_path]))
    assert [(f.case.file, f.case.line) for f in report.failures] == [(str(tmp_path / "r.tests.yml"), 3)]


def test_sibling_tests_file_with_unknown_rule_is_an_error(tmp_path):
    (tmp_path / "r.yml").write_text((FILES / "valid" / "detection_and_correlation.yml").read_text())
    (tmp_path / "x.tests.yml").write_text("no_such_rule:\n  match: []\n")
    issues = validate_paths([tmp_path])
    assert [(i.line, i.message) for i in issues if i.severity == "error"] == [(1, "tests for unknown rule 'no_such_rule'")]


def test_failing_embedded_test_is_reported_with_line(tmp_path):
    (tmp_path / "r.yml").write_text(
        "title: t\nid: 3d2b0bd5-7c2b-4b5b-9a59-5f7b0c1f6a11\nlevel: low\n"
        "logsource: {product: ai-ueba, service: access}\n"
        "detection:\n  sel: {user.name: root}\n  condition: sel\n"
        "x_tests:\n  match:\n    - {user.name: alice}\n  nomatch:\n    - {user.name: ROOT}\n"
    )
    report = run_rule_tests(RuleSet.load([tmp_path]))
    assert report.passed == 0
    assert [(f.case.line, f.reason) for f in report.failures] == [
        (10, "expected the rule to fire, it did not"),
        (12, "expected no hit, the rule fired on event 0"),
    ]
    assert not report.ok


def test_missing_path_is_an_error(tmp_path):
    issues = validate_paths([tmp_path / "nope"])
    assert [i.message for i in issues] == ["no such file or directory"]


def test_dates_stay_strings_and_rule_without_id_gets_a_stable_one(tmp_path):
    text = "title: t\ndate: 2026-11-28\nlevel: low\nlogsource: {product: ai-ueba}\ndetection:\n  sel: {a: b}\n  condition: sel\n"
    (tmp_path / "r.yml").write_text(text)
    rs1 = RuleSet.load([tmp_path])
    rs2 = RuleSet.load([tmp_path])
    assert [r.meta.id for r in rs1.detections] == [r.meta.id for r in rs2.detections]
    assert any("has no id" in i.message for i in rs1.issues)


def test_rule_tests_yields_cases_with_locations():
    rs = RuleSet.load([str(FILES / "valid")])
    cases = list(rs.rule_tests())
    assert len(cases) == 6
    assert {(c.expect_match, c.sequence) for c in cases} == {(True, False), (False, False), (True, True), (False, True)}
    assert all(c.line > 0 and c.file.endswith(".yml") for c in cases)


def test_a_lone_path_is_accepted(tmp_path):
    assert len(RuleSet.load(str(FILES / "valid"))) == len(RuleSet.load([FILES / "valid"])) == 3  # type: ignore[arg-type]
