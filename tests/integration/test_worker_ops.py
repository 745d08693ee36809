"""Operating a worker: Prometheus metrics and the liveness endpoint, on the real broker."""

from __future__ import annotations

import time

import httpx

from streams.app import Health
from streams.kafka import ensure_topics
from streams.settings import Settings

from .conftest import free_port, produce, worker
from .test_backbone import access_event


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


def test_metrics_and_health_report_progress(settings: Settings, tmp_path):
    ensure_topics(settings)
    metrics_port = free_port()
    s = settings.model_copy(update={"worker": settings.worker.model_copy(update={"metrics_port": metrics_port})})
    produce(s, s.topics.access, [(b"dave", access_event(i, "s3://a", "dave")) for i in range(30)] + [(b"x", b"junk")])
    with worker(s, tmp_path) as w:
        deadline = time.monotonic() + 90
        text = ""
        while time.monotonic() < deadline:
            r = _get(f"http://127.0.0.1:{metrics_port}/metrics")
            text = r.text if r is not None else ""
            if 'ueba_events_total{stream="access"} 31.0' in text:
                break
            time.sleep(1)
        assert 'ueba_events_total{stream="access"} 31.0' in text, w.log()[-2000:]
        assert 'ueba_deadletters_total{reason="not_json"' in text
        # lag is measured every 5 s; once all is read, health is ok with zero lag
        body = None
        while time.monotonic() < deadline:
            r = _get(f"http://127.0.0.1:{s.worker.web_port}/health")
            if r is not None and r.status_code == 200:
                body = r.json()
                if body["partitions"] and body["lag"] == 0:
                    break
            time.sleep(1)
        assert body is not None and body["status"] == "ok" and body["lag"] == 0
        assert any(k.startswith(s.topics.access) for k in body["partitions"])
        assert "ueba_consumer_lag" in _get(f"http://127.0.0.1:{metrics_port}/metrics").text


def test_health_verdict_flags_a_stalled_worker():
    h = Health(stall_seconds=60)
    h.last_progress = 1000.0
    h.lag = {"t/0": 0}
    assert h.verdict(5000.0)[0] is True  # idle but nothing to do: healthy
    h.lag = {"t/0": 12}
    ok, body = h.verdict(1030.0)
    assert ok and body["status"] == "ok"
    ok, body = h.verdict(1100.0)
    assert not ok and body["status"] == "stalled" and body["lag"] == 12
