"""One Python function per rule, generated from its compiled parts.

:mod:`rules.compiler` builds closures: one per detection item, and one per
``and``/``or``/``not`` and per selection. Matching a rule then costs a chain of
Python calls. Here the whole condition of a rule becomes a single expression in
one generated function: the boolean structure is inlined, and so are the common
item shapes (a string compared with ``==``/``in``/``startswith``/``endswith``/
``in`` on its lowered text, a numeric comparison, ``exists``, ``null``), each
with exactly the code of its closure; every other item stays a call to its
closure. Non-string values of a string item, and non-numeric values of a
comparison, fall back to the item's generic matcher, as the closures do.

The closures remain the reference (explanations use them); a rule whose
expression cannot be generated keeps the closure tree. ``CODEGEN = False``
switches generation off (tests compare both).
"""

from __future__ import annotations

from typing import Any, Callable

from sigma.conditions import ConditionAND, ConditionIdentifier, ConditionNOT, ConditionOR, ConditionSelector

from .compiler import CompiledDetection, CompiledItem

CODEGEN = True
#: most patterns of a "contains" item unrolled inline (more: call the closure)
MAX_UNROLL = 8
_CMP_OPS = {"LT": "<", "LTE": "<=", "GT": ">", "GTE": ">=", "NEQ": "!="}


class _Gen:
    def __init__(self) -> None:
        self.env: dict[str, Any] = {"_str": str, "_int": int, "_float": float}
        self.n = 0

    def const(self, value: Any) -> str:
        name = f"_k{self.n}"
        self.n += 1
        self.env[name] = value
        return name

    def call(self, fn: Callable) -> str:
        return f"{self.const(fn)}(flat, lc)"

    # -- items --

    def spec(self, spec: tuple) -> str:
        tag = spec[0]
        if tag == "call":
            return self.call(spec[1])
        if tag == "not":
            return f"(not {self.spec(spec[1])})"
        if tag == "null":
            f = self.const(spec[1])
            return f"((_v := flat.get({f})) is None or _v == [])"
        if tag == "exists":
            f = self.const(spec[1])
            present = f"((_v := flat.get({f})) is not None and _v != [])"
            return present if spec[2] else f"(not {present})"
        if tag == "cmp":
            _, op, fld, n, generic = spec
            f, k, g = self.const(fld), self.const(n), self.const(generic)
            return (
                f"((_v {_CMP_OPS[op]} {k}) if ((_t := (_v := flat.get({f})).__class__) is _int or _t is _float) "
                f"else (_v is not None and {g}(flat, lc)))"
            )
        if tag == "str":
            _, kind, fld, pat, generic = spec
            f, g = self.const(fld), self.const(generic)
            low = f"(lc.get({f}) or lc.setdefault({f}, _v.lower()))"
            if kind == "eq":
                test = f"{low} == {self.const(pat)}"
            elif kind == "in":
                test = f"{low} in {self.const(pat)}"
            elif kind == "startswith" or kind == "endswith":
                test = f"{low}.{kind}({self.const(pat)})"
            elif kind == "contains" and len(pat) <= MAX_UNROLL:
                first, *rest = [self.const(p) for p in pat]
                test = " or ".join([f"{first} in (_l := {low})", *(f"{p} in _l" for p in rest)])
            elif kind == "mixed":
                anything, eqs, starts, ends, conts = pat
                if anything:
                    test = "True"
                elif len(conts) > MAX_UNROLL:
                    raise _NoInline
                else:
                    tests = []
                    if eqs:
                        tests.append(f"_l in {self.const(eqs)}")
                    if starts:
                        tests.append(f"_l.startswith({self.const(starts)})")
                    if ends:
                        tests.append(f"_l.endswith({self.const(ends)})")
                    tests += [f"{self.const(c)} in _l" for c in conts]
                    test = f"(_l := {low}).__class__ is _str and (" + " or ".join(tests) + ")"
            else:
                raise _NoInline
            return f"(({test}) if (_v := flat.get({f})).__class__ is _str else (_v is not None and {g}(flat, lc)))"
        raise _NoInline

    def item(self, it: Any) -> str:
        if isinstance(it, CompiledDetection):
            return self.detection(it)
        assert isinstance(it, CompiledItem)
        if it.spec is None:
            return self.call(it.fn)
        try:
            return self.spec(it.spec)
        except _NoInline:
            return self.call(it.fn)

    def detection(self, d: CompiledDetection) -> str:
        items = d.order if d.order is not None and not d.any_of else d.items
        parts = [self.item(it) for it in items]
        if len(parts) == 1:
            return parts[0]
        return "(" + (" or " if d.any_of else " and ").join(parts) + ")"

    # -- conditions --

    def condition(self, node: Any, detections: dict[str, CompiledDetection], names: list[str]) -> str:
        if isinstance(node, ConditionIdentifier):
            return self.detection(detections[node.identifier])
        if isinstance(node, ConditionSelector):
            import re

            pattern = node.pattern
            rx = re.compile(".*" if pattern == "them" else pattern.replace("*", ".*"))
            sel = [n for n in names if rx.fullmatch(n) and (pattern.startswith("_") or not n.startswith("_"))]
            parts = [self.detection(detections[n]) for n in sel]
            joiner = " or " if node.cond_class is ConditionOR else " and "
            return parts[0] if len(parts) == 1 else "(" + joiner.join(parts) + ")"
        if isinstance(node, ConditionNOT):
            return f"(not {self.condition(node.args[0], detections, names)})"
        if isinstance(node, (ConditionAND, ConditionOR)):
            joiner = " or " if isinstance(node, ConditionOR) else " and "
            return "(" + joiner.join(self.condition(a, detections, names) for a in node.args) + ")"
        raise _NoInline


class _NoInline(Exception):
    pass


def rule_function(trees: list[Any], detections: dict[str, CompiledDetection], names: list[str]) -> Callable[[dict, dict], bool] | None:
    """``fn(flat, lc) -> bool`` for a rule's parsed condition(s), or None when
    generation is off or fails (the caller keeps the closures)."""
    if not CODEGEN:
        return None
    gen = _Gen()
    try:
        exprs = [gen.condition(t, detections, names) for t in trees]
        body = exprs[0] if len(exprs) == 1 else "(" + " or ".join(exprs) + ")"
        src = f"def _rule(flat, lc):\n    return {body}\n"
        code = compile(src, "<sigma rule>", "exec")
        exec(code, gen.env)
    except (_NoInline, SyntaxError, RecursionError, MemoryError, KeyError, IndexError):
        return None
    fn = gen.env["_rule"]
    fn.__source__ = src  # for debugging
    return fn
