"""Replay: the stream's pipeline in-process over files, deterministic, nothing dropped silently."""

import gzip

import orjson
import pandas as pd

from streams.firstseen import FirstSeenScorer
from streams.replay import Replayer
from tests.ecs_check import validate


def line(i, user, resource, dataset="ueba.access"):
    return orjson.dumps(
        {"@timestamp": f"2026-11-28T08:{i // 60 % 60:02d}:{i % 60:02d}Z", "event": {"dataset": dataset, "action": "read"}, "user": {"name": user},
         "ueba": {"resource": {"id": resource}}}
    )


def write_input(path):
    lines = [line(i, "alice", f"r{i % 3}") for i in range(25)] + [line(30, "alice", "s3://crown-jewels"), b"garbage", line(31, "bob", "x", dataset="other")]
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_replay_is_deterministic_and_writes_ecs_alerts_and_dead_letters(tmp_path):
    src = tmp_path / "events.jsonl"
    write_input(src)
    outs = []
    for n in range(2):
        rp = Replayer(FirstSeenScorer)
        stats = rp.run([src])
        out = tmp_path / f"alerts{n}.jsonl"
        rp.write(out, risk_out=tmp_path / f"risk{n}.jsonl")
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] and outs[0]
    docs = [orjson.loads(x) for x in outs[0].splitlines()]
    assert len(docs) == 1 and "crown-jewels" in docs[0]["message"]
    assert validate(docs[0]) == []
    assert stats.events["access"] == 26
    assert stats.deadletters == {"unknown_stream": 2}
    dead = [orjson.loads(x) for x in (tmp_path / "alerts1.jsonl.deadletter.jsonl").read_bytes().splitlines()]
    assert [d["reason"] for d in dead] == ["unknown_stream", "unknown_stream"]
    assert dead[0]["source"].endswith(":27")
    risk = [orjson.loads(x) for x in (tmp_path / "risk1.jsonl").read_bytes().splitlines()]
    assert risk and risk[0]["ueba"]["risk"]["entity"]["id"] == "alice"


def test_replay_reads_gzip_parquet_and_csv_the_same(tmp_path):
    src = tmp_path / "e.jsonl"
    write_input(src)
    gz = tmp_path / "e.jsonl.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    rows = [orjson.loads(x) for x in src.read_bytes().splitlines() if x.startswith(b"{")]
    flat = pd.json_normalize(rows)
    flat.to_parquet(tmp_path / "e.parquet")
    flat.to_csv(tmp_path / "e.csv", index=False)
    ids = []
    for p in ("e.jsonl", "e.jsonl.gz", "e.parquet", "e.csv"):
        rp = Replayer(FirstSeenScorer)
        rp.run([tmp_path / p])
        ids.append(sorted(rp.alerts))
    assert ids[0] and ids[0] == ids[1] == ids[2] == ids[3]
