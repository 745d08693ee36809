"""Events in, alerts out: the one code path shared by the Faust worker and by
replay. Nothing here knows about Kafka or Faust; state lives in any
``MutableMapping[bytes, bytes]`` (a Faust table in the stream, a dict in replay).

Per-identity state is an envelope ``[last_position, scorer_state, pending]``:

* ``last_position`` is the Kafka offset (stream) or input line (replay) of the
  last event applied for this identity. A redelivered event (position not
  greater) never moves the baseline again; instead the alerts recorded for
  that position in ``pending`` are emitted again with the same ids, so a
  crash between the state write and the alert write loses nothing and the
  sinks' ``_id`` makes the repeat a no-op.
* ``scorer_state`` is the detector suite's own compact bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import msgspec

from detectors.base import Finding

from .alerts import Alert, alert_id, context_of, event_fingerprint, severity_of
from .events import Event

log = logging.getLogger("ueba.pipeline")

#: Alerts of at most this many of an identity's latest alerting events are kept for redelivery...
PENDING_KEEP = 4
#: ...and only for this many seconds: Faust commits offsets every second, after which
#: those events are never redelivered, so the entries would only cost state.
PENDING_TTL = 120.0


class EntityScorer(Protocol):
    """What the pipeline needs of a detector suite (``detectors.suite.DetectorSuite``)."""

    def new_state(self) -> Any: ...

    def process(self, state: Any, flat: dict[str, Any], ts: float, peers: Any = None) -> list[Finding]: ...

    def dumps(self, state: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class _Envelope(msgspec.Struct, array_like=True):
    last: int
    state: bytes
    # (position, wall-clock time written, alert wire forms)
    pending: list[tuple[int, float, list[bytes]]] = []


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(_Envelope)


@dataclass(slots=True)
class ProcessResult:
    alerts: list[Alert] = field(default_factory=list)
    redelivered: bool = False


def _default_peers() -> Any:
    try:
        from detectors.peers import PeerBaselines
    except ImportError:  # the detector library is optional for the first-seen scorer
        return None
    return PeerBaselines()


def source_view(event: Event) -> Event | None:
    """The access event re-keyed by ``source.ip`` for source-level detectors
    (password spraying), or None when it is not a login with a source."""
    from detectors.credential import is_login

    ip = event.flat.get("source.ip")
    if not ip or not is_login(event.flat):
        return None
    return Event(kind=event.kind, identity=str(ip), ts=event.ts, doc=event.doc, flat=event.flat)


def alert_from_finding(f: Finding, event: Event, *, min_score: float = 0.0) -> Alert:
    """Turn a detector finding on ``event`` into an alert (deterministic id)."""
    fp = event_fingerprint(event.doc)
    source = f"detector:{f.detector}"
    level, severity = severity_of(f.score)
    expl = f.explanation.to_dict()
    return Alert(
        id=alert_id(source, f.entity_type, f.entity, fp),
        ts=event.ts,
        source=source,
        kind="detector",
        rule_id=f"ueba-{f.detector}",
        rule_name=f.detector.replace("_", " "),
        title=f.title,
        description=expl.get("reason") or f.title,
        score=float(f.score),
        severity=severity,
        level=level,
        entity_type=f.entity_type,
        entity=f.entity,
        stream=event.kind,
        explanation=expl,
        techniques=tuple(f.techniques),
        context=context_of(event.flat),
        event_ref=fp,
    )


class InputProcessor:
    """Scores one input stream's events against per-identity state.

    ``min_score`` is the alerting threshold on the 0-100 scale (per-detector
    thresholds live in the suite's configuration).
    """

    def __init__(
        self,
        kind: str,
        scorer: EntityScorer,
        *,
        min_score: float = 50.0,
        peers: Any = None,
        rules: Any = None,
        keep_pending: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kind = kind
        self.scorer = scorer
        self.min_score = min_score
        # Peer baselines are process-local and bounded (detectors.peers.PeerBaselines).
        self.peers = peers if peers is not None else _default_peers()
        #: streams.rulerun.RuleRunner or None
        self.rules = rules
        # Replay reads a file: nothing is redelivered, so nothing needs keeping.
        self.keep_pending = keep_pending
        self.clock = clock

    def process(self, store: MutableMapping[bytes, bytes], event: Event, position: int) -> ProcessResult:
        key = event.identity.encode()
        raw = store.get(key)
        if raw is not None:
            env = _dec.decode(raw)
            if position <= env.last:
                # Redelivery after a crash or rebalance: never learn twice.
                again = [Alert.from_json(b) for pos, _, blobs in env.pending if pos == position for b in blobs]
                return ProcessResult(alerts=again, redelivered=True)
            state = self.scorer.loads(env.state)
            pending = env.pending
        else:
            state = self.scorer.new_state()
            pending = []
        findings = self.scorer.process(state, event.flat, event.ts, self.peers)
        alerts = [alert_from_finding(f, event) for f in findings if f.score >= self.min_score]
        if self.rules is not None:
            alerts.extend(self.rules.alerts(event))
        if pending or alerts:
            now = self.clock()
            pending = [p for p in pending if now - p[1] < PENDING_TTL]
            if alerts and self.keep_pending:
                pending = (pending + [(position, now, [a.to_json() for a in alerts])])[-PENDING_KEEP:]
        store[key] = _enc.encode(_Envelope(position, self.scorer.dumps(state), pending))
        return ProcessResult(alerts=alerts)
