"""Divergences, reference handling and caller attribution of ``telemetry_drift``."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

from detectors.base import DETECTORS
from detectors.drift import TelemetryDriftDetector, TelemetryDriftParams, js_divergence, ks_statistic, psi


def test_psi_hand_computed():
    p = np.array([0.5, 0.3, 0.2])
    q = np.array([0.3, 0.3, 0.4])
    expected = (0.3 - 0.5) * math.log(0.3 / 0.5) + 0 + (0.4 - 0.2) * math.log(0.4 / 0.2)
    assert psi(p, q) == pytest.approx(expected)
    assert psi(p, p) == 0.0
    # vectorised over rows
    assert psi(np.stack([p, p]), np.stack([q, p])).tolist() == pytest.approx([expected, 0.0])


def test_js_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p = rng.dirichlet(np.ones(8))
        q = rng.dirichlet(np.ones(8))
        q[rng.integers(8)] = 0.0  # empty bins are allowed
        q /= q.sum()
        assert js_divergence(p, q) == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=1e-12)
    assert js_divergence(p, p) == pytest.approx(0.0, abs=1e-15)


def test_binned_ks_matches_scipy_on_gridded_data():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 8, 500)
    b = np.clip(rng.integers(0, 8, 300) + rng.integers(0, 2, 300), 0, 7)
    ha = np.bincount(a, minlength=8) / a.size
    hb = np.bincount(b, minlength=8) / b.size
    assert ks_statistic(ha, hb) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)


def _ev(rng, caller, conf=None, amount=None, pred=None, version="1"):
    return {
        "ueba.model.id": "m",
        "ueba.model.version": version,
        "ueba.telemetry.prediction": pred or ("fraud" if rng.random() < 0.1 else "legit"),
        "ueba.telemetry.confidence": conf if conf is not None else rng.betavariate(12, 1.5),
        "ueba.telemetry.features": {"amount": amount if amount is not None else rng.lognormvariate(4, 0.5)},
        "ueba.telemetry.caller_api_key": caller,
    }


def _feed(det, xs):
    out = []
    for i, x in enumerate(xs):
        out.append(det.score_one(x, float(i)))
        det.learn_one(x, float(i))
    return out


def test_registered_with_atlas_techniques():
    assert DETECTORS["telemetry_drift"] is TelemetryDriftDetector
    assert set(TelemetryDriftDetector.techniques) == {"AML.T0020", "AML.T0018", "AML.T0015"}


def test_no_alerts_without_drift():
    rng = random.Random(0)
    det = TelemetryDriftDetector()
    scores = _feed(det, [_ev(rng, f"k{i % 5}") for i in range(3000)])
    assert all(s.score == 0 for s in scores[: det.params.reference_size])
    assert np.mean(np.array([s.score for s in scores]) > 99.9) < 0.005


def test_attribution_names_the_poisoning_caller():
    rng = random.Random(1)
    det = TelemetryDriftDetector()
    _feed(det, [_ev(rng, f"tenant{i % 6}") for i in range(1500)])
    # tenant-x: a third of the traffic, sends huge amounts; the others carry on as before
    mixed = [_ev(rng, "tenant-x", amount=rng.lognormvariate(8, 0.3)) if i % 3 == 0 else _ev(rng, f"tenant{i % 6}")
             for i in range(300)]  # fmt: skip
    scores = _feed(det, mixed)
    poisoned = [s for s, x in zip(scores, mixed) if x["ueba.telemetry.caller_api_key"] == "tenant-x"]
    assert np.median([s.score for s in poisoned[50:]]) > 99.9
    s = poisoned[-1]
    assert s.explanation.feature == "ueba.telemetry.features.amount"
    top = s.explanation.observed["callers"][0]
    assert top["caller"] == "tenant-x"
    assert top["share"] == pytest.approx(1 / 3, abs=0.1)
    assert top["contribution"] > 0.5
    assert "tenant-x" in s.explanation.reason
    # the other tenants' events are not part of the shift
    others = [s.score for s, x in zip(scores, mixed) if x["ueba.telemetry.caller_api_key"] != "tenant-x"]
    assert np.mean(np.array(others) > 99) < 0.2


def test_deploy_resets_the_reference():
    rng = random.Random(2)
    p = TelemetryDriftParams()
    det = TelemetryDriftDetector(p)
    _feed(det, [_ev(rng, "k") for _ in range(1000)])
    new = [_ev(rng, "k", conf=rng.betavariate(3, 3), version="2") for _ in range(400)]
    # without a deploy, a new version with new behaviour is drift (a swapped model) ...
    clone = TelemetryDriftDetector.from_bytes(det.to_bytes(), p)
    swapped = _feed(clone, new)
    assert max(s.score for s in swapped) > 99.9
    assert "no deploy event" in max(swapped, key=lambda s: s.score).explanation.reason
    # ... after a deploy event it is the new reference
    deploy = {"ueba.model.id": "m", "event.action": "model-deploy", "ueba.model.version": "2"}
    assert det.score_one(deploy, 0.0).score == 0.0
    det.learn_one(deploy, 0.0)
    assert det.n == 0 and det.deploys == 1 and det.model_version == "2"
    scores = _feed(det, new)
    assert all(s.score == 0 for s in scores[: p.reference_size])
    assert max(s.score for s in scores) < 99.9


def test_prediction_classes_are_bounded():
    rng = random.Random(3)
    det = TelemetryDriftDetector()
    _feed(det, [_ev(rng, "k", pred=f"class-{i}") for i in range(500)])
    assert len(det.classes) == det.params.bins - 1
    assert len(det.to_bytes()) <= 2048


def test_round_trip_mid_window():
    rng = random.Random(4)
    det = TelemetryDriftDetector()
    _feed(det, [_ev(rng, f"k{i % 7}") for i in range(800)])
    clone = TelemetryDriftDetector.from_bytes(det.to_bytes(), det.params)
    assert clone.to_bytes() == det.to_bytes()
    x = _ev(rng, "k1", conf=0.3)
    assert clone.score_one(x, 0.0).score == det.score_one(x, 0.0).score


def test_state_stays_small_with_hostile_unicode_names():
    rng = random.Random(5)
    det = TelemetryDriftDetector()
    wide = "\U0001F600" * 200  # 4 UTF-8 bytes per character
    xs = []
    for i in range(1200):
        x = _ev(rng, f"{i}{wide}", pred=f"{i}{wide}", version=f"{i}{wide}")
        x["ueba.telemetry.features"] = {f"{j}{wide}": 1.0 * j for j in range(40)}
        xs.append(x)
    _feed(det, xs)
    assert len(det.classes) == det.params.bins - 1 and len(det.features) == det.params.max_features
    assert len(det.to_bytes()) <= 2048


def test_ai_detectors_cite_known_atlas_techniques():
    import detectors.change  # noqa: F401 - registers telemetry_change
    import detectors.extraction  # noqa: F401 - registers api_extraction
    from streams.mitre import TECHNIQUES

    for name in ("api_extraction", "telemetry_drift", "telemetry_change"):
        cls = DETECTORS[name]
        assert cls.techniques and set(cls.techniques) <= set(TECHNIQUES), name
        assert all(t.startswith("AML.T") for t in cls.techniques)


def _as_version_1(det) -> bytes:
    """The state as the previous format (version 1: plain window values, no stored refresh) wrote it."""
    import msgspec

    det._renormalise()  # version 1 had no running scale
    fields = msgspec.msgpack.decode(det.to_bytes())
    fields[0] = 1
    return msgspec.msgpack.encode(fields[:17])


def test_version_1_states_still_load():
    rng = random.Random(6)
    det = TelemetryDriftDetector()
    _feed(det, [_ev(rng, f"k{i % 5}") for i in range(900)])
    old = TelemetryDriftDetector.from_bytes(_as_version_1(det), det.params)
    assert old.n == det.n and old.callers == det.callers and old.scale == 1.0
    assert old.pv and old.elig  # its refresh is computed on load
    drifted = [_ev(rng, "k1", conf=rng.betavariate(2, 2)) for _ in range(300)]
    a, b = _feed(det, drifted), _feed(old, drifted)
    assert max(s.score for s in a) > 99.9 and max(s.score for s in b) > 99.9
    assert TelemetryDriftDetector.from_bytes(old.to_bytes(), det.params).to_bytes() == old.to_bytes()


def test_scores_follow_the_refresh_schedule_and_stay_close_to_per_event():
    """Window statistics are recomputed every refresh_every events (the state carries the
    last result); with refresh_every=1 they are recomputed for every event. Both flag the
    same drift."""
    rng = random.Random(7)
    normal = [_ev(rng, f"tenant{i % 6}") for i in range(1200)]
    shifted = [_ev(rng, "tenant-x", amount=rng.lognormvariate(8, 0.3)) if i % 3 == 0 else _ev(rng, f"tenant{i % 6}")
               for i in range(400)]  # fmt: skip
    every = TelemetryDriftDetector(TelemetryDriftParams(refresh_every=1))
    lazy = TelemetryDriftDetector()
    assert lazy.params.refresh_every > 1
    out = {}
    for name, det in (("every", every), ("lazy", lazy)):
        _feed(det, normal)
        pv_before = list(det.pv)
        scores = _feed(det, shifted)
        out[name] = [s.score > 99.9 for s, x in zip(scores, shifted) if x["ueba.telemetry.caller_api_key"] == "tenant-x"]
        assert det.pv != pv_before
    # the refresh happens in learn_one, never in score_one
    pv = list(lazy.pv)
    for x in shifted[:40]:
        lazy.score_one(x, 0.0)
    assert lazy.pv == pv
    flagged_every, flagged_lazy = np.mean(out["every"]), np.mean(out["lazy"])
    assert flagged_every > 0.6 and flagged_lazy > 0.6
    assert abs(flagged_every - flagged_lazy) < 0.1


def test_explanations_reuse_numbers_within_a_refresh_block():
    rng = random.Random(8)
    det = TelemetryDriftDetector()
    _feed(det, [_ev(rng, f"tenant{i % 6}") for i in range(1500)])
    _feed(det, [_ev(rng, "tenant-x", amount=rng.lognormvariate(8, 0.3)) for _ in range(60)])
    x = _ev(rng, "tenant-x", amount=3000.0)
    a, b = det.score_one(x, 0.0), det.score_one(x, 0.0)
    assert a.score > 99.9 and a.explanation.to_dict() == b.explanation.to_dict()
    assert a.explanation.observed is not b.explanation.observed  # fresh objects every time
    assert a.explanation.observed["callers"][0]["caller"] == "tenant-x"
