"""Sigma rules as data: load, validate, compile and match in-process.

Engine API (called by the runtime and the CLI)
----------------------------------------------
``RuleSet.load(paths: list[Path | str], *, collect: bool = False, placeholders=None) -> RuleSet``
    Load every ``*.yml``/``*.yaml`` under ``paths`` (files or directories,
    recursively; ``*.tests.yml`` are test files, ``*.placeholders.yml``
    placeholder files). Pure. Raises :class:`RuleLoadError` (a ``ValueError``)
    whose ``.errors`` lists *every* :class:`RuleIssue` (``file``, ``line``,
    ``message``, ``severity``, ``rule_id``) of the whole set. ``collect=True``
    never raises and returns ``(ruleset_of_the_rules_that_loaded, issues)``.
    ``placeholders``: more placeholder files (see "Placeholders" below).
``ruleset.match(event_kind: str, flat: dict, ts: float) -> list[RuleHit]``
    Detection rules matching one event (``Event.kind``, ``Event.flat``,
    ``Event.ts``). Never raises on event content. Rules are partitioned by
    stream (logsource service) and indexed by what they require: an exact
    value of one field or of a pair of fields (``event.action`` +
    ``ueba.resource.type``; booleans by their text), a literal the field must
    contain (found for all rules at once with one RE2 multi-pattern set, or
    Aho-Corasick), or a field that must be present; a condition that can never
    hold (``x and not x``) is not indexed at all. An event only tries the rules
    its fields can satisfy (about 6 of 500 in ``python -m rules.bench``). Each
    rule's condition is one generated Python function (:mod:`rules.codegen`).
    ``ruleset.match_rules(...)`` returns the matching rules without building
    hits (the runtime's path).
``CorrelationEngine(ruleset, *, max_groups=100_000, max_events=10_000, max_values=10_000, only=None)``
    (semantics, windows, partitions and bounds: :mod:`rules.correlation`)
    ``.process(kind, flat, ts, hits, state=None) -> list[RuleHit]`` with the
    hits of ``match`` for the same event; ``state``: the event's partition-key
    :class:`~rules.correlation.KeyState` (``.new_state()``, ``.dumps(state) ->
    bytes``, ``.loads(bytes)``: what the key's envelope stores), or None for
    the engine's own process-local state (``.advance(watermark_ts)`` closes
    its windows of ``lt``/``lte``/``eq``/``neq`` conditions; ``.to_bytes()`` /
    ``CorrelationEngine.from_bytes(data, ruleset)``). Event time only.
``place(ruleset, partitions=None) -> Placement``
    Which partition (``access``, ``api``, ``telemetry`` by identity;
    ``source``: logins by ``source.ip``) keeps each correlation's state, or
    ``local``; warnings for correlations no partition covers.
    ``streams.rulerun.RuleRunner`` runs them in the worker and in replay.
``RuleHit``
    ``rule_id`` (uuid), ``name``, ``title``, ``description``, ``level``,
    ``tags``, ``falsepositives``, ``rule_type`` (``detection``, a correlation
    type or ``unannounced_value``), ``ts``, ``event_kind``, ``matched``
    (:class:`MatchedField`: selection, key, field, event value, rule
    patterns; empty on non-alert hits), ``group_by``/``group_key``
    (correlations), ``alert`` (False for rules that only feed correlations,
    Sigma ``generate: false``, and for the candidate hits of stateful rules:
    alert on ``alert`` hits, pass all hits to ``process``), ``extra``;
    ``.techniques`` -> ``[(framework, id, tactic)]``, ``.technique_ids``,
    ``.to_dict()``.
``techniques(tags) -> list[tuple[str, str, str | None]]``
    ``attack.t1110.003`` -> ``("attack", "T1110.003", "credential-access")``
    (tactic from the rule's tactic tag), ``atlas.aml.t0051`` ->
    ``("atlas", "AML.T0051", None)``.
``ruleset.rule_tests()`` / ``run_rule_tests(ruleset) -> RuleTestReport``
    Embedded ``x_tests`` (see :mod:`rules.testing`); ``report.ok``,
    ``report.text()``. For ``ueba rules test PATH``.
``validate_paths(paths, placeholders=None) -> list[RuleIssue]``
    For ``ueba rules validate PATH``: errors and warnings (including
    correlations whose state cannot be partitioned), never raises.
``RuleSetHolder(initial)``: ``.current``; ``.reload(paths) -> (swapped, issues)``
    swaps atomically only when the new set has no errors (hot reload).

Logsource mapping
-----------------
``product: ai-ueba`` with ``service: access | api | telemetry`` selects the
input stream (``Event.kind``); without ``service`` the rule runs on all three.
Rules for other products (``product: windows`` ...) load with a warning and
are tried on every stream; they match wherever their fields exist.
Field names are our flat dotted ECS names (``taxonomy`` is not used for
mapping): ``user.name``, ``event.action``, ``ueba.gen_ai.prompt`` ...

Derived fields
--------------
``ueba.time.hour_utc`` (0-23) and ``ueba.time.weekday`` (ISO, 1 = Monday ..
7 = Sunday) are computed from the event time when the event does not carry
them. ``@timestamp|hour`` (and ``minute``/``day``/``week``/``month``/``year``)
also read the event time.

Matching semantics
------------------
* Values of a list are OR-ed (``|all``: AND); keys of a map are AND-ed; a list
  of maps is OR-ed.
* Strings are case-insensitive unless ``|cased``; ``*`` and ``?`` are
  wildcards, ``\\*`` ``\\?`` ``\\\\`` escapes; a pattern covers the whole
  value (``contains``/``startswith``/``endswith`` add the wildcards).
* A list-valued event field matches if any element matches.
* Numbers match numbers and numeric strings by value (``5`` matches ``"5"``,
  ``5.0``); a quoted ``'5'`` matches the text of a number (``5`` but not
  ``5.0``); booleans match booleans and the strings ``true``/``false``.
* ``null`` matches a missing field, ``None`` and ``[]``; ``''`` matches only
  the empty string; ``|exists: true`` a present, non-null, non-empty-list value.
* Keywords (field-less values) are case-insensitive substrings of any string
  value of the event.
* ``|re`` searches (unanchored), case-sensitive unless ``|i``; ``|m``, ``|s``;
  RE2 syntax and engine (linear time, no catastrophic backtracking on
  attacker-controlled prompts; ``\\b``, ``\\w``, ``\\d`` are ASCII). Patterns
  RE2 cannot run (lookaround, backreferences) are rejected at load.
* ``|cidr`` (IPv4 and IPv6), ``|base64``, ``|base64offset``, ``|utf16le``,
  ``|utf16be``, ``|utf16``, ``|wide``, ``|windash``, ``|gt`` ``|gte`` ``|lt``
  ``|lte`` (numeric only), ``|fieldref`` (case-insensitive equality with
  another field; with ``contains``/``startswith``/``endswith``), ``|neq``
  (pySigma's NOT: also true when the field is missing),
  ``|exists``, ``|cased`` follow pySigma, whose modifier classes do the value
  transformation.
* ``|expand`` with ``%name%`` placeholders: replaced at load by the values
  of placeholder files (below); an undefined name is a load error.
* Unsupported, rejected at load with ``unsupported: ...``: placeholders in
  ``|re`` values, timestamp parts on fields other than ``@timestamp``, Sigma
  filters, ``action:`` collections, ``timeframe``, extended (string)
  correlation conditions, ``value_percentile``.

Placeholders: the registry of sanctioned models and endpoints
-------------------------------------------------------------
Operator-maintained value lists enter rules through Sigma's ``expand``
modifier: ``url.domain|expand: '%registered_endpoints%'``. The values come
from placeholder files, YAML with a pySigma pipeline's ``vars`` mapping
(:mod:`rules.placeholders`): the pack's example values in
``rules/registry.placeholders.yml``, then every ``*.placeholders.yml`` under
the rule paths, then files passed explicitly (``placeholders=``); a later
definition of a name replaces the whole list. The shadow-AI rules read
``%registered_endpoints%`` (hosts LLM calls may go to) and
``%registered_models%`` (model ids; the default ``*`` leaves the decision to
the event's ``ueba.model.registered`` flag). Supply your own registry::

    # /etc/ueba/rules/registry.placeholders.yml
    vars:
      registered_endpoints: ['*.ai.corp.example', bedrock-runtime.eu-west-1.amazonaws.com]
      registered_models: [fraud-v3, 'churn-*']

and put it on the rule paths (``UEBA_WORKER__RULES_PATHS``, with the pack
directory) or pass it to ``RuleRunner(placeholders=[...])``. The worker
reloads the rules when the file changes and logs a warning while a
placeholder still uses the example values.

Custom attributes
-----------------
``x_tests`` (embedded tests, :mod:`rules.testing`) and ``x_ueba_stateful``
(:mod:`rules.correlation`, ``unannounced_value``: a value such as a model
artifact hash seen without a prior announcement event).
"""

from .compiler import DERIVED_FIELDS
from .correlation import CorrelationEngine, KeyState, Partition, Placement, place
from .errors import RuleIssue, RuleLoadError
from .ruleset import MatchedField, RuleHit, RuleSet, RuleSetHolder, validate_paths
from .tags import techniques
from .testing import RuleTestReport, run_rule_tests

__all__ = [
    "DERIVED_FIELDS",
    "CorrelationEngine",
    "KeyState",
    "Partition",
    "Placement",
    "MatchedField",
    "RuleHit",
    "RuleIssue",
    "RuleLoadError",
    "RuleSet",
    "RuleSetHolder",
    "RuleTestReport",
    "run_rule_tests",
    "place",
    "techniques",
    "validate_paths",
]
