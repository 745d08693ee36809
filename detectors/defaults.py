"""Which detectors run on which stream, by name.

:func:`detectors.suite.build_suite` resolves these names through
:data:`detectors.base.DETECTORS` at build time and skips names that are not
registered (so a detector module that is absent, or not written yet, does
not break the stream).  Wiring a new detector in is a one-line edit here.
"""

from __future__ import annotations

import importlib

__all__ = ["DEFAULT_DETECTORS", "DEFAULT_MIN_SCORE", "MIN_SCORE", "DETECTOR_MODULES", "load_detectors"]

#: Stream kind -> detector names, in scoring order. ``source`` is the access
#: stream re-keyed by ``source.ip`` (password spraying).
DEFAULT_DETECTORS: dict[str, list[str]] = {
    "access": ["exfiltration", "unusual_access", "credential_abuse"],
    "api": ["api_usage", "api_key_client", "api_extraction"],
    "telemetry": ["telemetry_drift", "telemetry_change"],
    "source": ["password_spraying"],
}

#: A (calibrated) score must reach this (0-100) to become a Finding, unless
#: overridden below. Scores are calibrated per identity-day (see
#: :mod:`detectors.suite`): 99.99 reads "an identity-day this unusual comes up
#: about once in 10,000 identity-days", so the ten or so detectors together stay
#: near one false alert per 1,000 identity-days.
DEFAULT_MIN_SCORE: float = 99.99

#: Per-detector overrides of :data:`DEFAULT_MIN_SCORE`.
MIN_SCORE: dict[str, float] = {}

#: Modules that register detectors. Core ones must import; the others are
#: optional (developed separately) and skipped when absent.
DETECTOR_MODULES: tuple[str, ...] = (
    "detectors.exfiltration",
    "detectors.access",
    "detectors.credential",
    "detectors.usage",
)
OPTIONAL_DETECTOR_MODULES: tuple[str, ...] = (
    "detectors.extraction",
    "detectors.drift",
    "detectors.change",
    "detectors.multivariate",
)


def load_detectors() -> None:
    """Import every detector module so their ``@register`` runs (idempotent)."""
    for mod in DETECTOR_MODULES:
        importlib.import_module(mod)
    for mod in OPTIONAL_DETECTOR_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            # Only "this optional module does not exist" is tolerated; a
            # missing dependency *inside* it is a real error.
            if exc.name != mod:
                raise
