"""A ``kill -9`` of a worker mid-stream loses no alert and double-counts no baseline."""

from __future__ import annotations

import signal
import time

import pytest

from streams.feed import produce_files
from streams.kafka import ensure_topics
from streams.settings import Settings

from .conftest import consume, with_rules, worker
from .test_runtime import _comparable, replay_alerts, stream_alerts, write_events


# The RocksDB store diverged from replay in 1 of 3 runs here (a lost count update and
# a new suppression representative after the kill); that case is an open finding of
# the runtime issue, not asserted here until it is fixed.
@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_kill_9_mid_stream_loses_no_alert_and_double_counts_no_baseline(settings: Settings, tmp_path, store):
    s = with_rules(settings)
    s = s.model_copy(update={"worker": s.worker.model_copy(update={"store": store})})
    ensure_topics(s)
    src = tmp_path / "events.jsonl"
    write_events(src, n_per_user=80)
    expected, n_msgs = replay_alerts(s, src)
    produce_files(s, [src])
    with worker(s, tmp_path, name="first") as w:
        # let it get part-way, then kill it without any chance to commit or flush
        consume(s, s.topics.alerts, max(1, n_msgs // 3), timeout=90)
        w.stop(sig=signal.SIGKILL)
    time.sleep(1)
    with worker(s, tmp_path, name="second") as w2:
        msgs = consume(s, s.topics.alerts, n_msgs, timeout=150, drain=8)
        assert w2.alive()
    got = stream_alerts(msgs)
    assert set(got) == set(expected), f"missing {len(set(expected) - set(got))}, extra {len(set(got) - set(expected))}"
    assert _comparable(got) == _comparable(expected)
