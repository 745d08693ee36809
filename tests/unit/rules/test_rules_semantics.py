"""Golden table of Sigma matching semantics, and a cross-check against pySigma."""

from __future__ import annotations

import itertools
import re

import pytest
import yaml
from sigma.rule.detection import SigmaDetectionItem

from rules import RuleSet
from rules.compiler import value_pred
from rules.testing import _ts_of, event_flat

from rules_helpers import FILES, rule_doc, write_rules

TABLE = yaml.safe_load((FILES / "modifier_semantics.yml").read_text(encoding="utf-8"))


def _detection(case: dict) -> dict:
    if "detection" in case:
        return case["detection"]
    return {"sel": case["sel"], "condition": "sel"}


@pytest.fixture(scope="module")
def table_ruleset(tmp_path_factory):
    d = tmp_path_factory.mktemp("sem")
    docs = [rule_doc(c["name"], _detection(c)) for c in TABLE]
    write_rules(d / "semantics.yml", docs)
    rs, issues = RuleSet.load([d], collect=True)
    errors = [str(i) for i in issues if i.severity == "error"]
    assert errors == []
    return rs


def test_table_is_substantial():
    n = sum(len(c["cases"]) for c in TABLE)
    assert n >= 150
    assert sum(1 for c in TABLE for _, want in c["cases"] if not want) >= 60


def test_golden_modifier_semantics(table_ruleset):
    wrong = []
    for c in TABLE:
        rid = rule_doc(c["name"], {})["id"]
        for ev, want in c["cases"]:
            for kind in ("access", "api", "telemetry"):
                hits = table_ruleset.match(kind, event_flat(ev), _ts_of(ev, 0))
                got = any(h.rule_id == rid for h in hits)
                if got != want:
                    wrong.append(f"{c['name']}: {ev} on {kind}: expected {want}, got {got}")
    assert wrong == []


def test_hits_explain_selection_field_and_value(table_ruleset):
    rid = rule_doc("fieldref negated in the condition (owner differs)", {})["id"]
    ev = {"ueba.resource.type": "secret", "ueba.resource.owner": "bob", "user.name": "alice"}
    (hit,) = [h for h in table_ruleset.match("access", ev, 0.0) if h.rule_id == rid]
    # positive evidence only: the negated fieldref selection is not reported
    assert [(m.selection, m.field, m.value) for m in hit.matched] == [("sel", "ueba.resource.type", "secret")]


# --- cross-check: our wildcard matcher against pySigma's own regex conversion --------

ALPHABET = "ab*?\\"


def _pysigma_regex(item: SigmaDetectionItem) -> re.Pattern[str]:
    (val,) = item.value
    return re.compile(str(val.to_regex().regexp), re.IGNORECASE | re.DOTALL)


def test_wildcards_and_escapes_agree_with_pysigma():
    patterns = ["".join(p) for n in range(1, 5) for p in itertools.product(ALPHABET, repeat=n)]
    values = [""] + ["".join(p) for n in range(1, 4) for p in itertools.product("aAb*?\\", repeat=n)]
    disagreements = []
    for pat in patterns:
        item = SigmaDetectionItem.from_mapping("f", pat)
        ours = value_pred(item.value[0])
        theirs = _pysigma_regex(item).fullmatch
        for v in values:
            if ours(v, v.lower()) != (theirs(v) is not None):
                disagreements.append((pat, v))
    assert disagreements == []
    assert len(patterns) * len(values) > 50_000


@pytest.mark.parametrize("mods", ["contains", "startswith", "endswith", "contains|cased"])
def test_modified_wildcards_agree_with_pysigma(mods):
    for pat in ["a*b", "a\\*b", "?x", "a\\\\b", "ab"]:
        item = SigmaDetectionItem.from_mapping(f"f|{mods}", pat)
        ours = value_pred(item.value[0])
        flags = re.DOTALL | (0 if "cased" in mods else re.IGNORECASE)
        theirs = re.compile(str(item.value[0].to_regex().regexp), flags).fullmatch
        for v in ["", "ab", "xAbx", "a*b", "zza\\bzz", "qx", "xqxx", "A*B"]:
            assert ours(v, v.lower()) == (theirs(v) is not None), (mods, pat, v)


def test_regex_runs_in_linear_time_on_hostile_input(tmp_path):
    import time

    write_rules(tmp_path / "r.yml", [rule_doc("redos", {"sel": {"f|re": "(a+)+$"}, "condition": "sel"})])
    rs = RuleSet.load([tmp_path])
    hostile = {"f": "a" * 60_000 + "!"}
    t = time.process_time()
    assert rs.match("api", hostile, 0.0) == []
    assert time.process_time() - t < 0.5  # Python's backtracking re would take forever here
