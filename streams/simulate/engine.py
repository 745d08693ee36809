"""Run a simulation: hour slices in time order, each slice's events from every
generator merged and sorted, then stamped (``@timestamp``, ``event.id``).

Two renderings of the same events: documents (:meth:`Simulation.slices`, for
:func:`simulate` and Kafka) and JSON lines written straight from templates
(:meth:`Simulation.lines`, for :func:`write_jsonl`; see :mod:`.wire`), which
are byte for byte ``orjson.dumps`` of the documents.

Memory is bounded by one hour of events (plus the few attack events planned
up front), so a run can be arbitrarily long.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import orjson

from ..errors import EventError, UebaError
from ..events import flatten, identity_of
from .config import SimulationConfig
from .generate import Batch, HumanTraffic, ModelDeploys, ServiceTraffic, TenantTraffic
from .scenarios import SCENARIOS, Scenario, plan_scenarios
from .wire import Docs, JsonCache, hex_ids, stamp_array
from .world import HOUR_MS, World, build_world

log = logging.getLogger("streams.simulate")

DATASETS: dict[str, str] = {"access": "ueba.access", "api": "ueba.api", "telemetry": "ueba.telemetry"}
_KIND_OF_DATASET = {v: k for k, v in DATASETS.items()}
SLICE_MS = HOUR_MS
#: Events per chunk of lines rendered and written together (about 1 MB).
CHUNK = 1024


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC for a bulk run: simulated documents hold no cycles,
    and collections triggered by millions of short-lived dicts cost ~30%."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def kind_of(doc: dict[str, Any]) -> str:
    """Stream kind (``access``/``api``/``telemetry``) of a simulated document,
    from its ``event.dataset`` (nested or dotted)."""
    ev = doc.get("event")
    ds = ev.get("dataset") if isinstance(ev, dict) else doc.get("event.dataset")
    try:
        return _KIND_OF_DATASET[ds]
    except (KeyError, TypeError):
        raise EventError("unknown_stream", f"event.dataset {ds!r} is not one of {', '.join(_KIND_OF_DATASET)}") from None


class Simulation:
    """One planned run: the world, the generators and the injected scenarios.

    ``wire=True`` makes the high-volume generators render JSON bytes directly
    (for :func:`write_jsonl`); only :meth:`lines` may be used then.
    """

    def __init__(self, config: SimulationConfig, *, wire: bool = False) -> None:
        self.config = config
        self.wire = JsonCache() if wire else None
        self.world: World = build_world(config)
        tenants = TenantTraffic(self.world, self.wire)
        ids = list(SCENARIOS) if config.scenarios is None else list(config.scenarios)
        self.scenarios: list[Scenario] = plan_scenarios(self.world, tenants, ids)
        self.generators = [ModelDeploys(self.world), HumanTraffic(self.world, self.wire),
                           ServiceTraffic(self.world, self.wire), tenants, *self.scenarios]
        self._id_prefix = f"{(config.seed * 2654435761) & 0xFFFFFF:06x}"

    def _batches(self) -> Iterator[tuple[list[Batch], np.ndarray]]:
        """Per non-empty hour slice: every generator's batch and their timestamps (ms) concatenated."""
        start, end = self.config.start_ms, self.config.end_ms
        for si, t0 in enumerate(range(start, end, SLICE_MS)):
            t1 = min(t0 + SLICE_MS, end)
            batches: list[Batch] = [g.generate(si, t0, t1) for g in self.generators]
            ts = np.concatenate([b.ts for b in batches])
            if len(ts):
                yield batches, ts

    def _merged(self) -> Iterator[tuple[np.ndarray, list[str], list[Any], list[str | None] | None]]:
        """Per hour slice: sorted timestamps (ms), kinds, documents and tags, in time order."""
        for batches, ts in self._batches():
            order = np.argsort(ts, kind="stable").tolist()
            kinds: list[str] = []
            docs: list[Any] = []
            for b in batches:
                kinds.extend(b.kinds)
                docs.extend(b.docs)
            tags: list[str | None] | None = None
            if any(b.tags is not None for b in batches):
                tags = []
                for b in batches:
                    if b.tags is None:
                        tags.extend([None] * len(b.docs))
                    elif isinstance(b.tags, str):
                        tags.extend([b.tags] * len(b.docs))
                    else:
                        tags.extend(b.tags)
                tags = list(map(tags.__getitem__, order))
            yield ts[order], list(map(kinds.__getitem__, order)), list(map(docs.__getitem__, order)), tags

    def slices(self) -> Iterator[tuple[list[int], list[str], list[dict[str, Any]], list[str | None] | None]]:
        """Per hour: timestamps (ms), kinds, documents and scenario tags (or None), in time order."""
        if self.wire is not None:
            raise RuntimeError("a wire-mode Simulation renders lines(), not documents")
        n_done = 0
        prefix = self._id_prefix
        for ts_sorted, kinds, docs, tags in self._merged():
            stamp_l = np.datetime_as_string(ts_sorted.astype("datetime64[ms]"), unit="ms", timezone="UTC").tolist()
            for j, d in enumerate(docs):
                d["@timestamp"] = stamp_l[j]
                d["event"]["id"] = f"{prefix}{n_done + j:010x}"
            n_done += len(docs)
            yield ts_sorted.tolist(), kinds, docs, tags

    def lines(self) -> Iterator[tuple[dict[str, int], list[bytes], dict[str, list[str]]]]:
        """The JSON lines in time order, :data:`CHUNK` at a time. The first
        chunk of each hour slice comes with the slice's events per stream kind
        and, per scenario, the ``event.id`` of its injected events in time
        order; the other chunks with empty dicts.

        The same events as :meth:`slices`, byte for byte what orjson makes of
        them, several times faster. Per hour slice: every generator's events
        come as segments (one per kind of line, :mod:`.wire`), each put in time
        order (stable: ties keep their order, so the merged order is the one
        :meth:`slices` has); the merge fixes each event's ``event.id``; then
        the segments render the lines chunk by chunk, so a chunk's lines are
        still in the CPU cache when they are written.
        """
        if self.wire is None:
            raise RuntimeError("lines() needs a Simulation(config, wire=True)")
        n_done = 0
        prefix = self._id_prefix.encode()
        code_of = {sid: c for c, sid in enumerate(SCENARIOS, 1)}
        sid_of = {c: sid for sid, c in code_of.items()}
        for batches, _ts in self._batches():
            counts = dict.fromkeys(DATASETS, 0)
            segs: list[Any] = []
            seg_ts: list[np.ndarray] = []
            seg_tags: list[str | list[str | None] | None] = []
            for b in batches:
                if not len(b.ts):
                    continue
                if b.counts is not None:
                    for k, v in b.counts.items():
                        counts[k] += v
                else:
                    for k in DATASETS:
                        counts[k] += b.kinds.count(k)
                o = 0
                for part in (b.parts if b.parts is not None else [Docs(b.docs)]):
                    m = len(part)
                    t = b.ts[o:o + m]
                    tags = b.tags[o:o + m] if isinstance(b.tags, list) else b.tags
                    if m > 1 and (t[1:] < t[:-1]).any():
                        p = np.argsort(t, kind="stable")
                        t, pl = t[p], p.tolist()
                        part = part.take(pl)
                        if isinstance(tags, list):
                            tags = list(map(tags.__getitem__, pl))
                    segs.append(part)
                    seg_ts.append(t)
                    seg_tags.append(tags)
                    o += m
            ts = np.concatenate(seg_ts)
            n = len(ts)
            order = np.argsort(ts, kind="stable")
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(n, dtype=np.int64)
            ids = hex_ids(prefix, n_done + rank).tolist()      # segment order
            st = stamp_array(ts).tolist()
            bounds = np.cumsum([0] + [len(t) for t in seg_ts]).tolist()
            tagged = self._tagged(seg_tags, bounds, order, n_done, prefix, code_of, sid_of)
            cursor = [0] * len(segs)
            for c0 in range(0, n, CHUNK):
                c1 = min(c0 + CHUNK, n)
                lines: list[bytes] = []
                where: list[np.ndarray] = []
                for s, part in enumerate(segs):
                    lo_s, hi_s = bounds[s], bounds[s + 1]
                    a = cursor[s]
                    z = a + int(np.searchsorted(rank[lo_s + a:hi_s], c1))   # its events among the first c1
                    if z > a:
                        lines += part.render(st[lo_s + a:lo_s + z], ids[lo_s + a:lo_s + z], a, z)
                        where.append(rank[lo_s + a:lo_s + z])
                        cursor[s] = z
                inv = np.empty(c1 - c0, dtype=np.int64)
                inv[np.concatenate(where) - c0] = np.arange(c1 - c0, dtype=np.int64)
                yield counts, list(map(lines.__getitem__, inv.tolist())), tagged
                counts, tagged = {}, {}
            n_done += n

    @staticmethod
    def _tagged(seg_tags: list, bounds: list[int], order: np.ndarray, n_done: int, prefix: bytes,
                code_of: dict[str, int], sid_of: dict[int, str]) -> dict[str, list[str]]:
        """Per scenario, the ids of its events in a slice, in time order."""
        if all(t is None for t in seg_tags):
            return {}
        codes = np.zeros(bounds[-1], dtype=np.int16)
        for tags, lo, hi in zip(seg_tags, bounds, bounds[1:]):
            if tags is None:
                continue
            if isinstance(tags, str):
                codes[lo:hi] = code_of[tags]
            else:
                arr = np.array(tags, dtype=object)
                for t in set(tags) - {None}:
                    codes[lo:hi][arr == t] = code_of[t]
        sorted_codes = codes[order]
        out = {}
        for c in np.unique(sorted_codes).tolist():
            if c:
                pos = np.flatnonzero(sorted_codes == c)
                out[sid_of[c]] = hex_ids(prefix, n_done + pos).astype("U").tolist()
        return out

    def labels(self) -> list[dict[str, Any]]:
        return [sc.label() for sc in self.scenarios]


try:
    _IOV_MAX = max(1, min(1024, os.sysconf("SC_IOV_MAX")))
except (AttributeError, ValueError, OSError):
    _IOV_MAX = 16


def write_lines(fh: Any, lines: list[bytes]) -> None:
    """Write ``lines`` to the unbuffered binary file ``fh``: gathered straight
    from the line objects (``writev``, no joined copy) where the OS has it."""
    writev = getattr(os, "writev", None)
    if writev is None:
        _write_all(fh, b"".join(lines))
        return
    fd = fh.fileno()
    for i in range(0, len(lines), _IOV_MAX):
        chunk = lines if len(lines) <= _IOV_MAX else lines[i:i + _IOV_MAX]
        done = writev(fd, chunk)
        if done < sum(map(len, chunk)):  # a short write: finish this chunk the slow way
            _write_all(fh, b"".join(chunk)[done:])


def _write_all(fh: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[fh.write(view):]


def simulate(config: SimulationConfig) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(stream kind, ECS document)`` in non-decreasing ``@timestamp`` order.

    Deterministic for a given config. Documents share constant sub-objects
    (``user``, ``source``, ...): treat them as read-only.
    """
    for _ts, kinds, docs, _tags in Simulation(config).slices():
        yield from zip(kinds, docs)


def simulate_labelled(config: SimulationConfig) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    """Like :func:`simulate`, with the scenario id of each injected event (``None`` for baseline)."""
    for _ts, kinds, docs, tags in Simulation(config).slices():
        if tags is None:
            for k, d in zip(kinds, docs):
                yield k, d, None
        else:
            yield from zip(kinds, docs, tags)


def labels(config: SimulationConfig) -> list[dict[str, Any]]:
    """One record per injected scenario: ``scenario_id``, ``name``, ``letter``,
    ``techniques``, ``entities`` (``{"kind", "field", "value"}``: the stream and
    field whose value identifies the attacker/victim), ``start``/``end``
    (inclusive, ISO 8601 UTC), ``signals`` (what in the events shows it) and
    ``details``. No events are generated."""
    return Simulation(config).labels()


def write_jsonl(config: SimulationConfig, out_path: str | Path, labels_path: str | Path | None = None) -> dict[str, Any]:
    """Write the run as ECS JSON lines (stream kind in ``event.dataset``) and,
    if asked, the labels as JSON lines: each :func:`labels` record plus
    ``event_count`` and ``event_ids`` (the ``event.id`` of every injected or
    attack-affected event). Returns counts per stream."""
    sim = Simulation(config, wire=True)
    counts = {k: 0 for k in DATASETS}
    tagged: dict[str, list[str]] = {sc.spec.id: [] for sc in sim.scenarios}
    with gc_paused(), open(out_path, "wb", buffering=0) as fh:
        for slice_counts, lines, slice_tagged in sim.lines():
            write_lines(fh, lines)
            for k, v in slice_counts.items():
                counts[k] += v
            for sid, ids in slice_tagged.items():
                tagged[sid] += ids
    if labels_path is not None:
        with open(labels_path, "wb") as fh:
            for rec in sim.labels():
                ids = tagged[rec["scenario_id"]]
                fh.write(orjson.dumps({**rec, "event_count": len(ids), "event_ids": ids}, option=orjson.OPT_APPEND_NEWLINE))
    return {"events": sum(counts.values()), "by_kind": counts, "scenarios": len(sim.scenarios)}


# ------------------------------------------------------------------ Kafka


class ProduceError(UebaError):
    """Producing the simulation to Kafka failed before it started."""


@dataclass
class ProduceReport:
    produced: int = 0
    delivered: int = 0
    errors: int = 0
    seconds: float = 0.0
    first_error: str | None = None
    by_kind: dict[str, int] = field(default_factory=lambda: {k: 0 for k in DATASETS})


class TokenBucket:
    """At most ``rate`` events/s on average, bursts up to ``burst`` events."""

    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ProduceError(f"simulate.rate: {rate!r} must be > 0 events/s")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, rate / 10))
        self._clock, self._sleep = clock, sleep
        self._tokens = self.burst
        self._last = clock()

    def take(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            self._sleep((1.0 - self._tokens) / self.rate)
            self._tokens = 1.0
            self._last = self._clock()
        self._tokens -= 1.0


def produce(config: SimulationConfig, kafka_conf: dict[str, Any], topics: dict[str, str], rate: float | None = None,
            *, time_scale: float | None = None, producer: Any | None = None,
            flush_timeout: float = 30.0) -> ProduceReport:
    """Produce the run straight to Kafka, keyed by each event's identity.

    ``topics`` maps stream kind to topic. ``rate`` caps events/s (token bucket;
    ``None`` = as fast as possible). ``time_scale`` paces by simulated time:
    ``60`` replays one simulated minute per real second (``None`` = no pacing).
    Message timestamps are the events' ``@timestamp``. ``producer`` replaces
    the confluent-kafka Producer (tests).
    """
    missing = [k for k in DATASETS if k not in topics]
    if missing:
        raise ProduceError(f"simulate.topics: no topic for stream(s) {', '.join(missing)}")
    if time_scale is not None and time_scale <= 0:
        raise ProduceError(f"simulate.time_scale: {time_scale!r} must be > 0")
    bucket = TokenBucket(rate) if rate is not None else None
    if producer is None:
        from confluent_kafka import Producer

        producer = Producer({"linger.ms": 20, "compression.type": "lz4", **kafka_conf})
    report = ProduceReport()

    def delivered(err, _msg) -> None:
        if err is None:
            report.delivered += 1
        else:
            report.errors += 1
            if report.first_error is None:
                report.first_error = str(err)

    wall0 = time.monotonic()
    sim0 = config.start_ms
    dumps = orjson.dumps
    for ts_list, kinds, docs, _tags in Simulation(config).slices():
        for t, kind, doc in zip(ts_list, kinds, docs):
            if time_scale is not None:
                wait = wall0 + (t - sim0) / 1000.0 / time_scale - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            if bucket is not None:
                bucket.take()
            key = identity_of(kind, flatten(doc))
            value = dumps(doc)
            while True:
                try:
                    producer.produce(topics[kind], value=value, key=key.encode() if key else None, timestamp=t,
                                     on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.2)
            report.produced += 1
            report.by_kind[kind] += 1
            if report.produced % 1000 == 0:
                producer.poll(0)
    remaining = producer.flush(flush_timeout)
    if remaining:
        report.errors += remaining
        report.first_error = report.first_error or f"{remaining} messages not delivered within {flush_timeout}s"
    report.seconds = time.monotonic() - wall0
    log.info("produced %d events (%d delivered, %d errors) in %.1fs", report.produced, report.delivered,
             report.errors, report.seconds)
    return report
