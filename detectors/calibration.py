"""Map raw statistics to the common 0-100 scale.

Every detector reports ``score = 100 * (1 - p)`` where ``p`` is the estimated
tail probability of an observation at least this extreme under the
identity's (or its peers') baseline: 99 reads "1 in 100", 99.9 "1 in 1000",
whatever the detector.  This module is the one place those tails are
computed, so a z-score of 3 means the same in exfiltration and API usage.

Scalar functions are pure Python (the per-event path); ``*_array`` twins are
vectorised with numpy/scipy for the batch path and agree to ~1e-9.

>>> round(score_from_p(normal_sf(3.0)), 2)
99.87
>>> round(score_from_p(poisson_sf(10, 1.0)), 4)
100.0
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

__all__ = [
    "score_from_p",
    "surprise_of_score",
    "normal_surprise",
    "sidak_p",
    "TailSketch",
    "DayCalibration",
    "normal_sf",
    "z_tail_score",
    "robust_z",
    "poisson_sf",
    "novelty_p",
    "pareto_tail",
    "cusum_tail",
    "normal_sf_array",
    "z_tail_score_array",
    "poisson_sf_array",
    "SENSITIVITY_WEIGHT",
]

_SQRT1_2 = 1.0 / math.sqrt(2.0)

#: How much rarer a first-seen resource counts per sensitivity label: the
#: novelty probability is divided by this, so touching a new *restricted*
#: secret scores like a 4x rarer event than a new *internal* dataset.
SENSITIVITY_WEIGHT: dict[str | None, float] = {
    None: 1.0,
    "public": 0.25,
    "internal": 1.0,
    "confidential": 2.0,
    "restricted": 4.0,
}


def score_from_p(p: float) -> float:
    """``100 * (1 - p)``, with ``p`` clipped to [0, 1]."""
    if p >= 1.0:
        return 0.0
    if p <= 0.0:
        return 100.0
    return 100.0 * (1.0 - p)


def normal_sf(z: float) -> float:
    """Upper tail of the standard normal, P(Z >= z)."""
    return 0.5 * math.erfc(z * _SQRT1_2)


def z_tail_score(z: float) -> float:
    """Score of an upper-tail z-score (only excess counts: low volume is not a threat)."""
    return 100.0 - 50.0 * math.erfc(z * _SQRT1_2)


def robust_z(x: float, median: float, mad: float, floor: float = 1e-9) -> float:
    """z-score from median and MAD (1.4826 makes MAD estimate sigma for normal data)."""
    return (x - median) / max(1.4826 * mad, floor)


def poisson_sf(k: float, lam: float) -> float:
    """P(N >= k) for N ~ Poisson(lam), exact to ~1e-12.

    Sums probability masses outward from ``k`` (upward when ``k`` is in the
    upper tail, downward for the complement otherwise); the terms shrink
    geometrically, so it costs a handful of multiplications in the tails the
    detectors care about.
    """
    if k <= 0:
        return 1.0
    if lam <= 0.0:
        return 0.0
    ki = int(math.ceil(k))  # mypyc: a float variable cannot be rebound to an int
    if ki > lam:
        term = math.exp(ki * math.log(lam) - lam - math.lgamma(ki + 1.0))
        acc = term
        i = ki
        while term > acc * 1e-16:
            i += 1
            term *= lam / i
            acc += term
        return min(1.0, acc)
    i = ki - 1
    term = math.exp(i * math.log(lam) - lam - math.lgamma(i + 1.0))
    acc = term
    while i > 0 and term > acc * 1e-16:
        term *= i / lam
        i -= 1
        acc += term
    return max(0.0, 1.0 - acc)


def novelty_p(n_new: float, n_obs: float, weight: float = 1.0) -> float:
    """Probability that this identity shows a new value, Laplace prior (1 new in 2).

    ``weight`` > 1 makes novelty rarer (e.g. resource sensitivity).
    """
    return (n_new + 1.0) / ((n_obs + 2.0) * weight)


def pareto_tail(ratio: float, alpha: float = 4.0) -> float:
    """Tail ``ratio ** -alpha`` for a ratio over a physical limit (1 below it).

    Used where a hard bound exists (travel speed): twice the bound is already
    very unlikely without being certain (GeoIP errors, VPN egress).
    """
    if ratio <= 1.0:
        return 1.0
    return ratio ** -alpha


def cusum_tail(s: float, k: float = 0.5) -> float:
    """Stationary tail of a one-sided CUSUM with allowance ``k`` on unit-variance
    residuals: P(S >= s) ~= exp(-2 k s) (reflected Brownian motion)."""
    if s <= 0.0:
        return 1.0
    return math.exp(-2.0 * k * s)


# --- vectorised twins -------------------------------------------------------


def normal_sf_array(z: np.ndarray) -> np.ndarray:
    from scipy.special import erfc

    return 0.5 * erfc(np.asarray(z, dtype=float) * _SQRT1_2)


def z_tail_score_array(z: np.ndarray) -> np.ndarray:
    from scipy.special import erfc

    return 100.0 - 50.0 * erfc(np.asarray(z, dtype=float) * _SQRT1_2)


def poisson_sf_array(k: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Vectorised :func:`poisson_sf` (P(N >= k)) via the regularised gamma."""
    from scipy.special import gammainc

    k = np.ceil(np.asarray(k, dtype=float))
    lam = np.broadcast_to(np.asarray(lam, dtype=float), k.shape)
    out = np.ones_like(k)
    pos = k > 0
    out[pos] = gammainc(k[pos], np.maximum(lam[pos], 1e-300))
    return out


# --- calibration to identity-days ---------------------------------------------
#
# A detector's own score is a per-test tail probability under its model of the
# identity (a normal on log volume, a Poisson, a novelty rate...). Two things
# make those per-test tails far too small in practice: the models' tails are
# lighter than real behaviour (volumes are heavy-tailed, nightly jobs and cron
# keys are bimodal), and an identity is tested on every event, all day long.
# The suite (detectors.suite) therefore re-calibrates every detector's score
# against what actually happened before, for the same detector: the maxima of
# its surprise ``-log10 p`` per identity-hour across the identity's peer group
# (leave-one-out) and per identity-day for the identity itself. The result is a
# tail probability per identity-day: a score of 99.99 reads "an identity-day
# this unusual comes up about once in 10,000 identity-days".

#: Largest surprise (-log10 p) a 0-100 score can carry: ``100 * (1 - p)`` is
#: 100.0 in floating point below p ~ 1e-15. Detectors that know their tail
#: probability more precisely report it (``CoreDetector._surprise``, or a
#: ``raw`` that is ``-log10 p`` for detectors with ``raw_is_surprise``).
SCORE_SURPRISE_CAP = 15.0

#: Largest surprise anything reports (p = 1e-300).
MAX_SURPRISE = 300.0

_LN10 = math.log(10.0)
_HALF_LN_2PI = 0.5 * math.log(2.0 * math.pi)


def surprise_of_score(score: float) -> float:
    """``-log10 p`` of a 0-100 score ``100 * (1 - p)`` (0 for score 0, at most :data:`SCORE_SURPRISE_CAP`)."""
    if score <= 0.0:
        return 0.0
    p = 1.0 - score / 100.0
    if p <= 1e-15:
        return SCORE_SURPRISE_CAP
    return -math.log10(p)


def normal_surprise(z: float) -> float:
    """``-log10 P(Z >= z)`` for a standard normal, accurate far into the tail
    (where ``normal_sf`` underflows), at most :data:`MAX_SURPRISE`."""
    if z < 25.0:
        p = 0.5 * math.erfc(z * _SQRT1_2)
        return -math.log10(p) if p > 0.0 else MAX_SURPRISE
    # Mills ratio: ln Q(z) = -z^2/2 - ln z - ln sqrt(2 pi) + ln(1 - 1/z^2 + 3/z^4)
    ln_p = -0.5 * z * z - math.log(z) - _HALF_LN_2PI + math.log1p(-1.0 / (z * z) + 3.0 / z ** 4)
    return min(MAX_SURPRISE, -ln_p / _LN10)


def sidak_p(p: float, m: float) -> float:
    """Probability that at least one of ``m`` independent tests at level ``p`` fires."""
    if p >= 1.0:
        return 1.0
    if p <= 0.0:
        return 0.0
    return -math.expm1(m * math.log1p(-p))


_TS_HEAD = struct.Struct("<fddH")
_TS_ITEM = struct.Struct("<fII")


class TailSketch:
    """Peaks over threshold on a stream of block maxima (identity-hours or -days).

    Keeps the sample size ``n`` (decayed with ``half_life`` seconds) and the
    ``k`` largest values with who produced them and when. The tail beyond the
    smallest kept value ``u`` is taken as exponential (the generalised Pareto
    with shape 0, the usual model for surprises ``-log10 p``) with the scale
    estimated from the kept excesses, shrunk toward ``sigma0`` with the weight
    of ``prior`` observations::

        P(V >= v) = (k / n) * exp(-(v - u) / sigma),  v >= u

    ``per`` caps how many of the kept values one producer may hold, so one
    identity (say, a compromised one) cannot make the whole group's tail.
    ``tail(v, excl=who)`` leaves that producer's values out: an identity is
    compared with its peers, not with itself. Values older than ``memory``
    seconds are forgotten. ``since`` is when the sample started (by default,
    the first positive value; the suite sets it to the peer group's first event).
    """

    __slots__ = ("k", "per", "sigma0", "prior", "half_life", "memory", "n", "last", "since", "top", "_memo")

    def __init__(self, k: int = 8, *, per: int = 2, sigma0: float = 1.0, prior: float = 2.0,
                 half_life: float = 30 * 86400.0, memory: float = 90 * 86400.0, since: float = math.inf) -> None:
        self.k = k
        self.per = per
        self.sigma0 = sigma0
        self.prior = prior
        self.half_life = half_life
        self.memory = memory
        self.n = 0.0
        self.last = 0.0
        self.since = since
        #: (value, producer, time), ascending by value; change it only through the
        #: methods (they reset ``_memo``, the kept values' summary)
        self.top: list[tuple[float, int, float]] = []
        self._memo: dict[int | None, tuple[int, float, float] | None] | None = None

    def update(self, v: float, ts: float, who: int = 0) -> None:
        """One more block maximum ``v`` (its block ended at ``ts``) from producer ``who``."""
        last = self.last
        if ts > last:
            if self.n > 0.0:
                self.n *= 2.0 ** (-(ts - last) / self.half_life)
            self.last = ts
        self.n += 1.0
        if v > 0.0 and ts < self.since:
            self.since = ts
        top = self.top
        if len(top) >= self.k and v <= top[0][0] and ts - self.memory <= self._oldest():
            return  # the usual case: an ordinary block, nothing to keep or forget
        self._memo = None
        cutoff = ts - self.memory
        for e in top:
            if e[2] < cutoff:
                top[:] = [e for e in top if e[2] >= cutoff]
                break
        if self.per < self.k:
            mine = [j for j, e in enumerate(top) if e[1] == who]
            if len(mine) >= self.per:
                j = mine[0]  # the producer's smallest kept value
                if v > top[j][0]:
                    top[j] = (v, who, ts)
                    top.sort()
                return
        if len(top) < self.k:
            top.append((v, who, ts))
            top.sort()
        elif v > top[0][0]:
            top[0] = (v, who, ts)
            top.sort()

    def _oldest(self) -> float:
        t = math.inf
        for e in self.top:
            if e[2] < t:
                t = e[2]
        return t

    def _values(self, excl: int | None) -> list[float]:
        if excl is None:
            return [e[0] for e in self.top]
        return [e[0] for e in self.top if e[1] != excl]

    def _summary(self, excl: int | None) -> tuple[int, float, float]:
        """(count, smallest, sum) of the kept values, ``excl``'s left out; memoised per
        producer until the kept values change."""
        m = self._memo
        if m is None:
            m = self._memo = {}
            vals = [e[0] for e in self.top]
            m[None] = (len(vals), vals[0] if vals else 0.0, sum(vals))
            for e in self.top:
                m[e[1]] = None  # a producer with kept values: its own summary, on demand
        got = m.get(excl, m[None])
        if got is None:
            vals = [e[0] for e in self.top if e[1] != excl]
            got = m[excl] = (len(vals), (vals[0] if vals else 0.0), sum(vals))
        return got

    def sigma(self, excl: int | None = None, sigma0: float | None = None) -> float:
        """Scale of the exponential tail (the kept excesses, shrunk toward the prior)."""
        cnt, u, tot = self._summary(excl)
        s0 = self.sigma0 if sigma0 is None else sigma0
        if cnt < 2:
            return s0
        return (tot - u * cnt + self.prior * s0) / (cnt - 1 + self.prior)

    def tail(self, v: float, excl: int | None = None, sigma0: float | None = None) -> float:
        """Estimated ``P(V >= v)`` for one more block (1.0 with no data)."""
        cnt, u, tot = self._summary(excl)
        n = self.n
        if n <= 0.0 or not cnt:
            return 1.0
        frac = min(1.0, cnt / n)
        s0 = self.sigma0 if sigma0 is None else sigma0
        sig = s0 if cnt < 2 else (tot - u * cnt + self.prior * s0) / (cnt - 1 + self.prior)
        if v >= u:
            return frac * math.exp(-(v - u) / sig)
        return min(1.0, frac * math.exp((u - v) / sig))

    def merge(self, other: "TailSketch") -> "TailSketch":
        """Pool another worker's sketch of the same statistic."""
        self._memo = None
        self.n += other.n
        self.since = min(self.since, other.since)
        self.last = max(self.last, other.last)
        for e in other.top:
            self.top.append(e)
        self.top.sort()
        # keep the k largest, at most ``per`` per producer
        kept: list[tuple[float, int, float]] = []
        count: dict[int, int] = {}
        for e in reversed(self.top):
            if len(kept) == self.k:
                break
            if count.get(e[1], 0) < self.per:
                kept.append(e)
                count[e[1]] = count.get(e[1], 0) + 1
        self.top = sorted(kept)
        return self

    def to_bytes(self) -> bytes:
        """Compact bytes: values as float32, times to the minute."""
        head = _TS_HEAD.pack(self.n, self.since, self.last, len(self.top))
        return head + b"".join(_TS_ITEM.pack(v, w & 0xFFFFFFFF, max(0, int(t // 60.0))) for v, w, t in self.top)

    @classmethod
    def from_bytes(cls, data: bytes, **kw: float) -> "TailSketch":
        s = cls(**kw)  # type: ignore[arg-type]
        s.n, s.since, s.last, m = _TS_HEAD.unpack_from(data)
        o = _TS_HEAD.size
        top = []
        for _ in range(m):
            v, w, minute = _TS_ITEM.unpack_from(data, o)
            o += _TS_ITEM.size
            top.append((v, w, minute * 60.0))
        s.top = top
        s._memo = None
        return s

    def __repr__(self) -> str:
        return f"TailSketch(n={self.n:.1f}, top={[round(e[0], 2) for e in self.top]})"


@dataclass(frozen=True, slots=True)
class DayCalibration:
    """How the suite turns a detector's per-test score into a per-identity-day one.

    Attributes
    ----------
    block : float
        Seconds per block (an identity-hour): the unit the peer reference is kept in.
    blocks_per_day : float
        Blocks an identity-day is made of (Šidák: a day is that many chances).
    maturity : float
        Seconds of history a reference needs before it calibrates anything. One
        daily cycle: until then a nightly job or a morning ramp cannot be told
        from an anomaly, so no detector score is claimed rare. Counted from the
        peer group's first event, or, for detectors with ``dense_scores`` (they
        score every event once warm), from the first hour the detector scored:
        while it warms up it sees nothing of the day. An entity's own days
        count as a reference the same way.
    min_blocks : int
        Identity-hours a peer reference needs.
    peer_k, peer_per : int
        Largest identity-hour maxima kept per peer group, and at most this many from one identity.
    own_k : int
        Largest identity-day maxima kept per identity.
    sigma0 : float
        Prior scale of the exponential tail in decades of surprise (``-log10 p``):
        beyond the largest surprise seen, each further decade of a detector's own
        per-test probability makes an identity-day about ``e`` times rarer. It is
        the prior of the global reference; a peer group's scale is shrunk toward
        the global one instead (never below this).
        Detectors' per-test tails are overconfident (lighter than real
        behaviour, tested on every event), hence 1 decade rather than the
        ``1 / ln 10`` of a perfectly calibrated test.
    prior : float
        Weight of ``sigma0`` in observations.
    protect : float
        An identity-hour whose surprise is rarer than this per identity-day for the
        identity itself (once its own days make a reference) is not taught to its peers.
    half_life, memory : float
        Seconds: decay of the sample size, and age at which kept maxima are forgotten.
    """

    block: float = 3600.0
    blocks_per_day: float = 24.0
    maturity: float = 86400.0
    min_blocks: int = 20
    peer_k: int = 8
    peer_per: int = 2
    own_k: int = 4
    sigma0: float = 1.0
    prior: float = 2.0
    protect: float = 1e-3
    half_life: float = 30 * 86400.0
    memory: float = 90 * 86400.0
