"""Correlation state kept per partition key (in the key's state envelope).

Round trip through bytes, the multi-worker property (two processors that split
the keys give the alerts of one), idempotence under redelivery and crashes,
bounds on attacker-controlled cardinality, hot reload, placement."""

from __future__ import annotations

import random
import zlib
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import pytest

from rules import RuleSet
from rules.correlation import (
    KEY_MAX_GROUPS,
    LOCAL,
    STATEFUL_MAX_VALUES,
    CorrelationEngine,
    KeyState,
    place,
)
from streams.events import parse_event
from streams.pipeline import InputProcessor, source_view
from streams.rulerun import RuleRunner

from rules_helpers import PACK, rule_doc, write_rules

T0 = 1_767_614_400.0  # 2026-01-05T12:00:00Z


class NullScorer:
    """A detector suite that finds nothing: only rules speak."""

    def new_state(self):
        return 0

    def process(self, state, flat, ts, peers=None):
        return []

    def dumps(self, state):
        return b""

    def loads(self, data):
        return 0


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def login(ts: float, user: str, ip: str, outcome: str) -> tuple[str, dict]:
    return "access", {"@timestamp": iso(ts), "user.name": user, "source.ip": ip, "event.action": "login",
                      "event.outcome": outcome}


def llm(ts: float, key: str, tokens: int) -> tuple[str, dict]:
    return "api", {"@timestamp": iso(ts), "ueba.api_key.id": key, "gen_ai.usage.input_tokens": tokens}


def telemetry(ts: float, model: str, h: str, deploy: bool = False) -> tuple[str, dict]:
    doc = {"@timestamp": iso(ts), "ueba.model.id": model, "ueba.model.artifact_hash": h}
    if deploy:
        doc["event.action"] = "model-deploy"
    return "telemetry", doc


def attack_mix(seed: int = 5, n: int = 1500) -> list[tuple[str, dict]]:
    """Benign noise with brute force, spraying, token bursts and artifact swaps."""
    rng = random.Random(seed)
    users = [f"user{i}" for i in range(25)]
    ips = [f"203.0.113.{i}" for i in range(1, 8)]
    out = []
    for i in range(n):
        ts = T0 + i * 2.0
        r = rng.random()
        if r < 0.45:
            u = rng.choice(users[:3]) if rng.random() < 0.5 else rng.choice(users)
            out.append(login(ts, u, rng.choice(ips[:3]) if rng.random() < 0.6 else rng.choice(ips),
                             "failure" if rng.random() < 0.7 else "success"))
        elif r < 0.8:
            out.append(llm(ts, f"key-{rng.randrange(4)}", rng.choice([10, 200, 90_000, 150_000])))
        else:
            m = f"model-{rng.randrange(3)}"
            out.append(telemetry(ts, m, f"sha256:{rng.choice('aab')}", deploy=rng.random() < 0.05))
    return out


def _owner(key: str, workers: int) -> int:
    return zlib.crc32(key.encode()) % workers


class Worker:
    """One worker's processors (three input streams and the by-source stream), its
    own rule runner and its own tables, as app.py builds them."""

    def __init__(self, paths: list[Path], cache_keys: int = 0):
        self.runner = RuleRunner(paths)
        self.procs = {k: InputProcessor(k, NullScorer(), rules=self.runner, cache_keys=cache_keys, dedupe=k == "source")
                      for k in ("access", "api", "telemetry", "source")}
        self.tables: dict[str, dict[bytes, bytes]] = {k: {} for k in self.procs}

    def flush(self) -> None:
        for k, p in self.procs.items():
            p.flush(lambda key, raw, _tag, t=self.tables[k]: t.__setitem__(key, raw))


def run_stream(events: list[tuple[str, dict]], workers: list[Worker]) -> dict[str, tuple]:
    """Feed the events as the Kafka topics would: each keyed record to the worker
    owning its key; logins re-keyed by source.ip to the owner of that key."""
    out: dict[str, tuple] = {}
    n = len(workers)
    offset = {"access": 0, "api": 0, "telemetry": 0, "source": 0}
    for kind, doc in events:
        ev = parse_event(kind, doc)
        offset[kind] += 1
        w = workers[_owner(ev.identity, n)]
        res = w.procs[kind].process(w.tables[kind], ev, offset[kind])
        alerts = list(res.alerts)
        sv = source_view(ev) if kind == "access" else None
        if sv is not None:
            offset["source"] += 1
            ws = workers[_owner(sv.identity, n)]
            alerts += ws.procs["source"].process(ws.tables["source"], sv, offset["source"]).alerts
        for a in alerts:
            out[a.id] = (a.rule_id, a.entity_type, a.entity, a.ts, a.explanation["reason"])
    return out


@pytest.fixture(scope="module")
def pack_paths(tmp_path_factory) -> list[Path]:
    # the pack, plus a tumbling-window correlation (judged when the key's next event comes)
    d = tmp_path_factory.mktemp("extra")
    few = {"title": "Few logins in ten minutes", "id": rule_doc("few logins", {})["id"], "level": "low",
           "correlation": {"type": "event_count", "rules": ["ueba_login_success"], "group-by": ["user.name"],
                           "timespan": "10m", "condition": {"lte": 1}, "generate": True}}
    write_rules(d / "extra.yml", [few])
    return [PACK, d]


# --- the multi-worker property -------------------------------------------------------


def test_two_workers_splitting_the_keys_give_the_alerts_of_one(pack_paths):
    events = attack_mix()
    one = run_stream(events, [Worker(pack_paths)])
    two = run_stream(events, [Worker(pack_paths), Worker(pack_paths)])
    assert two == one
    rules_fired = {v[0] for v in one.values()}
    runner = RuleRunner(pack_paths)
    by_title = {r.meta.id: r.meta.title for r in [*runner.ruleset.detections, *runner.ruleset.correlations]}
    fired = {by_title[r] for r in rules_fired}
    # every kind of partition took part: identity (access, api, telemetry), source.ip, tumbling windows
    assert {"Many Failed Logins for One User", "Successful Login After a Brute-Force Burst",
            "Password Spraying From One Source Address", "LLM Token Usage Burst on One API Key (Cost Harvesting)",
            "Model Artifact Hash Changed Without a Deployment", "Few logins in ten minutes"} <= fired, fired
    spray = [v for v in one.values() if by_title[v[0]].startswith("Password Spraying")]
    assert spray and all(v[1] == "source_ip" for v in spray)


def test_replay_uses_the_same_partitioned_path(pack_paths, tmp_path):
    import orjson

    from streams.replay import Replayer

    events = attack_mix(seed=9, n=800)
    path = tmp_path / "events.jsonl"
    datasets = {"access": "ueba.access", "api": "ueba.api", "telemetry": "ueba.telemetry"}
    path.write_bytes(b"".join(orjson.dumps({**doc, "event.dataset": datasets[k]}) + b"\n" for k, doc in events))
    rp = Replayer(lambda kind: NullScorer(), rules=RuleRunner(pack_paths), by_source=True, min_score=0)
    candidates: dict[str, tuple] = {}
    decide = rp.alert_processor.process

    def record(store, cand, *a, **kw):
        candidates[cand.id] = (cand.rule_id, cand.entity_type, cand.entity, cand.ts, cand.explanation["reason"])
        return decide(store, cand, *a, **kw)

    rp.alert_processor.process = record
    rp.run([path])
    stream = run_stream([(k, {**doc, "event.dataset": datasets[k]}) for k, doc in events],
                        [Worker(pack_paths), Worker(pack_paths)])
    assert candidates == stream and rp.stats.candidates == len(stream)
    assert any(c[1] == "source_ip" for c in candidates.values())


# --- idempotence ----------------------------------------------------------------------


def test_a_redelivered_event_never_counts_twice(pack_paths):
    w = Worker(pack_paths)
    store = w.tables["access"]
    proc = w.procs["access"]
    evs = [parse_event(*login(T0 + i, "alice", "198.51.100.1", "failure")) for i in range(10)]
    for i, ev in enumerate(evs[:9]):
        assert proc.process(store, ev, i).alerts == []
    before = dict(store)
    # the ninth failure again at its own offset, and an older one: skipped, state untouched
    assert proc.process(store, evs[8], 8).redelivered
    assert proc.process(store, evs[3], 3).redelivered
    assert store == before
    # the tenth fires exactly at the tenth distinct event
    fired = proc.process(store, evs[9], 9).alerts
    assert [a.rule_name for a in fired] == ["Many Failed Logins for One User"]


def test_the_by_source_stream_drops_repeats_at_new_offsets(pack_paths):
    # a redelivered access batch forwards its logins to the by-source topic again, at new offsets
    w = Worker(pack_paths)
    proc, store = w.procs["source"], w.tables["source"]
    evs = [source_view(parse_event(*login(T0 + i, f"u{i}", "192.0.2.7", "failure"))) for i in range(10)]
    got = []
    for i, ev in enumerate(evs[:9]):
        got += proc.process(store, ev, i).alerts
    for i, ev in enumerate(evs[:9]):  # the same nine again, at new offsets
        assert proc.process(store, ev, 100 + i).redelivered
    got += proc.process(store, evs[9], 200).alerts
    assert [a.rule_name for a in got] == ["Password Spraying From One Source Address"]


def test_a_crash_between_batches_loses_no_alert_and_repeats_none(pack_paths):
    """State is flushed (and offsets committed) per batch; a crash loses the
    unflushed batch, which is redelivered onto the last flushed state."""
    events = [(k, parse_event(k, d)) for k, d in attack_mix(seed=3, n=900)]
    batch = 50

    def run(crash_at: int | None) -> dict[str, str]:
        tables: dict[str, dict[bytes, bytes]] = {k: {} for k in ("access", "api", "telemetry", "source")}
        seen: dict[str, str] = {}
        committed = 0
        while committed < len(events):
            w = Worker(pack_paths, cache_keys=1000)  # a (re)started worker: new runner, empty caches
            w.tables = tables
            pos = committed
            while pos < len(events):
                kind, ev = events[pos]
                for a in w.procs[kind].process(tables[kind], ev, pos).alerts:
                    seen.setdefault(a.id, a.rule_id)
                sv = source_view(ev) if kind == "access" else None
                if sv is not None:
                    for a in w.procs["source"].process(tables["source"], sv, pos).alerts:
                        seen.setdefault(a.id, a.rule_id)
                if pos == crash_at:
                    crash_at = None
                    break  # kill -9: nothing of this batch was flushed or committed
                pos += 1
                if pos % batch == 0 or pos == len(events):
                    w.flush()  # the batch's state, then its offsets
                    committed = pos
        return seen

    clean = run(None)
    assert run(crash_at=437) == clean
    assert len(clean) > 5


# --- per-key state --------------------------------------------------------------------


def _corr(title: str, **c) -> dict:
    return {"title": title, "id": rule_doc(title, {})["id"], "level": "high", "correlation": c}


def _base(name: str, action: str) -> dict:
    return rule_doc(name, {"sel": {"event.action": action}, "condition": "sel"}, name=name,
                    logsource={"product": "ai-ueba", "service": "access"})


@pytest.fixture
def typed_rules(tmp_path) -> RuleSet:
    gb = {"group-by": ["user.name"]}
    docs = [
        _base("rule_a", "a"), _base("rule_b", "b"),
        _corr("count", type="event_count", rules=["rule_a"], timespan="5m", condition={"gte": 3}, **gb),
        _corr("distinct", type="value_count", rules=["rule_a"], timespan="5m", condition={"gte": 3, "field": "source.ip"}, **gb),
        _corr("sum", type="value_sum", rules=["rule_b"], timespan="5m", condition={"gt": 100, "field": "n"}, **gb),
        _corr("avg", type="value_avg", rules=["rule_b"], timespan="5m", condition={"gte": 60, "field": "n"}, **gb),
        _corr("any order", type="temporal", rules=["rule_a", "rule_b"], timespan="5m", **gb),
        _corr("in order", type="temporal_ordered", rules=["rule_b", "rule_a"], timespan="5m", **gb),
        _corr("quiet", type="event_count", rules=["rule_b"], timespan="2m", condition={"lt": 2}, **gb),
    ]
    write_rules(tmp_path / "r.yml", docs)
    return RuleSet.load([tmp_path])


def _typed_events(seed: int = 1, n: int = 400) -> list[tuple[float, dict]]:
    rng = random.Random(seed)
    out = []
    ts = T0
    for _ in range(n):
        ts += rng.choice([1, 5, 30, 90])
        out.append((ts, {"event.action": rng.choice("ab"), "user.name": "alice",
                         "source.ip": f"10.0.0.{rng.randrange(5)}", "n": rng.choice([10, 40, 70, "80", "x"])}))
    return out


def test_key_state_round_trips_through_bytes_losslessly(typed_rules):
    eng = CorrelationEngine(typed_rules, max_groups=KEY_MAX_GROUPS, max_events=4, max_values=8)
    events = _typed_events()
    kept = eng.new_state()
    reloaded = b""
    got_kept, got_bytes = [], []
    for ts, flat in events:
        hits = typed_rules.match("access", flat, ts)
        got_kept.append([(h.title, h.extra.get("observed")) for h in eng.process("access", flat, ts, hits, kept)])
        st = eng.loads(reloaded)
        got_bytes.append([(h.title, h.extra.get("observed")) for h in eng.process("access", flat, ts, hits, st)])
        reloaded = eng.dumps(st)
        assert eng.dumps(eng.loads(reloaded)) == reloaded
    assert got_bytes == got_kept
    fired = {t for hs in got_kept for t, _ in hs}
    assert fired == {"count", "distinct", "sum", "avg", "any order", "in order", "quiet"}


def test_tumbling_windows_close_on_the_keys_next_event(typed_rules):
    eng = CorrelationEngine(typed_rules)
    st = eng.new_state()
    b = {"event.action": "b", "user.name": "alice", "n": 1}
    assert [h.title for h in eng.process("access", b, T0, typed_rules.match("access", b, T0), st)] == []
    assert st.due == T0 + 120
    other = {"event.action": "zzz", "user.name": "alice"}  # any later event of the key, no rule hit
    got = eng.process("access", other, T0 + 121, [], st)
    assert [(h.title, h.extra["observed"], h.ts) for h in got] == [("quiet", 1.0, T0 + 120)]
    assert st.due == float("inf")


def test_state_is_bounded_per_key(tmp_path):
    docs = [
        _base("rule_a", "a"),
        _corr("count", type="event_count", rules=["rule_a"], timespan="1h", condition={"gte": 10**9},
              **{"group-by": ["user.name", "source.ip"]}),
        _corr("distinct", type="value_count", rules=["rule_a"], timespan="1h",
              condition={"lt": 10**4, "field": "url.path"}, **{"group-by": ["user.name"]}),
        _corr("sum", type="value_sum", rules=["rule_a"], timespan="1h", condition={"gt": 10**12, "field": "n"},
              **{"group-by": ["user.name"]}),
    ]
    write_rules(tmp_path / "r.yml", docs)
    rs = RuleSet.load([tmp_path])
    runner = RuleRunner([tmp_path])
    eng = runner._plan.engines["access"]
    st = eng.new_state()
    for i in range(20_000):
        flat = {"event.action": "a", "user.name": "mallory", "source.ip": f"10.{i % 250}.{i // 250}.1",
                "url.path": f"/p/{i}", "n": 1}
        eng.process("access", flat, T0 + i * 0.1, rs.match("access", flat, T0 + i * 0.1), st)
    slots = {eng._slots[c.meta.id]: c.meta.title for c in rs.correlations}
    by_title = {slots[s]: g for s, g in st.groups.items()}
    assert len(by_title["count"]) == KEY_MAX_GROUPS
    (dist,) = by_title["distinct"].values()
    assert len(dist.vals) == 10**4 + 1  # enough to decide "lt 10000" when the window closes, no more
    (s,) = by_title["sum"].values()
    assert len(s.ev) <= 2 * eng.max_events and s.n == 20_000 and s.acc == 20_000.0  # busy: merged, still exact
    assert len(eng.dumps(st)) < 2_000_000


def test_value_count_distinct_values_are_capped_but_the_threshold_can_still_be_decided(tmp_path):
    docs = [_base("rule_a", "a"),
            _corr("spray", type="value_count", rules=["rule_a"], timespan="1h", condition={"gte": 1000, "field": "url.path"},
                  **{"group-by": ["user.name"]})]
    write_rules(tmp_path / "r.yml", docs)
    rs = RuleSet.load([tmp_path])
    eng = CorrelationEngine(rs, max_values=16)
    st = KeyState()
    fired = []
    for i in range(1500):
        flat = {"event.action": "a", "user.name": "m", "url.path": f"/{i}"}
        fired += [i for _ in eng.process("access", flat, T0 + i, rs.match("access", flat, T0 + i), st)]
    (g,) = next(iter(st.groups.values())).values()
    assert fired == [999] and len(g.vals) <= 1001


def test_stateful_known_values_are_bounded(tmp_path):
    runner = RuleRunner([PACK])
    eng = runner._plan.engines["telemetry"]
    st = eng.new_state()
    rs = runner.ruleset
    n_alerts = 0
    for i in range(500):
        flat = {"ueba.model.id": "m", "ueba.model.artifact_hash": f"sha256:{i}"}
        n_alerts += len(eng.process("telemetry", flat, T0 + i, rs.match("telemetry", flat, T0 + i), st))
    (g,) = next(iter(st.groups.values())).values()
    assert len(g.vals) == STATEFUL_MAX_VALUES and n_alerts == 499  # the first hash is the baseline


def test_unreadable_state_starts_over_instead_of_failing_every_event(typed_rules):
    eng = CorrelationEngine(typed_rules)
    assert eng.loads(b"\xc1garbage").group_count() == 0
    slot = next(iter(eng._slots.values()))
    assert eng.loads(msgspec.msgpack.encode([2, None, [[slot, "not groups"]]])).group_count() == 0
    assert eng.loads(msgspec.msgpack.encode([2, None, [[slot, [[["k"], [1, 2]]]]]])).group_count() == 0


# --- hot reload -------------------------------------------------------------------------


def test_reload_keeps_unchanged_state_drops_removed_and_changed_and_starts_new_empty(tmp_path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    keep = _corr("keep", type="event_count", rules=["rule_a"], timespan="1h", condition={"gte": 4}, **{"group-by": ["user.name"]})
    gone = _corr("gone", type="event_count", rules=["rule_a"], timespan="1h", condition={"gte": 50}, **{"group-by": ["user.name"]})
    change = _corr("change", type="event_count", rules=["rule_a"], timespan="1h", condition={"gte": 5}, **{"group-by": ["user.name"]})
    write_rules(rules_dir / "r.yml", [_base("rule_a", "a"), keep, gone, change])
    clock = [0.0]
    runner = RuleRunner([rules_dir], reload_seconds=1, clock=lambda: clock[0])
    proc = InputProcessor("access", NullScorer(), rules=runner)
    store: dict[bytes, bytes] = {}

    def a(i: int) -> list[str]:
        doc = {"@timestamp": iso(T0 + i), "user.name": "alice", "event.action": "a"}
        return [x.rule_name for x in proc.process(store, parse_event("access", doc), i).alerts]

    assert a(0) == a(1) == a(2) == []
    eng = runner._plan.engines["access"]
    before = eng.loads(msgspec.msgpack.decode(store[b"alice"])[4])
    assert before.group_count() == 3

    new = _corr("new", type="event_count", rules=["rule_a"], timespan="1h", condition={"gte": 2}, **{"group-by": ["user.name"]})
    change["correlation"]["condition"] = {"gte": 2}
    write_rules(rules_dir / "r.yml", [_base("rule_a", "a"), keep, change, new])
    clock[0] = 5.0
    assert runner.maybe_reload()
    # "keep" continues its count (4th event fires); "change" and "new" start empty (2nd event from now)
    assert a(3) == ["keep"]
    assert sorted(a(4)) == ["change", "new"]
    eng2 = runner._plan.engines["access"]
    raw = msgspec.msgpack.decode(store[b"alice"])[4]
    slots = {s for s, _ in msgspec.msgpack.decode(raw)[2]}
    assert slots == {eng2._slots[c.meta.id] for c in runner.ruleset.correlations}
    assert eng._slots[runner.ruleset.correlations[0].meta.id] in slots  # "keep": same slot before and after


def test_a_bad_reload_keeps_the_last_good_set_and_its_state(tmp_path):
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    write_rules(rules_dir / "r.yml", [_base("rule_a", "a"), _corr("c", type="event_count", rules=["rule_a"], timespan="1h",
                                                                  condition={"gte": 3}, **{"group-by": ["user.name"]})])
    clock = [0.0]
    runner = RuleRunner([rules_dir], reload_seconds=1, clock=lambda: clock[0])
    proc = InputProcessor("access", NullScorer(), rules=runner)
    store: dict[bytes, bytes] = {}
    doc = lambda i: parse_event("access", {"@timestamp": iso(T0 + i), "user.name": "bob", "event.action": "a"})  # noqa: E731
    proc.process(store, doc(0), 0)
    proc.process(store, doc(1), 1)
    (rules_dir / "broken.yml").write_text("title: x\ndetection: {sel: {a|nope: 1}, condition: sel}\nlevel: low\n"
                                          "logsource: {product: ai-ueba}\n")
    clock[0] = 5.0
    assert not runner.maybe_reload()
    assert [a.rule_name for a in proc.process(store, doc(2), 2).alerts] == ["c"]


# --- placement ------------------------------------------------------------------------------


def test_placement_by_grouping(tmp_path):
    login_rule = rule_doc("login_fail", {"sel": {"event.action": ["login", "sign-in"], "event.outcome": "failure"},
                                         "condition": "sel"}, name="login_fail",
                          logsource={"product": "ai-ueba", "service": "access"})
    read_rule = _base("read_rule", "read")
    any_stream = rule_doc("any_stream", {"sel": {"event.action": "x"}, "condition": "sel"}, name="any_stream")
    docs = [
        login_rule, read_rule, any_stream,
        _corr("by user", type="event_count", rules=["login_fail"], timespan="5m", condition={"gte": 2}, **{"group-by": ["user.name"]}),
        _corr("by user and ip", type="event_count", rules=["login_fail"], timespan="5m", condition={"gte": 2},
              **{"group-by": ["user.name", "source.ip"]}),
        _corr("by ip", type="value_count", rules=["login_fail"], timespan="5m", condition={"gte": 2, "field": "user.name"},
              **{"group-by": ["source.ip"]}),
        _corr("reads by ip", type="event_count", rules=["read_rule"], timespan="5m", condition={"gte": 2}, **{"group-by": ["source.ip"]}),
        _corr("by tenant", type="event_count", rules=["login_fail"], timespan="5m", condition={"gte": 2}, **{"group-by": ["organization.id"]}),
        _corr("every stream", type="event_count", rules=["any_stream"], timespan="5m", condition={"gte": 2}, **{"group-by": ["user.name"]}),
        _corr("aliased", type="temporal", rules=["login_fail", "read_rule"], timespan="5m",
              **{"group-by": ["who"]}, aliases={"who": {"login_fail": "user.name", "read_rule": "user.name"}}),
    ]
    write_rules(tmp_path / "r.yml", docs)
    rs = RuleSet.load([tmp_path])
    pl = place(rs)
    where = {rs.by_id[rid].meta.title: p for rid, p in pl.where.items()}
    assert where == {"by user": "access", "by user and ip": "access", "by ip": "source", "reads by ip": "source",
                     "by tenant": LOCAL, "every stream": LOCAL, "aliased": "access"}
    msgs = {rs.by_id[i.rule_id].meta.title: i.message for i in pl.issues}
    assert set(msgs) == {"reads by ip", "by tenant", "every stream"}
    assert "only sees some access events" in msgs["reads by ip"] and "read_rule" in msgs["reads by ip"]
    assert "process-local" in msgs["by tenant"]
    assert all(i.severity == "warning" for i in pl.issues)


def test_process_local_correlations_still_work_and_close_their_windows(tmp_path):
    docs = [_base("rule_a", "a"),
            _corr("tenant burst", type="event_count", rules=["rule_a"], timespan="5m", condition={"gte": 3},
                  **{"group-by": ["organization.id"]}),
            _corr("tenant quiet", type="event_count", rules=["rule_a"], timespan="1m", condition={"lt": 2},
                  **{"group-by": ["organization.id"]})]
    write_rules(tmp_path / "r.yml", docs)
    runner = RuleRunner([tmp_path])
    assert set(runner.placement().values()) == {LOCAL}
    proc = InputProcessor("access", NullScorer(), rules=runner)
    store: dict[bytes, bytes] = {}
    got = []
    events = [("a", "org-1"), ("b", "org-1"), ("c", "org-1"), ("d", "org-2")]
    for i, (user, org) in enumerate(events):  # three users of one tenant: three keys, one process-local group
        doc = {"@timestamp": iso(T0 + i), "user.name": user, "event.action": "a", "organization.id": org}
        got += [x.rule_name for x in proc.process(store, parse_event("access", doc), i).alerts]
    assert got == ["tenant burst"]
    assert all(not msgspec.msgpack.decode(v)[4] for v in store.values())  # nothing in the keys' envelopes
    closed = runner.engine.advance(T0 + 3600)  # org-1 had 3 events in its minute, org-2 one
    assert [(h.title, h.group_key) for h in closed] == [("tenant quiet", ("org-2",))]
