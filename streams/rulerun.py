"""Sigma rules in the pipeline: detection and correlation hits become alerts
through the same alert model, policy and risk as detector findings.

Rules are loaded once and compiled (``rules.RuleSet``); the runner re-checks
the rule files' modification times at most every ``reload_seconds`` and swaps
in a new set only when it loads without errors (the last good set keeps
running, and the problems are logged with file and line).

Correlation state is per partition key (:mod:`rules.correlation`, "Where the
state lives"). Each :class:`~streams.pipeline.InputProcessor` hands the key's
correlation state (kept in the key's state envelope, so in the worker's
changelog-backed table) to :meth:`RuleRunner.evaluate`, named by its kind:

* ``access``/``api``/``telemetry`` (keyed by the stream's identity): detection
  rules of that stream, and the correlations grouped by that identity;
* ``source`` (logins re-keyed by ``source.ip``, the by-source stream): the
  correlations grouped by ``source.ip`` over login rules (password spraying).
  They run only where that stream runs (the worker and replay with the
  detector suite, the default).

Correlations no partition covers run in the runner's process-local engine
(bounded; a warning names them at load). A redelivered event is skipped by the
processor before rules run, and its key's correlation state is written with
the same offset, so correlation state is never updated twice by one event.

On a reload, the state of correlations whose rule changed or disappeared is
dropped (each rule's state is filed under a hash of its id and semantics), and
new correlations start empty; unchanged ones keep their state.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from rules import RuleHit, RuleSet, RuleSetHolder
from rules.compiler import TS_KEY
from rules.correlation import CorrelationEngine, Correlator, KeyState, Partition, default_partitions
from rules.placeholders import DEFAULT_FILE as DEFAULT_PLACEHOLDERS

from .alerts import Alert, alert_id, context_of, event_fingerprint, severity_from_level
from .events import Event

log = logging.getLogger("ueba.rules")

#: Sigma level -> risk score (0-100): what a hit contributes to entity risk.
LEVEL_SCORE = {"informational": 20.0, "low": 35.0, "medium": 60.0, "high": 80.0, "critical": 95.0}

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules" / "sigma"

#: per-key states :meth:`RuleRunner.alerts` keeps itself when called without a store
STANDALONE_KEYS = 100_000

_ENTITY_OF_FIELD = {
    "user.name": "user",
    "user.id": "user",
    "source.ip": "source_ip",
    "ueba.api_key.id": "api_key",
    "ueba.model.id": "model",
    "organization.id": "tenant",
    "host.name": "host",
}
_ENTITY_OF_KIND = {"access": "user", "api": "api_key", "telemetry": "model"}


def _files_stamp(paths: list[Path]) -> tuple:
    stamp = []
    for p in paths:
        files = [p] if p.is_file() else sorted(p.rglob("*.y*ml")) if p.exists() else []
        stamp.extend((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    return tuple(stamp)


class RuleRunner:
    """Matches events against the rule set and turns alerting hits into alerts.

    ``partitions``: the stream's keyed views (default
    :func:`rules.correlation.default_partitions`, the worker's layout).
    ``placeholders``: placeholder files (:mod:`rules.placeholders`, e.g. the
    registry of sanctioned models and endpoints), applied after the pack's
    example values and any ``*.placeholders.yml`` under ``paths``; watched for
    changes like the rule files.
    """

    def __init__(
        self,
        paths: list[Path] | None = None,
        *,
        reload_seconds: float = 30.0,
        clock=time.monotonic,
        partitions: tuple[Partition, ...] | None = None,
        placeholders: list[Path] | None = None,
    ) -> None:
        self.paths = [Path(p) for p in (paths if paths is not None else [DEFAULT_RULES])]
        self.placeholders = [Path(p) for p in (placeholders or [])]
        self.partitions = tuple(partitions) if partitions is not None else default_partitions()
        self.holder = RuleSetHolder(RuleSet.load(self.paths, placeholders=self.placeholders))
        self._plan = self._make_plan(self.holder.current)
        self.reload_seconds = reload_seconds
        self.clock = clock
        self._stamp = self._files_stamp()
        self._next_check = clock() + reload_seconds
        self._standalone: OrderedDict[tuple[str, str], KeyState] = OrderedDict()

    def _files_stamp(self) -> tuple:
        return _files_stamp([*self.paths, *self.placeholders, DEFAULT_PLACEHOLDERS])

    def _make_plan(self, rs: RuleSet) -> Correlator:
        plan = Correlator(rs, self.partitions)
        for issue in plan.placement.issues:
            log.warning("rules: %s", issue)
        example = [n for n in sorted(rs.placeholders_used) if rs.placeholders.defined_in.get(n, "").startswith(f"{DEFAULT_PLACEHOLDERS}:")]
        if example:
            log.warning(
                "rules: placeholder(s) %s use the example values of %s; supply your registry in a *.placeholders.yml "
                "(see rules/placeholders.py)", ", ".join(f"%{n}%" for n in example), DEFAULT_PLACEHOLDERS)
        return plan

    @property
    def ruleset(self) -> RuleSet:
        return self.holder.current

    @property
    def engine(self) -> CorrelationEngine | None:
        """The process-local correlation engine (correlations no partition covers), or None."""
        return self._plan.local

    def placement(self) -> dict[str, str]:
        """Correlation / stateful rule id -> partition name (or ``local``)."""
        return dict(self._plan.placement.where)

    def maybe_reload(self) -> bool:
        """Reload if the files changed; keep the last good set on errors."""
        now = self.clock()
        if now < self._next_check:
            return False
        self._next_check = now + self.reload_seconds
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        swapped, issues = self.holder.reload(self.paths, self.placeholders)
        for issue in issues:
            log.warning("rules: %s", issue)
        if swapped:
            old = self._plan
            plan = self._make_plan(self.holder.current)
            if old.local is not None and plan.local is not None:
                # process-local groups of unchanged correlations carry over
                plan.local = CorrelationEngine.from_bytes(old.local.to_bytes(), plan.ruleset, only=plan.local.rule_ids)
            self._plan = plan
            log.info("rules reloaded from %s", ", ".join(map(str, self.paths)))
        else:
            log.error("rules not reloaded: the new set has errors; the last good set keeps running")
        return swapped

    # -- the per-event path --

    def evaluate(self, event: Event, state: Any = None, partition: str | None = None) -> tuple[list[Alert], Any]:
        """Alerts of ``event`` in ``partition`` (default: the event's stream),
        and the partition key's correlation state after it.

        ``state``: the key's correlation state as the envelope holds it: None,
        the bytes of :meth:`dump_state`, or the decoded state returned by an
        earlier call (decoded only when a correlation of the partition needs
        it; returned unchanged otherwise).
        """
        plan = self._plan
        kind = event.kind
        part = partition or kind
        flat = event.flat
        ts = event.ts
        rules = plan.match(part, kind, flat, ts)
        if not rules and plan.idle(part, state):
            return [], state  # the common case: nothing matched, nothing to close
        hits: list[RuleHit] = []
        ids: list[str] = []
        stream = part == kind
        lc: dict[str, Any] | None = None
        for r in rules:
            ids.append(r.meta.id)
            if stream and r.meta.alert:
                if lc is None:
                    lc = {TS_KEY: ts}
                hits.append(r.hit(kind, flat, lc, ts))
        corr, state = plan.correlate(part, kind, flat, ts, ids, state)
        if not hits and not corr:
            return [], state
        fired = [h for h in (*hits, *corr) if h.alert]
        if not fired:
            return [], state
        fp = event_fingerprint(event.doc)
        ctx = context_of(flat)
        return [alert_from_hit(h, event, fp=fp, context=ctx) for h in fired], state

    def dump_state(self, state: Any, partition: str) -> bytes:
        """The bytes of a key's correlation state for its envelope (b"" when empty)."""
        return self._plan.dumps(state, partition)

    def alerts(self, event: Event) -> list[Alert]:
        """Alerts of one event without a state store (notebooks, library use).

        Runs every partition the event belongs to (its stream, and the source
        view of a login), with per-key correlation states kept in the runner
        (the :data:`STANDALONE_KEYS` most recently used keys)."""
        out: list[Alert] = []
        for p in self.partitions:
            if p.kind != event.kind:
                continue
            if p.name == event.kind:
                key = event.identity
            else:
                if p.name not in self._plan.engines or (p.accepts is not None and not p.accepts(event.flat)):
                    continue
                v = event.flat.get(p.key)
                if v is None or v == "":
                    continue
                key = str(v)
            slot = (p.name, key)
            st = self._standalone.pop(slot, None)
            got, st = self.evaluate(event, st, p.name)
            if st is not None:
                self._standalone[slot] = st
                if len(self._standalone) > STANDALONE_KEYS:
                    self._standalone.popitem(last=False)
            out.extend(got)
        return out


def _entity(hit: RuleHit, event: Event) -> tuple[str, str]:
    if hit.group_key is not None and hit.group_by:
        etype = _ENTITY_OF_FIELD.get(hit.group_by[0], hit.group_by[0])
        return etype, "|".join(str(v) for v in hit.group_key)
    return _ENTITY_OF_KIND.get(event.kind, "user"), event.identity


def alert_from_hit(hit: RuleHit, event: Event, *, fp: str | None = None, context: dict[str, Any] | None = None) -> Alert:
    """The alert for one rule or correlation hit on ``event`` (deterministic id).

    ``fp``/``context``: the event's fingerprint and pivot fields, when already
    computed for another alert of the same event."""
    etype, entity = _entity(hit, event)
    if fp is None:
        fp = event_fingerprint(event.doc)
    source = f"rule:{hit.rule_id}"
    score = LEVEL_SCORE.get(hit.level, 50.0)
    matched = {m.field: m.value for m in hit.matched if m.field} if hit.matched else {}
    first = hit.matched[0] if hit.matched else None
    kind = "rule" if hit.rule_type == "detection" else "correlation"
    if kind == "correlation":
        window = str(hit.extra.get("timespan") or hit.extra.get("window") or "")
        reason = f"{hit.title}: {_describe_correlation(hit)} for {etype} {entity}."
        observed: Any = hit.extra.get("observed", hit.extra.get("value", ""))
        feature = hit.rule_type
    else:
        window = "event"
        feature = first.field if first else ""
        observed = first.value if first else ""
        shown = str(observed)
        reason = f"{hit.title}: {feature} = {shown[:200]!r}" + (f" matched {hit.name or hit.rule_id}." if not first else ".")
    explanation = {
        "feature": feature,
        "observed": observed,
        "baseline": {"rule": hit.name or hit.rule_id, "level": hit.level, "type": hit.rule_type},
        "peers": None,
        "window": window,
        "reason": reason,
        "matched": {k: str(v)[:1024] for k, v in matched.items()} or ({k: str(v)[:1024] for k, v in hit.extra.items()} if hit.extra else None),
        "falsepositives": list(hit.falsepositives),
    }
    return Alert(
        id=alert_id(source, etype, entity, fp),
        ts=event.ts,
        source=source,
        kind=kind,
        rule_id=hit.rule_id,
        rule_name=hit.title,
        title=f"{hit.title} ({etype} {entity})",
        description=hit.description or hit.title,
        score=score,
        severity=severity_from_level(hit.level if hit.level != "informational" else "low"),
        level=hit.level if hit.level in ("low", "medium", "high", "critical") else "low",
        entity_type=etype,
        entity=entity,
        stream=event.kind,
        explanation=explanation,
        techniques=hit.technique_ids,
        context=dict(context) if context is not None else context_of(event.flat),
        event_ref=fp,
    )


def _describe_correlation(hit: RuleHit) -> str:
    """``event_count 12 (gte 10) within 10m``; ``value_count 11 (gte 10) of user.name
    (u1, u2, ...) within 15m``; ``temporal_ordered 2 (gte 2): A, B within 30m``."""
    ex = hit.extra
    if "stateful" in ex:
        return f"{ex.get('value')!r} not announced ({ex.get('known_values', 0)} known values)"
    parts = []
    observed = ex.get("observed")
    cond = ex.get("condition") or {}
    text = hit.rule_type
    if observed is not None:
        text += f" {_num(observed)}"
    if cond:
        text += " (" + ", ".join(f"{k} {_num(v)}" for k, v in cond.items()) + ")"
    parts.append(text)
    if ex.get("field"):
        vals = ex.get("values")
        parts.append(f"of {ex['field']}" + (" (" + ", ".join(str(v)[:64] for v in vals[:10]) + (", ..." if len(vals) > 10 else "") + ")" if vals else ""))
    seen = ex.get("rules_seen") or (ex.get("rules") if hit.rule_type.startswith("temporal") else None)
    if seen:
        parts.append(": " + ", ".join(seen))
    if ex.get("timespan"):
        parts.append(f"within {ex['timespan']}")
    return " ".join(parts).replace(" : ", ": ")


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
