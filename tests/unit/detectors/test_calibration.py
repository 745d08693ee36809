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
