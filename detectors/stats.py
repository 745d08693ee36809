"""Streaming statistics: small, serialisable, mergeable, fast in pure Python.

Every statistic follows the River ``stats`` shape: ``update(...)`` learns one
observation, ``get()`` returns the current value, ``merge(other)`` /
``+=`` combines the state of two partitions (where that makes sense), and
``to_bytes()`` / ``from_bytes(data, ...)`` round-trip the *state only*;
configuration (half-life, sizes) is passed in again, because it is shared by
every entity and storing it per entity would waste bytes.

Per-event paths avoid numpy: for one scalar, a numpy call costs more than the
whole Python update.  Time is seconds since the epoch (float) everywhere.

>>> s = EWMeanVar(half_life=3600.0)
>>> for t, v in enumerate([1.0, 2.0, 3.0]):
...     s.update(v, float(t))
>>> round(s.get(), 3)
2.0
"""

from __future__ import annotations

import math
import struct
from array import array
from bisect import bisect_right
from typing import Final
from zlib import crc32

__all__ = [
    "EWMeanVar",
    "LogHistogram",
    "HourOfWeekProfile",
    "HyperLogLog",
    "AgingBloom",
    "RecentSet",
    "TumblingSum",
    "stable_hash",
    "hour_of_week",
]

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_LN2 = math.log(2.0)


def stable_hash(value: object) -> int:
    """64-bit hash of ``str(value)`` that is the same in every process.

    Python's ``hash(str)`` is salted per process, so state built with it would
    not survive a restart or a move to another worker.  Two CRC32s (C speed)
    give 64 bits; the Fibonacci multiply spreads CRC's linear structure over
    the high bits, which HyperLogLog and Bloom indexing use.
    """
    b = value.encode() if type(value) is str else str(value).encode()
    return ((crc32(b) | (crc32(b, 0x5BD1E995) << 32)) * _GOLDEN) & _M64


def hour_of_week(ts: float) -> int:
    """Hour of the week in UTC, 0 = Monday 00:00 (the epoch was a Thursday)."""
    return int((ts // 3600.0 + 72) % 168)


# ---------------------------------------------------------------------------
# Exponentially weighted mean and variance, decayed by elapsed time
# ---------------------------------------------------------------------------

_EW_FMT = struct.Struct("<ddddI")


class EWMeanVar:
    """Exponentially weighted mean and variance with a time half-life.

    An observation made ``half_life`` seconds ago weighs half as much as one
    made now, however many observations came in between (count-based decay
    would let a chatty attacker wash the baseline out in minutes).  Until the
    decayed weight builds up this is the plain running mean, so early
    estimates are not biased toward zero.

    Parameters
    ----------
    half_life : float
        Seconds after which an observation's weight halves.

    Attributes
    ----------
    mean, var : float
        Current weighted mean and (population) variance.
    weight : float
        Decayed sum of weights (the effective sample size).
    n : int
        Number of updates (not decayed); used for warm-up.
    """

    __slots__ = ("half_life", "mean", "var", "weight", "last_ts", "n")

    def __init__(self, half_life: float = 7 * 86400.0) -> None:
        self.half_life = half_life
        self.mean = 0.0
        self.var = 0.0
        self.weight = 0.0
        self.last_ts = 0.0
        self.n = 0

    def update(self, x: float, ts: float, w: float = 1.0) -> None:
        """Learn ``x`` observed at ``ts`` with weight ``w`` (0 < w <= 1 typical)."""
        if self.n:
            dt = ts - self.last_ts
            if dt > 0.0:
                self.weight *= 2.0 ** (-dt / self.half_life)
                self.last_ts = ts
        else:
            self.last_ts = ts
        tot = self.weight + w
        a = w / tot
        d = x - self.mean
        self.mean += a * d
        self.var = (1.0 - a) * (self.var + a * d * d)
        self.weight = tot
        self.n += 1

    def peek(self, x: float, ts: float, w: float = 1.0) -> tuple[float, float, int, float]:
        """``(mean, var, n, weight)`` as they would be after ``update(x, ts, w)``; pure.

        Same arithmetic in the same order as :meth:`update`, so the result is
        bit-identical (the detectors rely on that to score the first event of
        a new window against the baseline that already includes the window
        that event closes).
        """
        weight = self.weight
        if self.n:
            dt = ts - self.last_ts
            if dt > 0.0:
                weight *= 2.0 ** (-dt / self.half_life)
        tot = weight + w
        a = w / tot
        d = x - self.mean
        return self.mean + a * d, (1.0 - a) * (self.var + a * d * d), self.n + 1, tot

    def get(self) -> float:
        return self.mean

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def merge(self, other: "EWMeanVar") -> "EWMeanVar":
        """Combine with another partition's statistic (Chan et al. parallel update)."""
        if not other.n:
            return self
        if not self.n:
            self.mean, self.var, self.weight = other.mean, other.var, other.weight
            self.last_ts, self.n = other.last_ts, other.n
            return self
        t = max(self.last_ts, other.last_ts)
        wa = self.weight * 2.0 ** (-(t - self.last_ts) / self.half_life)
        wb = other.weight * 2.0 ** (-(t - other.last_ts) / other.half_life)
        tot = wa + wb
        if tot <= 0.0:
            return self
        d = other.mean - self.mean
        mean = self.mean + d * wb / tot
        var = (wa * self.var + wb * other.var) / tot + d * d * wa * wb / (tot * tot)
        self.mean, self.var, self.weight, self.last_ts = mean, var, tot, t
        self.n += other.n
        return self

    def __iadd__(self, other: "EWMeanVar") -> "EWMeanVar":  # mypyc: no method aliases
        return self.merge(other)

    def to_bytes(self) -> bytes:
        return _EW_FMT.pack(self.mean, self.var, self.weight, self.last_ts, min(self.n, 0xFFFFFFFF))

    @classmethod
    def from_bytes(cls, data: bytes, half_life: float) -> "EWMeanVar":
        s = cls(half_life)
        s.mean, s.var, s.weight, s.last_ts, s.n = _EW_FMT.unpack(data)
        return s

    SIZE: Final = _EW_FMT.size

    def __repr__(self) -> str:
        return f"EWMeanVar(mean={self.mean:.4g}, std={self.std:.4g}, n={self.n})"


# ---------------------------------------------------------------------------
# Robust location / spread: log-bucket histogram
# ---------------------------------------------------------------------------


class LogHistogram:
    """Fixed-size histogram of ``log2(1 + x)`` for non-negative values.

    ``per_octave`` buckets per doubling, ``n_buckets`` in all, so the relative
    error of a quantile is at most ``2 ** (1 / per_octave)`` and memory is
    fixed whatever the attacker sends.  Counts are ``uint16`` scaled by
    ``unit``; when one would overflow all are halved, which is an exponential
    decay per ~``65535 / unit`` observations and lets ``update`` take
    fractional weights (baseline protection learns anomalies at low weight).

    ``quantile``, ``median`` and ``mad`` are in the original units; ``cdf``
    gives the percentile of a value (used for "where does this identity sit
    among its peers").
    """

    __slots__ = ("per_octave", "counts", "total")

    unit = 64

    def __init__(self, per_octave: int = 2, n_buckets: int = 96) -> None:
        self.per_octave = per_octave
        self.counts = array("H", bytes(2 * n_buckets))
        self.total = 0

    def _bucket(self, x: float) -> int:
        b = int(math.log2(1.0 + x) * self.per_octave) if x > 0.0 else 0
        n = len(self.counts) - 1
        return b if b < n else n

    def update(self, x: float, w: float = 1.0) -> None:
        inc = max(1, int(w * self.unit + 0.5))
        b = self._bucket(x)
        c = self.counts
        if c[b] + inc > 0xFFFF:
            for i in range(len(c)):
                c[i] >>= 1
            self.total = sum(c)
        c[b] += inc
        self.total += inc

    def quantile(self, q: float) -> float:
        """Value below which a fraction ``q`` of the (decayed) mass lies."""
        if not self.total:
            return 0.0
        target = q * self.total
        acc = 0.0
        for i, c in enumerate(self.counts):
            if c and acc + c >= target:
                frac = (target - acc) / c
                return 2.0 ** ((i + frac) / self.per_octave) - 1.0
            acc += c
        return 2.0 ** (len(self.counts) / self.per_octave) - 1.0

    def get(self) -> float:
        return self.quantile(0.5)

    def median(self) -> float:  # mypyc: no method aliases
        return self.get()

    def mad(self) -> float:
        """Median absolute deviation, approximated by half the interquartile range
        (exact for symmetric distributions; cheap and robust for the rest)."""
        return 0.5 * (self.quantile(0.75) - self.quantile(0.25))

    def cdf(self, x: float) -> float:
        """Fraction of mass at or below ``x`` (mid-bucket interpolation)."""
        if not self.total:
            return 0.5
        b = self._bucket(x)
        below = sum(self.counts[:b])
        return (below + 0.5 * self.counts[b]) / self.total

    def merge(self, other: "LogHistogram") -> "LogHistogram":
        c, o = self.counts, other.counts
        for i in range(len(c)):
            v = c[i] + o[i]
            c[i] = v if v <= 0xFFFF else 0xFFFF
        self.total = sum(c)
        return self

    def __iadd__(self, other: "LogHistogram") -> "LogHistogram":  # mypyc: no method aliases
        return self.merge(other)

    def to_bytes(self) -> bytes:
        return self.counts.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, per_octave: int = 2) -> "LogHistogram":
        h = cls(per_octave, len(data) // 2)
        h.counts = array("H", data)
        h.total = sum(h.counts)
        return h


# ---------------------------------------------------------------------------
# Hour-of-week activity profile
# ---------------------------------------------------------------------------


class HourOfWeekProfile:
    """168 decayed activity counters (uint16), one per UTC hour of the week.

    One observation adds ``unit`` (16) spread 1-2-1 over the hour and its
    neighbours (4, 8, 4), so 08:00 is not "rare" for someone who always
    starts at 09:00 and the counters are already smoothed when read.  A
    fractional weight adds less, so protected (anomalous) activity is learned
    slowly rather than never.  When a counter would overflow every counter is
    halved: a decay by activity volume that keeps 336 bytes of state forever.

    ``tail_p(h)`` is the probability, under the profile, of an hour at most as
    frequent as ``h`` (a proper tail probability, so it calibrates like the
    other detectors), with an add-one prior per hour; hours busier than the
    average hour are reported as p = 1 without computing the tail.
    """

    __slots__ = ("counts", "total")

    unit = 16

    def __init__(self) -> None:
        self.counts = array("H", bytes(336))
        self.total = 0

    def update(self, ts: float, w: float = 1.0) -> None:
        h = int((ts // 3600.0 + 72) % 168)
        q = 4 if w == 1.0 else max(1, int(w * 4 + 0.5))
        c = self.counts
        if c[h] + 2 * q > 0xFFFF:
            for i in range(168):
                c[i] >>= 1
            self.total = sum(c)
        c[h - 1] += q  # h - 1 == -1 wraps to Sunday 23:00
        c[h] += 2 * q
        c[h + 1 if h < 167 else 0] += q
        self.total += 4 * q

    def smoothed(self, h: int) -> float:
        return float(self.counts[h])

    def get(self, h: int) -> float:
        """Smoothed probability of hour ``h`` (add-one prior per hour)."""
        return (self.counts[h] + 1.0) / (self.total + 168.0)

    def tail_p(self, h: int) -> float:
        """P(an hour at most as frequent as ``h``) under the profile."""
        total = self.total
        if not total:
            return 1.0
        c = self.counts
        mine = c[h]
        # An hour at least as busy as the average hour is never "rare": its
        # tail holds every quieter hour plus itself; report p = 1 and skip
        # the sort (nearly every event of a regular identity).
        if mine * 168 >= total:
            return 1.0
        srt = sorted(c)
        k = bisect_right(srt, mine)
        return min(1.0, (sum(srt[:k]) + k) / (total + 168.0))

    def merge(self, other: "HourOfWeekProfile") -> "HourOfWeekProfile":
        c, o = self.counts, other.counts
        for i in range(168):
            v = c[i] + o[i]
            c[i] = v if v <= 0xFFFF else 0xFFFF
        self.total = sum(c)
        return self

    def __iadd__(self, other: "HourOfWeekProfile") -> "HourOfWeekProfile":  # mypyc: no method aliases
        return self.merge(other)

    def to_bytes(self) -> bytes:
        return self.counts.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "HourOfWeekProfile":
        p = cls()
        p.counts = array("H", data)
        p.total = sum(p.counts)
        return p


# ---------------------------------------------------------------------------
# Cardinality: HyperLogLog
# ---------------------------------------------------------------------------


class HyperLogLog:
    """HyperLogLog cardinality sketch with ``2**p`` one-byte registers.

    Standard error is about ``1.04 / sqrt(2**p)`` (13% at p=6, 6.5% at p=8);
    small counts, the usual case per identity, use linear counting and are
    nearly exact.  The harmonic sum and the number of empty registers are kept
    incrementally so ``get()`` is O(1) on the per-event path.

    Parameters
    ----------
    p : int
        log2 of the number of registers (4..12).
    """

    __slots__ = ("p", "reg", "_z", "_zeros")

    def __init__(self, p: int = 6) -> None:
        if not 4 <= p <= 12:
            raise ValueError("p must be in 4..12")
        self.p = p
        m = 1 << p
        self.reg = bytearray(m)
        self._z = float(m)
        self._zeros = m

    def add_hash(self, h: int) -> bool:
        """Add a 64-bit hash; return True if a register changed."""
        p = self.p
        idx = h >> (64 - p)
        rest = h & ((1 << (64 - p)) - 1)
        rank = 65 - p - rest.bit_length()
        old = self.reg[idx]
        if rank <= old:
            return False
        self.reg[idx] = rank
        self._z += 2.0 ** -rank - 2.0 ** -old
        if old == 0:
            self._zeros -= 1
        return True

    def update(self, value: object) -> bool:
        return self.add_hash(stable_hash(value))

    def get(self) -> float:
        m = len(self.reg)
        if self._zeros == m:
            return 0.0
        alpha = 0.709 if m == 64 else (0.697 if m == 32 else (0.673 if m == 16 else 0.7213 / (1 + 1.079 / m)))
        est = alpha * m * m / self._z
        if est <= 2.5 * m and self._zeros:
            return m * math.log(m / self._zeros)
        return est

    def clear(self) -> None:
        m = len(self.reg)
        self.reg = bytearray(m)
        self._z = float(m)
        self._zeros = m

    def _recount(self) -> None:
        z = 0.0
        for r in bytes(self.reg):  # mypyc 2.4 crashes iterating a bytearray (internal error)
            z += 2.0 ** -r
        self._z = z
        self._zeros = self.reg.count(0)

    def merge(self, other: "HyperLogLog") -> "HyperLogLog":
        if other.p != self.p:
            raise ValueError("cannot merge HyperLogLogs of different precision")
        self.reg = bytearray(max(a, b) for a, b in zip(bytes(self.reg), bytes(other.reg)))
        self._recount()
        return self

    def __iadd__(self, other: "HyperLogLog") -> "HyperLogLog":  # mypyc: no method aliases
        return self.merge(other)

    def to_bytes(self) -> bytes:
        return bytes(self.reg)

    @classmethod
    def from_bytes(cls, data: bytes) -> "HyperLogLog":
        h = cls(len(data).bit_length() - 1)
        h.reg = bytearray(data)
        h._recount()
        return h


# ---------------------------------------------------------------------------
# Bounded first-seen membership
# ---------------------------------------------------------------------------


class AgingBloom:
    """First-seen membership in fixed memory: two Bloom filters that rotate.

    A plain Bloom filter saturates under attacker-controlled cardinality (every
    value then looks "seen", failing open).  Here inserts go to the current
    filter; once it holds ``capacity`` items it becomes the old one and a fresh
    filter starts, so the false-positive rate stays bounded by roughly twice
    that of one filter at ``capacity`` items, and values unseen for two
    generations are forgotten (they become "new" again, which is the
    behaviour one wants from a first-seen detector anyway).

    Parameters
    ----------
    n_bytes : int
        Bytes per filter (state is ``2 * n_bytes``).
    k : int
        Hash functions (bit probes) per item.
    capacity : int
        Items per generation.
    """

    __slots__ = ("n_bytes", "k", "capacity", "cur", "old", "count")

    def __init__(self, n_bytes: int = 128, k: int = 3, capacity: int = 96) -> None:
        self.n_bytes = n_bytes
        self.k = k
        self.capacity = capacity
        self.cur = bytearray(n_bytes)
        self.old = bytearray(n_bytes)
        self.count = 0

    def probes(self, h: int) -> tuple[int, ...]:
        """Bit positions of a 64-bit hash (double hashing); compute once per
        event and pass to :meth:`contains_probes` / :meth:`add_probes`."""
        nbits = self.n_bytes << 3
        h1 = h & 0xFFFFFFFF
        h2 = (h >> 32) | 1
        if self.k == 3:
            return (h1 % nbits, (h1 + h2) % nbits, (h1 + 2 * h2) % nbits)
        return tuple((h1 + i * h2) % nbits for i in range(self.k))

    def contains_probes(self, probes: tuple[int, ...]) -> bool:
        cur = self.cur
        for b in probes:
            if not cur[b >> 3] & (1 << (b & 7)):
                break
        else:
            return True
        old = self.old
        for b in probes:
            if not old[b >> 3] & (1 << (b & 7)):
                return False
        return True

    def add_probes(self, probes: tuple[int, ...]) -> bool:
        """Insert; return True if the item was not (apparently) in the current filter."""
        cur = self.cur
        new = False
        for b in probes:
            i = b >> 3
            bit = 1 << (b & 7)
            if not cur[i] & bit:
                new = True
                cur[i] |= bit
        if new:
            self.count += 1
            if self.count >= self.capacity:
                self.old = self.cur
                self.cur = bytearray(self.n_bytes)
                self.count = 0
        return new

    def contains_hash(self, h: int) -> bool:
        return self.contains_probes(self.probes(h))

    def add_hash(self, h: int) -> bool:
        return self.add_probes(self.probes(h))

    def __contains__(self, value: object) -> bool:
        return self.contains_hash(stable_hash(value))

    def update(self, value: object) -> bool:
        return self.add_hash(stable_hash(value))

    def merge(self, other: "AgingBloom") -> "AgingBloom":
        self.cur = bytearray(a | b for a, b in zip(bytes(self.cur), bytes(other.cur)))
        self.old = bytearray(a | b for a, b in zip(bytes(self.old), bytes(other.old)))
        self.count = max(self.count, other.count)
        return self

    def __iadd__(self, other: "AgingBloom") -> "AgingBloom":  # mypyc: no method aliases
        return self.merge(other)

    def to_bytes(self) -> bytes:
        return struct.pack("<H", self.count) + bytes(self.cur) + bytes(self.old)

    @classmethod
    def from_bytes(cls, data: bytes, k: int = 3, capacity: int = 96) -> "AgingBloom":
        n = (len(data) - 2) // 2
        b = cls(n, k, capacity)
        (b.count,) = struct.unpack_from("<H", data)
        b.cur = bytearray(data[2 : 2 + n])
        b.old = bytearray(data[2 + n :])
        return b


_RS_FMT = struct.Struct("<dI")


class RecentSet:
    """Capped set of 32-bit hashes with least-recently-seen eviction.

    For small vocabularies per identity (countries, ASNs, user agents, client
    IPs): exact up to ``capacity`` values, 4 bytes each, and an attacker who
    cycles through thousands of values only ever costs ``4 * capacity``
    bytes.  ``n_new`` / ``n_obs`` count first sightings and observations for
    the novelty rate used to calibrate "first seen".
    """

    __slots__ = ("capacity", "items", "n_new", "n_obs")

    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self.items = array("I")
        self.n_new = 0.0
        self.n_obs = 0

    def __contains__(self, h32: int) -> bool:
        return h32 in self.items

    def update(self, h32: int, w: float = 1.0) -> bool:
        """Record one observation of ``h32``; return True if it was new.

        A new value counts ``w`` toward ``n_new`` (baseline protection: an
        attacker's burst of novelties must not make novelty look normal).
        """
        items = self.items
        self.n_obs += 1
        if h32 in items:
            if items[-1] != h32:
                items.remove(h32)
                items.append(h32)
            return False
        items.append(h32)
        if len(items) > self.capacity:
            del items[0]
        self.n_new += w
        return True

    def get(self) -> int:
        return len(self.items)

    def novelty_rate(self) -> float:
        """Laplace-smoothed rate at which this identity shows new values."""
        return (self.n_new + 1.0) / (self.n_obs + 2.0)

    def merge(self, other: "RecentSet") -> "RecentSet":
        for h in other.items:
            if h not in self.items:
                self.items.append(h)
        while len(self.items) > self.capacity:
            del self.items[0]
        self.n_new += other.n_new
        self.n_obs += other.n_obs
        return self

    def __iadd__(self, other: "RecentSet") -> "RecentSet":  # mypyc: no method aliases
        return self.merge(other)

    def to_bytes(self) -> bytes:
        return _RS_FMT.pack(self.n_new, self.n_obs) + self.items.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, capacity: int = 16) -> "RecentSet":
        s = cls(capacity)
        s.n_new, s.n_obs = _RS_FMT.unpack_from(data)
        s.items = array("I", data[_RS_FMT.size :])
        return s


# ---------------------------------------------------------------------------
# Window sums
# ---------------------------------------------------------------------------

_TS_FMT = struct.Struct("<qdd")


class TumblingSum:
    """Sum over tumbling windows of ``width`` seconds, keeping the previous one.

    ``add`` returns the just-closed window ``(window_id, total)`` when an event
    opens a new window (so a caller can learn the closed total once), else
    None.  ``sliding(ts)`` estimates the sum over the last ``width`` seconds
    as ``current + previous * (unelapsed fraction)``, the usual two-bucket
    approximation.  Windows are aligned on the epoch so every process and the
    batch path cut them identically.
    """

    __slots__ = ("width", "win", "cur", "prev")

    def __init__(self, width: float = 3600.0) -> None:
        self.width = width
        self.win = -1
        self.cur = 0.0
        self.prev = 0.0

    def add(self, x: float, ts: float) -> tuple[int, float] | None:
        w = int(ts // self.width)
        closed = None
        if w != self.win:
            if w > self.win:
                if self.win >= 0:
                    closed = (self.win, self.cur)
                self.prev = self.cur if w == self.win + 1 else 0.0
                self.win = w
                self.cur = 0.0
            else:
                # Late event for an already closed window: count it in the
                # current one rather than rewriting history.
                pass
        self.cur += x
        return closed

    def peek(self, x: float, ts: float) -> float:
        """The current window's total if ``x`` were added at ``ts`` (pure)."""
        w = int(ts // self.width)
        return x if w > self.win else self.cur + x

    def get(self) -> float:
        return self.cur

    def sliding(self, ts: float) -> float:
        w = int(ts // self.width)
        if w > self.win + 1:
            return 0.0
        if w == self.win + 1:
            return self.cur * (1.0 - (ts / self.width - w))
        frac = ts / self.width - w
        return self.cur + self.prev * (1.0 - frac)

    def to_bytes(self) -> bytes:
        return _TS_FMT.pack(self.win, self.cur, self.prev)

    @classmethod
    def from_bytes(cls, data: bytes, width: float) -> "TumblingSum":
        s = cls(width)
        s.win, s.cur, s.prev = _TS_FMT.unpack(data)
        return s
