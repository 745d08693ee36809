"""Small shared helpers for the AI-specific scorers (extraction, change, drift).

Combination of tail probabilities and defensive reading of event fields. The
tails themselves and the 0-100 mapping come from :mod:`detectors.calibration`,
the project's one place for them.
"""

from __future__ import annotations

import math
from typing import Any

from .calibration import normal_sf, score_from_p

__all__ = ["P_FLOOR", "RAW_P_FLOOR", "num", "normal_sf", "sidak", "score_of", "surprise", "text", "fmt"]

#: Smallest tail probability a score reflects; keeps ``100 * (1 - p)`` strictly
#: below 100 for anything short of overwhelming evidence.
P_FLOOR = 1e-15

#: Smallest tail probability the raw statistic ``-log10(p)`` reflects (it keeps
#: the evidence a score can no longer show; the suite's calibration uses it).
RAW_P_FLOOR = 1e-300


def num(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, bool, str, NaN, inf...)."""
    t = type(value)
    if t is float:
        return value if value - value == 0.0 else None  # NaN and +-inf fail
    if t is int:
        try:
            return float(value)
        except OverflowError:
            return None
    if value is None or t is bool:
        return None
    if isinstance(value, (int, float)):
        try:
            v = float(value)
        except OverflowError:
            return None
        return v if math.isfinite(v) else None
    return None


def sidak(p_min: float, k: int) -> float:
    """Family-wise tail probability of the smallest of ``k`` independent p-values."""
    if k <= 1:
        return p_min
    p_min = min(max(p_min, 0.0), 1.0)
    if p_min >= 1.0:
        return 1.0
    return -math.expm1(k * math.log1p(-p_min))


def score_of(p: float) -> float:
    """The project's calibrated score, ``100 * (1 - p)``, with ``p`` floored at :data:`P_FLOOR`."""
    return score_from_p(max(p, P_FLOOR))


def surprise(p: float) -> float:
    """``-log10(p)``: the raw statistic we report next to a combined tail
    probability (floored at :data:`RAW_P_FLOOR`, so at most 300)."""
    return -math.log10(min(max(p, RAW_P_FLOOR), 1.0))


def text(value: Any, limit: int = 64) -> str | None:
    """An attacker-controlled identifier as a string of at most ``limit`` UTF-8 bytes, or None."""
    if type(value) is str:
        s = value
    elif value is None or isinstance(value, (dict, list, tuple, set)):
        return None
    else:
        s = value if isinstance(value, str) else str(value)
    if len(s) * 4 > limit:
        if s.isascii():  # one byte per character: the same cut, without the round trip
            s = s[:limit]
        else:
            s = s.encode("utf-8", "ignore")[:limit].decode("utf-8", "ignore")
    return s or None


def fmt(v: float) -> str:
    """Compact human number for reasons: 1234567 -> '1.23e+06', 0.1234 -> '0.123'."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        return f"{v:.3g}"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"
