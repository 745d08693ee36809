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

Calibration to identity-days
----------------------------
A detector's own score is a per-test tail probability under its model of
the identity; tested on every event with models whose tails are lighter
than real behaviour, benign identities reach 99-100 every day. The suite
re-calibrates each score (see :class:`~detectors.calibration.DayCalibration`)
against what that detector actually produced before:

* the **peers**: the largest per-identity-hour surprises ``-log10 p`` of the
  identity's peer group (its own hours left out; the global group when the
  peer group is small), extrapolated with an exponential tail and turned
  into a per-day probability (24 hours are 24 chances);
* the **identity itself**: the largest surprises of its own past days, with
  the tail scale borrowed from its peers (so one or two days are enough),
  once they cover a full daily cycle (for detectors with ``dense_scores``,
  a day of the detector actually scoring for it);

and reports ``100 * (1 - p)`` with ``p`` the larger of the two: an
identity-day at least this unusual for the identity *and* for its peers.
A peer reference needs a full day of history first (a nightly job or a
morning ramp cannot be told from an anomaly before the first cycle); a
group's tail scale is shrunk toward the whole population's; and hours that
are extreme for the identity itself are not taught to its peers.
``Finding.raw`` keeps the detector's own score; the explanation's baseline
gets a ``calibration`` entry and its reason says how rare the day is.
``SuiteConfig(calibration=None)`` returns the detectors' own scores.

Cost
----
Every default detector follows the :class:`~detectors.baseline.CoreDetector`
protocol: one assessment per event serves both scoring and learning, and an
explanation is built only for a finding. On the common path (a detector score
below 90 that does not raise the hour's maximum) calibration costs two
comparisons. Above the gate, the peers' tail is computed first and the
identity's own days (and the explanation's details) only when the peers alone
would let the score reach the detector's minimum: the day's ``p`` is the
larger of the two tails, so this takes exactly the same decisions as
computing both. ``python -m detectors.bench`` prints the cost per suite on
realistic traffic.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Callable, Final, Mapping, cast

from mypy_extensions import mypyc_attr
from zlib import crc32

from .base import DETECTORS, Explanation, Finding, Score
from .baseline import CoreDetector
from .calibration import MAX_SURPRISE, DayCalibration, TailSketch, score_from_p, sidak_p, surprise_of_score
from .defaults import DEFAULT_DETECTORS, DEFAULT_MIN_SCORE, MIN_SCORE, load_detectors
from .peers import PeerBaselines, PeerGroup

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
    calibration : DayCalibration or None
        How scores are calibrated to identity-days (see the module
        docstring); ``None`` keeps the detectors' own per-test scores. A dict
        overrides fields of the default.
    """

    detectors: Mapping[str, list[str]] = field(default_factory=dict)
    min_score: float = DEFAULT_MIN_SCORE
    min_scores: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    protect_score: float = 99.0
    calibration: DayCalibration | Mapping[str, Any] | None = DayCalibration()

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


def _make_params(cls: type[Any], override: Any) -> Any:
    if override is None:
        # One shared params object per suite, not one per entity.
        return _default_params(cls)
    if not isinstance(override, Mapping):
        return override
    default = _default_params(cls)
    if default is None or not is_dataclass(default):
        raise ValueError(f"detector {cls.name!r} takes no params overrides")
    return replace(cast(Any, default), **dict(override))


class DetectorSuite:
    """All detectors of one stream kind. Build with :func:`build_suite`.

    Attributes
    ----------
    kind : str
        ``access``, ``api``, ``telemetry`` or ``source``.
    names : tuple of str
        Detector names, in scoring order.
    """

    #: process() takes an ``explain`` hook (the runtime checks for this)
    explains_on_demand: Final = True

    __slots__ = ("kind", "names", "classes", "params", "min_scores", "protect_score", "calibration", "_ids", "_core",
                 "_meta", "_selfprot", "_calkeys", "_rawsur", "_dense", "_plan", "_askable")

    def __init__(self, kind: str, classes: list[type[Any]], params: list[Any], min_scores: list[float],
                 protect_score: float = 99.0, calibration: DayCalibration | None = None) -> None:
        self.kind = kind
        #: DayCalibration, or None for the detectors' own per-test scores
        self.calibration = calibration
        self._calkeys = tuple("calibration." + c.name for c in classes)
        self.classes = tuple(classes)
        self.names = tuple(c.name for c in classes)
        self.params = tuple(params)
        self.min_scores = tuple(min_scores)
        self.protect_score = protect_score
        self._ids = tuple(crc32(n.encode()) & 0xFFFF for n in self.names)
        if _CAL_ID in self._ids or _CAL_ID2 in self._ids:
            raise ValueError(f"a detector name hashes to a calibration record's tag: {self.names}")
        if len(set(_cal_tag(k) for k in self._calkeys)) < len(self._calkeys):
            raise ValueError(f"two detector names share a calibration tag: {self.names}")
        self._core = tuple(issubclass(c, CoreDetector) for c in classes)
        # Detectors that protect their own baseline (windows that must see every
        # event, e.g. extraction and drift) learn every event.
        self._selfprot = tuple(bool(getattr(c, "self_protecting", False)) for c in classes)
        self._rawsur = tuple(bool(getattr(c, "raw_is_surprise", False)) for c in classes)
        self._dense = tuple(bool(getattr(c, "dense_scores", False)) for c in classes)
        #: the ``explain`` hook is asked for these (not for detectors whose explanations
        #: depend on which earlier findings were explained: ``caches_explanations``)
        self._askable = tuple(not getattr(c, "caches_explanations", False) for c in classes)
        #: per detector, what the calibrated path needs (one tuple, unpacked once per event)
        self._plan = tuple(zip(range(len(classes)), self._core, self._selfprot, self._rawsur, self.min_scores,
                               self._dense, self._calkeys))
        self._meta = tuple(
            (c.name, getattr(c, "entity_type", "user"), getattr(c, "title", "") or c.name,
             tuple(getattr(c, "techniques", ())))
            for c in classes
        )

    def __repr__(self) -> str:
        return f"DetectorSuite({self.kind!r}, {list(self.names)})"

    # -- state ---------------------------------------------------------------

    def new_state(self) -> "SuiteState":
        """A fresh per-entity state: one detector instance per detector (a list),
        plus the entity's calibration history (``state.cal``)."""
        return SuiteState([c(p) if p is not None else c() for c, p in zip(self.classes, self.params)])

    def dumps(self, state: list[Any]) -> bytes:
        """Serialise a per-entity state (each detector tagged by a name hash,
        so states survive adding or removing detectors).

        Format ``S2``: records of (uint16 tag, uint16 length, bytes); ``S1`` (uint32
        lengths) is written only if a record is 64 KiB or more, and both load.
        """
        recs = [(self._ids[i], det.to_bytes()) for i, det in enumerate(state)]
        cal = getattr(state, "cal", None)
        if cal is not None and cal.dets:
            recs.append((_CAL_ID2, cal.to_bytes()))
        if all(len(blob) <= 0xFFFF for _tag, blob in recs):
            head, rec = b"S2", _REC2
        else:
            head, rec = b"S1", _REC1
        out = [head]
        for tag, blob in recs:
            out.append(rec.pack(tag, len(blob)))
            out.append(blob)
        return b"".join(out)

    def loads(self, data: bytes) -> "SuiteState":
        """Inverse of :meth:`dumps`; detectors missing from ``data`` start fresh.
        Reads every format :meth:`dumps` ever wrote (``S1`` with version-1
        calibration records, ``S1`` and ``S2`` with version-2 ones)."""
        head = data[:2]
        if head == b"S2":
            rec = _REC2
        elif head == b"S1":
            rec = _REC1
        else:
            raise ValueError("not a detector suite state (bad header)")
        blobs: dict[int, bytes] = {}
        o, n = 2, len(data)
        size = rec.size
        while o < n:
            ident, ln = rec.unpack_from(data, o)
            o += size
            blobs[ident] = data[o : o + ln]
            o += ln
        state = SuiteState()
        for i, c in enumerate(self.classes):
            blob = blobs.get(self._ids[i])
            p = self.params[i]
            if blob is None:
                state.append(c(p) if p is not None else c())
            else:
                state.append(c.from_bytes(blob, p))
        cfg = self.calibration or DayCalibration()
        blob = blobs.get(_CAL_ID2)
        if blob is not None:
            state.cal = _EntityCalibration.from_bytes(blob, self._calkeys, cfg)
        else:
            blob = blobs.get(_CAL_ID)
            if blob is not None:
                state.cal = _EntityCalibration.from_bytes_v1(blob, self._calkeys, cfg)
        return state

    # -- the per-event path ----------------------------------------------------

    def process(self, state: list[Any], flat: dict[str, Any], ts: float,
                peers: PeerBaselines | None = None,
                explain: Callable[[str, str, str, float], bool] | None = None) -> list[Finding]:
        """Score ``flat`` (an ``Event.flat``) at ``ts`` with every detector,
        learn it (with baseline protection), return the Findings.

        ``peers`` is the worker's peer-group store; without it new entities
        stay silent during warm-up instead of being judged against peers.

        ``explain`` (optional) is asked ``(detector, entity_type, entity, score)`` for
        each finding before its explanation is built (calibrated core
        detectors, but for those whose explanations depend on which earlier
        findings were explained, ``caches_explanations``); when it answers False
        the finding comes back with ``explanation=None``. The runtime answers
        False for a repeat it will only count (``streams.pipeline``): explaining
        it would be thrown away. Nothing else depends on it: scores, state, the
        findings returned and every explanation built are the same.
        """
        if peers is None:
            g = None
        elif self.kind == "source":
            g = peers.global_
        else:
            g = peers.view(flat)
        if self.calibration is not None:
            return self._process_calibrated(state, flat, ts, g, explain)
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

    # -- calibrated path ---------------------------------------------------------

    def _process_calibrated(self, state: list[Any], flat: dict[str, Any], ts: float, g: PeerGroup | None,
                            explain: Callable[[str, str, str, float], bool] | None = None) -> list[Finding]:
        cfg = self.calibration
        assert cfg is not None
        cal: _EntityCalibration | None = getattr(state, "cal", None)  # typed: native calls below
        keys = self._calkeys
        if cal is None or cal.dets != keys:
            cal = _EntityCalibration(keys, cfg, old=cal)
            try:
                state.cal = cal  # type: ignore[attr-defined]
            except AttributeError:  # a plain list from an older caller: calibrate without memory
                pass
        if keys and g is not None:
            # A peer reference starts with the group's first event (see _new_peer_sketch).
            k0 = keys[0]
            top = g.parent
            if k0 not in g.stats or (top is not None and k0 not in top.stats):
                self._init_peer_sketches(g, ts)
        who = -1  # the entity's hash, computed when needed
        # ts >= t_chk is implied by a later hour or day (see _EntityCalibration._bound)
        if ts >= cal.t_chk and (int(ts // cfg.block) > cal.hour or int(ts // 86400.0) > cal.day):
            who = _who(self.kind, flat)
            cal.advance(ts, g, who, cfg, self._dense)
        findings: list[Finding] | None = None
        hs = cal.hs
        for det, (i, core, learn_all, rawsur, min_score, dense, key) in zip(state, self._plan):
            expl: Explanation | None = None
            # A core detector is called through its native type: in the compiled build
            # these are direct calls returning unboxed values, not Python method calls.
            cd: CoreDetector | None = None
            if core:
                cd = cast(CoreDetector, det)
                s, raw, ctx = cd._assess(flat, ts, g)
            else:
                sc = det.score_one(flat, ts)
                s, raw, expl = sc.score, sc.raw, sc.explanation
            # The common path: below the gate and not the hour's largest score, the
            # score changes nothing (the surprise -log10 p is only needed for a
            # candidate alert, or to raise the hour's maximum: scores are monotone
            # in p, bar saturation at 100).
            if s >= _RAW_GATE or s > hs[i]:
                if cd is not None:
                    r = cd._surprise(s, raw, ctx) if s > 0.0 else 0.0
                else:
                    r = surprise_of_score(s)
                    if rawsur and s > 0.0 and raw > r:
                        r = min(raw, MAX_SURPRISE)
                if s >= _RAW_GATE:
                    if who == -1:
                        who = _who(self.kind, flat)
                    hit = cal.p_day_hit(i, r, _judge(key, g, ts, cfg, who), who, cfg, ts, dense, min_score)
                    if hit is not None:
                        p, info = hit
                        found: Score | None = None
                        if cd is not None and explain is not None and self._askable[i] and not explain(
                                self.names[i], self._etype(i, flat), _entity_of(self.kind, flat), round(score_from_p(p), 3)):
                            found = Score(score_from_p(p), raw, None)  # the caller only counts it: not explained
                        else:
                            if cd is not None:
                                expl = cd._explain(ctx, g)
                            if expl is not None:
                                found = Score(score_from_p(p), raw, _with_calibration(expl, s, p, info))
                        if found is not None:
                            if findings is None:
                                findings = []
                            findings.append(self._finding(i, found, flat, g))
                cal.observe(i, s, r, ts)
            if cd is not None:
                cd._learn(flat, ts, g, s, ctx)
            elif learn_all or s < self.protect_score:
                det.learn_one(flat, ts)
        return findings or []

    def _init_peer_sketches(self, g: PeerGroup, ts: float) -> None:
        cfg = self.calibration
        grp: PeerGroup | None = g
        k0 = self._calkeys[0]
        while grp is not None:
            if k0 not in grp.stats:
                for key, dense in zip(self._calkeys, self._dense):
                    grp.stats.setdefault(key, _new_peer_sketch(cast(DayCalibration, cfg), ts, dense))
            grp = grp.parent

    def _etype(self, i: int, flat: dict[str, Any]) -> str:
        """Detector ``i``'s entity type for this event (a "user" detector's entity is
        typed by ``ueba.identity.type``: service account, API key...)."""
        etype: str = self._meta[i][1]
        if etype == "user":
            etype = _ENTITY_TYPES.get(flat.get("ueba.identity.type"), "user")  # type: ignore[arg-type]
        return etype

    def _finding(self, i: int, s: Score, flat: dict[str, Any], g: Any) -> Finding:
        name, _etype, title, techniques = self._meta[i]
        etype = self._etype(i, flat)
        extra: dict[str, Any] = {"stream": self.kind}
        if g is not None:
            extra["peer_group"] = g.name
        return Finding(
            detector=name,
            entity_type=etype,
            entity=_entity_of(self.kind, flat),
            score=round(s.score, 3),
            title=title,
            explanation=s.explanation,
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
    calib = cfg.calibration
    if isinstance(calib, Mapping):
        calib = replace(DayCalibration(), **dict(calib))
    return DetectorSuite(kind, classes, params, mins, cfg.protect_score, calib)


# ---------------------------------------------------------------------------
# Per-entity calibration history
# ---------------------------------------------------------------------------

#: A detector score below this (1 in 10 per test) is never calibrated into an alert.
_RAW_GATE = 90.0

#: Tag of the calibration record in a serialised state (not a detector name hash
#: collision: detector tags are crc32 & 0xFFFF of names, this one is reserved).
_CAL_ID = 0xFFFF
_CAL_HEAD = struct.Struct("<qqB")
_CAL_DET = struct.Struct("<IffdH")
#: Tag of the version-2 calibration record (the one written now; 0xFFFF records still load).
_CAL_ID2 = 0xFFFE
#: per detector: tag, hour and day maxima, first score, own days' n and last update, kept days
_CAL_DET2 = struct.Struct("<HffdfdB")
_OWN_ITEM = struct.Struct("<fI")  # value, minute
_OWN_ITEM_WHO = struct.Struct("<fII")  # value, producer, minute (bit 7 of the count: with producers)
#: suite records: (tag, length) in formats S1 and S2
_REC1 = struct.Struct("<HI")
_REC2 = struct.Struct("<HH")


def _cal_tag(key: str) -> int:
    return crc32(key.encode()) & 0xFFFF


def _who(kind: str, flat: dict[str, Any]) -> int:
    """The 32-bit hash an entity's hours carry in its peers' sketches (leave-one-out)."""
    entity = _entity_of(kind, flat)
    return crc32(entity.encode()) if entity else 0


def _judge(key: str, g: PeerGroup | None, ts: float, cfg: DayCalibration,
           who: int | None = None) -> tuple[TailSketch | None, str | None, float]:
    """The peer sketch an entity of group ``g`` is judged against: the group's,
    else the global one; only once it has a day of history and enough hours.
    With it, the prior scale of its tail: a group's tail scale is shrunk toward
    the whole population's (the global sketch's, empirical Bayes), the global
    one toward ``cfg.sigma0``."""
    grp = g
    while grp is not None:
        sk = grp.stats.get(key)
        if sk is not None and sk.n >= cfg.min_blocks and ts - sk.since >= cfg.maturity:
            s0 = cfg.sigma0
            top = grp.parent.stats.get(key) if grp.parent is not None else None
            if top is not None and top.n >= cfg.min_blocks:
                s0 = max(cfg.sigma0, top.sigma(who))
            return sk, grp.name, s0
        grp = grp.parent
    return None, None, cfg.sigma0


def _teach(key: str, g: PeerGroup | None) -> list[TailSketch]:
    """The peer sketches an entity's closed hours go to: its group's and the global one."""
    out = []
    grp = g
    while grp is not None:
        sk = grp.stats.get(key)
        if sk is not None:
            out.append(sk)
        grp = grp.parent
    return out


@mypyc_attr(native_class=False)  # mypyc cannot compile a native subclass of list
class SuiteState(list):
    """A per-entity suite state: the detectors (this list, in suite order) and
    the entity's calibration history in ``cal``."""

    __slots__ = ("cal",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.cal: _EntityCalibration | None = None


def _new_peer_sketch(cfg: DayCalibration, ts: float, dense: bool) -> TailSketch:
    """A group's reference for one detector. Its history (for ``maturity``) starts
    with the group's first event, or, for a detector with ``dense_scores`` (one
    that scores every event once it is warm: volumes, drift), with the first
    hour it scored anything: while such a detector warms up it sees nothing of
    the day, and a nightly job it missed must not look new the next night."""
    return TailSketch(cfg.peer_k, per=cfg.peer_per, sigma0=cfg.sigma0, prior=cfg.prior, half_life=cfg.half_life,
                      memory=cfg.memory, **({} if dense else {"since": ts}))


def _new_own_sketch(cfg: DayCalibration) -> TailSketch:
    return TailSketch(cfg.own_k, per=cfg.own_k, sigma0=cfg.sigma0, prior=cfg.prior, half_life=cfg.half_life,
                      memory=cfg.memory)


class _EntityCalibration:
    """One entity's running hour and day maxima of each detector's surprise, and
    its own past days' largest maxima (a small :class:`TailSketch` per detector)."""

    __slots__ = ("dets", "hour", "day", "hmax", "dmax", "own", "first", "hs", "block", "t_chk")

    def __init__(self, dets: tuple[str, ...], cfg: DayCalibration, old: "_EntityCalibration | None" = None) -> None:
        self.dets = dets
        self.hour = -1
        self.day = -1
        self.hmax = [0.0] * len(dets)
        self.dmax = [0.0] * len(dets)
        #: when each detector first scored anything for this entity
        self.first = [math.inf] * len(dets)
        #: the hour's largest raw score per detector (transient: only saves work)
        self.hs = [0.0] * len(dets)
        self.own = [_new_own_sketch(cfg) for _ in dets]
        self.block = cfg.block
        if old is not None:  # the suite's detectors changed: keep what still applies
            self.hour, self.day = old.hour, old.day
            for j, key in enumerate(old.dets):
                if key in dets:
                    i = dets.index(key)
                    self.hmax[i], self.dmax[i], self.own[i] = old.hmax[j], old.dmax[j], old.own[j]
                    self.first[i] = old.first[j]
        self._bound()

    def _bound(self) -> None:
        """Set ``t_chk``: no event time below it is in a later hour or day than the
        current ones, so the suite compares one float per event (a second less
        than the boundary, so float division at the boundary cannot matter)."""
        self.t_chk = min((self.hour + 1) * self.block, (self.day + 1) * 86400.0) - 1.0

    def own_ref(self, i: int, ts: float, dense: bool, cfg: DayCalibration) -> TailSketch | None:
        """The entity's own days, once they make a reference: a closed day (a full
        daily cycle of the detector scoring, for a detector with dense scores)."""
        own = self.own[i]
        if own.n < 1.0 or (dense and ts - self.first[i] < cfg.maturity):
            return None
        return own

    def advance(self, ts: float, g: PeerGroup | None, who: int, cfg: DayCalibration, dense: tuple[bool, ...]) -> None:
        """Close the hour (teach it to the peers) and the day (keep it) that ``ts`` ends."""
        h = int(ts // cfg.block)
        if h > self.hour:
            if self.hour >= 0:
                t_end = (self.hour + 1) * cfg.block
                for i, r in enumerate(self.hmax):
                    key = self.dets[i]
                    own = self.own_ref(i, t_end, dense[i], cfg)
                    if own is not None:
                        judge, _name, s0 = _judge(key, g, ts, cfg, who)
                        if judge is not None:
                            s0 = judge.sigma(who, s0)
                        if own.tail(r, sigma0=s0) < cfg.protect:
                            continue  # extreme for the identity itself: not a lesson for its peers
                    for sk in _teach(key, g):
                        sk.update(r, t_end, who)
            self.hour = h
            self.hmax = [0.0] * len(self.dets)
            self.hs = [0.0] * len(self.dets)
        d = int(ts // 86400.0)
        if d > self.day:
            if self.day >= 0:
                t_end = (self.day + 1) * 86400.0
                for i, r in enumerate(self.dmax):
                    self.own[i].update(r, t_end)
            self.day = d
            self.dmax = [0.0] * len(self.dets)
        self._bound()

    def observe(self, i: int, s: float, r: float, ts: float) -> None:
        """Detector ``i`` scored ``s`` (surprise ``r``) on an event of the current hour."""
        if s > 0.0 and ts < self.first[i]:
            self.first[i] = ts
        if s > self.hs[i]:
            self.hs[i] = s
        if r > self.hmax[i]:
            self.hmax[i] = r
        if r > self.dmax[i]:
            self.dmax[i] = r

    def p_day(self, i: int, r: float, ref: tuple[TailSketch | None, str | None, float], who: int,
              cfg: DayCalibration, ts: float, dense: bool) -> tuple[float, dict[str, Any]]:
        """Per-identity-day tail probability of surprise ``r`` of detector ``i``, and what it rests on."""
        judge, name, s0 = ref
        if judge is None:
            return 1.0, {"reference": "none yet (a peer reference needs a day of history)"}
        p_peer = sidak_p(judge.tail(r, who, s0), cfg.blocks_per_day)
        info: dict[str, Any] = {"peer_group": name, "peer_hours": round(judge.n, 1),
                                "p_peers": float(f"{p_peer:.3g}")}
        own = self.own_ref(i, ts, dense, cfg)
        p = p_peer
        if own is not None:
            p_own = own.tail(r, sigma0=judge.sigma(who, s0))
            info.update(own_days=round(own.n, 1), p_own=float(f"{p_own:.3g}"))
            p = max(p, p_own)
        return p, info

    def p_day_hit(self, i: int, r: float, ref: tuple[TailSketch | None, str | None, float], who: int,
                  cfg: DayCalibration, ts: float, dense: bool,
                  min_score: float) -> tuple[float, dict[str, Any]] | None:
        """:meth:`p_day` when its score reaches ``min_score``, else None: the same
        decision, but the identity's own days (and the details) are only looked at
        once the peers alone would let the score through (``p`` is the larger of the
        two tails, so a day not rare enough for the peers is not rare enough for both)."""
        judge, name, s0 = ref
        if judge is None:
            if score_from_p(1.0) < min_score:
                return None
            return self.p_day(i, r, ref, who, cfg, ts, dense)
        p_peer = sidak_p(judge.tail(r, who, s0), cfg.blocks_per_day)
        if score_from_p(p_peer) < min_score:
            return None
        p = p_peer
        own = self.own_ref(i, ts, dense, cfg)
        if own is not None:
            p_own = own.tail(r, sigma0=judge.sigma(who, s0))
            if p_own > p:
                p = p_own
                if score_from_p(p) < min_score:
                    return None
        info: dict[str, Any] = {"peer_group": name, "peer_hours": round(judge.n, 1),
                                "p_peers": float(f"{p_peer:.3g}")}
        if own is not None:
            info.update(own_days=round(own.n, 1), p_own=float(f"{p_own:.3g}"))
        return p, info

    def to_bytes(self) -> bytes:
        """Version 2: per detector a 16-bit tag, and the own days' sketch without what
        the suite never reads from it (``since``; producers, always 0)."""
        out = [_CAL_HEAD.pack(self.hour, self.day, len(self.dets))]
        for key, hm, dm, first, own in zip(self.dets, self.hmax, self.dmax, self.first, self.own):
            top = own.top
            with_who = any(w for _v, w, _t in top)
            out.append(_CAL_DET2.pack(_cal_tag(key), hm, dm, first, own.n, own.last, len(top) | (0x80 if with_who else 0)))
            if with_who:
                out.extend(_OWN_ITEM_WHO.pack(v, w & 0xFFFFFFFF, max(0, int(t // 60.0))) for v, w, t in top)
            else:
                out.extend(_OWN_ITEM.pack(v, max(0, int(t // 60.0))) for v, _w, t in top)
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes, dets: tuple[str, ...], cfg: DayCalibration) -> "_EntityCalibration":
        """Inverse of :meth:`to_bytes` (version 2)."""
        hour, day, m = _CAL_HEAD.unpack_from(data)
        o = _CAL_HEAD.size
        saved: dict[int, tuple[float, float, float, TailSketch]] = {}
        for _ in range(m):
            tag, hm, dm, first, n, last, cnt = _CAL_DET2.unpack_from(data, o)
            o += _CAL_DET2.size
            own = _new_own_sketch(cfg)
            own.n, own.last = n, last
            if cnt & 0x80:
                for _ in range(cnt & 0x7F):
                    v, w, minute = _OWN_ITEM_WHO.unpack_from(data, o)
                    o += _OWN_ITEM_WHO.size
                    own.top.append((v, w, minute * 60.0))
            else:
                for _ in range(cnt):
                    v, minute = _OWN_ITEM.unpack_from(data, o)
                    o += _OWN_ITEM.size
                    own.top.append((v, 0, minute * 60.0))
            saved[tag] = (hm, dm, first, own)
        return cls._restored(dets, cfg, hour, day, saved, _cal_tag)

    @classmethod
    def from_bytes_v1(cls, data: bytes, dets: tuple[str, ...], cfg: DayCalibration) -> "_EntityCalibration":
        """A version-1 record (32-bit tags, the own days' full :class:`TailSketch` bytes)."""
        hour, day, m = _CAL_HEAD.unpack_from(data)
        o = _CAL_HEAD.size
        saved: dict[int, tuple[float, float, float, TailSketch]] = {}
        for _ in range(m):
            h32, hm, dm, first, ln = _CAL_DET.unpack_from(data, o)
            o += _CAL_DET.size
            own = TailSketch.from_bytes(data[o:o + ln], k=cfg.own_k, per=cfg.own_k, sigma0=cfg.sigma0,
                                        prior=cfg.prior, half_life=cfg.half_life, memory=cfg.memory)
            o += ln
            saved[h32] = (hm, dm, first, own)
        return cls._restored(dets, cfg, hour, day, saved, lambda key: crc32(key.encode()))

    @classmethod
    def _restored(cls, dets: tuple[str, ...], cfg: DayCalibration, hour: int, day: int,
                  saved: dict[int, tuple[float, float, float, TailSketch]], tag: Any) -> "_EntityCalibration":
        c = cls(dets, cfg)
        c.hour, c.day = hour, day
        c._bound()
        for i, key in enumerate(dets):
            got = saved.get(tag(key))
            if got is not None:
                c.hmax[i], c.dmax[i], c.first[i], c.own[i] = got
        return c


def _with_calibration(expl: Explanation, raw_score: float, p: float, info: dict[str, Any]) -> Explanation:
    """The detector's explanation, with what the calibrated score rests on."""
    one_in = 1.0 / p if p > 0.0 else math.inf
    info = {"detector_score": round(raw_score, 4), "p_identity_day": float(f"{p:.3g}"), **info}
    base = dict(expl.baseline) if isinstance(expl.baseline, dict) else {"value": expl.baseline}
    base["calibration"] = info
    rare = f"about 1 in {one_in:,.0f}" if one_in < 1e9 else "rarer than 1 in a billion"
    who = f"its peer group {info['peer_group']!r}" if info.get("peer_group") else "its peers"
    reason = (f"{expl.reason.rstrip()} For this identity and {who}, an identity-day this unusual "
              f"comes up {rare} identity-days.")
    return Explanation(expl.feature, expl.observed, base, expl.peers, expl.window, reason)
