"""Loading, validating and indexing a rule set; matching detection rules."""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from sigma.conditions import ConditionAND, SigmaCondition
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import (
    SigmaAuthorError,
    SigmaCorrelationConditionError,
    SigmaCorrelationTypeError,
    SigmaDateError,
    SigmaDescriptionError,
    SigmaError,
    SigmaFalsePositivesError,
    SigmaFieldsError,
    SigmaIdentifierError,
    SigmaLevelError,
    SigmaLicenseError,
    SigmaLogsourceError,
    SigmaModifiedError,
    SigmaNameError,
    SigmaReferencesError,
    SigmaRelatedError,
    SigmaScopeError,
    SigmaStatusError,
    SigmaTagError,
    SigmaTaxonomyError,
    SigmaTimespanError,
    SigmaTitleError,
)
from sigma.rule import SigmaRule
from sigma.rule.detection import SigmaDetection, SigmaDetectionItem
from sigma.types import SigmaExpansion, SigmaRegularExpression, SigmaString

from .compiler import (
    DERIVED_FIELDS,
    NEVER,
    TS_KEY,
    CompiledCondition,
    CompiledDetection,
    UnsupportedError,
    as_text,
    compile_condition,
    compile_detection,
    compile_item,
    explain_condition,
    explain_plan,
    reorder_for_prefilter,
)
from .errors import RuleIssue, RuleLoadError
from .loader import LineDict, LineList, expand_paths, line_at, read_yaml_documents, schema_issues
from .placeholders import DEFAULT_FILE as DEFAULT_PLACEHOLDERS
from .placeholders import Placeholders, expand_value, is_placeholder_file, load_placeholders
from .tags import Technique, tag_problem, technique_ids, techniques

if TYPE_CHECKING:
    from .testing import RuleTestCase

STREAM_KINDS: tuple[str, ...] = ("access", "api", "telemetry")
PRODUCT = "ai-ueba"
LEVELS = ("informational", "low", "medium", "high", "critical")
SUPPORTED_CORRELATIONS = ("event_count", "value_count", "value_sum", "value_avg", "temporal", "temporal_ordered")
STATEFUL_TYPES = ("unannounced_value",)
_NS = uuid.UUID("6f1c4d0e-2b8a-4f4e-9a57-3c0b8e6d1a20")

# pySigma error class -> the top-level key it is about (for the line number).
_ERROR_KEYS: dict[type, str] = {
    SigmaTitleError: "title",
    SigmaIdentifierError: "id",
    SigmaStatusError: "status",
    SigmaLevelError: "level",
    SigmaDateError: "date",
    SigmaModifiedError: "modified",
    SigmaTagError: "tags",
    SigmaLogsourceError: "logsource",
    SigmaAuthorError: "author",
    SigmaDescriptionError: "description",
    SigmaFalsePositivesError: "falsepositives",
    SigmaFieldsError: "fields",
    SigmaReferencesError: "references",
    SigmaRelatedError: "related",
    SigmaScopeError: "scope",
    SigmaLicenseError: "license",
    SigmaNameError: "name",
    SigmaTaxonomyError: "taxonomy",
}


# --- hits ---------------------------------------------------------------------------


@dataclass(slots=True)
class MatchedField:
    """Evidence for a hit: which selection matched on which field with which value."""

    selection: str
    key: str  # the detection key as written, e.g. "ueba.gen_ai.prompt|contains"
    field: str | None
    value: Any  # the event's value (strings cut at 512 characters)
    patterns: list[str]  # the rule's values for that key

    def to_dict(self) -> dict[str, Any]:
        return {
            "selection": self.selection,
            "key": self.key,
            "field": self.field,
            "value": self.value,
            "patterns": self.patterns,
        }


@dataclass(slots=True)
class RuleHit:
    """One rule that fired on one event (detection) or one group (correlation).

    ``alert``: False for rules that only feed correlations (Sigma
    ``generate: false``) or stateful checks; the runtime alerts on hits with
    ``alert`` True and passes every hit to :meth:`CorrelationEngine.process`.
    ``matched``: the evidence (selection, field, value); left empty on
    non-alert hits, which are only correlation input (keeps the hot path fast).
    ``group_key``: the group-by values of a correlation hit (else None).
    ``extra``: correlation details (count, distinct values, window, rules seen).
    """

    rule_id: str
    title: str
    description: str
    level: str
    tags: tuple[str, ...]
    falsepositives: tuple[str, ...]
    rule_type: str  # "detection", a correlation type, or a stateful type
    ts: float
    event_kind: str
    matched: list[MatchedField] = field(default_factory=list)
    group_key: tuple[Any, ...] | None = None
    group_by: tuple[str, ...] = ()
    alert: bool = True
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def techniques(self) -> list[Technique]:
        return techniques(self.tags)

    @property
    def technique_ids(self) -> tuple[str, ...]:
        """For ``Finding.techniques``: ``("T1110.003", "AML.T0051")``."""
        return technique_ids(self.tags)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "level": self.level,
            "tags": list(self.tags),
            "techniques": [list(t) for t in self.techniques],
            "falsepositives": list(self.falsepositives),
            "rule_type": self.rule_type,
            "ts": self.ts,
            "event_kind": self.event_kind,
            "matched": [m.to_dict() for m in self.matched],
            "group_by": list(self.group_by),
            "group_key": list(self.group_key) if self.group_key is not None else None,
            "alert": self.alert,
            "extra": self.extra,
        }


# --- rules ---------------------------------------------------------------------------


@dataclass(slots=True)
class RuleMeta:
    id: str
    name: str | None
    title: str
    description: str
    level: str
    status: str | None
    tags: tuple[str, ...]
    falsepositives: tuple[str, ...]
    file: str
    line: int
    order: int
    tests: dict[str, list[Any]] = field(default_factory=dict)
    tests_line: int = 0
    alert: bool = True

    def hit(self, rule_type: str, ts: float, kind: str, matched: list[MatchedField], **kw: Any) -> RuleHit:
        """A hit of this rule; ``kw`` sets the correlation fields (group_key, group_by, extra) or ``alert``."""
        kw.setdefault("alert", self.alert)
        return RuleHit(
            rule_id=self.id,
            title=self.title,
            description=self.description,
            level=self.level,
            tags=self.tags,
            falsepositives=self.falsepositives,
            rule_type=rule_type,
            ts=ts,
            event_kind=kind,
            matched=matched,
            name=self.name,
            **kw,
        )


@dataclass(slots=True, eq=False)
class DetectionRule:
    meta: RuleMeta
    kinds: frozenset[str]
    condition: CompiledCondition
    trees: list[Any]
    detections: dict[str, CompiledDetection]
    fn: Any
    stateful: "StatefulSpec | None" = None
    plans: list[list[str]] | None = None  # explain_plan of each tree (cached)

    def explain(self, flat: dict, lc: dict) -> list[MatchedField]:
        names = list(self.detections)
        if self.plans is None:
            self.plans = [explain_plan(t, names) for t in self.trees]
        matched: list[MatchedField] = []
        for tree, plan in zip(self.trees, self.plans):
            for sel, key, f, v, pats in explain_condition(tree, self.detections, names, flat, lc, plan):
                matched.append(MatchedField(sel, key, f, v, pats))
        return matched

    def hit(self, kind: str, flat: dict, lc: dict, ts: float) -> RuleHit:
        m = self.meta
        # hits that only feed correlations are not explained (hot path); see RuleHit
        matched = self.explain(flat, lc) if m.alert else []
        return m.hit("detection", ts, kind, matched)


@dataclass(slots=True)
class StatefulSpec:
    """``x_ueba_stateful: {type: unannounced_value, ...}`` on a detection rule."""

    type: str
    value: str
    group_by: tuple[str, ...]
    announced_by: tuple[str, ...]  # rule ids (resolved)
    timespan: float
    warmup_first_seen: bool


@dataclass(slots=True, eq=False)
class CorrelationRule:
    meta: RuleMeta
    type: str
    rules: tuple[str, ...]  # referenced rule ids, in order
    group_by: tuple[str, ...]
    timespan: float
    timespan_text: str
    op: str  # gt gte lt lte eq neq
    threshold: float
    value_field: str | None
    aliases: dict[str, dict[str, str]]  # alias -> {rule id -> field}
    generate: bool


_OPS = {
    "gt": lambda x, n: x > n,
    "gte": lambda x, n: x >= n,
    "lt": lambda x, n: x < n,
    "lte": lambda x, n: x <= n,
    "eq": lambda x, n: x == n,
    "neq": lambda x, n: x != n,
}


# --- the index ---------------------------------------------------------------------


try:  # optional: Aho-Corasick makes the literal index O(text) instead of O(literals)
    import ahocorasick as _ahocorasick
except ImportError:  # pragma: no cover - exercised when the extra is absent
    _ahocorasick = None

try:  # RE2's multi-pattern set (a pySigma dependency): one DFA pass, ~2.5x faster than Aho-Corasick here
    import re2 as _re2

    _re2_set = _re2.Set.SearchSet
except (ImportError, AttributeError):  # pragma: no cover
    _re2 = _re2_set = None


def _literal_finder(literals: list[str]):
    """fn(text) -> iterable of the literals that occur in text (overlaps included)."""
    lits = tuple(literals)
    plain = lambda text: [lit for lit in lits if lit in text]  # noqa: E731
    if len(lits) <= 8:  # below that, `in` is as fast
        return plain
    fallback = _aho_corasick_finder(lits) if _ahocorasick is not None else plain
    if _re2_set is not None:
        # Each literal is its own pattern of an unanchored set: Match returns every
        # literal that occurs anywhere (overlapping ones included), or None.
        try:
            rs = _re2_set(_re2.Options())
            for lit in lits:
                rs.Add(_re2.escape(lit))
            rs.Compile()
        except Exception:  # pragma: no cover - RE2 refused the set: keep the fallback
            return fallback
        match = rs.Match

        def find(text: str):
            try:
                idx = match(text)
            except Exception:  # pragma: no cover - e.g. the DFA ran out of memory on this text
                return fallback(text)
            return [lits[i] for i in idx] if idx else ()

        return find
    return fallback


def _aho_corasick_finder(lits: tuple[str, ...]):
    auto = _ahocorasick.Automaton()
    for lit in lits:
        auto.add_word(lit, lit)
    auto.make_automaton()
    it = auto.iter

    def find(text: str):
        return {v for _, v in it(text)}

    return find


def _texts(v: Any) -> list[str]:
    vals = v if type(v) is list else [v]
    return [t.lower() for t in map(as_text, vals) if t is not None]


class _DupBucket(list):
    """An index bucket holding a rule that one event can reach through two buckets."""

    __slots__ = ()


class _Partition:
    """The rules tried on one stream kind, indexed by their prefilter.

    A rule sits in the bucket of each alternative of its prefilter: under
    (field, value) for "field's lowered text is value", under (field, literal)
    for "contains literal", under field for "field is present", else in
    ``always``.
    """

    __slots__ = ("value_index", "pair_index", "lit_index", "field_index", "always", "n", "dedupe")

    def __init__(self, rules: list[DetectionRule]):
        by_value: dict[str, dict[str, list[DetectionRule]]] = {}
        by_lit: dict[str, dict[str, list[DetectionRule]]] = {}
        by_field: dict[str, list[DetectionRule]] = {}
        by_pair: dict[tuple[str, str], dict[tuple[str, str], list[DetectionRule]]] = {}
        always: list[DetectionRule] = []
        dedupe = False
        for r in rules:
            pre = r.condition.pre
            if pre is NEVER:
                continue  # its condition can never hold
            if not pre:
                always.append(r)
                continue
            if len(pre) > 1 or any(k == "lit" and len(v) > 1 for _, k, v in pre):
                dedupe = True  # may be found more than once for one event
            for fld, kind, values in pre:
                if kind == "has":
                    by_field.setdefault(fld, []).append(r)
                elif kind == "eq2":
                    t2 = by_pair.setdefault(fld, {})
                    for v in values:
                        t2.setdefault(v, []).append(r)
                else:
                    table = (by_value if kind == "eq" else by_lit).setdefault(fld, {})
                    for v in values:
                        table.setdefault(v, []).append(r)
        if dedupe:
            # buckets holding a rule that can be found twice for one event are
            # _DupBuckets: only when one of them was used must the result be deduplicated
            dups = {r for r in rules if r.condition.pre and r.condition.pre is not NEVER and (
                len(r.condition.pre) > 1 or any(k == "lit" and len(v) > 1 for _, k, v in r.condition.pre))}

            def mark(rs: list[DetectionRule]) -> list[DetectionRule]:
                return _DupBucket(rs) if any(r in dups for r in rs) else rs

            for table in (*by_value.values(), *by_pair.values(), *by_lit.values()):
                for k in table:
                    table[k] = mark(table[k])
            for k in by_field:
                by_field[k] = mark(by_field[k])
        self.value_index = list(by_value.items())
        self.pair_index = list(by_pair.items())
        self.lit_index = [(f, _literal_finder(list(t)), t) for f, t in by_lit.items()]
        self.field_index = list(by_field.items())
        self.always = always
        self.n = len(rules)
        self.dedupe = dedupe

    def candidates(self, flat: dict, lc: dict) -> list[DetectionRule]:
        out: list[DetectionRule] = []
        multi = False  # a list value, or a bucket of rules that may be found twice, was used
        for fld, table in self.value_index:
            v = flat.get(fld)
            if v is None:
                continue
            if type(v) is str:
                low = lc.get(fld)
                if low is None:
                    low = lc[fld] = v.lower()
                rs = table.get(low)
                if rs:
                    out.extend(rs)
                    if rs.__class__ is _DupBucket:
                        multi = True
            elif type(v) is list:
                multi = True
                for x in v:
                    t = as_text(x)
                    rs = table.get(t.lower()) if t is not None else None
                    if rs:
                        out.extend(rs)
            else:
                t = as_text(v)
                rs = table.get(t.lower()) if t is not None else None
                if rs:
                    out.extend(rs)
                    if rs.__class__ is _DupBucket:
                        multi = True
        for (fa, fb), table in self.pair_index:
            va = flat.get(fa)
            if va is None:
                continue
            vb = flat.get(fb)
            if vb is None:
                continue
            if type(va) is str and type(vb) is str:
                la = lc.get(fa)
                if la is None:
                    la = lc[fa] = va.lower()
                lb = lc.get(fb)
                if lb is None:
                    lb = lc[fb] = vb.lower()
                rs = table.get((la, lb))
                if rs:
                    out.extend(rs)
                    if rs.__class__ is _DupBucket:
                        multi = True
            else:
                multi = True
                for la in _texts(va):
                    for lb in _texts(vb):
                        rs = table.get((la, lb))
                        if rs:
                            out.extend(rs)
        for fld, find, table in self.lit_index:
            v = flat.get(fld)
            if v is None:
                continue
            if type(v) is str:
                low = lc.get(fld)
                if low is None:
                    low = lc[fld] = v.lower()
            elif type(v) is list:
                low = "\x00".join(t.lower() for t in map(as_text, v) if t is not None)
            else:
                t = as_text(v)
                if t is None:
                    continue
                low = t.lower()
            for lit in find(low):
                rs = table[lit]
                out.extend(rs)
                if rs.__class__ is _DupBucket:
                    multi = True
        for fld, rs in self.field_index:
            if flat.get(fld) is not None:
                out.extend(rs)
                if rs.__class__ is _DupBucket:
                    multi = True
        out.extend(self.always)
        if multi and len(out) > 1:
            out = list(dict.fromkeys(out))
        return out

    def match(self, flat: dict, lc: dict) -> list[DetectionRule]:
        """The rules matching ``flat`` (``lc``: the per-event scratch dict with the
        event time under ``TS_KEY``), in rule-file order."""
        out = [r for r in self.candidates(flat, lc) if r.fn(flat, lc)]
        if len(out) > 1:
            out.sort(key=_order)
        return out


def _order(r: DetectionRule) -> int:
    return r.meta.order


# --- RuleSet --------------------------------------------------------------------------


class RuleSet:
    """A loaded, compiled rule set. Immutable after :meth:`load`; safe to share."""

    def __init__(
        self,
        detections: list[DetectionRule],
        correlations: list[CorrelationRule],
        issues: list[RuleIssue],
        sources: list[str],
    ):
        self.detections = detections
        self.correlations = correlations
        self.issues = issues  # warnings (and errors, when loaded with collect=True)
        self.sources = sources
        #: the placeholder values the rules were expanded with (rules.placeholders)
        self.placeholders = Placeholders()
        self.placeholders_used: set[str] = set()
        self.by_id: dict[str, DetectionRule | CorrelationRule] = {r.meta.id: r for r in [*detections, *correlations]}
        self._parts = {k: _Partition([r for r in detections if k in r.kinds]) for k in STREAM_KINDS}
        self._other = _Partition([r for r in detections if r.kinds == frozenset(STREAM_KINDS)])

    def __len__(self) -> int:
        return len(self.detections) + len(self.correlations)

    # -- loading --

    @classmethod
    def load(
        cls, paths: list[Path | str], *, collect: bool = False, placeholders: list[Path | str] | None = None
    ) -> "RuleSet | tuple[RuleSet, list[RuleIssue]]":
        """Load every ``*.yml``/``*.yaml`` under ``paths`` (files or directories).

        Pure: reads files, touches no global state. Raises :class:`RuleLoadError`
        listing every error of the whole set unless ``collect`` is True; then
        returns ``(ruleset_of_the_good_rules, issues)``. ``placeholders``: more
        placeholder files (:mod:`rules.placeholders`), applied after the pack's
        defaults and the ``*.placeholders.yml`` files under ``paths``.
        """
        rs, issues = _load(paths, placeholders)
        if collect:
            return rs, issues
        errors = [i for i in issues if i.severity == "error"]
        if errors:
            raise RuleLoadError(issues)
        return rs

    # -- matching --

    def match(self, event_kind: str, flat: dict[str, Any], ts: float) -> list[RuleHit]:
        """Detection rules matching one event (``Event.kind``, ``Event.flat``, ``Event.ts``).

        Never raises on event content; missing fields simply do not match.
        """
        lc: dict[str, Any] = {TS_KEY: ts}
        return [r.hit(event_kind, flat, lc, ts) for r in self._parts.get(event_kind, self._other).match(flat, lc)]

    def match_rules(self, event_kind: str, flat: dict[str, Any], ts: float) -> list[DetectionRule]:
        """The rules :meth:`match` would return hits of, in the same order, without
        building the hits (the runtime builds them only for rules that alert)."""
        return self._parts.get(event_kind, self._other).match(flat, {TS_KEY: ts})

    def matcher(self, rule_ids: "set[str] | frozenset[str]", event_kind: str) -> "_Partition":
        """An index over just ``rule_ids`` (detection rules of ``event_kind``):
        ``.match(flat, {TS_KEY: ts})`` -> matching rules, as :meth:`match_rules`."""
        return _Partition([r for r in self.detections if r.meta.id in rule_ids and event_kind in r.kinds])

    # -- tests --

    def rule_tests(self) -> "Iterator[RuleTestCase]":
        """Embedded test cases (``x_tests`` and sibling ``*.tests.yml``), see :mod:`rules.testing`."""
        from .testing import iter_rule_tests

        return iter_rule_tests(self)

    def referenced_fields(self) -> set[str]:
        out: set[str] = set()
        for r in self.detections:
            for d in r.detections.values():
                stack = list(d.items)
                while stack:
                    it = stack.pop()
                    if isinstance(it, CompiledDetection):
                        stack.extend(it.items)
                    elif it.field:
                        out.add(it.field)
        return out


def validate_paths(paths: list[Path | str], placeholders: list[Path | str] | None = None) -> list[RuleIssue]:
    """Every issue (errors and warnings) of the rule files under ``paths``; for
    ``ueba rules validate``. Includes where correlations keep their state
    (:func:`rules.correlation.place`: a warning for those no stream partition covers)."""
    rs, issues = _load(paths, placeholders)
    from .correlation import place

    return issues + place(rs).issues


class RuleSetHolder:
    """The current rule set, swapped atomically on a successful reload.

    ``current`` is read without a lock (a reference read is atomic in CPython);
    :meth:`reload` keeps the last good set when the new one has errors.
    """

    def __init__(self, initial: RuleSet | None = None):
        self._current = initial
        self._lock = threading.Lock()

    @property
    def current(self) -> RuleSet | None:
        return self._current

    def reload(self, paths: list[Path | str], placeholders: list[Path | str] | None = None) -> tuple[bool, list[RuleIssue]]:
        """(swapped, issues). Swaps only if the new set has no errors."""
        with self._lock:
            rs, issues = _load(paths, placeholders)
            if any(i.severity == "error" for i in issues):
                return False, issues
            self._current = rs
            return True, issues


# --- the loader proper ---------------------------------------------------------------


class _Ctx:
    def __init__(self) -> None:
        self.issues: list[RuleIssue] = []
        self.order = 0
        self.placeholders = Placeholders()
        self.used_placeholders: set[str] = set()

    def err(self, file: str, line: int | None, msg: str, rule_id: str | None = None) -> None:
        self.issues.append(RuleIssue(file, line, msg, "error", rule_id))

    def warn(self, file: str, line: int | None, msg: str, rule_id: str | None = None) -> None:
        self.issues.append(RuleIssue(file, line, msg, "warning", rule_id))


def _load(paths: list[Path | str], placeholders: list[Path | str] | None = None) -> tuple[RuleSet, list[RuleIssue]]:
    ctx = _Ctx()
    rule_files, test_files, path_issues = expand_paths(paths)
    ctx.issues.extend(path_issues)
    ph_files = [f for f in rule_files if is_placeholder_file(f)]
    rule_files = [f for f in rule_files if not is_placeholder_file(f)]
    ctx.placeholders, ph_issues = load_placeholders([DEFAULT_PLACEHOLDERS, *ph_files, *(placeholders or [])])
    ctx.issues.extend(ph_issues)
    raw_det: list[tuple[str, LineDict]] = []
    raw_corr: list[tuple[str, LineDict]] = []
    for f in rule_files:
        docs, issues = read_yaml_documents(f)
        ctx.issues.extend(issues)
        for doc in docs:
            if not isinstance(doc, dict):
                ctx.err(str(f), getattr(doc, "line", 1) or 1, "a rule must be a YAML mapping")
                continue
            if "action" in doc:
                ctx.err(str(f), doc.line_of("action"), f"unsupported: Sigma collection action {doc.get('action')!r}")
                continue
            if "correlation" in doc:
                raw_corr.append((str(f), doc))
            elif "filter" in doc and "detection" not in doc:
                ctx.err(str(f), doc.line, "unsupported: Sigma filter documents (write the exclusion into the rule)")
            else:
                raw_det.append((str(f), doc))

    ids: dict[str, tuple[str, int]] = {}
    names: dict[str, str] = {}
    detections: list[DetectionRule] = []
    for f, doc in raw_det:
        n_before = len([i for i in ctx.issues if i.severity == "error"])
        r = _load_detection(ctx, f, doc)
        n_after = len([i for i in ctx.issues if i.severity == "error"])
        if r is not None and _register(ctx, ids, names, r.meta, doc) and n_after == n_before:
            detections.append(r)
    corr_pairs: list[tuple[CorrelationRule, str, LineDict]] = []
    for f, doc in raw_corr:
        n_before = len([i for i in ctx.issues if i.severity == "error"])
        c = _load_correlation(ctx, f, doc)
        n_after = len([i for i in ctx.issues if i.severity == "error"])
        if c is not None and _register(ctx, ids, names, c.meta, doc) and n_after == n_before:
            corr_pairs.append((c, f, doc))

    known = {r.meta.id for r in detections} | {c.meta.id for c, _, _ in corr_pairs}
    by_id_det = {r.meta.id: r for r in detections}

    def resolve(ref: str) -> str | None:
        if ref in known:
            return ref
        rid = names.get(ref)
        return rid if rid in known else None

    # correlations: resolve references (by id or name)
    correlations: list[CorrelationRule] = []
    for c, f, doc in corr_pairs:
        refs = []
        ok = True
        cdoc = doc.get("correlation", {})
        for i, ref in enumerate(c.rules):
            rid = resolve(ref)
            if rid is None:
                line = cdoc["rules"].line_of(i) if isinstance(cdoc.get("rules"), LineList) else line_at(doc, ["correlation", "rules"])
                ctx.err(f, line, f"correlation references unknown (or broken) rule {ref!r}", c.meta.id)
                ok = False
            elif rid == c.meta.id:
                ctx.err(f, line_at(doc, ["correlation", "rules"]), "correlation references itself", c.meta.id)
                ok = False
            else:
                refs.append(rid)
        if not ok:
            continue
        c.rules = tuple(refs)
        aliases: dict[str, dict[str, str]] = {}
        for alias, mapping in c.aliases.items():
            aliases[alias] = {}
            for ref, fld in mapping.items():
                rid = resolve(ref)
                if rid is None:
                    ctx.err(f, line_at(doc, ["correlation", "aliases", alias]), f"alias {alias!r} maps unknown rule {ref!r}", c.meta.id)
                    ok = False
                else:
                    aliases[alias][rid] = fld
        if not ok:
            continue
        c.aliases = aliases
        correlations.append(c)

    # correlation chains must not loop
    corr_ids = {c.meta.id: c for c in correlations}
    order = _topo_order(ctx, correlations, corr_ids)
    correlations = [corr_ids[i] for i in order]

    # stateful specs: resolve announcers
    for r in detections:
        if r.stateful is not None:
            refs = []
            for ref in r.stateful.announced_by:
                rid = resolve(ref)
                if rid is None or rid not in by_id_det:
                    ctx.err(r.meta.file, r.meta.line, f"x_ueba_stateful.announced-by references unknown detection rule {ref!r}", r.meta.id)
                else:
                    refs.append(rid)
            r.stateful.announced_by = tuple(refs)

    # generate: false (the Sigma default) -> referenced rules feed correlations only
    generated: set[str] = set()
    referenced: set[str] = set()
    for c in correlations:
        referenced.update(c.rules)
        if c.generate:
            generated.update(c.rules)
    for r in detections:
        if r.stateful is not None:
            referenced.update(r.stateful.announced_by)
            referenced.add(r.meta.id)
    for rid in referenced - generated:
        rule = by_id_det.get(rid)  # a correlation stays an alert even when another one builds on it
        if rule is not None:
            rule.meta.alert = False

    # sibling tests files
    if test_files:
        from .testing import attach_test_files

        attach_test_files(ctx, test_files, {**by_id_det, **corr_ids}, names)

    detections = [r for r in detections if r.stateful is None or all(by_id_det.get(a) for a in r.stateful.announced_by)]
    rs = RuleSet(detections, correlations, [], [str(p) for p in rule_files])
    rs.issues = ctx.issues
    rs.placeholders = ctx.placeholders
    rs.placeholders_used = set(ctx.used_placeholders)
    return rs, ctx.issues


def _topo_order(ctx: _Ctx, corrs: list[CorrelationRule], by_id: dict[str, CorrelationRule]) -> list[str]:
    out: list[str] = []
    state: dict[str, int] = {}

    def visit(cid: str, stack: list[str]) -> bool:
        s = state.get(cid)
        if s == 2:
            return True
        if s == 1:
            c = by_id[cid]
            ctx.err(c.meta.file, c.meta.line, "correlation references form a cycle: " + " -> ".join(stack + [cid]), cid)
            return False
        state[cid] = 1
        ok = all(visit(d, stack + [cid]) for d in by_id[cid].rules if d in by_id)
        state[cid] = 2
        if ok:
            out.append(cid)
        return ok

    for c in corrs:
        visit(c.meta.id, [])
    return out


def _register(ctx: _Ctx, ids: dict[str, tuple[str, int]], names: dict[str, str], meta: RuleMeta, doc: LineDict) -> bool:
    if meta.id in ids:
        f0, l0 = ids[meta.id]
        ctx.err(meta.file, doc.line_of("id"), f"duplicate rule id {meta.id} (first in {f0}:{l0})", meta.id)
        return False
    ids[meta.id] = (meta.file, meta.line)
    if meta.name:
        if meta.name in names:
            ctx.err(meta.file, doc.line_of("name"), f"duplicate rule name {meta.name!r}", meta.id)
            return False
        names[meta.name] = meta.id
    return True


def _pysigma_issues(ctx: _Ctx, f: str, doc: LineDict, errors: list[SigmaError], rid: str | None, detection_too: bool) -> None:
    # the JSON schema already reported most metadata problems; one message per line is enough
    schema_lines = {i.line for i in ctx.issues if i.file == f and i.message.startswith("schema:")}
    for e in errors:
        key = next((k for cls, k in _ERROR_KEYS.items() if isinstance(e, cls)), None)
        if key is None and not detection_too:
            continue  # detection problems are reported by our own item-wise parse, with lines
        msg = getattr(e, "message", None) or str(e).split(" in ")[0]
        line = doc.line_of(key) if key else doc.line
        if key and line in schema_lines:
            continue
        ctx.err(f, line, msg, rid)


def _meta(ctx: _Ctx, f: str, doc: LineDict) -> RuleMeta:
    rid = doc.get("id")
    if not isinstance(rid, str) or not rid:
        rid = str(uuid.uuid5(_NS, f"{Path(f).name}:{doc.get('title')}"))
        ctx.warn(f, doc.line, f"rule has no id; using derived id {rid}")
    level = doc.get("level")
    if level is None:
        ctx.warn(f, doc.line, "rule has no level; using 'medium'", rid)
        level = "medium"
    tags = doc.get("tags") or []
    if isinstance(tags, list):
        for i, t in enumerate(tags):
            if isinstance(t, str):
                p = tag_problem(t)
                if p:
                    ctx.warn(f, tags.line_of(i) if isinstance(tags, LineList) else doc.line_of("tags"), p, rid)
    fps = doc.get("falsepositives") or []
    if isinstance(fps, str):
        fps = [fps]
    ctx.order += 1
    return RuleMeta(
        id=rid,
        name=doc.get("name") if isinstance(doc.get("name"), str) else None,
        title=str(doc.get("title", "")),
        description=str(doc.get("description", "") or ""),
        level=str(level),
        status=doc.get("status"),
        tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
        falsepositives=tuple(str(x) for x in fps) if isinstance(fps, list) else (),
        file=f,
        line=doc.line,
        order=ctx.order,
    )


def _kinds(ctx: _Ctx, f: str, doc: LineDict, rid: str) -> frozenset[str] | None:
    ls = doc.get("logsource")
    if not isinstance(ls, dict):
        return None
    product = ls.get("product")
    service = ls.get("service")
    if product == PRODUCT:
        if service is None:
            return frozenset(STREAM_KINDS)
        if service in STREAM_KINDS:
            return frozenset((service,))
        ctx.err(f, ls.line_of("service"), f"logsource service {service!r} is not one of {', '.join(STREAM_KINDS)} (product {PRODUCT})", rid)
        return None
    ctx.warn(
        f,
        doc.line_of("logsource"),
        f"logsource product {product!r} is not {PRODUCT!r}: rule is tried on every stream and matches where its fields exist",
        rid,
    )
    return frozenset(STREAM_KINDS)


def _tests_of(ctx: _Ctx, f: str, doc: LineDict, meta: RuleMeta, sequences: bool) -> None:
    t = doc.get("x_tests")
    if t is None:
        return
    line = doc.line_of("x_tests")
    if not isinstance(t, dict):
        ctx.err(f, line, "x_tests must be a mapping with 'match' and/or 'nomatch' lists", meta.id)
        return
    for key in t:
        if key not in ("match", "nomatch"):
            ctx.err(f, t.line_of(key), f"x_tests: unknown key {key!r} (use 'match' and 'nomatch')", meta.id)
    for key in ("match", "nomatch"):
        cases = t.get(key, [])
        if not isinstance(cases, list):
            ctx.err(f, t.line_of(key), f"x_tests.{key} must be a list", meta.id)
            continue
        for i, case in enumerate(cases):
            cl = cases.line_of(i) if isinstance(cases, LineList) else t.line_of(key)
            if sequences:
                if not (isinstance(case, list) and case and all(isinstance(e, dict) for e in case)):
                    ctx.err(f, cl, f"x_tests.{key}[{i}]: a correlation test is a non-empty list of events", meta.id)
            elif not isinstance(case, dict):
                ctx.err(f, cl, f"x_tests.{key}[{i}]: a test event is a mapping of fields", meta.id)
        meta.tests[key] = cases
    meta.tests_line = line


# Sigma spec names pySigma 2.0 does not map: utf16le is what pySigma calls wide.
_MODIFIER_ALIASES = {"utf16le": "wide"}


def _alias_modifiers(key: str | None) -> str | None:
    if key is None or "|" not in key:
        return key
    f, *mods = key.split("|")
    return "|".join([f, *(_MODIFIER_ALIASES.get(m, m) for m in mods)])


def _item_key(key: Any) -> str | None:
    if key is None:
        return None
    return str(key)


def _expand_placeholders(ctx: _Ctx, it: SigmaDetectionItem) -> None:
    """Replace ``%name%`` placeholders (``expand`` modifier) by the values of the
    placeholder files (:mod:`rules.placeholders`): OR-ed into the item's values,
    or one OR-group per value under ``|all``; an empty list matches nothing."""
    if not any(isinstance(v, (SigmaString, SigmaRegularExpression)) for v in it.value):
        return
    out: list[Any] = []
    changed = False
    for v in it.value:
        ex = expand_value(v, ctx.placeholders, ctx.used_placeholders)
        if len(ex) == 1 and ex[0] is v:
            out.append(v)
            continue
        changed = True
        if not ex or it.value_linking is ConditionAND:
            out.append(SigmaExpansion(ex))
        else:
            out.extend(ex)
    if changed:
        it.value = out


def _build_detection(ctx: _Ctx, f: str, rid: str, name: str, definition: Any, line: int) -> tuple[SigmaDetection, CompiledDetection] | None:
    """One named detection, parsed item by item so that errors carry their line."""
    sig_items: list[Any] = []
    compiled: list[Any] = []
    ok = True

    def add_item(key: str | None, value: Any, kline: int) -> None:
        nonlocal ok
        try:
            if isinstance(value, dict):
                raise ValueError("a detection value cannot be a mapping")
            if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
                raise ValueError("detection values must be scalars")
            it = SigmaDetectionItem.from_mapping(_alias_modifiers(key), value)
            _expand_placeholders(ctx, it)
            c = compile_item(it, key if key is not None else "(keywords)")
            c.line = kline
        except KeyError as exc:
            ctx.err(f, kline, (
                f"detection {name!r}, {key}: placeholder %{exc.args[0]}% is not defined (define it under 'vars' "
                f"in a *.placeholders.yml file next to the rules; defined: {', '.join(sorted(ctx.placeholders.values)) or 'none'})"), rid)
            ok = False
            return
        except UnsupportedError as exc:
            ctx.err(f, kline, f"detection {name!r}, {key or 'keywords'}: {exc}", rid)
            ok = False
            return
        except (SigmaError, ValueError, TypeError) as exc:
            msg = getattr(exc, "message", None) or str(exc)
            mod = re.search(r"Unknown modifier '?([^'\"]+)'?", msg)
            if mod:
                msg = f"unsupported: unknown modifier {mod.group(1).strip(chr(39))!r}"
            ctx.err(f, kline, f"detection {name!r}, {key or 'keywords'}: {msg}", rid)
            ok = False
            return
        sig_items.append(it)
        compiled.append(c)

    if isinstance(definition, dict):
        if not definition:
            ctx.err(f, line, f"detection {name!r} is empty", rid)
            return None
        for key, value in definition.items():
            add_item(_item_key(key), value, definition.line_of(key) if isinstance(definition, LineDict) else line)
    elif isinstance(definition, list):
        if not definition:
            ctx.err(f, line, f"detection {name!r} is empty", rid)
            return None
        if all(not isinstance(v, (dict, list)) for v in definition):
            add_item(None, list(definition), line)
        else:
            for i, sub in enumerate(definition):
                sline = definition.line_of(i) if isinstance(definition, LineList) else line
                if isinstance(sub, dict):
                    r = _build_detection(ctx, f, rid, name, sub, sline)
                    if r is None:
                        ok = False
                    else:
                        sig_items.append(r[0])
                        compiled.append(r[1])
                elif isinstance(sub, list):
                    ctx.err(f, sline, f"detection {name!r}: nested lists are not allowed", rid)
                    ok = False
                else:
                    add_item(None, sub, sline)
    elif definition is None:
        ctx.err(f, line, f"detection {name!r} is empty", rid)
        return None
    else:
        add_item(None, definition, line)
    if not ok or not sig_items:
        return None
    det = SigmaDetection(detection_items=sig_items)
    return det, compile_detection(det, compiled)


def _load_detection(ctx: _Ctx, f: str, doc: LineDict) -> DetectionRule | None:
    meta = _meta(ctx, f, doc)
    rid = meta.id
    errors_before = len(ctx.issues)
    ctx.issues.extend(RuleIssue(i.file, i.line, i.message, i.severity, rid) for i in schema_issues(f, doc))
    try:
        srule = SigmaRule.from_dict(dict(doc), collect_errors=True)
        _pysigma_issues(ctx, f, doc, list(srule.errors), rid, detection_too=False)
    except SigmaError as exc:
        _pysigma_issues(ctx, f, doc, [exc], rid, detection_too=False)
    except Exception as exc:  # pySigma chokes on some malformed input the schema already reports
        if len(ctx.issues) == errors_before:
            ctx.err(f, doc.line, f"cannot parse rule: {exc}", rid)
    kinds = _kinds(ctx, f, doc, rid)
    if meta.level not in LEVELS:
        return None
    det = doc.get("detection")
    if not isinstance(det, dict):
        return None
    cond = det.get("condition")
    if cond is None:
        ctx.err(f, doc.line_of("detection"), "detection has no condition", rid)
        return None
    conds = cond if isinstance(cond, list) else [cond]
    if not conds or not all(isinstance(c, str) for c in conds):
        ctx.err(f, det.line_of("condition"), "condition must be a string or a list of strings", rid)
        return None
    detections: dict[str, CompiledDetection] = {}
    ok = True
    for name, definition in det.items():
        if name == "condition":
            continue
        if name == "timeframe":
            ctx.err(f, det.line_of(name), "unsupported: detection timeframe (use a correlation rule)", rid)
            ok = False
            continue
        built = _build_detection(ctx, f, rid, str(name), definition, det.line_of(name))
        if built is None:
            ok = False
        else:
            detections[str(name)] = built[1]
    if not detections:
        if ok:
            ctx.err(f, doc.line_of("detection"), "detection defines no search identifiers", rid)
        return None
    names = list(detections)
    trees = []
    compiled_conds: list[CompiledCondition] = []
    used: set[str] = set()
    for c in conds:
        cline = det.line_of("condition")
        try:
            tree = SigmaCondition(c, None).parse(postprocess=False)  # type: ignore[arg-type]
            cc = compile_condition(tree, detections, names)
        except UnsupportedError as exc:
            ctx.err(f, cline, f"condition {c!r}: {exc}", rid)
            ok = False
            continue
        except (SigmaError, ValueError) as exc:
            if not ok and "undefined detection" in str(exc):
                continue  # the broken detection was already reported
            msg = getattr(exc, "message", None) or str(exc)
            ctx.err(f, cline, f"condition {c!r}: {msg}", rid)
            ok = False
            continue
        trees.append(tree)
        compiled_conds.append(cc)
        used |= cc.used
    if not ok or not compiled_conds:
        return None
    exact = _exact_fields(compiled_conds)
    if exact:
        # the index guarantees these fields' values: test the other items first
        for d in detections.values():
            reorder_for_prefilter(d, exact)
        compiled_conds = [compile_condition(t, detections, names) for t in trees]
    for n in names:
        if n not in used:
            ctx.warn(f, det.line_of(n), f"detection {n!r} is not used by the condition", rid)
    if len(compiled_conds) == 1:
        cond_c = compiled_conds[0]
    else:
        from .compiler import _or_pre

        fns = [c.fn for c in compiled_conds]
        cond_c = CompiledCondition(
            fn=lambda flat, lc: any(fn(flat, lc) for fn in fns), pre=_or_pre([c.pre for c in compiled_conds]), used=used
        )
    stateful = _stateful_spec(ctx, f, doc, rid)
    _tests_of(ctx, f, doc, meta, sequences=stateful is not None)
    if kinds is None:
        return None
    from .codegen import rule_function

    return DetectionRule(
        meta=meta,
        kinds=kinds,
        condition=cond_c,
        trees=trees,
        detections=detections,
        fn=rule_function(trees, detections, names) or cond_c.fn,
        stateful=stateful,
    )


def _exact_fields(conds: list[CompiledCondition]) -> set[str]:
    if len(conds) != 1 or not conds[0].pre or len(conds[0].pre) != 1:
        return set()
    fld, kind, _ = conds[0].pre[0]
    if kind == "eq":
        return {fld}
    if kind == "eq2":
        return set(fld)
    return set()


def _timespan(ctx: _Ctx, f: str, line: int, text: Any, rid: str) -> float | None:
    from sigma.correlations import SigmaCorrelationTimespan

    try:
        return float(SigmaCorrelationTimespan(str(text)).seconds)
    except SigmaError as exc:
        ctx.err(f, line, getattr(exc, "message", None) or str(exc), rid)
        return None


def _stateful_spec(ctx: _Ctx, f: str, doc: LineDict, rid: str) -> StatefulSpec | None:
    s = doc.get("x_ueba_stateful")
    if s is None:
        return None
    line = doc.line_of("x_ueba_stateful")
    if not isinstance(s, dict):
        ctx.err(f, line, "x_ueba_stateful must be a mapping", rid)
        return None
    known = {"type", "value", "group-by", "announced-by", "timespan", "warmup"}
    for k in s:
        if k not in known:
            ctx.err(f, s.line_of(k), f"x_ueba_stateful: unknown key {k!r}", rid)
    typ = s.get("type")
    if typ not in STATEFUL_TYPES:
        ctx.err(f, s.line_of("type"), f"unsupported: x_ueba_stateful type {typ!r} (supported: {', '.join(STATEFUL_TYPES)})", rid)
        return None
    value = s.get("value")
    gb = s.get("group-by", [])
    ann = s.get("announced-by", [])
    if isinstance(gb, str):
        gb = [gb]
    if isinstance(ann, str):
        ann = [ann]
    bad = False
    if not isinstance(value, str) or not value:
        ctx.err(f, s.line_of("value"), "x_ueba_stateful.value must name a field", rid)
        bad = True
    if not isinstance(gb, list) or not all(isinstance(x, str) for x in gb):
        ctx.err(f, s.line_of("group-by"), "x_ueba_stateful.group-by must be a list of fields", rid)
        bad = True
    if not isinstance(ann, list) or not ann or not all(isinstance(x, str) for x in ann):
        ctx.err(f, s.line_of("announced-by"), "x_ueba_stateful.announced-by must list rule ids or names", rid)
        bad = True
    warm = s.get("warmup", "first_seen")
    if warm not in ("first_seen", "none"):
        ctx.err(f, s.line_of("warmup"), "x_ueba_stateful.warmup must be 'first_seen' or 'none'", rid)
        bad = True
    ts = _timespan(ctx, f, s.line_of("timespan"), s.get("timespan", "30d"), rid)
    if bad or ts is None:
        return None
    return StatefulSpec(typ, value, tuple(gb), tuple(ann), ts, warm == "first_seen")


def _load_correlation(ctx: _Ctx, f: str, doc: LineDict) -> CorrelationRule | None:
    meta = _meta(ctx, f, doc)
    rid = meta.id
    ctx.issues.extend(RuleIssue(i.file, i.line, i.message, i.severity, rid) for i in schema_issues(f, doc))
    c = doc.get("correlation")
    if not isinstance(c, dict):
        return None
    cline = doc.line_of("correlation")
    try:
        srule = SigmaCorrelationRule.from_dict(dict(doc), collect_errors=True)
        errors = list(srule.errors)
    except SigmaError as exc:
        errors = [exc]
    except Exception as exc:
        errors = []
        ctx.err(f, cline, f"cannot parse correlation: {exc}", rid)
    for e in errors:
        if isinstance(e, SigmaCorrelationTypeError):
            line = c.line_of("type")
        elif isinstance(e, SigmaTimespanError):
            line = c.line_of("timespan")
        elif isinstance(e, SigmaCorrelationConditionError):
            line = c.line_of("condition")
        else:
            key = next((k for cls, k in _ERROR_KEYS.items() if isinstance(e, cls)), None)
            line = doc.line_of(key) if key else cline
        ctx.err(f, line, getattr(e, "message", None) or str(e), rid)
    if errors:
        return None
    typ = c.get("type")
    if typ not in SUPPORTED_CORRELATIONS:
        ctx.err(f, c.line_of("type"), f"unsupported: correlation type {typ!r}", rid)
        return None
    rules = c.get("rules")
    if not isinstance(rules, list) or not rules:
        ctx.err(f, c.line_of("rules") if "rules" in c else cline, "correlation needs a non-empty 'rules' list", rid)
        return None
    if typ in ("temporal", "temporal_ordered") and len(rules) < 2:
        ctx.err(f, c.line_of("rules"), f"{typ} correlation needs at least two rules", rid)
        return None
    gb = c.get("group-by") or []
    if isinstance(gb, str):
        gb = [gb]
    timespan = _timespan(ctx, f, c.line_of("timespan"), c.get("timespan"), rid)
    if timespan is None:
        return None
    cond = c.get("condition")
    op, threshold, vfield = "gte", float(len(rules) if typ.startswith("temporal") else 1), None
    if isinstance(cond, str):
        ctx.err(f, c.line_of("condition"), "unsupported: extended (string) correlation conditions", rid)
        return None
    if isinstance(cond, dict):
        ops = [k for k in cond if k in _OPS]
        op = ops[0]
        threshold = float(cond[op])
        vfield = cond.get("field")
        if "percentile" in cond:
            ctx.err(f, c.line_of("condition"), "unsupported: percentile condition", rid)
            return None
        if isinstance(vfield, list):
            if len(vfield) != 1:
                ctx.err(f, c.line_of("condition"), "unsupported: more than one condition field", rid)
                return None
            vfield = vfield[0]
    if typ.startswith("value_") and not vfield:
        ctx.err(f, c.line_of("condition") if "condition" in c else cline, f"{typ} needs condition.field", rid)
        return None
    if typ.startswith("temporal") and op not in ("gt", "gte"):
        ctx.err(f, c.line_of("condition"), f"unsupported: {typ} with condition {op!r} (only gt/gte)", rid)
        return None
    aliases_raw = c.get("aliases") or {}
    aliases: dict[str, dict[str, str]] = {}
    if isinstance(aliases_raw, dict):
        for alias, mapping in aliases_raw.items():
            if not isinstance(mapping, dict):
                ctx.err(f, aliases_raw.line_of(alias), f"alias {alias!r} must map rule -> field", rid)
                return None
            aliases[str(alias)] = {str(k): str(v) for k, v in mapping.items()}
    for alias in aliases:
        if alias not in gb:
            ctx.warn(f, c.line_of("aliases"), f"alias {alias!r} is not used in group-by", rid)
    _tests_of(ctx, f, doc, meta, sequences=True)
    return CorrelationRule(
        meta=meta,
        type=typ,
        rules=tuple(str(r) for r in rules),
        group_by=tuple(str(g) for g in gb),
        timespan=timespan,
        timespan_text=str(c.get("timespan")),
        op=op,
        threshold=threshold,
        value_field=vfield,
        aliases=aliases,
        generate=_generate_flag(ctx, f, doc, c, rid),
    )


def _generate_flag(ctx: _Ctx, f: str, doc: LineDict, c: LineDict, rid: str) -> bool:
    """Sigma's ``generate``: the specification's text and pySigma read it inside
    ``correlation:``, the specification's JSON schema at the top level. Both
    are accepted (pySigma and the schema check each is a boolean); if both are
    set they must agree."""
    inner, outer = c.get("generate"), doc.get("generate")
    if inner is not None and outer is not None and inner != outer:
        ctx.err(f, doc.line_of("generate"), "generate is set both at the top level and inside correlation, "
                "with different values", rid)
        return False
    return (inner if inner is not None else outer) is True


__all__ = [
    "DERIVED_FIELDS",
    "CorrelationRule",
    "DetectionRule",
    "MatchedField",
    "RuleHit",
    "RuleSet",
    "RuleSetHolder",
    "validate_paths",
]
