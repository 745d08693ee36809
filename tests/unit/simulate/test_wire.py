"""Wire mode (``write_jsonl``): the lines are byte for byte what orjson makes of
the documents ``simulate`` yields, whatever the run's shape; and the helpers
it is built from (timestamps, ids, numbers, templates, chunked writes)."""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import orjson
import pytest

from streams.simulate import SimulationConfig, labels, simulate_labelled, write_jsonl
from streams.simulate import engine
from streams.simulate import wire as W
from streams.simulate.bench import main as bench_main

# ---------------------------------------------------------------- whole runs


def _lines_and_labels(cfg: SimulationConfig, tmp_path, name: str = "ev") -> tuple[list[bytes], list[dict]]:
    out, lab = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.labels.jsonl"
    stats = write_jsonl(cfg, out, lab)
    lines = out.read_bytes().splitlines(keepends=True)
    assert len(lines) == stats["events"]
    return lines, [orjson.loads(x) for x in lab.read_bytes().splitlines()]


@pytest.mark.parametrize("cfg", [
    # not hour-aligned, a partial last slice, more models and keys, stronger attacks
    SimulationConfig(seed=3, start="2026-02-03T05:17:09.250Z", duration="450m", humans=24, service_accounts=9,
                     tenants=9, models=7, warmup=0.1, attack_intensity=2.0),
    # baseline only, across a day boundary (on-call nights, changes outside the window)
    SimulationConfig(seed=11, start="2026-03-06T20:00:00Z", duration="10h", humans=30, service_accounts=8,
                     tenants=6, models=4, scenarios=()),
], ids=["odd-start-all-scenarios", "baseline-overnight"])
def test_file_is_orjson_of_the_documents(cfg, tmp_path):
    lines, labs = _lines_and_labels(cfg, tmp_path)
    tagged = defaultdict(list)
    n = 0
    for line, (kind, doc, tag) in zip(lines, simulate_labelled(cfg)):
        assert line == orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE), (kind, doc)
        if tag is not None:
            tagged[tag].append(doc["event"]["id"])
        n += 1
    assert n == len(lines)
    assert [r["scenario_id"] for r in labs] == [r["scenario_id"] for r in labels(cfg)]
    for r in labs:
        assert r["event_ids"] == tagged[r["scenario_id"]] and r["event_count"] == len(r["event_ids"])
    assert set(tagged) == {r["scenario_id"] for r in labs}


def test_chunk_size_does_not_change_the_bytes(tmp_path, monkeypatch):
    cfg = SimulationConfig.preset("tiny", duration="6h", warmup=0.1, seed=5)
    ref = _lines_and_labels(cfg, tmp_path, "ref")
    for chunk in (1, 7, 1_000_000):
        monkeypatch.setattr(engine, "CHUNK", chunk)
        assert _lines_and_labels(cfg, tmp_path, f"c{chunk}") == ref


def test_a_short_write_is_finished(tmp_path, monkeypatch):
    lines = [b"%d-" % i * (i % 7) + b"\n" for i in range(3000)]
    real = os.writev

    def short(fd, bufs):  # the kernel may stop part-way; write a third
        data = b"".join(bufs)
        return real(fd, [data[: len(data) // 3]])

    monkeypatch.setattr(os, "writev", short)
    p = tmp_path / "short.bin"
    with open(p, "wb", buffering=0) as fh:
        engine.write_lines(fh, lines)
    assert p.read_bytes() == b"".join(lines)
    monkeypatch.delattr(os, "writev")  # no writev: one joined write
    with open(p, "wb", buffering=0) as fh:
        engine.write_lines(fh, lines)
    assert p.read_bytes() == b"".join(lines)


def test_bench_reports_events_per_second(capsys):
    assert bench_main(["--preset", "tiny", "--duration", "6h", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "events/s" in out and "one core" in out and "median" in out and "target >=" in out
    assert "machine speed reference" in out


# ---------------------------------------------------------------- helpers


def test_stamps_are_numpy_iso_strings():
    rng = np.random.default_rng(1)
    cases = [
        1767571200000 + rng.integers(0, 3_600_000, 5000),                # one hour
        1767571200000 - 1800_000 + rng.integers(0, 3_600_000, 5000),     # across midnight
        rng.integers(-10**12, 4 * 10**12, 2000),                         # 1938..2096: the long-span fallback
        np.array([0, 999, 1000, 59_999, 3_599_999, 86_399_999, -1], dtype=np.int64),
        np.array([253402300799999, 253402300800000], dtype=np.int64),   # 9999-12-31T23:59:59.999Z, year 10000
        np.empty(0, dtype=np.int64),
    ]
    for ts in cases:
        ref = np.datetime_as_string(ts.astype("datetime64[ms]"), unit="ms", timezone="UTC").astype("S")
        got = W.stamp_array(ts)
        assert got.tolist() == ref.tolist()


def test_hex_ids_are_ten_hex_digits_after_the_prefix():
    nums = np.array([0, 1, 15, 16, 255, 65535, 65536, 2**32, 2**40 - 1, 123456789], dtype=np.int64)
    assert W.hex_ids(b"8453d7", nums).tolist() == [f"8453d7{n:010x}".encode() for n in nums.tolist()]
    assert W.hex_ids(b"", nums[:3]).tolist() == [b"0000000000", b"0000000001", b"000000000f"]


def test_numbers_are_orjson_of_the_python_values():
    rng = np.random.default_rng(2)
    floats = np.concatenate([(rng.standard_normal(500) * 3).round(3), [0.0, -0.0, 1.0, -2.5, 1e-5, 123456.789]])
    ints = rng.integers(-(10**12), 10**12, 300)
    for values in (floats, ints):
        assert W.json_values(values) == [orjson.dumps(v) for v in values.tolist()]
    rows = floats[:496].reshape(31, 16)
    assert W.json_rows(rows) == [orjson.dumps(r)[1:-1] for r in rows.tolist()]
    assert W.json_values(np.empty(0)) == [] and W.json_rows(np.empty((0, 16))) == []
    assert W.json_rows(np.empty((3, 0))) == [b""] * 3


def test_status_codes_and_mixed_radix_codes():
    assert W.status_codes(np.array(W.STATUSES)).tolist() == list(range(len(W.STATUSES)))
    with pytest.raises(ValueError):
        W.status_codes(np.array([200, 302]))
    layout = (7, 3, 5, 2)
    grid = np.array(np.meshgrid(*[np.arange(r) for r in layout], indexing="ij")).reshape(len(layout), -1)
    codes = W.combine(layout, *grid)
    assert sorted(codes.tolist()) == list(range(int(np.prod(layout))))
    assert [W.digits(c, layout) for c in codes.tolist()] == grid.T.tolist()


@pytest.mark.parametrize("dense", [True, False])
def test_templates_are_built_once_per_code(dense, monkeypatch):
    if not dense:
        monkeypatch.setattr(W._Space, "DENSE_MAX", 0)
    J = W.JsonCache()
    built = []

    def build(code: int) -> bytes:
        built.append(code)
        return b"t%d" % code

    owner = [object()]
    codes = np.array([5, 3, 5, 0, 3, 3], dtype=np.int64)
    assert J.templates(b"x", (owner,), (2, 4), codes, build) == [b"t5", b"t3", b"t5", b"t0", b"t3", b"t3"]
    assert J.templates(b"x", (owner,), (2, 4), np.array([3, 7]), build) == [b"t3", b"t7"]
    assert sorted(built) == [0, 3, 5, 7]
    assert J.templates(b"x", (owner,), (2, 4), np.empty(0, dtype=np.int64), build) == []
    # another layout or object is another cache
    assert J.templates(b"x", ([],), (2, 4), np.array([3]), lambda c: b"other") == [b"other"]


def test_json_cache_escapes_template_literals():
    J = W.JsonCache()
    doc = {"prompt": "100% sure"}
    assert J(doc) == b'{"prompt":"100% sure"}'
    assert (b'{"x":' + J.lit(doc) + b',"y":%s}') % (b"1",) == b'{"x":{"prompt":"100% sure"},"y":1}'


def test_parts_render_slices_take_and_rows():
    lead = W.Part([b"<%s|%s|%s|%s>\n", b"[%s %s %s %.0s]\n", b"(%s %s %s %s)\n"],
                  [[b"a0", b"a1", b"a2"], [b"b0", b"b1", b"b2"]])
    st, ids = [b"s0", b"s1", b"s2"], [b"i0", b"i1", b"i2"]
    full = lead.render(st, ids)
    assert full == [b"<s0|a0|i0|b0>\n", b"[s1 a1 i1 ]\n", b"(s2 a2 i2 b2)\n"]
    assert lead.render(st[1:], ids[1:], 1, 3) == full[1:]
    assert lead.take([2, 0]).render([st[2], st[0]], [ids[2], ids[0]]) == [full[2], full[0]]
    no_lead = W.Part([b"%s %s %s\n"], [[b"x"]], lead=0)
    assert no_lead.render([b"s"], [b"i"]) == [b"s i x\n"]
    doc = {"@timestamp": None, "event": {"kind": "event"}}
    items = W.Items(lead.rows() + no_lead.rows() + [doc])
    out = items.render(st + [b"s", b"2026-01-05T00:00:00.000Z"], ids + [b"i", b"abc"])
    assert out[:4] == full + [b"s i x\n"]
    assert orjson.loads(out[4]) == {"@timestamp": "2026-01-05T00:00:00.000Z", "event": {"kind": "event", "id": "abc"}}
    assert W.Docs([doc]).take([0]).render([b"t"], [b"j"]) == [b'{"@timestamp":"t","event":{"kind":"event","id":"j"}}\n']
