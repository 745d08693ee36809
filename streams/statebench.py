"""State benchmark: ``python -m streams.statebench [--identities 1000000]``.

Answers "does a million identities fit in one worker's RocksDB store, and what
does the in-memory state cache cost?" with real states, not made-up bytes:

1. replays a simulated day through the same per-stream detector suites the
   worker runs and keeps every identity's final state envelope (real sizes);
2. writes ``--identities`` keys into one RocksDB database opened with Faust's
   own options (``faust.stores.rocksdb.RocksDBOptions``, as a table partition
   is), in write batches as changelog recovery does, drawing the values from
   the real states (each value gets its own key, so nothing dedupes);
3. prints bytes per identity (values and on disk), write and random-read rates,
   and the process RSS;
4. measures the worker's decoded-state cache: memory per cached identity with
   the default bound (``worker.state_cache_keys``).

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _real_states(seed: int) -> dict[str, list[bytes]]:
    """Final state envelopes of every identity of a simulated day, per stream."""
    from detectors.suite import build_suite

    from .events import parse_event
    from .pipeline import InputProcessor
    from .simulate import SimulationConfig, simulate

    import orjson

    procs = {k: InputProcessor(k, build_suite(k), min_score=101) for k in ("access", "api", "telemetry")}
    stores: dict[str, dict[bytes, bytes]] = {k: {} for k in procs}
    for pos, (kind, doc) in enumerate(simulate(SimulationConfig.preset("tiny", seed=seed))):
        procs[kind].process(stores[kind], parse_event(kind, orjson.dumps(doc)), pos)
    return {k: list(v.values()) for k, v in stores.items()}


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def rocksdb_figures(values: list[bytes], n: int, batch: int = 10_000) -> dict[str, float]:
    from faust.stores.rocksdb import RocksDBOptions

    import rocksdict

    tmp = Path(tempfile.mkdtemp(prefix="ueba-statebench-"))
    try:
        db = RocksDBOptions().open(tmp / "state-access-0.db")
        rng = random.Random(1)
        t0 = time.perf_counter()
        value_bytes = 0
        for start in range(0, n, batch):
            wb = rocksdict.WriteBatch(raw_mode=True)
            for i in range(start, min(n, start + batch)):
                v = values[rng.randrange(len(values))]
                value_bytes += len(v)
                wb.put(f"user-{i:08d}@tenant-{i % 997}".encode(), v)
            db.write(wb)
        db.flush()
        write_s = time.perf_counter() - t0
        sample = [rng.randrange(n) for _ in range(50_000)]
        t0 = time.perf_counter()
        found = 0
        for i in sample:
            if db.get(f"user-{i:08d}@tenant-{i % 997}".encode()) is not None:
                found += 1
        read_s = time.perf_counter() - t0
        db.close()
        disk = _du(tmp)
        return {
            "identities": n,
            "value_bytes_per_identity": value_bytes / n,
            "disk_bytes_per_identity": disk / n,
            "disk_mib": disk / 2**20,
            "writes_per_s": n / write_s,
            "random_reads_per_s": len(sample) / read_s,
            "found": found / len(sample),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cache_figures(values: list[bytes], kind: str, keys: int) -> dict[str, float]:
    """Python memory of ``keys`` decoded states in the worker's state cache."""
    from detectors.suite import build_suite

    from .pipeline import InputProcessor

    proc = InputProcessor(kind, build_suite(kind), cache_keys=keys)
    store = {f"id-{i}".encode(): values[i % len(values)] for i in range(keys)}
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    assert proc.cache is not None
    for k in store:
        proc.cache.get(store, k)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return {"keys": keys, "bytes_per_cached_identity": (after - before) / keys, "cache_mib": (after - before) / 2**20}


def main(argv: list[str] | None = None) -> None:
    from .settings import WorkerSettings

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--identities", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    states = _real_states(args.seed)
    print(f"real states from a simulated day ({time.perf_counter() - t0:.0f} s):")
    for kind, vals in states.items():
        sizes = sorted(len(v) for v in vals)
        print(f"  {kind:9s} {len(vals):5d} identities, envelope bytes median {sizes[len(sizes) // 2]:,}, max {sizes[-1]:,}")
    # the access stream carries the most identities (people and service accounts)
    r = rocksdb_figures(states["access"], args.identities)
    print(
        f"RocksDB (Faust's options), {r['identities']:,} access identities: "
        f"{r['value_bytes_per_identity']:,.0f} B of state and {r['disk_bytes_per_identity']:,.0f} B on disk per identity "
        f"({r['disk_mib']:,.0f} MiB; copies of {len(states['access'])} real states compress better than distinct ones would, "
        f"so the state bytes are the honest bound), {r['writes_per_s']:,.0f} writes/s in batches, "
        f"{r['random_reads_per_s']:,.0f} random reads/s ({r['found']:.0%} found); peak RSS {_rss_mib():,.0f} MiB"
    )
    bound = WorkerSettings().state_cache_keys
    for kind in ("access", "api", "telemetry"):
        c = cache_figures(states[kind], kind, bound)
        print(f"state cache ({kind}): {c['keys']:,} decoded identities cost {c['cache_mib']:,.1f} MiB ({c['bytes_per_cached_identity']:,.0f} B each)")


if __name__ == "__main__":
    main()
