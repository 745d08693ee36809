"""Operator policy: thresholds, allow-lists, suppression, learning mode, risk.

Loaded from a YAML file (``UEBA_WORKER__POLICY_FILE``) strictly: unknown keys,
duplicate keys and malformed values are errors with the file named. The same
policy drives the stream and replay.

Example::

    thresholds:
      default: 50            # minimum 0-100 score to alert
      detectors: {exfil_volume: 60}
      rules: {"b2d5f3c1-...": 80}
    allow:
      identities: [svc-backup]       # never alert on these entities
      ips: [10.0.0.5]
      cidrs: [192.168.0.0/16]
      rules: [ueba-first_seen_api]   # rule ids / detector rule ids switched off
    suppression:
      window_seconds: 3600           # same rule + entity within this => one alert with a count
    learning:
      until: 2026-12-01T00:00:00Z    # declared cold start: detector alerts are held back (rules still fire)
    risk:
      half_life_hours: 24
      levels: {moderate: 25, high: 50, critical: 75}
      criticality:
        entity_types: {model: 1.5, service_account: 1.2}
        entities: {"user:root-admin": 2.0}
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(_Strict):
    default: float = Field(50.0, ge=0, le=100)
    detectors: dict[str, float] = {}
    rules: dict[str, float] = {}

    def for_source(self, source: str, rule_id: str) -> float:
        kind, _, name = source.partition(":")
        if kind == "detector" and name in self.detectors:
            return self.detectors[name]
        if rule_id in self.rules:
            return self.rules[rule_id]
        return self.default


class AllowList(_Strict):
    identities: frozenset[str] = frozenset()
    ips: frozenset[str] = frozenset()
    cidrs: tuple[str, ...] = ()
    rules: frozenset[str] = frozenset()

    @field_validator("cidrs")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for c in v:
            ipaddress.ip_network(c, strict=False)
        return v

    @cached_property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.cidrs)

    def allows_ip(self, ip: str | None) -> bool:
        if not ip:
            return False
        if ip in self.ips:
            return True
        if not self.networks:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in n for n in self.networks)


class Suppression(_Strict):
    window_seconds: float = Field(3600.0, ge=0)


class Learning(_Strict):
    until: datetime | None = None

    def active(self, ts: float) -> bool:
        if self.until is None:
            return False
        until = self.until if self.until.tzinfo else self.until.replace(tzinfo=timezone.utc)
        return ts < until.timestamp()


class RiskLevels(_Strict):
    moderate: float = 25.0
    high: float = 50.0
    critical: float = 75.0


class Criticality(_Strict):
    entity_types: dict[str, float] = {}
    entities: dict[str, float] = {}

    def of(self, entity_type: str, entity: str) -> float:
        return self.entities.get(f"{entity_type}:{entity}", self.entity_types.get(entity_type, 1.0))


class RiskPolicy(_Strict):
    half_life_hours: float = Field(24.0, gt=0)
    levels: RiskLevels = RiskLevels()
    criticality: Criticality = Criticality()

    def level_of(self, score: float) -> str:
        lv = self.levels
        if score >= lv.critical:
            return "critical"
        if score >= lv.high:
            return "high"
        if score >= lv.moderate:
            return "moderate"
        return "low"


class Policy(_Strict):
    thresholds: Thresholds = Thresholds()
    allow: AllowList = AllowList()
    suppression: Suppression = Suppression()
    learning: Learning = Learning()
    risk: RiskPolicy = RiskPolicy()

    @classmethod
    def load(cls, path: Path | str | None) -> "Policy":
        if path is None:
            return cls()
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"policy file {path}: {exc.strerror}") from None
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"policy file {path}: {exc}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False))
            raise ConfigError(f"policy file {path}: {problems}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (a silent override is a misconfiguration)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
