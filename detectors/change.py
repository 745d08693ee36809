"""Streaming change detection: CUSUM and Page-Hinkley, and ``telemetry_change``.

Building blocks (plain dataclasses of a handful of floats; serialise with
``dataclasses.astuple(obj)`` and rebuild with ``Cls(*values)``):

:class:`Cusum`
    Two-sided CUSUM on standardised values ``z`` in log-likelihood-ratio form:
    testing a mean shift of ``±shift`` standard deviations, each observation adds
    ``shift * z - shift**2 / 2`` to the upper statistic (``-shift * z - ...`` to
    the lower one), floored at 0. Under no change the stationary tail of an LLR
    CUSUM is ``P(S >= h) <= exp(-h)`` (Wald/Siegmund), so ``exp(-S)`` is a
    tail probability and the score needs no hand-tuned threshold.
:class:`BernoulliCusum`
    The same for error indicators: rate ``p0`` against ``p1 > p0``.
:class:`PageHinkley`
    River's Page-Hinkley test (two-sided, with forgetting ``alpha``) on raw
    values, for callers that want the classic thresholded detector.
:class:`Adwin`
    ADWIN (Bifet & Gavaldà 2007): an adaptive window over an exponential
    histogram that drops its older part when the two parts' means differ
    beyond a Hoeffding/Bernstein bound at confidence ``delta``; no shift size
    to choose. ``max_width`` bounds it (at most ~60 buckets, < 1 KiB).

:class:`TelemetryChangeDetector` (``telemetry_change``) watches, per model
(``ueba.model.id``), three channels of the telemetry stream:

``latency_ms``  ``event.duration`` (ns) as log milliseconds, two-sided CUSUM;
``confidence``  ``ueba.telemetry.confidence`` (0-1), two-sided CUSUM;
``error_rate``  ``ueba.telemetry.error`` (bool), or a window summary
                ``ueba.telemetry.error_rate`` x ``ueba.telemetry.count``,
                one-sided Bernoulli CUSUM (only increases are findings).

Score direction: higher = stronger evidence that a channel changed.
``score = 100 * (1 - p)`` with ``p`` the CUSUM tail, Šidák-combined over the
channels the event carries; an event only scores when it pushes the alarming
statistic further (it is part of the change, not a bystander after it);
``raw = -log10(p)``. Warm-up: a channel scores after ``warmup`` observations
(its baseline mean and spread are estimated over those), score 0 before.
Baselines then follow slowly (EWMA ``alpha``) but not with observations that
are part of an alarm (``protect_p``), so a persistent change stays visible
until a ``model-deploy`` event, which resets the model's state. The CUSUM
statistics must see every event, so ``self_protecting = True`` tells the
runtime not to withhold high-scoring events from ``learn_one``.

State: under 300 bytes per model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgspec

from ._states import _ChangeState  # msgspec Structs stay uncompiled (see _states)
from ._tails import P_FLOOR, RAW_P_FLOOR, fmt, num, sidak
from .base import Explanation, Score, register
from .baseline import CoreDetector

__all__ = ["Cusum", "BernoulliCusum", "PageHinkley", "Adwin", "TelemetryChangeParams", "TelemetryChangeDetector"]


@dataclass(slots=True)
class Cusum:
    """Two-sided LLR CUSUM on standardised observations.

    ``shift``: the mean shift tested, in standard deviations. ``cap``: the
    statistics are capped so the detector recovers in bounded time after a
    change ends (``exp(-30)`` is already beyond any alert threshold).

    >>> c = Cusum()
    >>> for z in [0.1, -0.3, 2.5, 2.8, 3.1]:
    ...     c.update(z)
    >>> round(c.hi, 2), round(c.p_value(), 4)
    (6.9, 0.002)
    """

    shift: float = 1.0
    cap: float = 30.0
    hi: float = 0.0
    lo: float = 0.0

    def step(self, z: float) -> tuple[float, float]:
        """The statistics after ``z``, without updating."""
        half = 0.5 * self.shift * self.shift
        hi = min(self.cap, max(0.0, self.hi + self.shift * z - half))
        lo = min(self.cap, max(0.0, self.lo - self.shift * z - half))
        return hi, lo

    def update(self, z: float) -> None:
        self.hi, self.lo = self.step(z)

    @staticmethod
    def tail(hi: float, lo: float) -> float:
        """Two-sided tail probability of statistics ``(hi, lo)`` under no change."""
        return min(1.0, 2.0 * math.exp(-max(hi, lo)))

    def p_value(self) -> float:
        return self.tail(self.hi, self.lo)

    def reset(self) -> None:
        self.hi = self.lo = 0.0


@dataclass(slots=True)
class BernoulliCusum:
    """One-sided LLR CUSUM for an error rate rising from ``p0`` to ``p1``.

    ``p1 = min(0.5, max(ratio * p0, p0 + delta))``: the smallest increase worth
    an alert. ``p_value() = exp(-s)``.

    >>> b = BernoulliCusum()
    >>> for e in [0] * 50 + [1] * 6:
    ...     b.update(e, 1, p0=0.01)
    >>> round(b.s, 2), b.p_value() < 1e-3
    (8.32, True)
    """

    ratio: float = 4.0
    delta: float = 0.02
    cap: float = 30.0
    s: float = 0.0

    def llr(self, errors: float, trials: float, p0: float) -> float:
        p1 = min(0.5, max(self.ratio * p0, p0 + self.delta))
        if p1 <= p0:
            return 0.0
        return errors * math.log(p1 / p0) + (trials - errors) * math.log((1 - p1) / (1 - p0))

    def step(self, errors: float, trials: float, p0: float) -> float:
        return min(self.cap, max(0.0, self.s + self.llr(errors, trials, p0)))

    def update(self, errors: float, trials: float, p0: float) -> None:
        self.s = self.step(errors, trials, p0)

    def p_value(self) -> float:
        return math.exp(-self.s)


@dataclass(slots=True)
class PageHinkley:
    """Two-sided Page-Hinkley test (as in River's ``drift.PageHinkley``).

    ``delta``: tolerated change in the mean; ``threshold``: alarm level of the
    statistic; ``alpha``: forgetting factor of the cumulative sums. Units are
    those of the observations.

    >>> ph = PageHinkley(threshold=5.0)
    >>> for x in [0.0] * 100 + [1.0] * 20:
    ...     ph.update(x)
    >>> ph.drift_detected
    True
    """

    delta: float = 0.005
    threshold: float = 50.0
    alpha: float = 1 - 1e-4
    n: int = 0
    mean: float = 0.0
    up: float = 0.0
    up_min: float = 0.0
    down: float = 0.0
    down_max: float = 0.0

    def update(self, x: float) -> None:
        self.n += 1
        self.mean += (x - self.mean) / self.n
        self.up = self.alpha * self.up + (x - self.mean - self.delta)
        self.down = self.alpha * self.down + (x - self.mean + self.delta)
        self.up_min = min(self.up_min, self.up)
        self.down_max = max(self.down_max, self.down)

    @property
    def statistic(self) -> float:
        return max(self.up - self.up_min, self.down_max - self.down)

    @property
    def drift_detected(self) -> bool:
        return self.statistic > self.threshold

    def reset(self) -> None:
        self.n = 0
        self.mean = self.up = self.up_min = self.down = self.down_max = 0.0


@dataclass(slots=True)
class Adwin:
    """ADWIN2 change detector (as River's ``drift.ADWIN``), bounded by ``max_width``.

    ``update(x)`` returns True when a change was detected (the window's older
    part was dropped); ``mean``/``width`` describe the current window. Buckets
    are ``[total, variance]`` pairs; level ``i`` buckets hold ``2**i`` values.

    >>> ad = Adwin()
    >>> hits = [i for i, x in enumerate([0.0] * 500 + [1.0] * 100) if ad.update(x)]
    >>> 500 < hits[0] < 540, ad.width < 200, ad.mean > 0.8
    (True, True, True)
    """

    delta: float = 0.002
    clock: int = 32
    max_buckets: int = 5
    min_window: int = 5
    grace: int = 10
    max_width: int = 10_000
    tick: int = 0
    width: int = 0
    total: float = 0.0
    variance: float = 0.0
    levels: list = field(default_factory=list)  # levels[i]: oldest-first list of [total, variance]

    @property
    def mean(self) -> float:
        return self.total / self.width if self.width else 0.0

    def update(self, x: float) -> bool:
        self.tick += 1
        if self.width:
            mean = self.total / self.width
            self.variance += self.width * (x - mean) ** 2 / (self.width + 1)
        self.width += 1
        self.total += x
        if not self.levels:
            self.levels.append([])
        self.levels[0].append([x, 0.0])
        self._compress()
        while self.width > self.max_width:
            self._drop_oldest()
        if self.tick % self.clock or self.width <= self.grace:
            return False
        detected = False
        while self._cut():
            detected = True
        return detected

    def _compress(self) -> None:
        i = 0
        while i < len(self.levels):
            level = self.levels[i]
            if len(level) <= self.max_buckets:
                break
            (t1, v1), (t2, v2) = level.pop(0), level.pop(0)
            n = float(2**i)
            merged = [t1 + t2, v1 + v2 + n * n * (t1 / n - t2 / n) ** 2 / (2 * n)]
            if i + 1 == len(self.levels):
                self.levels.append([])
            self.levels[i + 1].append(merged)
            i += 1

    def _drop_oldest(self) -> None:
        i = len(self.levels) - 1
        while i >= 0 and not self.levels[i]:
            i -= 1
        if i < 0:
            return
        t, v = self.levels[i].pop(0)
        n = 2**i
        self.width -= n
        self.total -= t
        if self.width > 0:
            self.variance -= v + n * self.width * (t / n - self.total / self.width) ** 2 / (n + self.width)
            self.variance = max(self.variance, 0.0)
        else:
            self.variance = 0.0
        while self.levels and not self.levels[-1]:
            self.levels.pop()

    def _cut(self) -> bool:
        n0, u0 = 0, 0.0
        n1, u1 = self.width, self.total
        dd = math.log(2.0 * math.log(max(self.width, 3)) / self.delta)
        v = self.variance / self.width
        for i in range(len(self.levels) - 1, -1, -1):
            n = 2**i
            for t, _ in self.levels[i]:
                n0 += n
                n1 -= n
                u0 += t
                u1 -= t
                if n1 < self.min_window:
                    return False
                if n0 < self.min_window:
                    continue
                m = 1.0 / (n0 - self.min_window + 1) + 1.0 / (n1 - self.min_window + 1)
                eps = math.sqrt(2.0 * m * v * dd) + 2.0 / 3.0 * dd * m
                if abs(u0 / n0 - u1 / n1) > eps:
                    self._drop_oldest()
                    return self.width > self.grace
        return False


# --- telemetry_change ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TelemetryChangeParams:
    """Hyperparameters of :class:`TelemetryChangeDetector` (counts are observations)."""

    warmup: int = 100
    shift: float = 1.0
    z_clip: float = 3.0
    alpha: float = 0.005
    fast_alpha: float = 0.1
    min_log_latency_sd: float = 0.05
    min_confidence_sd: float = 0.01
    min_error_rate: float = 0.001
    error_ratio: float = 4.0
    error_delta: float = 0.02
    max_summary_count: int = 1_000_000
    cap: float = 30.0
    protect_p: float = 1e-3


_LAT, _CONF, _ERR = 0, 1, 2
_NAMES = ("latency_ms", "confidence", "error_rate")


def _channels(x: dict[str, Any]) -> tuple[float | None, float | None, tuple[float, float] | None]:
    dur = num(x.get("event.duration"))
    lat = math.log(max(dur, 1.0) / 1e6) if dur is not None and dur >= 0 else None
    conf = num(x.get("ueba.telemetry.confidence"))
    if conf is not None and not 0.0 <= conf <= 1.0:
        conf = None
    err = x.get("ueba.telemetry.error")
    errs: tuple[float, float] | None = None
    if err is True:
        errs = _ONE_ERROR
    elif err is False:
        errs = _NO_ERROR
    else:
        rate = num(x.get("ueba.telemetry.error_rate"))
        if rate is not None and 0.0 <= rate <= 1.0:
            count = num(x.get("ueba.telemetry.count"))
            trials = count if count is not None and count >= 1 else 1.0
            errs = (rate * trials, trials)
    return lat, conf, errs


_ONE_ERROR = (1.0, 1.0)
_NO_ERROR = (0.0, 1.0)


def is_deploy(x: dict[str, Any]) -> bool:
    """A model-registry deploy event: resets per-model baselines and references."""
    return x.get("event.action") == "model-deploy"


class TelemetryChangeDetector(CoreDetector):
    """Per-model change detection on latency, error rate and confidence.

    See the module docstring for units, score direction and warm-up.

    >>> det = TelemetryChangeDetector()
    >>> ok = {"ueba.model.id": "m", "event.duration": 120_000_000, "ueba.telemetry.error": False}
    >>> for i in range(300):
    ...     det.learn_one(dict(ok, **{"event.duration": 100_000_000 + 1_000_000 * (i % 40)}), float(i))
    >>> slow = dict(ok, **{"event.duration": 400_000_000})
    >>> for i in range(10):
    ...     det.learn_one(slow, 300.0 + i)
    >>> s = det.score_one(slow, 311.0)
    >>> s.score > 99.9, s.explanation.feature
    (True, 'latency_ms')
    """

    name: ClassVar[str] = "telemetry_change"
    entity_type: ClassVar[str] = "model"
    entity_field: ClassVar[str] = "ueba.model.id"
    techniques: ClassVar[tuple[str, ...]] = ("AML.T0018", "AML.T0015", "AML.T0029")
    #: ``Score.raw`` is ``-log10 p`` (not floored at 1e-15 like the score): the suite's calibration uses it.
    raw_is_surprise: ClassVar[bool] = True
    #: Scores every event once warm (the suite's calibration starts its clock when it first does).
    dense_scores: ClassVar[bool] = True
    title: ClassVar[str] = "Model behaviour changed (latency, errors or confidence)"
    #: Protects its baselines itself; the CUSUM statistics must see every event.
    self_protecting: ClassVar[bool] = True

    __slots__ = ("n", "mean", "var", "fast", "hi", "lo", "deploys")

    Params: ClassVar[type] = TelemetryChangeParams

    def __init__(self, params: TelemetryChangeParams | None = None) -> None:
        super().__init__(params)
        self.deploys = 0
        self._reset()

    def _reset(self) -> None:
        self.n = [0, 0, 0]
        self.mean = [0.0, 0.0, 0.0]  # error channel: decayed error count
        self.var = [0.0, 0.0, 0.0]  # error channel: decayed trial count
        self.fast = [0.0, 0.0, 0.0]
        self.hi = [0.0, 0.0, 0.0]
        self.lo = [0.0, 0.0, 0.0]

    # --- per-channel arithmetic ---------------------------------------------

    def _sd(self, c: int) -> float:
        floor = self.params.min_log_latency_sd if c == _LAT else self.params.min_confidence_sd
        return math.sqrt(self.var[c] + floor * floor)

    def _p0(self) -> float:
        return max(self.params.min_error_rate, (self.mean[_ERR] + 0.5) / (self.var[_ERR] + 1.0))

    def _evaluate(self, x: dict[str, Any], chans: tuple | None = None) -> list[tuple[int, float, float, float, float, bool]]:
        """Per testable channel: (channel, value, new hi, new lo, p, pushes the alarm)."""
        p: TelemetryChangeParams = self.params
        out = []
        lat, conf, errs = _channels(x) if chans is None else chans
        n = self.n
        warm = p.warmup
        lat_ok = lat is not None and n[_LAT] >= warm
        conf_ok = conf is not None and n[_CONF] >= warm
        if lat_ok or conf_ok:
            # two-sided CUSUM step per channel (Cusum.step above, inlined)
            zc = p.z_clip
            shift = p.shift
            half = 0.5 * shift * shift
            cap = p.cap
            mean, var, his, los = self.mean, self.var, self.hi, self.lo
            for c, v, floor, ok in ((_LAT, lat, p.min_log_latency_sd, lat_ok), (_CONF, conf, p.min_confidence_sd, conf_ok)):
                if not ok:
                    continue
                z = (v - mean[c]) / math.sqrt(var[c] + floor * floor)
                if z > zc:
                    z = zc
                elif z < -zc:
                    z = -zc
                hi = his[c] + shift * z - half
                hi = 0.0 if hi < 0.0 else (cap if hi > cap else hi)
                lo = los[c] - shift * z - half
                lo = 0.0 if lo < 0.0 else (cap if lo > cap else lo)
                if hi >= lo:
                    pv = 2.0 * math.exp(-hi)
                    pushes = z > 0
                else:
                    pv = 2.0 * math.exp(-lo)
                    pushes = z < 0
                out.append((c, v, hi, lo, (pv if pv < 1.0 else 1.0), pushes))
        if errs is not None and n[_ERR] >= warm:
            k, trials = errs
            if trials > p.max_summary_count:
                trials = float(p.max_summary_count)
            if k > trials:
                k = trials
            # _p0() and BernoulliCusum(error_ratio, error_delta, cap, hi).llr / .step, inlined
            p0 = (self.mean[_ERR] + 0.5) / (self.var[_ERR] + 1.0)
            if p0 < p.min_error_rate:
                p0 = p.min_error_rate
            p1 = p.error_ratio * p0
            if p1 < p0 + p.error_delta:
                p1 = p0 + p.error_delta
            if p1 > 0.5:
                p1 = 0.5
            if p1 <= p0:
                llr = 0.0
            elif k:
                llr = k * math.log(p1 / p0) + (trials - k) * math.log((1 - p1) / (1 - p0))
            else:
                llr = trials * math.log((1 - p1) / (1 - p0))
            s = self.hi[_ERR] + llr
            s = 0.0 if s < 0.0 else (p.cap if s > p.cap else s)
            out.append((_ERR, k / trials, s, 0.0, math.exp(-s), llr > 0))
        return out

    # --- the streaming protocol ------------------------------------------------

    def score_one(self, x: dict[str, Any], ts: float, peers: Any = None) -> Score:
        """Score one telemetry event; pure. ``ts`` is not used (order is what matters)."""
        if is_deploy(x):
            return Score(0.0)
        s, raw, ctx = self._assess(x, ts, None)
        if ctx[2] < 0:
            return Score(0.0)
        return Score(s, raw, self._explain(ctx, None))

    def learn_one(self, x: dict[str, Any], ts: float, peers: Any = None, score: float | None = None) -> None:
        """Update the model's baselines and CUSUM statistics; a deploy event resets them."""
        self._learn(x, ts, None, 0.0, None)

    # --- the CoreDetector hooks (what the suite calls: one evaluation per event) ---

    def _assess(self, x: dict[str, Any], ts: float, peers: Any) -> tuple[float, float, Any]:
        if x.get("event.action") == "model-deploy":  # is_deploy, inlined
            return 0.0, 0.0, None
        chans = _channels(x)
        ev = self._evaluate(x, chans)
        if not ev:
            return 0.0, 0.0, (chans, ev, -1, 1.0)
        if len(ev) == 1:
            e = ev[0]
            pc = e[4] if e[5] else 1.0
            i = 0
            p_all = pc
        else:
            # the smallest p, ties to the larger statistic; Sidak over the channels
            i = -1
            pc = key = 0.0
            for j, e in enumerate(ev):
                pj = e[4] if e[5] else 1.0
                st = e[2] if e[2] > e[3] else e[3]
                if i < 0 or pj < pc or (pj == pc and st > key):
                    i, pc, key = j, pj, st
            p_all = sidak(pc, len(ev))
        # score_of(p_all), surprise(p_all), inlined
        if p_all >= 1.0:
            return 0.0, -0.0, (chans, ev, i, pc)
        return (100.0 * (1.0 - (p_all if p_all > P_FLOOR else P_FLOOR)),
                -math.log10(p_all if p_all > RAW_P_FLOOR else RAW_P_FLOOR), (chans, ev, i, pc))

    def _learn(self, x: dict[str, Any], ts: float, peers: Any, score: float, ctx: Any) -> None:
        p: TelemetryChangeParams = self.params
        if x.get("event.action") == "model-deploy":  # is_deploy
            self.deploys += 1
            self._reset()
            return
        if ctx is None:
            chans = _channels(x)
            ev = self._evaluate(x, chans)
        else:
            chans, ev = ctx[0], ctx[1]
        lat, conf, errs = chans
        prot = p.protect_p
        for c, v, hi, lo, pv, _ in ev:
            self.hi[c] = hi
            self.lo[c] = lo
            if pv < prot:
                self.fast[c] += p.fast_alpha * (v - self.fast[c])
            elif c == _ERR:
                self._baseline(c, v, errs)
            else:
                # _baseline of a warm channel, inlined
                nc = self.n[c] = self.n[c] + 1
                a = 1.0 / nc
                if a < p.alpha:
                    a = p.alpha
                d = v - self.mean[c]
                self.mean[c] += a * d
                self.var[c] = (1 - a) * (self.var[c] + a * d * d)
                self.fast[c] += p.fast_alpha * (v - self.fast[c])
        # channels still warming up
        n = self.n
        warm = p.warmup
        if lat is not None and n[_LAT] < warm:
            self._baseline(_LAT, lat, errs)
        if conf is not None and n[_CONF] < warm:
            self._baseline(_CONF, conf, errs)
        if errs is not None and n[_ERR] < warm:
            self._baseline(_ERR, 0.0, errs)

    def _fast(self, c: int, v: float) -> None:
        self.fast[c] += self.params.fast_alpha * (v - self.fast[c])

    def _baseline(self, c: int, v: float, errs: tuple[float, float] | None) -> None:
        p: TelemetryChangeParams = self.params
        if c == _ERR:
            assert errs is not None
            k, trials = errs
            trials = min(trials, float(p.max_summary_count))
            k = min(k, trials)
            g = 1.0 if self.n[_ERR] < p.warmup else 1.0 - p.alpha
            self.mean[_ERR] = g * self.mean[_ERR] + k
            self.var[_ERR] = g * self.var[_ERR] + trials
            self.n[_ERR] += 1
            self._fast(_ERR, k / trials)
            return
        self.n[c] += 1
        a = max(p.alpha, 1.0 / self.n[c])
        d = v - self.mean[c]
        self.mean[c] += a * d
        self.var[c] = (1 - a) * (self.var[c] + a * d * d)
        if self.n[c] == 1:
            self.fast[c] = v
        else:
            self._fast(c, v)

    def to_bytes(self) -> bytes:
        return msgspec.msgpack.encode(
            _ChangeState(1, self.n, self.mean, self.var, self.fast, self.hi, self.lo, self.deploys)
        )

    @classmethod
    def from_bytes(cls, data: bytes, params: TelemetryChangeParams | None = None) -> "TelemetryChangeDetector":
        s = msgspec.msgpack.decode(data, type=_ChangeState)
        if s.version != 1:
            raise ValueError(f"unsupported {cls.name} state version {s.version}")
        det = cls(params)
        det.n, det.mean, det.var, det.fast, det.hi, det.lo = s.n, s.mean, s.var, s.fast, s.hi, s.lo
        det.deploys = s.deploys
        return det

    # --- explanation ------------------------------------------------------------

    def _explain(self, ctx: Any, peers: Any) -> Explanation:
        _chans, ev, i, p_chan = ctx
        c, v, hi, lo, pv, pushes = ev[i]
        stat = max(hi, lo)
        if c == _ERR:
            p0 = self._p0()
            recent = self.fast[_ERR]
            baseline = {"center": round(p0, 5), "n": self.n[_ERR]}
            if pushes and p_chan < 1.0:
                reason = (
                    f"The model's error rate rose: recent {recent:.1%} vs baseline {p0:.2%} "
                    f"(CUSUM {stat:.1f}, about 1 in {fmt(1 / max(pv, 1e-300))} without a change)."
                )
            else:
                reason = f"The model's error rate is in line with its baseline {p0:.2%}."
            return Explanation("error_rate", round(v, 5), baseline, None, "cusum", reason)
        sd = self._sd(c)
        if c == _LAT:
            observed = round(math.exp(v), 3)
            center, recent = math.exp(self.mean[c]), math.exp(self.fast[c])
            baseline = {"center": round(center, 3), "log_sd": round(sd, 4), "n": self.n[c]}
            unit = " ms"
        else:
            observed = round(v, 4)
            center, recent = self.mean[c], self.fast[c]
            baseline = {"center": round(center, 4), "spread": round(sd, 4), "n": self.n[c]}
            unit = ""
        if pushes and p_chan < 1.0:
            direction = "up" if hi >= lo else "down"
            reason = (
                f"The model's {_NAMES[c].replace('_', ' ')} shifted {direction}: recent level "
                f"{fmt(recent)}{unit} vs baseline {fmt(center)}{unit} (CUSUM {stat:.1f}, about 1 in "
                f"{fmt(1 / max(pv, 1e-300))} without a change)."
            )
        else:
            reason = f"The model's {_NAMES[c].replace('_', ' ')} is in line with its baseline {fmt(center)}{unit}."
        return Explanation(_NAMES[c], observed, baseline, None, "cusum", reason)


if __name__ == "__main__":  # pragma: no cover - benchmark figures for the report
    import random
    import time

    rnd = random.Random(1)
    det = TelemetryChangeDetector()
    xs = [
        {
            "ueba.model.id": "m",
            "event.duration": int(rnd.lognormvariate(math.log(8e7), 0.3)),
            "ueba.telemetry.confidence": min(1.0, max(0.0, rnd.gauss(0.9, 0.05))),
            "ueba.telemetry.error": rnd.random() < 0.01,
        }
        for _ in range(20000)
    ]
    t0 = time.process_time()
    for i, x in enumerate(xs):
        det.score_one(x, float(i))
        det.learn_one(x, float(i))
    dt = (time.process_time() - t0) / len(xs) * 1e6
    print(f"{TelemetryChangeDetector.name}: {dt:.1f} µs per learn+score, state {len(det.to_bytes())} bytes")


# mypyc: a class decorator other than @dataclass makes a class non-native.
register(TelemetryChangeDetector)
