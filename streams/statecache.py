"""Decoded per-key state in front of a bytes store, written back in batches.

The worker's state lives in Faust tables (RocksDB, changelog-backed) as bytes.
Decoding an identity's state, re-encoding it and writing it (a RocksDB put and
a changelog message) on *every* event cost more than scoring the event. The
:class:`StateCache` keeps recently used states decoded, lets the processors
mutate them in place, and writes each changed key back once per batch.

Correctness with at-least-once delivery rests on one ordering rule that the
caller keeps: **flush before ack**. The worker processes a batch, flushes the
cache (table writes, which queue their changelog messages), and only then lets
Faust ack the batch's offsets; Faust's commit flushes the producer before it
commits. So a committed offset never runs ahead of the state written for it,
and a crash before the flush just redelivers the batch onto the older state
(which the per-key last-offset check then applies exactly once).

The cache is bounded (``max_keys``): after a flush every entry is clean and the
least recently used ones are dropped, so attacker-controlled cardinality costs
at most ``max_keys`` decoded states in memory; the rest stays in the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any, Generic, TypeVar

V = TypeVar("V")

#: default bound on decoded states kept per cache
DEFAULT_MAX_KEYS = 20_000


class StateCache(Generic[V]):
    """Write-behind cache of decoded values; see the module docstring.

    ``tag`` is whatever the writer needs to put a key back where it belongs
    (the worker passes the Faust event, whose partition the table write uses).
    """

    __slots__ = ("decode", "encode", "max_keys", "_live", "_dirty", "hits", "misses")

    def __init__(self, decode: Callable[[bytes], V], encode: Callable[[V], bytes], *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.decode = decode
        self.encode = encode
        self.max_keys = max_keys
        self._live: dict[bytes, V] = {}
        self._dirty: dict[bytes, Any] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._live)

    @property
    def dirty(self) -> int:
        return len(self._dirty)

    def get(self, store: Mapping[bytes, bytes], key: bytes) -> V | None:
        """The decoded value of ``key``: from the cache, else read from ``store``."""
        live = self._live
        value = live.pop(key, None)
        if value is not None:
            live[key] = value  # most recently used last
            self.hits += 1
            return value
        self.misses += 1
        raw = store.get(key)
        if raw is None:
            return None
        value = self.decode(raw)
        live[key] = value
        return value

    def put(self, key: bytes, value: V, tag: Any = None) -> None:
        """Record ``value`` as the new state of ``key``; written on :meth:`flush`."""
        self._live.pop(key, None)
        self._live[key] = value
        self._dirty[key] = tag

    def flush(self, write: Callable[[bytes, bytes, Any], None]) -> int:
        """Encode and write every changed key (``write(key, raw, tag)``), then
        trim the cache to ``max_keys``. Returns the number of keys written."""
        dirty = self._dirty
        n = len(dirty)
        if n:
            live, encode = self._live, self.encode
            for key, tag in dirty.items():
                write(key, encode(live[key]), tag)
            dirty.clear()
        excess = len(self._live) - self.max_keys
        if excess > 0:
            live = self._live
            for key in list(islice(live, excess)):  # least recently used first
                del live[key]
        return n

    def forget(self, key: bytes) -> bool:
        """Drop ``key``'s cached value unless it holds unflushed changes; True if dropped."""
        if key in self._dirty:
            return False
        return self._live.pop(key, None) is not None

    def discard(self) -> None:
        """Forget every cached value (after a rebalance: the store is the truth
        again). Unflushed changes are dropped too; callers flush first."""
        self._live.clear()
        self._dirty.clear()
