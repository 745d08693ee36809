"""Stateful Sigma correlations, evaluated in the stream on event time.

One :class:`CorrelationEngine` holds, per correlation rule, the state of each
group-by key (an LRU of at most ``max_groups`` keys; keys idle for longer than
the rule's timespan are dropped). Time is always the event's ``ts``; nothing
reads the wall clock, so replaying a stream gives the same hits.

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
evaluated when a later hit of the group falls past the window end or when
:meth:`CorrelationEngine.advance` is called with a watermark (the runtime should
call it periodically with the stream's event time).

A group-by field missing from an event: the event is not counted for that
rule (it cannot be attributed). Events older than the window of their group
(late arrivals beyond ``timespan``) are ignored.

``x_ueba_stateful: {type: unannounced_value}`` detection rules are evaluated
here too: a value (e.g. a model artifact hash) observed for a group (a model)
that was not announced by one of the ``announced-by`` rules (e.g. a
``model-deploy`` event) within ``timespan`` fires once per new value. With
``warmup: first_seen`` (default) the first value seen for a group with no
announcement is accepted as the baseline instead of firing.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

import orjson

from .compiler import TS_KEY

from .ruleset import _OPS, CorrelationRule, DetectionRule, MatchedField, RuleHit, RuleSet

STATE_VERSION = 1
_MAX_VALUES = 10_000  # distinct values kept per group (value_count)


def _key_part(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_key_part(x) for x in v)
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v[:512] if isinstance(v, str) else v
    return str(v)[:512]


class _Group:
    """State of one group of one correlation. Plain lists so it serialises."""

    __slots__ = ("last", "start", "ts", "vals", "seen", "acc", "fired")

    def __init__(self) -> None:
        self.last = 0.0  # latest event time seen
        self.start: float | None = None  # tumbling window start
        self.ts: deque = deque()  # (ts, value) or ts
        self.vals: dict[Any, float] = {}  # value -> last ts (value_count) / rule -> ts (temporal)
        self.seen: list[float | None] = []  # temporal_ordered: chain start per step
        self.acc = 0.0  # running sum of the values in ts (value_sum / value_avg)
        self.fired = 0

    def to_obj(self) -> list[Any]:
        return [self.last, self.start, list(self.ts), [[k, v] for k, v in self.vals.items()], self.seen, self.fired, self.acc]

    @classmethod
    def from_obj(cls, o: list[Any]) -> "_Group":
        g = cls()
        g.last, g.start = o[0], o[1]
        g.ts = deque(tuple(x) if isinstance(x, list) else x for x in o[2])
        g.vals = {(tuple(k) if isinstance(k, list) else k): v for k, v in o[3]}
        g.seen = list(o[4])
        g.fired = o[5]
        g.acc = o[6]
        return g


class CorrelationEngine:
    """Correlation and stateful-rule evaluation over the hits of :meth:`RuleSet.match`.

    ``max_groups``: per rule, the most group keys kept (least recently updated
    dropped first). Memory is bounded by ``max_groups`` x (events in one
    timespan, capped at ``max_events`` per group) per rule.
    """

    def __init__(self, ruleset: RuleSet, *, max_groups: int = 100_000, max_events: int = 10_000):
        self.ruleset = ruleset
        self.max_groups = max_groups
        self.max_events = max_events
        self._corr: list[CorrelationRule] = list(ruleset.correlations)
        self._stateful: list[DetectionRule] = [r for r in ruleset.detections if r.stateful is not None]
        self._state: dict[str, OrderedDict[tuple, _Group]] = {c.meta.id: OrderedDict() for c in self._corr}
        for r in self._stateful:
            self._state[r.meta.id] = OrderedDict()
        # which correlations/stateful rules care about a given rule id
        self._listeners: dict[str, list[Any]] = {}
        for c in self._corr:
            for rid in c.rules:
                self._listeners.setdefault(rid, []).append(c)
        for r in self._stateful:
            self._listeners.setdefault(r.meta.id, []).append(r)
            for rid in r.stateful.announced_by:  # type: ignore[union-attr]
                self._listeners.setdefault(rid, []).append(r)
        self._n = 0

    # -- the stream entry point --

    def process(self, kind: str, flat: dict[str, Any], ts: float, hits: list[RuleHit]) -> list[RuleHit]:
        """Feed one event and its detection hits; returns correlation hits it completes.

        Correlation hits are fed on to correlations that reference them
        (chains), in dependency order.
        """
        out: list[RuleHit] = []
        listeners = self._listeners
        queue = [h for h in hits if h.rule_id in listeners]
        if not queue:
            return out
        i = 0
        while i < len(queue):
            h = queue[i]
            i += 1
            for target in listeners.get(h.rule_id, ()):
                if isinstance(target, CorrelationRule):
                    new = self._update(target, h, kind, flat, ts)
                else:
                    new = self._update_stateful(target, h, kind, flat, ts)
                if new is not None:
                    out.append(new)
                    queue.append(new)
        self._n += 1
        if self._n % 1024 == 0:
            self._expire(ts)
        return out

    def advance(self, watermark: float) -> list[RuleHit]:
        """Close tumbling windows ending before ``watermark`` (event time); returns their hits."""
        out: list[RuleHit] = []
        for c in self._corr:
            if c.op in ("gt", "gte"):
                continue
            groups = self._state[c.meta.id]
            for key, g in list(groups.items()):
                if g.start is not None and watermark >= g.start + c.timespan:
                    h = self._close(c, key, g, watermark, "")
                    if h is not None:
                        out.append(h)
                    del groups[key]
        self._expire(watermark)
        return out

    # -- state --

    def to_bytes(self) -> bytes:
        """The whole state (all rules, all groups), for the runtime's state table."""
        rules: dict[str, Any] = {}
        for rid, groups in self._state.items():
            rules[rid] = {"sig": self._sig(rid), "groups": [[list(k), g.to_obj()] for k, g in groups.items()]}
        return orjson.dumps({"v": STATE_VERSION, "rules": rules}, option=orjson.OPT_NON_STR_KEYS)

    @classmethod
    def from_bytes(cls, data: bytes, ruleset: RuleSet, **kw: Any) -> "CorrelationEngine":
        """Restore state; groups of rules that changed or disappeared are dropped."""
        eng = cls(ruleset, **kw)
        obj = orjson.loads(data)
        if obj.get("v") != STATE_VERSION:
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
            return f"{r.type}|{','.join(r.rules)}|{','.join(r.group_by)}|{r.timespan}|{r.op}|{r.threshold}|{r.value_field}"
        s = r.stateful
        return f"{s.type}|{s.value}|{','.join(s.group_by)}|{','.join(s.announced_by)}|{s.timespan}"  # type: ignore[union-attr]

    def _group(self, rid: str, key: tuple) -> _Group:
        groups = self._state[rid]
        g = groups.get(key)
        if g is None:
            g = groups[key] = _Group()
            if len(groups) > self.max_groups:
                groups.popitem(last=False)
        else:
            groups.move_to_end(key)
        return g

    def _expire(self, now: float) -> None:
        for rid, groups in self._state.items():
            r = self.ruleset.by_id[rid]
            span = r.timespan if isinstance(r, CorrelationRule) else r.stateful.timespan  # type: ignore[union-attr]
            if isinstance(r, DetectionRule):
                continue  # stateful baselines are long-lived; only LRU-bounded
            if isinstance(r, CorrelationRule) and r.op not in ("gt", "gte"):
                continue  # tumbling windows are closed by advance()
            while groups:
                k, g = next(iter(groups.items()))
                if g.last < now - span:
                    del groups[k]
                else:
                    break

    @staticmethod
    def _key(c: CorrelationRule, rid: str, flat: dict, hit: RuleHit) -> tuple | None:
        if hit.rule_type != "detection" and hit.group_key is not None and hit.group_by == c.group_by:
            return hit.group_key  # chained correlation with the same grouping
        parts = []
        for g in c.group_by:
            fld = c.aliases.get(g, {}).get(rid, g)
            v = flat.get(fld)
            if v is None:
                return None
            parts.append(_key_part(v))
        return tuple(parts)

    def _update(self, c: CorrelationRule, hit: RuleHit, kind: str, flat: dict, ts: float) -> RuleHit | None:
        key = self._key(c, hit.rule_id, flat, hit)
        if key is None:
            return None
        value = None
        if c.value_field is not None:
            value = flat.get(c.value_field)
            if value is None:
                return None
            if c.type in ("value_sum", "value_avg"):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    try:
                        value = float(value)
                    except (TypeError, ValueError):
                        return None
            else:
                value = _key_part(value)
        g = self._group(c.meta.id, key)
        if ts < g.last - c.timespan:
            return None  # too late for any window of this group
        g.last = max(g.last, ts)
        sliding = c.op in ("gt", "gte")
        out: RuleHit | None = None
        if not sliding:
            if g.start is None:
                g.start = ts
            elif ts >= g.start + c.timespan:
                out = self._close(c, key, g, ts, kind)
                self._reset(g)
                g.start = ts
                g.last = ts
        self._add(c, g, hit.rule_id, ts, value)
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
        if t == "event_count":
            g.ts.append(ts)
            if len(g.ts) > self.max_events:
                g.ts.popleft()
        elif t == "value_count":
            if value in g.vals or len(g.vals) < _MAX_VALUES:
                g.vals[value] = ts
                # keep insertion order = recency order for eviction
                g.vals[value] = g.vals.pop(value)
        elif t in ("value_sum", "value_avg"):
            g.ts.append((ts, value))
            g.acc += value
            if len(g.ts) > self.max_events:
                g.acc -= g.ts.popleft()[1]
        elif t == "temporal":
            g.vals[rid] = ts
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
        if t == "event_count":
            while g.ts and g.ts[0] < cut:
                g.ts.popleft()
        elif t in ("value_sum", "value_avg"):
            while g.ts and g.ts[0][0] < cut:
                g.acc -= g.ts.popleft()[1]
            if not g.ts:
                g.acc = 0.0  # no float drift across windows
        elif t in ("value_count", "temporal"):
            for k in [k for k, v in g.vals.items() if v < cut]:
                del g.vals[k]
        elif t == "temporal_ordered":
            g.seen = [s if s is not None and s >= cut else None for s in g.seen]

    def _measure(self, c: CorrelationRule, g: _Group) -> float | None:
        t = c.type
        if t == "event_count":
            return float(len(g.ts))
        if t == "value_count":
            return float(len(g.vals))
        if t == "value_sum":
            return g.acc
        if t == "value_avg":
            return g.acc / len(g.ts) if g.ts else None
        if t == "temporal":
            return float(len(set(g.vals) & set(c.rules)))
        if t == "temporal_ordered":
            n = len(c.rules)
            if len(g.seen) == n and g.seen[-1] is not None:
                return float(n)
            return float(sum(1 for s in g.seen if s is not None)) if c.threshold < n else 0.0
        return None

    @staticmethod
    def _reset(g: _Group) -> None:
        g.acc = 0.0
        g.ts.clear()
        g.vals.clear()
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

    def _hit(self, c: CorrelationRule, key: tuple, g: _Group, ts: float, kind: str, measure: float) -> RuleHit:
        m = c.meta
        extra: dict[str, Any] = {
            "correlation": c.type,
            "condition": {c.op: c.threshold},
            "observed": measure,
            "timespan": c.timespan_text,
            "rules": [self.ruleset.by_id[r].meta.title for r in c.rules],
        }
        if c.type == "value_count":
            extra["values"] = [v for v in list(g.vals)[:20]]
            extra["field"] = c.value_field
        elif c.type in ("value_sum", "value_avg"):
            extra["field"] = c.value_field
        elif c.type == "temporal":
            extra["rules_seen"] = [self.ruleset.by_id[r].meta.title for r in c.rules if r in g.vals]
        matched = [
            MatchedField(selection="group-by", key=f, field=f, value=v, patterns=[])
            for f, v in zip(c.group_by, key)
        ]
        return m.hit(c.type, ts, kind, matched, group_key=key, group_by=c.group_by, extra=extra)

    def _update_stateful(self, r: DetectionRule, hit: RuleHit, kind: str, flat: dict, ts: float) -> RuleHit | None:
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
        g = self._group(r.meta.id, key)
        g.last = max(g.last, ts)
        cut = ts - s.timespan
        for k in [k for k, t in g.vals.items() if t < cut and k != ("baseline",)]:
            del g.vals[k]
        if hit.rule_id in s.announced_by and hit.rule_id != r.meta.id:
            g.vals[value] = ts  # announced: valid for timespan
            return None
        if value in g.vals:
            g.vals[value] = max(g.vals[value], ts)  # in use: stays known
            return None
        if s.warmup_first_seen and not g.vals and not g.fired:
            g.vals[value] = ts
            g.fired = -1  # baseline taken; later unannounced values fire
            return None
        g.vals[value] = ts  # alert once per new value
        g.fired = max(g.fired, 0) + 1
        m = r.meta
        explained = r.explain(flat, {TS_KEY: ts}) + [
            MatchedField("stateful", s.value, s.value, value, ["not announced by " + ", ".join(s.announced_by)])
        ]
        extra = {"stateful": s.type, "value": value, "known_values": len(g.vals)}
        return m.hit(s.type, ts, kind, explained, group_key=key, group_by=s.group_by, alert=True, extra=extra)
