"""What a simulation run is: one frozen, validated settings object."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from ..errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

#: Shortest run that fits every attack window after the warm-up.
MIN_ATTACK_DURATION_S = 6 * 3600

#: A Monday, so a default run starts with a working week.
DEFAULT_START = datetime(2026, 1, 5, tzinfo=timezone.utc)


def parse_duration(text: str | timedelta | int | float) -> float:
    """``"90m"``, ``"1d"``, ``"7d"``, ``"2w"``, a timedelta, or seconds -> seconds."""
    if isinstance(text, timedelta):
        seconds = text.total_seconds()
    elif isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str):
        m = _DURATION.match(text)
        if not m:
            raise ConfigError(f"simulate.duration: {text!r} is not a duration like '90m', '1d' or '7d'")
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ConfigError(f"simulate.duration: {text!r} is not a duration")
    if seconds < 60:
        raise ConfigError(f"simulate.duration: {text!r} is shorter than one minute")
    return seconds


def _parse_start(value: datetime | str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"simulate.start: {value!r} is not an ISO 8601 time") from None
    if not isinstance(value, datetime):
        raise ConfigError(f"simulate.start: {value!r} is not a datetime")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines a simulated data set.

    The same config (including ``seed``) always gives byte-identical output.
    ``duration`` is a string like ``"1d"``/``"7d"``, a timedelta or seconds.
    ``scenarios`` lists scenario ids or letters (``"a"``..``"h"``, see
    :data:`streams.simulate.scenarios.SCENARIOS`); ``None`` injects all, an
    empty tuple none. ``attack_intensity`` scales attack rates and counts
    (1.0 = the documented figures). Attacks start after ``warmup`` (a fraction
    of the run) so detectors see a clean baseline first.
    """

    seed: int = 7
    start: datetime | str = DEFAULT_START
    duration: str | timedelta | float = "7d"
    humans: int = 200
    service_accounts: int = 30
    tenants: int = 60
    models: int = 12
    scenarios: tuple[str, ...] | None = None
    attack_intensity: float = 1.0
    warmup: float = 0.4
    duration_s: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"simulate.seed: {self.seed!r} is not a non-negative integer")
        object.__setattr__(self, "start", _parse_start(self.start))
        object.__setattr__(self, "duration_s", parse_duration(self.duration))
        for name, low in (("humans", 10), ("service_accounts", 4), ("tenants", 4), ("models", 3)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low or value > 1_000_000:
                raise ConfigError(f"simulate.{name}: {value!r} is not an integer in [{low}, 1000000]")
        if not 0 < float(self.attack_intensity) <= 100:
            raise ConfigError(f"simulate.attack_intensity: {self.attack_intensity!r} is not in (0, 100]")
        if not 0 <= float(self.warmup) <= 0.8:
            raise ConfigError(f"simulate.warmup: {self.warmup!r} is not in [0, 0.8]")
        if self.scenarios is not None:
            from .scenarios import resolve_scenarios

            object.__setattr__(self, "scenarios", tuple(resolve_scenarios(self.scenarios)))
        if self.scenarios != () and self.duration_s < MIN_ATTACK_DURATION_S:
            raise ConfigError(f"simulate.duration: {self.duration!r} is too short to inject attacks "
                              f"(at least 6h, or pass scenarios=() for baseline only)")

    @property
    def start_ms(self) -> int:
        return int(self.start.timestamp() * 1000)  # type: ignore[union-attr]

    @property
    def end_ms(self) -> int:
        return self.start_ms + int(self.duration_s * 1000)

    def with_(self, **changes) -> "SimulationConfig":
        return replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides) -> "SimulationConfig":
        """Named sizes: ``week`` (the default, ~1.9M events), ``eval`` (~145k events
        over 3 days, the small evaluation set) and ``tiny`` (~86k events over two
        days, attacks on the second: the demo and unit tests).

        Every preset gives the detectors at least a day of attack-free history:
        their scores are calibrated against what each peer group did over a full
        daily cycle (``detectors.suite``), so nothing can be called rare before."""
        try:
            base = _PRESETS[name]
        except KeyError:
            raise ConfigError(f"simulate.preset: {name!r} is not one of {', '.join(_PRESETS)}") from None
        return cls(**{**base, **overrides})


_PRESETS: dict[str, dict] = {
    "week": {},
    "eval": {"duration": "3d", "humans": 60, "service_accounts": 12, "tenants": 8, "models": 6},
    "tiny": {"duration": "2d", "warmup": 0.55, "humans": 20, "service_accounts": 6, "tenants": 5, "models": 4},
}
