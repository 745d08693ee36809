"""The common 0-100 scale: tails are right and the scalar/array twins agree."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from detectors.calibration import (
    SENSITIVITY_WEIGHT,
    cusum_tail,
    normal_sf,
    normal_sf_array,
    novelty_p,
    pareto_tail,
    poisson_sf,
    poisson_sf_array,
    score_from_p,
    z_tail_score,
    z_tail_score_array,
)


def test_score_is_one_minus_tail_probability():
    assert score_from_p(0.01) == pytest.approx(99.0)
    assert score_from_p(1.5) == 0.0 and score_from_p(-1.0) == 100.0
    assert z_tail_score(0.0) == pytest.approx(50.0)
    assert z_tail_score(3.0) == pytest.approx(100 * stats.norm.cdf(3.0))


@pytest.mark.parametrize("k,lam", [(1, 0.1), (3, 0.5), (10, 2.0), (40, 20.0), (80, 50.0), (5, 30.0), (300, 250.0)])
def test_poisson_tail_matches_scipy(k, lam):
    assert poisson_sf(k, lam) == pytest.approx(stats.poisson.sf(k - 1, lam), rel=1e-9, abs=1e-15)


def test_array_twins_agree_with_scalars():
    z = np.linspace(-5, 9, 57)
    assert np.allclose(normal_sf_array(z), [normal_sf(v) for v in z], rtol=1e-12, atol=0)
    assert np.allclose(z_tail_score_array(z), [z_tail_score(v) for v in z], rtol=1e-12, atol=1e-12)
    k = np.array([0, 1, 2, 5, 17, 60, 61, 200])
    lam = np.array([0.3, 0.3, 1.0, 2.0, 4.0, 30.0, 45.0, 150.0])
    assert np.allclose(poisson_sf_array(k, lam), [poisson_sf(a, b) for a, b in zip(k, lam)], rtol=1e-9, atol=1e-15)


def test_novelty_laplace_prior_and_sensitivity():
    assert novelty_p(0, 0) == 0.5            # nothing known: a coin flip, not an alert
    assert novelty_p(2, 998) == pytest.approx(3 / 1000)
    assert novelty_p(2, 998, SENSITIVITY_WEIGHT["restricted"]) < novelty_p(2, 998)


def test_pareto_and_cusum_tails():
    assert pareto_tail(0.9) == 1.0 and pareto_tail(2.0, 4.0) == pytest.approx(1 / 16)
    assert cusum_tail(0.0) == 1.0 and cusum_tail(4.6, 0.5) == pytest.approx(np.exp(-4.6))


# --- calibration to identity-days (the suite's re-calibration) -----------------

from detectors.calibration import TailSketch, normal_surprise, sidak_p, surprise_of_score  # noqa: E402


def test_normal_surprise_is_exact_far_into_the_tail():
    for z in (-2.0, 0.0, 1.5, 5.0, 12.0, 24.9, 25.0, 30.0, 37.0):
        assert normal_surprise(z) == pytest.approx(-stats.norm.logsf(z) / np.log(10), rel=1e-6)
    assert normal_surprise(100.0) == 300.0  # capped, never inf


def test_surprise_of_a_score_and_sidak():
    assert surprise_of_score(0.0) == 0.0 and surprise_of_score(-5.0) == 0.0
    assert surprise_of_score(99.0) == pytest.approx(2.0)
    assert surprise_of_score(100.0) == 15.0  # what a 0-100 score can still tell
    assert sidak_p(0.01, 1) == pytest.approx(0.01)
    assert sidak_p(1e-6, 24) == pytest.approx(24e-6, rel=1e-4)
    assert sidak_p(1.0, 5) == 1.0 and sidak_p(0.0, 5) == 0.0


def test_tail_sketch_recovers_an_exponential_tail_and_extrapolates_it():
    rng = np.random.default_rng(0)
    sk = TailSketch(k=32, per=32, sigma0=0.5, prior=0.0)
    for i, v in enumerate(rng.exponential(0.5, 20_000)):
        sk.update(float(v), 1000.0 + i)
    for v in (3.0, 4.0, 6.0):  # 6 is beyond every value seen
        assert sk.tail(v) == pytest.approx(np.exp(-v / 0.5), rel=0.6)
    assert 1.0 >= sk.tail(1.0) > sk.tail(3.0) > sk.tail(10.0) > 0.0
    assert TailSketch().tail(5.0) == 1.0  # no data, no claim


def test_tail_sketch_leaves_the_identity_out_and_caps_its_share():
    sk = TailSketch(k=4, per=2, sigma0=1.0)
    for i in range(200):  # 20 members with ordinary hours
        sk.update(1.0 + (i % 10) * 0.01, float(i), who=i % 20)
    for j in range(5):  # one member with enormous ones
        sk.update(12.0 + j, 300.0 + j, who=99)
    assert sorted(e[0] for e in sk.top if e[1] == 99) == [15.0, 16.0]  # at most `per` kept, its largest
    # against its peers, 12 is unheard of; pooled with its own hours it looks ordinary
    assert sk.tail(12.0, excl=99) < 1e-6 < 1e-3 < sk.tail(12.0)
    clone = TailSketch.from_bytes(sk.to_bytes(), k=4, per=2, sigma0=1.0)
    assert clone.tail(12.0, excl=99) == pytest.approx(sk.tail(12.0, excl=99), rel=1e-4)
    assert clone.n == pytest.approx(sk.n, rel=1e-6)
    merged = TailSketch(k=4, per=2, sigma0=1.0).merge(sk)
    assert merged.tail(12.0, excl=99) == pytest.approx(sk.tail(12.0, excl=99), rel=1e-9)


def test_tail_sketch_forgets_slowly():
    sk = TailSketch(k=4, half_life=86400.0, memory=10 * 86400.0)
    sk.update(9.0, 0.0, who=1)
    for d in range(1, 12):
        sk.update(1.0, d * 86400.0, who=2 + d)
    assert all(e[0] < 9.0 for e in sk.top)  # the old extreme aged out of memory
    assert sk.n < 3.0  # the sample size decays with the half-life


def _reference_tail(sk, v, excl=None, sigma0=None):
    """TailSketch.tail computed from scratch (no memo), as the definition reads."""
    vals = [e[0] for e in sk.top if excl is None or e[1] != excl]
    if sk.n <= 0.0 or not vals:
        return 1.0
    u = vals[0]
    s0 = sk.sigma0 if sigma0 is None else sigma0
    sig = s0 if len(vals) < 2 else (sum(vals) - u * len(vals) + sk.prior * s0) / (len(vals) - 1 + sk.prior)
    frac = min(1.0, len(vals) / sk.n)
    return frac * np.exp(-(v - u) / sig) if v >= u else min(1.0, frac * np.exp((u - v) / sig))


def test_tail_sketch_memo_follows_every_change():
    """The per-producer summaries are memoised; updates, merges and loads must not serve stale ones."""
    rng = np.random.default_rng(4)
    sk = TailSketch(k=6, per=2, sigma0=0.7)
    other = TailSketch(k=6, per=2, sigma0=0.7)
    for i in range(400):
        who = int(rng.integers(0, 12))
        (sk if i % 3 else other).update(float(rng.exponential(1.5)), 60.0 * i, who=who)
        if i % 7 == 0:
            for excl in (None, who, 999):
                for v in (0.5, 2.0, 6.0):
                    assert sk.tail(v, excl, 1.3) == pytest.approx(_reference_tail(sk, v, excl, 1.3), rel=1e-12)
    sk.merge(other)
    for excl in [None] + [e[1] for e in sk.top]:
        assert sk.tail(3.0, excl) == pytest.approx(_reference_tail(sk, 3.0, excl), rel=1e-12)
    clone = TailSketch.from_bytes(sk.to_bytes(), k=6, per=2, sigma0=0.7)
    clone.tail(3.0, sk.top[0][1])  # fill the memo, then change the sketch
    clone.update(50.0, 1e6, who=sk.top[0][1])
    assert clone.tail(3.0, sk.top[0][1]) == pytest.approx(_reference_tail(clone, 3.0, sk.top[0][1]), rel=1e-12)
