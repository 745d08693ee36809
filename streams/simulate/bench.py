"""Throughput of the simulator: ``python -m streams.simulate.bench``.

Writes the default week (or ``--preset``/``--duration``) to a temporary JSON
lines file and prints events, size, wall and CPU events/s. Runs on one core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from .config import SimulationConfig
from .engine import write_jsonl


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streams.simulate.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="week", choices=("week", "eval", "tiny"))
    ap.add_argument("--duration", default=None, help="override the preset's duration, e.g. 1d")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", metavar="PATH", help="write here instead of a temporary file")
    args = ap.parse_args(argv)
    overrides = {"seed": args.seed}
    if args.duration:
        overrides["duration"] = args.duration
    cfg = SimulationConfig.preset(args.preset, **overrides)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or os.path.join(tmp, "events.jsonl")
        labels = os.path.join(tmp, "labels.jsonl")
        w0, c0 = time.perf_counter(), time.process_time()
        stats = write_jsonl(cfg, out, labels)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        size = os.path.getsize(out)
    n = stats["events"]
    print(f"preset={args.preset} duration={cfg.duration} seed={cfg.seed} humans={cfg.humans} "
          f"service_accounts={cfg.service_accounts} tenants={cfg.tenants} models={cfg.models}")
    print(f"events={n} " + " ".join(f"{k}={v}" for k, v in stats["by_kind"].items()) + f" scenarios={stats['scenarios']}")
    print(f"bytes={size} ({size / max(n, 1):.0f} B/event)")
    print(f"wall={wall:.2f}s {n / wall:,.0f} events/s   cpu={cpu:.2f}s {n / cpu:,.0f} events/s (one core)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
