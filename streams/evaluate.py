"""``ueba evaluate``: detection quality of the full pipeline on labelled data.

Runs the same :class:`~streams.replay.Replayer` as ``ueba replay`` (detector
suites, rules, the by-source stream, policy, suppression) over a labelled
data set and scores the alerts against the labels:

* with no files, the ``eval`` simulator preset is generated in memory and
  streamed straight into the pipeline (about two minutes on two cores);
* with files, the JSON-lines events and the labels written by
  ``ueba simulate`` (:func:`streams.simulate.write_jsonl`) are replayed.

Matching. An alert is one alert id: its first version and the suppression
updates that re-raise it with a count. A version *matches* a scenario when
its time (simulated seconds: the triggering event's time, for an update its
``last_seen``) lies within
``[start, end + grace]`` and its entity, or one of its entity-like context
fields (:data:`ENTITY_FIELDS`), equals one of the scenario's entity values.
An alert belongs to every scenario one of its versions matches; an alert
that belongs to none is a false alert. A scenario is detected when at least
one alert belongs to it; its time to detect is the first matching version's
time minus the scenario start.

Noise is normalised by benign identity-days: for every identity the three
input streams are keyed by (``user.name`` / ``ueba.api_key.id`` /
``ueba.model.id``, see :func:`streams.events.identity_of`) that is not a
scenario entity, the number of distinct UTC days on which it had a benign
(not attack-tagged) event that the pipeline accepted. Source IPs (the
by-source stream's keys) are not counted as identities, so the rate is not
diluted by every home IP.

``console.print(report)`` shows the per-scenario table, the totals against
the targets and the noisiest detectors/rules; :meth:`Report.to_dict` is the
JSON form (stable key order).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson

from .alerts import Alert
from .errors import UebaError
from .events import identity_of
from .feed import kind_of
from .policy import Policy
from .settings import Settings

#: Alert context fields that name an entity (besides the alert's own entity).
ENTITY_FIELDS: tuple[str, ...] = (
    "user.name",
    "source.ip",
    "ueba.api_key.id",
    "ueba.model.id",
    "ueba.telemetry.caller_api_key",
)

#: Alerts up to this long after a scenario's end still belong to it (seconds).
DEFAULT_GRACE_S = 3600.0

#: Targets the report is checked against (reported, not asserted).
TARGET_FALSE_PER_1000_IDENTITY_DAYS = 1.0
TARGET_MEDIAN_TTD_S = 300.0
#: False alerts listed per noisy detector or rule in the report (the highest scored).
NOISE_EXAMPLES = 5

_DAY_S = 86400


class EvaluationError(UebaError):
    """The labelled data set cannot be evaluated (missing or malformed file)."""


# ------------------------------------------------------------------ labels


def _epoch(value: Any, what: str) -> float:
    """Seconds since the epoch from an ISO 8601 string (naive = UTC) or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    raise ValueError(f"{what}: {value!r} is not an ISO 8601 time")


@dataclass(frozen=True, slots=True)
class LabelledScenario:
    """One injected attack, from a labels record (:func:`streams.simulate.labels`).

    ``start``/``end`` are seconds since the epoch; ``entities`` the entity
    values (``user.name``, ``source.ip``, key, model ids) that identify it;
    ``event_ids`` the ``event.id`` of its tagged events when the labels file
    lists them (only used to keep attack traffic out of benign identity-days).
    """

    scenario_id: str
    name: str
    techniques: tuple[str, ...]
    entities: frozenset[str]
    start: float
    end: float
    event_ids: frozenset[str] = frozenset()

    @classmethod
    def from_label(cls, rec: dict[str, Any]) -> "LabelledScenario":
        """Raises ValueError naming the first missing or malformed field."""
        if not isinstance(rec, dict):
            raise ValueError(f"a label is a JSON object, not {type(rec).__name__}")
        sid = rec.get("scenario_id")
        if not isinstance(sid, str) or not sid:
            raise ValueError("scenario_id: missing")
        ents = rec.get("entities")
        if not isinstance(ents, list) or not ents:
            raise ValueError(f"{sid}: entities: missing or empty")
        values = []
        for e in ents:
            v = e.get("value") if isinstance(e, dict) else None
            if not isinstance(v, str) or not v:
                raise ValueError(f"{sid}: entities: {e!r} has no value")
            values.append(v)
        start, end = _epoch(rec.get("start"), f"{sid}: start"), _epoch(rec.get("end"), f"{sid}: end")
        if end < start:
            raise ValueError(f"{sid}: end is before start")
        return cls(
            scenario_id=sid,
            name=str(rec.get("name") or sid),
            techniques=tuple(str(t) for t in rec.get("techniques") or ()),
            entities=frozenset(values),
            start=start,
            end=end,
            event_ids=frozenset(str(i) for i in rec.get("event_ids") or ()),
        )


def read_labels(path: Path) -> list[LabelledScenario]:
    """Labels JSON lines (``ueba simulate --labels``); errors name the file and line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise EvaluationError(f"labels file {path}: {exc.strerror}") from None
    out: list[LabelledScenario] = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(LabelledScenario.from_label(orjson.loads(line)))
        except (orjson.JSONDecodeError, ValueError) as exc:
            raise EvaluationError(f"labels file {path}:{n}: {exc}") from None
    if not out:
        raise EvaluationError(f"labels file {path}: no scenarios")
    return out


# ------------------------------------------------------------------ matching


def alert_entities(alert: Alert) -> set[str]:
    """The entity values an alert is about: its entity (each part of a
    multi-field correlation key ``a|b``) and its entity-like context fields."""
    keys = {alert.entity, *alert.entity.split("|")}
    ctx = alert.context
    for f in ENTITY_FIELDS:
        v = ctx.get(f)
        if isinstance(v, str) and v:
            keys.add(v)
    keys.discard("")
    return keys


def matches(alert: Alert, scenario: LabelledScenario, grace_s: float = DEFAULT_GRACE_S) -> bool:
    """Whether one alert version belongs to ``scenario`` (window edges inclusive)."""
    return _within(alert.ts, alert_entities(alert), scenario, grace_s)


def scenario_of(alert: Alert, scenarios: Iterable[LabelledScenario], grace_s: float = DEFAULT_GRACE_S) -> str | None:
    """The id of the first scenario ``alert`` belongs to, else None."""
    for sc in scenarios:
        if matches(alert, sc, grace_s):
            return sc.scenario_id
    return None


def _within(ts: float, entities: set[str], scenario: LabelledScenario, grace_s: float) -> bool:
    return scenario.start <= ts <= scenario.end + grace_s and not scenario.entities.isdisjoint(entities)


def utc_day(ts: float) -> int:
    """Day number (days since the epoch, UTC) of a time in seconds."""
    return int(ts // _DAY_S)


@dataclass(slots=True)
class _AlertTally:
    """What is known of one alert id across its versions."""

    source: str
    name: str
    first_score: float
    techniques: set[str]
    #: the first version: when, on whom, why (false alerts are listed with it)
    example: dict[str, Any] = field(default_factory=dict)
    #: scenario id -> time of the first version matching it
    matched: dict[str, float] = field(default_factory=dict)


class Evaluation:
    """Accumulates alerts and benign activity against a set of labelled scenarios.

    Feed every alert version the pipeline emits (new alerts and suppression
    updates, in order) to :meth:`observe_alert` and every accepted input event
    to :meth:`observe_event`; :meth:`report` scores them.
    """

    def __init__(self, scenarios: Iterable[LabelledScenario], *, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.scenarios = list(scenarios)
        ids = [s.scenario_id for s in self.scenarios]
        if len(set(ids)) != len(ids):
            raise EvaluationError(f"duplicate scenario ids in labels: {sorted(i for i, c in Counter(ids).items() if c > 1)}")
        self.grace_s = float(grace_s)
        self.scenario_entities: frozenset[str] = frozenset().union(*(s.entities for s in self.scenarios))
        self.alerts: dict[str, _AlertTally] = {}
        #: benign identity -> distinct UTC day numbers it was active
        self.active_days: dict[str, set[int]] = {}
        self.events = 0

    def observe_alert(self, alert: Alert) -> None:
        t = self.alerts.get(alert.id)
        if t is None:
            t = self.alerts[alert.id] = _AlertTally(
                source=alert.source, name=_source_name(alert), first_score=float(alert.score), techniques=set(),
                example=_example(alert),
            )
        t.techniques.update(alert.techniques)
        # A suppression update is the first alert with its count and last_seen
        # moved on: the event that caused it happened at last_seen.
        ts = alert.last_seen if alert.count > 1 and alert.last_seen is not None else alert.ts
        entities = alert_entities(alert)
        for sc in self.scenarios:
            if _within(ts, entities, sc, self.grace_s):
                seen = t.matched.get(sc.scenario_id)
                t.matched[sc.scenario_id] = ts if seen is None else min(seen, ts)

    def observe_event(self, identity: str | None, ts: float, *, attack: bool = False) -> None:
        """One accepted input event; ``attack`` = tagged as part of a scenario."""
        self.events += 1
        if attack or not identity or identity in self.scenario_entities:
            return
        days = self.active_days.get(identity)
        if days is None:
            days = self.active_days[identity] = set()
        days.add(utc_day(ts))

    @property
    def identity_days(self) -> int:
        return sum(len(d) for d in self.active_days.values())

    def report(self, run: dict[str, Any] | None = None) -> "Report":
        rows: list[ScenarioResult] = []
        for sc in self.scenarios:
            mine = [(t, t.matched[sc.scenario_id]) for t in self.alerts.values() if sc.scenario_id in t.matched]
            first = min((ts for _, ts in mine), default=None)
            by_source = Counter(t.source for t, _ in mine)
            names = {t.source: t.name for t, _ in mine}
            cited = sorted(set().union(*(t.techniques for t, _ in mine))) if mine else []
            rows.append(ScenarioResult(
                scenario_id=sc.scenario_id,
                name=sc.name,
                detected=bool(mine),
                time_to_detect_s=None if first is None else round(first - sc.start, 3),
                alerts=len(mine),
                detectors=[{"source": s, "name": names[s], "alerts": by_source[s]} for s in sorted(by_source)],
                techniques_labelled=list(sc.techniques),
                techniques_cited=cited,
                techniques_matched=[t for t in sc.techniques if t in cited],
            ))
        false_by_source: Counter = Counter()
        true_by_source: Counter = Counter()
        names: dict[str, str] = {}
        false_scores: dict[str, list[float]] = {}
        true_scores: dict[str, list[float]] = {}
        false_examples: dict[str, list[dict[str, Any]]] = {}
        for t in self.alerts.values():
            names.setdefault(t.source, t.name)
            if t.matched:
                true_by_source[t.source] += 1
                true_scores.setdefault(t.source, []).append(t.first_score)
            else:
                false_by_source[t.source] += 1
                false_scores.setdefault(t.source, []).append(t.first_score)
                false_examples.setdefault(t.source, []).append(t.example)
        n_alerts = len(self.alerts)
        n_false = sum(false_by_source.values())
        n_matched = n_alerts - n_false
        idays = self.identity_days
        ttds = [r.time_to_detect_s for r in rows if r.time_to_detect_s is not None]
        detected = sum(r.detected for r in rows)
        totals = Totals(
            scenarios=len(rows),
            detected=detected,
            recall=round(detected / len(rows), 4) if rows else None,
            alerts=n_alerts,
            matched_alerts=n_matched,
            false_alerts=n_false,
            precision=round(n_matched / n_alerts, 4) if n_alerts else None,
            benign_identities=len(self.active_days),
            benign_identity_days=idays,
            false_per_1000_identity_days=round(1000.0 * n_false / idays, 2) if idays else None,
            median_time_to_detect_s=round(statistics.median(ttds), 3) if ttds else None,
        )
        noisy = [
            NoiseRow(
                source=s,
                name=names[s],
                false_alerts=n,
                share=round(n / n_false, 4),
                matched_alerts=true_by_source.get(s, 0),
                false_score_median=round(statistics.median(false_scores[s]), 2),
                false_score_max=round(max(false_scores[s]), 2),
                matched_score_min=round(min(true_scores[s]), 2) if s in true_scores else None,
                examples=sorted(false_examples[s], key=lambda e: (-e["score"], e["ts"]))[:NOISE_EXAMPLES],
            )
            for s, n in sorted(false_by_source.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        return Report(run=dict(run or {}), scenarios=rows, totals=totals, noisy=noisy)


def _example(alert: Alert) -> dict[str, Any]:
    """What an analyst tuning a detector needs to find one alert again and see why it fired."""
    ex = alert.explanation or {}
    return {
        "alert_id": alert.id,
        "ts": alert.ts,
        "@timestamp": datetime.fromtimestamp(alert.ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "entity": f"{alert.entity_type}:{alert.entity}",
        "score": round(float(alert.score), 2),
        "reason": str(ex.get("reason") or alert.description or alert.title)[:300],
    }


def _source_name(alert: Alert) -> str:
    kind, _, name = alert.source.partition(":")
    return name if kind == "detector" else (alert.rule_name or alert.rule_id)


# ------------------------------------------------------------------ report


@dataclass(slots=True)
class ScenarioResult:
    scenario_id: str
    name: str
    detected: bool
    #: first matching alert time minus the scenario start, simulated seconds
    time_to_detect_s: float | None
    alerts: int
    #: [{"source", "name", "alerts"}] sorted by source
    detectors: list[dict[str, Any]]
    techniques_labelled: list[str]
    techniques_cited: list[str]
    techniques_matched: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario_id": self.scenario_id,
            "name": self.name,
            "detected": self.detected,
            "time_to_detect_s": self.time_to_detect_s,
            "alerts": self.alerts,
            "detectors": [dict(d) for d in self.detectors],
            "techniques_labelled": list(self.techniques_labelled),
            "techniques_cited": list(self.techniques_cited),
            "techniques_matched": list(self.techniques_matched),
        }


@dataclass(slots=True)
class Totals:
    scenarios: int
    detected: int
    recall: float | None
    alerts: int
    matched_alerts: int
    false_alerts: int
    precision: float | None
    benign_identities: int
    benign_identity_days: int
    false_per_1000_identity_days: float | None
    median_time_to_detect_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenarios": self.scenarios,
            "detected": self.detected,
            "recall": self.recall,
            "alerts": self.alerts,
            "matched_alerts": self.matched_alerts,
            "false_alerts": self.false_alerts,
            "precision": self.precision,
            "benign_identities": self.benign_identities,
            "benign_identity_days": self.benign_identity_days,
            "false_per_1000_identity_days": self.false_per_1000_identity_days,
            "median_time_to_detect_s": self.median_time_to_detect_s,
        }


@dataclass(slots=True)
class NoiseRow:
    """False alerts of one detector or rule, with first-version score figures for tuning."""

    source: str
    name: str
    false_alerts: int
    share: float  # of all false alerts
    matched_alerts: int
    false_score_median: float
    false_score_max: float
    matched_score_min: float | None
    #: the highest-scored false alerts (up to NOISE_EXAMPLES): alert id, time, entity, score, reason
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "name": self.name,
            "false_alerts": self.false_alerts,
            "share": self.share,
            "matched_alerts": self.matched_alerts,
            "false_score_median": self.false_score_median,
            "false_score_max": self.false_score_max,
            "matched_score_min": self.matched_score_min,
            "examples": self.examples,
        }


@dataclass(slots=True)
class Report:
    run: dict[str, Any]
    scenarios: list[ScenarioResult]
    totals: Totals
    noisy: list[NoiseRow]

    def targets(self) -> dict[str, dict[str, Any]]:
        """Each target with the actual value and whether it is met."""
        t = self.totals
        rate, ttd = t.false_per_1000_identity_days, t.median_time_to_detect_s
        return {
            "all_scenarios_detected": {"target": t.scenarios, "actual": t.detected, "met": t.detected == t.scenarios},
            "false_per_1000_identity_days": {
                "target": TARGET_FALSE_PER_1000_IDENTITY_DAYS, "actual": rate,
                "met": rate is not None and rate <= TARGET_FALSE_PER_1000_IDENTITY_DAYS,
            },
            "median_time_to_detect_s": {"target": TARGET_MEDIAN_TTD_S, "actual": ttd, "met": ttd is not None and ttd <= TARGET_MEDIAN_TTD_S},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": dict(self.run),
            "scenarios": [r.to_dict() for r in self.scenarios],
            "totals": self.totals.to_dict(),
            "targets": self.targets(),
            "noisy": [n.to_dict() for n in self.noisy],
        }

    def write_json(self, path: Path | str) -> None:
        Path(path).write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))

    def table(self) -> Any:
        """A rich Table: one row per scenario, then the totals row; targets in the caption."""
        from rich.table import Table

        tb = Table(title="Detection quality", caption=self._caption(), caption_justify="left")
        tb.add_column("scenario")
        tb.add_column("detected", justify="center")
        tb.add_column("time to detect", justify="right")
        tb.add_column("alerts", justify="right")
        tb.add_column("detectors / rules")
        tb.add_column("techniques cited / labelled")
        for r in self.scenarios:
            tb.add_row(
                r.scenario_id,
                "[green]yes[/]" if r.detected else "[red]no[/]",
                _duration(r.time_to_detect_s),
                str(r.alerts),
                ", ".join(f"{d['name']} ({d['alerts']})" for d in r.detectors) or "-",
                f"{len(r.techniques_matched)}/{len(r.techniques_labelled)}",
            )
        t = self.totals
        tb.add_section()
        tb.add_row(
            "[bold]total[/]",
            f"{t.detected}/{t.scenarios}",
            "median " + _duration(t.median_time_to_detect_s),
            f"{t.matched_alerts} matched",
            f"{t.false_alerts} false of {t.alerts} alerts",
            "",
        )
        return tb

    def noise_table(self, top: int = 10) -> Any:
        """The detectors/rules with the most false alerts (a rich Table)."""
        from rich.table import Table

        tb = Table(title=f"Noisiest detectors/rules (top {top} by false alerts)")
        for col, just in (("source", "left"), ("name", "left"), ("false", "right"), ("share", "right"), ("matched", "right"),
                          ("false score median/max", "right"), ("matched score min", "right")):
            tb.add_column(col, justify=just)  # type: ignore[arg-type]
        for n in self.noisy[:top]:
            tb.add_row(n.source, n.name, str(n.false_alerts), f"{n.share:.0%}", str(n.matched_alerts),
                       f"{n.false_score_median:g} / {n.false_score_max:g}",
                       "-" if n.matched_score_min is None else f"{n.matched_score_min:g}")
        if self.noisy and self.noisy[0].examples:
            from rich.markup import escape

            e = self.noisy[0].examples[0]
            tb.caption = escape(f"e.g. {e['@timestamp']} {e['entity']} score {e['score']:g}: {e['reason']} "
                                f"(alert {e['alert_id']}; more in the JSON report)")
        return tb

    def _caption(self) -> str:
        t = self.totals
        tg = self.targets()

        def mark(key: str) -> str:
            return "[green]met[/]" if tg[key]["met"] else "[red]missed[/]"

        rate = "n/a" if t.false_per_1000_identity_days is None else f"{t.false_per_1000_identity_days:g}"
        prec = "n/a" if t.precision is None else f"{t.precision:.1%}"
        rec = "n/a" if t.recall is None else f"{t.recall:.0%}"
        return (
            f"recall {rec} (target every scenario: {mark('all_scenarios_detected')})  precision {prec}\n"
            f"false alerts {t.false_alerts} over {t.benign_identity_days} benign identity-days "
            f"({t.benign_identities} identities) = {rate} per 1,000 "
            f"(target <= {TARGET_FALSE_PER_1000_IDENTITY_DAYS:g}: {mark('false_per_1000_identity_days')})\n"
            f"median time to detect {_duration(t.median_time_to_detect_s)} "
            f"(target <= {_duration(TARGET_MEDIAN_TTD_S)}: {mark('median_time_to_detect_s')})"
        )

    def __rich__(self) -> Any:
        from rich.console import Group

        if not self.noisy:
            return Group(self.table(), "No false alerts.")
        return Group(self.table(), self.noise_table())


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


# ------------------------------------------------------------------ running


class _Lookup:
    """``.get(dotted)`` over a nested or dotted-key document (what identity_of needs)."""

    __slots__ = ("doc",)

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def get(self, dotted: str, default: Any = None) -> Any:
        if dotted in self.doc:
            return self.doc[dotted]
        cur: Any = self.doc
        for part in dotted.split("."):
            if not isinstance(cur, dict) or part not in cur:
                return default
            cur = cur[part]
        return cur


def _event_time(doc: dict[str, Any]) -> float | None:
    try:
        return _epoch(doc.get("@timestamp"), "@timestamp")
    except ValueError:
        return None


def _replayer(settings: Settings, policy: Policy) -> Any:
    from .app import rules_for, scorer_factory_for
    from .replay import Replayer

    return Replayer(
        scorer_factory_for(settings),
        policy=policy,
        min_score=settings.worker.min_score,
        max_event_bytes=settings.worker.max_event_bytes,
        rules=rules_for(settings),
        by_source=True,
    )


def evaluate(
    events_path: Path | None = None,
    labels_path: Path | None = None,
    *,
    settings: Settings,
    preset: str = "eval",
    seed: int = 7,
    simulation: Any = None,
    policy: Policy | Path | str | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    progress: Callable[[int], None] | None = None,
) -> Report:
    """Run the full pipeline over a labelled data set and score its alerts.

    With no ``events_path``, the simulator preset ``preset`` (seed ``seed``,
    or the :class:`~streams.simulate.SimulationConfig` given as
    ``simulation``) is generated in memory. With ``events_path``, its labels
    are read from ``labels_path`` (default: ``<events>.labels.jsonl``, as
    ``ueba simulate`` writes them). ``policy`` is a :class:`Policy` or a
    policy file (default: ``settings.worker.policy_file``). ``progress`` is
    called with the number of events done every 5,000 events.
    """
    policy_file: str | None = None
    if isinstance(policy, (str, Path)):
        policy_file = str(policy)
        policy = Policy.load(policy)
    elif policy is None:
        policy_file = str(settings.worker.policy_file) if settings.worker.policy_file else None
        policy = Policy.load(settings.worker.policy_file)
    t0 = time.perf_counter()
    if events_path is None:
        if labels_path is not None:
            raise EvaluationError("a labels file needs its events file")
        from .simulate import SimulationConfig

        config = simulation if simulation is not None else SimulationConfig.preset(preset, seed=seed)
        run: dict[str, Any] = {"mode": "simulated", "preset": None if simulation is not None else preset, "seed": config.seed,
                               "duration_s": config.duration_s}
        ev = _run_simulated(config, settings, policy, grace_s, progress)
    else:
        events_path = Path(events_path)
        labels_path = Path(labels_path) if labels_path is not None else events_path.with_name(events_path.name + ".labels.jsonl")
        if not events_path.exists():
            raise EvaluationError(f"no such events file: {events_path}")
        if not labels_path.exists():
            raise EvaluationError(f"no such labels file: {labels_path} (pass the labels written by ueba simulate)")
        run = {"mode": "files", "events": str(events_path), "labels": str(labels_path)}
        ev = _run_files(events_path, read_labels(labels_path), settings, policy, grace_s, progress)
    run.update({
        "policy": policy_file,
        "grace_s": grace_s,
        "min_score": settings.worker.min_score,
        "scorer": settings.worker.scorer,
        "rules": settings.worker.rules_enabled,
        "events": ev.events,
        "seconds": round(time.perf_counter() - t0, 1),
    })
    return ev.report(run)


def _drive(
    ev: Evaluation,
    records: Iterable[tuple[Any, str | None, bool | None]],
    settings: Settings,
    policy: Policy,
    progress: Callable[[int], None] | None,
    attack_ids: frozenset[str] = frozenset(),
) -> None:
    """Feed ``(record, stream kind or None, attack tag or None)`` to a Replayer
    and ``ev``; an untagged record is an attack event when its ``event.id`` is
    in ``attack_ids``."""
    rp = _replayer(settings, policy)
    dead = 0
    n = 0
    for rec, kind, attack in records:
        for alert in rp.feed(rec, stream=kind):
            ev.observe_alert(alert)
        n += 1
        if progress is not None and n % 5000 == 0:
            progress(5000)
        if len(rp.deadletters) != dead:  # not accepted: no activity to count
            dead = len(rp.deadletters)
            continue
        doc = _Lookup(rec if isinstance(rec, dict) else orjson.loads(rec))
        k = kind or kind_of(doc.doc)
        ts = _event_time(doc.doc)
        if k is None or ts is None:
            continue
        if attack is None:
            attack = bool(attack_ids) and doc.get("event.id") in attack_ids
        ident = identity_of(k, doc)  # type: ignore[arg-type]
        ev.observe_event(ident if isinstance(ident, str) else None, ts, attack=attack)


def _run_simulated(config: Any, settings: Settings, policy: Policy, grace_s: float,
                   progress: Callable[[int], None] | None) -> Evaluation:
    from .simulate import labels, simulate_labelled

    ev = Evaluation([LabelledScenario.from_label(r) for r in labels(config)], grace_s=grace_s)
    _drive(ev, ((doc, kind, tag is not None) for kind, doc, tag in simulate_labelled(config)), settings, policy, progress)
    return ev


def _run_files(events_path: Path, scenarios: list[LabelledScenario], settings: Settings, policy: Policy, grace_s: float,
               progress: Callable[[int], None] | None) -> Evaluation:
    from .replay import read_records

    ev = Evaluation(scenarios, grace_s=grace_s)
    attack_ids = frozenset().union(*(s.event_ids for s in scenarios))
    _drive(ev, ((rec, None, None) for rec in read_records(events_path)), settings, policy, progress, attack_ids)
    return ev
