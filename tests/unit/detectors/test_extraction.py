"""What is specific to ``api_extraction``; the shared contract is in test_contract.py."""

from __future__ import annotations

import collections
import random
import sys
import pathlib

import numpy as np
import pytest
import scipy.stats as st
from sklearn.metrics import roc_auc_score

from detectors.base import DETECTORS
from detectors.extraction import ExtractionDetector, ExtractionParams, shapiro_wilk

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import labelled_ai  # noqa: E402


def _run(det, xs, ts, mutate=None):
    scores, feats = [], []
    for i, (x, t) in enumerate(zip(xs, ts)):
        if mutate is not None:
            x = mutate(i, x)
        s = det.score_one(x, t)
        scores.append(s.score)
        feats.append(s.explanation.feature if s.explanation is not None else None)
        det.learn_one(x, t)
    return scores, feats


@pytest.mark.parametrize("n", [12, 20, 40, 100])
@pytest.mark.parametrize("dist", ["normal", "exponential", "uniform"])
def test_shapiro_wilk_matches_scipy(n, dist):
    rng = np.random.default_rng(n)
    x = getattr(rng, dist)(size=n)
    w, p = shapiro_wilk(x)
    ref = st.shapiro(x)
    assert w == pytest.approx(ref.statistic, abs=1e-6)
    assert p == pytest.approx(ref.pvalue, rel=1e-4, abs=1e-10)


def test_shapiro_wilk_constant_sample_is_no_evidence():
    assert shapiro_wilk(np.ones(30)) == (1.0, 1.0)
    with pytest.raises(ValueError):
        shapiro_wilk(np.arange(5.0))


def test_registered_with_atlas_techniques():
    assert DETECTORS["api_extraction"] is ExtractionDetector
    assert {"AML.T0024", "AML.T0040"} <= set(ExtractionDetector.techniques)


def test_warm_up_scores_zero():
    det = ExtractionDetector()
    xs, ts, _ = labelled_ai.api_extraction(0)
    for x, t in zip(xs[: det.params.warmup], ts):
        assert det.score_one(x, t).score == 0.0
        det.learn_one(x, t)


def test_rate_only_burst_without_fingerprints():
    xs, ts, ys = labelled_ai.api_extraction(3, fingerprints=False)
    scores, feats = _run(ExtractionDetector(), xs, ts)
    assert roc_auc_score(ys, scores) > 0.97
    attack = [f for f, y, s in zip(feats, ys, scores) if y and s > 99]
    assert len(attack) > 0.8 * sum(ys)
    assert set(attack) <= {"requests", "response_bytes"}


@pytest.mark.parametrize("sweep", ["jbda", "grid"])
def test_slow_sweep_is_caught_by_input_geometry(sweep):
    """At the key's normal rate the volume signals are silent: PRADA / step size must fire."""
    xs, ts, ys = labelled_ai.api_extraction(1, attack_rate=1 / 6.0, sweep=sweep)
    scores, feats = _run(ExtractionDetector(), xs, ts)
    assert roc_auc_score(ys, scores) > 0.95
    fired = collections.Counter(f for f, y, s in zip(feats, ys, scores) if y and s > 99)
    assert sum(fired.values()) > 0.8 * sum(ys)
    assert set(fired) <= {"prada", "step_size", "sweep_regularity", "input_novelty"}
    assert "prada" in fired


def test_uniform_coverage_sweep_fires_input_novelty():
    xs, ts, ys = labelled_ai.api_extraction(0, attack_rate=1 / 6.0)
    rng = random.Random(5)

    def sweep(i, x):
        if ys[i]:
            x = dict(x, **{"ueba.input.fingerprint": [rng.uniform(-12, 12) for _ in range(32)]})
        return x

    scores, feats = _run(ExtractionDetector(), xs, ts, sweep)
    novel = sum(1 for f, y, s in zip(feats, ys, scores) if y and s > 99 and f == "input_novelty")
    assert novel > 0.5 * sum(ys)
    benign_novel = sum(1 for f, y, s in zip(feats, ys, scores) if not y and s > 99 and f == "input_novelty")
    assert benign_novel < 0.01 * (len(ys) - sum(ys))


def test_retries_of_the_same_query_are_not_a_sweep():
    det = ExtractionDetector()
    rng = random.Random(0)
    fps = [[rng.gauss(0, 1) for _ in range(16)] for _ in range(40)]
    scores = []
    for i in range(3000):
        # Every query is sent 3 times (client retries): zero distances must be ignored.
        x = {"ueba.api_key.id": "k", "ueba.input.fingerprint": fps[(i // 3) % 40] if i % 97 else
             [rng.gauss(0, 1) for _ in range(16)]}  # fmt: skip
        t = 6.0 * i
        scores.append(det.score_one(x, t).score)
        det.learn_one(x, t)
    assert np.mean(np.array(scores[500:]) > 99) < 0.02


def test_fingerprint_length_switch_is_sticky_then_relearnt():
    p = ExtractionParams()
    det = ExtractionDetector(p)
    rng = random.Random(1)
    for i in range(200):
        det.learn_one({"ueba.input.fingerprint": [rng.gauss(0, 1) for _ in range(16)]}, 6.0 * i)
    assert det.fp_dim == 16
    # Alternating lengths never wipe the state.
    for i in range(200, 400):
        n = 16 if i % 2 else 24
        det.learn_one({"ueba.input.fingerprint": [rng.gauss(0, 1) for _ in range(n)]}, 6.0 * i)
    assert det.fp_dim == 16
    # A real switch (a new model) is learnt after fp_warmup consecutive calls.
    for i in range(400, 400 + p.fp_warmup):
        det.learn_one({"ueba.input.fingerprint": [rng.gauss(0, 1) for _ in range(24)]}, 6.0 * i)
    assert det.fp_dim == 24


def test_attack_does_not_become_the_baseline():
    """Protected baselines: the benign traffic after a sweep is not flagged for long."""
    xs, ts, ys = labelled_ai.api_extraction(2, attack_rate=1 / 6.0)
    scores, _ = _run(ExtractionDetector(), xs, ts)
    last_attack = max(i for i, y in enumerate(ys) if y)
    after = scores[last_attack + 60 :]
    assert len(after) > 200 and np.mean(np.array(after) > 99) < 0.05


def test_round_trip_mid_stream_with_fingerprints():
    xs, ts, _ = labelled_ai.api_extraction(0)
    det = ExtractionDetector()
    _run(det, xs[:2600], ts[:2600])
    clone = ExtractionDetector.from_bytes(det.to_bytes(), det.params)
    assert clone.to_bytes() == det.to_bytes()
    for x, t in zip(xs[2600:2700], ts[2600:2700]):
        a, b = det.score_one(x, t), clone.score_one(x, t)
        assert (a.score, a.raw) == (b.score, b.raw)
        det.learn_one(x, t)
        clone.learn_one(x, t)
    assert len(det.to_bytes()) <= 2048


def test_version_1_states_still_load():
    """States written before the shape statistics were kept (version 1) load: the
    statistics are computed from the stored ring, and the key scores as before."""
    import msgspec

    xs, ts, _ = labelled_ai.api_extraction(0)
    det = ExtractionDetector()
    _run(det, xs[:2600], ts[:2600])
    fields = msgspec.msgpack.decode(det.to_bytes())
    fields[0] = 1
    old = ExtractionDetector.from_bytes(msgspec.msgpack.encode(fields[:-2]), det.params)
    assert old.sh is not None and old.sh_new == 0
    assert old.sh[1:] == det.sh[1:] or det.sh_new > 0  # the same ring, unless it moved since
    a, _ = _run(det, xs[2600:2800], ts[2600:2800])
    b, _ = _run(old, xs[2600:2800], ts[2600:2800])
    assert max(abs(u - v) for u, v in zip(a, b)) < 1.0


def test_shape_statistics_are_recomputed_every_shape_every_distances():
    p = ExtractionParams()
    assert p.shape_every > 1
    xs, ts, _ = labelled_ai.api_extraction(0)
    det = ExtractionDetector(p)
    _run(det, xs[:1500], ts[:1500])
    seen = 0
    last = det.sh
    for x, t in zip(xs[1500:1700], ts[1500:1700]):
        before = det.sh_new
        det.learn_one(x, t)
        if det.sh is not last:
            assert before == p.shape_every - 1 and det.sh_new == 0
            seen += 1
            last = det.sh
    assert seen >= 200 // (2 * p.shape_every)
    # what the score adds for them is derived (and the same after a round trip)
    clone = ExtractionDetector.from_bytes(det.to_bytes(), p)
    assert clone._shp == det._shp and clone.sh == det.sh


def test_projection_is_an_ordered_sum_close_to_blas():
    from detectors.extraction import _project, _projection

    rng = np.random.default_rng(3)
    for dim in (1, 16, 64, 256):
        cols = _projection(dim, 8, 20190617)
        r = np.array(cols).T  # (dim, 8), the seeded Gaussian matrix
        assert r.shape == (dim, 8) and abs(float(r.std()) * np.sqrt(8) - 1.0) < (0.5 if dim == 1 else 0.2)
        for _ in range(50):
            fp = rng.standard_normal(dim).tolist()
            got = _project(fp, cols)
            want = np.asarray(fp) @ r
            assert got == pytest.approx(want.tolist(), rel=1e-12, abs=1e-12)
            # input order, one coordinate at a time: the same bits on every machine
            assert got[3] == sum(f * c for f, c in zip(fp, cols[3]))


def test_fingerprints_are_validated_and_read_as_floats():
    from detectors.extraction import _fingerprint

    ok = [0.5, -1.25, 3.0]
    assert _fingerprint({"ueba.input.fingerprint": ok}, 256) == ok
    assert _fingerprint({"ueba.input.fingerprint": (1, 2, True)}, 256) == [1.0, 2.0, 1.0]
    got = _fingerprint({"ueba.input.fingerprint": [np.float32(0.5), 2]}, 256)
    assert got == [0.5, 2.0] and all(type(v) is float for v in got)
    for bad in ([1.0, float("nan")], [1.0, float("inf")], [1.0, "x"], [[1.0, 2.0]], [10**400], [], "1,2", None):
        assert _fingerprint({"ueba.input.fingerprint": bad}, 256) is None, bad
    assert _fingerprint({"ueba.input.fingerprint": [0.0] * 257}, 256) is None
    # an integer fingerprint scores exactly as the same values given as floats
    a, b = ExtractionDetector(), ExtractionDetector()
    rnd = random.Random(5)
    for i in range(300):
        fp = [rnd.randint(-5, 5) for _ in range(16)]
        t = 10.0 * i
        sa = a.score_one({"ueba.input.fingerprint": fp}, t)
        sb = b.score_one({"ueba.input.fingerprint": [float(v) for v in fp]}, t)
        assert sa.score == sb.score
        a.learn_one({"ueba.input.fingerprint": fp}, t)
        b.learn_one({"ueba.input.fingerprint": [float(v) for v in fp]}, t)
    assert a.to_bytes() == b.to_bytes() and a.fp_n > 50
