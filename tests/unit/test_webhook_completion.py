"""The dispatcher's completion signal, which the webhook relay commits Kafka
offsets on, against a real HTTP server on 127.0.0.1 (no mock transport):
``on_done`` fires only once every delivery of an alert finished (delivered,
dead-lettered, or none needed), and ``close(dead_letter_pending=False)``
drops pending deliveries without a dead letter and without ``on_done``."""

from __future__ import annotations

import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import orjson
import pytest

from streams.alerts import Alert
from streams.search import bulk_body
from streams.webhooks import REASON_FAILED, WebhookDispatcher, WebhooksConfig, WebhookTarget

SECRET = "whsec_" + base64.b64encode(b"completion-secret-0123456789abcd").decode()


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.release = threading.Event()  # /slow answers once set
        self.hits: list[str] = []
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.server.lock:
            self.server.hits.append(self.path)
        if self.path == "/slow":
            self.server.release.wait(10)
        status = 500 if self.path == "/broken" else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    th = threading.Thread(target=s.serve_forever, daemon=True)
    th.start()
    try:
        yield s
    finally:
        s.release.set()
        s.shutdown()
        s.server_close()


def alert(i: int, severity: int = 73) -> Alert:
    return Alert(
        id=f"{i:040x}", ts=1795860000.0 + i, source="detector:exfiltration", kind="detector", rule_id="ueba-exfiltration",
        rule_name="exfiltration", title=f"alice read 40x her usual volume ({i})", description="d", score=80.0,
        severity=severity, level={21: "low", 73: "high", 99: "critical"}[severity], entity_type="user", entity="alice",
        stream="access", explanation={"observed": 4.1e9, "reason": "40x"}, techniques=("T1530",),
    )


class Done:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lock = threading.Lock()

    def make(self, alert_id: str):
        def on_done() -> None:
            with self.lock:
                self.ids.append(alert_id)

        return on_done


def wait_for(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_on_done_waits_for_every_target_and_fires_once(server: Server):
    dead: list[tuple[str, str]] = []
    targets = [WebhookTarget(name="slow", url=server.url("/slow"), secret=SECRET),
               WebhookTarget(name="fast", url=server.url("/fast"), secret=SECRET)]
    d = WebhookDispatcher(WebhooksConfig(targets=targets), lambda a, t, r, x: dead.append((t.name, r)))
    done = Done()
    a = alert(1)
    assert d.submit(a, on_done=done.make(a.id)) == 2
    wait_for(lambda: d.stats.delivered == 1)  # the fast target answered ...
    time.sleep(0.2)
    assert done.ids == []  # ... but the slow one has not: not done yet
    server.release.set()
    wait_for(lambda: done.ids == [a.id])
    d.close(5)
    assert done.ids == [a.id] and dead == [] and d.stats.delivered == 2


def test_on_done_fires_at_once_when_no_target_selects_the_alert_or_it_was_sent_already(server: Server):
    target = WebhookTarget(name="crit", url=server.url("/fast"), secret=SECRET, filters={"min_severity": "critical"})
    d = WebhookDispatcher(WebhooksConfig(targets=[target]), lambda *a: None)
    done = Done()
    low = alert(2, severity=21)
    assert d.submit(low, on_done=done.make(low.id)) == 0
    assert done.ids == [low.id]  # before submit returned
    crit = alert(3, severity=99)
    d.submit(crit, on_done=done.make("first"))
    wait_for(lambda: "first" in done.ids)
    assert d.submit(crit, on_done=done.make("again")) == 0 and "again" in done.ids  # a redelivery of a sent alert
    d.close(5)
    assert server.hits == ["/fast"]


def test_a_dead_lettered_delivery_is_done_after_its_dead_letter(server: Server):
    order: list[str] = []
    target = WebhookTarget(name="broken", url=server.url("/broken"), secret=SECRET, max_attempts=2)
    d = WebhookDispatcher(WebhooksConfig(targets=[target], backoff_initial=0.01, backoff_max=0.02),
                          lambda a, t, r, x: order.append(f"dead:{r}"))
    a = alert(4)
    d.submit(a, on_done=lambda: order.append("done"))
    wait_for(lambda: "done" in order)
    d.close(5)
    assert order == [f"dead:{REASON_FAILED}", "done"] and len(server.hits) == 2


def test_close_without_dead_letters_leaves_pending_deliveries_undone(server: Server):
    dead: list[str] = []
    target = WebhookTarget(name="slow", url=server.url("/slow"), secret=SECRET, timeout=0.5, max_attempts=50)
    d = WebhookDispatcher(WebhooksConfig(targets=[target], backoff_initial=0.5, backoff_max=1.0), lambda a, t, r, x: dead.append(r))
    done = Done()
    for i in (5, 6):
        d.submit(alert(i), on_done=done.make(str(i)))
    wait_for(lambda: d.stats.attempts >= 1)
    stats = d.close(0.3, dead_letter_pending=False)
    # Nothing completes, nothing is dead-lettered, nothing was delivered. A delivery
    # close() found waiting is abandoned at once; one it caught mid-attempt against the
    # slow target (both, on a loaded machine) is abandoned when that attempt times out.
    assert 0 <= stats.abandoned <= 2
    wait_for(lambda: stats.abandoned == 2)
    assert done.ids == [] and dead == [] and stats.delivered == 0 and stats.abandoned == 2


def test_bulk_body_is_ndjson_of_action_and_source_lines():
    docs = [("logs-ueba.alert-x", "a1", {"event": {"id": "a1"}, "n": 1.5}, "create"),
            ("ueba-entity-risk-x", "user:bob", {"ueba": {"risk": {"score": 80}}}, "index"),
            ("logs-ueba.alert-x", "a2", {"ueba": {"alert": {"count": 2}}}, "update")]
    lines = bulk_body(docs).split(b"\n")
    assert lines[-1] == b"" and len(lines) == 7
    parsed = [orjson.loads(x) for x in lines[:-1]]
    assert parsed[0] == {"create": {"_index": "logs-ueba.alert-x", "_id": "a1"}} and parsed[1] == docs[0][2]
    assert parsed[2] == {"index": {"_index": "ueba-entity-risk-x", "_id": "user:bob"}} and parsed[3] == docs[1][2]
    assert parsed[4] == {"update": {"_index": "logs-ueba.alert-x", "_id": "a2"}} and parsed[5] == {"doc": docs[2][2]}


def test_a_dead_letter_that_cannot_be_written_leaves_the_delivery_unfinished(server: Server):
    def dlq_down(*_):
        raise RuntimeError("dead-letter topic unreachable")

    target = WebhookTarget(name="broken", url=server.url("/broken"), secret=SECRET, max_attempts=1)
    d = WebhookDispatcher(WebhooksConfig(targets=[target]), dlq_down)
    done = Done()
    d.submit(alert(7), on_done=done.make("7"))
    wait_for(lambda: d.stats.dead.get(REASON_FAILED) == 1)
    d.close(5)
    assert done.ids == []  # never reported finished: a relay would not commit past it
