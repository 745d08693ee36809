"""CUSUM / Page-Hinkley building blocks and ``telemetry_change``."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from detectors.base import DETECTORS
from detectors.change import (
    Adwin,
    BernoulliCusum,
    Cusum,
    PageHinkley,
    TelemetryChangeDetector,
    TelemetryChangeParams,
)


def test_cusum_tail_is_calibrated_under_no_change():
    rng = np.random.default_rng(0)
    c = Cusum()
    ps = []
    for z in rng.standard_normal(50_000):
        c.update(float(z))
        ps.append(c.p_value())
    ps = np.array(ps)
    # exp(-S) bounds the stationary tail: the alarm rate must not exceed the nominal level.
    for level in (0.05, 0.01, 0.001):
        assert np.mean(ps < level) <= level


def test_cusum_detects_a_one_sigma_shift_quickly_and_both_ways():
    rng = np.random.default_rng(1)
    for sign in (1, -1):
        c = Cusum()
        for z in rng.standard_normal(500):
            c.update(float(z))
        n = 0
        while c.p_value() > 1e-3:
            c.update(float(rng.standard_normal() + sign))
            n += 1
        assert n < 40
        assert (c.hi > c.lo) == (sign > 0)


def test_cusum_cap_bounds_recovery():
    c = Cusum(cap=30.0)
    for _ in range(1000):
        c.update(5.0)
    assert c.hi == 30.0
    steps = 0
    while c.p_value() < 0.5:
        c.update(0.0)
        steps += 1
    assert steps <= 62  # 30 / 0.5 per neutral observation


def test_building_blocks_round_trip_as_tuples():
    import dataclasses

    rng = random.Random(9)
    c, ph = Cusum(), PageHinkley()
    for _ in range(300):
        z = rng.gauss(0.3, 1)
        c.update(z)
        ph.update(z)
    c2, ph2 = Cusum(*dataclasses.astuple(c)), PageHinkley(*dataclasses.astuple(ph))
    c.update(1.5), c2.update(1.5), ph.update(1.5), ph2.update(1.5)
    assert (c2.hi, c2.lo) == (c.hi, c.lo) and ph2.statistic == ph.statistic > 0


def test_bernoulli_cusum_llr():
    b = BernoulliCusum(ratio=4.0, delta=0.02)
    p0 = 0.01
    assert b.llr(1, 1, p0) == math.log(0.04 / 0.01)
    assert b.llr(0, 1, p0) == math.log(0.96 / 0.99)
    # a window summary of 100 trials is the sum of its trials
    assert b.llr(3, 100, p0) == 3 * math.log(4.0) + 97 * math.log(0.96 / 0.99)


def test_page_hinkley_detects_step_not_noise():
    rng = random.Random(0)
    ph = PageHinkley(delta=0.05, threshold=20.0)
    for _ in range(2000):
        ph.update(rng.gauss(0, 0.1))
    assert not ph.drift_detected
    for _ in range(100):
        ph.update(rng.gauss(1.0, 0.1))
    assert ph.drift_detected
    ph.reset()
    assert ph.statistic == 0.0


def test_adwin_quiet_on_noise_detects_shift_and_stays_bounded():
    rng = np.random.default_rng(3)
    ad = Adwin(max_width=2000)
    false = sum(ad.update(float(x)) for x in rng.normal(0.0, 1.0, 5000))
    assert false == 0
    assert 1500 < ad.width <= 2000 and sum(len(level) for level in ad.levels) <= 6 * 12
    assert abs(ad.mean) < 0.1
    hits = [i for i, x in enumerate(rng.normal(1.0, 1.0, 600)) if ad.update(float(x))]
    assert hits and hits[0] < 200
    assert 0.8 < ad.mean < 1.2 and ad.width < 700
    # the incremental variance matches the window's (it is what the cut bound uses)
    ad2 = Adwin(clock=10**9)
    xs = rng.normal(5.0, 2.0, 777)
    for x in xs:
        ad2.update(float(x))
    assert ad2.variance / ad2.width == pytest.approx(np.var(xs), rel=1e-9)


def _event(rng, lat_ms=80.0, err_p=0.01, conf=0.9):
    err = rng.random() < err_p
    x = {"ueba.model.id": "m", "event.duration": int(rng.lognormvariate(math.log(lat_ms), 0.25) * 1e6),
         "ueba.telemetry.error": err}  # fmt: skip
    if not err:
        x["ueba.telemetry.confidence"] = min(1.0, max(0.0, rng.gauss(conf, 0.05)))
    return x


def _feed(det, xs, t0=0.0):
    out = []
    for i, x in enumerate(xs):
        out.append(det.score_one(x, t0 + i))
        det.learn_one(x, t0 + i)
    return out


def test_registered_with_atlas_techniques():
    assert DETECTORS["telemetry_change"] is TelemetryChangeDetector
    assert "AML.T0018" in TelemetryChangeDetector.techniques


def test_each_channel_is_named_when_it_changes():
    for kwargs, feature, word in (
        ({"lat_ms": 300.0}, "latency_ms", "up"),
        ({"conf": 0.6}, "confidence", "down"),
        ({"err_p": 0.3}, "error_rate", "rose"),
    ):
        rng = random.Random(7)
        det = TelemetryChangeDetector()
        _feed(det, [_event(rng) for _ in range(1000)])
        scores = _feed(det, [_event(rng, **kwargs) for _ in range(100)], 1000.0)
        top = max(scores, key=lambda s: s.score)
        assert top.score > 99.9, feature
        assert top.explanation.feature == feature
        assert word in top.explanation.reason


def test_single_latency_spike_is_not_a_change():
    rng = random.Random(3)
    det = TelemetryChangeDetector()
    _feed(det, [_event(rng) for _ in range(1000)])
    s = det.score_one(dict(_event(rng), **{"event.duration": 10_000_000_000}), 1000.0)
    assert s.score < 99


def test_warm_up_and_deploy_reset():
    rng = random.Random(4)
    p = TelemetryChangeParams()
    det = TelemetryChangeDetector(p)
    scores = _feed(det, [_event(rng) for _ in range(p.warmup)])
    assert all(s.score == 0.0 for s in scores)
    _feed(det, [_event(rng, lat_ms=300.0) for _ in range(200)], 1000.0)
    assert det.score_one(_event(rng, lat_ms=300.0), 2000.0).score > 99
    deploy = {"ueba.model.id": "m", "event.action": "model-deploy", "ueba.model.version": "2"}
    assert det.score_one(deploy, 2001.0).score == 0.0
    det.learn_one(deploy, 2001.0)
    assert det.n == [0, 0, 0] and det.deploys == 1
    # the new version's latency is its new normal
    scores = _feed(det, [_event(rng, lat_ms=300.0) for _ in range(400)], 3000.0)
    assert max(s.score for s in scores[p.warmup :]) < 99.9


def test_round_trip_and_size():
    rng = random.Random(5)
    det = TelemetryChangeDetector()
    _feed(det, [_event(rng) for _ in range(500)])
    clone = TelemetryChangeDetector.from_bytes(det.to_bytes(), det.params)
    assert clone.to_bytes() == det.to_bytes()
    x = _event(rng, lat_ms=200.0)
    assert clone.score_one(x, 1.0) == det.score_one(x, 1.0)
    assert len(det.to_bytes()) < 300
