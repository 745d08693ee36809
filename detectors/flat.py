"""The flat view of an event that every detector reads.

Detectors take ``flat``: a dict of dotted ECS field names (``"user.name"``,
``"source.geo.country_iso_code"``) to values. :func:`flatten` makes it from a
nested document (an ECS event as shippers write it), so notebooks can feed
their own documents to ``score_one``/``learn_one`` exactly as the stream does.
It runs on every event the worker reads, and mypyc compiles it with the
detectors (about 1.8x faster than the same Python).

>>> flatten({"user": {"name": "ana"}, "features": {"a.b": 1}, "tags": ["x"]})
{'user.name': 'ana', 'features': {'a.b': 1}, 'tags': ['x']}
>>> has_dotted_keys({"@timestamp": 1, "user.name": "ana"}), has_dotted_keys({"@timestamp": 1, "user": {}})
(True, False)
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["FLAT_LEAVES", "flatten", "has_dotted_keys"]

#: Objects kept whole in the flat view: maps of user-chosen names (a model's
#: feature statistics and histograms), not ECS fields.
FLAT_LEAVES: Final = frozenset(("features", "histograms"))


def _flatten_into(d: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for k, v in d.items():
        if type(v) is dict and v and k not in FLAT_LEAVES:
            _flatten_into(v, prefix + k + ".", out)
        else:
            out[prefix + k] = v


def flatten(doc: dict[str, Any]) -> dict[str, Any]:
    """Dotted view of a nested document (``{"user.name": ...}``). Lists and
    empty objects stay values; :data:`FLAT_LEAVES` objects stay whole."""
    out: dict[str, Any] = {}
    _flatten_into(doc, "", out)
    return out


def has_dotted_keys(obj: dict[str, Any]) -> bool:
    """True if a top-level key other than ``@...`` has a dot (``{"user.name": ...}``:
    the document needs expanding before it is validated)."""
    for k in obj:
        if "." in k and not k.startswith("@"):
            return True
    return False
