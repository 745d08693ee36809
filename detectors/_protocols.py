"""Typing Protocols of the detector contract (see :mod:`detectors.base`).

Kept out of the mypyc-compiled modules: mypyc compiles a Protocol into a class
``typing.runtime_checkable`` rejects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .base import Score


@runtime_checkable
class StreamingDetector(Protocol):
    """Per-entity streaming detector. See the module docstring for the contract."""

    name: ClassVar[str]

    def learn_one(self, x: dict[str, Any], ts: float) -> None: ...

    def score_one(self, x: dict[str, Any], ts: float) -> Score: ...

    def to_bytes(self) -> bytes: ...


@runtime_checkable
class BatchDetector(Protocol):
    """Batch detector for notebooks: same scores as the streaming path where both exist."""

    def fit(self, X: Any) -> "BatchDetector": ...

    def decision_function(self, X: Any) -> Any: ...
