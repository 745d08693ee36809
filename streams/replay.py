"""``ueba replay``: the embedded default. The identical pipeline, run in-process
over files, with no Kafka and no search engine.

The same :class:`~streams.pipeline.InputProcessor` and
:class:`~streams.risk.AlertProcessor` the stream uses, over dicts instead of
Faust tables. Input is ECS JSON lines (``.jsonl``/``.json``/``.ndjson``, also
gzip-compressed), Parquet or CSV (dotted column names). Lines are processed in
file order; the stream kind of a line comes from ``event.dataset`` unless a
stream is named. Deterministic: the same input gives the same alerts, byte for
byte. Lines that fail validation are written to ``<output>.deadletter.jsonl``
with their reason and counted, never silently skipped.
"""

from __future__ import annotations

import gzip
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

from .alerts import Alert
from .errors import EventError, UebaError
from .events import STREAM_KINDS, parse_event
from .feed import kind_of
from .pipeline import EntityScorer, InputProcessor, source_view
from .policy import Policy
from .risk import AlertProcessor, RiskChange
from .statecache import DEFAULT_MAX_KEYS

log = logging.getLogger("ueba.replay")


@dataclass(slots=True)
class ReplayStats:
    events: Counter = field(default_factory=Counter)
    deadletters: Counter = field(default_factory=Counter)
    candidates: int = 0
    alerts: int = 0
    suppressed: int = 0
    dropped: Counter = field(default_factory=Counter)
    risk_changes: int = 0
    identities: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": dict(self.events),
            "deadletters": dict(self.deadletters),
            "candidates": self.candidates,
            "alerts": self.alerts,
            "suppressed": self.suppressed,
            "dropped": dict(self.dropped),
            "risk_changes": self.risk_changes,
            "identities": dict(self.identities),
        }


def read_records(path: Path) -> Iterator[bytes | dict[str, Any]]:
    """Raw JSON lines (bytes) or, for Parquet/CSV, one dict per row."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        import pandas as pd

        yield from _rows(pd.read_parquet(path))
        return
    if name.endswith(".csv"):
        import pandas as pd

        yield from _rows(pd.read_csv(path))
        return
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield line


def _rows(df: Any) -> Iterator[dict[str, Any]]:
    import math

    for rec in df.to_dict(orient="records"):
        yield {k: v for k, v in rec.items() if not (isinstance(v, float) and math.isnan(v)) and v is not None}


def _with_count(first: Alert, update: Alert) -> Alert:
    d = {k: getattr(first, k) for k in first.__slots__}
    d.update(count=update.count, first_seen=update.first_seen, last_seen=update.last_seen)
    return Alert(**d)


#: records between two flushes of the replay's state caches
FLUSH_EVERY = 1024


def _writer(store: dict[bytes, bytes]) -> Callable[[bytes, bytes, Any], None]:
    def write(key: bytes, raw: bytes, _tag: Any) -> None:
        store[key] = raw

    return write


class Replayer:
    """Runs events through the pipeline in-process; see the module docstring."""

    def __init__(
        self,
        scorer_factory: Callable[[str], EntityScorer],
        *,
        policy: Policy | None = None,
        min_score: float = 50.0,
        max_event_bytes: int = 262_144,
        rules: Any = None,
        by_source: bool = False,
        cache_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        # The same write-behind state caches as the worker (streams.statecache), flushed
        # every FLUSH_EVERY records and at the end, so replay exercises that path too.
        policy = policy or Policy()
        self.inputs = {
            k: InputProcessor(k, scorer_factory(k), min_score=min_score, rules=rules, cache_keys=cache_keys, policy=policy)
            for k in STREAM_KINDS
        }
        #: login events re-keyed by source.ip, as the stream's access-by-source topic does;
        #: it also runs the rule correlations grouped by source.ip (password spraying)
        self.source = (
            InputProcessor("source", scorer_factory("source"), min_score=min_score, rules=rules, cache_keys=cache_keys, dedupe=True,
                           policy=policy)
            if by_source
            else None
        )
        self.alert_processor = AlertProcessor(policy, cache_keys=cache_keys)
        self.state: dict[str, dict[bytes, bytes]] = {k: {} for k in (*STREAM_KINDS, "source")}
        self.entities: dict[bytes, bytes] = {}
        self.max_event_bytes = max_event_bytes
        self.stats = ReplayStats()
        self.position = 0
        #: alert id -> latest version (suppression updates replace the first)
        self.alerts: dict[str, Alert] = {}
        self.risk_changes: list[RiskChange] = []
        self.deadletters: list[dict[str, Any]] = []

    def flush(self) -> None:
        """Write every cached state into :attr:`state` and :attr:`entities`."""
        for k, proc in self.inputs.items():
            proc.flush(_writer(self.state[k]))
        if self.source is not None:
            self.source.flush(_writer(self.state["source"]))
        self.alert_processor.flush(_writer(self.entities))

    def feed(self, record: bytes | dict[str, Any], *, stream: str | None = None, source: str = "") -> list[Alert]:
        """Process one record; returns the alerts (new or updated) it caused."""
        self.position += 1
        if self.position % FLUSH_EVERY == 0:
            self.flush()
        kind = stream
        parsed: Any = record
        if kind is None:
            try:
                obj = record if isinstance(record, dict) else orjson.loads(record)
                kind = kind_of(obj) if isinstance(obj, dict) else None
            except orjson.JSONDecodeError:
                kind = None
            else:
                # decoded once: hand parse_event the object (the size limit is checked here)
                if isinstance(obj, dict) and (isinstance(record, dict) or len(record) <= self.max_event_bytes):
                    parsed = obj
        if kind is None:
            self._dead(record, "unknown_stream", "event.dataset is not ueba.access, ueba.api or ueba.telemetry and no --stream was given", source)
            return []
        try:
            event = parse_event(kind, parsed, max_bytes=self.max_event_bytes)
        except EventError as exc:
            self._dead(record, exc.reason, exc.detail, source)
            return []
        self.stats.events[kind] += 1
        result = self.inputs[kind].process(self.state[kind], event, self.position)
        candidates = list(result.alerts)
        held = result.held
        if self.source is not None and kind == "access":
            sv = source_view(event)
            if sv is not None:
                by_source = self.source.process(self.state["source"], sv, self.position)
                candidates.extend(by_source.alerts)
                held = held + by_source.held
        for reason in held:
            # findings the scoring stage dropped or suppressed itself (as the alert stage would)
            self.stats.dropped[reason] += 1
        out: list[Alert] = []
        for cand in candidates:
            self.stats.candidates += 1
            outcome = self.alert_processor.process(self.entities, cand)
            if outcome.alert is None:
                self.stats.dropped[outcome.dropped or "?"] += 1
                continue
            a = outcome.alert
            if outcome.update:
                self.stats.suppressed += 1
                first = self.alerts.get(a.id)
                if first is not None:
                    # an update only moves the count and last seen of the first alert
                    a = _with_count(first, a)
            else:
                self.stats.alerts += 1
            self.alerts[a.id] = a
            out.append(a)
            if outcome.risk_change is not None:
                self.stats.risk_changes += 1
                self.risk_changes.append(outcome.risk_change)
        return out

    def _dead(self, record: bytes | dict[str, Any], reason: str, detail: str, source: str) -> None:
        self.stats.deadletters[reason] += 1
        value = record.decode("utf-8", "replace") if isinstance(record, bytes) else record
        self.deadletters.append({"reason": reason, "detail": detail, "source": source, "position": self.position, "value": value})

    def run(self, paths: list[Path], *, stream: str | None = None, progress: Callable[[int], None] | None = None) -> ReplayStats:
        for path in paths:
            if not path.exists():
                raise UebaError(f"no such file: {path}")
            for n, rec in enumerate(read_records(path), 1):
                self.feed(rec, stream=stream, source=f"{path}:{n}")
                if progress is not None and n % 5000 == 0:
                    progress(5000)
        self.flush()
        for k, st in self.state.items():
            if st:
                self.stats.identities[k] = len(st)
        return self.stats

    def write(self, out: Path, *, risk_out: Path | None = None, namespace: str = "default") -> None:
        """Alerts as ECS JSON lines, in the order they were first raised."""
        with open(out, "wb") as fh:
            for a in self.alerts.values():
                fh.write(orjson.dumps(a.to_ecs(namespace), option=orjson.OPT_SORT_KEYS) + b"\n")
        if self.deadletters:
            dl = out.with_name(out.name + ".deadletter.jsonl")
            with open(dl, "wb") as fh:
                for d in self.deadletters:
                    fh.write(orjson.dumps(d) + b"\n")
        if risk_out is not None:
            with open(risk_out, "wb") as fh:
                for rc in self.risk_changes:
                    fh.write(orjson.dumps(rc.to_ecs(namespace), option=orjson.OPT_SORT_KEYS) + b"\n")
