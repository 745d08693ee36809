"""The write-behind state cache (streams.statecache) and the pipeline's use of it."""

from __future__ import annotations

import orjson
import pytest

from streams.events import parse_event
from streams.firstseen import FirstSeenScorer
from streams.pipeline import InputProcessor
from streams.statecache import StateCache


def access(i, resource, user="alice", ip=None):
    doc = {"@timestamp": f"2026-11-28T10:{i // 60 % 60:02d}:{i % 60:02d}Z", "user": {"name": user}, "ueba": {"resource": {"id": resource}}}
    if ip:
        doc["source"] = {"ip": ip}
        doc["event"] = {"action": "login", "outcome": "failure"}
    return parse_event("access", orjson.dumps(doc))


def writer(store):
    def write(key, raw, tag):
        store[key] = raw

    return write


def test_values_reach_the_store_only_on_flush_and_once_per_key():
    cache: StateCache[list] = StateCache(orjson.loads, orjson.dumps, max_keys=10)
    store: dict = {}
    writes = []
    for i in range(5):
        v = cache.get(store, b"k") or []
        v.append(i)
        cache.put(b"k", v, tag=i)
    assert store == {} and cache.dirty == 1
    assert cache.flush(lambda k, raw, tag: writes.append((k, raw, tag))) == 1
    assert writes == [(b"k", b"[0,1,2,3,4]", 4)]  # one write, the latest tag
    assert cache.flush(lambda *a: writes.append(a)) == 0  # nothing changed since


def test_cache_is_bounded_and_falls_back_to_the_store():
    cache: StateCache[int] = StateCache(lambda b: int(b), lambda v: str(v).encode(), max_keys=100)
    store: dict = {}
    for i in range(10_000):  # attacker-chosen keys
        cache.put(f"id-{i}".encode(), i)
        if i % 500 == 499:
            cache.flush(writer(store))
    cache.flush(writer(store))
    assert len(cache) == 100 and len(store) == 10_000
    # an evicted key is read back from the store; the most recent stay cached
    misses = cache.misses
    assert cache.get(store, b"id-3") == 3 and cache.misses == misses + 1
    assert cache.get(store, b"id-9999") == 9999 and cache.misses == misses + 1


def test_forget_keeps_unflushed_changes_and_discard_clears():
    cache: StateCache[int] = StateCache(lambda b: int(b), lambda v: str(v).encode())
    store = {b"a": b"1", b"b": b"2"}
    assert cache.get(store, b"a") == 1
    cache.put(b"b", 20)
    assert cache.forget(b"a") is True  # clean: the store has it
    assert cache.forget(b"b") is False  # dirty: it would lose an update
    cache.discard()
    assert len(cache) == 0 and cache.dirty == 0
    assert cache.get(store, b"b") == 2


def test_cached_and_uncached_pipelines_agree():
    """The worker's cached path gives the same alerts and the same stored bytes."""
    events = [access(i, f"r{i % 7}" if i % 11 else f"new-{i}", user=f"u{i % 3}") for i in range(400)]
    plain = InputProcessor("access", FirstSeenScorer("access", warmup=5), min_score=50)
    cached = InputProcessor("access", FirstSeenScorer("access", warmup=5), min_score=50, cache_keys=2)
    s1: dict = {}
    s2: dict = {}
    a1, a2 = [], []
    for pos, ev in enumerate(events):
        a1 += [a.id for a in plain.process(s1, ev, pos).alerts]
        a2 += [a.id for a in cached.process(s2, ev, pos).alerts]
        if pos % 50 == 49:
            cached.flush(writer(s2))
    cached.flush(writer(s2))
    assert a1 and a1 == a2
    assert s1 == s2


def test_a_failing_scorer_leaves_no_half_updated_state_behind():
    class Boom(FirstSeenScorer):
        def process(self, state, flat, ts, peers=None):
            out = super().process(state, flat, ts, peers)
            if flat.get("ueba.resource.id") == "boom":
                raise ValueError("bad data")
            return out

    proc = InputProcessor("access", Boom("access", warmup=0), min_score=50, cache_keys=10)
    store: dict = {}
    proc.process(store, access(0, "a"), 0)
    proc.flush(writer(store))
    before = dict(store)
    with pytest.raises(ValueError):
        proc.process(store, access(1, "boom"), 1)
    proc.flush(writer(store))
    assert store == before  # the failed event did not reach the store...
    # ...nor the cache: "boom" is still a first-seen resource
    assert proc.process(store, access(2, "boom2"), 2).alerts
    assert not proc.process(store, access(3, "a"), 3).alerts


def test_source_dedupe_drops_an_event_seen_at_another_position():
    proc = InputProcessor("source", FirstSeenScorer("access", warmup=0), min_score=50, dedupe=True, cache_keys=10)
    store: dict = {}
    ev = access(5, "x", ip="198.51.100.7")
    first = proc.process(store, ev, 10)
    again = proc.process(store, ev, 11)  # forwarded again after a crash, new offset
    assert not first.redelivered and again.redelivered and again.alerts == []
    other = proc.process(store, access(6, "y", ip="198.51.100.7"), 12)
    assert not other.redelivered
