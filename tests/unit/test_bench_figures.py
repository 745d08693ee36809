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


def test_the_cores_bound_is_what_the_cores_serve_at_the_measured_costs():
    from streams.bench import cores_bound

    # 2 cores, 100 us of worker CPU and 60 of broker/producer per event: 2e6 / 160
    assert cores_bound(100.0, 60.0, 2) == 12_500.0
    # a cheaper worker raises the bound, but less than in proportion: the rest stays
    assert cores_bound(50.0, 60.0, 2) < 2 * cores_bound(100.0, 60.0, 2)
    assert cores_bound(0.0, 0.0, 2) == float("inf")


def test_local_broker_pids_finds_a_process_by_its_main_class(tmp_path):
    import subprocess
    import sys

    from streams.bench import local_broker_pids

    # a stand-in whose command line names the broker's main class as an argument of its own
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "kafka.Kafka"])
    try:
        for _ in range(50):
            if p.pid in local_broker_pids():
                break
            time.sleep(0.05)
        assert p.pid in local_broker_pids()
    finally:
        p.kill()
        p.wait()
    assert p.pid not in local_broker_pids()


def test_parse_cost_grows_with_the_size_of_the_events_and_survives_bad_ones():
    import orjson

    from streams.bench import parse_cost

    doc = {"@timestamp": "2026-01-01T00:00:00Z", "event": {"dataset": "ai.access", "action": "login"}, "user": {"name": "ana"}}
    big = doc | {"labels": {f"k{i}": f"v{i}" for i in range(400)}}
    small_us = parse_cost([("access", b"ana", orjson.dumps(doc))] * 2000)
    big_us = parse_cost([("access", b"ana", orjson.dumps(big))] * 2000)
    assert 0 < small_us < big_us
    # a rejected event is timed too (the worker pays for it), never raised
    assert parse_cost([("access", b"x", b"{not json")] * 10) > 0


def test_split_bound_is_the_total_over_the_busiest_worker_in_the_most_even_split():
    from streams.bench import split_bound

    assert split_bound({0: 10, 1: 10, 2: 10, 3: 10}) == 2.0
    # one heavy partition: its worker also gets a second one (Faust balances counts): 57+13 | 15+15
    assert split_bound({0: 57, 1: 15, 2: 15, 3: 13}) == 100 / 70
    # the best split is found, not the first: 6+4 | 5+5 -> 10 | 10
    assert split_bound({0: 6, 1: 5, 2: 5, 3: 4}) == 2.0
    # counts balanced even when a load-balanced split would differ: 8 | 1+1+1+1+1 is not allowed
    assert split_bound({0: 8, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1}) == 13 / 10
    assert split_bound({0: 9, 1: 1}, workers=3) == 10 / 9
    assert split_bound({0: 0, 1: 0}) != split_bound({0: 0, 1: 0})  # nan: nothing to split


def test_steal_is_a_share_of_the_same_total_and_never_counted_busy():
    from streams.bench import _machine_busy, _machine_steal

    busy, total = _machine_busy()
    steal, total2 = _machine_steal()
    assert total2 >= total > 0 and 0 <= steal <= total2
    assert busy + steal <= total2
