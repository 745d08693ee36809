"""Kafka plumbing shared by the CLI, the worker, the sink and the tests:
client configuration, topic pre-creation and the dead-letter record format.

Topics are pre-created with fixed partition counts (auto-created topics get
one partition and break co-partitioned tables). Input topics are keyed by
identity; the alerts topic by entity.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from .errors import UebaError
from .settings import Settings

log = logging.getLogger("ueba.kafka")

#: Header names on dead-letter records (value = the original bytes, untouched).
DLQ_REASON = "ueba.dlq.reason"
DLQ_DETAIL = "ueba.dlq.detail"
DLQ_TOPIC = "ueba.dlq.source.topic"
DLQ_PARTITION = "ueba.dlq.source.partition"
DLQ_OFFSET = "ueba.dlq.source.offset"
DLQ_STAGE = "ueba.dlq.stage"

_DETAIL_MAX = 2000


class KafkaSetupError(UebaError):
    """Topics could not be created or the broker could not be reached."""


def admin(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka.confluent_config())


def producer(settings: Settings, **extra: Any) -> Producer:
    conf = settings.kafka.confluent_config()
    conf.update({"linger.ms": 5, "enable.idempotence": True, "acks": "all", "compression.type": "lz4"})
    conf.update(extra)
    return Producer(conf)


def all_topics(settings: Settings) -> list[str]:
    t = settings.topics
    return [t.access, t.api, t.telemetry, t.bysource, t.candidates, t.alerts, t.risk, t.deadletter]


def ensure_topics(settings: Settings, timeout: float = 30.0) -> dict[str, str]:
    """Create every topic the pipeline uses; existing ones are kept.

    Returns topic -> "created" | "exists". An existing topic with a different
    partition count is an error: co-partitioned state depends on it.
    """
    adm = admin(settings)
    t = settings.topics
    want = {name: t.partitions for name in all_topics(settings)}
    try:
        md = adm.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaSetupError(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}") from None
    result: dict[str, str] = {}
    new: list[NewTopic] = []
    for name, parts in want.items():
        if name in md.topics and md.topics[name].error is None:
            have = len(md.topics[name].partitions)
            if have != parts:
                raise KafkaSetupError(
                    f"topic {name} has {have} partitions, settings say {parts}; "
                    "co-partitioned state needs them equal (recreate the topic or change UEBA_TOPICS__PARTITIONS)"
                )
            result[name] = "exists"
        else:
            cfg = {"retention.ms": str(30 * 86400 * 1000)} if name == t.deadletter else {}
            new.append(NewTopic(name, num_partitions=parts, replication_factor=t.replication_factor, config=cfg))
    if new:
        futures = adm.create_topics(new, operation_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout)
                result[name] = "created"
            except KafkaException as exc:
                err = exc.args[0]
                if getattr(err, "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                    result[name] = "exists"
                else:
                    raise KafkaSetupError(f"cannot create topic {name}: {err}") from None
        _wait_until_led(adm, {n: want[n] for n, r in result.items() if r == "created"}, timeout)
    return result


def _wait_until_led(adm: AdminClient, topics: dict[str, int], timeout: float) -> None:
    """Wait until the metadata the broker serves shows every partition of the
    new ``topics`` with a leader. A creation is acknowledged by the controller
    before every broker's metadata has it; a client subscribing at once would
    log "Subscribed topic not available" and retry."""
    deadline = time.monotonic() + timeout
    pending = dict(topics)
    while pending:
        try:
            md = adm.list_topics(timeout=max(0.1, deadline - time.monotonic()))
        except KafkaException:
            md = None
        if md is not None:
            for name in list(pending):
                tm = md.topics.get(name)
                if (tm is not None and tm.error is None and len(tm.partitions) == pending[name]
                        and all(p.leader >= 0 for p in tm.partitions.values())):
                    del pending[name]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise KafkaSetupError(f"topics created but not yet served after {timeout:.0f} s: {sorted(pending)}")
        time.sleep(0.1)


@dataclass(slots=True)
class DeadLetter:
    """A record that could not be processed, as written to the dead-letter topic."""

    value: bytes | None
    key: bytes | None
    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    stage: str = "decode"

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (DLQ_REASON, self.reason.encode()),
            (DLQ_DETAIL, self.detail[:_DETAIL_MAX].encode("utf-8", "replace")),
            (DLQ_TOPIC, self.source_topic.encode()),
            (DLQ_PARTITION, str(self.source_partition).encode()),
            (DLQ_OFFSET, str(self.source_offset).encode()),
            (DLQ_STAGE, self.stage.encode()),
        ]

    @classmethod
    def from_headers(cls, value: bytes | None, key: bytes | None, headers: Iterable[tuple[str, bytes]] | None) -> "DeadLetter":
        h = {k: v.decode("utf-8", "replace") for k, v in (headers or [])}
        return cls(
            value=value,
            key=key,
            reason=h.get(DLQ_REASON, ""),
            detail=h.get(DLQ_DETAIL, ""),
            source_topic=h.get(DLQ_TOPIC, ""),
            source_partition=int(h.get(DLQ_PARTITION, "-1")),
            source_offset=int(h.get(DLQ_OFFSET, "-1")),
            stage=h.get(DLQ_STAGE, ""),
        )
