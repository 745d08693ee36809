"""Fixtures for tests against the genuine Kafka broker and OpenSearch engine.

Services are session-scoped and started through the same scripts as
``deploy/local.sh`` when they do not already answer at the configured
addresses (``make test`` starts them first; then the fixtures reuse them).
Each fixture prints the real version of what it talks to.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from streams.bench import free_port
from streams.settings import Settings, to_env

ROOT = Path(__file__).resolve().parents[2]
KAFKA_BOOTSTRAP = os.environ.get("UEBA_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
SEARCH_URL = os.environ.get("UEBA_SEARCH__URL", "http://127.0.0.1:9200")
ES_EMULATOR_URL = os.environ.get("UEBA_TEST_ES_EMULATOR_URL", "http://127.0.0.1:9201")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.integration)


def _say(config: pytest.Config, line: str) -> None:
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(line)
    else:
        print(line)


def _kafka_answers(bootstrap: str) -> bool:
    try:
        AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000, "log_level": 0}).list_topics(timeout=3)
        return True
    except Exception:
        return False


def _http_answers(url: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(url, timeout=3)
        return r.json() if r.status_code == 200 else None
    except Exception:
        return None


def _script(name: str, *args: str) -> str:
    proc = subprocess.run(["bash", str(ROOT / "deploy" / name), *args], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"deploy/{name} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def kafka_bootstrap(pytestconfig: pytest.Config) -> Iterator[str]:
    started = False
    if not _kafka_answers(KAFKA_BOOTSTRAP):
        _script("kafka.sh", "up")
        started = True
    status = _script("kafka.sh", "status") if (ROOT / "deploy/.work/kafka/kafka.pid").exists() else "external broker"
    version = next((ln for ln in status.splitlines() if ln.startswith("kafka ")), status.strip())
    _say(pytestconfig, f"[services] Apache Kafka: {version}")
    yield KAFKA_BOOTSTRAP
    if started:
        _script("kafka.sh", "down")


def _http_service(config: pytest.Config, url: str, script: str, describe) -> Iterator[str]:
    """Reuse the service answering at ``url``, else start it with ``deploy/<script> up``
    (and stop it again at the end of the session)."""
    started = False
    info = _http_answers(url)
    if info is None:
        _script(script, "up")
        started = True
        info = _http_answers(url)
    assert info is not None, f"nothing answers at {url} after deploy/{script} up"
    _say(config, f"[services] GET {url}/ -> {describe(info)}")
    yield url
    if started:
        _script(script, "down")


@pytest.fixture(scope="session")
def opensearch_url(pytestconfig: pytest.Config) -> Iterator[str]:
    yield from _http_service(
        pytestconfig, SEARCH_URL, "opensearch.sh",
        lambda i: f"version {i['version']['number']}, distribution {i['version'].get('distribution', 'elasticsearch')}",
    )


@pytest.fixture(scope="session")
def es_emulator_url(pytestconfig: pytest.Config) -> Iterator[str]:
    yield from _http_service(
        pytestconfig, ES_EMULATOR_URL, "es-emulator.sh", lambda i: f"Elasticsearch API {i['version']['number']} (noida-db emulator)"
    )




@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings with topics, consumer groups and state private to this test."""
    run = uuid.uuid4().hex[:8]
    return Settings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        topics={
            "access": f"t{run}.access",
            "api": f"t{run}.api",
            "telemetry": f"t{run}.telemetry",
            "bysource": f"t{run}.bysource",
            "candidates": f"t{run}.candidates",
            "alerts": f"t{run}.alerts",
            "risk": f"t{run}.risk",
            "deadletter": f"t{run}.deadletter",
            "partitions": 3,
        },
        search={"url": SEARCH_URL, "namespace": f"t{run}"},
        worker={
            "app_id": f"ueba-test-{run}",
            "data_dir": str(tmp_path / "worker"),
            "web_port": free_port(),
            "metrics_port": 0,
            "scorer": "first_seen",
            # transport tests: the first-seen scorer alone; tests of detection enable rules
            "rules_enabled": False,
        },
    )


def with_rules(settings: Settings) -> Settings:
    """The same settings with the built-in Sigma rule pack switched on."""
    return settings.model_copy(update={"worker": settings.worker.model_copy(update={"rules_enabled": True})})


def produce(settings: Settings, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    p = Producer(settings.kafka.confluent_config())
    for key, value in records:
        p.produce(topic, value=value, key=key)
    assert p.flush(30) == 0


def consume(settings: Settings, topic: str, n: int, timeout: float = 60.0, drain: float = 0.0) -> list[Any]:
    """Read until ``n`` messages arrived on ``topic`` (from the beginning) or timeout;
    then keep reading until nothing arrives for ``drain`` seconds."""
    c = Consumer(
        {**settings.kafka.confluent_config(), "group.id": f"reader-{uuid.uuid4().hex}", "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    c.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            for m in c.consume(100, timeout=0.5):
                if m.error() is None:
                    got.append(m)
        quiet = time.monotonic()
        while drain and time.monotonic() - quiet < drain and time.monotonic() < deadline + drain:
            for m in c.consume(100, timeout=0.5):
                if m.error() is None:
                    got.append(m)
                    quiet = time.monotonic()
    finally:
        c.close()
    return got


def _offsets_reader(settings: Settings, group: str) -> Consumer:
    return Consumer({**settings.kafka.confluent_config(), "group.id": group, "enable.auto.commit": False})


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """partition -> high watermark (the offset the next record gets)."""
    from confluent_kafka import TopicPartition

    c = _offsets_reader(settings, f"offsets-{uuid.uuid4().hex}")
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
    finally:
        c.close()


def committed_offsets(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """partition -> offset committed by consumer group ``group`` (-1001 when none). Does not join the group."""
    from confluent_kafka import TopicPartition

    c = _offsets_reader(settings, group)
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, p) for p in parts], timeout=10)}
    finally:
        c.close()


def caught_up(committed: dict[int, int], end: dict[int, int]) -> bool:
    """Every partition committed up to ``end`` (an empty partition needs no commit)."""
    return all(committed.get(p, -1001) >= e or (e == 0 and committed.get(p, -1001) < 0) for p, e in end.items())


class WorkerProcess:
    """``ueba worker`` (or another ``ueba`` command, e.g. ``sink``) in a child process, like production runs it."""

    def __init__(self, settings: Settings, log_path: Path, extra_env: dict[str, str] | None = None, command: str = "worker") -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("UEBA_")}
        env.update(to_env(settings))
        env.update(extra_env or {})
        env.pop("BROKER_URL", None)  # would override the broker Faust is given
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", command], cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


@contextmanager
def worker(settings: Settings, tmp_path: Path, name: str = "worker", **kw: Any) -> Iterator[WorkerProcess]:
    w = WorkerProcess(settings, tmp_path / f"{name}.log", **kw)
    try:
        yield w
    finally:
        w.stop()
