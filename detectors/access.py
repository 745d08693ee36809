"""Unusual access: what, when, from where and with what an identity accesses.

One detector, five signals, reported as the most surprising of them:

* **first-seen resource** (dataset, model artifact, secret, bucket) for the
  identity, calibrated by its own novelty rate (Laplace prior) and weighted
  by ``ueba.resource.sensitivity``; softened when the identity's peers use
  the resource routinely;
* **rare hour** for the identity (hour-of-week profile tail probability);
* **new country** or **new ASN** (``source.geo.country_iso_code``,
  ``source.as.number``);
* **impossible travel**: great-circle distance / elapsed time between
  consecutive geolocated events above ``max_speed_kmh`` (and at least
  ``min_travel_km``, since GeoIP is imprecise at city scale);
* **new user agent** (``user_agent.original``).

>>> det = UnusualAccessDetector()
>>> a = {"source.geo.location.lat": 48.85, "source.geo.location.lon": 2.35}
>>> b = {"source.geo.location.lat": 40.71, "source.geo.location.lon": -74.0}
>>> det.learn_one(a, 0.0)
>>> s = det.score_one(b, 1800.0)   # Paris -> New York in 30 minutes
>>> round(s.score, 1), s.explanation.feature
(100.0, 'source.geo.location')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar
from zlib import crc32

from .base import Explanation, register
from .baseline import BaselineParams, CoreDetector, pack_parts, unpack_parts
from .calibration import SENSITIVITY_WEIGHT, novelty_p, pareto_tail
from .peers import PeerGroup
from .stats import AgingBloom, EWMeanVar, HourOfWeekProfile, RecentSet, stable_hash

__all__ = ["UnusualAccessParams", "UnusualAccessDetector", "haversine_km"]

_EARTH_KM = 6371.0088
_RAD = math.pi / 180.0


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two (lat, lon) points in degrees."""
    p1 = lat1 * _RAD
    p2 = lat2 * _RAD
    a = math.sin((p2 - p1) * 0.5) ** 2 + math.cos(p1) * math.cos(p2) * math.sin((lon2 - lon1) * _RAD * 0.5) ** 2
    return 2.0 * _EARTH_KM * math.asin(math.sqrt(min(1.0, a)))


@dataclass(frozen=True, slots=True)
class UnusualAccessParams(BaselineParams):
    """Hyperparameters of :class:`UnusualAccessDetector`.

    Attributes
    ----------
    warmup : int
        Events before first-seen and rare-hour signals use the identity's own
        history (before that: peers, else silent).
    max_speed_kmh : float
        Fastest plausible travel (airliner ~900 km/h).
    min_travel_km : float
        Smaller jumps are GeoIP noise, never "impossible travel".
    travel_alpha : float
        Tail exponent: ``p = (speed / max_speed) ** -alpha``; 8 puts twice
        the airliner speed at 99.6 and 1.2x at 77 (GeoIP and VPN egress make
        marginal speeds common).
    peer_known_factor : float
        A resource new to the identity but known to its peers is this many
        times less surprising.
    bloom_bytes, bloom_capacity : int
        Size of each of the two rotating Bloom filters of resources, and items
        per generation (false-positive rate ~2% at capacity).
    set_capacity : int
        Countries / ASNs / user agents remembered per identity.
    """

    warmup: int = 30
    max_speed_kmh: float = 900.0
    min_travel_km: float = 500.0
    travel_alpha: float = 8.0
    peer_known_factor: float = 4.0
    bloom_bytes: int = 128
    bloom_capacity: int = 96
    set_capacity: int = 12


# Signal ids carried in ctx, for the explanation.
_RES, _HOUR, _COUNTRY, _ASN, _TRAVEL, _UA = range(6)
_FEATURE = (
    "ueba.resource.id",
    "@timestamp",
    "source.geo.country_iso_code",
    "source.as.number",
    "source.geo.location",
    "user_agent.original",
)


def _h32(v: Any) -> int:
    return crc32(v.encode() if type(v) is str else str(v).encode())


class UnusualAccessDetector(CoreDetector):
    """Per-identity first-seen resource / rare hour / new country, ASN, user agent
    / impossible travel.

    Units: time in seconds, distance in km, speed in km/h.
    Score: 0-100, higher = more surprising for this identity; 0 for events
    that are familiar on every signal.
    Warm-up: the first ``warmup`` events only score against peers (if given)
    for resources and hours; new country/ASN/agent start after warm-up too
    (everything is new at first); impossible travel scores from the second
    geolocated event.
    """

    __slots__ = ("n", "res", "res_new", "res_obs", "hours", "countries", "asns", "agents", "lat", "lon", "geo_ts")

    name: ClassVar[str] = "unusual_access"
    Params: ClassVar[type] = UnusualAccessParams
    entity_type: ClassVar[str] = "user"
    title: ClassVar[str] = "Unusual access for this identity"
    techniques: ClassVar[tuple[str, ...]] = ("T1078", "T1530")

    def __init__(self, params: UnusualAccessParams | None = None) -> None:
        super().__init__(params)
        prm: UnusualAccessParams = self.params
        self.n = 0
        self.res = AgingBloom(prm.bloom_bytes, 3, prm.bloom_capacity)
        self.res_new = 0.0  # protected count of first-seen resources
        self.res_obs = 0
        self.hours = HourOfWeekProfile()
        self.countries = RecentSet(prm.set_capacity)
        self.asns = RecentSet(prm.set_capacity)
        self.agents = RecentSet(prm.set_capacity)
        self.lat = math.nan
        self.lon = math.nan
        self.geo_ts = 0.0

    # -- scoring -------------------------------------------------------------

    def _assess(self, x: dict[str, Any], ts: float, peers: PeerGroup | None) -> tuple[float, float, Any]:
        prm: UnusualAccessParams = self.params
        warm = self.n >= prm.warmup
        best_p = 1.0
        sig = -1
        raw = 0.0
        # ctx: [signal, raw, resource hash, country h32, asn h32, ua h32, resource was new, peer flag]
        rh = ch = ah = uh = None
        res_is_new = False
        peer_known = False

        rid = x.get("ueba.resource.id")
        if rid is not None and rid != "":
            h = stable_hash(rid)
            rh = (h, self.res.probes(h))
            if not self.res.contains_probes(rh[1]):
                res_is_new = True
                wgt = SENSITIVITY_WEIGHT.get(x.get("ueba.resource.sensitivity"), 1.0) if warm or peers else 1.0
                pb = peers.stats.get("access.resources") if peers is not None else None
                peer_known = pb is not None and pb.contains_hash(h)
                if warm:
                    p = novelty_p(self.res_new, self.res_obs, wgt)
                elif peers is not None:
                    rate, _lvl = peers.lookup("access.res_rate", prm.peer_min_n)
                    p = (rate.mean + 1.0 / (rate.n + 2.0)) / wgt if rate is not None else 1.0
                else:
                    p = 1.0
                if peer_known:
                    p *= prm.peer_known_factor
                if p < best_p:
                    best_p, sig, raw = p, _RES, p

        how = int((ts // 3600.0 + 72) % 168)  # hour_of_week, inlined: per-event path
        if warm:
            p = self.hours.tail_p(how)
            if p < best_p:
                best_p, sig, raw = p, _HOUR, float(how)
        elif peers is not None:
            ph = peers.stats.get("access.hours")
            if ph is not None and ph.total >= 16 * prm.peer_min_n:
                p = ph.tail_p(how)
                if p < best_p:
                    best_p, sig, raw = p, _HOUR, float(how)

        cc = x.get("source.geo.country_iso_code")
        if cc:
            ch = _h32(cc)
            cs = self.countries
            if warm and ch not in cs.items:
                p = novelty_p(cs.n_new, cs.n_obs)
                if p < best_p:
                    best_p, sig, raw = p, _COUNTRY, p
        asn = x.get("source.as.number")
        if asn is not None:
            # ASNs are 32-bit integers already: no need to hash them.
            ah = asn if type(asn) is int and 0 <= asn <= 0xFFFFFFFF else _h32(asn)
            s = self.asns
            if warm and ah not in s.items:
                p = novelty_p(s.n_new, s.n_obs)
                if p < best_p:
                    best_p, sig, raw = p, _ASN, p
        ua = x.get("user_agent.original")
        if ua:
            uh = _h32(ua)
            s = self.agents
            if warm and uh not in s.items:
                p = novelty_p(s.n_new, s.n_obs)
                if p < best_p:
                    best_p, sig, raw = p, _UA, p

        lat: Any = x.get("source.geo.location.lat")
        if lat is not None and self.lat == self.lat:
            lon: Any = x.get("source.geo.location.lon")
            # The exact same GeoIP point (the usual case) needs no trigonometry.
            if (lat != self.lat or lon != self.lon) and type(lat) in (float, int) and type(lon) in (float, int):
                dist = haversine_km(self.lat, self.lon, lat, lon)
                if dist >= prm.min_travel_km:
                    # At least a minute: clock skew between sources must not
                    # turn a real trip into an infinite speed.
                    hours = max(ts - self.geo_ts, 60.0) / 3600.0
                    speed = dist / hours
                    p = pareto_tail(speed / prm.max_speed_kmh, prm.travel_alpha)
                    if p < best_p:
                        best_p, sig, raw = p, _TRAVEL, speed

        score = 100.0 * (1.0 - best_p) if best_p < 1.0 else 0.0
        return score, raw, (sig, raw, rh, ch, ah, uh, res_is_new, peer_known, x, ts)

    # -- learning ------------------------------------------------------------

    def _learn(self, x: dict[str, Any], ts: float, peers: PeerGroup | None, score: float, ctx: Any) -> None:
        prm: UnusualAccessParams = self.params
        w = prm.protect_weight if score >= prm.protect_score else 1.0
        _sig, _raw, rh, ch, ah, uh, res_is_new, _pk, _x, _ts = ctx
        self.n += 1
        self.hours.update(ts, w)
        if rh is not None:
            self.res_obs += 1
            if res_is_new:
                self.res.add_probes(rh[1])
                self.res_new += w
            if peers is not None:
                st = peers.stats
                if res_is_new:
                    # Each member adds a resource once per generation of its
                    # own filter: enough for "known to the peers".
                    pb = st.get("access.resources")
                    if pb is None:
                        pb = st["access.resources"] = AgingBloom(1024, 3, 768)
                    pb.add_hash(rh[0])
                rate = st.get("access.res_rate")
                if rate is None:
                    rate = st["access.res_rate"] = EWMeanVar(prm.half_life)
                rate.update(1.0 if res_is_new else 0.0, ts)
        if peers is not None and w == 1.0:
            ph = peers.stats.get("access.hours")
            if ph is None:
                ph = peers.stats["access.hours"] = HourOfWeekProfile()
            ph.update(ts)
        if x.get("event.outcome") == "failure":
            # A failed attempt proves nothing about where the identity is or what
            # it uses (it may be someone else's guess): its place, network and
            # agent are not learned, and its location does not move.
            return
        # Fast path of RecentSet.update for the usual "same as last time".
        for h, rs in ((ch, self.countries), (ah, self.asns), (uh, self.agents)):
            if h is not None:
                items = rs.items
                if items and items[-1] == h:
                    rs.n_obs += 1
                else:
                    rs.update(h, w)
        lat: Any = x.get("source.geo.location.lat")
        lon: Any = x.get("source.geo.location.lon")
        if type(lat) in (float, int) and type(lon) in (float, int) and ts >= self.geo_ts:
            self.lat, self.lon, self.geo_ts = float(lat), float(lon), ts

    # -- explanation ---------------------------------------------------------

    def _explain(self, ctx: Any, peers: PeerGroup | None) -> Explanation:
        sig, raw, _rh, _ch, _ah, _uh, _new, peer_known, x, ts = ctx
        prm: UnusualAccessParams = self.params
        pdict: dict[str, Any] | None = None
        if peers is not None:
            pdict = {"group": peers.name}
        if sig == _RES:
            rid = x.get("ueba.resource.id")
            sens = x.get("ueba.resource.sensitivity") or "unlabelled"
            rtype = x.get("ueba.resource.type") or "resource"
            own_rate = (self.res_new + 1.0) / (self.res_obs + 2.0)
            base = {"seen": self.res_obs, "novelty_rate": round(own_rate, 4)}
            if peers is not None and pdict is not None:
                rate, lvl = peers.lookup("access.res_rate", 1)
                if rate is not None:
                    pdict.update(level=lvl, center=round(rate.mean, 4), spread=round(rate.std, 4), n=rate.n,
                                 ratio=round(own_rate / rate.mean, 3) if rate.mean > 0 else None)
                pdict["resource_known_to_peers"] = peer_known
            reason = (
                f"First access by this identity to {sens} {rtype} {str(rid)[:200]!r}"
                + (" (its peers use it)" if peer_known else "")
                + f"; it opens a new resource about 1 in {1 / max(own_rate, 1e-9):.0f} events."
            )
            return Explanation("ueba.resource.id", rid, base, pdict, "event", reason)
        if sig == _HOUR:
            h = int(raw)
            base = {"hour_of_week": h, "share": round(self.hours.get(h), 5), "seen": self.n}
            if peers is not None and pdict is not None:
                ph = peers.stats.get("access.hours")
                if ph is not None:
                    pdict["share"] = round(ph.get(h), 5)
                    pdict["ratio"] = round(self.hours.get(h) / ph.get(h), 3)
            day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[h // 24]
            reason = f"Activity on {day} {h % 24:02d}:00 UTC, an hour this identity is rarely active."
            return Explanation("@timestamp", ts, base, pdict, "event", reason)
        if sig == _TRAVEL:
            lat = x.get("source.geo.location.lat")
            lon = x.get("source.geo.location.lon")
            dist = haversine_km(self.lat, self.lon, lat, lon)
            base = {"last_lat": self.lat, "last_lon": self.lon, "seconds_since": round(ts - self.geo_ts, 1),
                    "distance_km": round(dist, 1)}
            reason = (
                f"Impossible travel: {dist:.0f} km from the previous location in "
                f"{(ts - self.geo_ts) / 60:.0f} min ({raw:.0f} km/h, limit {prm.max_speed_kmh:.0f})."
            )
            return Explanation("source.geo.location", {"lat": lat, "lon": lon}, base, pdict, "event", reason)
        field = _FEATURE[sig] if sig >= 0 else "event"
        s = {_COUNTRY: self.countries, _ASN: self.asns, _UA: self.agents}.get(sig, self.countries)
        what = {_COUNTRY: "country", _ASN: "network (ASN)", _UA: "user agent"}.get(sig, "value")
        val = x.get(field)
        base = {"seen": s.n_obs, "distinct": len(s.items), "novelty_rate": round(s.novelty_rate(), 4)}
        reason = f"First {what} {str(val)[:120]!r} for this identity, which shows a new {what} about 1 in {1 / s.novelty_rate():.0f} events."
        return Explanation(field, val, base, pdict, "event", reason)

    # -- serialisation -------------------------------------------------------

    def _pack(self) -> bytes:
        import struct

        head = struct.pack("<IIdddd", self.n, self.res_obs, self.res_new, self.lat, self.lon, self.geo_ts)
        return pack_parts([head, self.res.to_bytes(), self.hours.to_bytes(), self.countries.to_bytes(),
                           self.asns.to_bytes(), self.agents.to_bytes()])

    def _unpack(self, data: bytes) -> None:
        import struct

        head, res, hours, cs, asns, uas = unpack_parts(data)
        prm: UnusualAccessParams = self.params
        self.n, self.res_obs, self.res_new, self.lat, self.lon, self.geo_ts = struct.unpack("<IIdddd", head)
        self.res = AgingBloom.from_bytes(res, 3, prm.bloom_capacity)
        self.hours = HourOfWeekProfile.from_bytes(hours)
        self.countries = RecentSet.from_bytes(cs, prm.set_capacity)
        self.asns = RecentSet.from_bytes(asns, prm.set_capacity)
        self.agents = RecentSet.from_bytes(uas, prm.set_capacity)


# mypyc: a class decorator other than @dataclass makes a class non-native.
register(UnusualAccessDetector)
