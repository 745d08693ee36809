"""The stream benchmark reads its latency figures from the worker's Prometheus text."""

import time

from streams.bench import p99_from_histogram

TEXT = """# HELP ueba_event_processing_seconds x
ueba_event_processing_seconds_bucket{stream="access",le="0.1"} 90.0
ueba_event_processing_seconds_bucket{stream="access",le="1.0"} 100.0
ueba_event_processing_seconds_bucket{stream="access",le="+Inf"} 100.0
ueba_event_processing_seconds_bucket{stream="api",le="0.1"} 99.0
ueba_event_processing_seconds_bucket{stream="api",le="1.0"} 99.0
ueba_event_processing_seconds_bucket{stream="api",le="+Inf"} 100.0
ueba_event_to_alert_seconds_bucket{le="0.25"} 3.0
ueba_event_to_alert_seconds_bucket{le="0.5"} 4.0
ueba_event_to_alert_seconds_bucket{le="+Inf"} 4.0
"""


def test_p99_sums_label_sets_and_picks_the_first_bucket_holding_99_percent():
    # 189 of 200 events within 0.1 s (94.5%), 199 within 1 s (99.5%)
    assert p99_from_histogram(TEXT, "ueba_event_processing_seconds") == (1.0, 200)
    assert p99_from_histogram(TEXT) == (0.5, 4)


def test_p99_of_an_empty_histogram_is_not_a_number():
    p, n = p99_from_histogram("", "ueba_event_processing_seconds")
    assert n == 0 and p != p


def test_cpu_seconds_of_this_process_grow_with_work():
    import os

    from streams.bench import _cpu_seconds

    before = _cpu_seconds(os.getpid())
    sum(i * i for i in range(2_000_000))
    assert _cpu_seconds(os.getpid()) > before
    assert _cpu_seconds(2**22 + 12345) == 0.0  # no such process


def test_p99_since_an_earlier_scrape_leaves_the_earlier_observations_out():
    before = """ueba_event_to_alert_seconds_bucket{le="0.25"} 0.0
ueba_event_to_alert_seconds_bucket{le="0.5"} 0.0
ueba_event_to_alert_seconds_bucket{le="+Inf"} 4.0
"""
    # the 4 slow ones (warm-up backlog) happened before; the 4 new ones are all within 0.5 s
    after = """ueba_event_to_alert_seconds_bucket{le="0.25"} 3.0
ueba_event_to_alert_seconds_bucket{le="0.5"} 4.0
ueba_event_to_alert_seconds_bucket{le="+Inf"} 8.0
"""
    assert p99_from_histogram(after) == (float("inf"), 8)
    assert p99_from_histogram(after, since=before) == (0.5, 4)


def test_machine_busy_counts_every_core_and_grows_with_work():
    from streams.bench import _machine_busy

    busy0, total0 = _machine_busy()
    x = 0
    for i in range(2_000_000):
        x += i
    time.sleep(0.05)
    busy1, total1 = _machine_busy()
    assert 0 < busy0 <= total0 and busy1 <= total1
    assert busy1 > busy0 and total1 > total0  # this process was busy meanwhile
    assert (busy1 - busy0) <= (total1 - total0)


def test_free_ports_are_below_the_ephemeral_range_and_never_handed_out_twice():
    # a port from the ephemeral range can be taken by any outgoing connection before
    # a worker binds it ("address already in use" made a CI run fail)
    import socket

    from streams.bench import _ephemeral_low, free_port

    low = _ephemeral_low()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == 200 and all(10_000 <= p < max(low, 12_000) for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # free when handed out
