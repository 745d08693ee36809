"""One root exception for the project; the CLI catches it once and prints ``diagnostics()``."""

from __future__ import annotations


class UebaError(Exception):
    """Root of every error ai-ueba raises on purpose."""

    def diagnostics(self) -> str:
        return str(self)


class ConfigError(UebaError):
    """A setting is missing, malformed or inconsistent."""


class EventError(UebaError, ValueError):
    """An input event cannot be accepted.

    ``reason`` is a short machine-readable code (``not_json``, ``not_object``,
    ``oversized``, ``invalid``, ``missing_identity``, ``missing_timestamp``,
    ``processing_error``) that goes into the dead-letter record; ``detail`` is
    the human explanation.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
