"""Stateful Sigma correlations, evaluated in the stream on event time.

Time is always the event's ``ts``; nothing reads the wall clock, so replaying
a stream gives the same hits.

Semantics per type (``op``/``threshold`` from the rule's ``condition``):

``event_count``       number of hits of the referenced rules in the group.
``value_count``       distinct values of ``condition.field`` among those hits.
``value_sum``/``avg`` sum / mean of the numeric ``condition.field``.
``temporal``          number of *distinct* referenced rules that hit (any order).
``temporal_ordered``  the referenced rules hit in the listed order.

``gt``/``gte`` conditions use a sliding window of ``timespan`` ending at the
current event and fire as soon as they hold; the group's state is then reset,
so one burst gives one hit (the next needs a fresh threshold crossing).
``lt``/``lte``/``eq``/``neq`` can only be judged when a window is complete:
they use tumbling windows per group, starting at the group's first hit, and are
evaluated when a later event of the same partition key (per-key state) or a
later hit of the group falls past the window end, or when
:meth:`CorrelationEngine.advance` is called with a watermark (process-local
state).

A group-by field missing from an event: the event is not counted for that
rule (it cannot be attributed). Events older than the window of their group
(late arrivals beyond ``timespan``) are ignored.

``x_ueba_stateful: {type: unannounced_value}`` detection rules are evaluated
here too: a value (e.g. a model artifact hash) observed for a group (a model)
that was not announced by one of the ``announced-by`` rules (e.g. a
``model-deploy`` event) within ``timespan`` fires once per new value. With
``warmup: first_seen`` (default) the first value seen for a group with no
announcement is accepted as the baseline instead of firing.

Where the state lives: partitions
---------------------------------
The stream is partitioned: each input stream is keyed by its identity
(``user.name`` on access, ``ueba.api_key.id`` on api, ``ueba.model.id`` on
telemetry) and login events are re-keyed by ``source.ip`` (the "source"
stream). :func:`place` assigns every correlation (and stateful rule) to the
first :class:`Partition` that sees all of its input: every rule it references
runs only on that partition's input stream (a referenced correlation is in the
same partition), and its group-by contains the partition's key field (for
each referenced rule, after aliases). All events of one group then share one
partition key, so the correlation's state is kept *inside that key's state*
(:class:`KeyState`, stored in the key's envelope in the worker's
changelog-backed table): it survives restarts and rebalances, is exact with
any number of workers, and a redelivered event (skipped by the envelope's
offset check) never counts twice. A correlation no partition covers (grouped
by a field no stream is keyed by, such as ``organization.id``, or without
group-by, or over rules of several streams) runs in a process-local engine:
bounded, not restored after a restart, and with several workers each worker
sees only the partitions it owns. :func:`place` reports it as a warning.

Bounds (state is attacker-controlled):

* groups per rule: ``max_groups`` (least recently updated dropped first);
  per key that is 64 by default (:data:`KEY_MAX_GROUPS`): more than one group
  per key happens only when the group-by has fields besides the key;
* events kept per group: ``max_events`` exact events; past that, events less
  than ``timespan / max_events`` apart share one entry, which expires with its
  newest event (the window edge is then exact to that resolution and errs
  towards counting), so an entry list never exceeds ``2 * max_events``;
* distinct values per group (``value_count``, stateful rules):
  ``max_values``, at least the threshold + 1 (so the condition can still be
  decided), oldest dropped first for stateful rules.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import msgspec
import orjson

from .compiler import TS_KEY
from .errors import RuleIssue
from .ruleset import _OPS, CorrelationRule, DetectionRule, MatchedField, RuleHit, RuleSet

STATE_VERSION = 2
_MAX_VALUES = 10_000  # distinct values kept per group (value_count), process-local
#: per-key state bounds (see the module docstring)
KEY_MAX_GROUPS = 64
KEY_MAX_EVENTS = 128
KEY_MAX_VALUES = 256
STATEFUL_MAX_VALUES = 64  # known values per group of an unannounced_value rule
LOCAL = "local"
_INF = math.inf

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder()


def _key_part(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_key_part(x) for x in v)
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v[:512] if isinstance(v, str) else v
    return str(v)[:512]


# --- partitions and placement ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Partition:
    """One keyed view of the input: events of stream ``kind`` keyed by ``key``.

    ``accepts``: the partition only sees events for which it returns True
    (None: all events of ``kind``); used to warn about correlations that would
    miss hits.
    """

    name: str
    kind: str
    key: str
    accepts: Callable[[dict[str, Any]], bool] | None = None
    description: str = ""


def default_partitions() -> tuple[Partition, ...]:
    """The worker's layout: the three input streams by identity, logins by source.ip."""
    try:
        from detectors.credential import is_login
    except ImportError:  # pragma: no cover - the detector library ships with the package
        is_login = None
    return (
        Partition("access", "access", "user.name", description="access events keyed by user.name"),
        Partition("api", "api", "ueba.api_key.id", description="api events keyed by ueba.api_key.id"),
        Partition("telemetry", "telemetry", "ueba.model.id", description="telemetry keyed by ueba.model.id"),
        Partition("source", "access", "source.ip", accepts=is_login, description="login events re-keyed by source.ip"),
    )


@dataclass(slots=True)
class Placement:
    """Where each correlation (and stateful rule) keeps its state.

    ``where``: rule id -> partition name, or :data:`LOCAL`.
    ``issues``: warnings (process-local correlations, partitions missing hits).
    """

    where: dict[str, str]
    issues: list[RuleIssue]

    def ids(self, partition: str) -> list[str]:
        return [rid for rid, p in self.where.items() if p == partition]


def _fields_for(c: CorrelationRule, rid: str) -> tuple[str, ...]:
    return tuple(c.aliases.get(g, {}).get(rid, g) for g in c.group_by)


def _within(rule: DetectionRule, accepts: Callable[[dict[str, Any]], bool]) -> bool:
    """True when the rule provably matches only events ``accepts`` lets through
    (its prefilter pins ``event.action`` to accepted values)."""
    pre = rule.condition.pre
    if not pre:
        return False
    for fld, kind, values in pre:
        if kind == "eq" and fld == "event.action":
            acts = values
        elif kind == "eq2" and "event.action" in fld:
            i = fld.index("event.action")
            acts = {pair[i] for pair in values}
        else:
            return False
        if not acts or not all(accepts({"event.action": a}) for a in acts):
            return False
    return True


def place(ruleset: RuleSet, partitions: Iterable[Partition] | None = None) -> Placement:
    """Assign each correlation and stateful rule of ``ruleset`` to a partition (see module doc)."""
    parts = tuple(partitions) if partitions is not None else default_partitions()
    where: dict[str, str] = {}
    issues: list[RuleIssue] = []
    det = {r.meta.id: r for r in ruleset.detections}

    def covers(p: Partition, inputs: list[tuple[str, tuple[str, ...]]]) -> bool:
        for rid, fields in inputs:
            if p.key not in fields:
                return False
            r = det.get(rid)
            if r is not None:
                if r.kinds != frozenset((p.kind,)):
                    return False
            elif where.get(rid) != p.name:
                return False
        return True

    def choose(meta: Any, inputs: list[tuple[str, tuple[str, ...]]], grouped: tuple[str, ...]) -> None:
        for p in parts:
            if inputs and covers(p, inputs):
                where[meta.id] = p.name
                if p.accepts is not None:
                    loose = [rid for rid, _ in inputs if rid in det and not _within(det[rid], p.accepts)]
                    if loose:
                        names = ", ".join(det[r].meta.name or det[r].meta.title for r in loose)
                        issues.append(RuleIssue(meta.file, meta.line, (
                            f"correlation runs on the {p.description or p.name} partition, which only sees some "
                            f"{p.kind} events; hits of {names} on other events are not counted"), "warning", meta.id))
                return
        where[meta.id] = LOCAL
        by = ", ".join(grouped) or "nothing"
        issues.append(RuleIssue(meta.file, meta.line, (
            f"correlation grouped by {by} over its rules' streams is not covered by any partition of the stream "
            f"({', '.join(f'{p.name}: {p.key}' for p in parts)}): its state is process-local to each worker "
            "(bounded, empty after a restart, and with several workers each sees only its own partitions)"),
            "warning", meta.id))

    for c in ruleset.correlations:  # dependency order: referenced correlations first
        choose(c.meta, [(rid, _fields_for(c, rid)) for rid in c.rules], c.group_by)
    for r in ruleset.detections:
        s = r.stateful
        if s is not None:
            ids = [r.meta.id, *[a for a in s.announced_by if a != r.meta.id]]
            choose(r.meta, [(rid, tuple(s.group_by)) for rid in ids], tuple(s.group_by))
    return Placement(where, issues)


# --- state ---------------------------------------------------------------------------


class _Group:
    """State of one group of one correlation. Plain values so it serialises losslessly.

    ``ev``: entries ``[first_ts, last_ts, events, value_sum]`` (event_count,
    value_sum, value_avg); ``n``/``acc`` their totals.
    ``vals``: value -> last ts (value_count, stateful), rule index -> ts (temporal).
    ``seen``: temporal_ordered chain starts per step.
    """

    __slots__ = ("last", "start", "ev", "n", "acc", "vals", "seen", "fired", "lo")

    def __init__(self) -> None:
        self.last = -_INF  # latest event time seen
        self.lo = _INF  # a lower bound of the times in vals (not stored: recomputed on load)
        self.start: float | None = None  # tumbling window start
        self.ev: deque = deque()
        self.n = 0
        self.acc = 0.0
        self.vals: dict[Any, float] = {}
        self.seen: list[float | None] = []
        self.fired = 0

    def to_obj(self) -> list[Any]:
        flat_ev: list[Any] = []
        for e in self.ev:
            flat_ev.extend(e)
        flat_vals: list[Any] = []
        for k, v in self.vals.items():
            flat_vals.append(k)
            flat_vals.append(v)
        return [self.last, self.start, flat_ev, flat_vals, self.seen, self.fired, self.acc, self.n]

    @classmethod
    def from_obj(cls, o: list[Any]) -> "_Group":
        g = cls()
        g.last, g.start = o[0], o[1]
        fe = o[2]
        g.ev = deque([fe[i], fe[i + 1], fe[i + 2], fe[i + 3]] for i in range(0, len(fe), 4))
        fv = o[3]
        g.vals = {_key_part(fv[i]): fv[i + 1] for i in range(0, len(fv), 2)}
        g.lo = min(g.vals.values()) if g.vals else _INF
        g.seen = list(o[4])
        g.fired = o[5]
        g.acc = o[6]
        g.n = o[7]
        return g


class KeyState:
    """The correlation state of one partition key: what the key's envelope stores.

    ``groups``: rule slot (a hash of the rule id and its semantics) -> group
    key -> group; ``due``: the earliest end of an open tumbling window.
    """

    __slots__ = ("groups", "due")

    def __init__(self) -> None:
        self.groups: dict[int, dict[tuple, _Group]] = {}
        self.due = _INF

    def group_count(self) -> int:
        return sum(len(g) for g in self.groups.values())


def _expire_vals(g: _Group, cut: float) -> None:
    """Drop the values last seen before ``cut``; ``g.lo`` becomes exact again."""
    vals = g.vals
    for k in [k for k, v in vals.items() if v < cut]:
        del vals[k]
    g.lo = min(vals.values()) if vals else _INF


def _slot(rid: str, sig: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{rid}|{sig}".encode(), digest_size=6).digest(), "big")


class CorrelationEngine:
    """Correlation and stateful-rule evaluation over the hits of :meth:`RuleSet.match`.

    ``only``: evaluate just these correlation / stateful rule ids (one
    partition's share); default all of them.

    Process-local use: :meth:`process` without ``state`` keeps every group in
    the engine (``max_groups`` per rule, LRU). Per-key use: pass the key's
    :class:`KeyState` (:meth:`new_state`, :meth:`dumps`, :meth:`loads`);
    then the engine holds no state of its own and the bounds apply per key.
    """

    def __init__(
        self,
        ruleset: RuleSet,
        *,
        max_groups: int = 100_000,
        max_events: int = 10_000,
        max_values: int = _MAX_VALUES,
        only: Iterable[str] | None = None,
    ):
        self.ruleset = ruleset
        self.max_groups = max_groups
        self.max_events = max(1, max_events)
        self._sliding_counts: set[str] = set()  # gt/gte event_count, value_sum, value_avg: the fast path
        self.max_values = max_values
        keep = set(only) if only is not None else None
        self._corr: list[CorrelationRule] = [c for c in ruleset.correlations if keep is None or c.meta.id in keep]
        self._stateful: list[DetectionRule] = [
            r for r in ruleset.detections if r.stateful is not None and (keep is None or r.meta.id in keep)
        ]
        self._state: dict[str, OrderedDict[tuple, _Group]] = {c.meta.id: OrderedDict() for c in self._corr}
        for r in self._stateful:
            self._state[r.meta.id] = OrderedDict()
        self._slots: dict[str, int] = {rid: _slot(rid, self._sig(rid)) for rid in self._state}
        self._known_slots = frozenset(self._slots.values())
        self._by_slot = {s: rid for rid, s in self._slots.items()}
        # which correlations/stateful rules care about a given rule id
        self._listeners: dict[str, list[Any]] = {}
        self._fields: dict[tuple[str, str], tuple[str, ...]] = {}
        self._cap: dict[str, int] = {}
        for c in self._corr:
            for rid in c.rules:
                self._listeners.setdefault(rid, []).append(c)
                self._fields[(c.meta.id, rid)] = _fields_for(c, rid)
            if c.op in ("gt", "gte") and c.type in ("event_count", "value_sum", "value_avg"):
                self._sliding_counts.add(c.meta.id)
            self._cap[c.meta.id] = max(self.max_values, int(c.threshold) + 1) if c.type == "value_count" else 0
        for r in self._stateful:
            self._listeners.setdefault(r.meta.id, []).append(r)
            for rid in r.stateful.announced_by:  # type: ignore[union-attr]
                if rid != r.meta.id:
                    self._listeners.setdefault(rid, []).append(r)
        #: rule ids whose hits this engine consumes
        self.inputs = frozenset(self._listeners)
        #: correlations judged on complete (tumbling) windows
        self.tumbling = tuple(c for c in self._corr if c.op not in ("gt", "gte"))
        self._titles = {rid: r.meta.title for rid, r in ruleset.by_id.items()}
        self._n = 0

    @property
    def rule_ids(self) -> list[str]:
        return list(self._state)

    # -- the stream entry point --

    def process(
        self, kind: str, flat: dict[str, Any], ts: float, hits: Iterable[Any], state: KeyState | None = None
    ) -> list[RuleHit]:
        """Feed one event and its detection hits; returns correlation hits it completes.

        ``hits``: the :class:`RuleHit` list of :meth:`RuleSet.match` (plain rule
        ids are accepted too). ``state``: the event's partition key state, or
        None for the engine's own process-local state. Correlation hits are fed
        on to correlations that reference them (chains), in dependency order.
        """
        out: list[RuleHit] = []
        listeners = self._listeners
        queue = [h for h in hits if (h if type(h) is str else h.rule_id) in listeners]
        if state is not None and state.due <= ts:
            out.extend(self._close_due(state, ts, kind))
            queue.extend(h for h in out if h.rule_id in listeners)
        if not queue:
            return out
        i = 0
        while i < len(queue):
            h = queue[i]
            i += 1
            rid = h if type(h) is str else h.rule_id
            for target in listeners.get(rid, ()):
                if type(target) is CorrelationRule:
                    new = self._update(target, rid, h, flat, ts, kind, state)
                else:
                    new = self._update_stateful(target, rid, flat, ts, kind, state)
                if new is not None:
                    out.append(new)
                    queue.append(new)
        if state is None:
            self._n += 1
            if self._n % 1024 == 0:
                self._expire(ts)
        return out

    def advance(self, watermark: float) -> list[RuleHit]:
        """Close process-local tumbling windows ending before ``watermark`` (event time); returns their hits."""
        out: list[RuleHit] = []
        for c in self.tumbling:
            groups = self._state[c.meta.id]
            for key, g in list(groups.items()):
                if g.start is not None and watermark >= g.start + c.timespan:
                    h = self._close(c, key, g, watermark, "")
                    if h is not None:
                        out.append(h)
                    del groups[key]
        self._expire(watermark)
        return out

    # -- per-key state --

    @staticmethod
    def new_state() -> KeyState:
        return KeyState()

    def dumps(self, state: KeyState | None) -> bytes:
        """Compact bytes of one key's state (b"" when empty). Lossless for the
        engine's rules; groups of rules it does not know (changed or removed by
        a reload) are dropped."""
        if state is None:
            return b""
        rules = []
        for slot, groups in state.groups.items():
            if groups and slot in self._known_slots:
                rules.append([slot, [[list(k), g.to_obj()] for k, g in groups.items()]])
        if not rules:
            return b""
        return _enc.encode([STATE_VERSION, state.due if state.due != _INF else None, rules])

    def loads(self, data: bytes | None) -> KeyState:
        """A key's state from :meth:`dumps`; state of rules the engine does not
        know (removed, or changed semantics) is dropped, new rules start empty."""
        st = KeyState()
        if not data:
            return st
        try:
            obj = _dec.decode(data)
            if not isinstance(obj, list) or len(obj) != 3 or obj[0] != STATE_VERSION:
                return st
            known = self._known_slots
            for slot, groups in obj[2]:
                if slot in known:
                    st.groups[slot] = {tuple(_key_part(x) for x in k): _Group.from_obj(g) for k, g in groups}
        except (msgspec.DecodeError, ValueError, TypeError, IndexError, KeyError):
            return KeyState()  # unreadable: start over rather than fail every event of the key
        if obj[1] is not None and any(self._slots[c.meta.id] in st.groups for c in self.tumbling):
            st.due = obj[1]
        return st

    # -- process-local state --

    def to_bytes(self) -> bytes:
        """The whole process-local state (all rules, all groups)."""
        rules: dict[str, Any] = {}
        for rid, groups in self._state.items():
            rules[rid] = {"sig": self._sig(rid), "groups": [[list(k), g.to_obj()] for k, g in groups.items()]}
        return orjson.dumps({"v": STATE_VERSION, "rules": rules}, option=orjson.OPT_NON_STR_KEYS)

    @classmethod
    def from_bytes(cls, data: bytes, ruleset: RuleSet, **kw: Any) -> "CorrelationEngine":
        """Restore process-local state; groups of rules that changed or disappeared are dropped."""
        eng = cls(ruleset, **kw)
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return eng
        if not isinstance(obj, dict) or obj.get("v") != STATE_VERSION:
            return eng
        for rid, st in obj["rules"].items():
            if rid in eng._state and st.get("sig") == eng._sig(rid):
                groups = eng._state[rid]
                for k, g in st["groups"]:
                    groups[tuple(_key_part(x) for x in k)] = _Group.from_obj(g)
        return eng

    def group_count(self) -> int:
        return sum(len(g) for g in self._state.values())

    # -- internals --

    def _sig(self, rid: str) -> str:
        r = self.ruleset.by_id[rid]
        if isinstance(r, CorrelationRule):
            al = ";".join(f"{a}:{','.join(f'{k}={v}' for k, v in sorted(m.items()))}" for a, m in sorted(r.aliases.items()))
            return f"{r.type}|{','.join(r.rules)}|{','.join(r.group_by)}|{r.timespan}|{r.op}|{r.threshold}|{r.value_field}|{al}"
        s = r.stateful
        return f"{s.type}|{s.value}|{','.join(s.group_by)}|{','.join(s.announced_by)}|{s.timespan}|{s.warmup_first_seen}"  # type: ignore[union-attr]

    def _groups(self, rid: str, state: KeyState | None) -> dict[tuple, _Group]:
        if state is None:
            return self._state[rid]
        slot = self._slots[rid]
        groups = state.groups.get(slot)
        if groups is None:
            groups = state.groups[slot] = {}
        return groups

    def _group(self, rid: str, key: tuple, state: KeyState | None, span: float, now: float) -> _Group:
        groups = self._groups(rid, state)
        g = groups.get(key)
        if g is None:
            if state is not None and groups:
                # a new group in a key: first drop this rule's groups idle for longer than the window
                for k in [k for k, x in groups.items() if x.last < now - span and x.start is None]:
                    del groups[k]
            g = groups[key] = _Group()
            if len(groups) > (self.max_groups if state is None else min(self.max_groups, KEY_MAX_GROUPS)):
                del groups[next(iter(groups))]
        elif len(groups) > 1:
            if state is None:
                groups.move_to_end(key)  # type: ignore[attr-defined]
            else:
                groups[key] = groups.pop(key)
        return g

    def _expire(self, now: float) -> None:
        for c in self._corr:
            if c.op not in ("gt", "gte"):
                continue  # tumbling windows are closed by advance()
            groups = self._state[c.meta.id]
            span = c.timespan
            while groups:
                k, g = next(iter(groups.items()))
                if g.last < now - span:
                    del groups[k]
                else:
                    break

    def _key(self, c: CorrelationRule, rid: str, flat: dict, hit: Any) -> tuple | None:
        if type(hit) is not str and hit.rule_type != "detection" and hit.group_key is not None and hit.group_by == c.group_by:
            return hit.group_key  # chained correlation with the same grouping
        fields = self._fields[(c.meta.id, rid)]
        if len(fields) == 1:
            v = flat.get(fields[0])
            if v is None:
                return None
            return (v if type(v) is str and len(v) <= 512 else _key_part(v),)
        parts = []
        for fld in fields:
            v = flat.get(fld)
            if v is None:
                return None
            parts.append(_key_part(v))
        return tuple(parts)

    def _update(self, c: CorrelationRule, rid: str, hit: Any, flat: dict, ts: float, kind: str, state: KeyState | None) -> RuleHit | None:
        key = self._key(c, rid, flat, hit)
        if key is None:
            return None
        t = c.type
        value = None
        if c.value_field is not None:
            value = flat.get(c.value_field)
            if value is None:
                return None
            if t == "value_sum" or t == "value_avg":
                if type(value) is not int and type(value) is not float:
                    if isinstance(value, bool):
                        return None
                    try:
                        value = float(value)
                    except (TypeError, ValueError):
                        return None
                if value != value or value in (_INF, -_INF):
                    return None  # NaN/inf would poison the running sum
            else:
                value = _key_part(value)
        span = c.timespan
        cid = c.meta.id
        g = None
        if state is not None:
            groups = state.groups.get(self._slots[cid])
            if groups is not None:
                g = groups.get(key)
                if g is not None and len(groups) > 1:
                    groups[key] = groups.pop(key)  # most recently updated last
        if g is None:
            g = self._group(cid, key, state, span, ts)
        if ts < g.last - span:
            return None  # too late for any window of this group
        if ts > g.last:
            g.last = ts
        if cid in self._sliding_counts:
            # the common shape, inlined: add the event, drop what left the window, test
            s = value if value is not None else 0.0
            ev = g.ev
            last = ev[-1] if ev else None
            if last is not None and len(ev) >= self.max_events and 0 <= ts - last[0] < span / self.max_events:
                if ts > last[1]:
                    last[1] = ts  # busy group: share the newest entry
                last[2] += 1
                last[3] += s
            else:
                ev.append([ts, ts, 1, s])
            n = g.n + 1
            acc = g.acc + s
            cut = ts - span
            if ev[0][1] < cut:
                while ev[0][1] < cut:
                    e = ev.popleft()
                    n -= e[2]
                    acc -= e[3]
            g.n = n
            g.acc = acc
            t = c.type
            measure = float(n) if t == "event_count" else acc if t == "value_sum" else acc / n
            if measure > c.threshold if c.op == "gt" else measure >= c.threshold:
                g.fired += 1
                out = self._hit(c, key, g, ts, kind, measure)
                self._reset(g)
                return out
            return None
        sliding = c.op == "gt" or c.op == "gte"
        out: RuleHit | None = None
        if not sliding:
            if g.start is None:
                g.start = ts
                if state is not None and ts + span < state.due:
                    state.due = ts + span
            elif ts >= g.start + span:
                out = self._close(c, key, g, ts, kind)
                self._reset(g)
                g.start = ts
                g.last = ts
                if state is not None:
                    self._recompute_due(state)
        self._add(c, g, rid, ts, value)
        if sliding:
            self._evict(c, g, ts)
            measure = self._measure(c, g)
            if measure is not None and _OPS[c.op](measure, c.threshold):
                out = self._hit(c, key, g, ts, kind, measure)
                g.fired += 1
                self._reset(g)
        return out

    def _add(self, c: CorrelationRule, g: _Group, rid: str, ts: float, value: Any) -> None:
        t = c.type
        if t == "event_count" or t == "value_sum" or t == "value_avg":
            s = value if value is not None else 0.0
            ev = g.ev
            if len(ev) >= self.max_events:
                last = ev[-1]
                if 0 <= ts - last[0] < c.timespan / self.max_events:
                    # busy group: share the newest entry (expires with its newest event)
                    if ts > last[1]:
                        last[1] = ts
                    last[2] += 1
                    last[3] += s
                    g.n += 1
                    g.acc += s
                    return
            ev.append([ts, ts, 1, s])
            g.n += 1
            g.acc += s
        elif t == "value_count":
            vals = g.vals
            if value in vals:
                del vals[value]  # re-insert: insertion order = recency
                vals[value] = ts
            elif len(vals) < self._cap[c.meta.id]:
                vals[value] = ts
            else:
                return
            if ts < g.lo:
                g.lo = ts
        elif t == "temporal":
            i = c.rules.index(rid)
            g.vals.pop(i, None)
            g.vals[i] = ts
            if ts < g.lo:
                g.lo = ts
        elif t == "temporal_ordered":
            n = len(c.rules)
            if len(g.seen) != n:
                g.seen = [None] * n
            # latest start of a chain that has completed step i; go backwards so one
            # event advances a chain by at most one step
            for i in range(n - 1, -1, -1):
                if c.rules[i] != rid:
                    continue
                if i == 0:
                    g.seen[0] = ts
                else:
                    prev = g.seen[i - 1]
                    if prev is not None and ts - prev <= c.timespan:
                        cur = g.seen[i]
                        g.seen[i] = prev if cur is None else max(cur, prev)

    def _evict(self, c: CorrelationRule, g: _Group, now: float) -> None:
        cut = now - c.timespan
        t = c.type
        if t == "event_count" or t == "value_sum" or t == "value_avg":
            ev = g.ev
            while ev and ev[0][1] < cut:
                e = ev.popleft()
                g.n -= e[2]
                g.acc -= e[3]
            if not ev:
                g.acc = 0.0  # no float drift across windows
                g.n = 0
        elif t == "value_count" or t == "temporal":
            if g.lo < cut:
                _expire_vals(g, cut)
        elif t == "temporal_ordered":
            g.seen = [s if s is not None and s >= cut else None for s in g.seen]

    def _measure(self, c: CorrelationRule, g: _Group) -> float | None:
        t = c.type
        if t == "event_count":
            return float(g.n)
        if t == "value_count":
            return float(len(g.vals))
        if t == "value_sum":
            return g.acc
        if t == "value_avg":
            return g.acc / g.n if g.n else None
        if t == "temporal":
            return float(len(g.vals))
        if t == "temporal_ordered":
            n = len(c.rules)
            if len(g.seen) == n and g.seen[-1] is not None:
                return float(n)
            return float(sum(1 for s in g.seen if s is not None)) if c.threshold < n else 0.0
        return None

    @staticmethod
    def _reset(g: _Group) -> None:
        g.acc = 0.0
        g.n = 0
        g.ev.clear()
        g.vals.clear()
        g.lo = _INF
        g.seen = []
        g.start = None

    def _close(self, c: CorrelationRule, key: tuple, g: _Group, ts: float, kind: str) -> RuleHit | None:
        measure = self._measure(c, g)
        if measure is None:
            measure = 0.0
        if _OPS[c.op](measure, c.threshold):
            g.fired += 1
            return self._hit(c, key, g, g.start + c.timespan if g.start is not None else ts, kind, measure)
        return None

    def _close_due(self, state: KeyState, ts: float, kind: str) -> list[RuleHit]:
        """Close the key's tumbling windows that ended at or before ``ts``."""
        out: list[RuleHit] = []
        for c in self.tumbling:
            groups = state.groups.get(self._slots[c.meta.id])
            if not groups:
                continue
            for key, g in list(groups.items()):
                if g.start is not None and ts >= g.start + c.timespan:
                    h = self._close(c, key, g, ts, kind)
                    if h is not None:
                        out.append(h)
                    del groups[key]
        self._recompute_due(state)
        return out

    def _recompute_due(self, state: KeyState) -> None:
        due = _INF
        for c in self.tumbling:
            groups = state.groups.get(self._slots[c.meta.id])
            if groups:
                for g in groups.values():
                    if g.start is not None and g.start + c.timespan < due:
                        due = g.start + c.timespan
        state.due = due

    def _hit(self, c: CorrelationRule, key: tuple, g: _Group, ts: float, kind: str, measure: float) -> RuleHit:
        m = c.meta
        titles = self._titles
        extra: dict[str, Any] = {
            "correlation": c.type,
            "condition": {c.op: c.threshold},
            "observed": measure,
            "timespan": c.timespan_text,
            "rules": [titles[r] for r in c.rules],
        }
        if c.type == "value_count":
            extra["values"] = [v for v in list(g.vals)[:20]]
            extra["field"] = c.value_field
        elif c.type in ("value_sum", "value_avg"):
            extra["field"] = c.value_field
        elif c.type == "temporal":
            extra["rules_seen"] = [titles[r] for i, r in enumerate(c.rules) if i in g.vals]
        matched = [
            MatchedField(selection="group-by", key=f, field=f, value=v, patterns=[])
            for f, v in zip(c.group_by, key)
        ]
        return m.hit(c.type, ts, kind, matched, group_key=key, group_by=c.group_by, extra=extra)

    def _update_stateful(self, r: DetectionRule, rid: str, flat: dict, ts: float, kind: str, state: KeyState | None) -> RuleHit | None:
        s = r.stateful
        assert s is not None
        parts = []
        for fld in s.group_by:
            v = flat.get(fld)
            if v is None:
                return None
            parts.append(_key_part(v))
        key = tuple(parts)
        value = flat.get(s.value)
        if value is None:
            return None
        value = _key_part(value)
        g = self._group(r.meta.id, key, state, _INF, ts)
        if ts > g.last:
            g.last = ts
        vals = g.vals
        if g.lo < ts - s.timespan:
            _expire_vals(g, ts - s.timespan)
        if ts < g.lo:
            g.lo = ts
        if rid in s.announced_by and rid != r.meta.id:
            vals.pop(value, None)
            vals[value] = ts  # announced: valid for timespan
            self._trim(vals)
            return None
        if value in vals:
            t0 = vals.pop(value)
            vals[value] = max(t0, ts)  # in use: stays known
            return None
        if s.warmup_first_seen and not vals and not g.fired:
            vals[value] = ts
            g.fired = -1  # baseline taken; later unannounced values fire
            return None
        vals[value] = ts  # alert once per new value
        self._trim(vals)
        g.fired = max(g.fired, 0) + 1
        m = r.meta
        explained = r.explain(flat, {TS_KEY: ts}) + [
            MatchedField("stateful", s.value, s.value, value, ["not announced by " + ", ".join(s.announced_by)])
        ]
        extra = {"stateful": s.type, "value": value, "known_values": len(vals)}
        return m.hit(s.type, ts, kind, explained, group_key=key, group_by=s.group_by, alert=True, extra=extra)

    @staticmethod
    def _trim(vals: dict[Any, float]) -> None:
        while len(vals) > STATEFUL_MAX_VALUES:
            del vals[next(iter(vals))]  # least recently seen


# --- every correlation of a rule set, in its partition ---------------------------------


class Correlator:
    """Every correlation (and stateful rule) of ``ruleset`` where :func:`place`
    puts it: one :class:`CorrelationEngine` per partition working on the key
    states the caller keeps (per-key bounds), and one process-local engine for
    the rest. Used by the worker and replay (``streams.rulerun.RuleRunner``)
    and by ``ueba rules test``, so both run the same path."""

    def __init__(self, ruleset: RuleSet, partitions: Iterable[Partition] | None = None) -> None:
        self.partitions = tuple(partitions) if partitions is not None else default_partitions()
        self.ruleset = ruleset
        self.placement = place(ruleset, self.partitions)
        self.engines: dict[str, CorrelationEngine] = {}
        self.matchers: dict[str, Any] = {}
        for p in self.partitions:
            ids = self.placement.ids(p.name)
            if not ids:
                continue
            eng = CorrelationEngine(ruleset, only=ids, max_groups=KEY_MAX_GROUPS, max_events=KEY_MAX_EVENTS, max_values=KEY_MAX_VALUES)
            self.engines[p.name] = eng
            if p.name != p.kind:
                # a re-keyed view (by source.ip): only the rules its correlations read
                self.matchers[p.name] = ruleset.matcher(eng.inputs, p.kind)
        local = self.placement.ids(LOCAL)
        self.local = CorrelationEngine(ruleset, only=local) if local else None
        self._events = 0
        self._watermark = -_INF

    def match(self, partition: str, kind: str, flat: dict[str, Any], ts: float) -> list[DetectionRule]:
        """The detection rules to feed ``partition``'s correlations with: all of
        the stream's on a stream partition, else just those its correlations read."""
        if partition == kind:
            return self.ruleset.match_rules(kind, flat, ts)
        m = self.matchers.get(partition)
        return m.match(flat, {TS_KEY: ts}) if m is not None else []

    def idle(self, partition: str, state: Any) -> bool:
        """True when an event without rule hits has nothing to do here (no window to close)."""
        eng = self.engines.get(partition)
        return (eng is None or not eng.tumbling or not state) and (self.local is None or not self.local.tumbling)

    def correlate(
        self, partition: str, kind: str, flat: dict[str, Any], ts: float, rule_ids: list[str], state: Any
    ) -> tuple[list[RuleHit], Any]:
        """Correlation hits of one event in ``partition`` (``rule_ids``: its
        detection hits), and the key's state after it. ``state``: None, bytes
        (:meth:`dumps`) or a decoded :class:`KeyState`; decoded only when a
        correlation of the partition needs it, else returned as it came."""
        out: list[RuleHit] = []
        eng = self.engines.get(partition)
        if eng is not None and (not eng.inputs.isdisjoint(rule_ids) or (eng.tumbling and state)):
            ks = state if type(state) is KeyState else eng.loads(state)
            out = eng.process(kind, flat, ts, rule_ids, ks)
            state = ks
        local = self.local
        if local is not None:
            # fed once per event: detection hits from the stream partition, and the
            # correlation hits of every partition (chains)
            stream = partition == kind
            out += local.process(kind, flat, ts, rule_ids + out if stream else out)
            if stream:
                self._events += 1
                if ts > self._watermark:
                    self._watermark = ts
                if local.tumbling and self._events % 1024 == 0:
                    out += local.advance(self._watermark)
        return out, state

    def dumps(self, state: Any, partition: str) -> bytes:
        """The bytes of a key's correlation state for its envelope (b"" when empty,
        or when the partition has no correlation any more)."""
        eng = self.engines.get(partition)
        if eng is None or not state:
            return b""
        if type(state) is bytes:
            return state  # untouched since read: stale rules are dropped when it is next decoded
        return eng.dumps(state)

    def close(self, partition: str, kind: str, ts: float, state: Any) -> tuple[list[RuleHit], Any]:
        """Close a key's tumbling windows ended by ``ts`` (as its next event would)."""
        eng = self.engines.get(partition)
        if eng is None or not eng.tumbling or not state:
            return [], state
        ks = state if type(state) is KeyState else eng.loads(state)
        return eng.process(kind, {}, ts, [], ks), ks
