"""Sigma placeholders: operator-supplied value lists for ``field|expand: '%name%'``.

A rule refers to a list the operator maintains (the registry of sanctioned
models and inference endpoints, say) through Sigma's ``expand`` modifier::

    filter_registered:
      url.domain|expand: '%registered_endpoints%'

At load, the placeholder is replaced by the list's values, as pySigma's
``ValueListPlaceholderTransformation`` does with a processing pipeline's
``vars``: each value is a Sigma string (``*`` and ``?`` are wildcards, ``\\``
escapes them), matched with the item's other modifiers and Sigma's usual
case-insensitivity; several values are OR-ed. A list with no values matches
nothing. Without ``expand``, ``%name%`` is literal text (Sigma semantics).

Placeholder files
-----------------
YAML with the ``vars`` mapping of a pySigma processing pipeline, so the same
file can feed ``sigma convert`` for another backend::

    # registry.placeholders.yml
    name: our AI registry          # optional
    vars:
      registered_endpoints:
        - '*.ai-platform.internal'
        - bedrock-runtime.eu-west-1.amazonaws.com
      registered_models: [fraud-v3, churn-v1]

Where they come from, later ones replacing earlier definitions of a name
(whole lists, not merged):

1. :data:`DEFAULT_FILE`, shipped with the pack: example values, so the pack
   loads and its tests run out of the box;
2. every ``*.placeholders.yml`` / ``*.placeholders.yaml`` under the rule paths
   (``ueba rules ... PATH``, ``UEBA_WORKER__RULES_PATHS``), in path order;
3. the files given to ``RuleSet.load(..., placeholders=[...])`` /
   ``RuleRunner(placeholders=...)``.

A rule using a name no file defines fails to load (file and line in the
error). Placeholder files are watched like rule files: editing the registry
reloads the rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RuleIssue
from .loader import LineDict, LineList, read_yaml_documents

DEFAULT_FILE = Path(__file__).parent / "registry.placeholders.yml"
SUFFIXES = (".placeholders.yml", ".placeholders.yaml")
_NAME = re.compile(r"[^%\\]+")
_KEYS = {"vars", "name", "description", "priority"}
#: most values one item value may expand to (pySigma stops at 200; registries are longer)
MAX_EXPANSIONS = 100_000


@dataclass(slots=True)
class Placeholders:
    """Placeholder name -> values, and where each name was (last) defined."""

    values: dict[str, list[str]] = field(default_factory=dict)
    defined_in: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)


def is_placeholder_file(path: Path) -> bool:
    return path.name.endswith(SUFFIXES)


def load_placeholders(files: list[Path | str]) -> tuple[Placeholders, list[RuleIssue]]:
    """Read placeholder files in order; later definitions of a name win."""
    out = Placeholders()
    issues: list[RuleIssue] = []
    seen: set[Path] = set()
    for f in map(Path, files):
        key = f.resolve() if f.exists() else f
        if key in seen:
            continue
        seen.add(key)
        if not f.is_file():
            issues.append(RuleIssue(str(f), None, "placeholder file: no such file"))
            continue
        docs, errs = read_yaml_documents(f)
        issues.extend(errs)
        if errs:
            continue
        out.files.append(str(f))
        if len(docs) != 1 or not isinstance(docs[0], LineDict):
            issues.append(RuleIssue(str(f), 1, "a placeholder file is one YAML mapping with a 'vars' mapping"))
            continue
        doc = docs[0]
        for k in doc:
            if k not in _KEYS:
                issues.append(RuleIssue(str(f), doc.line_of(k), f"placeholder file: unknown key {k!r} (expected 'vars')"))
        vars_ = doc.get("vars")
        if not isinstance(vars_, LineDict):
            issues.append(RuleIssue(str(f), doc.line_of("vars"), "placeholder file: 'vars' must map placeholder names to value lists"))
            continue
        for name, vals in vars_.items():
            line = vars_.line_of(name)
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                issues.append(RuleIssue(str(f), line, f"placeholder name {name!r} is not valid (no '%' or '\\')"))
                continue
            if vals is None:
                vals = []
            if not isinstance(vals, list):
                vals = [vals]
            bad = [v for v in vals if isinstance(v, bool) or not isinstance(v, (str, int, float))]
            if bad:
                at = vals.line_of(vals.index(bad[0])) if isinstance(vals, LineList) else line
                issues.append(RuleIssue(str(f), at, f"placeholder {name!r}: values must be strings or numbers, not {bad[0]!r}"))
                continue
            out.values[name] = [str(v) for v in vals]
            out.defined_in[name] = f"{f}:{line}"
    return out, issues


def expand_value(value: Any, placeholders: Placeholders, used: set[str] | None = None) -> list[Any]:
    """The SigmaStrings one item value with placeholders expands to (``[value]``
    when it has none). Raises ``KeyError(name)`` for an undefined placeholder and
    ``ValueError`` for placeholders where they are not supported."""
    from sigma.types import Placeholder, SigmaCasedString, SigmaRegularExpression, SigmaString

    if isinstance(value, SigmaRegularExpression):
        if value.regexp.contains_placeholder():
            raise ValueError("unsupported: placeholders in regular expressions (use a plain or wildcard value)")
        return [value]
    if not isinstance(value, SigmaString) or not value.contains_placeholder():
        return [value]

    results = [SigmaString("")]
    for part in value.s:
        if isinstance(part, Placeholder):
            vals = placeholders.values.get(part.name)
            if vals is None:
                raise KeyError(part.name)
            if used is not None:
                used.add(part.name)
            results = [r + SigmaString(v) for r in results for v in vals]
            if len(results) > MAX_EXPANSIONS:
                raise ValueError(f"placeholders of one value expand to more than {MAX_EXPANSIONS} values")
        else:
            results = [r + part for r in results]
    if isinstance(value, SigmaCasedString):
        results = [SigmaCasedString.from_sigma_string(r) for r in results]
    return results


__all__ = ["DEFAULT_FILE", "SUFFIXES", "Placeholders", "expand_value", "is_placeholder_file", "load_placeholders"]
