"""Suite states written by earlier versions still load, and load to the same state.

``golden/suite_states_v1.json`` holds, per suite kind and entity, the state
``DetectorSuite.dumps`` wrote before the compact formats (suite format ``S1``,
calibration record version 1, ``api_usage`` version 1, ``api_extraction``
version 2), after the deterministic stream below. It was written by that code
(``python tests/unit/detectors/test_state_formats.py`` run against it); the
detectors' semantics did not change, so replaying the stream now must give
states that serialise exactly like the old ones once loaded.

One arithmetic change since: the extraction detector projects fingerprints
with an ordered sum instead of a BLAS call (whose summation order depends on
the CPU's kernel), so its running mean and spread of the projected
coordinates (``mu``, ``sd``, float64) may differ in the last bit. Those two
are compared to 1e-12 relative; every other byte of every state must match.
"""

from __future__ import annotations

import json
import random
from array import array
import struct
import sys
from pathlib import Path

import pytest

import msgspec

from detectors._states import _State as ExtractionState
from detectors.peers import PeerBaselines
from detectors.suite import build_suite

GOLDEN = Path(__file__).parent / "golden" / "suite_states_v1.json"
T0 = 1_704_067_200.0  # a Monday, 00:00 UTC
KINDS = ("access", "api", "telemetry")


def _stream(kind: str) -> list[tuple[str, dict, float]]:
    """Three entities over three days, a few events an hour (so calibration keeps own days)."""
    rng = random.Random(11)
    out = []
    t = T0
    while t < T0 + 3 * 86400:
        t += rng.expovariate(1 / 600.0)
        k = rng.randrange(3)
        if kind == "access":
            ent = f"user{k}"
            ev = {"user.name": ent, "ueba.identity.type": "human", "ueba.identity.peer_group": "team",
                  "source.ip": f"10.0.0.{k}", "user_agent.original": "agent", "event.action": "download",
                  "event.outcome": "success", "ueba.resource.id": f"s3://d/{rng.randrange(6)}",
                  "ueba.transfer.bytes": int(rng.lognormvariate(14, 1))}
        elif kind == "api":
            ent = f"key{k}"
            ev = {"ueba.api_key.id": ent, "ueba.identity.type": "api_key", "ueba.identity.peer_group": "tenant",
                  "source.ip": f"10.1.0.{k}", "user_agent.original": "sdk", "http.response.status_code": 200,
                  "http.response.body.bytes": rng.randint(200, 5000), "gen_ai.usage.input_tokens": rng.randint(10, 900),
                  "gen_ai.usage.output_tokens": rng.randint(5, 300),
                  "ueba.input.fingerprint": [round(rng.gauss(k, 1.0), 3) for _ in range(8)]}
        else:
            ent = f"model{k}"
            ev = {"ueba.model.id": ent, "ueba.identity.type": "model", "ueba.identity.peer_group": "clf",
                  "ueba.telemetry.prediction": rng.choice(["a", "b"]),
                  "ueba.telemetry.confidence": round(rng.betavariate(8, 2), 4),
                  "event.duration": rng.randint(10**7, 10**8), "ueba.telemetry.error": rng.random() < 0.01,
                  "ueba.telemetry.caller_api_key": f"key{rng.randrange(3)}"}
        out.append((ent, ev, t))
    return out


def _replay(kind: str):
    suite = build_suite(kind)
    peers = PeerBaselines()
    states: dict = {}
    for ent, ev, ts in _stream(kind):
        st = states.get(ent)
        if st is None:
            st = states[ent] = suite.new_state()
        suite.process(st, ev, ts, peers)
    return suite, states


def _records(blob: bytes) -> dict[int, bytes]:
    fmt = struct.Struct("<HI" if blob[:2] == b"S1" else "<HH")
    out, o = {}, 2
    while o < len(blob):
        tag, ln = fmt.unpack_from(blob, o)
        o += fmt.size
        out[tag] = blob[o:o + ln]
        o += ln
    return out


def _assert_same_state(suite, a: bytes, b: bytes, what: str) -> None:
    """``a`` and ``b`` (suite blobs) hold the same state: byte for byte, but for the
    extraction detector's projection mean and spread (see the module docstring)."""
    if a == b:
        return
    ra, rb = _records(a), _records(b)
    assert a[:2] == b[:2] and set(ra) == set(rb), what
    ext = suite._ids[suite.names.index("api_extraction")] if "api_extraction" in suite.names else None
    for tag in ra:
        if ra[tag] == rb[tag]:
            continue
        assert tag == ext, (what, tag)
        sa = msgspec.msgpack.decode(ra[tag], type=ExtractionState)
        sb = msgspec.msgpack.decode(rb[tag], type=ExtractionState)
        for name in sa.__struct_fields__:
            if name not in ("mu", "sd"):
                assert getattr(sa, name) == getattr(sb, name), (what, name)
        for name in ("mu", "sd"):
            va, vb = array("d", getattr(sa, name)), array("d", getattr(sb, name))
            assert len(va) == len(vb) and all(x == pytest.approx(y, rel=1e-12, abs=1e-300) for x, y in zip(va, vb)), (what, name)


@pytest.fixture(scope="module")
def golden() -> dict[str, dict[str, bytes]]:
    data = json.loads(GOLDEN.read_text())
    return {kind: {ent: bytes.fromhex(h) for ent, h in states.items()} for kind, states in data.items()}


def test_golden_states_are_the_old_formats(golden):
    # what this module tests only holds while the golden file is the old code's output
    usage_tag = build_suite("api")._ids[0]
    for kind in KINDS:
        for blob in golden[kind].values():
            assert blob[:2] == b"S1"
            recs = _records(blob)
            assert 0xFFFF in recs and 0xFFFE not in recs  # version-1 calibration record
            if kind == "api":
                assert recs[usage_tag][0] & 0x80 == 0  # api_usage version 1


@pytest.mark.parametrize("kind", KINDS)
def test_old_states_load_to_the_states_replayed_now(kind, golden):
    suite, states = _replay(kind)
    assert set(golden[kind]) == set(states)
    for ent, old in golden[kind].items():
        loaded = suite.loads(old)
        now = suite.dumps(states[ent])
        assert now[:2] == b"S2"
        _assert_same_state(suite, suite.dumps(loaded), now, ent)
        assert loaded.cal is not None and any(len(o.top) for o in loaded.cal.own)  # own days survived
        assert len(now) < len(old)


@pytest.mark.parametrize("kind", KINDS)
def test_a_loaded_old_state_scores_on_like_the_live_one(kind, golden):
    suite, states = _replay(kind)
    later = [(e, dict(ev), ts + 3 * 86400) for e, ev, ts in _stream(kind)[:300]]
    live_peers, old_peers = PeerBaselines(), PeerBaselines()
    loaded = {ent: suite.loads(blob) for ent, blob in golden[kind].items()}
    for ent, ev, ts in later:
        a = suite.process(states[ent], ev, ts, live_peers)
        b = suite.process(loaded[ent], ev, ts, old_peers)
        assert [(f.detector, f.score) for f in a] == [(f.detector, f.score) for f in b]
    for ent in states:
        _assert_same_state(suite, suite.dumps(loaded[ent]), suite.dumps(states[ent]), ent)


def test_the_state_comparison_sees_a_changed_field():
    # the tolerance above covers the two projection statistics and nothing else
    suite, states = _replay("api")
    ent = sorted(states)[0]
    blob = suite.dumps(states[ent])
    det = states[ent][suite.names.index("api_extraction")]
    mu0 = det.mu[0]
    det.mu[0] = mu0 * (1.0 + 1e-15)
    assert det.mu[0] != mu0
    _assert_same_state(suite, blob, suite.dumps(states[ent]), "last bit of mu")
    det.mu[0] = mu0 * (1.0 + 1e-9)
    with pytest.raises(AssertionError):
        _assert_same_state(suite, blob, suite.dumps(states[ent]), "mu moved")
    det.mu[0] = mu0
    _assert_same_state(suite, blob, suite.dumps(states[ent]), "restored")
    det.nov_n += 1.0
    with pytest.raises(AssertionError):
        _assert_same_state(suite, blob, suite.dumps(states[ent]), "another field")


def test_large_records_fall_back_to_the_s1_format():
    suite = build_suite("api")
    st = suite.new_state()
    big = b"x" * 70_000

    class Big:
        def to_bytes(self) -> bytes:
            return big

    st[0] = Big()
    blob = suite.dumps(st)
    assert blob[:2] == b"S1" and _records(blob)[suite._ids[0]] == big


if __name__ == "__main__":  # regenerate the golden file (only with the code that wrote the old formats)
    out = {}
    for kind in KINDS:
        suite, states = _replay(kind)
        out[kind] = {ent: suite.dumps(st).hex() for ent, st in sorted(states.items())}
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(out, indent=1) + "\n")
    sys.exit(0)
