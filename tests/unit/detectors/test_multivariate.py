"""The global PyOD model over per-identity snapshots, and the snapshotter feeding it.

Not in DETECTORS (a global model, not per-entity state), so it has its own tests.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from detectors.base import DETECTORS
from detectors.multivariate import FEATURES, FeatureSnapshotter, MultivariateDetector, MultivariateParams

T0 = 1_704_067_200.0  # Monday 00:00 UTC
DAY = 86_400.0


def _events(rng: random.Random, ident: str, day: int, outlier: bool):
    """One identity-day of access events: ~30 reads of ~12 datasets from 1-2 IPs in working hours."""
    n = rng.randint(20, 40) * (3 if outlier else 1)
    for _ in range(n):
        hour = rng.uniform(2, 23) if outlier else rng.uniform(9, 17)
        x = {
            "user.name": ident,
            "source.ip": f"10.1.{rng.randrange(40) if outlier else hash(ident) % 2}.7",
            "ueba.resource.id": f"ds-{rng.randrange(300) if outlier else rng.randrange(12)}",
            "ueba.transfer.bytes": rng.lognormvariate(16 if outlier else 13, 0.5),
            "event.outcome": "failure" if rng.random() < (0.3 if outlier else 0.03) else "success",
        }
        yield T0 + day * DAY + hour * 3600.0, x


def _snapshots(seed: int, identities: int = 60, days: int = 8, outliers: set[tuple[int, int]] = frozenset()):
    rng = random.Random(seed)
    snap = FeatureSnapshotter(period=DAY)
    rows = []
    for day in range(days):
        evs = []
        for u in range(identities):
            evs.extend((t, f"u{u}", x, int((u, day) in outliers)) for t, x in _events(rng, f"u{u}", day, (u, day) in outliers))
        evs.sort(key=lambda e: e[0])
        for t, ident, x, _ in evs:
            rows.extend(snap.update(ident, x, t))
    rows.extend(snap.flush())
    df = FeatureSnapshotter.to_frame(rows)
    df["label"] = [int((int(r.identity[1:]), int((r.period_start - T0) // DAY)) in outliers) for r in df.itertuples()]
    return df


@pytest.fixture(scope="module")
def train_df():
    return _snapshots(0)


@pytest.fixture(scope="module")
def test_df():
    return _snapshots(1, days=2, outliers={(3, 0), (17, 0), (29, 1), (44, 1), (51, 0), (8, 1)})


@pytest.fixture(scope="module")
def fitted(train_df):
    return MultivariateDetector().fit(train_df, ts=T0 + 8 * DAY)


def test_not_in_the_per_entity_registry():
    assert "multivariate" not in DETECTORS


def test_snapshotter_features(train_df):
    assert list(train_df.columns[:2]) == ["identity", "period_start"]
    assert len(train_df) == 60 * 8
    assert train_df["events"].between(20, 40).all()
    weekend = ((train_df["period_start"] - T0) // DAY).isin([5, 6])  # T0 is a Monday
    assert train_df.loc[~weekend, "off_hours_share"].eq(0.0).all()  # 9-17h UTC
    assert train_df.loc[weekend, "off_hours_share"].eq(1.0).all()
    # linear counting: 1-2 IPs, <= 12 datasets
    assert train_df["distinct_ips"].between(0.9, 2.2).all()
    assert train_df["distinct_resources"].between(5, 13.5).all()


def test_snapshotter_is_bounded_and_flushes():
    snap = FeatureSnapshotter(period=3600.0, max_identities=10)
    out = []
    for i in range(100):
        out.extend(snap.update(f"u{i}", {"ueba.transfer.bytes": 5}, T0 + i))
    assert len(snap._open) == 10 and len(out) == 90
    assert snap.flush(before=T0 + 1800) == []
    assert len(snap.flush(before=T0 + 3600)) == 10
    assert snap.update("", {}, T0) == [] and snap.update("u", {}, float("nan")) == []


def test_planted_outlier_identities_rank_first(fitted, test_df):
    scores = [fitted.score_one(r) for r in test_df[list(FEATURES)].to_dict("records")]
    auc = roc_auc_score(test_df["label"], [s.score for s in scores])
    assert auc >= 0.95
    top = max(scores, key=lambda s: s.score)
    assert top.score > 99
    assert top.explanation.feature in FEATURES and "z=" in top.explanation.reason


@pytest.mark.parametrize("model", ["iforest", "ecod"])
def test_batch_and_streaming_agree(train_df, test_df, model):
    det = MultivariateDetector(MultivariateParams(model=model)).fit(train_df)
    batch = det.decision_function(test_df)
    streamed = [det.score_one(r).raw for r in test_df[list(FEATURES)].to_dict("records")]
    assert np.allclose(batch, streamed)
    assert det.decision_function(test_df.iloc[[5]])[0] == pytest.approx(batch[5])  # row-independent
    before = det.to_bytes()
    det.score_one(test_df[list(FEATURES)].iloc[0].to_dict())
    assert det.to_bytes() == before  # scoring leaves the fitted state as it was


def test_calibration_is_the_empirical_training_tail(fitted, train_df):
    n = fitted.n_train_
    assert fitted.tail(float(fitted.train_scores_[-1]) + 1.0) == pytest.approx(1 / (n + 1))
    assert fitted.tail(float(fitted.train_scores_[0]) - 1.0) == 1.0
    # (batch raw scores + tail == score_one, see test_batch_and_streaming_agree; one-by-one is slow)
    scores = np.array([100 * (1 - fitted.tail(r)) for r in fitted.decision_function(train_df)])
    # on its own training rows the calibrated score is ~uniform on 0-100
    assert 35 < np.median(scores) < 65
    assert np.mean(scores > 99) <= 0.02


def test_round_trip_refit_due_and_warm_up(fitted, test_df):
    clone = MultivariateDetector.from_bytes(fitted.to_bytes(), fitted.params)
    row = test_df[list(FEATURES)].iloc[0].to_dict()
    assert clone.score_one(row).score == fitted.score_one(row).score
    assert not fitted.refit_due(T0 + 8.5 * 86_400.0)
    assert fitted.refit_due(T0 + 9 * 86_400.0)
    unfitted = MultivariateDetector()
    assert unfitted.refit_due(0.0) and unfitted.score_one(row).score == 0.0
    small = MultivariateDetector().fit(pd.DataFrame([row] * 10))
    assert small.score_one(row).score == 0.0  # fewer than min_rows


def test_missing_features_do_not_raise(fitted):
    s = fitted.score_one({"events": "many", "bytes": None, "unknown": 1})
    assert 0.0 <= s.score <= 100.0
