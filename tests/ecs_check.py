"""Validate documents against the authoritative ECS field list
(``../shared/ecs/ecs_flat-9.4.0.yml`` beside the repository): every ECS field
present has the ECS type and allowed values, arrays only where ECS allows
them, and custom fields live only under ``ueba.*`` (plus ``data_stream.*``,
which Elastic's data-stream convention adds)."""

from __future__ import annotations

import functools
import ipaddress
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
ECS_YML = ROOT.parent / "shared" / "ecs" / "ecs_flat-9.4.0.yml"
CUSTOM_PREFIXES = ("ueba.",)


@functools.lru_cache(maxsize=1)
def ecs_fields() -> dict[str, dict[str, Any]]:
    with open(ECS_YML) as fh:
        return yaml.load(fh, Loader=yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader)


def _flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        name = prefix + k
        if isinstance(v, dict) and v and not name.startswith(CUSTOM_PREFIXES) and name not in ecs_fields():
            out.update(_flatten(v, name + "."))
        elif isinstance(v, dict) and name.startswith(CUSTOM_PREFIXES):
            out[name] = v
        else:
            out[name] = v
    return out


def _type_ok(ecs_type: str, v: Any) -> bool:
    if v is None:
        return True
    if ecs_type in ("keyword", "constant_keyword", "wildcard", "text", "match_only_text", "flattened"):
        return isinstance(v, str) if ecs_type != "flattened" else isinstance(v, dict)
    if ecs_type in ("long", "integer", "short", "byte", "unsigned_long"):
        return isinstance(v, int) and not isinstance(v, bool)
    if ecs_type in ("float", "double", "scaled_float", "half_float"):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if ecs_type == "boolean":
        return isinstance(v, bool)
    if ecs_type == "date":
        if not isinstance(v, str):
            return False
        try:
            datetime.fromisoformat(v.replace("Z", "+00:00"))
            return True
        except ValueError:
            return False
    if ecs_type == "ip":
        try:
            ipaddress.ip_address(v)
            return True
        except (ValueError, TypeError):
            return False
    if ecs_type == "geo_point":
        return isinstance(v, dict) and {"lat", "lon"} <= set(v)
    if ecs_type in ("object", "nested"):
        return isinstance(v, (dict, list))
    return True


def validate(doc: dict[str, Any]) -> list[str]:
    """Problems found in ``doc`` (empty list = conforms)."""
    fields = ecs_fields()
    problems: list[str] = []
    for name, value in _flatten(doc).items():
        if name.startswith(CUSTOM_PREFIXES):
            continue
        if name.startswith("data_stream."):
            if name not in fields:
                problems.append(f"{name}: not an ECS data_stream field")
            continue
        spec = fields.get(name)
        if spec is None:
            problems.append(f"{name}: not an ECS field and not under the custom namespace ueba.*")
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(value, list) and "array" not in (spec.get("normalize") or []) and spec["type"] not in ("object", "nested"):
            problems.append(f"{name}: ECS does not declare it an array")
        for v in values:
            if not _type_ok(spec["type"], v):
                problems.append(f"{name}: {v!r} is not of ECS type {spec['type']}")
        allowed = spec.get("allowed_values")
        if allowed:
            names = {a["name"] for a in allowed}
            for v in values:
                if v not in names:
                    problems.append(f"{name}: {v!r} is not an allowed value ({', '.join(sorted(names))})")
    return problems
