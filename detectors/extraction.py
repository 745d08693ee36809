"""Model extraction through the inference API, per API key (``api_extraction``).

An extraction attack (Tramèr et al. 2016; Papernot et al. 2017; Juuti et al.
2019, "PRADA") has to ask the model many questions, and the questions are
unlike those a real client asks: more of them, spread over more of the input
space, and, for synthetic-query attacks, with a tell-tale geometry. One
detector instance holds the state of one API key (``ueba.api_key.id``) and
tests seven signals, each with its own tail probability:

``requests`` / ``response_bytes`` / ``tokens``
    Volume in a sliding ``rate_window`` (seconds; default 60 s) against the
    key's own baseline of active windows, on a log scale (``log1p`` of the
    window sum, so units are "requests", "bytes" and "tokens" per window).
    Upper tail of a normal on that scale. Work without fingerprints.
``input_novelty``
    The optional ``ueba.input.fingerprint`` (a fixed-length float vector) is
    reduced by a seeded Gaussian random projection to ``proj_dims`` dims and
    quantised into cells of ``cell_width`` baseline standard deviations on the
    first ``cell_dims`` of them (an E2LSH-style grid). A two-generation
    occupancy bitmap remembers which cells the key has used. Observed: how many
    of the last ``novelty_window`` queries landed in a never-used cell;
    tail: binomial against the key's own (decayed) novelty rate. Only scores an
    event that itself lands in a new cell, so it points at the sweep's queries.
``prada``
    PRADA's test: the distance of each query to its nearest neighbour among the
    key's ``reservoir`` most recent distinct queries, collected over the last
    ``mindist_window`` queries; benign inputs give a roughly normal sample,
    synthetic (Jacobian / perturbation) sweeps do not. Shapiro-Wilk ``W``
    (Royston 1992, the algorithm of ``scipy.stats.shapiro``, reimplemented
    here at ~20 µs) below ``shapiro_w`` fires; since benign distances are
    only roughly normal, the tail is taken against the key's own baseline of
    W on Royston's normalising scale, not the textbook p-value.
``step_size``
    Those nearest-neighbour distances collapse: the key walks the input space
    in small steps (Jacobian-based augmentation, grid sweeps). Lower tail of
    the log mean distance against the key's baseline.
``sweep_regularity``
    Grid-like spacing: the coefficient of variation of the nearest-neighbour
    distances collapses. Lower tail of the log CV against the key's baseline.

Combination: the smallest p-value, Šidák-corrected for the number of signals
that were testable, gives ``score = 100 * (1 - p)``; ``raw = -log10(p)``; the
explanation is the dominant signal's. Score direction: higher = more likely an
extraction. Warm-up: score 0 until ``warmup`` events; each signal also waits
for its own baseline (``min_windows`` closed windows for volume,
``fp_warmup`` fingerprints for the input-space signals).

Baselines are protected (River's ``AnomalyFilter`` idea, built in): a window
or query that scores beyond ``protect_p`` is kept in the short-term memory
(windows, reservoir, recent-novelty ring) but not folded into the baseline,
so a long sweep does not become the key's normal; the W / step / CV
baselines also learn ten times slower from values in their own 1% tail, so
a sweep that builds up before it is flagged barely moves them. Because of
this the detector must be shown *every* event: ``self_protecting = True``
tells the runtime not to withhold high-scoring events from ``learn_one``
(withholding them freezes the windows the attack is measured in).

State: about 1.5 KiB per key, independent of the stream (fixed-size arrays,
bitmaps and a bounded reservoir; the projection matrix is derived from
``params.seed`` and shared by all keys).

The three shape statistics (W, mean and CV of the ring) are window
statistics of the last ``mindist_window`` distances; they are computed every
``shape_every`` (default 4) new distances, kept in the state and reused by
the queries in between (their scores lag the ring by at most three
distances). The key's baselines of them learn each computation as
``shape_every`` observations (``_robust_ew`` with ``k``); their robustness
rules start after 10 computations, and a baseline tests once it has learnt
``cv_min`` computations.

Cost: one assessment per event. The class follows the
:class:`~detectors.baseline.CoreDetector` protocol, so the suite scores and
learns an event from the same ``_assess`` (``score_one`` + ``learn_one``
would compute it twice) and builds the explanation only for a finding.
The per-event path (the projection, nearest neighbour in the reservoir,
cells, novelty, volumes; Shapiro-Wilk on the sorted ring every
``shape_every`` distances) runs on plain Python floats, which the compiled
build turns into C loops: below ~50 elements a numpy call costs more than
the arithmetic (the nearest neighbour took 4.6 µs in four numpy calls, and
about 1 µs compiled, a row abandoned once its partial sum exceeds the best
so far). The projection of a 16-dimension fingerprint took 2 µs as a list
converted to an array, one BLAS call and a list again. Each projected
coordinate is now a sum in input order, so it no longer depends on which
kernel OpenBLAS picked for the CPU: a replay gives the same bits on every
machine. The reservoir is kept as rows of float32 values
(Python floats), serialised as float32 as before. States of version 1 (shape
statistics computed per query) still load: the statistics are computed from
the stored ring.
"""

from __future__ import annotations

import math
import struct
from array import array
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, Sequence

import msgspec
import numpy as np
from scipy.special import ndtri

from ._states import _State  # msgspec Structs stay uncompiled (see _states)
from ._tails import P_FLOOR, RAW_P_FLOOR, fmt, normal_sf, num, score_of, sidak, surprise
from .base import Explanation, Score, register
from .baseline import CoreDetector

__all__ = ["ExtractionParams", "ExtractionDetector", "shapiro_wilk"]


# --- Shapiro-Wilk (Royston 1992, AS R94) ---------------------------------

_C1 = (0.0, 0.221157, -0.147981, -2.07119, 4.434685, -2.706056)
_C2 = (0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633)
_C5 = (-1.5861, -0.31082, -0.083751, 0.0038915)
_C6 = (-0.4803, -0.082676, 0.0030302)


def _poly(c: tuple[float, ...], x: float) -> float:
    out = 0.0
    for coef in reversed(c):
        out = out * x + coef
    return out


@lru_cache(maxsize=64)
def _sw_coefficients(n: int) -> np.ndarray:
    """Shapiro-Wilk ``a`` coefficients for a sample of size ``n`` (ascending order)."""
    i = np.arange(1, n + 1, dtype=np.float64)
    m = ndtri((i - 0.375) / (n + 0.25))
    summ2 = float(np.dot(m, m))
    ssumm2 = math.sqrt(summ2)
    rsn = 1.0 / math.sqrt(n)
    a_n = _poly(_C1, rsn) + m[-1] / ssumm2
    a_n1 = _poly(_C2, rsn) + m[-2] / ssumm2
    fac = math.sqrt((summ2 - 2 * m[-1] ** 2 - 2 * m[-2] ** 2) / (1 - 2 * a_n**2 - 2 * a_n1**2))
    a = m / fac
    a[-1], a[-2], a[0], a[1] = a_n, a_n1, -a_n, -a_n1
    a.setflags(write=False)
    return a


def shapiro_wilk(x: np.ndarray) -> tuple[float, float]:
    """Shapiro-Wilk ``(W, p)`` for 12 <= n <= 5000, as ``scipy.stats.shapiro``.

    Parameters
    ----------
    x : numpy array of shape (n_samples,)

    Returns ``(1.0, 1.0)`` for a constant sample (no evidence either way; the
    ``sweep_regularity`` signal covers that case).
    """
    n = x.shape[0]
    if n < 12 or n > 5000:
        raise ValueError(f"shapiro_wilk needs 12 <= n <= 5000, got {n}")
    xs = np.sort(x.astype(np.float64, copy=False))
    dev = xs - float(xs.sum()) / n
    ssq = float(np.dot(dev, dev))
    if ssq <= 1e-300 * n or xs[-1] - xs[0] <= 1e-12 * max(abs(xs[-1]), 1e-300):
        return 1.0, 1.0
    w = float(np.dot(_sw_coefficients(n), xs)) ** 2 / ssq
    w = min(w, 1.0)
    if w >= 1.0:
        return 1.0, 1.0
    return w, normal_sf(_royston_z(w, n))


@lru_cache(maxsize=64)
def _sw_half(n: int) -> tuple[float, ...]:
    """The upper half of the (antisymmetric) ``a`` coefficients, largest first:
    ``a . x == sum(h[i] * (x[n-1-i] - x[i]))`` for ascending ``x``."""
    a = _sw_coefficients(n)
    return tuple(float(a[n - 1 - i]) for i in range(n // 2))


def _shapiro_w_sorted(xs: list[float], mean: float, ssq: float) -> float:
    """Shapiro-Wilk ``W`` of an ascending list (``mean`` and ``ssq = sum((x -
    mean)**2)`` given), 1.0 for a constant sample; as :func:`shapiro_wilk`."""
    n = len(xs)
    if ssq <= 1e-300 * n or xs[-1] - xs[0] <= 1e-12 * max(abs(xs[-1]), 1e-300):
        return 1.0
    h = _sw_half(n)
    # a . x over the ascending sample: the upper half (descending) minus the lower half,
    # each summed in order (as sum() of the products, without a call per product)
    up = lo = 0.0
    top = n - 1
    for i in range(len(h)):
        hi = h[i]
        up += hi * xs[top - i]
        lo += hi * xs[i]
    s = up - lo
    w = s * s / ssq
    return w if w < 1.0 else 1.0


def _royston_z(w: float, n: int) -> float:
    """Royston's normalising transform of W (n >= 12): ~N(0, 1) for normal samples."""
    if w >= 1.0:
        return -10.0
    ln_n = math.log(n)
    return (math.log1p(-w) - _poly(_C5, ln_n)) / math.exp(_poly(_C6, ln_n))


# --- parameters and state ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExtractionParams:
    """Hyperparameters of :class:`ExtractionDetector`, shared by every key.

    Times are seconds, counts are events unless stated. ``shape_every``: new
    nearest-neighbour distances between two computations of the shape
    statistics (1 = every query); ``cv_min``: computations a shape baseline
    needs before it tests.
    """

    warmup: int = 50
    rate_window: float = 60.0
    rate_alpha: float = 0.05
    min_windows: int = 5
    min_log_sd: float = 0.25
    proj_dims: int = 8
    cell_dims: int = 4
    cell_width: float = 1.0
    bitmap_bits: int = 1024
    fp_warmup: int = 50
    max_fp_dims: int = 256
    novelty_window: int = 32
    novelty_halflife: float = 500.0
    novelty_min: int = 32
    reservoir: int = 24
    mindist_window: int = 40
    shapiro_min: int = 20
    shapiro_w: float = 0.90
    shape_alpha: float = 0.002
    cv_min: int = 50
    shape_every: int = 4
    duplicate_eps: float = 1e-3
    protect_p: float = 1e-3
    seed: int = 20190617

    def __post_init__(self) -> None:
        if self.bitmap_bits < 64 or self.bitmap_bits & (self.bitmap_bits - 1):
            raise ValueError("bitmap_bits must be a power of two >= 64")
        if not 1 <= self.cell_dims <= min(self.proj_dims, 16):
            raise ValueError("cell_dims must be in 1..min(proj_dims, 16)")
        if not 1 <= self.novelty_window <= 64:
            raise ValueError("novelty_window must be in 1..64")
        if not 12 <= self.mindist_window <= 256 or not 12 <= self.shapiro_min <= self.mindist_window:
            raise ValueError("need 12 <= shapiro_min <= mindist_window <= 256")
        if self.shape_every < 1:
            raise ValueError("shape_every must be >= 1")
        if self.reservoir < 2 or self.rate_window <= 0 or not 0 < self.rate_alpha < 1:
            raise ValueError("reservoir >= 2, rate_window > 0, 0 < rate_alpha < 1")


#: Volume channels: (signal name, unit, how to read its amount from an event).
_CHANNELS = ("requests", "response_bytes", "tokens")
_UNITS = ("requests", "bytes", "tokens")


def _amounts(x: dict[str, Any]) -> tuple[float, float | None, float | None]:
    body = num(x.get("http.response.body.bytes"))
    tin = num(x.get("gen_ai.usage.input_tokens"))
    tout = num(x.get("gen_ai.usage.output_tokens"))
    tokens = None
    if tin is not None or tout is not None:
        tokens = max(tin or 0.0, 0.0) + max(tout or 0.0, 0.0)
    return 1.0, (max(body, 0.0) if body is not None else None), tokens


@lru_cache(maxsize=300)
def _projection(dim: int, proj_dims: int, seed: int) -> tuple[tuple[float, ...], ...]:
    """The seeded Gaussian projection of ``dim`` inputs, as ``proj_dims`` columns of
    ``dim`` weights. Shared by every key with the same fingerprint length; bounded
    by max_fp_dims."""
    rng = np.random.default_rng([seed, dim, proj_dims])
    r = rng.standard_normal((dim, proj_dims)) / math.sqrt(proj_dims)
    return tuple(tuple(col) for col in r.T.tolist())


def _project(fp: list[float], cols: tuple[tuple[float, ...], ...]) -> list[float]:
    """``fp`` times the projection: each coordinate summed in input order."""
    out = []
    n = len(fp)
    for col in cols:
        acc = 0.0
        for j in range(n):
            acc += fp[j] * col[j]
        out.append(acc)
    return out


def _fingerprint(x: dict[str, Any], max_dims: int) -> list[float] | None:
    """The event's input fingerprint as a list of finite floats, or None."""
    fp = x.get("ueba.input.fingerprint")
    if not isinstance(fp, (list, tuple)) or not 1 <= len(fp) <= max_dims:
        return None
    try:
        # The usual case, a list of finite numbers, checked without numpy: the sum
        # of numbers is finite only if every one of them is. (Started at 0.0: mypy
        # types the sum of an Any list as an int, so the compiled build failed to
        # unbox every float sum and took the slow path below, 4 µs per event.)
        s = sum(fp, 0.0)
        if type(s) is float and s - s == 0.0:
            if all(type(v) is float for v in fp):
                return fp if type(fp) is list else list(fp)
            return [float(v) for v in fp]
    except (TypeError, ValueError, OverflowError):
        pass
    try:
        arr = np.asarray(fp, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if arr.ndim != 1 or not np.isfinite(arr).all():
        return None
    out: list[float] = arr.tolist()
    return out


_MASK64 = (1 << 64) - 1
#: Floor of the spread of the key's W (Royston scale) and log-CV baselines.
_SHAPE_SD_FLOOR = 0.3


def _robust_ew(mean: float, var: float, n: int, x: float, alpha: float, p_x: float, k: int = 1) -> tuple[float, float, int]:
    """EWMA mean/variance (cumulative until 1/alpha points), robust to a slow sweep.

    The step is clipped to 2.5 standard deviations, and a value already in the
    signal's own 1% tail (``p_x``) is learnt ten times slower: a sweep that
    builds up before the key's combined score flags it barely moves the
    baseline, while a lasting benign change is still learnt eventually.
    ``x`` stands for ``k`` observations (a statistic computed every k queries)."""
    # n counts observations; the robustness starts after 10 values (10 * k observations)
    settled = n >= 10 * k
    if k == 1:
        a = max(alpha, 1.0 / (n + 1))
        if p_x < 0.01 and settled:
            a = alpha / 10.0
    else:
        a = max(1.0 - (1.0 - alpha) ** k, k / (n + k))
        if p_x < 0.01 and settled:
            a = 1.0 - (1.0 - alpha / 10.0) ** k
    d = x - mean
    if settled:
        lim = 2.5 * math.sqrt(var + _SHAPE_SD_FLOOR**2)
        d = max(-lim, min(lim, d))
    mean += a * d
    var = (1 - a) * (var + a * d * d)
    return mean, var, n + k


#: Signal kinds in an assessment's ``pvals`` (how to explain them).
_VOLUME, _NOVELTY, _PRADA, _STEP, _SWEEP = range(5)
_ZERO3: Sequence[float] = (0.0, 0.0, 0.0)


@lru_cache(maxsize=64)
def _royston_params(n: int) -> tuple[float, float]:
    ln_n = math.log(n)
    return _poly(_C5, ln_n), math.exp(_poly(_C6, ln_n))


def _binom_sf(k: int, n: int, q: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, q)`` (``scipy.special.bdtrc(k - 1, n, q)``),
    in plain Python for the small ``n`` of the novelty window (<= 64)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    r = q / (1.0 - q)
    if k > n * q:
        # upper tail: terms fall off geometrically from j = k
        t = math.comb(n, k) * q**k * (1.0 - q) ** (n - k)
        acc = t
        for j in range(k, n):
            t *= r * (n - j) / (j + 1)
            acc += t
            if t < acc * 1e-17:
                break
        return min(acc, 1.0)
    # lower part (j < k) is the smaller side: 1 - P(X <= k - 1)
    t = (1.0 - q) ** n
    acc = t
    for j in range(k - 1):
        t *= r * (n - j) / (j + 1)
        acc += t
    return max(1.0 - acc, 0.0)


class _Assessment:
    """Everything one assessment of an event computes, reused by learning so the two agree."""

    __slots__ = ("window", "pvals", "p", "amounts", "proj", "dmin", "cell_bit", "novel", "fp")

    def __init__(self, window: int) -> None:
        self.window = window
        #: (tail probability, statistic, signal kind, explanation args) per testable signal
        self.pvals: list[tuple[float, float, int, tuple]] = []
        self.p = 1.0
        self.amounts: tuple[float, float | None, float | None] | None = None
        self.proj: list[float] | None = None
        self.dmin: float | None = None
        self.cell_bit = -1
        self.novel = False
        self.fp: list[float] | None = None


#: State versions: 1 computed the shape statistics for every query; 2 keeps the
#: last computation (``sh``: W, its normal score, level, CV as float32, ring size);
#: 3 writes the window sums (``cur``, ``prev``) that are whole numbers as integers.
_VERSION = 3
_INT_RANGE = float(1 << 53)


def _compact(values: list[float]) -> list[int | float]:
    """Whole numbers as ints (exact: below 2**53 every one is a float), the rest
    (and -0.0, whose sign an int would lose) as is."""
    return [int(v) if -_INT_RANGE < v < _INT_RANGE and v.is_integer() and (v or math.copysign(1.0, v) > 0.0) else v
            for v in values]
_SH = struct.Struct("<4fH")
_NAN = math.nan


class ExtractionDetector(CoreDetector):
    """Per-API-key model-extraction scorer. See the module docstring.

    Parameters
    ----------
    params : ExtractionParams, optional
        Shared hyperparameters, stored verbatim as ``self.params``.

    Examples
    --------
    >>> det = ExtractionDetector()
    >>> call = {"ueba.api_key.id": "k1"}
    >>> for i in range(600):  # 10 calls a minute for an hour
    ...     det.learn_one(call, 6.0 * i)
    >>> det.score_one(call, 3600.0).score < 90
    True
    >>> for i in range(400):  # then 400 calls in 40 seconds
    ...     det.learn_one(call, 3600.0 + 0.1 * i)
    >>> s = det.score_one(call, 3640.0)
    >>> round(s.score, 1), s.explanation.feature
    (100.0, 'requests')
    """

    name: ClassVar[str] = "api_extraction"
    Params: ClassVar[type] = ExtractionParams
    entity_type: ClassVar[str] = "api_key"
    entity_field: ClassVar[str] = "ueba.api_key.id"
    techniques: ClassVar[tuple[str, ...]] = ("AML.T0024", "AML.T0024.002", "AML.T0040")
    title: ClassVar[str] = "Possible model extraction through the inference API"
    #: Protects its baselines itself; must be shown every event (see the module docstring).
    self_protecting: ClassVar[bool] = True
    #: ``Score.raw`` is ``-log10 p`` (not floored at 1e-15 like the score): the suite's calibration uses it.
    raw_is_surprise: ClassVar[bool] = True
    #: Scores every event once warm (the suite's calibration starts its clock when it first does).
    dense_scores: ClassVar[bool] = True

    __slots__ = (
        "n", "win", "cur", "prev", "obs", "mean", "var", "nwin",
        "fp_dim", "fp_n", "alt_dim", "alt_run", "mu", "sd", "rows", "res_len", "res_pos",
        "md", "md_len", "md_pos", "bm_cur", "bm_prev", "nov_ring", "nov_len",
        "nov_s", "nov_n", "cv_mean", "cv_var", "cv_n", "w_mean", "w_var", "w_n", "lvl_mean", "lvl_var", "lvl_n",
        "sh_new", "sh", "_shp", "_cw", "_eps", "_g",
    )  # fmt: skip

    def __init__(self, params: ExtractionParams | None = None) -> None:
        super().__init__(params)
        self.n = 0
        self.win = -1
        self.cur = [0.0, 0.0, 0.0]
        self.prev = [0.0, 0.0, 0.0]
        self.obs = 0  # bit c: channel c observed in the current window
        self.mean = [0.0, 0.0, 0.0]
        self.var = [0.0, 0.0, 0.0]
        self.nwin = [0, 0, 0]
        self._reset_fingerprints(0)

    def _reset_fingerprints(self, dim: int) -> None:
        p: ExtractionParams = self.params
        self.fp_dim = dim
        self.fp_n = 0
        self.alt_dim = 0
        self.alt_run = 0
        self.mu = [0.0] * p.proj_dims
        self.sd = [0.0] * p.proj_dims  # Welford M2 until fp_warmup, then frozen sd
        #: the reservoir: up to ``reservoir`` rows of ``proj_dims`` float32 values
        self.rows: list[list[float]] = []
        self.res_len = 0
        self.res_pos = 0
        self.md = array("f", bytes(4 * p.mindist_window))
        self.md_len = 0
        self.md_pos = 0
        #: ring updates since the shape statistics were last computed, and those
        #: statistics: (W, W's normal score, level, CV, ring size) or None
        self.sh_new = 0
        self.sh: tuple[float, float, float, float, int] | None = None
        self._shp: tuple = ()  # their pvals entries against the current baselines (derived)
        self._cw: list[float] = []  # cell widths sd * cell_width, once frozen (derived)
        self._eps = 1e-9  # the duplicate radius (derived)
        self._g = 0.5 ** (1.0 / p.novelty_halflife)
        self.bm_cur = 0
        self.bm_prev = 0
        self.nov_ring = 0
        self.nov_len = 0
        self.nov_s = 0.0
        self.nov_n = 0.0
        self.cv_mean = 0.0
        self.cv_var = 0.0
        self.cv_n = 0
        self.w_mean = 0.0
        self.w_var = 0.0
        self.w_n = 0
        self.lvl_mean = 0.0
        self.lvl_var = 0.0
        self.lvl_n = 0

    # --- the streaming protocol ------------------------------------------

    def score_one(self, x: dict[str, Any], ts: float, peers: Any = None) -> Score:
        """Score one API call; pure. ``ts`` in seconds since the epoch."""
        if self.n < self.params.warmup:
            return Score(0.0)
        a = self._assess_event(x, ts)
        if not a.pvals:
            return Score(0.0)
        return Score(score_of(a.p), surprise(a.p), self._explain(a, None))

    def learn_one(self, x: dict[str, Any], ts: float, peers: Any = None, score: float | None = None) -> None:
        """Fold one API call into the key's state. ``ts`` in seconds."""
        ts_f = num(ts)
        if ts_f is None:
            return
        self._learn_event(x, self._assess_event(x, ts_f))

    # --- the CoreDetector hooks (what the suite calls: one assessment per event) ---

    def _assess(self, x: dict[str, Any], ts: float, peers: Any) -> tuple[float, float, Any]:
        a = self._assess_event(x, ts)
        if self.n < self.params.warmup or not a.pvals:
            return 0.0, 0.0, a
        p = a.p
        # score_of(p), surprise(p), inlined
        if p >= 1.0:
            return 0.0, -0.0, a
        return 100.0 * (1.0 - (p if p > P_FLOOR else P_FLOOR)), -math.log10(p if p > RAW_P_FLOOR else RAW_P_FLOOR), a

    def _learn(self, x: dict[str, Any], ts: float, peers: Any, score: float, ctx: Any) -> None:
        if num(ts) is None:
            return
        self._learn_event(x, ctx)

    def _explain(self, ctx: Any, peers: Any) -> Explanation:
        # Dominant signal: smallest p; ties (both beyond float range) go to the larger statistic.
        _, _, kind, args = min(ctx.pvals, key=lambda t: (t[0], -abs(t[1])))
        if kind == _VOLUME:
            return self._volume_expl(*args)
        if kind == _NOVELTY:
            return self._novelty_expl(*args)
        if kind == _PRADA:
            return self._prada_expl(*args)
        if kind == _STEP:
            return self._step_expl(*args)
        return self._sweep_expl(*args)

    def _learn_event(self, x: dict[str, Any], a: _Assessment) -> None:
        p: ExtractionParams = self.params
        protected = a.p < p.protect_p and self.n >= p.warmup
        if a.window > self.win:
            self._roll(a.window)
        amounts = a.amounts if a.amounts is not None else _amounts(x)
        cur = self.cur
        req, body, tokens = amounts
        cur[0] += req
        obs = self.obs | 1
        if body is not None:
            cur[1] += body
            obs |= 2
        if tokens is not None:
            cur[2] += tokens
            obs |= 4
        self.obs = obs
        self.n += 1
        if a.fp is not None:
            self._learn_fingerprint(a.fp, a, protected)

    def to_bytes(self) -> bytes:
        """Compact, exact serialisation of the key's state (msgpack)."""
        return msgspec.msgpack.encode(
            _State(
                _VERSION, self.n, self.win, _compact(self.cur), _compact(self.prev), self.obs, self.mean, self.var, self.nwin,
                self.fp_dim, self.fp_n, self.alt_dim, self.alt_run,
                array("d", self.mu).tobytes(), array("d", self.sd).tobytes(),
                array("f", [v for row in self.rows[: self.res_len] for v in row]).tobytes(), self.res_len, self.res_pos,
                self.md[: self.md_len].tobytes(), self.md_len, self.md_pos,
                _bits(self.bm_cur, self.params.bitmap_bits), _bits(self.bm_prev, self.params.bitmap_bits),
                self.nov_ring, self.nov_len, self.nov_s, self.nov_n, self.cv_mean, self.cv_var, self.cv_n,
                self.w_mean, self.w_var, self.w_n, self.lvl_mean, self.lvl_var, self.lvl_n,
                self.sh_new, _SH.pack(*self.sh) if self.sh is not None else b"",
            )
        )  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes, params: ExtractionParams | None = None) -> "ExtractionDetector":
        """Rebuild a detector from :meth:`to_bytes` output (same params as when saved)."""
        s = msgspec.msgpack.decode(data, type=_State)
        if s.version not in (1, 2, _VERSION):
            raise ValueError(f"unsupported {cls.name} state version {s.version}")
        det = cls(params)
        p = det.params
        det.n, det.win, det.obs = s.n, s.win, s.obs
        det.cur, det.prev = [float(v) for v in s.cur], [float(v) for v in s.prev]
        det.mean, det.var, det.nwin = s.mean, s.var, s.nwin
        det.fp_dim, det.fp_n, det.alt_dim, det.alt_run = s.fp_dim, s.fp_n, s.alt_dim, s.alt_run
        det.mu = array("d", s.mu).tolist()
        det.sd = array("d", s.sd).tolist()
        det.res_len, det.res_pos = s.res_len, s.res_pos
        if s.res_len:
            flat = array("f", s.res).tolist()
            pd = p.proj_dims
            if len(flat) != s.res_len * pd or s.res_len > p.reservoir:
                raise ValueError(f"{cls.name} state: reservoir of {len(flat)} values, expected {s.res_len} x {pd}")
            det.rows = [flat[o : o + pd] for o in range(0, len(flat), pd)]
        det.md_len, det.md_pos = s.md_len, s.md_pos
        if s.md_len:
            det.md[: s.md_len] = array("f", s.md)
        if det._frozen():
            det._frozen_derived()
        det.bm_cur = int.from_bytes(s.bm_cur, "little")
        det.bm_prev = int.from_bytes(s.bm_prev, "little")
        det.nov_ring, det.nov_len, det.nov_s, det.nov_n = s.nov_ring, s.nov_len, s.nov_s, s.nov_n
        det.cv_mean, det.cv_var, det.cv_n = s.cv_mean, s.cv_var, s.cv_n
        det.w_mean, det.w_var, det.w_n = s.w_mean, s.w_var, s.w_n
        det.lvl_mean, det.lvl_var, det.lvl_n = s.lvl_mean, s.lvl_var, s.lvl_n
        det.sh_new = s.sh_new
        if s.sh:
            det.sh = _SH.unpack(s.sh)
        elif s.version == 1 and det._frozen():
            det.sh = det._shape_stats()  # a version-1 state: its ring's statistics, as of now
        det._shape_pvals()
        return det

    # --- volume --------------------------------------------------------------

    def _roll(self, window: int) -> None:
        """Close the current window if ``window`` is a later one."""
        if window <= self.win:
            return
        p: ExtractionParams = self.params
        if self.win >= 0:
            for c in range(3):
                if not self.obs >> c & 1:
                    continue
                v = math.log1p(self.cur[c])
                if self.nwin[c] >= p.min_windows:
                    z = (v - self.mean[c]) / self._sd(c)
                    if normal_sf(z) < p.protect_p:
                        continue  # protect the baseline from a burst
                a = max(p.rate_alpha, 1.0 / (self.nwin[c] + 1))
                d = v - self.mean[c]
                self.mean[c] += a * d
                self.var[c] = (1 - a) * (self.var[c] + a * d * d)
                self.nwin[c] += 1
        if window == self.win + 1:
            self.prev = self.cur
        else:
            self.prev = [0.0, 0.0, 0.0]
        self.cur = [0.0, 0.0, 0.0]
        self.obs = 0
        self.win = window

    def _sd(self, c: int) -> float:
        return math.sqrt(self.var[c] + self.params.min_log_sd**2)

    def _volume(self, amounts: tuple, ts: float, window: int, out: list) -> None:
        p: ExtractionParams = self.params
        nwin = self.nwin
        mw = p.min_windows
        if nwin[0] < mw and nwin[1] < mw and nwin[2] < mw:
            return
        if window > self.win:
            cur = _ZERO3
            prev = self.cur if window == self.win + 1 else _ZERO3
        else:
            cur, prev = self.cur, self.prev
        frac = min(max(ts / p.rate_window - window, 0.0), 1.0)
        s0 = p.min_log_sd * p.min_log_sd
        for c in range(3):
            amount = amounts[c]
            if amount is None or nwin[c] < mw:
                continue
            observed = cur[c] + amount + prev[c] * (1.0 - frac)
            z = (math.log1p(observed) - self.mean[c]) / math.sqrt(self.var[c] + s0)
            out.append((normal_sf(z), z, _VOLUME, (c, observed, z)))

    def _volume_expl(self, c: int, observed: float, z: float) -> Explanation:
        p: ExtractionParams = self.params
        typical = math.expm1(self.mean[c])
        return Explanation(
            feature=_CHANNELS[c],
            observed=round(observed, 3),
            baseline={"center": round(typical, 3), "log_sd": round(self._sd(c), 4), "n": self.nwin[c]},
            peers=None,
            window=f"{p.rate_window:g}s",
            reason=(
                f"The key moved {fmt(observed)} {_UNITS[c]} in the last {p.rate_window:g}s, "
                f"against a typical {fmt(typical)} per active window (z={z:.1f} on a log scale)."
            ),
        )

    def _frozen(self) -> bool:
        return self.fp_n >= self.params.fp_warmup

    def _cell_bit(self, proj: list[float]) -> int:
        p: ExtractionParams = self.params
        key = 0
        j = 0
        floor = math.floor
        for v, m, w in zip(proj, self.mu, self._cw):  # _cw has cell_dims entries
            c = floor((v - m) / w)
            key |= ((c if c < 7 else 7) + 8 if c > -8 else 0) << j
            j += 4
        h = ((key + 1) * 0x9E3779B97F4A7C15 + p.seed) & _MASK64
        h ^= h >> 29
        h = (h * 0xBF58476D1CE4E5B9) & _MASK64
        return (h >> 20) % p.bitmap_bits

    def _mindist(self, proj: list[float]) -> float | None:
        """Distance from ``proj`` to its nearest neighbour in the reservoir (float32)."""
        if not self.rows:
            return None
        # float64 differences of the float32 values (exact in float64), as numpy took
        # them; a row is left as soon as its partial sum exceeds the best (the minimum
        # is the same: the sums are not reordered, and an abandoned one is larger)
        best = math.inf
        for row in self.rows:
            d2 = 0.0
            for a, b in zip(row, proj):
                d = a - b
                d2 += d * d
                if d2 > best:
                    break
            if d2 < best:
                best = d2
        # at float32 precision, as the ring stores it (so a restored key scores the same;
        # it also hides the summation order, which numpy's BLAS chose before)
        return _F32.unpack(_F32.pack(math.sqrt(best)))[0]

    def _dup_eps(self) -> float:
        if self._frozen():
            sd = self.sd
            return self.params.duplicate_eps * sum(sd) / len(sd)
        return 1e-9

    def _frozen_derived(self) -> None:
        """Values derived from the frozen spreads: cell widths and the duplicate radius."""
        p: ExtractionParams = self.params
        self._cw = [v * p.cell_width for v in self.sd[: p.cell_dims]]
        self._eps = self._dup_eps()

    def _inputs(self, fp: list[float], a: _Assessment) -> None:
        p: ExtractionParams = self.params
        dim = len(fp)
        if self.fp_dim and dim != self.fp_dim:
            return  # a different fingerprint space: not comparable (see learn_one)
        proj = _project(fp, _projection(dim, p.proj_dims, p.seed))
        a.proj = proj
        d = self._mindist(proj)
        a.dmin = d
        if self.fp_n < p.fp_warmup:  # not frozen yet
            return
        out = a.pvals
        bit = self._cell_bit(proj)
        a.cell_bit = bit
        a.novel = novel = not ((self.bm_cur | self.bm_prev) >> bit & 1)
        if novel and self.nov_n >= p.novelty_min:
            nwin = min(self.nov_len + 1, p.novelty_window)
            k = (((self.nov_ring << 1) | 1) & ((1 << nwin) - 1)).bit_count()
            q = min(max((self.nov_s + 0.5) / (self.nov_n + 1.0), 0.01), 0.99)
            out.append((_binom_sf(k, nwin, q), float(k), _NOVELTY, (k, nwin, q)))
        # PRADA, step size, sweep regularity: the last computation of the ring's statistics
        # (every shape_every new distances; see _learn_fingerprint)
        if self._shp:
            out.extend(self._shp)

    def _shape_stats(self) -> tuple[float, float, float, float, int] | None:
        """(W, W's normal score, level, CV, ring size) of the min-distance ring, at
        float32 precision (as serialised); None below ``shapiro_min`` distances.
        Level and CV are NaN for an all-zero ring."""
        p: ExtractionParams = self.params
        n = self.md_len
        if n < p.shapiro_min:
            return None
        srt: list[float] = sorted(self.md[:n].tolist())
        total = sq = 0.0
        for v in srt:  # summed in order, as sum() would
            total += v
            sq += v * v
        mean = total / n
        ssq = sq - total * mean
        if ssq < 1e-6 * sq:  # nearly constant: the one-pass form loses digits
            ssq = 0.0
            for v in srt:
                d = v - mean
                ssq += d * d
        w = _shapiro_w_sorted(srt, mean, ssq)
        if w >= 1.0:
            wz = -10.0
        else:
            loc, scale = _royston_params(n)
            wz = (math.log1p(-w) - loc) / scale
        if total > 0:
            level, cv = mean, math.sqrt((ssq if ssq > 0.0 else 0.0) / (n - 1)) / mean
        else:
            level = cv = _NAN
        return _SH.unpack(_SH.pack(w, wz, level, cv, n))

    def _shape_tails(self) -> tuple[float, float, float]:
        """Per-signal tails (W low on Royston's scale, level low, CV low) of the stored
        statistics against the key's baselines."""
        sh = self.sh
        if sh is None:
            return 1.0, 1.0, 1.0
        _w, wz, level, cv, _n = sh
        floor2 = _SHAPE_SD_FLOOR * _SHAPE_SD_FLOOR
        p_w = 0.5 * erfc((wz - self.w_mean) / math.sqrt(self.w_var + floor2) * _SQRT1_2)
        p_lvl = p_cv = 1.0
        if level == level:
            p_lvl = 0.5 * erfc(-(math.log(level) - self.lvl_mean) / math.sqrt(self.lvl_var + floor2) * _SQRT1_2)
            if cv > 0:
                p_cv = 0.5 * erfc(-(math.log(cv) - self.cv_mean) / math.sqrt(self.cv_var + floor2) * _SQRT1_2)
        return p_w, p_lvl, p_cv

    def _shape_pvals(self) -> None:
        """The pvals entries the stored statistics add to a query's score (derived:
        they change only when the statistics or the baselines do)."""
        p: ExtractionParams = self.params
        sh = self.sh
        if sh is None:
            self._shp = ()
            return
        w, _wz, level, cv, n = sh
        p_w, p_lvl, p_cv = self._shape_tails()
        out = []
        # a baseline tests once it has learnt cv_min values (of shape_every queries each)
        warm = p.cv_min * p.shape_every
        if self.w_n >= warm:
            # Benign min-distances are only roughly normal: W is judged against the key's
            # own W (on Royston's normalising scale), and only below PRADA's threshold.
            out.append((p_w if w < p.shapiro_w else 1.0, w, _PRADA, (w, n)))
        if level == level:
            if self.lvl_n >= warm:
                out.append((p_lvl, level, _STEP, (level, n)))
            if self.cv_n >= warm and cv > 0:
                out.append((p_cv, cv, _SWEEP, (cv, n)))
        self._shp = tuple(out)

    def _novelty_expl(self, k: int, nwin: int, q: float) -> Explanation:
        return Explanation(
            feature="input_novelty",
            observed=k,
            baseline={
                "new_cell_rate": round(q, 4),
                "cells_used": (self.bm_cur | self.bm_prev).bit_count(),
                "n": round(self.nov_n, 1),
            },
            peers=None,
            window=f"last {nwin} queries",
            reason=(
                f"{k} of the key's last {nwin} queries landed in input-space cells it had never "
                f"used (expected {q * nwin:.1f}), a coverage sweep typical of model extraction."
            ),
        )

    def _prada_expl(self, w: float, n: int) -> Explanation:
        p: ExtractionParams = self.params
        if w >= p.shapiro_w:
            reason = f"Nearest-neighbour distances of the key's last {n} queries look like benign traffic (W={w:.3f})."
        else:
            reason = (
                f"Nearest-neighbour distances of the key's last {n} queries are far from normal "
                f"(Shapiro-Wilk W={w:.3f} < {p.shapiro_w}), PRADA's signature of synthetic extraction queries."
            )
        return Explanation(
            feature="prada",
            observed=round(w, 4),
            baseline={"threshold": p.shapiro_w, "n": n},
            peers=None,
            window=f"last {n} queries",
            reason=reason,
        )

    def _step_expl(self, level: float, n: int) -> Explanation:
        usual = math.exp(self.lvl_mean)
        return Explanation(
            feature="step_size",
            observed=round(level, 5),
            baseline={"center": round(usual, 5), "log_sd": round(math.sqrt(self.lvl_var), 4), "n": self.lvl_n},
            peers=None,
            window=f"last {n} queries",
            reason=(
                f"The key's queries are unusually close to one another (mean nearest-neighbour distance "
                f"{level:.3g} vs a usual {usual:.3g}): small perturbation steps, as in Jacobian-based "
                f"synthetic query generation."
            ),
        )

    def _sweep_expl(self, cv: float, n: int) -> Explanation:
        return Explanation(
            feature="sweep_regularity",
            observed=round(cv, 4),
            baseline={"center": round(math.exp(self.cv_mean), 4), "log_sd": round(math.sqrt(self.cv_var), 4), "n": self.cv_n},
            peers=None,
            window=f"last {n} queries",
            reason=(
                f"The key's queries are evenly spaced (nearest-neighbour distance CV {cv:.3f} "
                f"vs a usual {math.exp(self.cv_mean):.3f}), as in a systematic grid or step sweep."
            ),
        )

    def _learn_fingerprint(self, fp: list[float], a: _Assessment, protected: bool) -> None:
        p: ExtractionParams = self.params
        dim = len(fp)
        if self.fp_dim == 0:
            self._reset_fingerprints(dim)
        elif dim != self.fp_dim:
            # A key that really switched fingerprint spaces (new model) is re-learnt after
            # fp_warmup consecutive calls; alternating lengths never wipe the state.
            if dim == self.alt_dim:
                self.alt_run += 1
            else:
                self.alt_dim, self.alt_run = dim, 1
            if self.alt_run >= p.fp_warmup:
                self._reset_fingerprints(dim)
            else:
                return
        else:
            self.alt_run = 0
        proj: list[float]
        if a.proj is not None:
            proj, d = a.proj, a.dmin
        else:
            proj = _project(fp, _projection(dim, p.proj_dims, p.seed))
            d = self._mindist(proj)
        frozen = self.fp_n >= p.fp_warmup
        if d is not None and d <= (self._eps if frozen else 1e-9):
            return
        if not frozen:
            # Welford on the projected coordinates; frozen into (mu, sd) at fp_warmup.
            self.fp_n += 1
            n = self.fp_n
            mu, m2 = self.mu, self.sd
            for j, v in enumerate(proj):
                delta = v - mu[j]
                mu[j] += delta / n
                m2[j] += delta * (v - mu[j])
            if n == p.fp_warmup:
                sd = [math.sqrt(max(v, 0.0) / (n - 1)) for v in m2]
                self.sd = [v if v > 1e-12 else 1.0 for v in sd]
                self._frozen_derived()
                for row in self.rows:
                    self.bm_cur |= 1 << self._cell_bit(row)
        else:
            self.fp_n += 1
            bit = a.cell_bit if a.cell_bit >= 0 else self._cell_bit(proj)
            novel = a.novel if a.cell_bit >= 0 else not ((self.bm_cur | self.bm_prev) >> bit & 1)
            self.nov_ring = ((self.nov_ring << 1) | novel) & ((1 << p.novelty_window) - 1)
            if self.nov_len < p.novelty_window:
                self.nov_len += 1
            if not protected:
                g = self._g
                self.nov_s = g * self.nov_s + (1.0 if novel else 0.0)
                self.nov_n = g * self.nov_n + 1.0
            if not self.bm_cur >> bit & 1:  # else the current generation holds it already
                self.bm_cur |= 1 << bit
                if self.bm_cur.bit_count() > p.bitmap_bits // 2:
                    self.bm_prev, self.bm_cur = self.bm_cur, 0
        if d is not None:
            self.md[self.md_pos] = d
            self.md_pos = (self.md_pos + 1) % p.mindist_window
            if self.md_len < p.mindist_window:
                self.md_len += 1
            self.sh_new += 1
            if self.sh_new >= p.shape_every and frozen and self.md_len >= p.shapiro_min:
                # Every shape_every new distances: the ring's statistics, and the key's
                # baselines of them learn the new values as that many observations.
                k = min(self.sh_new, p.shape_every)
                self.sh_new = 0
                self.sh = sh = self._shape_stats()
                if not protected and sh is not None:
                    _w, wz, level, cv, _n = sh
                    t_w, t_lvl, t_cv = self._shape_tails()
                    alpha = p.shape_alpha
                    self.w_mean, self.w_var, self.w_n = _robust_ew(self.w_mean, self.w_var, self.w_n, wz, alpha, t_w, k)
                    if level == level:
                        self.lvl_mean, self.lvl_var, self.lvl_n = _robust_ew(
                            self.lvl_mean, self.lvl_var, self.lvl_n, math.log(level), alpha, t_lvl, k
                        )
                        if cv > 0:
                            self.cv_mean, self.cv_var, self.cv_n = _robust_ew(
                                self.cv_mean, self.cv_var, self.cv_n, math.log(cv), alpha, t_cv, k
                            )
                self._shape_pvals()
        row = array("f", proj).tolist()  # float32, as serialised
        if self.res_pos < len(self.rows):
            self.rows[self.res_pos] = row
        else:
            self.rows.append(row)
        self.res_pos = (self.res_pos + 1) % p.reservoir
        if self.res_len < p.reservoir:
            self.res_len += 1

    # --- combination ------------------------------------------------------------

    def _assess_event(self, x: dict[str, Any], ts: float) -> _Assessment:
        p: ExtractionParams = self.params
        ts_f = ts if type(ts) is float and ts - ts == 0.0 else num(ts)
        win = self.win
        window = int(ts_f // p.rate_window) if ts_f is not None else win
        if window < win:
            window = win  # late event: counted in the current window
        a = _Assessment(window)
        a.amounts = amounts = _amounts(x)
        out = a.pvals
        nwin = self.nwin
        mw = p.min_windows
        if ts_f is not None and (nwin[0] >= mw or nwin[1] >= mw or nwin[2] >= mw):
            # Volume in the sliding rate_window (the _volume signals, inlined)
            if window > win:
                cur = _ZERO3
                prev = self.cur if window == win + 1 else _ZERO3
            else:
                cur, prev = self.cur, self.prev
            frac = ts_f / p.rate_window - window
            rest = 1.0 - (0.0 if frac < 0.0 else (1.0 if frac > 1.0 else frac))
            s0 = p.min_log_sd * p.min_log_sd
            mean, var = self.mean, self.var
            for c in range(3):
                amount = amounts[c]
                if amount is None or nwin[c] < mw:
                    continue
                observed = cur[c] + amount + prev[c] * rest
                z = (math.log1p(observed) - mean[c]) / math.sqrt(var[c] + s0)
                out.append((0.5 * erfc(z * _SQRT1_2), z, _VOLUME, (c, observed, z)))
        fp = _fingerprint(x, p.max_fp_dims)
        if fp is not None:
            a.fp = fp
            self._inputs(fp, a)
        if out:
            lo = 1.0
            for t in out:
                if t[0] < lo:
                    lo = t[0]
            a.p = sidak(lo, len(out))
        return a


_F32 = struct.Struct("<f")
_SQRT1_2 = 1.0 / math.sqrt(2.0)
erfc = math.erfc


def _bits(value: int, nbits: int) -> bytes:
    return value.to_bytes(nbits // 8, "little") if value else b""


if __name__ == "__main__":  # pragma: no cover - benchmark figures for the report
    import time

    rng = np.random.default_rng(1)
    det = ExtractionDetector()
    centers = rng.normal(size=(3, 32)) * 3
    xs = []
    for i in range(5000):
        fp = centers[i % 3] + rng.normal(size=32)
        xs.append(
            {
                "ueba.api_key.id": "k",
                "http.response.body.bytes": int(rng.integers(500, 1500)),
                "ueba.input.fingerprint": fp.tolist(),
            }
        )
    t0 = time.process_time()
    for i, x in enumerate(xs):
        det.score_one(x, 6.0 * i)
        det.learn_one(x, 6.0 * i)
    dt = (time.process_time() - t0) / len(xs) * 1e6
    print(f"{ExtractionDetector.name}: {dt:.0f} µs per learn+score, state {len(det.to_bytes())} bytes")


# mypyc: a class decorator other than @dataclass makes a class non-native.
register(ExtractionDetector)
