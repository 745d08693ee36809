"""Throughput of the simulator: ``python -m streams.simulate.bench``.

Writes the default week (or ``--preset``/``--duration``) to a temporary JSON
lines file, as ``ueba simulate -o`` does, and prints events, size, and
events/s to the file by wall clock and by CPU time (user + system: the disk
writes' kernel time counts). The simulator is single-threaded, so that is one
core; ``--cpu N`` also pins it to core ``N``. On a shared machine the wall
figure depends on what else runs: ``--repeat`` runs several times and
reports the best and the median. Each run prints the machine speed
reference measured just after it (ns per ``x += 1``), so runs on a loaded
machine can be told apart. Issue 7's target is ``TARGET_EVENTS_PER_S`` on one
core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from detectors.bench import speed_reference

from .config import SimulationConfig
from .engine import write_jsonl

TARGET_EVENTS_PER_S = 200_000


def run_once(cfg: SimulationConfig, directory: str | None, keep: str | None) -> dict:
    """One write of ``cfg``: events, bytes, wall and CPU seconds."""
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        out = keep or os.path.join(tmp, "events.jsonl")
        labels = os.path.join(tmp, "labels.jsonl")
        w0, c0 = time.perf_counter(), time.process_time()
        stats = write_jsonl(cfg, out, labels)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        size = os.path.getsize(out)
    return {**stats, "bytes": size, "wall": wall, "cpu": cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streams.simulate.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="week", choices=("week", "eval", "tiny"))
    ap.add_argument("--duration", default=None, help="override the preset's duration, e.g. 1d")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=1, help="runs; best and median are reported")
    ap.add_argument("--cpu", type=int, default=None, help="pin the process to this core first")
    ap.add_argument("--dir", default=None, help="directory of the temporary file (default: the system's)")
    ap.add_argument("--keep", metavar="PATH", help="write here instead of a temporary file")
    args = ap.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    overrides = {"seed": args.seed}
    if args.duration:
        overrides["duration"] = args.duration
    cfg = SimulationConfig.preset(args.preset, **overrides)
    print(f"preset={args.preset} duration={cfg.duration} seed={cfg.seed} humans={cfg.humans} "
          f"service_accounts={cfg.service_accounts} tenants={cfg.tenants} models={cfg.models}"
          + (f" cpu={args.cpu}" if args.cpu is not None else ""))
    runs = []
    for i in range(max(1, args.repeat)):
        r = run_once(cfg, args.dir, args.keep)
        runs.append(r)
        n = r["events"]
        if i == 0:
            print(f"events={n} " + " ".join(f"{k}={v}" for k, v in r["by_kind"].items()) + f" scenarios={r['scenarios']}")
            print(f"bytes={r['bytes']} ({r['bytes'] / max(n, 1):.0f} B/event)")
        print(f"wall={r['wall']:.2f}s {n / r['wall']:,.0f} events/s   cpu={r['cpu']:.2f}s {n / r['cpu']:,.0f} events/s"
              f" (one core; machine speed reference {speed_reference():.1f} ns per 'x += 1')")
    if len(runs) > 1:
        n = runs[0]["events"]
        for what in ("wall", "cpu"):
            rates = [n / r[what] for r in runs]
            print(f"{what}: best {max(rates):,.0f} events/s, median {statistics.median(rates):,.0f} events/s "
                  f"over {len(runs)} runs")
    median_cpu = statistics.median(runs[0]["events"] / r["cpu"] for r in runs)
    print(f"target >= {TARGET_EVENTS_PER_S:,} events/s on one core (median by CPU time): "
          f"{'met' if median_cpu >= TARGET_EVENTS_PER_S else 'missed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
