"""Streaming statistics: what is specific to each sketch (accuracy, bounds, decay)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from detectors.stats import (
    AgingBloom,
    EWMeanVar,
    HourOfWeekProfile,
    HyperLogLog,
    LogHistogram,
    RecentSet,
    TumblingSum,
    hour_of_week,
    stable_hash,
)

MONDAY = 1_704_067_200.0  # 2024-01-01 00:00 UTC


def test_stable_hash_is_process_independent_golden():
    # State is persisted and moved between workers: the hash must never change.
    assert stable_hash("alice") == stable_hash("alice")
    assert stable_hash("alice") != stable_hash("alicf")
    assert stable_hash("s3://bucket/key") == 6215224924389497501


def test_hour_of_week_is_monday_based_utc():
    assert hour_of_week(MONDAY) == 0
    assert hour_of_week(MONDAY + 6 * 86400 + 23 * 3600 + 59) == 167
    assert hour_of_week(MONDAY + 7 * 86400) == 0


def test_ewmeanvar_matches_numpy_without_decay():
    xs = np.random.default_rng(0).normal(5, 2, 500)
    s = EWMeanVar(half_life=3600.0)
    for x in xs:
        s.update(float(x), 0.0)
    assert s.mean == pytest.approx(xs.mean(), rel=1e-9)
    assert s.var == pytest.approx(xs.var(), rel=1e-9)
    assert s.n == 500


def test_ewmeanvar_half_life_is_in_seconds_not_events():
    s = EWMeanVar(half_life=100.0)
    s.update(0.0, 0.0)
    s.update(1.0, 100.0)  # the first observation now weighs 1/2
    assert s.mean == pytest.approx(1 / 1.5)
    t = EWMeanVar(half_life=100.0)
    t.update(0.0, 0.0)
    for _ in range(50):
        t.update(1.0, 0.0)  # many events at the same time: no decay at all
    assert t.mean == pytest.approx(50 / 51)


def test_ewmeanvar_peek_is_update_without_side_effect():
    s = EWMeanVar(half_life=50.0)
    for i, x in enumerate([3.0, 1.0, 4.0, 1.0, 5.0]):
        s.update(x, float(i * 10))
    before = s.to_bytes()
    mean, var, n, w = s.peek(9.0, 77.0, 0.3)
    assert s.to_bytes() == before
    s.update(9.0, 77.0, 0.3)
    assert (mean, var, n, w) == (s.mean, s.var, s.n, s.weight)


def test_ewmeanvar_merge_equals_one_stream():
    xs = np.random.default_rng(1).normal(0, 1, 200)
    a, b, c = EWMeanVar(10.0), EWMeanVar(10.0), EWMeanVar(10.0)
    for i, x in enumerate(xs):
        (a if i % 2 else b).update(float(x), 5.0)
        c.update(float(x), 5.0)
    a += b
    assert a.mean == pytest.approx(c.mean, rel=1e-9)
    assert a.var == pytest.approx(c.var, rel=1e-9)
    assert EWMeanVar.from_bytes(a.to_bytes(), 10.0).to_bytes() == a.to_bytes()


def test_hyperloglog_error_within_three_standard_errors():
    for p, n in ((6, 2000), (8, 20000)):
        h = HyperLogLog(p)
        for i in range(n):
            h.update(f"10.0.{i // 256}.{i % 256}-{i}")
        se = 1.04 / math.sqrt(1 << p)
        assert abs(h.get() - n) / n < 3 * se, (p, h.get())
        assert len(h.to_bytes()) == 1 << p


def test_hyperloglog_small_counts_are_nearly_exact_and_merge():
    a, b = HyperLogLog(6), HyperLogLog(6)
    for i in range(3):
        a.update(f"ip{i}")
        a.update(f"ip{i}")  # duplicates do not count
    for i in range(2, 6):
        b.update(f"ip{i}")
    assert round(a.get()) == 3
    a += b
    assert round(a.get()) == 6
    assert HyperLogLog.from_bytes(a.to_bytes()).get() == a.get()


def test_aging_bloom_false_positive_rate_and_no_false_negatives():
    bf = AgingBloom(n_bytes=128, k=3, capacity=96)
    seen = [f"dataset-{i}" for i in range(5000)]
    for v in seen:
        bf.update(v)
    # the last generation is always remembered
    assert all(v in bf for v in seen[-96:])
    fp = sum(f"other-{i}" in bf for i in range(20000)) / 20000
    assert fp < 0.05
    assert len(bf.to_bytes()) == 2 + 2 * 128  # bounded whatever was inserted
    clone = AgingBloom.from_bytes(bf.to_bytes(), 3, 96)
    assert all((v in clone) == (v in bf) for v in seen[-300:])


def test_recent_set_is_capped_lru_with_protected_novelty():
    s = RecentSet(capacity=3)
    for h in (1, 2, 3, 1, 4):   # 2 is least recently seen when 4 arrives
        s.update(h)
    assert list(s.items) == [3, 1, 4]
    assert s.n_new == 4 and s.n_obs == 5
    s.update(99, w=0.05)
    assert s.n_new == pytest.approx(4.05)
    assert RecentSet.from_bytes(s.to_bytes(), 3).to_bytes() == s.to_bytes()


def test_log_histogram_quantiles_within_bucket_resolution():
    rng = np.random.default_rng(2)
    xs = rng.lognormal(np.log(1e6), 1.0, 20000)
    h = LogHistogram(per_octave=2)
    for x in xs:
        h.update(float(x))
    for q in (0.25, 0.5, 0.9):
        true = np.quantile(xs, q)
        assert true / 1.5 < h.quantile(q) < true * 1.5
    assert h.cdf(np.quantile(xs, 0.9)) == pytest.approx(0.9, abs=0.06)
    assert h.mad() > 0
    assert len(h.to_bytes()) == 192


def test_hour_profile_rare_hour_and_busy_hour():
    p = HourOfWeekProfile()
    for day in range(100):
        if day % 7 in (5, 6):
            continue
        for hour in range(9, 17):
            p.update(MONDAY + day * 86400 + hour * 3600 + 60)
    tue_10 = hour_of_week(MONDAY + 86400 + 10 * 3600)
    sun_03 = hour_of_week(MONDAY + 6 * 86400 + 3 * 3600)
    assert p.tail_p(tue_10) == 1.0
    assert p.tail_p(sun_03) < 0.02
    # smoothing: 08:00 next to a 09:00 start is less rare than 03:00
    tue_08 = hour_of_week(MONDAY + 86400 + 8 * 3600)
    assert p.tail_p(tue_08) > p.tail_p(sun_03)
    assert len(p.to_bytes()) == 336


def test_tumbling_sum_closes_windows_and_slides():
    s = TumblingSum(3600.0)
    assert s.add(5.0, 10.0) is None
    assert s.add(5.0, 20.0) is None
    assert s.add(1.0, 3600.0 + 5) == (0, 10.0)
    assert s.sliding(3600.0 + 1800) == pytest.approx(1.0 + 10.0 * 0.5)
    assert s.peek(2.0, 3600.0 + 6) == 3.0
    assert s.peek(2.0, 7200.0) == 2.0
    assert TumblingSum.from_bytes(s.to_bytes(), 3600.0).to_bytes() == s.to_bytes()


def test_per_event_updates_are_cheap():
    """Guard against accidental O(n) or numpy work on the per-event path."""
    import time

    s, h, bf = EWMeanVar(60.0), HyperLogLog(6), AgingBloom()
    rng = random.Random(0)
    vals = [rng.random() for _ in range(20000)]
    t0 = time.perf_counter()
    for i, v in enumerate(vals):
        s.update(v, float(i))
        h.add_hash(i * 0x9E3779B97F4A7C15 & (2**64 - 1))
        bf.add_hash(i * 0x9E3779B97F4A7C15 & (2**64 - 1))
    per_event = (time.perf_counter() - t0) / len(vals)
    assert per_event < 50e-6  # generous: shared CI machines
