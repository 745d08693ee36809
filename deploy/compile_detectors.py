"""Compile the detector modules with mypyc: ``make compile``.

Builds C extensions of :data:`detectors._native.MODULES` into
``build/mypyc/`` (or ``UEBA_DETECTORS_BUILD``), never over the sources, and
writes the stamp that lets ``import detectors`` use them only while the
sources are unchanged (see :mod:`detectors._native`). Needs mypy (the
``compile`` extra) and a C compiler. Takes about two minutes here.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    os.environ["UEBA_DETECTORS"] = "pure"  # import the sources' module list, not an old build
    sys.path.insert(0, str(ROOT))
    from detectors import _native

    try:
        from mypyc.build import mypycify
    except ImportError:
        print("compile_detectors: mypy is not installed (pip install -e '.[compile]')", file=sys.stderr)
        return 2
    from setuptools import setup

    out = _native.build_root()
    digest = _native.source_digest()
    stamp = out / "detectors" / _native.STAMP
    if stamp.is_file() and stamp.read_text().strip() == digest:
        print(f"compile_detectors: {out} is up to date")
        return 0
    t0 = time.monotonic()
    os.chdir(ROOT)  # mypycify takes paths relative to the project
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="mypyc-") as tmp:
        exts = mypycify([f"detectors/{m}.py" for m in _native.MODULES], opt_level="3",
                        target_dir=os.path.join(tmp, "c"))
        setup(name="ai-ueba-detectors-compiled", packages=[], ext_modules=exts,
              script_args=["-q", "build_ext", "--build-lib", str(out), "--build-temp", os.path.join(tmp, "o"),
                           "--parallel", str(os.cpu_count() or 1)])
    stamp.write_text(digest + "\n")
    built = len(list((out / "detectors").glob("*.so")))
    print(f"compile_detectors: {built} modules compiled into {out} in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
