"""Compile pySigma detections into Python closures over flat ECS dicts.

pySigma parses (values, modifiers, condition grammar); this module turns the
result into matchers ``fn(flat, lc) -> bool`` that run once per event.

``flat`` is ``Event.flat``; ``lc`` is a per-event scratch dict: the lowered
text of string fields already lowered by another rule (so a 4 kB prompt is
lowered once per event, not once per rule) and the event time under
:data:`TS_KEY`.

Matching semantics (documented in ``rules/__init__.py``, pinned by
``tests/files/rules/modifier_semantics.yml``):

* strings: case-insensitive unless ``cased``; ``*``/``?`` wildcards, ``\\*``,
  ``\\?`` and ``\\\\`` escapes; a pattern matches the whole value.
* a list-valued event field matches if any element matches.
* numbers match numbers and numeric strings by value; strings are matched
  against the decimal text of numbers and ``true``/``false`` of booleans.
* ``null`` matches a missing field, ``None`` and ``[]``; ``''`` only ``''``.
* keywords (field-less values) match as case-insensitive substrings of any
  string value of the event.
* ``re`` searches (unanchored, case-sensitive unless ``i``).
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import re2 as _re2  # a pySigma dependency
from sigma.conditions import (
    ConditionAND,
    ConditionIdentifier,
    ConditionItem,
    ConditionNOT,
    ConditionOR,
    ConditionSelector,
)
from sigma.rule.detection import SigmaDetection, SigmaDetectionItem
from sigma.types import (
    CompareOperators,
    Placeholder,
    SigmaBool,
    SigmaCasedString,
    SigmaCIDRExpression,
    SigmaCompareExpression,
    SigmaExists,
    SigmaExpansion,
    SigmaFieldReference,
    SigmaNull,
    SigmaNumber,
    SigmaRegularExpression,
    SigmaRegularExpressionFlag,
    SigmaString,
    SigmaTimestampPart,
    SpecialChars,
    TimestampPart,
)

Matcher = Callable[[dict, dict], bool]
TS_KEY = "\x00ts"
_MISSING = object()


class UnsupportedError(ValueError):
    """A construct the matcher cannot evaluate faithfully; the rule must not load."""


# --- derived fields -------------------------------------------------------------


def _hour_utc(ts: float) -> int:
    return int(ts // 3600) % 24


def _weekday(ts: float) -> int:
    # ISO weekday, 1 = Monday ... 7 = Sunday; 1970-01-01 was a Thursday (4).
    return (int(ts // 86400) + 3) % 7 + 1


#: Fields the engine derives from the event time when the event does not carry
#: them. The runtime may add them to ``Event.flat`` itself; then those win.
DERIVED_FIELDS: dict[str, Callable[[float], Any]] = {
    "ueba.time.hour_utc": _hour_utc,
    "ueba.time.weekday": _weekday,
}


def _ts_part(part: TimestampPart) -> Callable[[float], int]:
    def f(ts: float) -> int:
        t = time.gmtime(ts)
        if part is TimestampPart.MINUTE:
            return t.tm_min
        if part is TimestampPart.HOUR:
            return t.tm_hour
        if part is TimestampPart.DAY:
            return t.tm_mday
        if part is TimestampPart.WEEK:
            return int(time.strftime("%V", t))
        if part is TimestampPart.MONTH:
            return t.tm_mon
        return t.tm_year

    return f


# --- scalar helpers ---------------------------------------------------------------

_NUMERIC_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def as_text(v: Any) -> str | None:
    """The text a string pattern is matched against, None for non-scalars."""
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "true" if v else "false"
    if t is int or t is float:
        return str(v)
    return None


def as_number(v: Any) -> float | int | None:
    t = type(v)
    if t is int or t is float:
        return v
    if t is str and _NUMERIC_RE.fullmatch(v.strip()):
        return float(v)
    return None


# --- value predicates: pred(raw, low) -> bool ----------------------------------
# raw: one scalar event value (never a list); low: raw.lower() if raw is a str
# (taken from the per-event cache), else None.

Pred = Callable[[Any, "str | None"], bool]


def _merge_parts(s: SigmaString) -> list[Any]:
    out: list[Any] = []
    for p in s.s:
        if isinstance(p, Placeholder):
            raise UnsupportedError(f"unsupported: placeholder %{p.name}% left unexpanded")
        if isinstance(p, str) and out and isinstance(out[-1], str):
            out[-1] += p
        elif p is SpecialChars.WILDCARD_MULTI and out and out[-1] is SpecialChars.WILDCARD_MULTI:
            continue  # ** is *
        elif not (isinstance(p, str) and p == ""):
            out.append(p)
    return out


def string_shape(s: SigmaString, cased: bool) -> tuple[str, Any]:
    """Classify a Sigma string: eq, contains, startswith, endswith, any or regex."""
    parts = _merge_parts(s)
    if not cased:
        parts = [p.lower() if isinstance(p, str) else p for p in parts]
    M = SpecialChars.WILDCARD_MULTI
    n = len(parts)
    if n == 0:
        return "eq", ""
    if all(isinstance(p, str) for p in parts):
        return "eq", parts[0]
    if n == 1 and parts[0] is M:
        return "any", None
    if n == 2 and parts[0] is M and isinstance(parts[1], str):
        return "endswith", parts[1]
    if n == 2 and parts[1] is M and isinstance(parts[0], str):
        return "startswith", parts[0]
    if n == 3 and parts[0] is M and parts[2] is M and isinstance(parts[1], str):
        return "contains", parts[1]
    rx = "".join(
        re.escape(p) if isinstance(p, str) else (".*" if p is M else ".") for p in parts
    )
    return "regex", re.compile(rx, re.DOTALL)


def _string_pred(s: SigmaString, cased: bool) -> Pred:
    kind, pat = string_shape(s, cased)
    if kind == "eq":
        op = pat.__eq__
    elif kind == "contains":
        op = lambda t, p=pat: p in t  # noqa: E731
    elif kind == "startswith":
        op = lambda t, p=pat: t.startswith(p)  # noqa: E731
    elif kind == "endswith":
        op = lambda t, p=pat: t.endswith(p)  # noqa: E731
    elif kind == "any":
        op = lambda t: True  # noqa: E731
    else:
        fm = pat.fullmatch
        op = lambda t: fm(t) is not None  # noqa: E731

    if cased:

        def pred(raw: Any, low: str | None) -> bool:
            t = raw if low is not None else as_text(raw)
            return t is not None and op(t)

    else:

        def pred(raw: Any, low: str | None) -> bool:
            if low is None:
                t = as_text(raw)
                if t is None:
                    return False
                low = t.lower()
            return op(low)

    return pred


def _number_pred(n: int | float) -> Pred:
    def pred(raw: Any, low: str | None) -> bool:
        x = as_number(raw)
        return x is not None and x == n

    return pred


def _bool_pred(b: bool) -> Pred:
    text = "true" if b else "false"

    def pred(raw: Any, low: str | None) -> bool:
        if type(raw) is bool:
            return raw is b
        return low is not None and low == text

    return pred


_CMP = {
    CompareOperators.LT: lambda x, n: x < n,
    CompareOperators.LTE: lambda x, n: x <= n,
    CompareOperators.GT: lambda x, n: x > n,
    CompareOperators.GTE: lambda x, n: x >= n,
    CompareOperators.NEQ: lambda x, n: x != n,
}


def _compare_pred(c: SigmaCompareExpression) -> Pred:
    op = _CMP[c.op]
    n = c.number.number

    def pred(raw: Any, low: str | None) -> bool:
        x = as_number(raw)
        return x is not None and op(x, n)

    return pred


def compile_regex(pattern: str, flags: set[SigmaRegularExpressionFlag]) -> Any:
    """RE2 (linear time: prompts are attacker-controlled, so no catastrophic
    backtracking), Sigma flags as inline flags. pySigma has already checked
    the pattern with RE2 (its default policy), so this does not fail on RE2
    syntax limits."""
    inline = "".join(sorted(SigmaRegularExpression.sigma_to_re_flag[f] for f in flags))
    text = f"(?{inline}){pattern}" if inline else pattern
    try:
        return _re2.compile(text)
    except _re2.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None


def _regex_pred(r: SigmaRegularExpression) -> Pred:
    search = compile_regex(str(r.regexp), set(r.flags)).search

    def pred(raw: Any, low: str | None) -> bool:
        t = raw if low is not None else as_text(raw)
        return t is not None and search(t) is not None

    return pred


def _cidr_pred(c: SigmaCIDRExpression) -> Pred:
    net = c.network
    # integer range test on inet_pton bytes: ~10x faster than ipaddress parsing
    fam = socket.AF_INET if net.version == 4 else socket.AF_INET6
    lo = int(net.network_address)
    hi = int(net.broadcast_address)
    pton = socket.inet_pton
    from_bytes = int.from_bytes

    def pred(raw: Any, low: str | None) -> bool:
        if low is None:
            return False
        try:
            x = from_bytes(pton(fam, raw.strip()), "big")
        except (OSError, ValueError):
            return False
        return lo <= x <= hi

    return pred


def value_pred(v: Any, keyword: bool = False) -> Pred:
    """Predicate for one pySigma value (after modifiers)."""
    if isinstance(v, SigmaExpansion):
        preds = [value_pred(x, keyword) for x in v.values]
        return lambda raw, low: any(p(raw, low) for p in preds)
    if isinstance(v, SigmaString):
        cased = isinstance(v, SigmaCasedString)
        if keyword:
            # A keyword is a full-text term: match it anywhere in a value.
            parts = _merge_parts(v)
            if not parts or parts[0] is not SpecialChars.WILDCARD_MULTI:
                v = SpecialChars.WILDCARD_MULTI + v
            if not parts or parts[-1] is not SpecialChars.WILDCARD_MULTI:
                v = v + SpecialChars.WILDCARD_MULTI
        return _string_pred(v, cased)
    if isinstance(v, SigmaTimestampPart):
        raise UnsupportedError("unsupported: timestamp part modifiers on a field other than @timestamp")
    if isinstance(v, SigmaNumber):
        return _number_pred(v.number)
    if isinstance(v, SigmaBool):
        return _bool_pred(bool(v.boolean))
    if isinstance(v, SigmaCompareExpression):
        return _compare_pred(v)
    if isinstance(v, SigmaRegularExpression):
        return _regex_pred(v)
    if isinstance(v, SigmaCIDRExpression):
        return _cidr_pred(v)
    raise UnsupportedError(f"unsupported: value type {type(v).__name__}")


# --- compiled detection tree -------------------------------------------------------


@dataclass(slots=True)
class CompiledItem:
    """One ``field|modifiers: values`` entry, compiled."""

    fn: Matcher
    key: str  # as written, e.g. "ueba.gen_ai.prompt|contains|all"
    field: str | None
    values: list[str]  # rule values, for explanations
    required: frozenset[str] = frozenset()
    index: tuple[str, frozenset[str]] | None = None  # (field, lowered exact values)
    lit: tuple[str, frozenset[str]] | None = None  # (field, lowered literals one of which it contains)
    line: int = 0
    #: what :mod:`rules.codegen` may inline instead of calling ``fn`` (same semantics), or None
    spec: tuple | None = None
    #: a canonical form of what the item matches (equal signatures match the same
    #: events), or None when not comparable
    sig: tuple | None = None

    @property
    def pre(self) -> "Prefilter":
        if self.index is not None:
            return [(self.index[0], "eq", self.index[1])]
        if self.lit is not None:
            return [(self.lit[0], "lit", self.lit[1])]
        if self.required:
            return [(min(self.required), "has", None)]
        return None

    def witness(self, flat: dict, lc: dict) -> tuple[str | None, Any]:
        """(field, event value) that made this item true, for explanations."""
        if self.field is not None:
            v = flat.get(self.field, _MISSING)
            if v is _MISSING and self.field in DERIVED_FIELDS:
                v = DERIVED_FIELDS[self.field](lc[TS_KEY])
            return self.field, (None if v is _MISSING else v)
        probe = self.fn
        for k, v in flat.items():
            if probe({k: v}, {TS_KEY: lc.get(TS_KEY)}):
                return k, v
        return None, None


#: A prefilter: the rule can only match if one of the alternatives holds:
#: (field, "eq", values): the field's lowered text is one of values;
#: (field, "lit", literals): it contains one of literals;
#: (field, "has", None): the field is present;
#: ((field_a, field_b), "eq2", pairs): the two fields' lowered texts are one of
#: the value pairs. None = always try the rule.
#: Prefilters may over-approximate, never under-approximate.
Prefilter = "list[tuple[str, str, frozenset[str] | None]] | None"

MIN_LITERAL = 3  # shorter literals select too little to index

#: The prefilter of a condition that can never hold (e.g. ``x and not x``, as a
#: rule reads with the default ``*`` of a registry placeholder): index nowhere.
NEVER: list = [("", "never", None)]


def _literal_of(v: Any) -> str | None:
    """Longest literal chunk of a string value (lowered); the value can only
    match texts containing it."""
    if isinstance(v, SigmaString):
        best = ""
        for p in _merge_parts(v):
            if isinstance(p, str) and len(p) > len(best):
                best = p
        best = best.lower()
        return best if len(best) >= MIN_LITERAL else None
    return None


def item_literals(values: list[Any], all_of: bool) -> frozenset[str] | None:
    lits: list[str] = []
    for v in values:
        members = v.values if isinstance(v, SigmaExpansion) else [v]
        ml = [_literal_of(m) for m in members]
        if any(x is None for x in ml):
            if not all_of:
                return None
            continue
        if all_of and not isinstance(v, SigmaExpansion):
            lits.append(max(ml, key=len))  # type: ignore[arg-type]
            continue
        if all_of:
            return frozenset(ml)  # type: ignore[arg-type]
        lits.extend(ml)  # type: ignore[arg-type]
    if not lits:
        return None
    if all_of:
        return frozenset((max(lits, key=len),))
    return frozenset(lits)


@dataclass(slots=True)
class CompiledDetection:
    fn: Matcher
    items: list[Any]  # CompiledItem | CompiledDetection
    any_of: bool
    pre: Any = None  # Prefilter
    order: list[Any] | None = None  # evaluation order of items (None: as written)
    sig: tuple | None = None  # see CompiledItem.sig


def _field_matcher(fld: str, test: Callable[[Any, Any], bool]) -> Matcher:
    """fn(flat, lc) applying ``test(raw, low)`` to the field's value(s)."""
    derive = DERIVED_FIELDS.get(fld)

    def fn(flat: dict, lc: dict) -> bool:
        v = flat.get(fld)
        if v is None:
            if derive is None or fld in flat:
                return False
            v = derive(lc[TS_KEY])
        if type(v) is str:
            low = lc.get(fld)
            if low is None:
                low = lc[fld] = v.lower()
            return test(v, low)
        if type(v) is list:
            for x in v:
                if test(x, x.lower() if type(x) is str else None):
                    return True
            return False
        return test(v, None)

    return fn


def parse_ip(text: str) -> tuple[int, int] | None:
    """(4 or 6, address as int), or None when ``text`` is not an IP address."""
    t = text.strip()
    try:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, t), "big")
    except (OSError, ValueError):
        pass
    try:
        return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, t), "big")
    except (OSError, ValueError):
        return None


def _fast_cidr_matcher(fld: str, values: list[Any], generic: Matcher) -> Matcher:
    """All values CIDR ranges: parse the address once per event (cached in
    ``lc``) and test integer ranges."""
    if fld in DERIVED_FIELDS or not values or not all(isinstance(v, SigmaCIDRExpression) for v in values):
        return generic
    ranges: dict[int, tuple[tuple[int, int], ...]] = {
        ver: tuple(
            (int(v.network.network_address), int(v.network.broadcast_address))
            for v in values
            if v.network.version == ver
        )
        for ver in (4, 6)
    }
    key = "\x01ip:" + fld
    get = dict.get

    def fn(flat: dict, lc: dict) -> bool:
        v = get(flat, fld)
        if type(v) is str:
            parsed = get(lc, key, False)
            if parsed is False:
                parsed = lc[key] = parse_ip(v)
            if parsed is None:
                return False
            x = parsed[1]
            for lo, hi in ranges[parsed[0]]:
                if lo <= x <= hi:
                    return True
            return False
        return v is not None and generic(flat, lc)

    return fn


def _fast_compare_matcher(fld: str, values: list[Any], generic: Matcher) -> Matcher:
    """Inline closure for one numeric comparison on an int/float field value."""
    if fld in DERIVED_FIELDS or len(values) != 1 or not isinstance(values[0], SigmaCompareExpression):
        return generic
    c = values[0]
    op = _CMP[c.op]
    n = c.number.number
    get = dict.get

    def fn(flat: dict, lc: dict) -> bool:
        v = get(flat, fld)
        t = type(v)
        if t is int or t is float:
            return op(v, n)
        return v is not None and generic(flat, lc)

    fn._spec = ("cmp", c.op.name, fld, n, generic)  # type: ignore[attr-defined]
    return fn


def _fast_string_matcher(fld: str, values: list[Any], generic: Matcher) -> Matcher:
    """Inline closure for the common shapes (OR of eq / contains / startswith /
    endswith, case-insensitive) on a string field; anything else, lists and
    non-string values go to ``generic``, which has the same semantics."""
    if fld in DERIVED_FIELDS or not values or not all(type(v) is SigmaString for v in values):
        return generic
    try:
        shapes = [string_shape(v, False) for v in values]
    except UnsupportedError:
        return generic
    kinds = {k for k, _ in shapes}
    get = dict.get
    if len(kinds) != 1 or kinds == {"any"}:
        if "regex" in kinds:
            return generic
        # a mix (e.g. a registry of exact hosts and *.domain suffixes): one test per shape
        if "any" in kinds:
            eqs, starts, ends, conts = frozenset(), (), (), ()
            anything = True
        else:
            anything = False
            eqs = frozenset(p for k, p in shapes if k == "eq")
            starts = tuple(p for k, p in shapes if k == "startswith")
            ends = tuple(p for k, p in shapes if k == "endswith")
            conts = tuple(p for k, p in shapes if k == "contains")

        def fn(flat: dict, lc: dict) -> bool:
            v = get(flat, fld)
            if type(v) is str:
                if anything:
                    return True
                low = get(lc, fld)
                if low is None:
                    low = lc[fld] = v.lower()
                if low in eqs or (starts and low.startswith(starts)) or (ends and low.endswith(ends)):
                    return True
                for p in conts:
                    if p in low:
                        return True
                return False
            return v is not None and generic(flat, lc)

        fn._spec = ("str", "mixed", fld, (anything, eqs, starts, ends, conts), generic)  # type: ignore[attr-defined]
        return fn
    kind = kinds.pop()
    pats = tuple(p for _, p in shapes)

    if kind == "eq":
        if len(pats) == 1:
            pat = pats[0]

            def fn(flat: dict, lc: dict) -> bool:
                v = get(flat, fld)
                if type(v) is str:
                    low = get(lc, fld)
                    if low is None:
                        low = lc[fld] = v.lower()
                    return low == pat
                return v is not None and generic(flat, lc)

            fn._spec = ("str", "eq", fld, pat, generic)  # type: ignore[attr-defined]
            return fn
        pset = frozenset(pats)

        def fn(flat: dict, lc: dict) -> bool:
            v = get(flat, fld)
            if type(v) is str:
                low = get(lc, fld)
                if low is None:
                    low = lc[fld] = v.lower()
                return low in pset
            return v is not None and generic(flat, lc)

        fn._spec = ("str", "in", fld, pset, generic)  # type: ignore[attr-defined]
        return fn
    if kind == "contains":

        def fn(flat: dict, lc: dict) -> bool:
            v = get(flat, fld)
            if type(v) is str:
                low = get(lc, fld)
                if low is None:
                    low = lc[fld] = v.lower()
                for p in pats:
                    if p in low:
                        return True
                return False
            return v is not None and generic(flat, lc)

        fn._spec = ("str", "contains", fld, pats, generic)  # type: ignore[attr-defined]
        return fn
    if kind in ("startswith", "endswith"):
        starts = kind == "startswith"

        def fn(flat: dict, lc: dict) -> bool:
            v = get(flat, fld)
            if type(v) is str:
                low = get(lc, fld)
                if low is None:
                    low = lc[fld] = v.lower()
                return low.startswith(pats) if starts else low.endswith(pats)
            return v is not None and generic(flat, lc)

        fn._spec = ("str", kind, fld, pats, generic)  # type: ignore[attr-defined]
        return fn
    return generic


def _link(preds: list[Pred], all_of: bool) -> Pred:
    if len(preds) == 1:
        return preds[0]
    if all_of:
        return lambda raw, low: all(p(raw, low) for p in preds)
    return lambda raw, low: any(p(raw, low) for p in preds)


def _is_plain_eq(v: Any) -> bool:
    return (
        type(v) is SigmaString  # not SigmaCasedString
        and all(isinstance(p, str) for p in v.s)
    )


def _value_repr(v: Any) -> str:
    if isinstance(v, SigmaExpansion):
        return " | ".join(_value_repr(x) for x in v.values)
    if isinstance(v, SigmaString):
        return v.original if v.original else str(v)
    if isinstance(v, SigmaRegularExpression):
        return f"/{v.regexp}/"
    if isinstance(v, SigmaCompareExpression):
        return f"{v.op.name.lower()} {v.number.number}"
    if isinstance(v, SigmaFieldReference):
        return f"field {v.field}"
    if isinstance(v, SigmaNull):
        return "null"
    if isinstance(v, SigmaExists):
        return f"exists={v.exists}"
    if isinstance(v, SigmaNumber):
        return str(v.number)
    return str(v)


def compile_item(item: SigmaDetectionItem, key: str) -> CompiledItem:
    values = list(item.value)
    fld = item.field
    all_of = item.value_linking is ConditionAND
    reprs = [_value_repr(v) for v in (item.original_value or values)]
    required: frozenset[str] = frozenset()
    index = None
    lit = None
    spec: tuple | None = None

    if fld is None:
        if any(not isinstance(v, (SigmaString, SigmaExpansion, SigmaRegularExpression)) for v in values):
            raise UnsupportedError("unsupported: keyword search with non-string values")
        preds = [value_pred(v, keyword=True) for v in values]

        def keyword_any(pred: Pred) -> Matcher:
            def fn(flat: dict, lc: dict) -> bool:
                for k, v in flat.items():
                    if type(v) is str:
                        low = lc.get(k)
                        if low is None:
                            low = lc[k] = v.lower()
                        if pred(v, low):
                            return True
                    elif type(v) is list:
                        for x in v:
                            if type(x) is str and pred(x, x.lower()):
                                return True
                return False

            return fn

        kfns = [keyword_any(p) for p in preds]
        if len(kfns) == 1:
            fn = kfns[0]
        elif all_of:
            fn = lambda flat, lc: all(f(flat, lc) for f in kfns)  # noqa: E731
        else:
            fn = lambda flat, lc: any(f(flat, lc) for f in kfns)  # noqa: E731
    elif not values or all(isinstance(v, SigmaNull) for v in values):

        def fn(flat: dict, lc: dict) -> bool:
            v = flat.get(fld)
            return v is None or v == []

        spec = ("null", fld)

    elif any(isinstance(v, SigmaNull) for v in values):
        # field: [null, 'x'] = missing or 'x'
        rest = [v for v in values if not isinstance(v, SigmaNull)]
        inner = _field_matcher(fld, _link([value_pred(v) for v in rest], all_of))
        if all_of:
            raise UnsupportedError("unsupported: null combined with other values under 'all'")

        def fn(flat: dict, lc: dict) -> bool:
            v = flat.get(fld)
            return v is None or v == [] or inner(flat, lc)

    elif all(isinstance(v, SigmaExists) for v in values):
        if len(values) != 1:
            raise ValueError("exists takes exactly one boolean value")
        want = bool(values[0].exists)
        derived = fld in DERIVED_FIELDS

        def fn(flat: dict, lc: dict) -> bool:
            v = flat.get(fld)
            present = (v is not None and v != []) or (derived and fld not in flat)
            return present is want

        if not derived:
            spec = ("exists", fld, want)
        if want and not derived:
            required = frozenset((fld,))
    elif all(isinstance(v, SigmaFieldReference) for v in values):
        fn = _fieldref_matcher(fld, values, all_of)
        required = frozenset([fld] + [v.field for v in values]) - DERIVED_FIELDS.keys()
    elif all(isinstance(v, SigmaTimestampPart) for v in values):
        if fld not in ("@timestamp", "timestamp"):
            raise UnsupportedError(
                f"unsupported: timestamp part modifier on {fld!r} (only @timestamp, the event time)"
            )
        getter = _ts_part(values[0].timestamp_part)
        wanted = {v.number for v in values}
        if len({v.timestamp_part for v in values}) != 1:
            raise UnsupportedError("unsupported: mixed timestamp parts in one item")
        if all_of and len(wanted) > 1:
            fn = lambda flat, lc: False  # noqa: E731  (one time cannot have two hours)
        else:
            fn = lambda flat, lc: getter(lc[TS_KEY]) in wanted  # noqa: E731
    else:
        if any(isinstance(v, (SigmaNull, SigmaExists, SigmaFieldReference, SigmaTimestampPart)) for v in values):
            raise UnsupportedError("unsupported: mixing null/exists/fieldref values with other values in one item")
        if not all_of and len(values) > 1 and all(_is_plain_eq(v) for v in values):
            wanted_set = frozenset("".join(v.s).lower() for v in values)

            def test(raw: Any, low: str | None, w: frozenset = wanted_set) -> bool:
                if low is None:
                    t = as_text(raw)
                    if t is None:
                        return False
                    low = t.lower()
                return low in w

            fn = _field_matcher(fld, test)
        else:
            preds = [value_pred(v) for v in values]
            if all_of:
                # every value must match some element of a list field
                per = [_field_matcher(fld, p) for p in preds]
                fn = lambda flat, lc: all(f(flat, lc) for f in per)  # noqa: E731
            else:
                fn = _field_matcher(fld, _link(preds, False))
        if not all_of or len(values) == 1:
            fn = _fast_string_matcher(fld, values, fn)
            fn = _fast_compare_matcher(fld, values, fn)
            fn = _fast_cidr_matcher(fld, values, fn)
        if fld not in DERIVED_FIELDS:
            required = frozenset((fld,))
            if not all_of or len(values) == 1:
                if all(_is_plain_eq(v) or isinstance(v, SigmaBool) for v in values):
                    # a boolean matches true/false and the strings "true"/"false": its text
                    index = (fld, frozenset(
                        ("true" if v.boolean else "false") if isinstance(v, SigmaBool) else "".join(v.s).lower()
                        for v in values
                    ))
            if index is None and all(isinstance(v, (SigmaString, SigmaExpansion)) for v in values):
                lits = item_literals(values, all_of)
                if lits:
                    lit = (fld, lits)

    if spec is None:
        spec = getattr(fn, "_spec", None)
    if spec is None:
        spec = ("call", fn)
    if item.negated:
        inner_fn = fn
        fn = lambda flat, lc: not inner_fn(flat, lc)  # noqa: E731
        spec = ("not", spec)
        required = frozenset()
        index = None
        lit = None
    sig = None
    if fld is not None:
        vs = [_value_sig(v) for v in values]
        if all(x is not None for x in vs):
            sig = ("item", fld, all_of, bool(item.negated), tuple(vs))
    return CompiledItem(fn=fn, key=key, field=fld, values=reprs, required=required, index=index, lit=lit, spec=spec, sig=sig)


def _value_sig(v: Any) -> tuple | None:
    """What a value matches, canonically (None: not compared)."""
    if isinstance(v, SigmaString):
        try:
            parts = _merge_parts(v)
        except UnsupportedError:
            return None
        return (type(v).__name__, tuple(p if isinstance(p, str) else p.name for p in parts))
    if isinstance(v, (SigmaNumber, SigmaBool)):
        return (type(v).__name__, repr(v.number if isinstance(v, SigmaNumber) else v.boolean))
    if isinstance(v, SigmaNull):
        return ("SigmaNull",)
    if isinstance(v, SigmaExists):
        return ("SigmaExists", bool(v.exists))
    return None


def _norm_ref(v: Any) -> str | None:
    t = as_text(v)
    return None if t is None else t.lower()


def _fieldref_matcher(fld: str, refs: list[SigmaFieldReference], all_of: bool) -> Matcher:
    def one(ref: SigmaFieldReference) -> Matcher:
        other = ref.field
        sw, ew = ref.starts_with, ref.ends_with

        def cmp(a: str, b: str) -> bool:
            if sw and ew:
                return b in a
            if sw:
                return a.startswith(b)
            if ew:
                return a.endswith(b)
            return a == b

        def fn(flat: dict, lc: dict) -> bool:
            a = flat.get(fld)
            b = flat.get(other)
            if a is None or b is None:
                return False
            la = [_norm_ref(x) for x in a] if type(a) is list else [_norm_ref(a)]
            lb = [_norm_ref(x) for x in b] if type(b) is list else [_norm_ref(b)]
            return any(x is not None and y is not None and cmp(x, y) for x in la for y in lb)

        return fn

    fns = [one(r) for r in refs]
    if len(fns) == 1:
        return fns[0]
    if all_of:
        return lambda flat, lc: all(f(flat, lc) for f in fns)
    return lambda flat, lc: any(f(flat, lc) for f in fns)


def _pre_cost(p: Any) -> tuple[int, int, int, int]:
    # exact values beat literals beat "field present"; pairs beat single fields;
    # then fewer accepted values
    return (
        sum(1 for _, k, _ in p if k == "has"),
        sum(1 for _, k, _ in p if k == "lit"),
        sum(1 for _, k, _ in p if k == "eq"),
        sum(len(v) for _, _, v in p if v is not None),
    )


MAX_COMPOUND = 64  # most value pairs a two-field index entry may expand to


def _and_pre(pres: list[Any]) -> Any:
    if any(p is NEVER for p in pres):
        return NEVER
    cands = [p for p in pres if p is not None]
    if not cands:
        return None
    # Two exact-value constraints on different fields: index the pair.
    eqs = sorted(
        (p[0] for p in cands if len(p) == 1 and p[0][1] == "eq" and isinstance(p[0][0], str)),
        key=lambda a: (len(a[2]), a[0]),
    )
    for i, (f1, _, v1) in enumerate(eqs):
        for f2, _, v2 in eqs[i + 1 :]:
            if f1 != f2 and len(v1) * len(v2) <= MAX_COMPOUND:
                (fa, va), (fb, vb) = sorted(((f1, v1), (f2, v2)))
                return [((fa, fb), "eq2", frozenset((a, b) for a in va for b in vb))]
    return min(cands, key=_pre_cost)


def _or_pre(pres: list[Any]) -> Any:
    if pres and all(p is NEVER for p in pres):
        return NEVER
    pres = [p for p in pres if p is not NEVER]
    if not pres or any(p is None for p in pres):
        return None
    merged: dict[tuple[str, str], frozenset[str] | None] = {}
    for p in pres:
        for f, k, v in p:
            old = merged.get((f, k))
            merged[(f, k)] = v if old is None else (old | v if v is not None else None)
    return [(f, k, v) for (f, k), v in merged.items()]


def _combine(fns: list[Matcher], any_of: bool) -> Matcher:
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        a, b = fns
        if any_of:
            return lambda flat, lc: a(flat, lc) or b(flat, lc)
        return lambda flat, lc: a(flat, lc) and b(flat, lc)
    # a chain of binary closures is cheaper than any()/all() over a generator
    head, rest = fns[0], _combine(fns[1:], any_of)
    if any_of:
        return lambda flat, lc: head(flat, lc) or rest(flat, lc)
    return lambda flat, lc: head(flat, lc) and rest(flat, lc)


def compile_detection(det: SigmaDetection, items: list[Any]) -> CompiledDetection:
    """``items``: the already compiled children of ``det`` in the same order."""
    any_of = det.item_linking is ConditionOR
    # Cheapest first for AND: items carrying an index/required field fail fast.
    fns = [c.fn for c in items]
    pres = [c.pre for c in items]
    sigs = [c.sig for c in items]
    return CompiledDetection(
        fn=_combine(fns, any_of),
        items=items,
        any_of=any_of,
        pre=_or_pre(pres) if any_of else _and_pre(pres),
        sig=("det", any_of, tuple(sigs)) if all(x is not None for x in sigs) else None,
    )


def reorder_for_prefilter(det: CompiledDetection, late: set[str]) -> None:
    """Rebuild ``det.fn`` so AND-ed items on ``late`` fields run last.

    ``late``: fields whose exact value the index already guaranteed for every
    event this rule is tried on; checking them first would only repeat that.
    ``det.items`` keeps its order (explanations follow the rule text).
    """
    for c in det.items:
        if isinstance(c, CompiledDetection):
            reorder_for_prefilter(c, late)
    if det.any_of:
        det.fn = _combine([c.fn for c in det.items], True)
    else:
        items = sorted(det.items, key=lambda c: isinstance(c, CompiledItem) and c.field in late)
        det.fn = _combine([c.fn for c in items], False)
        det.order = items


# --- conditions -----------------------------------------------------------------------


@dataclass(slots=True)
class CompiledCondition:
    fn: Matcher
    pre: Any  # Prefilter
    used: set[str] = field(default_factory=set)  # detection names referenced


def compile_condition(tree: Any, detections: dict[str, CompiledDetection], all_names: list[str]) -> CompiledCondition:
    used: set[str] = set()

    def walk(node: Any) -> tuple[Matcher, Any, Any]:
        """(matcher, prefilter, signature of what it matches or None)."""
        if isinstance(node, ConditionIdentifier):
            name = node.identifier
            if name not in detections:
                raise ValueError(f"condition references undefined detection {name!r}")
            used.add(name)
            d = detections[name]
            return d.fn, d.pre, d.sig
        if isinstance(node, ConditionSelector):
            pattern = node.pattern
            rx = re.compile(".*" if pattern == "them" else pattern.replace("*", ".*"))
            names = [n for n in all_names if rx.fullmatch(n) and (pattern.startswith("_") or not n.startswith("_"))]
            if not names:
                raise ValueError(f"selector '{node.args[0]} of {pattern}' matches no detection")
            subs = [walk(ConditionIdentifier([n])) for n in names]
            if len(subs) == 1:
                return subs[0]
            any_of = node.cond_class is ConditionOR
            fns = [s[0] for s in subs]
            pres = [s[1] for s in subs]
            return _combine(fns, any_of), (_or_pre(pres) if any_of else _and_pre(pres)), None
        if isinstance(node, ConditionNOT):
            f, _, sig = walk(node.args[0])
            return (lambda flat, lc: not f(flat, lc)), None, (("not", sig) if sig is not None else None)
        if isinstance(node, (ConditionAND, ConditionOR)):
            subs = [walk(a) for a in node.args]
            any_of = isinstance(node, ConditionOR)
            fns = [s[0] for s in subs]
            pres = [s[1] for s in subs]
            if any_of:
                return _combine(fns, True), _or_pre(pres), None
            sigs = {s[2] for s in subs if s[2] is not None}
            if any(("not", x) in sigs for x in sigs):
                # "x and not x": never true (the matcher stays exact; only the index skips it)
                return _combine(fns, False), NEVER, None
            return _combine(fns, False), _and_pre(pres), None
        if isinstance(node, ConditionItem):
            raise UnsupportedError(f"unsupported: condition construct {type(node).__name__}")
        raise UnsupportedError(f"unsupported: condition element {node!r}")

    fn, pre, _ = walk(tree)
    return CompiledCondition(fn=fn, pre=pre, used=used)


def explain_plan(tree: Any, all_names: list[str]) -> list[str]:
    """The detections :func:`explain_condition` examines, in order: those the
    condition references other than under a NOT (computed once per rule)."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, ConditionNOT):
            return
        if isinstance(node, ConditionIdentifier):
            out.append(node.identifier)
        elif isinstance(node, ConditionSelector):
            pattern = node.pattern
            rx = re.compile(".*" if pattern == "them" else pattern.replace("*", ".*"))
            out.extend(n for n in all_names if rx.fullmatch(n) and (pattern.startswith("_") or not n.startswith("_")))
        elif isinstance(node, (ConditionAND, ConditionOR)):
            for a in node.args:
                walk(a)

    walk(tree)
    return out


def explain_condition(
    tree: Any, detections: dict[str, CompiledDetection], all_names: list[str], flat: dict, lc: dict, plan: list[str] | None = None
) -> list[tuple[str, str, str | None, Any, list[str]]]:
    """Positive evidence for a match: (selection, item key, field, event value, rule values).

    Only selections that are true and not under a NOT are reported. Runs on
    hits only. ``plan``: :func:`explain_plan` of ``tree``, when cached.
    """
    out: list[tuple[str, str, str | None, Any, list[str]]] = []

    def items_of(name: str, det: CompiledDetection) -> None:
        for it in det.items:
            if type(it) is CompiledDetection:
                if it.fn(flat, lc):
                    items_of(name, it)
                    if det.any_of:
                        return
            elif it.fn(flat, lc):
                f, v = it.witness(flat, lc)
                if type(v) is str and len(v) > 512:
                    v = v[:512] + "..."
                out.append((name, it.key, f, v, it.values))
                if det.any_of:
                    return

    for n in plan if plan is not None else explain_plan(tree, all_names):
        d = detections[n]
        if d.fn(flat, lc):
            items_of(n, d)
    return out


# for tests: the classification of a value, without compiling a rule
__all__ = [
    "DERIVED_FIELDS",
    "TS_KEY",
    "UnsupportedError",
    "CompiledDetection",
    "CompiledItem",
    "compile_condition",
    "compile_detection",
    "compile_item",
    "explain_condition",
    "explain_plan",
    "string_shape",
    "value_pred",
]
# pySigma flag enum re-exported for the loader's modifier checks
RegexFlag = SigmaRegularExpressionFlag
