"""What the runtime calls: all detectors of one stream kind, per entity.

>>> suite = build_suite("access")
>>> state = suite.new_state()
>>> suite.process(state, {"user.name": "ana", "event.action": "login", "event.outcome": "success"}, 1.7e9)
[]
>>> suite.loads(suite.dumps(state)) is not None
True

The stream worker keeps one *state* per entity (the Kafka key) in its table,
serialised with :meth:`DetectorSuite.dumps`; for each event it calls
:meth:`DetectorSuite.process`, which scores the event with every detector
first, then learns it with baseline protection, and returns the scores that
clear each detector's minimum as :class:`~detectors.base.Finding` objects.
Replay, backtests and notebooks use exactly the same calls.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Mapping
from zlib import crc32

from .base import DETECTORS, Finding, Score
from .baseline import CoreDetector
from .defaults import DEFAULT_DETECTORS, DEFAULT_MIN_SCORE, MIN_SCORE, load_detectors
from .peers import PeerBaselines

__all__ = ["SuiteConfig", "DetectorSuite", "build_suite", "SUITE_KINDS"]

SUITE_KINDS: tuple[str, ...] = ("access", "api", "telemetry", "source")

_ENTITY_TYPES = {"human": "user", "service_account": "service_account", "api_key": "api_key",
                 "tenant": "tenant", "model": "model"}


def _entity_of(kind: str, flat: dict[str, Any]) -> str:
    # Same rules as streams.events.identity_of (kept here so detectors/ does
    # not depend on the stream package), plus the "source" re-keying.
    if kind == "access":
        v = flat.get("user.name") or flat.get("user.id")
    elif kind == "api":
        v = flat.get("ueba.api_key.id") or flat.get("user.name") or flat.get("user.id")
    elif kind == "telemetry":
        v = flat.get("ueba.model.id")
    else:
        v = flat.get("source.ip")
    return str(v) if v is not None else ""


@dataclass(frozen=True, slots=True)
class SuiteConfig:
    """Overrides for :func:`build_suite`; every field is optional.

    Attributes
    ----------
    detectors : dict
        Stream kind -> detector names, replacing
        :data:`detectors.defaults.DEFAULT_DETECTORS` for the kinds given.
    min_score : float
        Default minimum score (0-100) for a Finding.
    min_scores : dict
        Detector name -> minimum score.
    params : dict
        Detector name -> params object, or a dict of field overrides applied
        to the detector's default params.
    protect_score : float
        For detectors not derived from :class:`CoreDetector` (no built-in
        protection): events scoring at or above this are not learned.
    """

    detectors: Mapping[str, list[str]] = field(default_factory=dict)
    min_score: float = DEFAULT_MIN_SCORE
    min_scores: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    protect_score: float = 99.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SuiteConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown suite config keys: {', '.join(sorted(unknown))}")
        return cls(**dict(d))


def _default_params(cls: type) -> Any:
    pcls = getattr(cls, "Params", None)
    if pcls is not None:
        return pcls()
    # Detectors without a ``Params`` attribute: take the defaults an instance
    # stores verbatim in ``params`` (the contract), if any.
    return getattr(cls(), "params", None)


def _make_params(cls: type, override: Any) -> Any:
    if override is None:
        # One shared params object per suite, not one per entity.
        return _default_params(cls)
    if not isinstance(override, Mapping):
        return override
    default = _default_params(cls)
    if default is None or not is_dataclass(default):
        raise ValueError(f"detector {cls.name!r} takes no params overrides")
    return replace(default, **dict(override))


class DetectorSuite:
    """All detectors of one stream kind. Build with :func:`build_suite`.

    Attributes
    ----------
    kind : str
        ``access``, ``api``, ``telemetry`` or ``source``.
    names : tuple of str
        Detector names, in scoring order.
    """

    __slots__ = ("kind", "names", "classes", "params", "min_scores", "protect_score", "_ids", "_core", "_meta", "_selfprot")

    def __init__(self, kind: str, classes: list[type], params: list[Any], min_scores: list[float],
                 protect_score: float = 99.0) -> None:
        self.kind = kind
        self.classes = tuple(classes)
        self.names = tuple(c.name for c in classes)
        self.params = tuple(params)
        self.min_scores = tuple(min_scores)
        self.protect_score = protect_score
        self._ids = tuple(crc32(n.encode()) & 0xFFFF for n in self.names)
        self._core = tuple(issubclass(c, CoreDetector) for c in classes)
        # Detectors that protect their own baseline (windows that must see every
        # event, e.g. extraction and drift) learn every event.
        self._selfprot = tuple(bool(getattr(c, "self_protecting", False)) for c in classes)
        self._meta = tuple(
            (c.name, getattr(c, "entity_type", "user"), getattr(c, "title", "") or c.name,
             tuple(getattr(c, "techniques", ())))
            for c in classes
        )

    def __repr__(self) -> str:
        return f"DetectorSuite({self.kind!r}, {list(self.names)})"

    # -- state ---------------------------------------------------------------

    def new_state(self) -> list[Any]:
        """A fresh per-entity state: one detector instance per detector."""
        return [c(p) if p is not None else c() for c, p in zip(self.classes, self.params)]

    def dumps(self, state: list[Any]) -> bytes:
        """Serialise a per-entity state (each detector tagged by a name hash,
        so states survive adding or removing detectors)."""
        out = [b"S1"]
        for i, det in enumerate(state):
            blob = det.to_bytes()
            out.append(struct.pack("<HI", self._ids[i], len(blob)))
            out.append(blob)
        return b"".join(out)

    def loads(self, data: bytes) -> list[Any]:
        """Inverse of :meth:`dumps`; detectors missing from ``data`` start fresh."""
        if data[:2] != b"S1":
            raise ValueError("not a detector suite state (bad header)")
        blobs: dict[int, bytes] = {}
        o, n = 2, len(data)
        while o < n:
            ident, ln = struct.unpack_from("<HI", data, o)
            o += 6
            blobs[ident] = data[o : o + ln]
            o += ln
        state = []
        for i, c in enumerate(self.classes):
            blob = blobs.get(self._ids[i])
            p = self.params[i]
            if blob is None:
                state.append(c(p) if p is not None else c())
            else:
                state.append(c.from_bytes(blob, p))
        return state

    # -- the per-event path ----------------------------------------------------

    def process(self, state: list[Any], flat: dict[str, Any], ts: float,
                peers: PeerBaselines | None = None) -> list[Finding]:
        """Score ``flat`` (an ``Event.flat``) at ``ts`` with every detector,
        learn it (with baseline protection), return the Findings.

        ``peers`` is the worker's peer-group store; without it new entities
        stay silent during warm-up instead of being judged against peers.
        """
        if peers is None:
            g = None
        elif self.kind == "source":
            g = peers.global_
        else:
            g = peers.view(flat)
        scores: list[tuple[int, Score]] | None = None
        mins = self.min_scores
        core = self._core
        selfprot = self._selfprot
        for i, det in enumerate(state):
            if core[i]:
                s = det.step(flat, ts, g, mins[i])
            else:
                s = det.score_one(flat, ts)
                if selfprot[i] or s.score < self.protect_score:
                    det.learn_one(flat, ts)
                if s.score < mins[i] or s.score <= 0.0 or s.explanation is None:
                    s = None
            if s is not None:
                if scores is None:
                    scores = []
                scores.append((i, s))
        if scores is None:
            return []
        return [self._finding(i, s, flat, g) for i, s in scores]

    def _finding(self, i: int, s: Score, flat: dict[str, Any], g: Any) -> Finding:
        name, etype, title, techniques = self._meta[i]
        if etype == "user":
            etype = _ENTITY_TYPES.get(flat.get("ueba.identity.type"), "user")  # type: ignore[arg-type]
        extra: dict[str, Any] = {"stream": self.kind}
        if g is not None:
            extra["peer_group"] = g.name
        return Finding(
            detector=name,
            entity_type=etype,
            entity=_entity_of(self.kind, flat),
            score=round(s.score, 3),
            title=title,
            explanation=s.explanation,  # type: ignore[arg-type]
            techniques=techniques,
            raw=s.raw,
            extra=extra,
        )


def build_suite(kind: str, config: SuiteConfig | Mapping[str, Any] | None = None) -> DetectorSuite:
    """The detector suite of stream ``kind`` (access, api, telemetry, source).

    Detector names come from :data:`detectors.defaults.DEFAULT_DETECTORS`
    (or ``config.detectors[kind]``) and are resolved through
    :data:`detectors.base.DETECTORS`; names not registered are skipped.
    """
    if kind not in SUITE_KINDS:
        raise ValueError(f"unknown suite kind {kind!r}; expected one of {', '.join(SUITE_KINDS)}")
    if config is None:
        cfg = SuiteConfig()
    elif isinstance(config, SuiteConfig):
        cfg = config
    else:
        cfg = SuiteConfig.from_dict(config)
    load_detectors()
    names = cfg.detectors.get(kind, DEFAULT_DETECTORS[kind])
    classes, params, mins = [], [], []
    for name in names:
        cls = DETECTORS.get(name)
        if cls is None:
            continue
        classes.append(cls)
        params.append(_make_params(cls, cfg.params.get(name)))
        mins.append(float(cfg.min_scores.get(name, MIN_SCORE.get(name, cfg.min_score))))
    return DetectorSuite(kind, classes, params, mins, cfg.protect_score)
