"""Sigma rules in the pipeline: detection and correlation hits become alerts
through the same alert model, policy and risk as detector findings.

Rules are loaded once and compiled (``rules.RuleSet``); the runner re-checks
the rule files' modification times at most every ``reload_seconds`` and swaps
in a new set only when it loads without errors (the last good set keeps
running, and the problems are logged with file and line).

Correlation state lives in the runner (process-local, bounded). Correlations
grouped by the stream's identity are exact; ones grouped by another field
(password spraying by ``source.ip``) see only the partitions this worker owns.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from rules import CorrelationEngine, RuleHit, RuleSet, RuleSetHolder

from .alerts import Alert, alert_id, context_of, event_fingerprint, severity_from_level
from .events import Event

log = logging.getLogger("ueba.rules")

#: Sigma level -> risk score (0-100): what a hit contributes to entity risk.
LEVEL_SCORE = {"informational": 20.0, "low": 35.0, "medium": 60.0, "high": 80.0, "critical": 95.0}

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules" / "sigma"

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
    """Matches events against the rule set and turns alerting hits into alerts."""

    def __init__(self, paths: list[Path] | None = None, *, reload_seconds: float = 30.0, clock=time.monotonic) -> None:
        self.paths = [Path(p) for p in (paths if paths is not None else [DEFAULT_RULES])]
        self.holder = RuleSetHolder(RuleSet.load(self.paths))
        self.engine = CorrelationEngine(self.holder.current)
        self.reload_seconds = reload_seconds
        self.clock = clock
        self._stamp = _files_stamp(self.paths)
        self._next_check = clock() + reload_seconds

    @property
    def ruleset(self) -> RuleSet:
        return self.holder.current

    def maybe_reload(self) -> bool:
        """Reload if the files changed; keep the last good set on errors."""
        now = self.clock()
        if now < self._next_check:
            return False
        self._next_check = now + self.reload_seconds
        stamp = _files_stamp(self.paths)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        swapped, issues = self.holder.reload(self.paths)
        for issue in issues:
            log.warning("rules: %s", issue)
        if swapped:
            self.engine = CorrelationEngine.from_bytes(self.engine.to_bytes(), self.holder.current)
            log.info("rules reloaded from %s", ", ".join(map(str, self.paths)))
        else:
            log.error("rules not reloaded: the new set has errors; the last good set keeps running")
        return swapped

    def alerts(self, event: Event) -> list[Alert]:
        hits = self.holder.current.match(event.kind, event.flat, event.ts)
        corr = self.engine.process(event.kind, event.flat, event.ts, hits)
        return [alert_from_hit(h, event) for h in (*hits, *corr) if h.alert]


def _entity(hit: RuleHit, event: Event) -> tuple[str, str]:
    if hit.group_key is not None and hit.group_by:
        etype = _ENTITY_OF_FIELD.get(hit.group_by[0], hit.group_by[0])
        return etype, "|".join(str(v) for v in hit.group_key)
    return _ENTITY_OF_KIND.get(event.kind, "user"), event.identity


def alert_from_hit(hit: RuleHit, event: Event) -> Alert:
    """The alert for one rule or correlation hit on ``event`` (deterministic id)."""
    etype, entity = _entity(hit, event)
    fp = event_fingerprint(event.doc)
    source = f"rule:{hit.rule_id}"
    score = LEVEL_SCORE.get(hit.level, 50.0)
    matched = {m.field: m.value for m in hit.matched if m.field} if hit.matched else {}
    first = hit.matched[0] if hit.matched else None
    kind = "rule" if hit.rule_type == "detection" else "correlation"
    if kind == "correlation":
        window = str(hit.extra.get("timespan") or hit.extra.get("window") or "")
        reason = f"{hit.title}: {_describe_correlation(hit)} for {etype} {entity}."
        observed: Any = hit.extra.get("count", hit.extra.get("distinct", ""))
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
        context=context_of(event.flat),
        event_ref=fp,
    )


def _describe_correlation(hit: RuleHit) -> str:
    ex = hit.extra
    parts = []
    for k in ("count", "distinct", "sum", "rules_seen"):
        if k in ex:
            parts.append(f"{k} {ex[k]}")
    if "timespan" in ex:
        parts.append(f"within {ex['timespan']}")
    return ", ".join(parts) or hit.rule_type
