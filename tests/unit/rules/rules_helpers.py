"""Helpers for the rules tests: build rule files from compact specs."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
FILES = REPO / "tests" / "files" / "rules"
PACK = REPO / "rules" / "sigma"
NS = uuid.UUID("0e4b7f0e-9a43-4c35-9d0e-7b1f6c2a5d11")


def rule_doc(key: str, detection: dict[str, Any], **extra: Any) -> dict[str, Any]:
    doc = {
        "title": key[:200],
        "id": str(uuid.uuid5(NS, key)),
        "status": "test",
        "level": "medium",
        "logsource": {"product": "ai-ueba"},
        "detection": detection,
    }
    doc.update(extra)
    return doc


def write_rules(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path

