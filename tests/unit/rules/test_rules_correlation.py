"""Stateful correlations: windows, ordering, bounds, serialisation, event time."""

from __future__ import annotations

import re

import pytest

from rules import CorrelationEngine, RuleLoadError, RuleSet

from rules_helpers import rule_doc, write_rules

T0 = 1_767_614_400.0  # 2026-01-05T12:00:00Z


def base(name: str, action: str) -> dict:
    return rule_doc(name, {"sel": {"event.action": action}, "condition": "sel"}, name=name,
                    logsource={"product": "ai-ueba", "service": "access"})


def corr(title: str, **c) -> dict:
    return {"title": title, "id": rule_doc(title, {})["id"], "level": "high", "correlation": c}


def load(tmp_path, *corrs) -> RuleSet:
    write_rules(tmp_path / "r.yml", [base("rule_a", "a"), base("rule_b", "b"), base("rule_c", "c"), *corrs])
    return RuleSet.load([tmp_path])


def feed(rs: RuleSet, eng: CorrelationEngine, events: list[tuple[float, dict]]) -> list[tuple[int, object]]:
    out = []
    for i, (ts, flat) in enumerate(events):
        hits = rs.match("access", flat, ts)
        for h in eng.process("access", flat, ts, hits):
            out.append((i, h))
    return out


def ev(action: str, user: str = "alice", **kw) -> dict:
    return {"event.action": action, "user.name": user, **kw}


def test_event_count_fires_once_per_threshold_crossing(tmp_path):
    rs = load(tmp_path, corr("count", type="event_count", rules=["rule_a"], **{"group-by": ["user.name"]},
                             timespan="5m", condition={"gte": 3}))
    eng = CorrelationEngine(rs)
    got = feed(rs, eng, [(T0 + i, ev("a")) for i in range(7)])
    assert [i for i, _ in got] == [2, 5]
    h = got[0][1]
    assert h.group_key == ("alice",) and h.group_by == ("user.name",)
    assert h.extra["observed"] == 3.0 and h.rule_type == "event_count" and h.alert


def test_event_count_window_slides_on_event_time(tmp_path):
    rs = load(tmp_path, corr("count", type="event_count", rules=["rule_a"], **{"group-by": ["user.name"]},
                             timespan="5m", condition={"gte": 3}))
    eng = CorrelationEngine(rs)
    # 3 events 4 minutes apart: never 3 within 5 minutes
    assert feed(rs, eng, [(T0 + i * 240, ev("a")) for i in range(3)]) == []
    # wall clock is irrelevant: events a year later behave the same
    eng2 = CorrelationEngine(rs)
    assert [i for i, _ in feed(rs, eng2, [(T0 + 3e7 + i, ev("a")) for i in range(3)])] == [2]


def test_event_count_groups_are_separate_and_missing_group_field_is_not_counted(tmp_path):
    rs = load(tmp_path, corr("count", type="event_count", rules=["rule_a"], **{"group-by": ["user.name"]},
                             timespan="5m", condition={"gte": 2}))
    eng = CorrelationEngine(rs)
    events = [(T0, ev("a", "alice")), (T0 + 1, ev("a", "bob")), (T0 + 2, {"event.action": "a"})]
    assert feed(rs, eng, events) == []
    assert [h.group_key for _, h in feed(rs, eng, [(T0 + 3, ev("a", "bob"))])] == [("bob",)]


def test_gt_is_strict(tmp_path):
    rs = load(tmp_path, corr("count", type="event_count", rules=["rule_a"], **{"group-by": ["user.name"]},
                             timespan="5m", condition={"gt": 2}))
    got = feed(rs, CorrelationEngine(rs), [(T0 + i, ev("a")) for i in range(3)])
    assert [i for i, _ in got] == [2]


def test_lt_is_judged_when_the_window_closes(tmp_path):
    rs = load(tmp_path, corr("few", type="event_count", rules=["rule_a"], **{"group-by": ["user.name"]},
                             timespan="10m", condition={"lt": 3}))
    eng = CorrelationEngine(rs)
    assert feed(rs, eng, [(T0, ev("a")), (T0 + 60, ev("a"))]) == []
    assert eng.advance(T0 + 300) == []  # window not over yet
    closed = eng.advance(T0 + 601)
    assert [(h.group_key, h.extra["observed"]) for h in closed] == [(("alice",), 2.0)]
    # three events in the window: condition false at close
    eng = CorrelationEngine(rs)
    feed(rs, eng, [(T0 + i, ev("a")) for i in range(3)])
    assert eng.advance(T0 + 601) == []


def test_lt_window_closed_by_a_later_event_of_the_group(tmp_path):
    rs = load(tmp_path, corr("few", type="event_count", rules=["rule_a"], **{"group-by": ["user.name"]},
                             timespan="10m", condition={"lte": 1}))
    got = feed(rs, CorrelationEngine(rs), [(T0, ev("a")), (T0 + 700, ev("a"))])
    assert [i for i, _ in got] == [1]


def test_value_count_counts_distinct_values(tmp_path):
    rs = load(tmp_path, corr("spray", type="value_count", rules=["rule_a"], **{"group-by": ["source.ip"]},
                             timespan="15m", condition={"gte": 3, "field": "user.name"}))
    eng = CorrelationEngine(rs)
    same_user = [(T0 + i, ev("a", "u1", **{"source.ip": "10.0.0.1"})) for i in range(5)]
    assert feed(rs, eng, same_user) == []
    got = feed(rs, eng, [(T0 + 10, ev("a", "u2", **{"source.ip": "10.0.0.1"})),
                         (T0 + 11, ev("a", "u3", **{"source.ip": "10.0.0.1"}))])
    assert [i for i, _ in got] == [1]
    assert sorted(got[0][1].extra["values"]) == ["u1", "u2", "u3"]


def test_value_sum_and_avg(tmp_path):
    rs = load(
        tmp_path,
        corr("sum", type="value_sum", rules=["rule_a"], **{"group-by": ["user.name"]}, timespan="1m",
             condition={"gte": 100, "field": "n"}),
        corr("avg", type="value_avg", rules=["rule_b"], **{"group-by": ["user.name"]}, timespan="1m",
             condition={"gt": 50, "field": "n"}),
    )
    eng = CorrelationEngine(rs)
    got = feed(rs, eng, [(T0, ev("a", n=60)), (T0 + 1, ev("a", n="40")), (T0 + 2, ev("b", n=10)),
                         (T0 + 3, ev("b", n=200))])
    assert [(i, h.title) for i, h in got] == [(1, "sum"), (3, "avg")]
    # non-numeric values are ignored, not summed
    eng = CorrelationEngine(rs)
    assert feed(rs, eng, [(T0, ev("a", n="lots")), (T0 + 1, ev("a", n=99))]) == []


def test_temporal_any_order_within_timespan(tmp_path):
    rs = load(tmp_path, corr("both", type="temporal", rules=["rule_a", "rule_b"], **{"group-by": ["user.name"]},
                             timespan="5m"))
    assert [i for i, _ in feed(rs, CorrelationEngine(rs), [(T0, ev("b")), (T0 + 10, ev("a"))])] == [1]
    assert feed(rs, CorrelationEngine(rs), [(T0, ev("b")), (T0 + 400, ev("a"))]) == []
    assert feed(rs, CorrelationEngine(rs), [(T0, ev("b")), (T0 + 1, ev("b")), (T0 + 2, ev("c"))]) == []
    assert feed(rs, CorrelationEngine(rs), [(T0, ev("b", "x")), (T0 + 1, ev("a", "y"))]) == []


def test_temporal_ordered_needs_the_order(tmp_path):
    rs = load(tmp_path, corr("seq", type="temporal_ordered", rules=["rule_a", "rule_b", "rule_c"],
                             **{"group-by": ["user.name"]}, timespan="5m"))
    ok = [(T0, ev("a")), (T0 + 1, ev("b")), (T0 + 2, ev("c"))]
    assert [i for i, _ in feed(rs, CorrelationEngine(rs), ok)] == [2]
    wrong = [(T0, ev("b")), (T0 + 1, ev("a")), (T0 + 2, ev("c"))]
    assert feed(rs, CorrelationEngine(rs), wrong) == []
    # interleaved noise and a restart of the chain still work
    noisy = [(T0, ev("a")), (T0 + 1, ev("c")), (T0 + 2, ev("a")), (T0 + 3, ev("b")), (T0 + 4, ev("c"))]
    assert [i for i, _ in feed(rs, CorrelationEngine(rs), noisy)] == [4]
    # the whole chain must fit into the timespan
    slow = [(T0, ev("a")), (T0 + 200, ev("b")), (T0 + 400, ev("c"))]
    assert feed(rs, CorrelationEngine(rs), slow) == []


def test_aliases_group_different_fields(tmp_path):
    rs = load(tmp_path, corr("aliased", type="temporal", rules=["rule_a", "rule_b"], **{"group-by": ["who"]},
                             timespan="5m", aliases={"who": {"rule_a": "user.name", "rule_b": "ueba.api_key.owner"}}))
    events = [(T0, ev("a", "alice")), (T0 + 1, {"event.action": "b", "ueba.api_key.owner": "alice"})]
    got = feed(rs, CorrelationEngine(rs), events)
    assert [(i, h.group_key) for i, h in got] == [(1, ("alice",))]


def test_correlation_of_a_correlation(tmp_path):
    burst = corr("burst", type="event_count", rules=["rule_a"], **{"group-by": ["user.name"]}, timespan="5m",
                 condition={"gte": 2})
    burst["name"] = "burst"
    rs = load(tmp_path, burst, corr("burst then b", type="temporal_ordered", rules=["burst", "rule_b"],
                                    **{"group-by": ["user.name"]}, timespan="10m"))
    got = feed(rs, CorrelationEngine(rs), [(T0, ev("a")), (T0 + 1, ev("a")), (T0 + 2, ev("b"))])
    assert [(i, h.title) for i, h in got] == [(1, "burst"), (2, "burst then b")]


def test_referenced_rules_do_not_alert_unless_generate(tmp_path):
    rs = load(tmp_path, corr("c1", type="event_count", rules=["rule_a"], **{"group-by": ["user.name"]},
                             timespan="5m", condition={"gte": 2}),
              corr("c2", type="event_count", rules=["rule_b"], **{"group-by": ["user.name"]},
                   timespan="5m", condition={"gte": 2}, generate=True))
    assert [h.alert for h in rs.match("access", ev("a"), T0)] == [False]
    assert [h.alert for h in rs.match("access", ev("b"), T0)] == [True]
    assert [h.alert for h in rs.match("access", ev("c"), T0)] == [True]


def test_generate_is_read_inside_correlation_or_at_the_top_level(tmp_path):
    # pySigma and the specification's text read it inside correlation:, its JSON schema at the top level
    top = corr("c2", type="event_count", rules=["rule_b"], **{"group-by": ["user.name"]},
               timespan="5m", condition={"gte": 2})
    top["generate"] = True
    rs = load(tmp_path, corr("c1", type="event_count", rules=["rule_a"], **{"group-by": ["user.name"]},
                             timespan="5m", condition={"gte": 2}), top)
    assert [h.alert for h in rs.match("access", ev("a"), T0)] == [False]
    assert [h.alert for h in rs.match("access", ev("b"), T0)] == [True]


@pytest.mark.parametrize("inner, outer, message", [
    (True, False, "different values"),
    ("yes", None, "generate definition must be a boolean"),   # pySigma's check
    (None, 1, "generate.*(true or false|boolean)"),
])
def test_generate_must_be_one_boolean(tmp_path, inner, outer, message):
    c = {"type": "event_count", "rules": ["rule_a"], "group-by": ["user.name"], "timespan": "5m",
         "condition": {"gte": 2}}
    if inner is not None:
        c["generate"] = inner
    doc = corr("c1", **c)
    if outer is not None:
        doc["generate"] = outer
    with pytest.raises(RuleLoadError) as exc:
        load(tmp_path, doc)
    assert re.search(message, exc.value.diagnostics()), exc.value.diagnostics()


def test_groups_are_bounded_lru(tmp_path):
    rs = load(tmp_path, corr("count", type="event_count", rules=["rule_a"], **{"group-by": ["user.name"]},
                             timespan="5m", condition={"gte": 2}))
    eng = CorrelationEngine(rs, max_groups=10)
    feed(rs, eng, [(T0 + i, ev("a", f"user{i}")) for i in range(100)])
    assert eng.group_count() == 10
    # the most recent groups survived: user99's second event fires
    assert [h.group_key for _, h in feed(rs, eng, [(T0 + 101, ev("a", "user99"))])] == [("user99",)]
    assert feed(rs, eng, [(T0 + 102, ev("a", "user0"))]) == []


def test_idle_groups_expire_by_event_time(tmp_path):
    rs = load(tmp_path, corr("count", type="event_count", rules=["rule_a"], **{"group-by": ["user.name"]},
                             timespan="1m", condition={"gte": 5}))
    eng = CorrelationEngine(rs)
    feed(rs, eng, [(T0, ev("a", f"user{i}")) for i in range(500)])
    assert eng.group_count() == 500
    feed(rs, eng, [(T0 + 3600 + i, ev("a", "late")) for i in range(1100)])
    assert eng.group_count() == 1


def test_state_round_trips_through_bytes(tmp_path):
    rs = load(tmp_path, corr("seq", type="temporal_ordered", rules=["rule_a", "rule_b"],
                             **{"group-by": ["user.name"]}, timespan="5m"),
              corr("spray", type="value_count", rules=["rule_a"], **{"group-by": ["user.name"]},
                   timespan="15m", condition={"gte": 3, "field": "source.ip"}))
    events = [(T0, ev("a", **{"source.ip": "1.1.1.1"})), (T0 + 1, ev("a", **{"source.ip": "2.2.2.2"})),
              (T0 + 2, ev("b")), (T0 + 3, ev("a", **{"source.ip": "3.3.3.3"}))]
    whole = feed(rs, CorrelationEngine(rs), events)
    eng = CorrelationEngine(rs)
    feed(rs, eng, events[:2])
    restored = CorrelationEngine.from_bytes(eng.to_bytes(), rs)
    rest = feed(rs, restored, events[2:])
    assert [(i + 2, h.title) for i, h in rest] == [(i, h.title) for i, h in whole] == [(2, "seq"), (3, "spray")]


def test_state_of_a_changed_rule_is_dropped(tmp_path):
    rs = load(tmp_path, corr("count", type="event_count", rules=["rule_a"], **{"group-by": ["user.name"]},
                             timespan="5m", condition={"gte": 3}))
    eng = CorrelationEngine(rs)
    feed(rs, eng, [(T0, ev("a")), (T0 + 1, ev("a"))])
    data = eng.to_bytes()
    assert CorrelationEngine.from_bytes(data, rs).group_count() == 1
    changed = load(tmp_path, corr("count", type="event_count", rules=["rule_a"], **{"group-by": ["user.name"]},
                                  timespan="5m", condition={"gte": 4}))
    assert CorrelationEngine.from_bytes(data, changed).group_count() == 0


def test_late_events_beyond_the_window_are_ignored(tmp_path):
    rs = load(tmp_path, corr("count", type="event_count", rules=["rule_a"], **{"group-by": ["user.name"]},
                             timespan="1m", condition={"gte": 2}))
    eng = CorrelationEngine(rs)
    assert feed(rs, eng, [(T0 + 600, ev("a")), (T0, ev("a"))]) == []


@pytest.mark.parametrize("bad", [{"type": "temporal", "rules": ["rule_a"]}])
def test_temporal_needs_two_rules(tmp_path, bad):
    write_rules(tmp_path / "r.yml", [base("rule_a", "a"),
                                     corr("t", **bad, **{"group-by": ["user.name"]}, timespan="1m")])
    rs, issues = RuleSet.load([tmp_path], collect=True)
    assert [i.message for i in issues if i.severity == "error"] == ["temporal correlation needs at least two rules"]
