"""Webhook delivery against real receivers on 127.0.0.1.

* Debian's ``webhook`` (adnanh/webhook) with a ``payload-hmac-sha256`` trigger
  rule on ``X-Hub-Signature-256``: signed deliveries run its command (which
  saves the raw body and the Standard Webhooks headers it received), a wrong
  secret or a tampered body is refused and ends in the dead-letter callback.
* A scripted ``http.server`` for 429 + Retry-After, 503 + HTTP-date and 410.
* The dead-letter callback writing to the real Kafka broker.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import httpx
import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from streams.alerts import Alert
from streams.kafka import DLQ_REASON, DeadLetter, ensure_topics
from streams.settings import Settings
from streams.webhooks import (
    DLQ_WEBHOOK_TARGET,
    REASON_FAILED,
    REASON_GONE,
    WebhookDispatcher,
    WebhooksConfig,
    WebhookTarget,
    kafka_dead_letter,
)

from .conftest import consume, free_port

SECRET = "whsec_" + base64.b64encode(b"integration-secret-0123456789ab").decode()
WRONG = "whsec_" + base64.b64encode(b"someone-elses-secret-0123456789").decode()
# The command the hook runs: save the raw body and the signature headers,
# named after webhook-id (an alert id: hex only, checked before use).
SAVE = r"""case "$2" in *[!0-9a-f]*|'') exit 1;; esac
printf '%s' "$1" > "$5/$2.body"
printf '%s\n%s\n' "$3" "$4" > "$5/$2.headers"
"""


def make_alert(i: int, **kw) -> Alert:
    base = dict(
        id=f"{i:040x}",
        ts=time.time(),
        source="detector:exfil_volume",
        kind="detector",
        rule_id="ueba-exfil_volume",
        rule_name="exfil volume",
        title=f"alice downloaded 40x her usual volume ({i})",
        description="alice read 4.1 GB in an hour against a usual 100 MB.",
        score=83.0,
        severity=73,
        level="high",
        entity_type="user",
        entity="alice",
        stream="access",
        explanation={"observed": 4.1e9, "baseline": {"center": 1e8}, "window": "1h", "reason": "40x usual volume"},
        techniques=("T1530",),
        context={"user.name": "alice", "source.ip": "203.0.113.7"},
    )
    base.update(kw)
    return Alert(**base)


class Dead:
    def __init__(self) -> None:
        self.items: list[tuple[str, str, str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, alert, target, reason, detail) -> None:
        with self.lock:
            self.items.append((alert.id, target.name, reason, detail))


def _hook(hook_id: str, out: Path, *, signed: bool = True, mismatch_code: int | None = 403) -> dict:
    hook: dict = {
        "id": hook_id,
        "execute-command": "/bin/sh",
        "pass-arguments-to-command": [
            {"source": "string", "name": "-c"},
            {"source": "string", "name": SAVE},
            {"source": "string", "name": "sh"},
            {"source": "raw-request-body"},
            {"source": "header", "name": "webhook-id"},
            {"source": "header", "name": "webhook-timestamp"},
            {"source": "header", "name": "webhook-signature"},
            {"source": "string", "name": str(out / hook_id)},
        ],
    }
    (out / hook_id).mkdir()
    if signed:
        hook["trigger-rule"] = {
            "match": {"type": "payload-hmac-sha256", "secret": SECRET, "parameter": {"source": "header", "name": "X-Hub-Signature-256"}}
        }
    else:
        # Needs an X-Hub-Signature-256 header (any hex): an unsigned request misses the rule.
        hook["trigger-rule"] = {"match": {"type": "regex", "regex": "^[0-9a-f]+$", "parameter": {"source": "header", "name": "X-Hub-Signature-256"}}}
    if mismatch_code is not None:
        hook["trigger-rule-mismatch-http-response-code"] = mismatch_code
    return hook


class WebhookServer:
    def __init__(self, tmp_path: Path, port: int | None = None) -> None:
        binary = shutil.which("webhook")
        if binary is None:
            pytest.fail(
                "the `webhook` binary (Debian package `webhook`, adnanh/webhook) is not installed; "
                "install it with `apt-get install -y webhook` (.ci/run does this)"
            )
        self.out = tmp_path / "received"
        self.out.mkdir()
        hooks = [
            _hook("ueba", self.out),
            _hook("ueba-hive", self.out),
            _hook("ueba-default-mismatch", self.out, signed=False, mismatch_code=None),
        ]
        self.hooks_file = tmp_path / "hooks.json"
        self.hooks_file.write_text(json.dumps(hooks, indent=2))
        self.port = port or free_port()
        self.log_path = tmp_path / "webhook.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [binary, "-hooks", str(self.hooks_file), "-ip", "127.0.0.1", "-port", str(self.port), "-verbose"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while "serving hooks" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"webhook did not start:\n{self.log()}")
            time.sleep(0.05)
        self.version = subprocess.run([binary, "-version"], capture_output=True, text=True).stdout.strip()

    def url(self, hook_id: str) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/{hook_id}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, path: Path, timeout: float = 10.0) -> bytes:
        # The server answers before its command has run.
        deadline = time.monotonic() + timeout
        while not path.exists() or not path.stat().st_size:
            assert time.monotonic() < deadline, f"{path.name} never written; webhook log:\n{self.log()}"
            time.sleep(0.05)
        time.sleep(0.05)
        return path.read_bytes()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


@pytest.fixture
def webhook_server(tmp_path: Path, pytestconfig: pytest.Config) -> Iterator[WebhookServer]:
    server = WebhookServer(tmp_path)
    tr = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(f"[services] {server.version} on 127.0.0.1:{server.port}")
    try:
        yield server
    finally:
        server.stop()


def dispatcher(targets: list[WebhookTarget], dead: Dead, client: httpx.Client | None = None) -> WebhookDispatcher:
    config = WebhooksConfig(targets=targets, backoff_initial=0.01, backoff_max=0.05)
    return WebhookDispatcher(config, dead, client=client)


def test_signed_deliveries_are_accepted_and_run_the_hook(webhook_server: WebhookServer):
    dead = Dead()
    d = dispatcher(
        [
            WebhookTarget(name="generic", url=webhook_server.url("ueba"), secret=SECRET, max_attempts=2),
            WebhookTarget(name="hive", url=webhook_server.url("ueba-hive"), format="thehive", secret=SECRET,
                          filters={"min_severity": "critical"}, max_attempts=2),
        ],
        dead,
    )
    alerts = [make_alert(1), make_alert(2)]
    critical = make_alert(3, severity=99, level="critical", score=95.0)
    for a in [*alerts, critical]:
        d.submit(a)
    stats = d.close(20)
    assert dead.items == [] and stats.delivered == 4 and stats.attempts == 4, webhook_server.log()
    received = [("ueba", a) for a in [*alerts, critical]] + [("ueba-hive", critical)]
    for hook_id, a in received:
        body = webhook_server.wait_for(webhook_server.out / hook_id / f"{a.id}.body")
        ts, sig = webhook_server.wait_for(webhook_server.out / hook_id / f"{a.id}.headers").decode().split("\n")[:2]
        # The body as the peer received it verifies against the Standard Webhooks headers too.
        doc = Webhook(SECRET).verify(body, {"webhook-id": a.id, "webhook-timestamp": ts, "webhook-signature": sig})
        if hook_id == "ueba-hive":
            assert doc["type"] == "ai-ueba" and doc["sourceRef"] == a.id and doc["severity"] == 4
        else:
            assert doc["type"] == "ueba.alert" and doc["data"]["event"]["id"] == a.id
    # The hive target's filter kept the two high alerts away from it.
    assert sorted(p.name for p in (webhook_server.out / "ueba-hive").iterdir()) == [f"{critical.id}.body", f"{critical.id}.headers"]
    assert webhook_server.log().count("hook triggered successfully") == 4


def test_wrong_secret_is_refused_and_dead_lettered_after_retries(webhook_server: WebhookServer):
    dead = Dead()
    d = dispatcher([WebhookTarget(name="generic", url=webhook_server.url("ueba"), secret=WRONG, max_attempts=2)], dead)
    a = make_alert(10)
    d.submit(a)
    stats = d.close(20)
    assert stats.delivered == 0 and stats.attempts == 2
    assert [(i, n, r) for i, n, r, _ in dead.items] == [(a.id, "generic", REASON_FAILED)]
    # adnanh/webhook 2.8 answers a signature mismatch with 500 (retryable), not 4xx.
    assert "HTTP 500: Error occurred while evaluating hook rules." in dead.items[0][3]
    assert "after 2 attempt(s)" in dead.items[0][3]
    assert webhook_server.log().count("invalid payload signatures") == 2
    assert not (webhook_server.out / "ueba" / f"{a.id}.body").exists()
    assert WRONG not in dead.items[0][3]


class TamperingTransport(httpx.BaseTransport):
    """Changes the body after it was signed (a man in the middle)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read().replace(b"alice", b"mallo")
        assert body != request.content
        tampered = httpx.Request(request.method, request.url, headers=request.headers, content=body)
        return self.inner.handle_request(tampered)

    def close(self) -> None:
        self.inner.close()


def test_tampered_body_is_refused_and_dead_lettered(webhook_server: WebhookServer):
    dead = Dead()
    client = httpx.Client(transport=TamperingTransport())
    d = dispatcher([WebhookTarget(name="generic", url=webhook_server.url("ueba"), secret=SECRET, max_attempts=2)], dead, client)
    a = make_alert(11)
    d.submit(a)
    stats = d.close(20)
    client.close()
    assert stats.delivered == 0 and stats.attempts == 2
    assert [(i, r) for i, _, r, _ in dead.items] == [(a.id, REASON_FAILED)]
    assert "HTTP 500" in dead.items[0][3]
    assert "invalid payload signatures" in webhook_server.log()
    assert not (webhook_server.out / "ueba" / f"{a.id}.body").exists()


def test_unsigned_request_misses_the_rule(webhook_server: WebhookServer):
    """Pins adnanh/webhook's behaviour for a request that does not satisfy the
    trigger rule: 200 "Hook rules were not satisfied." unless the hook sets
    ``trigger-rule-mismatch-http-response-code`` (then that code: permanent)."""
    dead = Dead()
    d = dispatcher(
        [
            WebhookTarget(name="strict", url=webhook_server.url("ueba"), authorization="Bearer not-a-signature", max_attempts=3),
            WebhookTarget(name="lenient", url=webhook_server.url("ueba-default-mismatch"), authorization="Bearer x", max_attempts=3),
        ],
        dead,
    )
    d.submit(make_alert(12))
    stats = d.close(20)
    assert [(n, r) for _, n, r, _ in dead.items] == [("strict", REASON_FAILED)]
    assert "HTTP 403: Hook rules were not satisfied. (permanent, attempt 1)" in dead.items[0][3]
    # The lenient hook's 200 counts as delivered although its command never ran.
    assert stats.attempts == 2 and stats.delivered == 1
    assert "hook triggered successfully" not in webhook_server.log()


# ------------------------------------------------------------ scripted HTTP peer


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.hits: dict[str, list[float]] = {}
        self.bodies: dict[str, list[bytes]] = {}
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ScriptedHandler(BaseHTTPRequestHandler):
    server: ScriptedServer

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            hits = self.server.hits.setdefault(self.path, [])
            hits.append(time.monotonic())
            self.server.bodies.setdefault(self.path, []).append(body)
            n = len(hits)
        if self.path == "/rate-limited" and n == 1:
            self._answer(429, {"Retry-After": "1"})
        elif self.path == "/busy-until" and n == 1:
            self._answer(503, {"Retry-After": formatdate(time.time() + 2, usegmt=True)})
        elif self.path == "/gone":
            self._answer(410, {})
        else:
            self._answer(200, {})

    def _answer(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_429_and_503_retry_after_are_honoured(scripted: ScriptedServer):
    dead = Dead()
    d = dispatcher(
        [
            WebhookTarget(name="rl", url=scripted.base + "/rate-limited", secret=SECRET, max_attempts=3),
            WebhookTarget(name="busy", url=scripted.base + "/busy-until", format="xsoar", secret=SECRET, max_attempts=3),
        ],
        dead,
    )
    d.submit(make_alert(20))
    stats = d.close(20)
    assert dead.items == [] and stats.delivered == 2 and stats.retries == 2
    rl, busy = scripted.hits["/rate-limited"], scripted.hits["/busy-until"]
    assert len(rl) == 2 and rl[1] - rl[0] >= 0.95  # Retry-After: 1, not the 0.05 s backoff cap
    assert len(busy) == 2 and busy[1] - busy[0] >= 0.9  # an HTTP date ~2 s ahead (whole seconds)
    assert scripted.bodies["/busy-until"][0] == scripted.bodies["/busy-until"][1]  # same body re-sent
    assert isinstance(orjson.loads(scripted.bodies["/busy-until"][1])["rawJSON"], str)


def test_410_disables_the_target(scripted: ScriptedServer):
    dead = Dead()
    d = dispatcher(
        [
            WebhookTarget(name="gone", url=scripted.base + "/gone", secret=SECRET, max_attempts=5),
            WebhookTarget(name="ok", url=scripted.base + "/ok", secret=SECRET),
        ],
        dead,
    )
    d.submit(make_alert(30))
    deadline = time.monotonic() + 10
    while d.pending():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for i in (31, 32):
        d.submit(make_alert(i))
    stats = d.close(20)
    assert len(scripted.hits["/gone"]) == 1 and len(scripted.hits["/ok"]) == 3
    assert [(n, r) for _, n, r, _ in dead.items] == [("gone", REASON_GONE)] * 3
    assert stats.delivered == 3


def test_dead_letters_reach_the_kafka_topic(settings: Settings, scripted: ScriptedServer):
    from streams.kafka import producer

    ensure_topics(settings)
    p = producer(settings)
    on_dead = kafka_dead_letter(p, settings.topics.deadletter, settings.topics.alerts)
    d = WebhookDispatcher(
        WebhooksConfig(targets=[WebhookTarget(name="gone", url=scripted.base + "/gone", secret=SECRET)]), on_dead
    )
    a = make_alert(40)
    d.submit(a)
    d.close(20)
    assert p.flush(30) == 0
    (msg,) = consume(settings, settings.topics.deadletter, 1)
    dl = DeadLetter.from_headers(msg.value(), msg.key(), msg.headers())
    assert dl.reason == REASON_GONE and dl.stage == "webhook" and dl.source_topic == settings.topics.alerts
    assert Alert.from_json(msg.value()).id == a.id and msg.key() == b"user:alice"
    headers = dict(msg.headers())
    assert headers[DLQ_WEBHOOK_TARGET] == b"gone" and headers[DLQ_REASON] == b"webhook_target_gone"
    assert "HTTP 410" in dl.detail
