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

State: about 1.4 KiB per key, independent of the stream (fixed-size arrays,
bitmaps and a bounded reservoir; the projection matrix is derived from
``params.seed`` and shared by all keys).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import msgspec
import numpy as np
from scipy.special import bdtrc, ndtri

from ._tails import fmt, normal_sf, num, score_of, sidak, surprise
from .base import Explanation, Score, register

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

    Times are seconds, counts are events unless stated.
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
def _projection(dim: int, proj_dims: int, seed: int) -> np.ndarray:
    # Shared by every key with the same fingerprint length; bounded by max_fp_dims.
    rng = np.random.default_rng([seed, dim, proj_dims])
    r = rng.standard_normal((dim, proj_dims)) / math.sqrt(proj_dims)
    r.setflags(write=False)
    return r


def _fingerprint(x: dict[str, Any], max_dims: int) -> np.ndarray | None:
    fp = x.get("ueba.input.fingerprint")
    if not isinstance(fp, (list, tuple)) or not 1 <= len(fp) <= max_dims:
        return None
    try:
        arr = np.asarray(fp, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if arr.ndim != 1 or not np.isfinite(arr).all():
        return None
    return arr


_MASK64 = (1 << 64) - 1
#: Floor of the spread of the key's W (Royston scale) and log-CV baselines.
_SHAPE_SD_FLOOR = 0.3


def _robust_ew(mean: float, var: float, n: int, x: float, alpha: float, p_x: float) -> tuple[float, float, int]:
    """EWMA mean/variance (cumulative until 1/alpha points), robust to a slow sweep.

    The step is clipped to 2.5 standard deviations, and a value already in the
    signal's own 1% tail (``p_x``) is learnt ten times slower: a sweep that
    builds up before the key's combined score flags it barely moves the
    baseline, while a lasting benign change is still learnt eventually."""
    a = max(alpha, 1.0 / (n + 1))
    if p_x < 0.01 and n >= 10:
        a = alpha / 10.0
    d = x - mean
    if n >= 10:
        lim = 2.5 * math.sqrt(var + _SHAPE_SD_FLOOR**2)
        d = max(-lim, min(lim, d))
    mean += a * d
    var = (1 - a) * (var + a * d * d)
    return mean, var, n + 1


@dataclass(slots=True)
class _Assessment:
    """Everything score_one computes, reused by learn_one so the two agree."""

    window: int
    #: (tail probability, statistic, explanation builder, builder args) per testable signal
    pvals: list[tuple[float, float, Any, tuple]]
    p: float
    proj: np.ndarray | None = None
    dmin: float | None = None
    cell_bit: int = -1
    novel: bool = False
    fp: np.ndarray | None = None
    cv: float | None = None
    wz: float | None = None
    level: float | None = None
    #: per-signal tails of the shape statistics (W, step size, CV), for baseline gating
    p_shape: tuple[float, float, float] = (1.0, 1.0, 1.0)


class _State(msgspec.Struct, array_like=True):
    version: int
    n: int
    win: int
    cur: list[float]
    prev: list[float]
    obs: int
    mean: list[float]
    var: list[float]
    nwin: list[int]
    fp_dim: int
    fp_n: int
    alt_dim: int
    alt_run: int
    mu: bytes
    sd: bytes
    res: bytes
    res_len: int
    res_pos: int
    md: bytes
    md_len: int
    md_pos: int
    bm_cur: bytes
    bm_prev: bytes
    nov_ring: int
    nov_len: int
    nov_s: float
    nov_n: float
    cv_mean: float
    cv_var: float
    cv_n: int
    w_mean: float
    w_var: float
    w_n: int
    lvl_mean: float
    lvl_var: float
    lvl_n: int


@register
class ExtractionDetector:
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
        "params", "n", "win", "cur", "prev", "obs", "mean", "var", "nwin",
        "fp_dim", "fp_n", "alt_dim", "alt_run", "mu", "sd", "res", "res_len", "res_pos",
        "md", "md_len", "md_pos", "bm_cur", "bm_prev", "nov_ring", "nov_len",
        "nov_s", "nov_n", "cv_mean", "cv_var", "cv_n", "w_mean", "w_var", "w_n", "lvl_mean", "lvl_var", "lvl_n",
    )  # fmt: skip

    def __init__(self, params: ExtractionParams | None = None) -> None:
        self.params = params if params is not None else ExtractionParams()
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
        p = self.params
        self.fp_dim = dim
        self.fp_n = 0
        self.alt_dim = 0
        self.alt_run = 0
        self.mu = np.zeros(p.proj_dims)
        self.sd = np.zeros(p.proj_dims)  # Welford M2 until fp_warmup, then frozen sd
        self.res = np.zeros((p.reservoir, p.proj_dims), dtype=np.float32)
        self.res_len = 0
        self.res_pos = 0
        self.md = np.zeros(p.mindist_window, dtype=np.float32)
        self.md_len = 0
        self.md_pos = 0
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

    def score_one(self, x: dict[str, Any], ts: float) -> Score:
        """Score one API call; pure. ``ts`` in seconds since the epoch."""
        if self.n < self.params.warmup:
            return Score(0.0)
        a = self._assess(x, ts)
        if not a.pvals:
            return Score(0.0)
        # Dominant signal: smallest p; ties (both beyond float range) go to the larger statistic.
        _, _, build, args = min(a.pvals, key=lambda t: (t[0], -abs(t[1])))
        return Score(score_of(a.p), surprise(a.p), build(*args))

    def learn_one(self, x: dict[str, Any], ts: float) -> None:
        """Fold one API call into the key's state. ``ts`` in seconds."""
        p = self.params
        ts_f = num(ts)
        if ts_f is None:
            return
        a = self._assess(x, ts_f)
        protected = a.p < p.protect_p and self.n >= p.warmup
        self._roll(a.window)
        for c, amount in enumerate(_amounts(x)):
            if amount is not None:
                self.cur[c] += amount
                self.obs |= 1 << c
        self.n += 1
        if a.fp is not None:
            self._learn_fingerprint(a.fp, a, protected)

    def to_bytes(self) -> bytes:
        """Compact, exact serialisation of the key's state (msgpack)."""
        return msgspec.msgpack.encode(
            _State(
                1, self.n, self.win, self.cur, self.prev, self.obs, self.mean, self.var, self.nwin,
                self.fp_dim, self.fp_n, self.alt_dim, self.alt_run,
                self.mu.tobytes(), self.sd.tobytes(),
                self.res[: self.res_len].tobytes(), self.res_len, self.res_pos,
                self.md[: self.md_len].tobytes(), self.md_len, self.md_pos,
                _bits(self.bm_cur, self.params.bitmap_bits), _bits(self.bm_prev, self.params.bitmap_bits),
                self.nov_ring, self.nov_len, self.nov_s, self.nov_n, self.cv_mean, self.cv_var, self.cv_n,
                self.w_mean, self.w_var, self.w_n, self.lvl_mean, self.lvl_var, self.lvl_n,
            )
        )  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes, params: ExtractionParams | None = None) -> "ExtractionDetector":
        """Rebuild a detector from :meth:`to_bytes` output (same params as when saved)."""
        s = msgspec.msgpack.decode(data, type=_State)
        if s.version != 1:
            raise ValueError(f"unsupported {cls.name} state version {s.version}")
        det = cls(params)
        p = det.params
        det.n, det.win, det.obs = s.n, s.win, s.obs
        det.cur, det.prev, det.mean, det.var, det.nwin = s.cur, s.prev, s.mean, s.var, s.nwin
        det.fp_dim, det.fp_n, det.alt_dim, det.alt_run = s.fp_dim, s.fp_n, s.alt_dim, s.alt_run
        det.mu = np.frombuffer(s.mu, dtype=np.float64).copy()
        det.sd = np.frombuffer(s.sd, dtype=np.float64).copy()
        det.res_len, det.res_pos = s.res_len, s.res_pos
        if s.res_len:
            det.res[: s.res_len] = np.frombuffer(s.res, dtype=np.float32).reshape(s.res_len, p.proj_dims)
        det.md_len, det.md_pos = s.md_len, s.md_pos
        if s.md_len:
            det.md[: s.md_len] = np.frombuffer(s.md, dtype=np.float32)
        det.bm_cur = int.from_bytes(s.bm_cur, "little")
        det.bm_prev = int.from_bytes(s.bm_prev, "little")
        det.nov_ring, det.nov_len, det.nov_s, det.nov_n = s.nov_ring, s.nov_len, s.nov_s, s.nov_n
        det.cv_mean, det.cv_var, det.cv_n = s.cv_mean, s.cv_var, s.cv_n
        det.w_mean, det.w_var, det.w_n = s.w_mean, s.w_var, s.w_n
        det.lvl_mean, det.lvl_var, det.lvl_n = s.lvl_mean, s.lvl_var, s.lvl_n
        return det

    # --- volume --------------------------------------------------------------

    def _roll(self, window: int) -> None:
        """Close the current window if ``window`` is a later one."""
        if window <= self.win:
            return
        p = self.params
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

    def _volume(self, x: dict[str, Any], ts: float, window: int, out: list) -> None:
        p = self.params
        if window > self.win:
            cur = (0.0, 0.0, 0.0)
            prev = self.cur if window == self.win + 1 else (0.0, 0.0, 0.0)
        else:
            cur, prev = self.cur, self.prev
        frac = min(max(ts / p.rate_window - window, 0.0), 1.0)
        for c, amount in enumerate(_amounts(x)):
            if amount is None or self.nwin[c] < p.min_windows:
                continue
            observed = cur[c] + amount + prev[c] * (1.0 - frac)
            z = (math.log1p(observed) - self.mean[c]) / self._sd(c)
            out.append((normal_sf(z), z, self._volume_expl, (c, observed, z)))

    def _volume_expl(self, c: int, observed: float, z: float) -> Explanation:
        p = self.params
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

    def _cell_bit(self, proj: np.ndarray) -> int:
        p = self.params
        k = p.cell_dims
        # Plain floats: four numpy ops on 4-element arrays cost more than the arithmetic.
        key = 0
        for j, (v, m, sd) in enumerate(zip(proj[:k].tolist(), self.mu[:k].tolist(), self.sd[:k].tolist())):
            c = math.floor((v - m) / (sd * p.cell_width))
            key |= (min(max(c, -8), 7) + 8) << (4 * j)
        h = ((key + 1) * 0x9E3779B97F4A7C15 + p.seed) & _MASK64
        h ^= h >> 29
        h = (h * 0xBF58476D1CE4E5B9) & _MASK64
        return (h >> 20) % p.bitmap_bits

    def _mindist(self, proj: np.ndarray) -> float | None:
        if self.res_len == 0:
            return None
        diff = self.res[: self.res_len] - proj.astype(np.float32)
        return float(np.sqrt(np.min(np.einsum("ij,ij->i", diff, diff))))

    def _dup_eps(self) -> float:
        if self._frozen():
            return self.params.duplicate_eps * float(self.sd.sum()) / self.sd.shape[0]
        return 1e-9

    def _md_with(self, d: float | None) -> np.ndarray:
        """The min-distance ring as it would be after adding ``d`` (oldest dropped)."""
        p = self.params
        if self.md_len < p.mindist_window:
            base = self.md[: self.md_len]
        else:
            base = np.concatenate((self.md[self.md_pos :], self.md[: self.md_pos]))
        if d is None:
            return base.astype(np.float64)
        if base.shape[0] == p.mindist_window:
            base = base[1:]
        return np.append(base.astype(np.float64), d)

    def _inputs(self, fp: np.ndarray, a: _Assessment) -> None:
        p = self.params
        if self.fp_dim and fp.shape[0] != self.fp_dim:
            return  # a different fingerprint space: not comparable (see learn_one)
        proj = fp @ _projection(fp.shape[0], p.proj_dims, p.seed)
        a.proj = proj
        d = self._mindist(proj)
        a.dmin = d
        if d is not None and d <= self._dup_eps():
            d = None  # retries / cache hits say nothing about exploration
        if not self._frozen():
            return
        out = a.pvals
        bit = self._cell_bit(proj)
        a.cell_bit = bit
        a.novel = not ((self.bm_cur | self.bm_prev) >> bit & 1)
        if self.nov_n >= p.novelty_min and a.novel:
            nwin = min(self.nov_len + 1, p.novelty_window)
            k = (((self.nov_ring << 1) | 1) & ((1 << nwin) - 1)).bit_count()
            q = min(max((self.nov_s + 0.5) / (self.nov_n + 1.0), 0.01), 0.99)
            out.append((float(bdtrc(k - 1, nwin, q)), float(k), self._novelty_expl, (k, nwin, q)))
        ring = self._md_with(d)
        n = ring.shape[0]
        if n < p.shapiro_min:
            return
        w, _ = shapiro_wilk(ring)
        wz = _royston_z(w, n)
        a.wz = wz
        p_w = p_lvl = p_cv = 1.0
        if self.w_n >= p.cv_min:
            # Benign min-distances are only roughly normal: W is judged against the key's
            # own W (on Royston's normalising scale), and only below PRADA's threshold.
            p_w = normal_sf((wz - self.w_mean) / math.sqrt(self.w_var + _SHAPE_SD_FLOOR**2))
            out.append((p_w if w < p.shapiro_w else 1.0, w, self._prada_expl, (w, n)))
        total = float(ring.sum())
        if total > 0:
            mean = total / n
            cv = math.sqrt(max(float(np.dot(ring, ring)) - n * mean * mean, 0.0) / (n - 1)) / mean
            a.cv = cv
            a.level = mean
            if self.lvl_n >= p.cv_min:
                z = (math.log(mean) - self.lvl_mean) / math.sqrt(self.lvl_var + _SHAPE_SD_FLOOR**2)
                p_lvl = normal_sf(-z)
                out.append((p_lvl, mean, self._step_expl, (mean, n)))
            if self.cv_n >= p.cv_min and cv > 0:
                z = (math.log(cv) - self.cv_mean) / math.sqrt(self.cv_var + _SHAPE_SD_FLOOR**2)
                p_cv = normal_sf(-z)
                out.append((p_cv, cv, self._sweep_expl, (cv, n)))
        a.p_shape = (p_w, p_lvl, p_cv)

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
        p = self.params
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

    def _learn_fingerprint(self, fp: np.ndarray, a: _Assessment, protected: bool) -> None:
        p = self.params
        dim = fp.shape[0]
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
        proj = a.proj if a.proj is not None else fp @ _projection(dim, p.proj_dims, p.seed)
        d = a.dmin if a.proj is not None else self._mindist(proj)
        if d is not None and d <= self._dup_eps():
            return
        if not self._frozen():
            # Welford on the projected coordinates; frozen into (mu, sd) at fp_warmup.
            self.fp_n += 1
            delta = proj - self.mu
            self.mu += delta / self.fp_n
            self.sd += delta * (proj - self.mu)
            if self.fp_n == p.fp_warmup:
                self.sd = np.sqrt(self.sd / (self.fp_n - 1))
                self.sd[self.sd <= 1e-12] = 1.0
                for row in self.res[: self.res_len]:
                    self.bm_cur |= 1 << self._cell_bit(row.astype(np.float64))
        else:
            self.fp_n += 1
            bit = a.cell_bit if a.cell_bit >= 0 else self._cell_bit(proj)
            novel = not ((self.bm_cur | self.bm_prev) >> bit & 1)
            self.nov_ring = ((self.nov_ring << 1) | int(novel)) & ((1 << p.novelty_window) - 1)
            self.nov_len = min(self.nov_len + 1, p.novelty_window)
            if not protected:
                g = 0.5 ** (1.0 / p.novelty_halflife)
                self.nov_s = g * self.nov_s + float(novel)
                self.nov_n = g * self.nov_n + 1.0
            self.bm_cur |= 1 << bit
            if self.bm_cur.bit_count() > p.bitmap_bits // 2:
                self.bm_prev, self.bm_cur = self.bm_cur, 0
        if d is not None:
            self.md[self.md_pos] = d
            self.md_pos = (self.md_pos + 1) % p.mindist_window
            self.md_len = min(self.md_len + 1, p.mindist_window)
            if self._frozen() and not protected and a.wz is not None:
                self.w_mean, self.w_var, self.w_n = _robust_ew(
                    self.w_mean, self.w_var, self.w_n, a.wz, p.shape_alpha, a.p_shape[0]
                )
            if self._frozen() and not protected and a.level is not None:
                self.lvl_mean, self.lvl_var, self.lvl_n = _robust_ew(
                    self.lvl_mean, self.lvl_var, self.lvl_n, math.log(a.level), p.shape_alpha, a.p_shape[1]
                )
            if self._frozen() and not protected and a.cv is not None and a.cv > 0:
                self.cv_mean, self.cv_var, self.cv_n = _robust_ew(
                    self.cv_mean, self.cv_var, self.cv_n, math.log(a.cv), p.shape_alpha, a.p_shape[2]
                )
        self.res[self.res_pos] = proj
        self.res_pos = (self.res_pos + 1) % p.reservoir
        self.res_len = min(self.res_len + 1, p.reservoir)

    # --- combination ------------------------------------------------------------

    def _assess(self, x: dict[str, Any], ts: float) -> _Assessment:
        p = self.params
        ts_f = num(ts)
        window = int(ts_f // p.rate_window) if ts_f is not None else self.win
        if window < self.win:
            window = self.win  # late event: counted in the current window
        a = _Assessment(window=window, pvals=[], p=1.0)
        if ts_f is not None:
            self._volume(x, ts_f, window, a.pvals)
        fp = _fingerprint(x, p.max_fp_dims)
        if fp is not None:
            a.fp = fp
            self._inputs(fp, a)
        if a.pvals:
            a.p = sidak(min(t[0] for t in a.pvals), len(a.pvals))
        return a


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
