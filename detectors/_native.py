"""Compiled detectors: which build of this package runs, and how it is found.

The detector modules are plain Python that mypyc (part of mypy) can compile
to C extensions, 1.5-2.5x faster per event (``python -m detectors.bench``
prints which build it measured). ``make compile`` (``deploy/compile_detectors.py``)
builds them into ``build/mypyc/`` beside the package, never over the sources,
and stamps the build with a digest of the sources it compiled.

On import, :func:`activate` puts that build in front of the package's
``__path__`` when the environment allows it and the stamp matches the
sources now on disk, so a stale build is never run:

``UEBA_DETECTORS=auto`` (the default)
    the compiled build if a current one exists, else the sources (a stale
    build is reported with a warning);
``UEBA_DETECTORS=pure``
    always the sources (what the tests run a second time);
``UEBA_DETECTORS=compiled``
    the compiled build, or an ImportError saying how to build it.

Modules missing from the build (:data:`UNCOMPILED`) load from the sources
either way. Both builds read and write the same state bytes (tested).
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from pathlib import Path

#: The modules mypyc compiles, in dependency order.
MODULES: tuple[str, ...] = (
    "flat", "stats", "_tails", "baseline", "calibration", "peers", "base", "access", "exfiltration", "credential",
    "usage", "extraction", "drift", "change", "multivariate", "suite", "defaults",
)
#: Kept as Python: numpy-vectorised (batch), the benchmark, the Protocols and
#: msgspec Structs mypyc cannot compile faithfully, and this module.
UNCOMPILED: tuple[str, ...] = ("batch", "bench", "_protocols", "_states", "_native")

PKG = Path(__file__).resolve().parent
STAMP = "SOURCES"


def build_root() -> Path:
    """Where the compiled build lives (``UEBA_DETECTORS_BUILD``, default ``build/mypyc`` beside the package)."""
    env = os.environ.get("UEBA_DETECTORS_BUILD")
    return Path(env) if env else PKG.parent / "build" / "mypyc"


def source_digest() -> str:
    """SHA-256 over the compiled modules' sources and the interpreter's ABI."""
    h = hashlib.sha256(sys.implementation.cache_tag.encode())
    for name in MODULES:
        h.update(name.encode() + b"\0" + (PKG / f"{name}.py").read_bytes() + b"\0")
    return h.hexdigest()


def activate(pkg_path: list[str]) -> str:
    """Put a current compiled build in front of ``pkg_path`` (the package's
    ``__path__``) if ``UEBA_DETECTORS`` allows; return ``"compiled"`` or ``"pure"``."""
    mode = os.environ.get("UEBA_DETECTORS", "auto").strip().lower() or "auto"
    if mode not in ("auto", "pure", "compiled"):
        raise ImportError(f"UEBA_DETECTORS must be auto, pure or compiled, not {mode!r}")
    if mode == "pure":
        return "pure"
    root = build_root()
    stamp = root / "detectors" / STAMP
    try:
        built = stamp.read_text().strip()
    except OSError:
        built = None
    if built != source_digest():
        if mode == "compiled":
            why = "no compiled build" if built is None else "the compiled build is of other sources"
            raise ImportError(f"UEBA_DETECTORS=compiled but {why} in {root}: run `make compile`")
        if built is not None:
            warnings.warn(f"ignoring the compiled detectors in {root}: they were built from other sources "
                          "(run `make compile` again); running the Python sources", RuntimeWarning, stacklevel=3)
        return "pure"
    pkg_path.insert(0, str(root / "detectors"))
    if str(root) not in sys.path:
        sys.path.append(str(root))  # mypyc's shared library module sits at the build's top level
    return "compiled"
