"""Embedded rule tests: ``x_tests`` in a rule, or a sibling ``*.tests.yml``.

Convention
----------
In the rule itself (a custom top-level key; Sigma allows custom attributes)::

    x_tests:
      match:    [ {event}, ... ]     # each must make the rule fire
      nomatch:  [ {event}, ... ]     # each must not

For correlation rules and ``x_ueba_stateful`` rules a case is a *list* of
events (a sequence fed in order through the stream's partitions, with fresh
state: :class:`~rules.correlation.Correlator`, as the worker runs them); the
case passes if the rule fires at least once (``match``) or never (``nomatch``).
Windows still open after the last event are closed as if time moved on.

Or, in a sibling file named ``<anything>.tests.yml`` in the same directories,
a mapping from rule id (or ``name``) to the same ``match``/``nomatch`` lists.

An event is a mapping of ECS fields, dotted (``user.name: alice``) or nested.
Reserved keys: ``_kind`` (stream: access/api/telemetry; default: the rule's
logsource service, else ``access``), ``_ts`` (epoch seconds or ISO-8601;
default ``@timestamp`` if present, else 2026-01-05T12:00:00Z plus the event's
position in the case, in seconds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from streams.events import expand_dotted, flatten

from .loader import LineDict, LineList, read_yaml_documents

if TYPE_CHECKING:
    from .ruleset import RuleSet, _Ctx

DEFAULT_TS = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc).timestamp()  # a Monday, noon UTC


@dataclass(slots=True)
class RuleTestCase:
    rule_id: str
    title: str
    file: str
    line: int
    expect_match: bool
    index: int
    events: list[dict[str, Any]]  # one event for detection rules, a sequence otherwise
    sequence: bool


@dataclass(slots=True)
class RuleTestFailure:
    case: RuleTestCase
    reason: str

    def __str__(self) -> str:
        c = self.case
        want = "match" if c.expect_match else "nomatch"
        return f"{c.file}:{c.line}: {c.title} ({c.rule_id}) {want}[{c.index}]: {self.reason}"


@dataclass(slots=True)
class RuleTestReport:
    """Outcome of :func:`run_rule_tests`. ``ok`` when no case failed; rules without
    any test are listed in ``untested`` (the CLI may treat that as a failure)."""

    passed: int = 0
    failures: list[RuleTestFailure] = field(default_factory=list)
    untested: list[str] = field(default_factory=list)  # "file: title (id)"

    @property
    def total(self) -> int:
        return self.passed + len(self.failures)

    @property
    def ok(self) -> bool:
        return not self.failures

    def text(self) -> str:
        lines = [str(f) for f in self.failures]
        lines += [f"untested: {u}" for u in self.untested]
        lines.append(f"{self.passed}/{self.total} rule tests passed, {len(self.untested)} rule(s) without tests")
        return "\n".join(lines)


def _ts_of(ev: dict[str, Any], i: int) -> float:
    raw = ev.get("_ts", ev.get("@timestamp"))
    if raw is None:
        return DEFAULT_TS + i
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    dt = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def event_flat(ev: dict[str, Any]) -> dict[str, Any]:
    """The ``Event.flat`` view of a test event (reserved keys removed)."""
    plain = _plain({k: v for k, v in ev.items() if k not in ("_kind", "_ts")})
    return flatten(expand_dotted(plain))


def _plain(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_plain(v) for v in o]
    return o


def _default_kind(rs: "RuleSet", rid: str) -> str:
    from .ruleset import CorrelationRule, STREAM_KINDS

    r = rs.by_id[rid]
    if isinstance(r, CorrelationRule):
        r = rs.by_id[r.rules[0]]
        if isinstance(r, CorrelationRule):
            return "access"
    kinds = getattr(r, "kinds", frozenset(STREAM_KINDS))
    return sorted(kinds)[0] if len(kinds) == 1 else "access"


def iter_rule_tests(rs: "RuleSet") -> Iterator[RuleTestCase]:
    from .ruleset import CorrelationRule

    for r in [*rs.detections, *rs.correlations]:
        m = r.meta
        seq = isinstance(r, CorrelationRule) or getattr(r, "stateful", None) is not None
        for key in ("match", "nomatch"):
            cases = m.tests.get(key, [])
            for i, case in enumerate(cases):
                line = cases.line_of(i) if isinstance(cases, LineList) else m.tests_line
                files = getattr(cases, "item_files", None)
                file = files[i] if files else m.file
                events = list(case) if seq else [case]
                yield RuleTestCase(m.id, m.title, file, line, key == "match", i, events, seq)


def run_case(rs: "RuleSet", case: RuleTestCase) -> tuple[bool, str]:
    """(passed, reason). Runs the real matching path, index included; sequences
    run through the stream's partitions (:class:`~rules.correlation.Correlator`:
    per-key state, logins re-keyed by source.ip), as the worker does."""
    default_kind = _default_kind(rs, case.rule_id)
    corr = _Partitioned(rs) if case.sequence else None
    fired_at: int | None = None
    for i, ev in enumerate(case.events):
        if not isinstance(ev, dict):
            return False, f"event {i} is not a mapping"
        kind = ev.get("_kind", default_kind)
        flat = event_flat(ev)
        ts = _ts_of(ev, i)
        hits = rs.match(kind, flat, ts)
        if corr is not None:
            hits = hits + corr.feed(kind, flat, ts)
            fired = any(h.rule_id == case.rule_id and h.rule_type != "detection" for h in hits)
        else:
            fired = any(h.rule_id == case.rule_id for h in hits)
        if fired and fired_at is None:
            fired_at = i
    if corr is not None and fired_at is None:
        last = max((_ts_of(e, i) for i, e in enumerate(case.events)), default=DEFAULT_TS)
        if any(h.rule_id == case.rule_id for h in corr.close(last + 10 * 365 * 86400)):
            fired_at = len(case.events)
    if case.expect_match and fired_at is None:
        return False, "expected the rule to fire, it did not"
    if not case.expect_match and fired_at is not None:
        return False, f"expected no hit, the rule fired on event {fired_at}"
    return True, ""


class _Partitioned:
    """The worker's correlation path for a test sequence: each event goes to its
    stream's partition under its identity, and a login also to the by-source
    partition under its source.ip; every key keeps its own state."""

    def __init__(self, rs: "RuleSet") -> None:
        from .correlation import Correlator

        self.cor = Correlator(rs)
        self.states: dict[tuple[str, str, str], Any] = {}

    def feed(self, kind: str, flat: dict[str, Any], ts: float) -> list[Any]:
        from streams.events import identity_of

        cor = self.cor
        out: list[Any] = []
        for p in cor.partitions:
            if p.kind != kind:
                continue
            if p.name == kind:
                key = str(identity_of(kind, flat) or "")
            else:
                v = flat.get(p.key)
                if p.name not in cor.engines or v is None or v == "" or (p.accepts is not None and not p.accepts(flat)):
                    continue
                key = str(v)
            slot = (p.name, kind, key)
            ids = [r.meta.id for r in cor.match(p.name, kind, flat, ts)]
            hits, self.states[slot] = cor.correlate(p.name, kind, flat, ts, ids, self.states.get(slot))
            out.extend(hits)
        return out

    def close(self, watermark: float) -> list[Any]:
        out: list[Any] = []
        for (part, kind, _), st in self.states.items():
            out.extend(self.cor.close(part, kind, watermark, st)[0])
        if self.cor.local is not None:
            out.extend(self.cor.local.advance(watermark))
        return out


def run_rule_tests(rs: "RuleSet") -> RuleTestReport:
    """Run every embedded test of ``rs``; what ``ueba rules test PATH`` reports."""
    report = RuleTestReport()
    tested: set[str] = set()
    for case in iter_rule_tests(rs):
        tested.add(case.rule_id)
        try:
            ok, reason = run_case(rs, case)
        except Exception as exc:  # a broken test event must not hide the others
            ok, reason = False, f"error: {exc!r}"
        if ok:
            report.passed += 1
        else:
            report.failures.append(RuleTestFailure(case, reason))
    for r in [*rs.detections, *rs.correlations]:
        if r.meta.id not in tested:
            report.untested.append(f"{r.meta.file}: {r.meta.title} ({r.meta.id})")
    return report


def attach_test_files(ctx: "_Ctx", files: list[Path], rules: dict[str, Any], names: dict[str, str]) -> None:
    """Merge sibling ``*.tests.yml`` files into the rules' test lists."""
    from .ruleset import CorrelationRule

    for f in files:
        docs, issues = read_yaml_documents(f)
        ctx.issues.extend(issues)
        for doc in docs:
            if not isinstance(doc, LineDict):
                ctx.err(str(f), getattr(doc, "line", 1), "a tests file maps rule ids (or names) to match/nomatch lists")
                continue
            for ref, spec in doc.items():
                line = doc.line_of(ref)
                rid = ref if ref in rules else names.get(str(ref))
                if rid is None or rid not in rules:
                    ctx.err(str(f), line, f"tests for unknown rule {ref!r}")
                    continue
                if not isinstance(spec, LineDict):
                    ctx.err(str(f), line, "expected a mapping with 'match' and/or 'nomatch'", rid)
                    continue
                r = rules[rid]
                seq = isinstance(r, CorrelationRule) or getattr(r, "stateful", None) is not None
                for key, cases in spec.items():
                    if key not in ("match", "nomatch") or not isinstance(cases, list):
                        ctx.err(str(f), spec.line_of(key), f"unknown key {key!r} or not a list (use match/nomatch lists)", rid)
                        continue
                    for i, case in enumerate(cases):
                        ok = isinstance(case, list) and all(isinstance(e, dict) for e in case) if seq else isinstance(case, dict)
                        if not ok:
                            cl = cases.line_of(i) if isinstance(cases, LineList) else spec.line_of(key)
                            ctx.err(str(f), cl, f"{key}[{i}]: {'a list of events' if seq else 'an event mapping'} expected", rid)
                    existing = r.meta.tests.get(key) or LineList()
                    merged = LineList([*existing, *cases])
                    merged.item_lines = [
                        *getattr(existing, "item_lines", [r.meta.tests_line] * len(existing)),
                        *getattr(cases, "item_lines", [line] * len(cases)),
                    ]
                    old_files = getattr(existing, "item_files", None) or [r.meta.file] * len(existing)
                    merged.item_files = [*old_files, *([str(f)] * len(cases))]
                    r.meta.tests[key] = merged
                    if not r.meta.tests_line:
                        r.meta.tests_line = line
