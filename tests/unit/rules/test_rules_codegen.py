"""Generated rule functions and the index: the same answers as the closures, faster."""

from __future__ import annotations

import random

import pytest
import yaml

from rules import RuleSet
from rules.bench import event_mix, synthetic_rules
from rules.compiler import NEVER, TS_KEY
from rules.testing import _ts_of, event_flat

from rules_helpers import FILES, PACK, rule_doc, write_rules

TABLE = yaml.safe_load((FILES / "modifier_semantics.yml").read_text(encoding="utf-8"))
ODD = [None, "", " ", "x" * 3000, 0, -1, 1.5, 1e308, float("nan"), True, False, [], [None], [1, "a", None],
       {"k": 1}, [{"k": "v"}], "::1", "10.0.0.1", "1e5", "é" * 10, "\x00", "ignore previous instructions", "FALSE",
       "Hello", "hello world", ["a", "b"], "/v1/admin/keys", "-foo", "/foo", "aGVsbG8=", "a.EXAMPLE", "abc", "w11",
       ["x", 3], "HELLO"]


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> RuleSet:
    d = tmp_path_factory.mktemp("cg")
    docs = [rule_doc(c["name"], c["detection"] if "detection" in c else {"sel": c["sel"], "condition": "sel"}) for c in TABLE]
    write_rules(d / "semantics.yml", docs)
    write_rules(d / "synthetic.yml", synthetic_rules(200, seed=3))
    mixed = [  # lists mixing value shapes (an endpoint registry of hosts and *.domains), wildcards alone
        rule_doc("mixed shapes", {"sel": {"f": ["hello", "*.example", "ab*", "*ell*", "x"]}, "condition": "sel"}),
        rule_doc("mixed with star", {"sel": {"f": ["hello", "*"]}, "condition": "sel"}),
        rule_doc("star alone", {"sel": {"f": "*"}, "g": {"g": "*"}, "condition": "sel and not g"}),
        rule_doc("mixed with regex shape", {"sel": {"f": ["h?llo", "*.example"]}, "condition": "sel"}),
        rule_doc("many contains", {"sel": {"f|contains": [f"w{i}" for i in range(12)] + ["ell"]}, "condition": "sel"}),
    ]
    write_rules(d / "mixed.yml", mixed)
    return RuleSet.load([PACK, d])


def _events(rs: RuleSet) -> list[tuple[dict, float]]:
    rng = random.Random(4)
    fields = sorted(rs.referenced_fields())
    out = [(event_flat(ev), _ts_of(ev, 0)) for c in TABLE for ev, _ in c["cases"]]
    out += [(flat, ts) for _, flat, ts in event_mix(1500, seed=5)]
    for i in range(1500):
        flat = {f: rng.choice(ODD) for f in rng.sample(fields, rng.randint(1, 8))}
        out.append((flat, 1_767_614_400.0 + i * 977))
    return out


def test_generated_functions_agree_with_the_closures(many):
    generated = [r for r in many.detections if hasattr(r.fn, "__source__")]
    assert len(generated) == len(many.detections)  # every rule of the pack, the table and the synthetic set
    wrong = []
    for flat, ts in _events(many):
        for r in generated:
            want = bool(r.condition.fn(flat, {TS_KEY: ts}))
            got = bool(r.fn(flat, {TS_KEY: ts}))
            if got != want:
                wrong.append((r.meta.title, flat, got, want))
    assert wrong == []


def test_codegen_off_gives_the_same_matches(many, monkeypatch, tmp_path):
    import rules.codegen

    monkeypatch.setattr(rules.codegen, "CODEGEN", False)
    write_rules(tmp_path / "synthetic.yml", synthetic_rules(60, seed=8))
    plain = RuleSet.load([PACK, tmp_path])
    monkeypatch.setattr(rules.codegen, "CODEGEN", True)
    gen = RuleSet.load([PACK, tmp_path])
    assert not any(hasattr(r.fn, "__source__") for r in plain.detections)
    for kind, flat, ts in event_mix(3000, seed=2):
        assert [h.rule_id for h in plain.match(kind, flat, ts)] == [h.rule_id for h in gen.match(kind, flat, ts)]


def test_x_and_not_x_is_never_indexed_but_stays_exact(tmp_path):
    docs = [
        rule_doc("never", {"a": {"f": "*"}, "b": {"f|expand": "%anything%"}, "condition": "a and not b"}),
        rule_doc("sometimes", {"flag": {"g": False}, "a": {"f": "*"}, "b": {"f|expand": "%anything%"},
                                "condition": "flag or (a and not b)"}),
    ]
    write_rules(tmp_path / "r.yml", docs)
    (tmp_path / "p.placeholders.yml").write_text("vars:\n  anything: ['*']\n")
    rs = RuleSet.load([tmp_path])
    never, sometimes = rs.detections
    assert never.condition.pre is NEVER
    assert sometimes.condition.pre == [("g", "eq", frozenset({"false"}))]
    for flat in ({"f": "x"}, {"f": ["x"]}, {"f": [None]}, {"f": {"k": 1}}, {"g": "false"}, {"g": False}, {"f": 1}):
        assert not never.fn(flat, {TS_KEY: 0.0})
        assert bool(sometimes.fn(flat, {TS_KEY: 0.0})) == ("g" in flat)
        assert [h.title for h in rs.match("access", flat, 0.0)] == (["sometimes"] if "g" in flat else [])
    # a real list: "a and not b" can hold, the rule is tried wherever f is present
    (tmp_path / "p.placeholders.yml").write_text("vars:\n  anything: [x]\n")
    rs = RuleSet.load([tmp_path])
    assert [h.title for h in rs.match("access", {"f": "y"}, 0.0)] == ["never", "sometimes"]


def test_booleans_are_indexed_by_their_text(tmp_path):
    write_rules(tmp_path / "r.yml", [rule_doc("b", {"sel": {"ueba.model.registered": False}, "condition": "sel"})])
    rs = RuleSet.load([tmp_path])
    part = rs._parts["api"]
    assert part.candidates({"ueba.model.registered": True}, {}) == []
    for v, want in ((False, True), ("false", True), ("FALSE", True), (True, False), (0, False), ([True, False], True)):
        assert bool(rs.match("api", {"ueba.model.registered": v}, 0.0)) is want, v


@pytest.mark.parametrize("backend", ["re2", "ahocorasick", "plain"])
def test_literal_index_backends_find_every_literal(backend, monkeypatch):
    import rules.ruleset as rsmod

    if backend != "re2":
        monkeypatch.setattr(rsmod, "_re2_set", None)
    if backend == "plain":
        monkeypatch.setattr(rsmod, "_ahocorasick", None)
    rng = random.Random(11)
    alphabet = "abcé.*(?\\ \x00"
    lits = sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(3, 6))) for _ in range(40)})
    lits += ["ignore", "ignore previous", "previous instructions", "ore pre"]
    find = rsmod._literal_finder(lits)
    for _ in range(400):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        if rng.random() < 0.3:
            text += " please ignore previous instructions"
        assert sorted(set(find(text))) == sorted(lit for lit in lits if lit in text), text
