"""The one alert model, shared by detectors, rules, the stream and replay.

An :class:`Alert` is built from a detector :class:`~detectors.base.Finding`
or a rule hit plus the event that caused it, and rendered as an ECS document
(``event.kind: alert``) by :meth:`Alert.to_ecs`. Its id is deterministic:
the same source (detector or rule), entity and input event always give the
same id, so a redelivered or replayed event can never create a second alert
(the sinks index with ``_id`` = alert id).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import orjson

from . import mitre
from .events import set_dotted

ECS_VERSION = "9.4.0"
ALERT_DATASET = "ueba.alert"

#: Kibana's severity levels and the ECS ``event.severity`` numbers it uses.
SEVERITY_LEVELS: tuple[tuple[str, int, float], ...] = (
    # (name, event.severity, minimum risk score)
    ("critical", 99, 90.0),
    ("high", 73, 70.0),
    ("medium", 47, 40.0),
    ("low", 21, 0.0),
)

# Fields of the triggering event copied into the alert so analysts can pivot.
_CONTEXT_FIELDS = (
    "user.name",
    "user.id",
    "user.roles",
    "user.group.name",
    "source.ip",
    "source.geo.country_iso_code",
    "source.geo.city_name",
    "source.as.number",
    "organization.id",
    "user_agent.original",
    "url.path",
    "event.action",
    "event.outcome",
    "gen_ai.request.model",
    "ueba.api_key.id",
    "ueba.model.id",
    "ueba.model.version",
    "ueba.model.artifact_hash",
    "ueba.resource.type",
    "ueba.resource.id",
    "ueba.identity.type",
)


def severity_of(risk_score: float) -> tuple[str, int]:
    """(level name, ECS event.severity) for a 0-100 risk score."""
    for name, number, floor in SEVERITY_LEVELS:
        if risk_score >= floor:
            return name, number
    return "low", 21


def severity_from_level(level: str) -> int:
    """ECS event.severity for a Sigma level (informational counts as low)."""
    for name, number, _ in SEVERITY_LEVELS:
        if name == level:
            return number
    return 21


def event_fingerprint(doc: dict[str, Any]) -> str:
    """Stable identity of an input event: ``event.id`` when the shipper set
    one, else a hash of the canonical JSON of the document."""
    ev = doc.get("event")
    if isinstance(ev, dict) and isinstance(ev.get("id"), str) and ev["id"]:
        return "id:" + ev["id"]
    return "sha256:" + hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


def alert_id(source: str, entity_type: str, entity: str, fingerprint: str) -> str:
    """Deterministic alert id: same source, entity and event => same id."""
    h = hashlib.sha256(f"{source}\x1f{entity_type}\x1f{entity}\x1f{fingerprint}".encode())
    return h.hexdigest()[:40]


@lru_cache(maxsize=4096)  # @timestamp and event.created share one value; event.ingested is one per batch
def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Alert:
    """One alert.

    ``source`` is ``detector:<name>`` or ``rule:<rule id>``; ``score`` the
    0-100 risk score (detector score, or the rule's level mapped to a score);
    ``explanation`` the detector/rule explanation dict (observed, baseline,
    peers, window, reason, or matched fields for rules).
    """

    id: str
    ts: float
    source: str
    kind: str  # "detector" | "rule" | "correlation"
    rule_id: str
    rule_name: str
    title: str
    description: str
    score: float
    severity: int
    level: str
    entity_type: str
    entity: str
    stream: str
    explanation: dict[str, Any]
    techniques: tuple[str, ...] = ()
    context: dict[str, Any] = field(default_factory=dict)
    count: int = 1
    first_seen: float | None = None
    last_seen: float | None = None
    event_ref: str = ""

    def to_ecs(self, namespace: str = "default", ingested: float | None = None) -> dict[str, Any]:
        """The ECS alert document written to ``logs-ueba.alert-<namespace>``."""
        doc: dict[str, Any] = {
            "@timestamp": _iso(self.ts),
            "ecs": {"version": ECS_VERSION},
            "message": self.title,
            "event": {
                "kind": "alert",
                "category": _categories(self.stream, self.context),
                "type": ["info"],
                "module": "ueba",
                "dataset": ALERT_DATASET,
                "id": self.id,
                "severity": self.severity,
                "risk_score": round(self.score, 2),
                "risk_score_norm": round(self.score, 2),
                "reason": self.explanation.get("reason") or self.description,
                "created": _iso(self.ts),
            },
            "data_stream": {"type": "logs", "dataset": ALERT_DATASET, "namespace": namespace},
            "rule": {
                "id": self.rule_id,
                "name": self.rule_name,
                "description": self.description,
                "ruleset": "ai-ueba",
                "category": self.kind,
            },
            "tags": ["ai-ueba", self.kind],
        }
        if ingested is not None:
            doc["event"]["ingested"] = _iso(ingested)
        threat = mitre.describe(self.techniques)
        if threat:
            doc["threat"] = threat
        related: dict[str, list[str]] = {}
        for dotted, value in self.context.items():
            if value is None:
                continue
            set_dotted(doc, dotted, value)
        user = self.context.get("user.name")
        if user:
            related.setdefault("user", []).append(str(user))
        if self.entity_type in ("user", "human", "service_account") and self.entity not in related.get("user", []):
            related.setdefault("user", []).append(self.entity)
        ip = self.context.get("source.ip")
        if ip:
            related.setdefault("ip", []).append(str(ip))
        if self.entity_type == "source_ip" and self.entity not in related.get("ip", []):
            related.setdefault("ip", []).append(self.entity)
        h = self.context.get("ueba.model.artifact_hash")
        if h:
            related.setdefault("hash", []).append(str(h))
        if related:
            doc["related"] = related
        expl = dict(self.explanation)
        observed = expl.get("observed")
        ueba_alert: dict[str, Any] = {
            "source": self.source,
            "kind": self.kind,
            "level": self.level,
            "score": round(self.score, 2),
            "stream": self.stream,
            "entity": {"type": self.entity_type, "id": self.entity},
            "count": self.count,
            "event_ref": self.event_ref,
            "explanation": {
                "feature": expl.get("feature"),
                "observed": None if observed is None else str(observed),
                "observed_value": float(observed) if isinstance(observed, (int, float)) and not isinstance(observed, bool) else None,
                "baseline": expl.get("baseline"),
                "peers": expl.get("peers"),
                "window": expl.get("window"),
                "reason": expl.get("reason"),
                "matched": expl.get("matched"),
            },
        }
        ueba_alert["explanation"] = {k: v for k, v in ueba_alert["explanation"].items() if v is not None}
        if self.first_seen is not None:
            ueba_alert["first_seen"] = _iso(self.first_seen)
        if self.last_seen is not None:
            ueba_alert["last_seen"] = _iso(self.last_seen)
        existing = doc.get("ueba") if isinstance(doc.get("ueba"), dict) else {}
        existing["alert"] = ueba_alert
        doc["ueba"] = existing
        return doc

    def to_json(self) -> bytes:
        """Compact wire form for the alerts topic (round-trips via :meth:`from_json`)."""
        return orjson.dumps(
            {
                "id": self.id,
                "ts": self.ts,
                "source": self.source,
                "kind": self.kind,
                "rule_id": self.rule_id,
                "rule_name": self.rule_name,
                "title": self.title,
                "description": self.description,
                "score": self.score,
                "severity": self.severity,
                "level": self.level,
                "entity_type": self.entity_type,
                "entity": self.entity,
                "stream": self.stream,
                "explanation": self.explanation,
                "techniques": list(self.techniques),
                "context": self.context,
                "count": self.count,
                "first_seen": self.first_seen,
                "last_seen": self.last_seen,
                "event_ref": self.event_ref,
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
            default=str,
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> "Alert":
        d = orjson.loads(data)
        d["techniques"] = tuple(d.get("techniques") or ())
        return cls(**d)


def _categories(stream: str, context: dict[str, Any]) -> list[str]:
    """ECS event.category allowed values that fit the alert's input stream."""
    if stream == "access":
        action = str(context.get("event.action") or "")
        if action in ("login", "logon", "authenticate"):
            return ["authentication"]
        return ["file"] if context.get("ueba.resource.type") not in (None, "secret") else ["iam"]
    # Inference calls and model telemetry are both about serving an API.
    return ["api"]


def context_of(flat: dict[str, Any]) -> dict[str, Any]:
    """The pivot fields of an event, as copied into its alerts."""
    return {k: flat[k] for k in _CONTEXT_FIELDS if flat.get(k) is not None}
