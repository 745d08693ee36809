"""The shared pipeline core: idempotent per-identity state and redelivery."""

import orjson

from streams.events import parse_event
from streams.firstseen import FirstSeenScorer
from streams.pipeline import InputProcessor


def access(i, resource, user="alice"):
    return parse_event(
        "access",
        orjson.dumps({"@timestamp": f"2026-11-28T10:{i // 60:02d}:{i % 60:02d}Z", "user": {"name": user}, "ueba": {"resource": {"id": resource}}}),
    )


def run(proc, store, events):
    out = []
    for pos, ev in events:
        out.append(proc.process(store, ev, pos))
    return out


def test_first_seen_alerts_only_after_warmup():
    proc = InputProcessor("access", FirstSeenScorer("access", warmup=5), min_score=50)
    store: dict = {}
    res = run(proc, store, [(i, access(i, f"r{i % 3}")) for i in range(10)] + [(10, access(10, "secret-thing"))])
    assert all(not r.alerts for r in res[:-1])
    (alert,) = res[-1].alerts
    assert alert.entity == "alice" and "secret-thing" in alert.title
    assert alert.explanation["baseline"]["distinct_seen"] == 3


def test_redelivery_never_learns_twice():
    proc = InputProcessor("access", FirstSeenScorer("access", warmup=2), min_score=50)
    store: dict = {}
    evs = [(i, access(i, "a")) for i in range(3)] + [(3, access(3, "new"))]
    first = run(proc, store, evs)
    assert first[-1].alerts
    snapshot = dict(store)
    again = proc.process(store, evs[-1][1], 3)  # the same offset redelivered
    # its alert was sent (and acknowledged) before this state was written: nothing again
    assert again.redelivered and again.alerts == []
    assert store == snapshot  # state untouched
    older = proc.process(store, evs[0][1], 0)
    assert older.redelivered and older.alerts == [] and store == snapshot


def test_identities_have_separate_state():
    proc = InputProcessor("access", FirstSeenScorer("access", warmup=1), min_score=50)
    store: dict = {}
    run(proc, store, [(0, access(0, "a", "alice")), (1, access(1, "a", "bob"))])
    assert set(store) == {b"alice", b"bob"}
    r = proc.process(store, access(2, "b", "bob"), 2)
    assert [a.entity for a in r.alerts] == ["bob"]


def test_state_is_bounded_against_attacker_cardinality():
    scorer = FirstSeenScorer("access", warmup=0, capacity=64)
    proc = InputProcessor("access", scorer, min_score=50)
    store: dict = {}
    sizes = []
    for i in range(5000):
        assert proc.process(store, access(i % 3600, f"res-{i}"), i).alerts  # every resource is new
        sizes.append(len(store[b"alice"]))
    # 64 hashes and nothing that grows with the number of alerts
    assert max(sizes) < 64 * 10 + 64
    assert sizes[-1] == sizes[1000]


def test_state_keeps_no_redelivery_buffer():
    proc = InputProcessor("access", FirstSeenScorer("access", warmup=0), min_score=50)
    store: dict = {}
    r = [proc.process(store, access(i, f"r{i}"), i) for i in range(3)]
    assert all(x.alerts for x in r[1:])
    assert len(store[b"alice"]) < 64
