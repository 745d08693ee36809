"""API usage volume per API key: request rate, tokens, response bytes, errors.

Bursts of calls, of LLM tokens (cost harvesting / LLMjacking: someone
else's workload on a stolen key), of response bytes (bulk pulls) and of
error responses (probing, enumeration) are each scored against the key's
own baseline per window, with the peers (tenant, role...) as the reference
while the key is new.  See :class:`detectors.baseline.WindowedVolume` for the
burst statistic; errors use a Poisson tail of the window's error count given
its request count and the key's usual error rate.

>>> det = ApiUsageDetector()
>>> t0 = 1_700_000_000.0
>>> for i in range(40 * 30):   # 30 calls per 5-minute window for 200 minutes
...     det.learn_one({"gen_ai.usage.input_tokens": 200, "http.response.status_code": 200}, t0 + i * 10)
>>> t = t0 + 40 * 300
>>> det.score_one({"gen_ai.usage.input_tokens": 200}, t).score < 90
True
>>> det.score_one({"gen_ai.usage.input_tokens": 900_000}, t).score > 99.9
True
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from .base import Explanation, register
from .baseline import CoreDetector, WindowedParams, WindowedVolume, fmt_amount, num
from .calibration import normal_surprise, poisson_sf
from .peers import PeerGroup
from .stats import EWMeanVar

__all__ = ["ApiUsageParams", "ApiUsageDetector", "USAGE_FEATURES"]

#: Amount names, in state order: calls, LLM tokens, response bytes.
USAGE_FEATURES: tuple[str, ...] = ("requests", "gen_ai.usage.tokens", "http.response.body.bytes")
_UNITS = (" calls", " tokens", "B")
_KEYS = ("api_usage.requests", "api_usage.tokens", "api_usage.bytes")


@dataclass(frozen=True, slots=True)
class ApiUsageParams(WindowedParams):
    """Hyperparameters of :class:`ApiUsageDetector`.

    Attributes
    ----------
    window : float
        Seconds per (epoch-aligned) window.
    warmup : int
        Closed active windows before the key's own baseline is used.
    min_log_std : float
        Floor on the spread of ``log1p(amount per window)``.
    error_prior : float
        Prior error fraction (worth ``prior_weight`` windows).
    """

    window: float = 300.0
    warmup: int = 12
    half_life: float = 7 * 86400.0
    error_prior: float = 0.02
    prior_weight: float = 5.0


_HEAD = struct.Struct("<qdd")


def usage_amounts(x: dict[str, Any]) -> tuple[float | None, float | None, bool | None]:
    """(tokens, response bytes, is_error) of one api event; None when absent."""
    ti = x.get("gen_ai.usage.input_tokens")
    to = x.get("gen_ai.usage.output_tokens")
    tok = None
    if ti is not None or to is not None:
        a = num(ti) if ti is not None else 0.0
        b = num(to) if to is not None else 0.0
        if a is not None and b is not None:
            tok = a + b
    rb = x.get("http.response.body.bytes")
    if rb is not None:
        rb = num(rb)
    sc = x.get("http.response.status_code")
    err = None
    if type(sc) is int:
        err = sc >= 400 and sc != 404
    return tok, rb, err


class ApiUsageDetector(CoreDetector):
    """Per API key: calls, tokens and response bytes per window, and error bursts.

    Units: calls, tokens (input + output), bytes per ``window`` seconds.
    Score: 0-100, higher = larger excess over the key's baseline (quiet
    periods score ~0). Warm-up: 0 until ``warmup`` active windows are
    learned, unless a peer/global baseline exists; the error signal uses its
    prior from the first window.
    """

    __slots__ = ("vols", "errs", "ebase")

    name: ClassVar[str] = "api_usage"
    Params: ClassVar[type] = ApiUsageParams
    entity_type: ClassVar[str] = "api_key"
    title: ClassVar[str] = "Unusual API usage volume"
    techniques: ClassVar[tuple[str, ...]] = ("AML.T0034", "AML.T0024", "T1496")
    #: Scores every event once warm (the suite's calibration starts its clock when it first does).
    dense_scores: ClassVar[bool] = True

    def __init__(self, params: ApiUsageParams | None = None) -> None:
        super().__init__(params)
        hl = self.params.half_life
        self.vols: list[WindowedVolume | None] = [WindowedVolume(hl, day=False), None, None]
        self.errs = 0.0
        self.ebase = EWMeanVar(hl)

    def _error_lambda(self) -> float:
        prm: ApiUsageParams = self.params
        e = self.ebase
        return (prm.error_prior * prm.prior_weight + e.mean * e.weight) / (prm.prior_weight + e.weight)

    def _close_weight(self, n: float, k: float) -> float:
        prm: ApiUsageParams = self.params
        return prm.protect_weight if k and poisson_sf(k, self._error_lambda() * n) < 0.01 else 1.0

    def _error_lambda_after_close(self) -> float:
        """The error rate once the open window is learned (pure; for an event
        that opens the next window)."""
        prm: ApiUsageParams = self.params
        req = self.vols[0]
        assert req is not None
        n, k = req.cur, self.errs
        if n <= 0:
            return self._error_lambda()
        mean, _var, _n, weight = self.ebase.peek(k / n, (req.win + 1) * prm.window, self._close_weight(n, k))
        return (prm.error_prior * prm.prior_weight + mean * weight) / (prm.prior_weight + weight)

    def _assess(self, x: dict[str, Any], ts: float, peers: PeerGroup | None) -> tuple[float, float, Any]:
        prm: ApiUsageParams = self.params
        tok, rb, err = usage_amounts(x)
        vols = self.vols
        width = prm.window
        best = 0.0
        raw = 0.0
        ctx: Any = None
        req = vols[0]
        assert req is not None
        vals = (1.0, tok, rb)
        for i in range(3):
            v = vals[i]
            if v is None:
                continue
            vol = vols[i] or _EMPTY
            ref = None
            if peers is not None and vol.base.n < prm.warmup:
                ref = peers.lookup(_KEYS[i], prm.peer_min_n)[0]
            s, z, total = vol.burst_at(v, ts, prm, ref)
            if s > best:
                best, raw, ctx = s, z, (i, total, ref is not None, tok, rb, err)
        if err:
            w_ev = int(ts // width)
            same = w_ev == req.win
            k = self.errs + 1.0 if same else 1.0
            n = req.cur + 1.0 if same else 1.0
            if w_ev > req.win >= 0:
                lam = self._error_lambda_after_close()
            else:
                lam = self._error_lambda()
            p = poisson_sf(k, lam * n)
            s = 100.0 * (1.0 - p) if p < 1.0 else 0.0
            if s > best:
                best, raw, ctx = s, k, (3, k, n, tok, rb, err)
        if ctx is None:
            ctx = (-1, 0.0, False, tok, rb, err)
        return best, raw, ctx

    def _surprise(self, score: float, raw: float, ctx: Any) -> float:
        if 0 <= ctx[0] <= 2 and score > 0.0:  # a volume burst: raw is the z of the window total
            return max(normal_surprise(raw), super()._surprise(score, raw, ctx))
        return super()._surprise(score, raw, ctx)

    def _learn(self, x: dict[str, Any], ts: float, peers: PeerGroup | None, score: float, ctx: Any) -> None:
        prm: ApiUsageParams = self.params
        _i, _t, _r, tok, rb, err = ctx
        vols = self.vols
        req = vols[0]
        assert req is not None
        if int(ts // prm.window) > req.win and req.win >= 0:
            # The request window closes: learn its error fraction.
            n = req.cur
            k = self.errs
            if n > 0:
                self.ebase.update(k / n, (req.win + 1) * prm.window, self._close_weight(n, k))
            self.errs = 0.0
        req.add(1.0, ts, prm, peers, _KEYS[0])
        if tok is not None:
            vol = vols[1]
            if vol is None:
                vol = vols[1] = WindowedVolume(prm.half_life, day=False)
            vol.add(tok, ts, prm, peers, _KEYS[1])
        if rb is not None:
            vol = vols[2]
            if vol is None:
                vol = vols[2] = WindowedVolume(prm.half_life, day=False)
            vol.add(rb, ts, prm, peers, _KEYS[2])
        if err:
            self.errs += 1.0

    def _explain(self, ctx: Any, peers: PeerGroup | None) -> Explanation:
        prm: ApiUsageParams = self.params
        win = f"{prm.window / 60:g}m"
        if ctx[0] == 3:
            _i, k, n, *_ = ctx
            lam = self._error_lambda()
            base = {"error_rate": round(lam, 4), "n": self.ebase.n}
            reason = f"{k:.0f} error responses out of {n:.0f} calls within {win}; this key usually errs on {100 * lam:.1f}% of calls."
            return Explanation("http.response.status_code", k, base, None, win, reason)
        i, total, vs_peers, *_ = ctx
        vol = self.vols[i] or _EMPTY
        base = vol.baseline_dict()
        peer = WindowedVolume.peers_dict(total, peers, _KEYS[i], prm.peer_min_n)
        ref = peer if vs_peers and peer else base
        center = ref.get("center") or 0.0
        ratio = f"{total / center:.1f}x" if center > 0 else "far above"
        whose = f"its peer group {peer['group']!r}" if vs_peers and peer else "this API key"
        reason = (
            f"{fmt_amount(total, _UNITS[i]).strip()} within {win}, {ratio} the usual "
            f"{fmt_amount(center, _UNITS[i]).strip()} per active window of {whose}."
        )
        return Explanation(USAGE_FEATURES[i], total, base, peer, win, reason)

    def _pack(self) -> bytes:
        # Version 2 (bit 7 of the flags byte): no unused header fields, and the windows
        # without the day fields (api usage has no slow-drip day: always -2, 0, 0).
        flags = _V2 | sum(1 << i for i, v in enumerate(self.vols) if v is not None)
        body = b"".join(_WIN2.pack(v.win, v.cur) + v.base.to_bytes() for v in self.vols if v is not None)
        return bytes((flags,)) + _ERRS.pack(self.errs) + self.ebase.to_bytes() + body

    def _unpack(self, data: bytes) -> None:
        flags = data[0]
        hl = self.params.half_life
        if flags & _V2:
            (self.errs,) = _ERRS.unpack_from(data, 1)
            o = 1 + _ERRS.size
        else:  # version 1: errs between two unused fields; each window with its day fields
            _, self.errs, _ = _HEAD.unpack_from(data, 1)
            o = 1 + _HEAD.size
        self.ebase = EWMeanVar.from_bytes(data[o : o + EWMeanVar.SIZE], hl)
        o += EWMeanVar.SIZE
        for i in range(3):
            if not flags & (1 << i):
                self.vols[i] = None
                continue
            if flags & _V2:
                vol = WindowedVolume(hl, day=False)
                vol.win, vol.cur = _WIN2.unpack_from(data, o)
                o += _WIN2.size
                vol.base = EWMeanVar.from_bytes(data[o : o + EWMeanVar.SIZE], hl)
                o += EWMeanVar.SIZE
            else:
                size = WindowedVolume.SIZE_NODAY
                vol = WindowedVolume.from_bytes(data[o : o + size], hl)
                vol.day = -2
                o += size
            self.vols[i] = vol


#: State version 2: bit 7 of the flags byte (version 1 used bits 0-2 only).
_V2 = 0x80
_ERRS = struct.Struct("<d")
_WIN2 = struct.Struct("<qd")
_EMPTY = WindowedVolume(1.0, day=False)


# mypyc: a class decorator other than @dataclass makes a class non-native.
register(ApiUsageDetector)
