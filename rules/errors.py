"""Issues found while loading rules, and the one error type raised for them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class RuleIssue:
    """One problem in a rule file.

    ``line`` is 1-based (None only when the file could not be read at all).
    ``severity``: ``error`` makes :meth:`RuleSet.load` fail; ``warning`` is
    reported by ``ueba rules validate`` but does not stop loading.
    """

    file: str
    line: int | None
    message: str
    severity: Severity = "error"
    rule_id: str | None = None

    def __str__(self) -> str:
        loc = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{loc}: {self.severity}: {self.message}"


class RuleLoadError(ValueError):
    """A rule set did not load. ``errors`` holds every issue found (all files)."""

    def __init__(self, errors: list[RuleIssue]):
        self.errors = list(errors)
        n = sum(1 for e in self.errors if e.severity == "error")
        super().__init__(f"{n} error(s) in rule set")

    def diagnostics(self) -> str:
        """Human text for the CLI: one issue per line, errors first."""
        ordered = sorted(self.errors, key=lambda i: (i.severity != "error", i.file, i.line or 0))
        return "\n".join(str(i) for i in ordered)
