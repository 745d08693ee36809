"""Which build of the detectors runs (detectors._native): a stale compiled build
is never used, each mode does what it says, and the compiled and Python builds
score alike and write the same state bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from detectors import _native

ROOT = Path(__file__).resolve().parents[3]

_PROBE = """
import json, detectors, detectors.stats as s
print(json.dumps({"build": detectors.BUILD, "stats": s.__file__}))
"""


def _probe(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "always", "-c", _PROBE], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def _fake_build(root: Path, digest: str) -> None:
    (root / "detectors").mkdir(parents=True)
    (root / "detectors" / _native.STAMP).write_text(digest + "\n")


def test_pure_mode_runs_the_sources():
    got = _probe({"UEBA_DETECTORS": "pure"})
    assert got.returncode == 0, got.stderr
    out = json.loads(got.stdout)
    assert out == {"build": "pure", "stats": str(ROOT / "detectors" / "stats.py")}


def test_a_stale_build_is_ignored_with_a_warning(tmp_path):
    _fake_build(tmp_path, "0" * 64)  # built from other sources
    got = _probe({"UEBA_DETECTORS": "auto", "UEBA_DETECTORS_BUILD": str(tmp_path)})
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["build"] == "pure"
    assert "built from other sources" in got.stderr
    got = _probe({"UEBA_DETECTORS": "compiled", "UEBA_DETECTORS_BUILD": str(tmp_path)})
    assert got.returncode != 0 and "the compiled build is of other sources" in got.stderr


def test_compiled_mode_without_a_build_says_how_to_build(tmp_path):
    got = _probe({"UEBA_DETECTORS": "compiled", "UEBA_DETECTORS_BUILD": str(tmp_path / "none")})
    assert got.returncode != 0 and "make compile" in got.stderr
    got = _probe({"UEBA_DETECTORS": "fast"})
    assert got.returncode != 0 and "must be auto, pure or compiled" in got.stderr


def test_the_digest_covers_every_compiled_source():
    assert set(_native.MODULES).isdisjoint(_native.UNCOMPILED)
    on_disk = {p.stem for p in (ROOT / "detectors").glob("*.py")} - {"__init__"}
    assert on_disk == set(_native.MODULES) | set(_native.UNCOMPILED)  # a new module must be placed in one list
    assert len(_native.source_digest()) == 64


_REPLAY = """
import json, sys, detectors
sys.path.insert(0, "tests/unit/detectors")
from labelled_ai import STREAMS as AI
from labelled_core import STREAMS as CORE
from detectors.base import DETECTORS
from detectors.defaults import load_detectors
load_detectors()
from detectors.peers import PeerBaselines
from detectors.suite import build_suite
from detectors.bench import access_events, api_events, telemetry_events
out = {"build": detectors.BUILD}
for name, stream in {**CORE, **AI}.items():   # every detector on its labelled stream: real detections
    det, scores = DETECTORS[name](), []
    xs, ts, _ = stream(0)
    for x, t in zip(xs, ts):
        s = det.score_one(x, t)
        scores.append(round(s.score, 9))
        if s.score < 99.0 or getattr(det, "self_protecting", False):
            det.learn_one(x, t)
    out[name] = {"scores": scores, "state": det.to_bytes().hex()}
for kind, evs in (("access", access_events(3000, seed=4)), ("api", api_events(3000, seed=4)),
                  ("telemetry", telemetry_events(3000, seed=4))):   # the suites, calibration included
    suite, peers, states = build_suite(kind), PeerBaselines(), {}
    for ent, ev, ts in evs:
        st = states.get(ent) or states.setdefault(ent, suite.new_state())
        suite.process(st, ev, ts, peers)
    out["suite:" + kind] = {"states": {e: suite.dumps(s).hex() for e, s in sorted(states.items())}}
print(json.dumps(out))
"""


def test_compiled_and_python_builds_score_alike_and_write_the_same_state():
    """Runs the same streams in both builds when a current compiled build exists
    (``make compile``); otherwise both runs are the Python sources."""
    runs = {}
    for mode in ("pure", "auto"):
        got = subprocess.run([sys.executable, "-c", _REPLAY], cwd=ROOT, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "UEBA_DETECTORS": mode})
        assert got.returncode == 0, got.stderr
        runs[mode] = json.loads(got.stdout)
    pure, auto = runs.pop("pure"), runs.pop("auto")
    assert pure.pop("build") == "pure" and auto.pop("build") in ("pure", "compiled")
    assert pure.keys() == auto.keys() and len(pure) == 12
    for name in pure:
        assert pure[name] == auto[name], name
    assert sum(sc > 99.0 for name in pure if "scores" in pure[name] for sc in pure[name]["scores"]) > 100
