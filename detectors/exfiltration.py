"""Exfiltration: unusual volumes read or downloaded by one identity.

Scores the bytes, rows and objects an identity moves out of datasets, model
artifacts, secrets and buckets (``ueba.transfer.*`` on access events whose
``event.action`` is not an inbound one such as ``write``/``upload``) per
window, against its own baseline and, while that is warming up, its peers'.
Two shapes are caught: a *burst* (one hour far above normal) and a *slow
drip* (days of moderate excess, each unremarkable on its own), see
:class:`detectors.baseline.WindowedVolume`.

Volumes are baselined per *resource class*: bulk data (datasets, model
artifacts, buckets, tables...; and events that name no resource type) and
everything else (secrets, notebooks, endpoints, configurations...). An
administrator whose hours are a few hundred bytes of secrets and configs is
not judged by those when reading a dataset: a class the identity has not
warmed up yet is judged against its peers' volumes of that class.

>>> det = ExfiltrationDetector()
>>> t0 = 1_700_000_000.0
>>> for h in range(48):
...     det.learn_one({"event.action": "download", "ueba.transfer.bytes": 2e6}, t0 + h * 3600)
>>> det.score_one({"event.action": "download", "ueba.transfer.bytes": 2e6}, t0 + 48 * 3600).score < 90
True
>>> round(det.score_one({"event.action": "download", "ueba.transfer.bytes": 5e9}, t0 + 48 * 3600).score, 2)
100.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from .base import Explanation, register
from .baseline import CoreDetector, WindowedParams, WindowedVolume, fmt_amount, num
from .calibration import normal_surprise
from .peers import PeerGroup

__all__ = ["ExfiltrationParams", "ExfiltrationDetector", "TRANSFER_FIELDS", "INBOUND_ACTIONS", "LISTING_ACTIONS",
           "UNSCORED_ACTIONS", "BULK_RESOURCE_TYPES", "RESOURCE_CLASSES", "resource_class"]

#: The amounts scored, in this order (index = feature id in the state).
TRANSFER_FIELDS: tuple[str, ...] = ("ueba.transfer.bytes", "ueba.transfer.rows", "ueba.transfer.objects")
_UNITS = ("B", " rows", " objects")

#: ``ueba.resource.type`` values whose reads are bulk data; with no type at all
#: an event is counted here too (the baseline a typeless deployment always had).
BULK_RESOURCE_TYPES = frozenset({
    "dataset", "model_artifact", "model", "weights", "checkpoint", "bucket", "object", "file", "table",
    "database", "volume", "snapshot", "backup", "feature_store",
})
#: Resource classes, in slot order: class ``c``, amount ``i`` is volume slot ``3 * c + i``.
RESOURCE_CLASSES: tuple[str, ...] = ("data", "other")
_CLASS_TEXT = ("", " of non-bulk resources (secrets, notebooks, endpoints...)")
#: Peer-baseline keys per slot (class "data" keeps the keys of the single baseline it replaced).
_KEYS = tuple(
    "exfiltration." + ("" if c == 0 else RESOURCE_CLASSES[c] + ".") + f.rsplit(".", 1)[1]
    for c in range(len(RESOURCE_CLASSES)) for f in TRANSFER_FIELDS
)


def resource_class(rtype: Any) -> int:
    """0 for bulk data (or no type), 1 for any other ``ueba.resource.type``."""
    return 1 if type(rtype) is str and rtype not in BULK_RESOURCE_TYPES else 0

#: Actions that bring data *in*; their transfer amounts are not exfiltration.
INBOUND_ACTIONS = frozenset({"write", "upload", "put", "create", "delete", "login", "logout"})
#: Actions that return names and metadata, not the data: a listing's object count is
#: how many names came back (a nightly job lists thousands while moving kilobytes).
#: Enumeration is discovery (ATT&CK T1619), not exfiltration; it is neither scored
#: nor learned here.
LISTING_ACTIONS = frozenset({"list", "describe", "head", "stat"})
#: Actions whose transfer amounts this detector neither scores nor learns.
UNSCORED_ACTIONS = INBOUND_ACTIONS | LISTING_ACTIONS


@dataclass(frozen=True, slots=True)
class ExfiltrationParams(WindowedParams):
    """Hyperparameters of :class:`ExfiltrationDetector`.

    Attributes
    ----------
    window : float
        Burst window in seconds (epoch-aligned tumbling).
    warmup : int
        Closed *active* windows before the identity's own baseline is used.
    min_log_std : float
        Floor on the spread of ``log1p(volume)`` (0.5 ~ a factor 1.65).
    drip_k : float
        CUSUM allowance in standard deviations per day.
    drip_zmax : float
        Most one day can add to the CUSUM (in standard deviations).
    drip_warmup : int
        Active days before the slow-drip test runs.
    """

    warmup: int = 24
    half_life: float = 14 * 86400.0


class ExfiltrationDetector(CoreDetector):
    """Per-identity read/download volume per hour (bursts) and per day (slow drip).

    Units: bytes, rows, objects from ``ueba.transfer.*``; time in seconds.
    Score: 0-100, higher = larger excess over baseline (low volume scores ~0).
    Warm-up: 0 until ``warmup`` active hours are learned, unless a peer or
    global baseline with ``peer_min_n`` windows exists.
    """

    __slots__ = ("vols",)

    name: ClassVar[str] = "exfiltration"
    Params: ClassVar[type] = ExfiltrationParams
    entity_type: ClassVar[str] = "user"
    title: ClassVar[str] = "Unusual data volume read or downloaded"
    techniques: ClassVar[tuple[str, ...]] = ("T1530", "T1567", "AML.T0025")
    #: Scores every event once warm (the suite's calibration starts its clock when it first does).
    dense_scores: ClassVar[bool] = True

    def __init__(self, params: ExfiltrationParams | None = None) -> None:
        super().__init__(params)
        #: slot 3 * class + amount (see RESOURCE_CLASSES, TRANSFER_FIELDS)
        self.vols: list[WindowedVolume | None] = [None] * (3 * len(RESOURCE_CLASSES))

    def _assess(self, x: dict[str, Any], ts: float, peers: PeerGroup | None) -> tuple[float, float, Any]:
        act = x.get("event.action")
        if (type(act) is str and act in UNSCORED_ACTIONS) or x.get("event.outcome") == "failure":
            return 0.0, 0.0, None
        prm: ExfiltrationParams = self.params
        best = 0.0
        raw = 0.0
        info = None
        vols = self.vols
        vals: list[float | None] = [None, None, None]
        o = 3 * resource_class(x.get("ueba.resource.type"))
        for i in range(3):
            v = x.get(TRANSFER_FIELDS[i])
            if v is None:
                continue
            v = num(v)
            if v is None:
                continue
            vals[i] = v
            vol = vols[o + i]
            if vol is None:
                # Cold start: nothing of our own yet, the peers may still judge.
                vol = _EMPTY
            ref = None
            if peers is not None and vol.base.n < prm.warmup:
                ref = peers.lookup(_KEYS[o + i], prm.peer_min_n)[0]
            s, z, total = vol.burst_at(v, ts, prm, ref)
            if s > best:
                best, raw, info = s, z, (o + i, 0, total, ref is not None)
            # The drip test needs drip_warmup closed days (or one about to close).
            if vol.dbase.n >= prm.drip_warmup - 1 and vol.day >= 0:
                s, c = vol.drip(v, ts, prm)
                if s > best:
                    best, raw, info = s, c, (o + i, 1, v if int(ts // 86400.0) != vol.day else vol.day_sum + v, False)
        return best, raw, (vals, info, o)

    def _surprise(self, score: float, raw: float, ctx: Any) -> float:
        if ctx is None or ctx[1] is None or score <= 0.0:
            return super()._surprise(score, raw, ctx)
        if ctx[1][1] == 0:  # burst: raw is the z of the window total
            return max(normal_surprise(raw), super()._surprise(score, raw, ctx))
        # drip: raw is the CUSUM, tail exp(-2 k S)
        return max(2.0 * self.params.drip_k * raw / math.log(10.0), super()._surprise(score, raw, ctx))

    def _learn(self, x: dict[str, Any], ts: float, peers: PeerGroup | None, score: float, ctx: Any) -> None:
        if ctx is None:
            return
        vals, _info, o = ctx
        prm: ExfiltrationParams = self.params
        vols = self.vols
        for i in range(3):
            v = vals[i]
            if v is None:
                continue
            vol = vols[o + i]
            if vol is None:
                vol = vols[o + i] = WindowedVolume(prm.half_life, day=True)
            vol.add(v, ts, prm, peers, _KEYS[o + i])

    def _explain(self, ctx: Any, peers: PeerGroup | None) -> Explanation:
        slot, kind, total, vs_peers = ctx[1]
        c, i = divmod(slot, 3)
        vol = self.vols[slot] or _EMPTY
        unit = _UNITS[i] + _CLASS_TEXT[c]
        base = vol.baseline_dict()
        prm: ExfiltrationParams = self.params
        peer = WindowedVolume.peers_dict(total, peers, _KEYS[slot], prm.peer_min_n)
        if kind == 0:
            ref = peer if vs_peers and peer else base
            center = ref.get("center") or 0.0
            ratio = f"{total / center:.1f}x" if center > 0 else "far above"
            whose = f"its peer group {peer['group']!r}" if vs_peers and peer else "this identity"
            reason = (
                f"Read {fmt_amount(total, unit)} in the current {prm.window / 3600:g} h window, "
                f"{ratio} the usual {fmt_amount(center, unit)} per active window of {whose}."
            )
            window = f"{prm.window / 3600:g}h"
        else:
            center = math.expm1(vol.dbase.mean)
            base = {"center": round(center, 3), "spread_log": round(math.sqrt(vol.dbase.var), 4),
                    "n": vol.dbase.n, "cusum": round(vol.cusum, 3)}
            reason = (
                f"Sustained excess: {fmt_amount(total, unit)} today after days above the usual "
                f"{fmt_amount(center, unit)} per active day (slow-drip CUSUM)."
            )
            window = "1d"
        base = {**base, "resource_class": RESOURCE_CLASSES[c]}
        return Explanation(TRANSFER_FIELDS[i], total, base, peer, window, reason)

    def _pack(self) -> bytes:
        flags = 0
        parts = []
        for i, v in enumerate(self.vols):
            if v is not None:
                flags |= 1 << i
                parts.append(v.to_bytes())
        return bytes((flags,)) + b"".join(parts)

    def _unpack(self, data: bytes) -> None:
        flags = data[0]
        o = 1
        size = WindowedVolume.SIZE_DAY
        # Bits 0-2 are the bulk-data class: a state from before the resource
        # classes (one baseline, three bits) loads as that class.
        for i in range(len(self.vols)):
            if flags & (1 << i):
                self.vols[i] = WindowedVolume.from_bytes(data[o : o + size], self.params.half_life)
                o += size


# Shared read-only stand-in for a feature the identity has never shown.
_EMPTY = WindowedVolume(1.0, day=False)


# mypyc: a class decorator other than @dataclass makes a class non-native.
register(ExfiltrationDetector)
