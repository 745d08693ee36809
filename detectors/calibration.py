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

import numpy as np

__all__ = [
    "score_from_p",
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
    k = int(math.ceil(k))
    if k > lam:
        term = math.exp(k * math.log(lam) - lam - math.lgamma(k + 1.0))
        acc = term
        i = k
        while term > acc * 1e-16:
            i += 1
            term *= lam / i
            acc += term
        return min(1.0, acc)
    i = k - 1
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
