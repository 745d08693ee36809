"""The worker's and replay's numeric libraries run one thread each (streams.cli.one_numeric_thread)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, sys
from streams.cli import one_numeric_thread
{before}
one_numeric_thread()
import numpy
from threadpoolctl import threadpool_info
print(json.dumps([p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]))
"""


def _blas_threads(before: str, **env: str) -> list[int]:
    base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], env=base | env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_blas_runs_one_thread_when_set_before_numpy_loads() -> None:
    threads = _blas_threads("")
    assert threads and all(n == 1 for n in threads)


def test_blas_is_limited_when_numpy_was_loaded_first() -> None:
    # numpy loaded (and its pool widened) before the worker's command ran
    threads = _blas_threads("import numpy\nfrom threadpoolctl import threadpool_limits\nthreadpool_limits(2)")
    assert threads and all(n == 1 for n in threads)


def test_a_choice_in_the_environment_is_kept() -> None:
    threads = _blas_threads("", OPENBLAS_NUM_THREADS="2")
    assert threads and all(n == 2 for n in threads)
