"""SOAR webhooks: targets file, filters, payload shapes, signatures, retry policy
and the dispatcher's delivery rules (against httpx mock transports)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import random
import threading
import time
from email.utils import formatdate
from pathlib import Path

import httpx
import orjson
import pytest
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from streams.alerts import Alert
from streams.kafka import DLQ_REASON, DLQ_STAGE, DeadLetter
from streams.webhooks import (
    DLQ_WEBHOOK_TARGET,
    REASON_CLOSED,
    REASON_FAILED,
    REASON_GONE,
    REASON_QUEUE_FULL,
    RetryPolicy,
    WebhookConfigError,
    WebhookDispatcher,
    WebhookFormat,
    WebhooksConfig,
    WebhookTarget,
    kafka_dead_letter,
    load_targets,
    parse_retry_after,
    parse_targets,
    redact,
    render,
    safe_url,
    sign_headers,
    standard_payload,
    thehive_payload,
    xsoar_payload,
)

WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
RAW = "plain-shared-secret-42"


def make_alert(**kw) -> Alert:
    base = dict(
        id="a1b2c3d4e5f6a1b2c3d4e5f6a1b2c3d4e5f6a1b2",
        ts=1795860000.123,
        source="detector:exfil_volume",
        kind="detector",
        rule_id="ueba-exfil_volume",
        rule_name="exfil volume",
        title="alice downloaded 40x her usual hourly volume",
        description="alice read 4.1 GB in an hour against a usual 100 MB.",
        score=83.0,
        severity=73,
        level="high",
        entity_type="user",
        entity="alice@example.com",
        stream="access",
        explanation={
            "feature": "ueba.transfer.bytes",
            "observed": 4.1e9,
            "baseline": {"center": 1.0e8, "n": 300},
            "peers": {"center": 2.0e8, "percentile": 99.9},
            "window": "1h",
            "reason": "alice read 4.1 GB | in an hour\nagainst a usual 100 MB.",
        },
        techniques=("T1530", "AML.T0025"),
        context={
            "user.name": "alice@example.com",
            "source.ip": "203.0.113.7",
            "ueba.model.artifact_hash": "ab" * 32,
            "user_agent.original": "curl/8.5",
        },
    )
    base.update(kw)
    return Alert(**base)


def target(**kw) -> WebhookTarget:
    base = dict(name="soar", url="https://soar.example/hook", secret=WHSEC)
    base.update(kw)
    return WebhookTarget(**base)


# ----------------------------------------------------------------- targets file

GOOD = """
queue_size: 50
backoff_initial: 0.01
targets:
  - name: hive
    url: https://thehive.example/api/v1/alert
    format: thehive
    authorization_file: hive.key
    filters: {min_severity: high, rules: [exfil_volume], entities: ["user:alice"]}
    timeout: 5
    max_attempts: 3
  - name: generic
    url: https://hooks.example/ueba
    secret_file: generic.secret
    filters: {min_severity: 47}
  - name: legacy
    url: http://127.0.0.1:1/x
    format: xsoar
    secret: s3cret-legacy
    enabled: false
"""


def test_load_targets_reads_every_field_and_relative_secret_files(tmp_path: Path):
    (tmp_path / "hive.key").write_text("Bearer hive-api-key\n")
    (tmp_path / "generic.secret").write_text(WHSEC + "\n")
    path = tmp_path / "webhooks.yml"
    path.write_text(GOOD)
    cfg = load_targets(path)
    hive, generic, legacy = cfg.targets
    assert cfg.queue_size == 50 and cfg.backoff_initial == 0.01
    assert hive.format is WebhookFormat.THEHIVE and hive.timeout == 5 and hive.max_attempts == 3
    assert hive.authorization.get_secret_value() == "Bearer hive-api-key" and hive.secret is None
    assert hive.filters.min_severity == 73 and hive.filters.rules == ("exfil_volume",)
    assert generic.secret.get_secret_value() == WHSEC and generic.filters.min_severity == 47
    assert generic.format is WebhookFormat.STANDARD and generic.max_attempts == 5
    assert legacy.enabled is False
    assert "hive-api-key" not in repr(cfg) and WHSEC not in repr(cfg)


@pytest.mark.parametrize(
    "doc,line,needle",
    [
        ("targets:\n  - name: a\n    url: https://x.example/\n    secret: s3c\n    colour: red\n", 5, "colour: Extra inputs are not permitted"),
        ("targets:\n  - name: a\n    url: https://x.example/\n    secret: s3c\n    url: https://y.example/\n", 5, "duplicate key 'url' (first on line 3)"),
        ("targets:\n  - {name: a, url: 'https://x.example/', secret: s3c}\n  - {name: a, url: 'https://y.example/', secret: s3c}\n", 1, "duplicate target name 'a'"),
        ("targets:\n  - name: a\n    url: https://x.example/\n", 2, "needs a secret"),
        ("targets:\n  - name: a\n    url: https://x.example/\n    secret: s3c\n    secret_file: /nonexistent\n", 2, "not both"),
        ("targets:\n  - name: a\n    url: https://x.example/\n    secret: whsec_%%%\n", 2, "must be base64"),
        ("targets:\n  - name: a\n    url: https://x.example/\n    secret: s3c\n    filters:\n      min_severity: severe\n", 6, "min_severity"),
        ("targets:\n  - name: a\n    url: https://x.example/\n    secret: s3c\n    format: splunk\n", 5, "format"),
        ("targets:\n  - name: a\n    url: https://x.example/\n    secret_file: missing.secret\n", 2, "cannot read"),
        ("- name: a\n", 1, "top level must be a mapping"),
        ("targets: [\n", 2, "expected"),
    ],
)
def test_invalid_targets_files_name_file_line_and_problem(tmp_path: Path, doc: str, line: int, needle: str):
    path = tmp_path / "webhooks.yml"
    path.write_text(doc)
    with pytest.raises(WebhookConfigError) as ei:
        load_targets(path)
    text = ei.value.diagnostics()
    assert f"{path}:{line}: " in text, text
    assert needle in text, text


def test_all_problems_are_reported_at_once():
    doc = "targets:\n  - name: a\n    url: ftp://x\n    secret: s3c\n    timeout: -1\n    max_attempts: 0\n"
    with pytest.raises(WebhookConfigError) as ei:
        parse_targets(doc)
    assert [ln for ln, _ in ei.value.problems] == [3, 5, 6]


def test_invalid_url_is_not_echoed_because_it_may_hold_credentials():
    doc = "targets:\n  - name: a\n    url: 'htp://admin:hunter2@x.example/'\n    secret: s3c\n"
    with pytest.raises(WebhookConfigError) as ei:
        parse_targets(doc)
    assert "hunter2" not in ei.value.diagnostics() and "absolute http" in ei.value.diagnostics()


def test_empty_file_means_no_targets():
    assert parse_targets("").targets == ()


# ----------------------------------------------------------------- filters


@pytest.mark.parametrize(
    "filters,alert_kw,selected",
    [
        ({}, {}, True),
        ({"min_severity": "critical"}, {}, False),
        ({"min_severity": 73}, {}, True),
        ({"min_severity": "HIGH"}, {"severity": 47}, False),
        ({"rules": ["ueba-exfil_volume"]}, {}, True),  # rule id
        ({"rules": ["exfil_volume"]}, {}, True),  # detector name
        ({"rules": ["detector:exfil_volume"]}, {}, True),  # alert source
        ({"rules": ["exfil volume"]}, {}, True),  # rule name
        ({"rules": ["impossible_travel", "d2f7c1"]}, {}, False),
        ({"rules": ["d2f7c1"]}, {"source": "rule:d2f7c1", "kind": "rule", "rule_id": "d2f7c1"}, True),
        ({"entities": ["alice@example.com"]}, {}, True),
        ({"entities": ["user:alice@example.com"]}, {}, True),
        ({"entities": ["api_key:alice@example.com"]}, {}, False),
        ({"entities": ["bob"]}, {}, False),
        ({"min_severity": "low", "rules": ["exfil_volume"], "entities": ["bob"]}, {}, False),
    ],
)
def test_filters(filters, alert_kw, selected):
    assert target(filters=filters).filters.matches(make_alert(**alert_kw)) is selected


@pytest.mark.parametrize("bad", [20, 50, "severe", True, None])
def test_min_severity_accepts_only_the_four_levels(bad):
    with pytest.raises(ValueError):
        target(filters={"min_severity": bad})


# ----------------------------------------------------------------- payloads


def test_standard_payload_wraps_the_ecs_document():
    a = make_alert()
    doc = orjson.loads(render(a, "standard", namespace="prod"))
    assert doc == {"type": "ueba.alert", "timestamp": "2026-11-28T10:00:00.123Z", "data": orjson.loads(orjson.dumps(a.to_ecs("prod")))}
    assert doc["data"]["event"]["id"] == a.id and doc["data"]["data_stream"]["namespace"] == "prod"
    assert standard_payload(a)["data"]["event"]["kind"] == "alert"


@pytest.mark.parametrize("severity,level,expected", [(21, "low", 1), (47, "medium", 2), (73, "high", 3), (99, "critical", 4)])
def test_severity_maps_to_thehive_and_xsoar_scales(severity, level, expected):
    a = make_alert(severity=severity, level=level)
    assert thehive_payload(a)["severity"] == expected
    assert xsoar_payload(a)["severity"] == expected


def test_thehive_alert_shape():
    a = make_alert()
    doc = orjson.loads(render(a, WebhookFormat.THEHIVE))
    assert doc["type"] == "ai-ueba" and doc["source"] == "ai-ueba" and doc["sourceRef"] == a.id
    assert doc["title"] == a.title and doc["date"] == 1795860000123 and isinstance(doc["date"], int)
    assert doc["tags"][:2] == ["T1530", "AML.T0025"] and "rule:ueba-exfil_volume" in doc["tags"]
    obs = {(o["dataType"], o["data"]) for o in doc["observables"]}
    assert obs == {
        ("ip", "203.0.113.7"),
        ("mail", "alice@example.com"),
        ("hash", "ab" * 32),
        ("user-agent", "curl/8.5"),
    }
    desc = doc["description"]
    for needle in ("Observed | 4100000000.0", "Baseline |", '"center":100000000.0', "Peers |", "Window | 1h", "Reason |", "MITRE ATT&CK | T1530, AML.T0025"):
        assert needle in desc, needle
    # The reason's pipe and newline cannot break the markdown table.
    assert "4.1 GB \\| in an hour against" in desc


def test_thehive_observables_for_non_email_user_and_ip_entity():
    a = make_alert(entity_type="source_ip", entity="198.51.100.9", context={"user.name": "svc-train"})
    obs = [(o["dataType"], o["data"]) for o in thehive_payload(a)["observables"]]
    assert obs == [("other", "svc-train"), ("ip", "198.51.100.9")]


def test_xsoar_incident_shape():
    a = make_alert()
    doc = orjson.loads(render(a, "xsoar", namespace="prod"))
    assert doc["name"] == a.title and doc["occurred"] == "2026-11-28T10:00:00.123Z" and doc["severity"] == 3
    assert "Window | 1h" in doc["details"]
    assert isinstance(doc["rawJSON"], str) and orjson.loads(doc["rawJSON"])["event"]["id"] == a.id
    labels = {(lbl["type"], lbl["value"]) for lbl in doc["labels"]}
    assert ("rule.id", "ueba-exfil_volume") in labels and ("threat.technique.id", "T1530") in labels
    assert ("source.ip", "203.0.113.7") in labels
    assert all(isinstance(lbl["value"], str) for lbl in doc["labels"])


# ----------------------------------------------------------------- signatures


def independent_standard_signature(secret: str, msg_id: str, ts: int, body: bytes) -> str:
    """Standard Webhooks spec, written from the spec rather than the library."""
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


@pytest.mark.parametrize("secret", [WHSEC, RAW])
def test_signatures_verify_with_the_library_and_an_independent_implementation(secret):
    body = render(make_alert(), "standard")
    now = int(time.time())
    h = sign_headers(body, "msg-1", now, SecretStr(secret))
    assert h["webhook-id"] == "msg-1" and h["webhook-timestamp"] == str(now)
    verifier = Webhook(secret if secret.startswith("whsec_") else secret.encode())
    assert verifier.verify(body, h)["type"] == "ueba.alert"
    assert h["webhook-signature"] == independent_standard_signature(secret, "msg-1", now, body)
    assert h["X-Hub-Signature-256"] == "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_known_answer_signature():
    # Fixed inputs -> fixed outputs, so an accidental change of the signing input is caught.
    h = sign_headers(b'{"a":1}', "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, SecretStr("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
    assert h["webhook-signature"] == independent_standard_signature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"a":1}')
    assert h["X-Hub-Signature-256"] == "sha256=" + hmac.new(b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", b'{"a":1}', hashlib.sha256).hexdigest()


def test_tampered_body_or_wrong_secret_fails_verification():
    body = render(make_alert(), "standard")
    h = sign_headers(body, "m", int(time.time()), SecretStr(WHSEC))
    with pytest.raises(WebhookVerificationError):
        Webhook(WHSEC).verify(body.replace(b"alice", b"mallory"), h)
    other = "whsec_" + base64.b64encode(b"another-secret-another-secret!!").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, h)


# ----------------------------------------------------------------- retry policy


class UpperRng(random.Random):
    """uniform(a, b) -> b: exposes the jitter window."""

    def uniform(self, a, b):
        return b


def test_backoff_is_exponential_capped_with_full_jitter():
    p = RetryPolicy(initial=0.5, maximum=5.0)
    assert [p.backoff(n, UpperRng()) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    rng = random.Random(7)
    samples = [p.backoff(3, rng) for _ in range(2000)]
    assert 0.0 <= min(samples) < 0.1 and 1.9 < max(samples) <= 2.0  # full jitter: the whole [0, cap]


def test_retry_after_seconds_and_http_date_with_injected_clock():
    now = 1_800_000_000.0
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(formatdate(now + 42, usegmt=True), now) == pytest.approx(42.0)
    assert parse_retry_after(formatdate(now - 42, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after("", now) is None and parse_retry_after(None, now) is None
    p = RetryPolicy(initial=0.5, maximum=5.0, retry_after_max=30.0)
    assert p.delay(1, 429, "12", now, UpperRng()) == 12.0
    assert p.delay(1, 503, formatdate(now + 20, usegmt=True), now, UpperRng()) == pytest.approx(20.0)
    assert p.delay(1, 429, "3600", now, UpperRng()) == 30.0  # capped
    assert p.delay(2, 500, "12", now, UpperRng()) == 1.0  # only 429/503 carry a binding Retry-After
    assert p.delay(2, 429, "garbage", now, UpperRng()) == 1.0
    assert p.delay(3, None, None, now, UpperRng()) == 2.0  # network error


# ----------------------------------------------------------------- dispatcher


class DeadLog:
    def __init__(self) -> None:
        self.items: list[tuple[str, str, str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, alert, target, reason, detail):
        with self.lock:
            self.items.append((alert.id, target.name, reason, detail))


def dispatcher(targets, handler, *, dead=None, clock=time.time, **cfg):
    cfg.setdefault("backoff_initial", 0.001)
    cfg.setdefault("backoff_max", 0.01)
    config = WebhooksConfig(targets=targets, **cfg)
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return WebhookDispatcher(config, dead if dead is not None else DeadLog(), client=client, clock=clock)


def test_delivers_signed_request_with_alert_id_as_webhook_id():
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(204)

    d = dispatcher([target(authorization="Bearer tok-123")], handler)
    a = make_alert()
    assert d.submit(a) == 1
    stats = d.close(5)
    assert stats.delivered == 1 and stats.deadlettered == 0 and len(seen) == 1
    req = seen[0]
    assert req.headers["webhook-id"] == a.id and req.headers["authorization"] == "Bearer tok-123"
    assert req.headers["content-type"] == "application/json"
    Webhook(WHSEC).verify(req.content, dict(req.headers))
    assert orjson.loads(req.content)["data"]["event"]["id"] == a.id


def test_submit_applies_filters_and_dedups_per_target():
    hits: list[str] = []

    def handler(req):
        hits.append(req.url.host)
        return httpx.Response(200)

    d = dispatcher([target(name="all", url="https://all.example/"), target(name="crit", url="https://crit.example/", filters={"min_severity": "critical"})], handler)
    a = make_alert()
    assert d.submit(a) == 1
    assert d.submit(a) == 0  # a redelivered alert is not sent twice
    assert d.submit(make_alert(id="f" * 40, severity=99, level="critical")) == 2
    stats = d.close(5)
    assert sorted(hits) == ["all.example", "all.example", "crit.example"] and stats.duplicates == 1


def test_429_retry_after_is_honoured_using_the_injected_clock():
    calls: list[float] = []
    now = 1_800_000_000.0

    def handler(req):
        calls.append(time.monotonic())
        if len(calls) == 1:
            # An HTTP date 0.3 s after the injected clock (whole seconds: 1.3 s after, clock is 1 s late).
            return httpx.Response(429, headers={"Retry-After": formatdate(now + 1, usegmt=True)})
        return httpx.Response(200)

    d = dispatcher([target()], handler, clock=lambda: now + 0.7)
    d.submit(make_alert())
    stats = d.close(5)
    assert stats.delivered == 1 and stats.retries == 1
    assert list(stats.delays) == [pytest.approx(0.3)]
    assert calls[1] - calls[0] >= 0.29


def test_retries_then_dead_letters_with_last_status():
    calls = []

    def handler(req):
        calls.append(1)
        return httpx.Response(503, text="maintenance")

    dead = DeadLog()
    d = dispatcher([target(max_attempts=3)], handler, dead=dead)
    d.submit(make_alert())
    stats = d.close(5)
    assert len(calls) == 3 and stats.retries == 2 and stats.attempts == 3
    assert [(r, n) for _, n, r, _ in dead.items] == [(REASON_FAILED, "soar")]
    assert "HTTP 503: maintenance" in dead.items[0][3] and "after 3 attempt(s)" in dead.items[0][3]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 302])
def test_permanent_errors_are_not_retried(status):
    calls = []

    def handler(req):
        calls.append(1)
        return httpx.Response(status, headers={"Location": "https://elsewhere.example/"} if status == 302 else {})

    dead = DeadLog()
    d = dispatcher([target(max_attempts=5)], handler, dead=dead)
    d.submit(make_alert())
    d.close(5)
    assert len(calls) == 1
    assert dead.items[0][2] == REASON_FAILED and f"HTTP {status}" in dead.items[0][3] and "permanent" in dead.items[0][3]


def test_network_errors_are_retried_and_redacted():
    def handler(req):
        raise httpx.ConnectError(f"cannot connect to {req.url} with Bearer tok-secret-99")

    dead = DeadLog()
    url = "https://ops:pa55word@soar.example/hook?token=qtok-777"
    d = dispatcher([target(url=url, authorization="Bearer tok-secret-99", max_attempts=2)], handler, dead=dead)
    d.submit(make_alert())
    stats = d.close(5)
    assert stats.attempts == 2
    (_, _, reason, detail), = dead.items
    assert reason == REASON_FAILED and "ConnectError" in detail
    for secret in ("pa55word", "qtok-777", "tok-secret-99"):
        assert secret not in detail


def test_410_disables_the_target_once_and_dead_letters_the_rest(caplog):
    calls = {"gone": 0, "ok": 0}

    def handler(req):
        if req.url.host == "gone.example":
            calls["gone"] += 1
            return httpx.Response(410)
        calls["ok"] += 1
        return httpx.Response(200)

    dead = DeadLog()
    d = dispatcher([target(name="gone", url="https://gone.example/"), target(name="ok", url="https://ok.example/")], handler, dead=dead, workers=1)
    with caplog.at_level(logging.WARNING, logger="ueba.webhooks"):
        d.submit(make_alert(id="1" * 40))
        deadline = time.monotonic() + 5
        while calls["gone"] == 0 or d.pending():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        d.submit(make_alert(id="2" * 40))
        d.submit(make_alert(id="3" * 40))
        stats = d.close(5)
    assert calls == {"gone": 1, "ok": 3}
    assert [(i[0][0], i[1], i[2]) for i in dead.items] == [("1", "gone", REASON_GONE), ("2", "gone", REASON_GONE), ("3", "gone", REASON_GONE)]
    assert stats.dead == {REASON_GONE: 3}
    assert sum("answered 410 Gone: disabled" in r.getMessage() for r in caplog.records) == 1


def test_queue_full_dead_letters_instead_of_blocking_and_close_dead_letters_the_rest():
    dead = DeadLog()
    config = WebhooksConfig(targets=[target()], queue_size=2)
    d = WebhookDispatcher(config, dead, client=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200))), start=False)
    t0 = time.monotonic()
    queued = [d.submit(make_alert(id=str(i) * 40)) for i in range(5)]
    assert time.monotonic() - t0 < 0.5  # never waits
    assert queued == [1, 1, 0, 0, 0]
    assert [(i[0][0], i[2]) for i in dead.items] == [("2", REASON_QUEUE_FULL), ("3", REASON_QUEUE_FULL), ("4", REASON_QUEUE_FULL)]
    stats = d.close(0.2)  # no worker ever ran: the two queued deliveries cannot be made
    assert stats.dead == {REASON_QUEUE_FULL: 3, REASON_CLOSED: 2}
    assert d.submit(make_alert(id="9" * 40)) == 0 and dead.items[-1][2] == REASON_CLOSED


def test_submit_is_fast_while_the_target_is_slow():
    release = threading.Event()

    def handler(req):
        release.wait(5)
        return httpx.Response(200)

    d = dispatcher([target()], handler, queue_size=100)
    t0 = time.monotonic()
    for i in range(50):
        d.submit(make_alert(id=f"{i:040d}"))
    assert time.monotonic() - t0 < 1.0
    release.set()
    stats = d.close(10)
    assert stats.delivered == 50 and stats.deadlettered == 0


def test_callback_failure_is_contained(caplog):
    def boom(*_):
        raise RuntimeError("dlq down")

    d = dispatcher([target(max_attempts=1)], lambda r: httpx.Response(500), dead=boom)
    d.submit(make_alert())
    stats = d.close(5)
    assert stats.dead == {REASON_FAILED: 1}
    assert any("dead-letter callback failed" in r.getMessage() for r in caplog.records)


def test_secrets_never_reach_the_logs(caplog):
    url = "https://ops:pa55word@soar.example/hook?token=qtok-777"

    def handler(req):
        return httpx.Response(500, text=f"bad token {WHSEC} Bearer tok-secret-99 at {url}")

    d = dispatcher([target(url=url, authorization="Bearer tok-secret-99", max_attempts=2)], handler)
    with caplog.at_level(logging.DEBUG):
        d.submit(make_alert())
        d.close(5)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "dead-lettered" in text
    for secret in ("pa55word", "qtok-777", "tok-secret-99", WHSEC, WHSEC[6:]):
        assert secret not in text


def test_redact_and_safe_url():
    assert safe_url("https://u:p@h.example:8443/a/b?token=x#frag") == "https://h.example:8443/a/b?..."
    assert redact("GET http://user:pw@h/x failed; key=abc123", ["abc123"]) == "GET http://***@h/x failed; key=***"
    t = target(url="https://u:pw-77@h.example/x?k=v")
    assert "pw-77" not in repr(t) and "pw-77" not in str(t) and "k=v" not in repr(t) and "h.example/x" in repr(t)


def test_kafka_dead_letter_record_format():
    class FakeProducer:
        def __init__(self):
            self.records = []

        def produce(self, topic, value, key, headers):
            self.records.append((topic, value, key, headers))

        def poll(self, _):
            return 0

    p = FakeProducer()
    on_dead = kafka_dead_letter(p, "ueba.deadletter", "ueba.alerts")
    a = make_alert()
    on_dead(a, target(), REASON_FAILED, "HTTP 500 (after 5 attempt(s))")
    (topic, value, key, headers), = p.records
    assert topic == "ueba.deadletter" and Alert.from_json(value) == a and key == b"user:alice@example.com"
    dl = DeadLetter.from_headers(value, key, headers)
    assert dl.reason == REASON_FAILED and dl.stage == "webhook" and dl.source_topic == "ueba.alerts"
    assert dl.detail == "soar: HTTP 500 (after 5 attempt(s))"
    h = dict(headers)
    assert h[DLQ_WEBHOOK_TARGET] == b"soar" and h[DLQ_REASON] == b"webhook_failed" and h[DLQ_STAGE] == b"webhook"
