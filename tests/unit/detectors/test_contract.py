"""The contract every streaming detector in DETECTORS must meet (River-style checks).

Runs on every registered class, including ones added later by other modules:
a detector without a labelled stream in a ``labelled_*.py`` module fails.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
import pathlib
import random
import sys

import pytest
from sklearn.metrics import roc_auc_score

from detectors.base import DETECTORS, Score
from detectors.defaults import load_detectors

load_detectors()

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))


def _collect_streams() -> dict:
    streams: dict = {}
    for path in sorted(HERE.glob("labelled_*.py")):
        mod = importlib.import_module(path.stem)
        streams.update(getattr(mod, "STREAMS", {}))
    return streams


STREAMS = _collect_streams()
NAMES = sorted(DETECTORS)
MAX_STATE_BYTES = 2048


@functools.lru_cache(maxsize=None)
def stream(name: str, seed: int = 0):
    return STREAMS[name](seed)


def fresh(name: str):
    return DETECTORS[name]()


def run(det, xs, ts) -> list[float]:
    out = []
    for x, t in zip(xs, ts):
        out.append(det.score_one(x, t).score)
        det.learn_one(x, t)
    return out


def _stream_or_fail(name: str):
    if name not in STREAMS:
        pytest.fail(f"detector {name!r} has no labelled stream in tests/unit/detectors/labelled_*.py")
    return stream(name)


@pytest.fixture(params=NAMES)
def name(request) -> str:
    return request.param


def test_registry_is_not_empty():
    assert {"exfiltration", "unusual_access", "credential_abuse", "password_spraying",
            "api_key_client", "api_usage"} <= set(DETECTORS)


def test_has_labelled_stream(name):
    assert name in STREAMS, f"detector {name!r} has no labelled stream"
    xs, ts, ys = stream(name)
    assert len(xs) == len(ts) == len(ys) and 0 < sum(ys) < len(ys)


def test_constructs_with_frozen_default_params(name):
    det = fresh(name)
    assert det.name == name
    prm = det.params
    assert dataclasses.is_dataclass(prm) and prm.__dataclass_params__.frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(prm, dataclasses.fields(prm)[0].name, None)


def test_scores_are_calibrated_and_explained(name):
    xs, ts, _ = _stream_or_fail(name)
    det = fresh(name)
    for x, t in zip(xs, ts):
        s = det.score_one(x, t)
        assert isinstance(s, Score)
        assert 0.0 <= s.score <= 100.0 and not math.isnan(s.score)
        if s.score > 0:
            assert s.explanation is not None and s.explanation.reason.strip()
        det.learn_one(x, t)


def test_score_direction(name):
    xs, ts, ys = _stream_or_fail(name)
    scores = run(fresh(name), xs, ts)
    pos = [s for s, y in zip(scores, ys) if y]
    neg = [s for s, y in zip(scores, ys) if not y]
    assert sum(pos) / len(pos) > sum(neg) / len(neg) + 10


def test_roc_auc(name):
    xs, ts, ys = _stream_or_fail(name)
    scores = run(fresh(name), xs, ts)
    assert roc_auc_score(ys, scores) >= 0.95


def test_score_one_is_pure(name):
    xs, ts, _ = _stream_or_fail(name)
    det = fresh(name)
    for i, (x, t) in enumerate(zip(xs, ts)):
        if i % 7 == 0:
            before = det.to_bytes()
            det.score_one(x, t)
            det.score_one(x, t)
            assert det.to_bytes() == before, f"score_one mutated the state at event {i}"
        det.learn_one(x, t)


def test_round_trip_gives_identical_scores(name):
    xs, ts, _ = _stream_or_fail(name)
    half = len(xs) // 2
    det = fresh(name)
    run(det, xs[:half], ts[:half])
    cls = DETECTORS[name]
    clone = cls.from_bytes(det.to_bytes(), det.params)
    assert clone.to_bytes() == det.to_bytes()
    assert run(det, xs[half:], ts[half:]) == run(clone, xs[half:], ts[half:])


def test_deterministic(name):
    xs, ts, _ = _stream_or_fail(name)
    assert run(fresh(name), xs, ts) == run(fresh(name), xs, ts)


def test_missing_and_unknown_fields_never_raise(name):
    xs, ts, _ = _stream_or_fail(name)
    rng = random.Random(1)
    det = fresh(name)
    weird = [None, "", "nan", -1, 10**30, float("nan"), ["a"], {"k": 1}, True]
    for x, t in zip(xs[:400], ts[:400]):
        y = {k: v for k, v in x.items() if rng.random() < 0.5}
        y["unknown.field"] = object()
        y["also.unknown"] = rng.choice(weird)
        det.score_one(y, t)
        det.learn_one(y, t)
    det.score_one({}, ts[0])
    det.learn_one({}, ts[0])
    det.to_bytes()


def _distinct(v, rng: random.Random, i: int):
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        return f"{v}-{i}-{rng.getrandbits(48):x}"
    if isinstance(v, int):
        return rng.randint(0, 10**9)
    if isinstance(v, float):
        return v * rng.uniform(0.5, 2.0)
    if isinstance(v, list):
        return [_distinct(e, rng, i) for e in v]
    return v


def test_state_size_is_bounded(name):
    """An attacker who sends ever-new values must not grow the state."""
    xs, ts, _ = _stream_or_fail(name)
    rng = random.Random(2)
    det = fresh(name)
    n = 3000
    t0 = ts[0]
    for i in range(n):
        x = xs[i % len(xs)]
        y = {k: _distinct(v, rng, i) for k, v in x.items()}
        for k in ("source.geo.location.lat", "source.geo.location.lon"):
            if k in y:  # keep coordinates valid
                y[k] = rng.uniform(-80, 80)
        t = t0 + i * 37.0
        det.score_one(y, t)
        det.learn_one(y, t)
    size = len(det.to_bytes())
    assert size <= MAX_STATE_BYTES, f"{name}: {size} bytes after {n} distinct events"
