"""Run a simulation: hour slices in time order, each slice's events from every
generator merged and sorted, then stamped (``@timestamp``, ``event.id``).

Memory is bounded by one hour of events (plus the few attack events planned
up front), so a run can be arbitrarily long.
"""

from __future__ import annotations

import gc
import logging
import time
from contextlib import contextmanager
from itertools import chain
from operator import itemgetter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import orjson

from ..errors import EventError, UebaError
from ..events import flatten, identity_of
from .config import SimulationConfig
from .generate import Batch, HumanTraffic, JsonCache, ModelDeploys, ServiceTraffic, TenantTraffic, hex_ids
from .scenarios import SCENARIOS, Scenario, plan_scenarios
from .world import HOUR_MS, World, build_world

log = logging.getLogger("streams.simulate")

DATASETS: dict[str, str] = {"access": "ueba.access", "api": "ueba.api", "telemetry": "ueba.telemetry"}
_KIND_OF_DATASET = {v: k for k, v in DATASETS.items()}
SLICE_MS = HOUR_MS


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
        tenants = TenantTraffic(self.world)
        ids = list(SCENARIOS) if config.scenarios is None else list(config.scenarios)
        self.scenarios: list[Scenario] = plan_scenarios(self.world, tenants, ids)
        tenants.wire = self.wire  # attack traffic planned above is always built as documents
        self.generators = [ModelDeploys(self.world), HumanTraffic(self.world), ServiceTraffic(self.world), tenants,
                           *self.scenarios]
        self._id_prefix = f"{(config.seed * 2654435761) & 0xFFFFFF:06x}"

    def _merged(self) -> Iterator[tuple[np.ndarray, list[str], list[Any], list[str | None] | None]]:
        """Per hour slice: sorted timestamps (ms), kinds, documents and tags, in time order."""
        start, end = self.config.start_ms, self.config.end_ms
        for si, t0 in enumerate(range(start, end, SLICE_MS)):
            t1 = min(t0 + SLICE_MS, end)
            batches: list[Batch] = [g.generate(si, t0, t1) for g in self.generators]
            ts = np.concatenate([b.ts for b in batches])
            if not len(ts):
                continue
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
            if self.wire is not None:
                docs = _as_wire(batches, docs)
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

    def lines(self) -> Iterator[tuple[list[str], bytes, list[bytes], list[str | None] | None]]:
        """Per hour: kinds, the JSON lines (one bytes blob), event ids and tags, in time order.

        Same events as :meth:`slices` (parsed back they are equal), several
        times faster to produce.
        """
        n_done = 0
        prefix = self._id_prefix.encode()
        head, tail = itemgetter(0), itemgetter(1)
        for _ts, kinds, docs, tags in self._merged():
            ids = hex_ids(prefix, n_done, len(docs))
            blob = b"".join(chain.from_iterable(zip(map(head, docs), ids, map(tail, docs))))
            n_done += len(docs)
            yield kinds, blob, ids, tags

    def labels(self) -> list[dict[str, Any]]:
        return [sc.label() for sc in self.scenarios]


def _as_wire(batches: list[Batch], docs: list[Any]) -> list[Any]:
    """Render the documents of dict-building generators to the wire form
    ``(line up to event.id's value, rest of the line)`` used by the others."""
    out: list[Any] = []
    dumps, opt = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    pos = 0
    for b in batches:
        n = len(b.docs)
        if n and type(b.docs[0]) is dict:
            for d, stamp in zip(b.docs, np.datetime_as_string(b.ts.astype("datetime64[ms]"), unit="ms",
                                                              timezone="UTC").tolist()):
                d["@timestamp"] = stamp
                d["event"]["id"] = ""
                # event is the 2nd key and id its last, so the first '"id":""' is event.id
                before, _sep, after = dumps(d, option=opt).partition(b'"id":""')
                out.append((before + b'"id":"', b'"' + after))
        else:
            out.extend(docs[pos:pos + n])
        pos += n
    return out


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
    with gc_paused(), open(out_path, "wb", buffering=1 << 20) as fh:
        for kinds, blob, ids, tags in sim.lines():
            fh.write(blob)
            for k in DATASETS:
                counts[k] += kinds.count(k)
            if tags is not None:
                for i, t in zip(ids, tags):
                    if t is not None:
                        tagged[t].append(i.decode())
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
