"""Events in, alerts out: the one code path shared by the Faust worker and by
replay. Nothing here knows about Kafka or Faust; state lives in any
``MutableMapping[bytes, bytes]`` (a Faust table in the stream, a dict in replay).

Per-identity state is an envelope ``[last_position, scorer_state, pending, seen, rules, quiet]``:

* ``last_position`` is the Kafka offset (stream) or input line (replay) of the
  last event applied for this identity. A redelivered event (position not
  greater) never moves the baseline again. Its alerts need no replaying: the
  worker sends a batch's outputs and waits for Kafka to acknowledge them
  *before* it writes the batch's state, so a state that survived a crash never
  has outputs that were lost. (A crash before the state write redelivers the
  batch onto the older state, which recomputes the same alerts with the same
  ids; the decide agent and the sinks drop the repeats by id.)
* ``pending`` is no longer written (kept in the wire form for states written
  by earlier versions).
* ``scorer_state`` is the detector suite's own compact bytes.
* ``seen``: fingerprints of recent events (only where events can arrive twice
  at different positions, see ``dedupe``).
* ``rules`` is the key's Sigma correlation state (``streams.rulerun``: the
  correlations grouped by this partition's key), written with the same
  ``last_position``: a redelivered event is skipped before rules run, so it
  never counts twice in a correlation either. Empty when no correlation of
  this partition has state for the key.
* ``quiet``: the open suppression windows of this key's detector alerts
  (``streams.risk``): with a policy, a detector's repeats within a window
  are counted here and not sent; only the alert that opens a window and the
  count updates go on to the alert stage.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import msgspec

from detectors.base import Finding

from .alerts import Alert, alert_id, context_of, event_fingerprint, severity_of
from .events import Event
from .policy import Policy
from .risk import Suppressed, blake64, count_repeat, drop_reason, find_window, open_window, window_tag, would_send
from .statecache import StateCache

log = logging.getLogger("ueba.pipeline")

#: Event fingerprints remembered per key where events can arrive twice at
#: different offsets (the access-by-source re-keying forwards again on redelivery).
KEEP_SEEN = 256


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
    # 64-bit hashes of recent event fingerprints (only with ``dedupe``)
    seen: list[int] = []
    # Sigma correlation state of this key (streams.rulerun.RuleRunner.dump_state)
    rules: bytes = b""
    # open suppression windows of this key's detector alerts (with a policy)
    quiet: list[Suppressed] = []


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(_Envelope)


class _Live:
    """An envelope with the scorer state decoded (what the state cache holds).

    ``rules``: the correlation state, as bytes until a correlation needs it decoded."""

    __slots__ = ("last", "state", "pending", "seen", "rules", "quiet")

    def __init__(self, last: int, state: Any, pending: list[tuple[int, float, list[bytes]]], seen: list[int], rules: Any = b"",
                 quiet: list[Suppressed] | None = None) -> None:
        self.last = last
        self.state = state
        self.pending = pending
        self.seen = seen
        self.rules = rules
        self.quiet = quiet if quiet is not None else []


@dataclass(slots=True)
class ProcessResult:
    alerts: list[Alert] = field(default_factory=list)
    redelivered: bool = False
    #: why findings were not sent as candidates (the policy's drop reasons, or
    #: "suppressed": a repeat counted in an open window)
    held: list[str] = field(default_factory=list)


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
    # (a finding without explanation is one this stage only counts; see InputProcessor._candidates)
    expl = f.explanation.to_dict() if f.explanation is not None else {"reason": f.title}
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
        cache_keys: int = 0,
        dedupe: bool = False,
        policy: Policy | None = None,
    ) -> None:
        self.kind = kind
        self.scorer = scorer
        self.min_score = min_score
        # Peer baselines are process-local and bounded (detectors.peers.PeerBaselines).
        self.peers = peers if peers is not None else _default_peers()
        #: streams.rulerun.RuleRunner or None. The "source" processor runs the
        #: correlations grouped by source.ip; the stream processors the detection
        #: rules of their stream and the correlations grouped by their identity.
        self.rules = rules
        #: also recognise an event seen before at another position by its fingerprint
        self.dedupe = dedupe
        #: with a policy, detector findings are dropped and their repeats suppressed
        #: here, as the alert stage would (see streams.risk); without, all are sent
        self.policy = policy
        self.window = policy.suppression.window_seconds if policy is not None else 0.0
        #: the detector suite asks, before it explains a finding, whether the alert will
        #: be sent (DetectorSuite.process's ``explain``): a repeat only counted is not explained
        self._ask = policy is not None and getattr(scorer, "explains_on_demand", False) is True
        self._asking: tuple[Event, list[Suppressed]] | None = None
        #: with ``cache_keys`` > 0, decoded states stay in a write-behind cache and
        #: reach the store only on :meth:`flush` (the caller flushes before it acks)
        self.cache: StateCache[_Live] | None = StateCache(self._decode, self._encode, max_keys=cache_keys) if cache_keys > 0 else None

    def _decode(self, raw: bytes) -> _Live:
        env = _dec.decode(raw)
        return _Live(env.last, self.scorer.loads(env.state), env.pending, env.seen, env.rules, env.quiet)

    def _encode(self, live: _Live) -> bytes:
        corr = live.rules
        if self.rules is not None:
            corr = self.rules.dump_state(corr, self.kind)
        elif type(corr) is not bytes:
            corr = b""
        return _enc.encode(_Envelope(live.last, self.scorer.dumps(live.state), live.pending, live.seen, corr, live.quiet))

    def flush(self, write: Callable[[bytes, bytes, Any], None]) -> int:
        """Write the cached states changed since the last flush (no-op without a cache)."""
        return self.cache.flush(write) if self.cache is not None else 0

    def process(self, store: MutableMapping[bytes, bytes], event: Event, position: int, tag: Any = None) -> ProcessResult:
        """Score ``event`` (at ``position``) against its identity's state in ``store``.

        With a cache, the new state is kept decoded and written on :meth:`flush`;
        ``tag`` is handed back to the flush's writer for this key."""
        key = event.identity.encode()
        cache = self.cache
        if cache is not None:
            live = cache.get(store, key)
        else:
            raw = store.get(key)
            live = self._decode(raw) if raw is not None else None
        fp = blake64(event_fingerprint(event.doc)) if self.dedupe else 0
        if live is not None:
            if position <= live.last:
                # Redelivery after a crash or rebalance: never learn twice (its
                # outputs were acknowledged before this state was written).
                return ProcessResult(redelivered=True)
            if self.dedupe and fp in live.seen:
                # the same event again at a new position (re-sent after a crash): applied already
                new = _Live(position, live.state, [], live.seen, live.rules, live.quiet)
                if cache is not None:
                    cache.put(key, new, tag)
                else:
                    store[key] = self._encode(new)
                return ProcessResult(redelivered=True)
            state = live.state
            seen = live.seen
            corr = live.rules
            quiet = live.quiet
        else:
            state = self.scorer.new_state()
            seen = []
            corr = b""
            quiet = []
        held: list[str] = []
        try:
            if self._ask:
                self._asking = (event, quiet)
                findings = self.scorer.process(state, event.flat, event.ts, self.peers, self._will_send)  # type: ignore[call-arg]
            else:
                findings = self.scorer.process(state, event.flat, event.ts, self.peers)
            if not findings:
                alerts = []
            elif self.policy is None:
                alerts = [alert_from_finding(f, event) for f in findings if f.score >= self.min_score]
            else:
                alerts, quiet = self._candidates(findings, event, quiet, held)
            if self.rules is not None:
                rule_alerts, corr = self.rules.evaluate(event, corr, self.kind)
                if rule_alerts:
                    alerts.extend(rule_alerts)
        except BaseException:
            if cache is not None:
                # the cached state may be half-updated: unless it holds unflushed
                # changes of earlier events, fall back to the stored bytes
                cache.forget(key)
            raise
        if self.dedupe:
            seen = seen[-(KEEP_SEEN - 1) :] + [fp]
        new = _Live(position, state, [], seen, corr, quiet)
        if cache is not None:
            cache.put(key, new, tag)
        else:
            store[key] = self._encode(new)
        return ProcessResult(alerts=alerts, held=held)

    def _candidates(self, findings: list[Finding], event: Event, quiet: list[Suppressed], held: list[str]
                    ) -> tuple[list[Alert], list[Suppressed]]:
        """The candidates ``findings`` make, with the policy and this key's suppression
        windows applied as the alert stage applies them (``streams.risk``): dropped
        findings and silent repeats are only counted (in ``held``); a repeat due for
        a count update is sent as one (the window's first alert id, its count); a
        finding outside every window opens one. Every finding on this key comes
        from here, so the windows are the alert stage's own, and nothing it would
        act on is held back. The alert is built only for what is sent."""
        window = self.window
        ts = event.ts
        out: list[Alert] = []
        for f in findings:
            if f.score < self.min_score:
                continue
            reason = self._dropped(f.detector, f.entity_type, f.entity, float(f.score), event)
            if reason is not None:
                held.append(reason)
                continue
            if f.entity != event.identity:  # not this key's entity: the alert stage suppresses it
                out.append(alert_from_finding(f, event))
                continue
            tag = window_tag(f.detector, f.entity_type)
            s = find_window(quiet, tag, ts, window)
            if s is None:
                alert = alert_from_finding(f, event)
                if window > 0:
                    quiet = open_window(quiet, tag, alert.id, ts, window)
                out.append(alert)
            elif count_repeat(s, ts):
                if f.explanation is None:  # cannot happen (see _will_send), but never lose an update
                    log.warning("a count update of detector %s on %s was not explained", f.detector, f.entity)
                alert = alert_from_finding(f, event)
                alert.id, alert.count, alert.first_seen, alert.last_seen = s.alert_id, s.count, s.first, s.last
                out.append(alert)
            else:
                held.append("suppressed")
        return out, quiet

    def _will_send(self, detector: str, entity_type: str, entity: str, score: float) -> bool:
        """Will :meth:`_candidates` send a finding of ``detector`` with this score on the
        current event? False only for what it holds back: under ``min_score``,
        dropped by the policy, or a repeat in an open window with no count update
        due. It decides exactly as _candidates will (same state, nothing changed in
        between but other detectors' windows), and changes nothing."""
        assert self._asking is not None
        event, quiet = self._asking
        if score < self.min_score or self._dropped(detector, entity_type, entity, score, event) is not None:
            return False
        if entity != event.identity:
            return True  # sent as it is (the alert stage suppresses it)
        return would_send(quiet, window_tag(detector, entity_type), event.ts, self.window)

    def _dropped(self, detector: str, entity_type: str, entity: str, score: float, event: Event) -> str | None:
        """The policy's reason to drop a finding of ``detector`` on ``event`` (streams.risk.drop_reason)."""
        assert self.policy is not None
        flat = event.flat
        return drop_reason(self.policy, source="detector:" + detector, rule_id="ueba-" + detector, kind="detector",
                           entity_type=entity_type, entity=entity, score=score, ts=event.ts,
                           user_name=flat.get("user.name"), source_ip=flat.get("source.ip"))


