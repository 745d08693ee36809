"""Per-identity baselines: cold start, baseline protection, bounded state.

Three rules every detector in this package follows, implemented once here:

Cold start
    For its first ``warmup`` windows/observations an identity has no baseline
    of its own.  It is then scored against its peer group's baseline (see
    :mod:`detectors.peers`), else the global one, else not at all (score 0),
    and the explanation says which reference was used.

Baseline protection
    What scored at or above ``protect_score`` is learned with weight
    ``protect_weight`` (default 0.05) instead of 1, like River's
    ``AnomalyFilter(protect_anomaly_detector=True)`` but not all-or-nothing:
    an attacker cannot teach the baseline an exfiltration, while a genuine and
    lasting change of behaviour is still absorbed after a while.

Bounded state
    All per-identity state has a fixed size whatever the input (fixed-size
    sketches, capped sets); the contract suite checks <= 2 KiB per detector.

:class:`CoreDetector` is the base class of the streaming detectors defined
in this package; :class:`WindowedVolume` is the shared "amount per window vs
baseline, bursts and slow drip" building block of exfiltration and API usage.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from .base import Explanation, Score
from .calibration import MAX_SURPRISE, cusum_tail, normal_surprise, surprise_of_score, z_tail_score
from .peers import PeerGroup
from .stats import EWMeanVar

__all__ = ["BaselineParams", "CoreDetector", "WindowedParams", "WindowedVolume", "protect_weight", "num", "fmt_amount", "pack_parts", "unpack_parts"]


@dataclass(frozen=True, slots=True)
class BaselineParams:
    """Hyperparameters shared by every baseline detector.

    Attributes
    ----------
    warmup : int
        Observations (or closed windows, for windowed detectors) before the
        identity's own baseline is trusted.
    half_life : float
        Seconds; how fast the baseline forgets.
    protect_score : float
        Scores at or above this (0-100) are learned with ``protect_weight``.
    protect_weight : float
        Weight of protected observations (0 = never learned).
    peer_min_n : int
        Observations a peer/global baseline needs before it is used.
    """

    warmup: int = 24
    half_life: float = 14 * 86400.0
    protect_score: float = 99.0
    protect_weight: float = 0.05
    peer_min_n: int = 20


@dataclass(frozen=True, slots=True)
class WindowedParams(BaselineParams):
    """Hyperparameters a :class:`WindowedVolume` reads, shared by the windowed
    detectors' parameters (typed, so the compiled build reads them as native
    attributes, not through a generic lookup on every access).

    Attributes
    ----------
    window : float
        Seconds per (epoch-aligned) window.
    min_log_std : float
        Floor on the spread of ``log1p(window total)``.
    drip_k : float
        Slow drip: CUSUM allowance per day, in standard deviations.
    drip_zmax : float
        Slow drip: cap on one day's z.
    drip_warmup : int
        Slow drip: closed days before the daily baseline is used.
    """

    window: float = 3600.0
    min_log_std: float = 0.5
    drip_k: float = 0.5
    drip_zmax: float = 3.0
    drip_warmup: int = 7


def protect_weight(score: float, params: Any) -> float:
    """Learning weight for an observation that scored ``score``."""
    return params.protect_weight if score >= params.protect_score else 1.0


def num(x: Any) -> float | None:
    """A non-negative finite number from an event field, else None (never raises)."""
    t = type(x)
    if t is int or t is float:
        return float(x) if x >= 0 and x == x and x != math.inf else None
    if t is str:
        try:
            v = float(x)
        except ValueError:
            return None
        return v if v >= 0 and v == v and v != math.inf else None
    return None


class CoreDetector:
    """Base of the streaming detectors in this package (see :mod:`detectors.base`).

    Subclasses implement

    * ``_assess(x, ts, peers) -> (score, raw, ctx)``: pure; ``ctx`` carries
      what was computed (hashes, running totals) so learning need not redo it;
    * ``_learn(x, ts, peers, score, ctx)``: update state with protection;
    * ``_explain(ctx, peers) -> Explanation``: called only when a score is
      reported, so the per-event path builds no strings or dicts;
    * ``_pack() -> bytes`` / ``_unpack(data)``.

    ``step`` is what :mod:`detectors.suite` calls: score, learn, and build a
    full :class:`Score` only when it clears ``min_score``.
    """

    __slots__ = ("params",)

    name: ClassVar[str] = ""
    Params: ClassVar[type] = BaselineParams
    entity_type: ClassVar[str] = "user"
    title: ClassVar[str] = ""
    techniques: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    # -- subclass hooks ------------------------------------------------------

    def _assess(self, x: dict[str, Any], ts: float, peers: PeerGroup | None) -> tuple[float, float, Any]:
        raise NotImplementedError

    def _learn(self, x: dict[str, Any], ts: float, peers: PeerGroup | None, score: float, ctx: Any) -> None:
        raise NotImplementedError

    def _explain(self, ctx: Any, peers: PeerGroup | None) -> Explanation:
        raise NotImplementedError

    def _pack(self) -> bytes:
        raise NotImplementedError

    def _unpack(self, data: bytes) -> None:
        raise NotImplementedError

    def _surprise(self, score: float, raw: float, ctx: Any) -> float:
        """``-log10 p`` behind ``score`` (what :meth:`_assess` returned), as
        precisely as the detector knows it; the 0-100 score itself cannot tell
        1e-15 from 1e-40. Used by the suite's calibration (detectors.suite).
        Detectors whose ``raw`` is ``-log10 p`` already (``raw_is_surprise``)
        report it beyond what the score can show."""
        r = surprise_of_score(score)
        if getattr(self, "raw_is_surprise", False) and score > 0.0 and raw > r:
            r = min(raw, MAX_SURPRISE)
        return r

    # -- public protocol -------------------------------------------------------

    def score_one(self, x: dict[str, Any], ts: float, peers: PeerGroup | None = None) -> Score:
        """Score one event (higher = more anomalous, 0-100). Never mutates state."""
        s, raw, ctx = self._assess(x, ts, peers)
        if s <= 0.0:
            return Score(0.0, raw)
        return Score(s, raw, self._explain(ctx, peers))

    def learn_one(
        self, x: dict[str, Any], ts: float, peers: PeerGroup | None = None, score: float | None = None
    ) -> None:
        """Learn one event. ``score`` (this detector's score of ``x``) drives
        baseline protection; it is computed when not given."""
        s, _raw, ctx = self._assess(x, ts, peers)
        self._learn(x, ts, peers, s if score is None else score, ctx)

    def step(self, x: dict[str, Any], ts: float, peers: PeerGroup | None, min_score: float) -> Score | None:
        """Score then learn (with protection) in one pass; the Score is returned
        only if it is at least ``min_score`` (and above 0)."""
        s, raw, ctx = self._assess(x, ts, peers)
        out = Score(s, raw, self._explain(ctx, peers)) if s >= min_score and s > 0.0 else None
        self._learn(x, ts, peers, s, ctx)
        return out

    def to_bytes(self) -> bytes:
        return self._pack()

    @classmethod
    def from_bytes(cls, data: bytes, params: Any = None) -> "CoreDetector":
        det = cls(params)
        det._unpack(data)
        return det

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"


# ---------------------------------------------------------------------------
# Amount per window against a baseline: bursts and slow drip
# ---------------------------------------------------------------------------

_WV_FMT = struct.Struct("<qdqdd")
_SQRT1_2 = 1.0 / math.sqrt(2.0)


class WindowedVolume:
    """One amount (bytes, rows, requests, tokens...) of one identity, per window.

    Burst
        The running total of the current window (``width`` s, epoch-aligned)
        is scored against an :class:`EWMeanVar` of ``log1p`` of the identity's
        past window totals (active windows only): ``z = (log1p(total) - mean)
        / sqrt(var + min_std**2)``, score ``100 * (1 - P(Z >= z))``.  Logs
        because volumes are multiplicative (10x is as surprising at 1 MB as at
        1 GB); ``min_std`` so a perfectly regular identity does not alert on a
        10% change.
    Slow drip (when ``day`` is True)
        Daily totals are compared with a daily baseline the same way and fed
        to a one-sided CUSUM ``S = max(0, S + min(z, zmax) - k)``; the cap
        keeps one burst day (the burst test's business) from holding the
        drip alarm up for weeks; the score of the
        current day is ``100 * (1 - exp(-2 k S'))`` with ``S'`` including the
        running day.  Many days of moderate excess, each below the burst
        threshold, add up.  Days that push ``S`` above 0 are learned at
        protected weight, so the drip does not become the new normal.

    Closed windows are learned at the window's end time, which makes the
    result independent of event arrival jitter and lets the batch path
    reproduce it exactly.
    """

    __slots__ = ("win", "cur", "base", "day", "day_sum", "dbase", "cusum")

    def __init__(self, half_life: float, day: bool = True) -> None:
        self.win = -1
        self.cur = 0.0
        self.base = EWMeanVar(half_life)
        self.day = -1 if day else -2
        self.day_sum = 0.0
        self.dbase = EWMeanVar(half_life)
        self.cusum = 0.0

    # -- scoring ---------------------------------------------------------------

    def total_if(self, x: float, ts: float, width: float) -> float:
        """The current window total if ``x`` were added at ``ts`` (pure)."""
        return x if int(ts // width) != self.win else self.cur + x

    def burst_at(self, x: float, ts: float, prm: WindowedParams, ref: EWMeanVar | None) -> tuple[float, float, float]:
        """(score, z, window total) of adding ``x`` at ``ts``; pure.

        The per-event form of :meth:`burst`: an event that opens a new
        window is judged against the baseline that already includes the
        window it closes; a late event counts in the current window (as
        :meth:`add` does).
        """
        w = int(ts // prm.window)
        win = self.win
        if w > win:
            total = x
            if win >= 0:
                mean, var, n = self._peek_close(prm, ref)
            else:
                b = self.base
                mean, var, n = b.mean, b.var, b.n
        else:
            total = self.cur + x
            b = self.base
            mean, var, n = b.mean, b.var, b.n
        if n < prm.warmup:
            if ref is None:
                return 0.0, 0.0, total
            mean, var = ref.mean, ref.var
        s0 = prm.min_log_std
        z = (math.log1p(total) - mean) / math.sqrt(var + s0 * s0)
        return 100.0 - 50.0 * math.erfc(z * _SQRT1_2), z, total

    def burst(self, total: float, prm: WindowedParams, ref: EWMeanVar | None, ts: float | None = None) -> tuple[float, float]:
        """(score, z) of a window total against the own baseline (if warm) or ``ref``.

        With ``ts`` (an event time), a window that the event would close is
        taken as learned first, so the first event of a window is judged like
        the others (and like the batch path judges it).
        """
        b = self.base
        if ts is not None and self.win >= 0 and int(ts // prm.window) > self.win:
            mean, var, n = self._peek_close(prm, ref)
        else:
            mean, var, n = b.mean, b.var, b.n
        if n < prm.warmup:
            if ref is None:
                return 0.0, 0.0
            mean, var = ref.mean, ref.var
        z = (math.log1p(total) - mean) / math.sqrt(var + prm.min_log_std * prm.min_log_std)
        return z_tail_score(z), z

    def _peek_close(self, prm: WindowedParams, ref: EWMeanVar | None) -> tuple[float, float, int]:
        # Mirrors _close (same protection decision), without side effects.
        b = self.base
        v = math.log1p(self.cur)
        if b.n >= prm.warmup:
            mean, var = b.mean, b.var
        elif ref is not None:
            mean, var = ref.mean, ref.var
        else:
            mean, var = v, 0.0
        z = (v - mean) / math.sqrt(var + prm.min_log_std * prm.min_log_std)
        w = prm.protect_weight if z_tail_score(z) >= prm.protect_score else 1.0
        return b.peek(v, (self.win + 1) * prm.window, w)[:3]

    def _day_state(self, ts: float, prm: WindowedParams) -> tuple[float, float, int, float]:
        """(mean, var, n, cusum) of the daily baseline as seen from ``ts``
        (closing the running day first if ``ts`` is in a later day); pure."""
        d = self.dbase
        if self.day >= 0 and int(ts // 86400.0) > self.day:
            v = math.log1p(self.day_sum)
            w = 1.0
            cus = self.cusum
            if d.n >= prm.drip_warmup:
                z = (v - d.mean) / math.sqrt(d.var + prm.min_log_std * prm.min_log_std)
                if z > prm.drip_zmax:
                    z = prm.drip_zmax
                cus = max(0.0, cus + z - prm.drip_k)
                if cus > 0.0:
                    w = prm.protect_weight
            m, var, n, _w = d.peek(v, (self.day + 1) * 86400.0, w)
            return m, var, n, cus
        return d.mean, d.var, d.n, self.cusum

    def drip(self, x: float, ts: float, prm: WindowedParams) -> tuple[float, float]:
        """(score, CUSUM) of the slow-drip test including the running day."""
        if self.day == -2:
            return 0.0, 0.0
        mean, var, n, cus = self._day_state(ts, prm)
        if n < prm.drip_warmup:
            return 0.0, 0.0
        dsum = x if int(ts // 86400.0) != self.day else self.day_sum + x
        z = (math.log1p(dsum) - mean) / math.sqrt(var + prm.min_log_std * prm.min_log_std)
        # Only a day that is itself in excess is part of a drip: the CUSUM is
        # the identity's state, the event is flagged when it adds to it.
        if z <= prm.drip_k:
            return 0.0, 0.0
        if z > prm.drip_zmax:
            z = prm.drip_zmax
        s = cus + z - prm.drip_k
        return 100.0 * (1.0 - cusum_tail(s, prm.drip_k)), s

    # -- learning --------------------------------------------------------------

    def add(self, x: float, ts: float, prm: WindowedParams, peer: PeerGroup | None, key: str) -> None:
        """Add ``x`` at ``ts``; learn windows (and days) that this event closes."""
        width = prm.window
        w = int(ts // width)
        if w != self.win:
            if w > self.win:
                if self.win >= 0:
                    self._close(self.cur, (self.win + 1) * width, prm, peer, key)
                self.win = w
                self.cur = 0.0
            # else: late event for a closed window, counted in the current one
        self.cur += x
        if self.day != -2:
            d = int(ts // 86400.0)
            if d != self.day:
                if d > self.day:
                    if self.day >= 0:
                        self._close_day(self.day_sum, (self.day + 1) * 86400.0, prm)
                    self.day = d
                    self.day_sum = 0.0
            self.day_sum += x

    def _close(self, total: float, t_end: float, prm: WindowedParams, peer: PeerGroup | None, key: str) -> None:
        b = self.base
        v = math.log1p(total)
        if b.n >= prm.warmup:
            mean, var = b.mean, b.var
        else:
            ref = peer.lookup(key, prm.peer_min_n)[0] if peer is not None else None
            mean, var = (ref.mean, ref.var) if ref is not None else (v, 0.0)
        z = (v - mean) / math.sqrt(var + prm.min_log_std * prm.min_log_std)
        w = prm.protect_weight if z_tail_score(z) >= prm.protect_score else 1.0
        b.update(v, t_end, w)
        if peer is not None and w == 1.0:
            # Peers learn only clean windows: one compromised member must not
            # shift the whole group's reference.
            st = peer.stats
            s = st.get(key)
            if s is None:
                s = st[key] = EWMeanVar(prm.half_life)
            s.update(v, t_end)
            g = peer.parent
            if g is not None:
                st = g.stats
                s = st.get(key)
                if s is None:
                    s = st[key] = EWMeanVar(prm.half_life)
                s.update(v, t_end)

    def _close_day(self, total: float, t_end: float, prm: WindowedParams) -> None:
        d = self.dbase
        v = math.log1p(total)
        w = 1.0
        if d.n >= prm.drip_warmup:
            z = (v - d.mean) / math.sqrt(d.var + prm.min_log_std * prm.min_log_std)
            if z > prm.drip_zmax:
                z = prm.drip_zmax
            self.cusum = max(0.0, self.cusum + z - prm.drip_k)
            if self.cusum > 0.0:
                w = prm.protect_weight
        d.update(v, t_end, w)

    # -- explanation -----------------------------------------------------------

    def baseline_dict(self) -> dict[str, Any]:
        b = self.base
        return {
            "center": round(math.expm1(b.mean), 3),
            "spread_log": round(math.sqrt(b.var), 4),
            "n": b.n,
        }

    @staticmethod
    def peers_dict(total: float, peer: PeerGroup | None, key: str, min_n: int) -> dict[str, Any] | None:
        """Where ``total`` sits in the peer group (or global) distribution of
        window totals: centre, spread, the identity's ratio to the centre and
        its percentile (log-normal approximation)."""
        if peer is None:
            return None
        ref, level = peer.lookup(key, 1)
        if ref is None:
            return None
        center = math.expm1(ref.mean)
        sd = math.sqrt(ref.var + 1e-12)
        pct = 100.0 * (1.0 - 0.5 * math.erfc((math.log1p(total) - ref.mean) / sd / math.sqrt(2.0)))
        return {
            "group": level,
            "center": round(center, 3),
            "spread_log": round(math.sqrt(ref.var), 4),
            "n": ref.n,
            "ratio": round(total / center, 3) if center > 0 else None,
            "percentile": round(pct, 2),
        }

    # -- serialisation -----------------------------------------------------------

    def to_bytes(self) -> bytes:
        head = _WV_FMT.pack(self.win, self.cur, self.day, self.day_sum, self.cusum)
        if self.day == -2:
            return head + self.base.to_bytes()
        return head + self.base.to_bytes() + self.dbase.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes, half_life: float) -> "WindowedVolume":
        v = cls(half_life)
        v.win, v.cur, v.day, v.day_sum, v.cusum = _WV_FMT.unpack_from(data)
        o = _WV_FMT.size
        v.base = EWMeanVar.from_bytes(data[o : o + EWMeanVar.SIZE], half_life)
        o += EWMeanVar.SIZE
        if len(data) > o:
            v.dbase = EWMeanVar.from_bytes(data[o : o + EWMeanVar.SIZE], half_life)
        return v

    SIZE_DAY: Final = _WV_FMT.size + 2 * EWMeanVar.SIZE
    SIZE_NODAY: Final = _WV_FMT.size + EWMeanVar.SIZE


def fmt_amount(v: float, unit: str = "") -> str:
    """Human-readable amount for explanations: ``fmt_amount(1.5e9, "B") == '1.5 GB'``."""
    a = abs(v)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{v / div:.3g} {suffix}{unit}"
    return f"{v:.3g} {unit}".rstrip()


def pack_parts(parts: list[bytes]) -> bytes:
    """Concatenate variable-length blobs with uint16 length prefixes."""
    return b"".join(struct.pack("<H", len(p)) + p for p in parts)


def unpack_parts(data: bytes) -> list[bytes]:
    """Inverse of :func:`pack_parts`."""
    out = []
    o = 0
    n = len(data)
    while o < n:
        (ln,) = struct.unpack_from("<H", data, o)
        o += 2
        out.append(bytes(data[o : o + ln]))
        o += ln
    return out
