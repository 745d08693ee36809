"""Credential abuse: brute force, password spraying, shared or stolen credentials.

Three detectors, each keyed by the entity the signal belongs to:

:class:`CredentialAbuseDetector` (access stream, per identity)
    failed-login bursts (Poisson tail of failures per window against the
    identity's rate, with a prior so day one works), a success right after
    such a burst, and one credential used from many IPs or countries within
    one window (HyperLogLog of source IPs).
:class:`PasswordSprayingDetector` (access stream re-keyed by ``source.ip``)
    many *distinct* identities failing from one source in one window.
:class:`ApiKeyClientDetector` (api stream, per API key)
    a key used from a client IP or user agent it has not used before,
    calibrated by the key's own novelty rate.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar
from zlib import crc32

from .base import Explanation, register
from .baseline import BaselineParams, CoreDetector, pack_parts, unpack_parts
from .calibration import novelty_p, poisson_sf
from .peers import PeerGroup
from .stats import EWMeanVar, HyperLogLog, RecentSet, stable_hash

__all__ = [
    "CredentialAbuseParams",
    "CredentialAbuseDetector",
    "PasswordSprayingParams",
    "PasswordSprayingDetector",
    "ApiKeyClientParams",
    "ApiKeyClientDetector",
    "is_login",
]

_LOGIN_ACTIONS = frozenset({"login", "logon", "authenticate", "sign-in", "signin", "token-issue", "assume-role"})


def is_login(x: dict[str, Any]) -> bool:
    """An authentication attempt: ``event.action`` is a login verb or
    ``event.category`` contains ``authentication``."""
    act = x.get("event.action")
    if type(act) is str and act in _LOGIN_ACTIONS:
        return True
    cat = x.get("event.category")
    return type(cat) is list and "authentication" in cat


def _peer_update(peers: PeerGroup, key: str, v: float, ts: float, half_life: float) -> None:
    # Group and global: the peer reference of a count per window.
    for g in (peers, peers.parent):
        if g is None:
            continue
        s = g.stats.get(key)
        if s is None:
            s = g.stats[key] = EWMeanVar(half_life)
        s.update(v, ts)


def _peer_dict(peers: PeerGroup | None, key: str, observed: float, scale: float = 1.0) -> dict[str, Any] | None:
    """The peers' count per window (``scale`` windows) and where ``observed`` sits."""
    if peers is None:
        return None
    ref, level = peers.lookup(key, 1)
    if ref is None:
        return {"group": peers.name}
    center = scale * ref.mean
    sd = scale * ref.std
    return {"group": level, "center": round(center, 3), "spread": round(sd, 3), "n": ref.n,
            "ratio": round(observed / center, 2) if center > 0 else None,
            "z": round((observed - center) / sd, 2) if sd > 0 else None}


def _blend(prior: float, prior_w: float, stat: EWMeanVar) -> float:
    """Rate estimate shrunk toward ``prior`` (worth ``prior_w`` windows)."""
    return (prior * prior_w + stat.mean * stat.weight) / (prior_w + stat.weight)


# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CredentialAbuseParams(BaselineParams):
    """Hyperparameters of :class:`CredentialAbuseDetector`.

    Attributes
    ----------
    fail_window : float
        Seconds per failed-login window.
    fail_prior : float
        Prior failures per active window (worth ``prior_weight`` windows).
    ip_window : float
        Seconds per distinct-IP/country window.
    ip_prior : float
        Prior *extra* distinct IPs per active window beyond the first.
    country_prior : float
        Prior extra distinct countries per active window.
    hll_p : int
        log2 registers of the per-window IP HyperLogLog.
    """

    half_life: float = 14 * 86400.0
    fail_window: float = 600.0
    fail_prior: float = 0.3
    prior_weight: float = 5.0
    ip_window: float = 3600.0
    ip_prior: float = 0.3
    country_prior: float = 0.02
    hll_p: int = 6


_CA_HEAD = struct.Struct("<qddqI")


class CredentialAbuseDetector(CoreDetector):
    """Per-identity failed-login bursts and credential use from many places at once.

    Units: counts per window (``fail_window`` / ``ip_window`` seconds).
    Score: 0-100, ``100 * (1 - P(N >= observed))`` under a Poisson with the
    identity's rate shrunk toward a prior; higher = more anomalous.
    Warm-up: none needed, the prior covers new identities.
    """

    __slots__ = ("fwin", "fcount", "fprev", "fbase", "iwin", "last_ip", "ips", "countries", "ibase", "cbase")

    name: ClassVar[str] = "credential_abuse"
    Params: ClassVar[type] = CredentialAbuseParams
    entity_type: ClassVar[str] = "user"
    title: ClassVar[str] = "Credential abuse: failed-login burst or credential used from many places"
    techniques: ClassVar[tuple[str, ...]] = ("T1110", "T1078")

    def __init__(self, params: CredentialAbuseParams | None = None) -> None:
        super().__init__(params)
        prm: CredentialAbuseParams = self.params
        self.fwin = -1
        self.fcount = 0.0
        self.fprev = 0.0
        self.fbase = EWMeanVar(prm.half_life)
        self.iwin = -1
        self.last_ip = 0
        self.ips = HyperLogLog(prm.hll_p)
        self.countries = RecentSet(8)
        self.ibase = EWMeanVar(prm.half_life)
        self.cbase = EWMeanVar(prm.half_life)

    def _assess(self, x: dict[str, Any], ts: float, peers: PeerGroup | None) -> tuple[float, float, Any]:
        prm: CredentialAbuseParams = self.params
        best_p = 1.0
        sig = 0
        raw = 0.0
        login = is_login(x)
        if login:
            # Failures in the current and the previous window (a burst must
            # not hide by straddling a window boundary), against two windows'
            # worth of the identity's rate.
            fw = int(ts // prm.fail_window)
            if fw == self.fwin:
                k = self.fcount + self.fprev
            elif fw == self.fwin + 1:
                k = self.fcount
            else:
                k = 0.0
            lam = 2.0 * _blend(prm.fail_prior, prm.prior_weight, self.fbase)
            outcome = x.get("event.outcome")
            if outcome == "failure":
                p = poisson_sf(k + 1.0, lam)
                if p < best_p:
                    best_p, sig, raw = p, 1, k + 1.0
            elif outcome == "success" and k >= 3.0:
                # A success closing an unusual burst: the guess worked.
                p = poisson_sf(k, lam)
                if p < best_p:
                    best_p, sig, raw = p, 2, k
        # Where the credential is *used* from: successful events only (failed
        # attempts from many places are the failure signal's business).
        used = x.get("event.outcome") != "failure"
        ip = x.get("source.ip") if used else None
        ih: Any = None
        new_ip = False
        if ip:
            ih = crc32(ip.encode() if type(ip) is str else str(ip).encode())
            same = int(ts // prm.ip_window) == self.iwin
            if ih != self.last_ip or not same:
                h64 = stable_hash(ip)
                if same:
                    est = self.ips.get()
                    # Would this IP raise the estimate? Only then is it news.
                    reg = self.ips.reg
                    pbits = self.ips.p
                    rest = h64 & ((1 << (64 - pbits)) - 1)
                    rank = 65 - pbits - rest.bit_length()
                    new_ip = rank > reg[h64 >> (64 - pbits)]
                    n_ips = est + 1.0 if new_ip else est
                else:
                    new_ip = True
                    n_ips = 1.0
                ih = (ih, h64)
                if new_ip and n_ips >= 2.0:
                    lam = _blend(prm.ip_prior, prm.prior_weight, self.ibase)
                    p = poisson_sf(round(n_ips) - 1.0, lam)
                    if p < best_p:
                        best_p, sig, raw = p, 3, n_ips
            else:
                ih = (ih, None)
        cc = x.get("source.geo.country_iso_code") if used else None
        chh = None
        if cc:
            chh = crc32(cc.encode() if type(cc) is str else str(cc).encode())
            same = int(ts // prm.ip_window) == self.iwin
            if same and chh not in self.countries.items:
                k = float(len(self.countries.items))  # extra countries beyond the first, with this one
                lam = _blend(prm.country_prior, prm.prior_weight, self.cbase)
                p = poisson_sf(k, lam)
                if p < best_p:
                    best_p, sig, raw = p, 4, k + 1.0
        score = 100.0 * (1.0 - best_p) if best_p < 1.0 else 0.0
        return score, raw, (sig, raw, ih, chh, x, login)

    def _learn(self, x: dict[str, Any], ts: float, peers: PeerGroup | None, score: float, ctx: Any) -> None:
        prm: CredentialAbuseParams = self.params
        w = prm.protect_weight if score >= prm.protect_score else 1.0
        _sig, _raw, ih, chh, _x, login = ctx
        if login:
            fw = int(ts // prm.fail_window)
            if fw > self.fwin:
                if self.fwin >= 0:
                    k = self.fcount
                    t_end = (self.fwin + 1) * prm.fail_window
                    clean = not k or poisson_sf(k, _blend(prm.fail_prior, prm.prior_weight, self.fbase)) >= 0.01
                    self.fbase.update(k, t_end, 1.0 if clean else prm.protect_weight)
                    if clean and peers is not None:
                        _peer_update(peers, "credential_abuse.failures", k, t_end, prm.half_life)
                self.fprev = self.fcount if fw == self.fwin + 1 else 0.0
                self.fwin = fw
                self.fcount = 0.0
            if x.get("event.outcome") == "failure":
                self.fcount += 1.0
        if ih is not None or chh is not None:
            iw = int(ts // prm.ip_window)
            if iw > self.iwin:
                if self.iwin >= 0:
                    t_end = (self.iwin + 1) * prm.ip_window
                    n_ips = self.ips.get()
                    self.ibase.update(max(0.0, n_ips - 1.0), t_end, w if n_ips > 2 else 1.0)
                    nc = len(self.countries.items)
                    self.cbase.update(max(0, nc - 1), t_end, w if nc > 1 else 1.0)
                self.iwin = iw
                self.ips.clear()
                self.countries = RecentSet(8)
                self.last_ip = 0
            if ih is not None:
                h32, h64 = ih
                if h64 is not None:
                    self.ips.add_hash(h64)
                self.last_ip = h32
            if chh is not None:
                self.countries.update(chh)

    def _explain(self, ctx: Any, peers: PeerGroup | None) -> Explanation:
        sig, raw, _ih, _chh, x, _login = ctx
        prm: CredentialAbuseParams = self.params
        pd = {"group": peers.name} if peers is not None else None
        if sig in (1, 2):
            lam = 2.0 * _blend(prm.fail_prior, prm.prior_weight, self.fbase)
            pd = _peer_dict(peers, "credential_abuse.failures", raw, 2.0)
            base = {"center": round(lam, 3), "n": self.fbase.n}
            win = f"{2 * prm.fail_window / 60:g}m"
            if sig == 1:
                reason = f"{raw:.0f} failed logins within {win} for this identity; it usually has {lam:.2f} per window."
            else:
                reason = f"Successful login right after {raw:.0f} failed attempts within {win} (usual {lam:.2f})."
            return Explanation("event.outcome", raw, base, pd, win, reason)
        win = f"{prm.ip_window / 3600:g}h"
        if sig == 3:
            lam = _blend(prm.ip_prior, prm.prior_weight, self.ibase)
            base = {"center": round(1.0 + lam, 3), "n": self.ibase.n}
            reason = f"Credential used from about {raw:.0f} distinct IPs within {win}; usually {1 + lam:.1f}."
            return Explanation("source.ip", x.get("source.ip"), base, pd, win, reason)
        lam = _blend(prm.country_prior, prm.prior_weight, self.cbase)
        base = {"center": round(1.0 + lam, 3), "n": self.cbase.n}
        reason = f"Credential used from {raw:.0f} countries within {win} (now {x.get('source.geo.country_iso_code')!r})."
        return Explanation("source.geo.country_iso_code", x.get("source.geo.country_iso_code"), base, pd, win, reason)

    def _pack(self) -> bytes:
        head = _CA_HEAD.pack(self.fwin, self.fcount, self.fprev, self.iwin, self.last_ip)
        return pack_parts([head, self.fbase.to_bytes(), self.ips.to_bytes(), self.countries.to_bytes(),
                           self.ibase.to_bytes(), self.cbase.to_bytes()])

    def _unpack(self, data: bytes) -> None:
        head, fb, ips, cs, ib, cb = unpack_parts(data)
        hl = self.params.half_life
        self.fwin, self.fcount, self.fprev, self.iwin, self.last_ip = _CA_HEAD.unpack(head)
        self.fbase = EWMeanVar.from_bytes(fb, hl)
        self.ips = HyperLogLog.from_bytes(ips)
        self.countries = RecentSet.from_bytes(cs, 8)
        self.ibase = EWMeanVar.from_bytes(ib, hl)
        self.cbase = EWMeanVar.from_bytes(cb, hl)


# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PasswordSprayingParams(BaselineParams):
    """Hyperparameters of :class:`PasswordSprayingDetector`.

    Attributes
    ----------
    window : float
        Seconds per window.
    prior : float
        Prior distinct failing identities per active window beyond the first
        (worth ``prior_weight`` windows).
    hll_p : int
        log2 registers of the per-window HyperLogLog of identities.
    """

    window: float = 3600.0
    prior: float = 0.2
    prior_weight: float = 5.0
    hll_p: int = 6


_PS_HEAD = struct.Struct("<qdI")


class PasswordSprayingDetector(CoreDetector):
    """Per source IP: distinct identities with failed logins per window.

    Keyed by ``source.ip`` (entity type ``source_ip``); feed it the access
    stream re-keyed by source.  Units: distinct identities per ``window``.
    Score: Poisson tail of the extra distinct identities against the source's
    rate shrunk toward ``prior``; successful logins from a source in the
    middle of a spray score like the spray.  Warm-up: none (prior).
    """

    __slots__ = ("win", "users", "last_user", "fails", "base")

    name: ClassVar[str] = "password_spraying"
    Params: ClassVar[type] = PasswordSprayingParams
    entity_type: ClassVar[str] = "source_ip"
    title: ClassVar[str] = "Password spraying from one source"
    techniques: ClassVar[tuple[str, ...]] = ("T1110.003", "T1110")

    def __init__(self, params: PasswordSprayingParams | None = None) -> None:
        super().__init__(params)
        self.win = -1
        self.users = HyperLogLog(self.params.hll_p)
        self.last_user = 0
        self.fails = 0.0
        self.base = EWMeanVar(self.params.half_life)

    def _assess(self, x: dict[str, Any], ts: float, peers: PeerGroup | None) -> tuple[float, float, Any]:
        if not is_login(x):
            return 0.0, 0.0, None
        prm: PasswordSprayingParams = self.params
        user = x.get("user.name") or x.get("user.id")
        outcome = x.get("event.outcome")
        same = int(ts // prm.window) == self.win
        est = self.users.get() if same else 0.0
        lam = _blend(prm.prior, prm.prior_weight, self.base)
        if outcome == "failure" and user:
            h64 = stable_hash(user)
            if same:
                reg = self.users.reg
                pb = self.users.p
                rest = h64 & ((1 << (64 - pb)) - 1)
                new = 65 - pb - rest.bit_length() > reg[h64 >> (64 - pb)]
                n = est + 1.0 if new else est
            else:
                n = 1.0
            if n < 2.0:
                return 0.0, n, (h64, n)
            p = poisson_sf(round(n) - 1.0, lam)
            return (100.0 * (1.0 - p) if p < 1.0 else 0.0), n, (h64, n)
        if outcome == "success" and est >= 3.0:
            p = poisson_sf(round(est) - 1.0, lam)
            return (100.0 * (1.0 - p) if p < 1.0 else 0.0), est, (None, est)
        return 0.0, est, None

    def _learn(self, x: dict[str, Any], ts: float, peers: PeerGroup | None, score: float, ctx: Any) -> None:
        if ctx is None or ctx[0] is None:
            if not is_login(x):
                return
        prm: PasswordSprayingParams = self.params
        w = int(ts // prm.window)
        if w > self.win:
            if self.win >= 0:
                n = self.users.get()
                extra = max(0.0, n - 1.0)
                lam = _blend(prm.prior, prm.prior_weight, self.base)
                wt = prm.protect_weight if extra and poisson_sf(round(extra), lam) < 0.01 else 1.0
                self.base.update(extra, (self.win + 1) * prm.window, wt)
                if wt == 1.0 and peers is not None:
                    _peer_update(peers, "password_spraying.extra", extra, (self.win + 1) * prm.window, prm.half_life)
            self.win = w
            self.users.clear()
            self.fails = 0.0
        if ctx is not None and ctx[0] is not None:
            self.users.add_hash(ctx[0])
            self.fails += 1.0

    def _explain(self, ctx: Any, peers: PeerGroup | None) -> Explanation:
        _h, n = ctx
        prm: PasswordSprayingParams = self.params
        lam = _blend(prm.prior, prm.prior_weight, self.base)
        base = {"center": round(1.0 + lam, 3), "n": self.base.n, "failures_in_window": self.fails}
        win = f"{prm.window / 3600:g}h"
        if _h is None:
            reason = f"Successful login from a source that failed for about {n:.0f} distinct identities within {win}."
        else:
            reason = f"Failed logins for about {n:.0f} distinct identities from this source within {win}; usually {1 + lam:.1f}."
        pd = _peer_dict(peers, "password_spraying.extra", n - 1.0)
        return Explanation("user.name", n, base, pd, win, reason)

    def _pack(self) -> bytes:
        return _PS_HEAD.pack(self.win, self.fails, 0) + self.users.to_bytes() + self.base.to_bytes()

    def _unpack(self, data: bytes) -> None:
        o = _PS_HEAD.size
        self.win, self.fails, _ = _PS_HEAD.unpack_from(data)
        m = 1 << self.params.hll_p
        self.users = HyperLogLog.from_bytes(data[o : o + m])
        self.base = EWMeanVar.from_bytes(data[o + m :], self.params.half_life)


# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiKeyClientParams(BaselineParams):
    """Hyperparameters of :class:`ApiKeyClientDetector`.

    Attributes
    ----------
    warmup : int
        Calls before new-client signals are scored (a new key's first
        clients are all new).
    ip_capacity, ua_capacity : int
        Client IPs / user agents remembered per key.
    """

    warmup: int = 20
    ip_capacity: int = 24
    ua_capacity: int = 8


class ApiKeyClientDetector(CoreDetector):
    """Per API key: calls from a client IP or user agent the key has not used.

    Units: events. Score: ``100 * (1 - p)`` with ``p`` the key's Laplace-
    smoothed novelty rate (both new: the product, capped by the smaller
    rate's square root to stay conservative). Warm-up: 0 for the first
    ``warmup`` calls.
    """

    __slots__ = ("ips", "uas")

    name: ClassVar[str] = "api_key_client"
    Params: ClassVar[type] = ApiKeyClientParams
    entity_type: ClassVar[str] = "api_key"
    title: ClassVar[str] = "API key used from a new client"
    techniques: ClassVar[tuple[str, ...]] = ("T1078", "T1550.001")

    def __init__(self, params: ApiKeyClientParams | None = None) -> None:
        super().__init__(params)
        self.ips = RecentSet(self.params.ip_capacity)
        self.uas = RecentSet(self.params.ua_capacity)

    def _assess(self, x: dict[str, Any], ts: float, peers: PeerGroup | None) -> tuple[float, float, Any]:
        ip = x.get("source.ip")
        ua = x.get("user_agent.original")
        ih = crc32(ip.encode() if type(ip) is str else str(ip).encode()) if ip else None
        uh = crc32(ua.encode() if type(ua) is str else str(ua).encode()) if ua else None
        prm: ApiKeyClientParams = self.params
        p = 1.0
        sig = 0
        if self.ips.n_obs >= prm.warmup and ih is not None and ih not in self.ips.items:
            p = novelty_p(self.ips.n_new, self.ips.n_obs)
            sig = 1
        if self.uas.n_obs >= prm.warmup and uh is not None and uh not in self.uas.items:
            pu = novelty_p(self.uas.n_new, self.uas.n_obs)
            if sig:
                p = max(p * pu, min(p, pu) ** 2)
                sig = 3
            else:
                p, sig = pu, 2
        score = 100.0 * (1.0 - p) if p < 1.0 else 0.0
        return score, p, (sig, ih, uh, x)

    def _learn(self, x: dict[str, Any], ts: float, peers: PeerGroup | None, score: float, ctx: Any) -> None:
        prm: ApiKeyClientParams = self.params
        w = prm.protect_weight if score >= prm.protect_score else 1.0
        _sig, ih, uh, _x = ctx
        if ih is not None:
            self.ips.update(ih, w)
        if uh is not None:
            self.uas.update(uh, w)

    def _explain(self, ctx: Any, peers: PeerGroup | None) -> Explanation:
        sig, _ih, _uh, x = ctx
        ip = x.get("source.ip")
        ua = x.get("user_agent.original")
        what = {1: f"client IP {ip!r}", 2: f"user agent {str(ua)[:120]!r}",
                3: f"client IP {ip!r} and user agent {str(ua)[:120]!r}"}[sig]
        base = {"seen": self.ips.n_obs, "distinct_ips": len(self.ips.items), "distinct_agents": len(self.uas.items),
                "ip_novelty_rate": round(self.ips.novelty_rate(), 4)}
        pd = {"group": peers.name} if peers is not None else None
        reason = f"API key used from a new {what}; it takes a new client about 1 in {1 / self.ips.novelty_rate():.0f} calls."
        field = "user_agent.original" if sig == 2 else "source.ip"
        return Explanation(field, ua if sig == 2 else ip, base, pd, "event", reason)

    def _pack(self) -> bytes:
        return pack_parts([self.ips.to_bytes(), self.uas.to_bytes()])

    def _unpack(self, data: bytes) -> None:
        ips, uas = unpack_parts(data)
        self.ips = RecentSet.from_bytes(ips, self.params.ip_capacity)
        self.uas = RecentSet.from_bytes(uas, self.params.ua_capacity)


# mypyc: a class decorator other than @dataclass makes a class non-native.
register(CredentialAbuseDetector)
register(PasswordSprayingDetector)
register(ApiKeyClientDetector)
