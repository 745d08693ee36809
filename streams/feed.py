"""Reading ECS JSON lines and sending them to the input topics.

The stream kind of a line comes from ``event.dataset`` (``ueba.access``,
``ueba.api``, ``ueba.telemetry``), unless the caller names one stream for all.
The Kafka key is the event's identity (``events.identity_of``), so a producer
that uses this module is co-partitioned with the worker's state by design.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import orjson

from .errors import EventError, UebaError
from .events import STREAM_KINDS, expand_dotted, flatten, identity_of
from .kafka import producer
from .settings import Settings

log = logging.getLogger("ueba.feed")

DATASET_PREFIX = "ueba."


def kind_of(doc: dict[str, Any]) -> str | None:
    """Stream kind from ``event.dataset`` (nested or dotted), else None."""
    ds = None
    ev = doc.get("event")
    if isinstance(ev, dict):
        ds = ev.get("dataset")
    if ds is None:
        ds = doc.get("event.dataset")
    if isinstance(ds, str) and ds.startswith(DATASET_PREFIX) and ds[len(DATASET_PREFIX):] in STREAM_KINDS:
        return ds[len(DATASET_PREFIX):]
    return None


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of each non-empty line."""
    with open(path, "rb") as fh:
        for no, line in enumerate(fh, 1):
            line = line.strip()
            if line:
                yield no, line


def produce_files(settings: Settings, files: list[Path], *, stream: str | None = None) -> dict[str, int]:
    """Send every line to its input topic. Lines whose stream or identity cannot
    be told are still sent (to ``stream`` or the access topic, unkeyed) so the
    worker routes them to the dead-letter topic with the reason; nothing is
    dropped on the way in."""
    if stream is not None and stream not in STREAM_KINDS:
        raise UebaError(f"--stream must be one of {', '.join(STREAM_KINDS)}, not {stream!r}")
    topics = settings.topics.inputs()
    p = producer(settings)
    counts: Counter[str] = Counter()
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for path in files:
        if not path.exists():
            raise UebaError(f"no such file: {path}")
        for _, raw in iter_lines(path):
            kind, key = stream, None
            try:
                obj = orjson.loads(raw)
                if isinstance(obj, dict):
                    kind = stream or kind_of(obj)
                    if kind:
                        key = identity_of(kind, flatten(expand_dotted(obj)))
            except (orjson.JSONDecodeError, EventError, ValueError):
                pass
            kind = kind or "access"
            p.produce(topics[kind], value=raw, key=key.encode() if isinstance(key, str) else None, on_delivery=on_delivery)
            counts[kind] += 1
            if counts.total() % 10000 == 0:
                p.poll(0)
    p.flush(60)
    if errors:
        raise UebaError(f"{len(errors)} events were not delivered; first error: {errors[0]}")
    return dict(counts)
