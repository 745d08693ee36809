"""Strict YAML reading of rule files, with the line of every key kept.

* Duplicate mapping keys are errors (PyYAML silently keeps the last one).
* Dates stay strings (``date: 2026-01-31`` is not turned into a ``date``), so
  JSON-schema validation sees what the author wrote.
* Every mapping is a :class:`LineDict` remembering the 1-based line of its
  start and of each key; every list a :class:`LineList` remembering the line
  of each item. Error messages use them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import yaml
from jsonschema import Draft202012Validator, FormatChecker

from .errors import RuleIssue

SCHEMA_DIR = Path(__file__).parent / "schemas"
RULE_SUFFIXES = (".yml", ".yaml")
TESTS_SUFFIXES = (".tests.yml", ".tests.yaml")


class LineDict(dict):
    """A dict that knows where it and each of its keys were written."""

    __slots__ = ("line", "key_lines")

    def __init__(self, *a: Any, **kw: Any):
        super().__init__(*a, **kw)
        self.line: int = 0
        self.key_lines: dict[Any, int] = {}

    def line_of(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)


class LineList(list):
    __slots__ = ("line", "item_lines", "item_files")

    def __init__(self, *a: Any):
        super().__init__(*a)
        self.line: int = 0
        self.item_lines: list[int] = []
        self.item_files: list[str] | None = None  # when items come from several files

    def line_of(self, idx: int) -> int:
        return self.item_lines[idx] if 0 <= idx < len(self.item_lines) else self.line


class DuplicateKeyError(yaml.MarkedYAMLError):
    pass


class StrictLoader(yaml.SafeLoader):
    """SafeLoader rejecting duplicate keys and keeping line numbers."""


# Keep dates as the strings the author wrote.
StrictLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
            ) from None
        if key in out:
            raise DuplicateKeyError(
                None, None, f"duplicate key {key!r} (first at line {out.key_lines[key]})", key_node.start_mark
            )
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: StrictLoader, node: yaml.SequenceNode, deep: bool = False) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [child.start_mark.line + 1 for child in node.value]
    return out


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def read_yaml_documents(path: Path) -> tuple[list[Any], list[RuleIssue]]:
    """All YAML documents of one file, or the issue that stopped reading it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [RuleIssue(str(path), None, f"cannot read file: {exc}")]
    try:
        docs = [d for d in yaml.load_all(text, Loader=StrictLoader) if d is not None]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = exc.problem or str(exc)
        prefix = "" if isinstance(exc, DuplicateKeyError) else "invalid YAML: "
        return [], [RuleIssue(str(path), line, f"{prefix}{what}")]
    except yaml.YAMLError as exc:
        return [], [RuleIssue(str(path), 1, f"invalid YAML: {exc}")]
    return docs, []


def expand_paths(paths: list[Path | str]) -> tuple[list[Path], list[Path], list[RuleIssue]]:
    """Rule files and sibling test files under ``paths`` (files or directories), sorted."""
    rules: list[Path] = []
    tests: list[Path] = []
    issues: list[RuleIssue] = []
    if isinstance(paths, (str, Path)):  # a lone path, not a list of them
        paths = [paths]
    for p in map(Path, paths):
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(RULE_SUFFIXES))
        elif p.is_file():
            files = [p]
        else:
            issues.append(RuleIssue(str(p), None, "no such file or directory"))
            continue
        for f in files:
            (tests if f.name.endswith(TESTS_SUFFIXES) else rules).append(f)
    return rules, tests, issues


# --- JSON schema --------------------------------------------------------------


@lru_cache(maxsize=None)
def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=FormatChecker())


def schema_for(doc: dict[str, Any]) -> str:
    if "correlation" in doc:
        return "sigma-correlation-rules-schema.json"
    if "filter" in doc and "detection" not in doc:
        return "sigma-filters-schema.json"
    return "sigma-detection-rule-schema.json"


def line_at(doc: Any, path: Iterator[Any] | list[Any]) -> int:
    """Line of the deepest node of ``path`` that exists in ``doc``."""
    line = getattr(doc, "line", 1) or 1
    cur = doc
    for part in path:
        if isinstance(cur, LineDict) and part in cur:
            line = cur.line_of(part)
            cur = cur[part]
        elif isinstance(cur, LineList) and isinstance(part, int) and 0 <= part < len(cur):
            line = cur.line_of(part)
            cur = cur[part]
        else:
            break
    return line


def _to_plain(obj: Any) -> Any:
    # jsonschema's "type: object/array" checks are exact for dict/list subclasses,
    # but format/uniqueItems work on plain values; be safe.
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_plain(v) for v in obj]
    return obj


def schema_issues(file: str, doc: dict[str, Any]) -> list[RuleIssue]:
    validator = _validator(schema_for(doc))
    out = []
    for err in sorted(validator.iter_errors(_to_plain(doc)), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(str(p) for p in err.absolute_path) or "(rule)"
        msg = err.message
        if len(msg) > 300:
            msg = msg[:300] + "..."
        out.append(RuleIssue(file, line_at(doc, list(err.absolute_path)), f"schema: {where}: {msg}"))
    return out
