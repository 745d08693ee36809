"""Telemetry drift per model (``telemetry_drift``), with caller attribution.

One detector instance holds the state of one model (``ueba.model.id``). It
compares the model's recent telemetry with a *reference* taken right after
the last ``model-deploy`` event (or the first events ever seen):

* variables: ``ueba.telemetry.prediction`` (class label, or a number),
  ``ueba.telemetry.confidence`` (0-1) and up to ``max_features`` entries of
  ``ueba.telemetry.features`` (the first numeric names the model reports);
* fixed bins: numeric variables get ``bins`` quantile bins from the first
  ``edge_samples`` events; class labels get one bin each for the first
  ``bins - 1`` classes, the rest share an "other" bin;
* reference: the histograms of the first ``reference_size`` events, frozen;
* current window: exponentially decayed histograms with a half-life of
  ``window_halflife`` events (a sliding window in O(bins) memory);
* per variable: PSI, two-sample KS (numeric variables, on the bins) and
  Jensen-Shannon divergence (base 2, in [0, 1]), vectorised over variables.

Calibration: under no drift ``PSI * n_r n_w / (n_r + n_w)`` is approximately
chi-square with (bins - 1) degrees of freedom (PSI is the symmetrised KL,
whose second-order term is the two-sample chi-square; ``n_w`` is the decayed
window's effective sample size); KS uses the Kolmogorov distribution. Both
are applied to the excess over ``min_psi`` / ``min_ks``, the smallest shift
worth reporting: a finite reference is itself a sample, and without a
margin its own sampling error (a reference with 12% of a 9% class) would
make every later window "significant". A
variable's p is the smaller of the two (Bonferroni x2); the event's p is the
Šidák-combined smallest over the variables it carries, ``score = 100 * (1 -
p)`` and ``raw = -log10(p)``. An event only scores when it falls in a bin its
variable is over-represented in (the event is part of the shift): when the
drift ends, the new normal events do not inherit the old window's alarm.
Score direction: higher = stronger drift. Warm-up: score 0 until the
reference is complete (``reference_size`` events after the last deploy)
and the window holds ``min_window`` effective events.

Cost (the per-event path): the divergences and their tail probabilities
are window statistics; computing them for every event (48 bins, three
divergences, two special functions per variable) cost ~400 µs. They are
computed every ``refresh_every`` events of the window instead (when
``learn_one`` adds the event that completes a block), or once
``refresh_seconds`` of event time passed since the last computation, in
plain Python, and the result is kept in the state: per variable its ``p``,
whether it is testable, and which bins are over-represented. A variable
whose ``p`` is approaching significance (between ``watch_floor`` and
``watch_p``) is recomputed at every event, so an emerging drift is flagged
as early as with per-event statistics. An event is scored against the last
computation: its Šidák-combined ``p`` over the testable variables it
carries, where a variable only counts if the event's own bin was
over-represented then (part of the shift). So, outside that approach band,
scores lag the window by at most ``refresh_every - 1`` events (default 16;
the window's half-life is 50 events) or ``refresh_seconds`` (600), and an
event's own contribution to the window is not part of its score. The
explanation (observed PSI, KS, JS, bin shares, callers) is computed on the
window including the event for the first finding of a variable's bin (and
caller) after a computation; later findings until the next computation reuse
those numbers. Learning is O(variables) per event: the window's decay is a
single running scale factor instead of a multiplication of every bin.

Attribution: a space-saving table keeps decayed histograms for the
``top_callers`` heaviest callers (``ueba.telemetry.caller_api_key``, else
``organization.id``). The explanation names the caller(s) whose removal from
the window lowers the divergence most, with their share of recent traffic:
one poisoning tenant among many is named even if the model-level shift is
diluted.

A ``model-deploy`` event (``event.action``) resets the model's reference.
Telemetry from a version other than the reference's, with no deploy event,
is *not* a reset: a silently swapped model (AML.T0018) should show as drift;
the explanation notes the version.

The reference is frozen, so drifted traffic never becomes the reference; the
current window must see every event (``self_protecting = True`` tells the
runtime not to withhold high-scoring events from ``learn_one``).

State: at most ~1.7 KiB per model whatever the stream (fixed-size arrays,
truncated names, bounded caller table). Serialised states of version 1
(before the periodic refresh) still load; their refresh is computed on
load.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec
import numpy as np
from scipy.special import chdtrc, kolmogorov

from ._states import _DriftState  # msgspec Structs stay uncompiled (see _states)
from ._tails import P_FLOOR, RAW_P_FLOOR, num, text
from .base import Explanation, Score, register
from .baseline import CoreDetector

__all__ = ["TelemetryDriftParams", "TelemetryDriftDetector", "psi", "ks_statistic", "js_divergence"]


# --- divergences on histograms (last axis = bins), vectorised -----------------


def psi(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Population stability index ``sum((q - p) * ln(q / p))`` of normalised histograms.

    ``p``, ``q``: arrays of shape (..., n_bins) with no zero entries (smooth first).
    """
    return np.sum((q - p) * np.log(q / p), axis=-1)


def ks_statistic(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Two-sample Kolmogorov-Smirnov statistic on binned data (ordered bins)."""
    return np.max(np.abs(np.cumsum(p, axis=-1) - np.cumsum(q, axis=-1)), axis=-1)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits (0..1); ``scipy.spatial.distance.jensenshannon(p, q, base=2) ** 2``."""
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0) / np.where(m > 0, m, 1.0)), 0.0)
        b = np.where(q > 0, q * np.log2(np.where(q > 0, q, 1.0) / np.where(m > 0, m, 1.0)), 0.0)
    return np.maximum(0.5 * (a.sum(axis=-1) + b.sum(axis=-1)), 0.0)


# the same on one histogram (plain lists: the explanation of one variable)


def _psi(q: list[float], p: list[float]) -> float:
    out = 0.0
    log = math.log
    for qi, pi in zip(q, p):
        out += (qi - pi) * log(qi / pi)
    return out


def _ks(p: list[float], q: list[float]) -> float:
    out = cum = 0.0
    for pi, qi in zip(p, q):
        cum += pi - qi
        if abs(cum) > out:
            out = abs(cum)
    return out


def _js(p: list[float], q: list[float]) -> float:
    a = 0.0
    for pi, qi in zip(p, q):
        mi = 0.5 * (pi + qi)
        if pi > 0:
            a += pi * math.log2(pi / mi)
        if qi > 0:
            a += qi * math.log2(qi / mi)
    return max(0.5 * a, 0.0)


# --- parameters and state ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TelemetryDriftParams:
    """Hyperparameters of :class:`TelemetryDriftDetector` (counts are events).

    ``refresh_every``: window events between two computations of the
    divergences and their tail probabilities (see "Cost" in the module
    docstring); 1 recomputes them for every event. ``refresh_seconds``: they
    are also recomputed once this much event time passed since the last
    computation (a quiet model's scores then lag by seconds, not by a block
    of events that takes long to arrive); 0 turns that off. A variable whose
    last ``p`` is in ``(watch_floor, watch_p]`` is recomputed at every event
    (``watch_p = 0`` turns that off).
    """

    bins: int = 8
    max_features: int = 4
    edge_samples: int = 32
    reference_size: int = 300
    window_halflife: float = 50.0
    min_window: float = 30.0
    top_callers: int = 4
    smoothing: float = 0.5
    min_psi: float = 0.05
    min_ks: float = 0.05
    name_chars: int = 32
    refresh_every: int = 16
    refresh_seconds: float = 600.0
    watch_p: float = 1e-2
    watch_floor: float = 1e-12

    def __post_init__(self) -> None:
        if not 2 <= self.bins <= 64 or not 8 <= self.edge_samples <= self.reference_size:
            raise ValueError("need 2 <= bins <= 64 and 8 <= edge_samples <= reference_size")
        if not 0 <= self.max_features <= 32 or not 0 <= self.top_callers <= 32:
            raise ValueError("max_features and top_callers must be in 0..32")
        if self.refresh_every < 1:
            raise ValueError("refresh_every must be >= 1")

    @property
    def warmup(self) -> int:
        """Events after a deploy before the model is scored (the reference)."""
        return self.reference_size

    @property
    def decay(self) -> float:
        return 0.5 ** (1.0 / self.window_halflife)


_PRED, _CONF = 0, 1
_UNKNOWN, _CATEGORICAL, _NUMERIC = 0, 1, 2
_NAN = math.nan

#: Below this running scale the window's stored values are renormalised (they
#: grow as 1 / scale; float32 holds them easily up to far beyond 1e15).
_MIN_SCALE = 1e-15

#: State versions: 1 stored the window as plain values; 2 as stored values
#: times a running ``scale``, with the last refresh (``pv``, ``over``, ``elig``).
_VERSION = 2


class TelemetryDriftDetector(CoreDetector):
    """Per-model distribution drift with caller attribution. See the module docstring.

    >>> import random
    >>> rnd = random.Random(0)
    >>> det = TelemetryDriftDetector()
    >>> def ev(conf, caller):
    ...     return {"ueba.model.id": "m", "ueba.telemetry.confidence": conf,
    ...             "ueba.telemetry.caller_api_key": caller}
    >>> for i in range(600):
    ...     det.learn_one(ev(rnd.betavariate(9, 1), f"k{i % 3}"), float(i))
    >>> for i in range(100):  # one caller starts sending low-confidence traffic
    ...     det.learn_one(ev(rnd.betavariate(2, 2) if i % 2 else rnd.betavariate(9, 1),
    ...                      "evil" if i % 2 else f"k{i % 3}"), 600.0 + i)
    >>> s = det.score_one(ev(0.4, "evil"), 700.0)
    >>> s.score > 99, s.explanation.feature, s.explanation.observed["callers"][0]["caller"]
    (True, 'ueba.telemetry.confidence', 'evil')
    """

    name: ClassVar[str] = "telemetry_drift"
    Params: ClassVar[type] = TelemetryDriftParams
    entity_type: ClassVar[str] = "model"
    entity_field: ClassVar[str] = "ueba.model.id"
    techniques: ClassVar[tuple[str, ...]] = ("AML.T0020", "AML.T0018", "AML.T0015")
    title: ClassVar[str] = "Model telemetry drifted from its post-deploy reference"
    #: ``Score.raw`` is ``-log10 p`` (not floored at 1e-15 like the score): the suite's calibration uses it.
    raw_is_surprise: ClassVar[bool] = True
    #: Scores every event once warm (the suite's calibration starts its clock when it first does).
    dense_scores: ClassVar[bool] = True
    #: The reference is frozen; the current window must see every event.
    self_protecting: ClassVar[bool] = True
    #: explanation numbers are cached in memory between refreshes (see _explain), so
    #: which findings get explained moves them: the suite explains every finding
    caches_explanations: ClassVar[bool] = True

    __slots__ = (
        "deploys", "n", "model_version", "pred_kind", "classes", "features", "buf",
        "buf_len", "active", "edges", "ref", "cur", "s2", "scale", "callers", "counts", "hists",
        "elig", "pv", "over", "rts", "_lnps", "_xcache", "_wmask", "_lam", "_eb",
    )  # fmt: skip

    def __init__(self, params: TelemetryDriftParams | None = None) -> None:
        super().__init__(params)
        self.deploys = 0
        self._reset(None)

    @property
    def n_vars(self) -> int:
        return 2 + self.params.max_features

    def _reset(self, model_version: str | None) -> None:
        p: TelemetryDriftParams = self.params
        v, b = self.n_vars, p.bins
        self.n = 0
        self.model_version = model_version
        self.pred_kind = _UNKNOWN
        self.classes: list[str] = []
        self.features: list[str] = []
        #: the first edge_samples events' values, row-major (NaN = missing)
        self.buf = array("f", [_NAN]) * (p.edge_samples * v)
        self.buf_len = 0
        self.active = 0  # bit v: variable v has bins
        #: per variable, its bins - 1 upper bin edges (float32 values)
        self.edges: list[list[float]] = [[0.0] * (b - 1) for _ in range(v)]
        self.ref = array("f", bytes(4 * v * b))
        #: the decayed window: actual counts are ``cur * scale``, ``s2 * scale**2``,
        #: ``counts * scale`` and ``hists * scale`` (one multiplication per event
        #: instead of one per bin; renormalised below _MIN_SCALE)
        self.cur = array("f", bytes(4 * v * b))
        self.s2 = array("d", bytes(8 * v))
        self.scale = 1.0
        self.callers: list[str] = []
        self.counts = array("f", bytes(4 * p.top_callers))
        self.hists = array("f", bytes(4 * p.top_callers * v * b))
        # the last refresh: bit v of elig = variable v testable; its p; its over-represented bins
        self.elig = 0
        self.pv: list[float] = []
        self.over: list[int] = []
        self.rts = -math.inf  # event time of the last refresh
        self._lnps: list[tuple | None] | None = None  # per variable: smoothed reference shares (derived, not stored)
        self._xcache: dict | None = None  # explanation numbers since the last refresh (derived, not stored)
        self._wmask = 0  # variables in the approach band (derived from pv and elig)
        self._eb: bytes | None = None  # the edges as serialised (derived)
        self._lam = p.decay

    # --- reading an event -------------------------------------------------------

    def _var_names(self) -> list[str]:
        return ["ueba.telemetry.prediction", "ueba.telemetry.confidence"] + [
            f"ueba.telemetry.features.{f}" for f in self.features
        ]

    def _var_name(self, v: int) -> str:
        """``_var_names()[v]``, without building the list (the explanation's path)."""
        if v == _PRED:
            return "ueba.telemetry.prediction"
        if v == _CONF:
            return "ueba.telemetry.confidence"
        return "ueba.telemetry.features." + self.features[v - 2]

    def _values(self, x: dict[str, Any], grow: bool) -> list[float | None]:
        """Raw values per variable (class index for labels), None when missing.

        ``grow``: may add classes/feature names (learning, reference phase only).
        """
        p: TelemetryDriftParams = self.params
        out: list[float | None] = [None] * self.n_vars
        pred = x.get("ueba.telemetry.prediction")
        if pred is not None:
            if isinstance(pred, bool):
                pred = str(pred).lower()
            if isinstance(pred, str):
                kind = _CATEGORICAL
            else:
                fpred = num(pred)
                kind = _NUMERIC if fpred is not None else _UNKNOWN
            if kind != _UNKNOWN:
                if self.pred_kind == _UNKNOWN and grow and self.buf_len < p.edge_samples:
                    self.pred_kind = kind
                if kind == self.pred_kind == _NUMERIC:
                    out[_PRED] = fpred
                elif kind == self.pred_kind == _CATEGORICAL:
                    label = text(pred, p.name_chars) or ""
                    try:
                        out[_PRED] = float(self.classes.index(label))
                    except ValueError:
                        if grow and self.n < p.reference_size and len(self.classes) < p.bins - 1:
                            self.classes.append(label)
                            out[_PRED] = float(len(self.classes) - 1)
                        else:
                            out[_PRED] = float(p.bins - 1)
        conf = num(x.get("ueba.telemetry.confidence"))
        if conf is not None and 0.0 <= conf <= 1.0:
            out[_CONF] = conf
        feats = x.get("ueba.telemetry.features")
        if isinstance(feats, dict) and p.max_features:
            if grow and not self.features and self.buf_len < p.edge_samples:
                for k, val in feats.items():
                    if len(self.features) >= p.max_features:
                        break
                    name = text(k, p.name_chars)
                    if name and name not in self.features and num(val) is not None:
                        self.features.append(name)
            for i, name in enumerate(self.features):
                val = num(feats.get(name))
                if val is not None:
                    out[2 + i] = val
        return out

    def _bins(self, vals: list[float | None]) -> list[tuple[int, int]]:
        """(variable, bin) for each variable the event carries that has bins."""
        active = self.active
        out = []
        for v, val in enumerate(vals):
            if val is None or not active >> v & 1:
                continue
            if v == _PRED and self.pred_kind == _CATEGORICAL:
                b = int(val)
                out.append((v, b if b < self.params.bins - 1 else self.params.bins - 1))
            else:
                # bisect_right == the number of edges <= val (edges are sorted quantiles)
                out.append((v, bisect_right(self.edges[v], val)))
        return out

    def _event_bins(self, x: dict[str, Any]) -> list[tuple[int, int]]:
        """``_bins(_values(x, grow=False))`` in one pass, once the bins are fixed."""
        p: TelemetryDriftParams = self.params
        active = self.active
        out = []
        if active & 1:
            pred = x.get("ueba.telemetry.prediction")
            if pred is not None:
                kind = self.pred_kind
                if type(pred) is str or isinstance(pred, (str, bool)):
                    if kind == _CATEGORICAL:
                        if type(pred) is str and len(pred) * 4 <= p.name_chars:
                            label = pred  # text(pred, name_chars) of a short string: itself
                        else:
                            if isinstance(pred, bool):
                                pred = str(pred).lower()
                            label = text(pred, p.name_chars) or ""
                        classes = self.classes
                        out.append((_PRED, classes.index(label) if label in classes else p.bins - 1))
                elif kind == _NUMERIC:
                    val = num(pred)
                    if val is not None:
                        out.append((_PRED, bisect_right(self.edges[_PRED], val)))
        if active & 2:
            conf = x.get("ueba.telemetry.confidence")
            if type(conf) is not float or conf - conf != 0.0:
                conf = num(conf)
            if conf is not None and 0.0 <= conf <= 1.0:
                out.append((_CONF, bisect_right(self.edges[_CONF], conf)))
        if active >> 2:
            feats = x.get("ueba.telemetry.features")
            if isinstance(feats, dict):
                edges = self.edges
                v = 2
                for name in self.features:
                    if active >> v & 1:
                        val = feats.get(name)
                        if type(val) is not float or val - val != 0.0:
                            val = num(val)
                        if val is not None:
                            out.append((v, bisect_right(edges[v], val)))
                    v += 1
        return out

    def _caller(self, x: dict[str, Any]) -> str | None:
        key = x.get("ueba.telemetry.caller_api_key")
        if type(key) is str and 0 < len(key) * 4 <= self.params.name_chars:
            return key  # text(key, name_chars) of a short string: itself
        key = text(key, self.params.name_chars)
        if key:
            return key
        org = text(x.get("organization.id"), self.params.name_chars - 4)
        return f"org:{org}" if org else None

    # --- the streaming protocol -------------------------------------------------------

    def score_one(self, x: dict[str, Any], ts: float, peers: Any = None) -> Score:
        """Score one telemetry event against the model's reference; pure."""
        s, raw, ctx = self._assess(x, ts, None)
        if s <= 0.0:
            return Score(0.0)
        return Score(s, raw, self._explain(ctx, None))

    def learn_one(self, x: dict[str, Any], ts: float, peers: Any = None, score: float | None = None) -> None:
        """Add one telemetry event (a deploy event resets the reference)."""
        self._learn(x, ts, None, 0.0, None)

    # --- the CoreDetector hooks (what the suite calls) -----------------------------------

    def _assess(self, x: dict[str, Any], ts: float, peers: Any) -> tuple[float, float, Any]:
        if self.n < self.params.reference_size or not self.pv or x.get("event.action") == "model-deploy":
            return 0.0, 0.0, None
        bins = self._event_bins(x)
        elig, pv, over = self.elig, self.pv, self.over
        k = 0
        best = 1.0
        hit = None
        for v, b in bins:
            if elig >> v & 1:
                k += 1
                if over[v] >> b & 1 and pv[v] < best:
                    best, hit = pv[v], (v, b)
        if hit is None:
            # in no over-represented bin (or no testable variable): not part of any shift
            return 0.0, 0.0, (bins, x, None, 1.0)
        # sidak(best, k), score_of(p_all), surprise(p_all), inlined (0 <= best < 1 here)
        p_all = -math.expm1(k * math.log1p(-best)) if k > 1 else best
        if p_all >= 1.0:
            return 0.0, 0.0, (bins, x, None, 1.0)
        return (100.0 * (1.0 - (p_all if p_all > P_FLOOR else P_FLOOR)),
                -math.log10(p_all if p_all > RAW_P_FLOOR else RAW_P_FLOOR), (bins, x, hit, best))

    def _learn(self, x: dict[str, Any], ts: float, peers: Any, score: float, ctx: Any) -> None:
        p: TelemetryDriftParams = self.params
        if x.get("event.action") == "model-deploy":  # detectors.change.is_deploy, inlined
            self.deploys += 1
            self._reset(text(x.get("ueba.model.version")))
            return
        if self.n == 0 and self.model_version is None:
            self.model_version = text(x.get("ueba.model.version"))
        if self.buf_len < p.edge_samples:
            vals = self._values(x, grow=True)
            v = self.n_vars
            self.buf[self.buf_len * v : (self.buf_len + 1) * v] = array("f", [_NAN if e is None else e for e in vals])
            self.buf_len += 1
            self.n += 1
            if self.buf_len == p.edge_samples:
                self._fit_edges()
            return
        if self.n < p.reference_size:
            ref = self.ref
            nb = p.bins
            for v, b in self._bins(self._values(x, grow=True)):
                ref[v * nb + b] += 1.0
            self.n += 1
            return
        # The window: nothing can grow any more, so the assessment's bins are the event's.
        bins = ctx[0] if ctx is not None else self._event_bins(x)
        self.n += 1
        scale = self.scale * self._lam
        inv = 1.0 / scale
        cur, s2, nb = self.cur, self.s2, p.bins
        inv2 = inv * inv
        for v, b in bins:
            cur[v * nb + b] += inv
            s2[v] += inv2
        if p.top_callers:
            self._learn_caller(self._caller(x), bins, inv)
        self.scale = scale
        if scale < _MIN_SCALE:
            self._renormalise()
        if (self.n - p.reference_size) % p.refresh_every == 0:
            self._refresh(ts)
        elif p.refresh_seconds > 0.0 and (t := ts if type(ts) is float else num(ts)) is not None \
                and t - self.rts >= p.refresh_seconds:
            self._refresh(t)
        else:
            watch = self._wmask
            if watch:
                self._refresh(ts, watch)

    def _learn_caller(self, caller: str | None, bins: list[tuple[int, int]], inv: float) -> None:
        if caller is None:
            return
        p: TelemetryDriftParams = self.params
        callers = self.callers
        counts = self.counts
        vb = self.n_vars * p.bins
        try:
            k = callers.index(caller)
        except ValueError:
            k = -1
        if k >= 0:
            pass
        elif len(callers) < p.top_callers:
            callers.append(caller)
            k = len(callers) - 1
        else:
            # Space-saving: the newcomer takes the lightest slot and inherits its count.
            k = min(range(p.top_callers), key=counts.__getitem__)
            callers[k] = caller
            self.hists[k * vb : (k + 1) * vb] = array("f", bytes(4 * vb))
        counts[k] += inv
        hists = self.hists
        o = k * vb
        for v, b in bins:
            hists[o + v * p.bins + b] += inv

    def _watch(self) -> int:
        """Variables whose last p is approaching significance (``watch_p`` >= p >
        ``watch_floor``): they are recomputed at every event, so an emerging drift is
        not flagged up to a refresh block late; clear drifts and quiet windows wait."""
        p: TelemetryDriftParams = self.params
        lo, hi = p.watch_floor, p.watch_p
        mask = 0
        for v, pval in enumerate(self.pv):
            if lo < pval <= hi:
                mask |= 1 << v
        return mask & self.elig

    def _edges_bytes(self) -> bytes:
        """The bin edges as serialised (float32, row-major); fixed once fitted, so kept."""
        if self._eb is None:
            self._eb = array("f", [e for row in self.edges for e in row]).tobytes()
        return self._eb

    def _renormalise(self) -> None:
        s = self.scale
        self.cur = array("f", [c * s for c in self.cur])
        self.counts = array("f", [c * s for c in self.counts])
        self.hists = array("f", [c * s for c in self.hists])
        s2 = s * s
        self.s2 = array("d", [c * s2 for c in self.s2])
        self.scale = 1.0

    def _fit_edges(self) -> None:
        p: TelemetryDriftParams = self.params
        v_n = self.n_vars
        qs = np.arange(1, p.bins) / p.bins
        buf = np.array(self.buf, dtype=np.float32).reshape(p.edge_samples, v_n)
        for v in range(v_n):
            col = buf[:, v]
            col = col[~np.isnan(col)]
            if v == _PRED and self.pred_kind == _CATEGORICAL:
                if col.size:
                    self.active |= 1 << v
                continue
            if col.size < 8:
                continue
            self.edges[v] = np.quantile(col.astype(np.float64), qs).astype(np.float32).tolist()
            self.active |= 1 << v
        ref = self.ref
        nb = p.bins
        for i in range(self.buf_len):
            row = self.buf[i * v_n : (i + 1) * v_n].tolist()
            for v, b in self._bins([None if e != e else e for e in row]):
                ref[v * nb + b] += 1.0
        self.buf = array("f")

    # --- the periodic refresh of the window statistics ----------------------------------

    def _ref_shares(self) -> list[tuple | None]:
        """Per variable: (n_r, reference shares, smoothed reference shares, which bins the
        reference holds); derived from the frozen reference, computed once per process."""
        if self._lnps is None:
            p: TelemetryDriftParams = self.params
            nb, s = p.bins, p.smoothing
            out: list[tuple | None] = []
            for v in range(self.n_vars):
                r = self.ref[v * nb : (v + 1) * nb].tolist()
                n_r = sum(r)
                if n_r <= 0:
                    out.append(None)
                    continue
                den = n_r + nb * s
                out.append((n_r, [c / n_r for c in r], [(c + s) / den for c in r], [c > 0.0 for c in r]))
            self._lnps = out
        return self._lnps

    def _refresh(self, ts: Any = None, only: int = -1) -> None:
        """Recompute, for every variable (bit v of ``only``), the window's tail probability
        against the reference and its over-represented bins (see "Cost" in the module
        docstring); ``ts``: the event time it happens at."""
        p: TelemetryDriftParams = self.params
        nv = self.n_vars
        if only == -1:
            t = ts if type(ts) is float else num(ts)
            if t is not None:
                self.rts = t
            elig = 0
            pv: list[float] = [1.0] * nv
            over: list[int] = [0] * nv
        else:
            elig = self.elig & ~only
            pv = list(self.pv)
            over = list(self.over)
        nb, s = p.bins, p.smoothing
        refs = self._ref_shares()
        scale = self.scale
        sc2 = scale * scale
        cur_all = self.cur
        s2_all = self.s2
        active = self.active
        log = math.log
        min_window, min_psi, min_ks = p.min_window, p.min_psi, p.min_ks
        bits = range(nb)
        for v in range(nv):
            rs = refs[v]
            if rs is None or not active >> v & 1 or not only >> v & 1:
                continue
            pv[v] = 1.0
            over[v] = 0
            c = cur_all[v * nb : (v + 1) * nb].tolist()  # only the variables refreshed
            tot = sum(c)
            s2 = s2_all[v] * sc2
            if tot <= 0.0 or s2 <= 0.0:
                continue
            m = tot * scale
            n_w = m * m / s2
            if n_w < min_window:
                continue
            n_r, pr, ps, held = rs
            elig |= 1 << v
            den = m + nb * s
            psi_v = ks_v = cum = 0.0
            mask = nz = 0
            for i in bits:
                ci = c[i]
                q = ci / tot
                pri = pr[i]
                if q > pri:
                    mask |= 1 << i
                qs = (ci * scale + s) / den
                psi = ps[i]
                psi_v += (qs - psi) * log(qs / psi)
                cum += pri - q
                if cum > ks_v:
                    ks_v = cum
                elif -cum > ks_v:
                    ks_v = -cum
                if ci > 0.0 or held[i]:
                    nz += 1
            factor = n_r * n_w / (n_r + n_w)
            ex = psi_v - min_psi
            p_psi = float(chdtrc(nz - 1 if nz > 2 else 1, ex * factor)) if ex > 0.0 else 1.0
            if v == _PRED and self.pred_kind == _CATEGORICAL:
                pval = p_psi
            else:
                ex = ks_v - min_ks
                p_ks = float(kolmogorov(math.sqrt(factor) * ex)) if ex > 0.0 else 1.0
                pval = min(1.0, 2.0 * min(p_psi, p_ks))
            pv[v] = pval
            over[v] = mask
        self.elig, self.pv, self.over = elig, pv, over
        self._xcache = None
        self._wmask = self._watch()

    # --- attribution and explanation --------------------------------------------------

    def _window_row(self, v: int, b: int) -> list[float]:
        """Variable ``v``'s window histogram with the event (bin ``b``) added, as counts."""
        p: TelemetryDriftParams = self.params
        nb = p.bins
        f = self.scale * p.decay
        row = [c * f for c in self.cur[v * nb : (v + 1) * nb]]
        row[b] += 1.0
        return row

    def _attribution(self, x: dict[str, Any], v: int, b: int, cur_row: list[float], psi_full: float, lam: float,
                     ps: list[float] | None = None):
        """Per tracked caller: share of the window and the share of the PSI it accounts for."""
        p: TelemetryDriftParams = self.params
        if not self.callers:
            return []
        nb, s = p.bins, p.smoothing
        vb = self.n_vars * nb
        f = self.scale * lam
        me = self._caller(x)
        m = sum(cur_row)
        if ps is None:
            refv = self.ref[v * nb : (v + 1) * nb].tolist()
            den_r = sum(refv) + nb * s
            ps = [(c + s) / den_r for c in refv]
        log = math.log
        hists = self.hists
        out: list[dict[str, Any]] = []
        for k, caller in enumerate(self.callers):
            o = k * vb + v * nb
            h = hists[o : o + nb].tolist()
            if caller == me:
                h[b] += 1.0 / f  # the event, in stored units
            hsum = 0.0
            rest = []
            rsum = 0.0
            for c, e in zip(cur_row, h):
                e *= f
                hsum += e
                r = c - e
                if r < 0.0:
                    r = 0.0
                rest.append(r)
                rsum += r
            den = rsum + nb * s
            without = 0.0
            for r, pi in zip(rest, ps):
                q = (r + s) / den
                without += (q - pi) * log(q / pi)
            share = hsum / m if m > 0 else 0.0
            drop = (psi_full - without) / psi_full if psi_full > 0 else 0.0
            out.append({"caller": caller, "share": round(share, 4), "contribution": round(drop if drop > 0.0 else 0.0, 4)})
        out.sort(key=lambda d: (-d["contribution"], -d["share"], d["caller"]))
        return out

    def _bin_label(self, v: int, b: int) -> str:
        p: TelemetryDriftParams = self.params
        if v == _PRED and self.pred_kind == _CATEGORICAL:
            return repr(self.classes[b]) if b < len(self.classes) else "other classes"
        e = self.edges[v]
        lo = "-inf" if b == 0 else f"{float(e[b - 1]):.4g}"
        hi = "+inf" if b >= p.bins - 1 else f"{float(e[b]):.4g}"
        return f"[{lo}, {hi})"

    def _explain(self, ctx: Any, peers: Any) -> Explanation:
        """The explanation of a scored event: the divergences of the variable that
        carried the score, on the window including the event.

        Its numbers (divergences, shares, caller attribution) are computed for the
        first finding of a variable's bin (and caller) after a refresh and reused,
        in memory, by the later ones until the next refresh: a drift flags run after
        run of events, and the numbers move little within ``refresh_every`` events.
        """
        _bins, x, hit, pv = ctx
        v, b = hit
        me = self._caller(x)
        key = (v, b, me)
        cache = self._xcache
        if cache is None:
            cache = self._xcache = {}
        got = cache.get(key)
        if got is None:
            got = cache[key] = self._explain_numbers(x, v, b, pv)
        psi_v, ks_v, js_v, q_b, p_b, n_r, n_w, callers, label, body, feature, window = got
        observed = {
            "psi": psi_v,
            "ks": ks_v,
            "js": js_v,
            "bin": label,
            "bin_share": q_b,
            "callers": [{"caller": c, "share": sh, "contribution": co} for c, sh, co in callers[:3]],
        }
        baseline = {
            "n": n_r,
            "bin_share": p_b,
            "model_version": self.model_version,
            "deploys": self.deploys,
        }
        reason = body
        if body[-1] != ".":
            ver = text(x.get("ueba.model.version"))
            if ver and self.model_version and ver != self.model_version:
                reason += f"; traffic is from version {ver} but no deploy event followed {self.model_version}"
            reason += "."
        return Explanation(feature, observed, baseline, None, window, reason)

    def _explain_numbers(self, x: dict[str, Any], v: int, b: int, pv: float) -> tuple:
        p: TelemetryDriftParams = self.params
        nb, s = p.bins, p.smoothing
        lam = p.decay
        cur_row = self._window_row(v, b)
        refv = self.ref[v * nb : (v + 1) * nb].tolist()
        n_r = sum(refv)
        m = sum(cur_row)
        s2 = self.s2[v] * (self.scale * lam) ** 2 + 1.0
        n_w = m * m / s2 if s2 > 0 else 0.0
        pr = [c / n_r for c in refv]
        qr = [c / m for c in cur_row]
        den_r = n_r + nb * s
        ps = [(c + s) / den_r for c in refv]
        den_w = m + nb * s
        psi_v = _psi([(c + s) / den_w for c in cur_row], ps)
        ks_v = _ks(pr, qr)
        js_v = _js(pr, qr)
        # Attribution only where there is something to attribute.
        callers = self._attribution(x, v, b, cur_row, psi_v, lam, ps) if pv < 0.05 else []
        label = self._bin_label(v, b)
        feature = self._var_name(v)
        short = feature.rsplit(".", 1)[-1]
        if pv >= 1.0 or psi_v <= 0:
            body = f"The {short} distribution is in line with the reference taken after the last deploy."
        else:
            body = (
                f"The {short} distribution drifted from its post-deploy reference (PSI {psi_v:.2f}, "
                f"KS {ks_v:.2f}, JS {js_v:.3f}); values in {label} are {qr[b]:.0%} "
                f"of recent traffic vs {pr[b]:.0%} in the reference"
            )
            top = [c for c in callers if c["contribution"] >= 0.2]
            if top:
                names = " and ".join(f"{c['caller']} ({c['share']:.0%} of traffic)" for c in top[:2])
                body += f"; {names} account{'s' if len(top[:2]) == 1 else ''} for most of the shift"
        return (round(psi_v, 4), round(ks_v, 4), round(js_v, 4), round(qr[b], 4), round(pr[b], 4), int(n_r), n_w,
                tuple((c["caller"], c["share"], c["contribution"]) for c in callers), label, body, feature,
                f"~{n_w:.0f} recent events (half-life {p.window_halflife:g})")

    # --- serialisation ------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Compact, exact serialisation (msgpack; arrays only once they are in use)."""
        p: TelemetryDriftParams = self.params
        in_ref = self.buf_len >= p.edge_samples
        in_win = self.n > p.reference_size
        k = len(self.callers)
        vb = self.n_vars * p.bins
        hists = b""
        if k:
            # float16 of the actual values (attribution needs no more)
            h = np.frombuffer(self.hists, dtype=np.float32, count=k * vb)
            if self.scale != 1.0:
                h = h * self.scale
            hists = h.astype(np.float16).tobytes()
        return msgspec.msgpack.encode(
            _DriftState(
                _VERSION, self.deploys, self.n, self.model_version, self.pred_kind, self.classes, self.features,
                self.buf[: self.buf_len * self.n_vars].tobytes() if not in_ref else b"", self.buf_len, self.active,
                self._edges_bytes() if in_ref else b"",
                self.ref.tobytes() if in_ref else b"",
                self.cur.tobytes() if in_win else b"",
                self.s2.tobytes() if in_win else b"",
                self.callers,
                self.counts[:k].tobytes(),
                hists,
                self.scale, self.elig, self.pv, self.over, self.rts,
            )
        )  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes, params: TelemetryDriftParams | None = None) -> "TelemetryDriftDetector":
        s = msgspec.msgpack.decode(data, type=_DriftState)
        if s.version not in (1, _VERSION):
            raise ValueError(f"unsupported {cls.name} state version {s.version}")
        det = cls(params)
        p = det.params
        v, nb = det.n_vars, p.bins
        det.deploys, det.n, det.model_version = s.deploys, s.n, s.model_version
        det.pred_kind, det.classes, det.features = s.pred_kind, s.classes, s.features
        det.buf_len, det.active = s.buf_len, s.active
        if s.buf_len < p.edge_samples:
            det.buf[: s.buf_len * v] = array("f", s.buf)
        else:
            det.buf = array("f")
        if s.edges:
            e = array("f", s.edges).tolist()
            det.edges = [e[i * (nb - 1) : (i + 1) * (nb - 1)] for i in range(v)]
            det._eb = bytes(s.edges)
            det.ref = array("f", s.ref)
        if s.cur:
            det.cur = array("f", s.cur)
            det.s2 = array("d", s.s2)
        det.scale = s.scale
        k = len(s.callers)
        det.callers = list(s.callers)
        det.counts[:k] = array("f", s.counts)
        if k:
            h = np.frombuffer(s.hists, dtype=np.float16).astype(np.float64)
            if det.scale != 1.0:
                h /= det.scale
            det.hists[: k * v * nb] = array("f", h.astype(np.float32).tobytes())
        if s.version >= 2:
            det.elig, det.pv, det.over, det.rts = s.elig, list(s.pv), list(s.over), s.rts
            det._wmask = det._watch()
        elif det.n > p.reference_size:
            det._refresh()  # a version-1 state: its window statistics, as of now
        return det


if __name__ == "__main__":  # pragma: no cover - benchmark figures for the report
    import time

    rng = np.random.default_rng(1)
    det = TelemetryDriftDetector()
    xs = [
        {
            "ueba.model.id": "m",
            "ueba.telemetry.prediction": ["a", "b", "c"][int(rng.integers(3))],
            "ueba.telemetry.confidence": float(rng.beta(8, 2)),
            "ueba.telemetry.features": {f"f{j}": float(rng.normal()) for j in range(6)},
            "ueba.telemetry.caller_api_key": f"k{int(rng.integers(12))}",
        }
        for _ in range(5000)
    ]
    t0 = time.process_time()
    for i, x in enumerate(xs):
        det.score_one(x, float(i))
        det.learn_one(x, float(i))
    dt = (time.process_time() - t0) / len(xs) * 1e6
    print(f"{TelemetryDriftDetector.name}: {dt:.0f} µs per learn+score, state {len(det.to_bytes())} bytes")


# mypyc: a class decorator other than @dataclass makes a class non-native.
register(TelemetryDriftDetector)
