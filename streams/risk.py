"""Per-entity alert handling: allow-lists, thresholds, suppression, learning
mode, and the decaying entity risk score with its level changes.

Runs keyed by entity (``<entity_type>:<entity>``): in the stream, an agent on
the candidates topic; in replay, the same :class:`AlertProcessor` over a dict.

Suppression of a detector's repeats happens one stage earlier. A detector's
findings on an entity all come from the scoring stage that holds that
entity's state (the input topic is keyed by it), so that stage applies the
stateless policy (:func:`drop_reason`) and the suppression windows
(:func:`find_window`, :func:`count_repeat`, :func:`open_window`) itself and
sends only what this stage would act on: the alert that opens a window, and
the count updates (a candidate with ``count`` > 1 and the first alert's id).
An extraction attack raises a finding on almost every query; each one used
to be built, sent through Kafka, read back and suppressed here. Rule alerts
(whose entity need not be the scoring stage's key) are suppressed here.

Risk model. Each alert contributes ``score * criticality`` points. Points
decay with the policy's half-life (event time), so an entity cools down when
it behaves. The 0-100 risk score is ``100 * (1 - exp(-points / 100))``: one
alert of score 70 gives ~50, three give ~88; it never exceeds 100. Crossing a
level (low / moderate / high / critical) emits a :class:`RiskChange` listing
the alerts that contributed most.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import msgspec
import orjson

from .alerts import Alert
from .policy import Policy
from .statecache import StateCache

#: Contributions remembered per entity (the top ones are listed in risk changes).
KEEP_CONTRIBUTIONS = 8
#: Suppression entries remembered per entity (oldest forgotten first).
KEEP_SUPPRESSIONS = 32
#: Candidate ids remembered per entity for de-duplication.
KEEP_SEEN = 64
#: A suppressed alert's count update is emitted when the count reaches a power
#: of two, or at most this often (event time) in between, so a burst of
#: thousands of repeats costs a handful of updates, not thousands.
UPDATE_EVERY = 300.0


class _Contribution(msgspec.Struct, array_like=True):
    alert_id: str
    source: str
    title: str
    ts: float
    points: float


class Suppressed(msgspec.Struct, array_like=True):
    """One open suppression window: the alert that opened it and its repeats.
    ``source`` is the alert's source (in the scoring stage's windows, followed
    by ``\x1f`` and the entity type)."""

    source: str
    alert_id: str
    first: float
    last: float
    count: int
    emitted: float = 0.0  # event time of the last count update emitted


class EntityState(msgspec.Struct, array_like=True):
    points: float = 0.0
    ts: float = 0.0
    level: str = "low"
    alerts: int = 0
    contributions: list[_Contribution] = []
    suppressed: list[Suppressed] = []
    last: int = -1  # last applied position (idempotence)
    #: 64-bit hashes of recent candidate ids: a candidate re-sent after a worker
    #: restart arrives at a new offset, so the position check alone cannot catch it.
    seen: list[int] = []


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(EntityState)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class RiskChange:
    """An entity's risk level changed."""

    entity_type: str
    entity: str
    ts: float
    score: float
    previous_score: float
    level: str
    previous_level: str
    criticality: float
    alert_count: int
    contributions: list[dict[str, Any]]

    @property
    def id(self) -> str:
        import hashlib

        return hashlib.sha256(f"{self.entity_type}\x1f{self.entity}\x1f{self.ts}\x1f{self.level}".encode()).hexdigest()[:40]

    def to_ecs(self, namespace: str = "default") -> dict[str, Any]:
        up = _LEVEL_ORDER[self.level] > _LEVEL_ORDER[self.previous_level]
        return {
            "@timestamp": _iso(self.ts),
            "ecs": {"version": "9.4.0"},
            "message": f"{self.entity_type} {self.entity} risk {'rose' if up else 'fell'} to {self.level} ({self.score:.0f}/100)",
            "event": {
                "kind": "event",
                "category": ["threat"] if up else ["host"],
                "type": ["change"],
                "module": "ueba",
                "dataset": "ueba.risk",
                "id": self.id,
                "risk_score": round(self.score, 2),
                "risk_score_norm": round(self.score, 2),
            },
            "data_stream": {"type": "logs", "dataset": "ueba.risk", "namespace": namespace},
            "ueba": {
                "risk": {
                    "entity": {"type": self.entity_type, "id": self.entity},
                    "score": round(self.score, 2),
                    "previous_score": round(self.previous_score, 2),
                    "level": self.level,
                    "previous_level": self.previous_level,
                    "criticality": self.criticality,
                    "alert_count": self.alert_count,
                    "contributions": {c["alert_id"]: c for c in self.contributions},
                }
            },
        }

    def to_json(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: bytes) -> "RiskChange":
        return cls(**orjson.loads(data))


_LEVEL_ORDER = {"low": 0, "moderate": 1, "high": 2, "critical": 3}


@dataclass(slots=True)
class AlertOutcome:
    """What became of one candidate alert."""

    alert: Alert | None = None  # to emit (new, or an update of a suppressed one)
    risk_change: RiskChange | None = None
    dropped: str | None = None  # why it was not emitted: allowed, threshold, learning, suppressed
    update: bool = False  # alert is a count update of an earlier alert (same id)
    risk_score: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def risk_score(points: float) -> float:
    return 100.0 * (1.0 - math.exp(-max(points, 0.0) / 100.0))


class AlertProcessor:
    """Applies the policy to candidate alerts of one entity, keeps its risk."""

    def __init__(self, policy: Policy | None = None, *, cache_keys: int = 0) -> None:
        self.policy = policy or Policy()
        self._decay = math.log(2) / (self.policy.risk.half_life_hours * 3600.0)
        #: optional write-behind cache of decoded entity states (see streams.statecache)
        self.cache: StateCache[EntityState] | None = StateCache(_dec.decode, _enc.encode, max_keys=cache_keys) if cache_keys > 0 else None

    def flush(self, write: Callable[[bytes, bytes, Any], None]) -> int:
        """Write the cached entity states changed since the last flush."""
        return self.cache.flush(write) if self.cache is not None else 0

    def _load(self, store: Mapping[bytes, bytes], key: bytes) -> EntityState | None:
        if self.cache is not None:
            return self.cache.get(store, key)
        raw = store.get(key)
        return _dec.decode(raw) if raw is not None else None

    def _save(self, store: MutableMapping[bytes, bytes], key: bytes, st: EntityState, tag: Any) -> None:
        if self.cache is not None:
            self.cache.put(key, st, tag)
        else:
            store[key] = _enc.encode(st)

    def dropped_reason(self, alert: Alert) -> str | None:
        """Why a candidate is not alerted at all (before any state), or None."""
        return drop_reason(
            self.policy, source=alert.source, rule_id=alert.rule_id, kind=alert.kind, entity_type=alert.entity_type,
            entity=alert.entity, score=alert.score, ts=alert.ts, user_name=alert.context.get("user.name"),
            source_ip=alert.context.get("source.ip"),
        )

    def process(self, store: MutableMapping[bytes, bytes], alert: Alert, position: int | None = None, tag: Any = None) -> AlertOutcome:
        """Apply the policy to one candidate of an entity. A candidate at a
        position already applied is dropped: the worker sent its outputs, and
        waited for them, before it wrote this state."""
        reason = self.dropped_reason(alert)
        if reason:
            return AlertOutcome(dropped=reason)
        key = f"{alert.entity_type}:{alert.entity}".encode()
        st = self._load(store, key)
        if st is None:
            st = EntityState()
        if position is not None and position <= st.last:
            return AlertOutcome(dropped="redelivered")
        # A count update of repeats the scoring stage suppressed shares its first alert's
        # id: it is told apart by its count.
        h = _h64(alert.id) if alert.count <= 1 else (_h64(alert.id) + alert.count * 0x9E3779B97F4A7C15) & 0x7FFFFFFFFFFFFFFF
        if h in st.seen:
            if position is not None:
                st.last = position
                self._save(store, key, st, tag)
            return AlertOutcome(dropped="duplicate")
        if self.cache is not None:
            # _apply mutates in place: work on a copy so a failure leaves the cache clean
            st = _dec.decode(_enc.encode(st))
        st.seen.append(h)
        if len(st.seen) > KEEP_SEEN:
            del st.seen[0]
        outcome = self._apply(st, alert)
        if position is not None:
            st.last = position
        self._save(store, key, st, tag)
        return outcome

    def _apply(self, st: EntityState, alert: Alert) -> AlertOutcome:
        p = self.policy
        ts = alert.ts
        if alert.count > 1:
            # A count update the scoring stage made of repeats it suppressed itself
            # (see count_repeat): already counted there; keep the window's entry in step.
            for s in st.suppressed:
                if s.alert_id == alert.id and s.source == alert.source:
                    s.count = max(s.count, alert.count)
                    s.last = max(s.last, alert.last_seen if alert.last_seen is not None else ts)
                    s.emitted = max(s.emitted, ts)
                    break
            return AlertOutcome(alert=alert, dropped="suppressed", update=True, risk_score=risk_score(st.points))
        # Suppression: same source and entity within the window => one alert, counted.
        window = p.suppression.window_seconds
        s = find_window(st.suppressed, alert.source, ts, window)
        if s is not None:
            if count_repeat(s, ts):
                upd = _copy_alert(alert, id=s.alert_id, count=s.count, first_seen=s.first, last_seen=s.last)
                return AlertOutcome(alert=upd, dropped="suppressed", update=True, risk_score=risk_score(st.points))
            return AlertOutcome(dropped="suppressed", risk_score=risk_score(st.points))
        st.suppressed = open_window(st.suppressed, alert.source, alert.id, ts, window)
        # Risk: decay to now, add this alert's points.
        prev_score = risk_score(self._decayed(st, ts))
        crit = p.risk.criticality.of(alert.entity_type, alert.entity)
        pts = alert.score * crit
        st.points = self._decayed(st, ts) + pts
        st.ts = max(st.ts, ts) if st.alerts else ts
        st.alerts += 1
        st.contributions.append(_Contribution(alert.id, alert.source, alert.title, ts, pts))
        if len(st.contributions) > KEEP_CONTRIBUTIONS:
            st.contributions.sort(key=lambda c: c.points * math.exp(-self._decay * (ts - c.ts)), reverse=True)
            del st.contributions[KEEP_CONTRIBUTIONS:]
        score = risk_score(st.points)
        level = p.risk.level_of(score)
        change = None
        if level != st.level:
            change = RiskChange(
                entity_type=alert.entity_type,
                entity=alert.entity,
                ts=ts,
                score=score,
                previous_score=prev_score,
                level=level,
                previous_level=st.level,
                criticality=crit,
                alert_count=st.alerts,
                contributions=[
                    {"alert_id": c.alert_id, "source": c.source, "title": c.title, "at": _iso(c.ts), "points": round(c.points, 2)}
                    for c in sorted(st.contributions, key=lambda c: c.points, reverse=True)
                ],
            )
            st.level = level
        out = _copy_alert(alert, first_seen=ts, last_seen=ts)
        return AlertOutcome(alert=out, risk_change=change, risk_score=score)

    def _decayed(self, st: EntityState, ts: float) -> float:
        if st.alerts == 0 or ts <= st.ts:
            return st.points
        return st.points * math.exp(-self._decay * (ts - st.ts))

    def current(self, store: MutableMapping[bytes, bytes], entity_type: str, entity: str, ts: float) -> tuple[float, str]:
        """(risk score now, level) of an entity."""
        st = self._load(store, f"{entity_type}:{entity}".encode())
        if st is None:
            return 0.0, "low"
        s = risk_score(self._decayed(st, ts))
        return s, self.policy.risk.level_of(s)


def drop_reason(policy: Policy, *, source: str, rule_id: str, kind: str, entity_type: str, entity: str, score: float,
                ts: float, user_name: Any = None, source_ip: Any = None) -> str | None:
    """Why the policy drops a candidate before any state (allow-lists, per-rule
    thresholds, learning mode), or None. Stateless: the scoring stage applies it
    to detector findings before it builds them into candidates, the alert stage
    to every candidate."""
    p = policy
    if rule_id in p.allow.rules or source in p.allow.rules:
        return "allowed_rule"
    if entity in p.allow.identities or user_name in p.allow.identities:
        return "allowed_identity"
    if p.allow.allows_ip(source_ip) or (entity_type == "source_ip" and p.allow.allows_ip(entity)):
        return "allowed_ip"
    if score < p.thresholds.for_source(source, rule_id):
        return "below_threshold"
    if kind == "detector" and p.learning.active(ts):
        return "learning"
    return None


def window_tag(detector: str, entity_type: str) -> str:
    """The source a detector's suppression windows are filed under in the scoring
    stage, which keeps them per entity type."""
    return "detector:" + detector + "\x1f" + entity_type


def find_window(entries: list[Suppressed], source: str, ts: float, window: float) -> Suppressed | None:
    """The open suppression window of ``source`` that ``ts`` falls in, or None
    (none open, or suppression off: ``window`` <= 0)."""
    if window <= 0:
        return None
    for s in entries:
        if s.source == source and ts - s.first < window and ts >= s.first:
            return s
    return None


def would_update(s: Suppressed, ts: float) -> bool:
    """Would one more repeat in window ``s`` at ``ts`` be due for a count update?
    (The count reaching a power of two, or UPDATE_EVERY since the last update.)"""
    n = s.count + 1
    return n & (n - 1) == 0 or ts - max(s.emitted, s.first) >= UPDATE_EVERY


def would_send(entries: list[Suppressed], source: str, ts: float, window: float) -> bool:
    """Would an alert of ``source`` at ``ts`` be sent on: no window open for it, or
    one open with a count update due? (Asks only; changes nothing.)"""
    s = find_window(entries, source, ts, window)
    return s is None or would_update(s, ts)


def count_repeat(s: Suppressed, ts: float) -> bool:
    """Count one more repeat in window ``s``; True when a count update is due
    (:func:`would_update`)."""
    due = would_update(s, ts)
    s.count += 1
    s.last = max(s.last, ts)
    if due:
        s.emitted = ts
    return due


def open_window(entries: list[Suppressed], source: str, alert_id: str, ts: float, window: float) -> list[Suppressed]:
    """``entries`` with a new window for ``source`` opened by ``alert_id`` at ``ts``
    (closed windows forgotten, at most KEEP_SUPPRESSIONS kept)."""
    kept = [s for s in entries if ts - s.first < window][-(KEEP_SUPPRESSIONS - 1):]
    kept.append(Suppressed(source, alert_id, ts, ts, 1))
    return kept


def blake64(text: str) -> int:
    """A signed 64-bit BLAKE2b hash of ``text``, the same in every process (Python's
    ``hash`` of a str is salted per process): what the states keep of ids and
    fingerprints they compare after restarts."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big", signed=True)


def _h64(text: str) -> int:
    """A 63-bit hash of an alert id that is the same in every process (the ids it
    is kept for are compared after restarts): the id's own leading hex digits, or
    :func:`blake64` of an id that is not hex."""
    if len(text) >= 16 and all(c in "0123456789abcdef" for c in text[:16]):
        return int(text[:16], 16)
    return blake64(text) & 0x7FFFFFFFFFFFFFFF


def _copy_alert(a: Alert, **changes: Any) -> Alert:
    d = {s: getattr(a, s) for s in a.__slots__}
    d.update(changes)
    return Alert(**d)
