"""Prometheus metrics (one registry per process) and the endpoint that serves them."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("ueba.metrics")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("ueba_events_total", "Input events read, by stream", ["stream"], registry=r)
        self.deadletters = Counter(
            "ueba_deadletters_total", "Records sent to the dead-letter topic, by source topic and reason", ["stream", "reason"], registry=r
        )
        self.alerts = Counter("ueba_alerts_total", "Alerts emitted, by detector or rule", ["source"], registry=r)
        self.held = Counter(
            "ueba_findings_held_total",
            "Detector findings the scoring stage did not send on: dropped by the policy, or repeats counted in an open suppression window",
            ["stream", "reason"],
            registry=r,
        )
        self.indexed = Counter("ueba_sink_documents_total", "Documents acknowledged by the search engine", ["index"], registry=r)
        self.sink_retries = Counter("ueba_sink_retries_total", "Bulk requests retried", registry=r)
        self.latency = Histogram(
            "ueba_event_to_alert_seconds",
            "Seconds from the input event's arrival in Kafka (its record timestamp) until its alert was acknowledged in the alerts topic",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.processing = Histogram(
            "ueba_event_processing_seconds",
            "Seconds from an input event's arrival in Kafka (its record timestamp) until it was scored and its outputs acknowledged by Kafka",
            ["stream"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.lag = Gauge("ueba_consumer_lag", "Consumer lag by topic and partition", ["topic", "partition"], registry=r)
        self.table_keys = Gauge("ueba_table_keys", "Keys held in a state table", ["table"], registry=r)
        self.last_progress = Gauge("ueba_last_progress_timestamp", "Unix time of the last processed event", registry=r)

    def serve(self, port: int) -> None:
        if port:
            start_http_server(port, addr="127.0.0.1", registry=self.registry)
            log.info("metrics on http://127.0.0.1:%d/metrics", port)


METRICS = Metrics()
