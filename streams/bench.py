"""Stream benchmark on the real broker: ``python -m streams.bench``.

Measures, in one run (this machine is shared and noisy, so compare ratios):

1. the ceiling: the raw confluent-kafka consume rate of the same input topics;
2. one worker process end to end (Kafka in, candidates/alerts out), events/s;
3. two worker processes sharing the partitions, events/s and the ratio to one;
4. p99 event-to-alert latency at half the one-worker rate: from each input
   record's arrival in Kafka (its record timestamp) until its alert is in the
   alerts topic (the worker's ``ueba_event_to_alert_seconds``).

Each worker run first takes up a warm-up set and settles (assignment, table
recovery, rebalances as other workers join); only the events produced after
that are timed.

Needs Kafka on ``UEBA_KAFKA__BOOTSTRAP_SERVERS`` (``ueba services up``).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import httpx
import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from .events import expand_dotted, flatten, identity_of
from .kafka import admin, ensure_topics
from .settings import Settings, get_settings, to_env


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for a worker or test server to listen on,
    below the kernel's ephemeral range. A port from that range (what binding to
    port 0 returns) can be taken by any outgoing connection, and the Kafka
    clients make many, between this check and the listener binding it: a worker
    then failed to start with "address already in use". Never the same port
    twice in one process."""
    high = max(_ephemeral_low(), 12_000)
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(10_000, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range on 127.0.0.1")


def _settings(base: Settings, tag: str, partitions: int, scorer: str) -> Settings:
    run = f"bench-{tag}-{uuid.uuid4().hex[:6]}"
    topics = base.topics.model_copy(
        update={k: f"{run}.{k}" for k in ("access", "api", "telemetry", "bysource", "candidates", "alerts", "risk", "deadletter")} | {"partitions": partitions}
    )
    worker = base.worker.model_copy(update={"app_id": run, "data_dir": Path("/tmp") / run, "scorer": scorer})
    return base.model_copy(update={"topics": topics, "worker": worker})


def cleanup(s: Settings) -> None:
    """Delete what a run left: its topics (inputs, outputs and the workers' Faust
    changelogs, all named after the run) and the workers' state directories.
    Repeated runs used to pile up partitions on the broker until it ran out of
    file handles ("Too many open files") and stopped."""
    run = s.worker.app_id
    try:
        adm = admin(s)
        names = [n for n in adm.list_topics(timeout=10).topics if n.startswith(run)]
        for fut in (adm.delete_topics(names, operation_timeout=30).values() if names else ()):
            fut.result(60)
    except Exception as exc:  # noqa: BLE001 - a benchmark's tidy-up must not hide its figures
        print(f"(could not delete the topics of {run}: {exc})", file=sys.stderr)
    data = Path(s.worker.data_dir)
    for d in [data, *data.parent.glob(f"{data.name}-*")]:
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)


def _events(n: int, seed: int) -> list[tuple[str, bytes, bytes]]:
    from .simulate import SimulationConfig, simulate

    cfg = SimulationConfig.preset("tiny", seed=seed)
    out = []
    for kind, doc in simulate(cfg):
        key = identity_of(kind, flatten(expand_dotted(doc))) or ""
        out.append((kind, key.encode(), orjson.dumps(doc)))
        if len(out) >= n:
            break
    return out


def _produce(s: Settings, events: list[tuple[str, bytes, bytes]], rate: float | None = None, restamp: bool = False) -> float:
    p = Producer({**s.kafka.confluent_config(), "linger.ms": 10})
    topics = s.topics.inputs()
    t0 = time.perf_counter()
    for i, (kind, key, value) in enumerate(events):
        if restamp:
            doc = orjson.loads(value)
            doc["@timestamp"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            value = orjson.dumps(doc)
        p.produce(topics[kind], key=key, value=value)
        if i % 1000 == 0:
            p.poll(0)
        if rate:
            ahead = (i + 1) / rate - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
    p.flush(60)
    return time.perf_counter() - t0


def raw_consume_rate(s: Settings, n: int) -> float:
    c = Consumer({**s.kafka.confluent_config(), "group.id": f"raw-{uuid.uuid4().hex}", "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe(list(s.topics.inputs().values()))
    got, t0, first = 0, time.perf_counter(), None
    while got < n and time.perf_counter() - t0 < 120:
        batch = c.consume(1000, timeout=0.5)
        if batch and first is None:
            first = time.perf_counter()
        for m in batch:
            if m.error() is None:
                orjson.loads(m.value())  # decoding is part of any consumer's work
                got += 1
    c.close()
    return got / max(time.perf_counter() - (first or t0), 1e-9)


def _metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))


def _total(ports: list[int], name: str = "ueba_events_total") -> float:
    total = 0.0
    for port in ports:
        try:
            total += _metric(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text, name)
        except httpx.HTTPError:
            pass
    return total


#: CPU figures of the last run_workers call: worker CPU microseconds per event, and
#: the share of a core each worker had (below 1: waiting, or the cores were busy elsewhere).
LAST_RUN: dict[str, float] = {}
#: Each worker's metrics scraped after the warm-up settled (histograms are diffed against it).
LAST_RUN_SCRAPES: list[str] = []


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its threads (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def local_broker_pids() -> list[int]:
    """Processes of a Kafka broker on this machine (``kafka.Kafka`` in the command
    line; none when the broker runs elsewhere)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if b"\0kafka.Kafka\0" in cmd:
            pids.append(int(d.name))
    return pids


def cores_bound(worker_us: float, others_us: float, cores: int) -> float:
    """Events/s the machine's ``cores`` can serve at most when each event costs
    ``worker_us`` of worker CPU and ``others_us`` of everything else on the same
    cores (the broker, the producer, the system), however many workers run."""
    per_event = worker_us + others_us
    return cores * 1e6 / per_event if per_event > 0 else float("inf")


def parse_cost(events: list[tuple[str, bytes, bytes]], repeat: int = 3) -> float:
    """Microseconds of CPU per event to decode and validate ``events`` as the
    worker does (:func:`streams.events.parse_event`), best of ``repeat``."""
    from .errors import EventError
    from .events import parse_event

    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for kind, _key, value in events:
            try:
                parse_event(kind, value)
            except EventError:
                pass  # the worker pays for a rejected event too
        best = min(best, time.process_time() - t0)
    return best / max(1, len(events)) * 1e6


def run_noop_worker() -> None:
    """A worker made of the real worker's Faust app and batch consumer
    (``streams.app.faust_app``) whose handlers only count the events: what the
    framework costs before any parsing, scoring, state or output. Run by
    ``python -m streams.bench --noop-worker`` with the worker's environment."""
    from . import batchdrain
    from .app import faust_app, raw_schema, run_worker
    from .metrics import METRICS

    s = get_settings()
    app = faust_app(s)
    for kind, name in s.topics.inputs().items():
        topic = app.topic(name, schema=raw_schema(), partitions=s.topics.partitions, internal=False)
        counter = METRICS.events.labels(stream=kind)

        async def count(batch: list[object], counter: object = counter) -> None:
            counter.inc(len(batch))  # type: ignore[attr-defined]
            METRICS.last_progress.set(time.time())

        batchdrain.register(app, topic, count)
    run_worker(app, s)


def partition_loads(s: Settings) -> dict[int, int]:
    """Messages per partition number, summed over the input topics (the worker
    assigns the same partition of every input topic to one worker), read from
    the broker's watermarks."""
    c = Consumer({**s.kafka.confluent_config(), "group.id": f"loads-{uuid.uuid4().hex}"})
    try:
        loads: dict[int, int] = {}
        for topic in s.topics.inputs().values():
            for p in range(s.topics.partitions):
                low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                loads[p] = loads.get(p, 0) + max(0, high - low)
        return loads
    finally:
        c.close()


def split_bound(loads: dict[int, int], workers: int = 2) -> float:
    """How many times one worker's rate ``workers`` workers can reach at most
    when each partition is processed by one worker, in order, and each worker
    gets as many partitions as the others (give or take one: Faust's assignor
    balances partition counts, not loads): the total over the busiest worker's
    share in the most even such split. An identity's events are one partition's,
    so a few heavy identities cap the scaling whatever the cores."""
    total = sum(loads.values())
    if total == 0:
        return float("nan")
    parts = sorted(loads, key=lambda p: -loads[p])
    cap = -(-len(parts) // workers)  # partitions per worker at most
    best = float(total)

    def place(i: int, sums: list[int], counts: list[int]) -> None:
        nonlocal best
        if max(sums) >= best:
            return
        if i == len(parts):
            best = max(sums)
            return
        tried = set()
        for w in range(workers):
            if counts[w] >= cap or (sums[w], counts[w]) in tried:  # full, or the same as one tried
                continue
            tried.add((sums[w], counts[w]))
            sums[w] += loads[parts[i]]
            counts[w] += 1
            place(i + 1, sums, counts)
            sums[w] -= loads[parts[i]]
            counts[w] -= 1

    place(0, [0] * workers, [0] * workers)
    return total / best


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores since boot (Linux /proc/stat). Busy is
    this machine's own work; time the hypervisor gave other machines (steal,
    see :func:`_machine_steal`) is not."""
    fields = _cpu_fields()
    if not fields:
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    return float(sum(fields[:8]) - idle - steal), float(sum(fields[:8]))


def _machine_steal() -> tuple[float, float]:
    """(steal, total) jiffies since boot: time this virtual machine's cores
    were ready to run but the hypervisor ran other machines (noisy neighbours)."""
    fields = _cpu_fields()
    if not fields:
        return 0.0, 0.0
    return float(fields[7] if len(fields) > 7 else 0), float(sum(fields[:8]))


def _cpu_fields() -> list[int]:
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    try:
        return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return []


def run_workers(
    s: Settings,
    warm: list[tuple[str, bytes, bytes]],
    measured: list[tuple[str, bytes, bytes]],
    workers: int,
    *,
    rate: float | None = None,
    restamp: bool = False,
    settle: float = 8.0,
    timeout: float = 900.0,
    command: list[str] | None = None,
) -> tuple[float, list[str]]:
    """Start ``workers`` worker processes, let them take up the warm-up events and
    settle (partition assignment, table recovery, rebalances as the others join),
    then produce ``measured`` (at ``rate``, stamped now with ``restamp``) and time
    them from the first counted to the last. Returns (events/s, metrics texts).
    ``command``: what each worker runs (default ``ueba worker``)."""
    import threading

    LAST_RUN.clear()
    procs, ports = [], []
    for i in range(workers):
        port = free_port()
        ports.append(port)
        ws = s.worker.model_copy(update={"web_port": free_port(), "metrics_port": port, "data_dir": Path(f"{s.worker.data_dir}-{i}")})
        env = {k: v for k, v in os.environ.items() if not k.startswith("UEBA_") and k != "BROKER_URL"} | to_env(s.model_copy(update={"worker": ws}))
        log = open(f"{ws.data_dir}.log", "wb")
        procs.append(subprocess.Popen(command or [sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    deadline = time.monotonic() + timeout
    rate_out = 0.0
    broker_pids = local_broker_pids()
    try:
        _produce(s, warm)
        while _total(ports) < len(warm):
            if time.monotonic() > deadline:
                raise TimeoutError("the workers did not take up the warm-up events")
            time.sleep(0.25)
        time.sleep(settle)
        base = _total(ports)
        LAST_RUN_SCRAPES.clear()
        for port in ports:
            try:
                LAST_RUN_SCRAPES.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text)
            except httpx.HTTPError:
                LAST_RUN_SCRAPES.append("")
        counted0 = [_metric(text, "ueba_events_total") for text in LAST_RUN_SCRAPES]
        t = threading.Thread(target=_produce, args=(s, measured), kwargs={"rate": rate, "restamp": restamp}, daemon=True)
        t.start()
        start = done_at = None
        each0 = each1 = [0.0] * workers
        busy0 = busy1 = steal0 = steal1 = (0.0, 0.0)
        broker0 = broker1 = 0.0
        while time.monotonic() < deadline:
            total = _total(ports) - base
            if total > 0 and start is None:
                start = time.monotonic()
                each0 = [_cpu_seconds(p.pid) for p in procs]
                busy0 = _machine_busy()
                steal0 = _machine_steal()
                broker0 = sum(_cpu_seconds(pid) for pid in broker_pids)
            if total >= len(measured):
                done_at = time.monotonic()
                each1 = [_cpu_seconds(p.pid) for p in procs]
                busy1 = _machine_busy()
                steal1 = _machine_steal()
                broker1 = sum(_cpu_seconds(pid) for pid in broker_pids)
                break
            time.sleep(0.1)
        t.join(60)
        texts = []
        for port in ports:
            try:
                texts.append(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text)
            except httpx.HTTPError:
                texts.append("")
        if start is not None and done_at is not None:
            # first counted event to the last: excludes start-up and partition assignment
            rate_out = len(measured) / max(done_at - start, 1e-9)
            cpu = sum(each1) - sum(each0)
            LAST_RUN.update(cpu_us_per_event=cpu / len(measured) * 1e6, cpu_share=cpu / max(done_at - start, 1e-9) / workers)
            if workers > 1:
                # the partitions are keyed by identity, so the busiest worker holds the busiest identities
                LAST_RUN["busiest_share"] = max(b - a for a, b in zip(each0, each1)) / max(done_at - start, 1e-9)
                counted1 = [_total([port]) for port in ports]
                # each worker's share of the measured events (counted since the scrape after the warm-up)
                LAST_RUN["busiest_events"] = max(b - a for a, b in zip(counted0, counted1)) / len(measured)
            if busy1[1] > busy0[1]:
                # every process on the machine: the workers, the broker, the benchmark's producer, others
                LAST_RUN["machine_busy"] = (busy1[0] - busy0[0]) / (busy1[1] - busy0[1])
                # CPU of everything but the workers, per event (jiffies are summed over the cores)
                busy_seconds = (busy1[0] - busy0[0]) / os.sysconf("SC_CLK_TCK")
                LAST_RUN["others_us_per_event"] = max(0.0, busy_seconds - cpu) / len(measured) * 1e6
            if steal1[1] > steal0[1]:
                LAST_RUN["steal"] = (steal1[0] - steal0[0]) / (steal1[1] - steal0[1])
            if broker_pids:
                LAST_RUN["broker_us_per_event"] = (broker1 - broker0) / len(measured) * 1e6
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    return rate_out, texts


def _cpu_note() -> str:
    if not LAST_RUN:
        return "CPU not measured"
    note = f"{LAST_RUN['cpu_us_per_event']:.0f} us of worker CPU per event, each worker busy {LAST_RUN['cpu_share']:.0%} of the time"
    if "machine_busy" in LAST_RUN:
        note += f"; all {os.cpu_count()} cores {LAST_RUN['machine_busy']:.0%} busy (workers, broker, producer)"
    if "busiest_share" in LAST_RUN:
        note += f" (the busiest {LAST_RUN['busiest_share']:.0%}, with {LAST_RUN['busiest_events']:.0%} of the events)"
    if "others_us_per_event" in LAST_RUN:
        note += f"; everything but the workers {LAST_RUN['others_us_per_event']:.0f} us of CPU per event"
    if "broker_us_per_event" in LAST_RUN:
        note += f" (the broker {LAST_RUN['broker_us_per_event']:.0f})"
    if "steal" in LAST_RUN:
        note += f"; cores taken by other machines (steal) {LAST_RUN['steal']:.0%}"
    return note


def _buckets(text: str, name: str) -> dict[float, float]:
    sums: dict[float, float] = {}
    for le, v in re.findall(rf'^{name}_bucket{{(?:[^}}]*,)?le="([^"]+)"[^}}]*}} ([0-9.e+]+)$', text, re.M):
        b = float("inf") if le == "+Inf" else float(le)
        sums[b] = sums.get(b, 0.0) + float(v)  # summed over label sets (streams)
    return sums


def p99_from_histogram(text: str, name: str = "ueba_event_to_alert_seconds", since: str = "") -> tuple[float, int]:
    """The p99 bucket bound of histogram ``name`` (summed over label sets); with
    ``since``, of only the observations made after that earlier scrape."""
    sums = _buckets(text, name)
    before = _buckets(since, name) if since else {}
    buckets = sorted((b, c - before.get(b, 0.0)) for b, c in sums.items())
    if not buckets or buckets[-1][1] == 0:
        return float("nan"), 0
    total = buckets[-1][1]
    for le, cum in buckets:
        if cum >= 0.99 * total:
            return le, int(total)
    return float("inf"), int(total)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--scorer", default="suite", choices=["suite", "first_seen"])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--noop-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.noop_worker:
        run_noop_worker()
        return
    base = get_settings()
    warm_n = max(1000, args.events // 10)
    allev = _events(args.events + warm_n, args.seed)
    warm, events = allev[:warm_n], allev[warm_n:]
    n = len(events)
    print(f"events: {n} measured after {warm_n} warm-up (tiny preset, seed {args.seed}), partitions {args.partitions}, scorer {args.scorer}")

    runs: list[Settings] = []
    try:
        _measure(base, args, warm, events, runs)
    finally:
        for s in runs:
            cleanup(s)


def _measure(base: Settings, args: argparse.Namespace, warm: list[tuple[str, bytes, bytes]],
             events: list[tuple[str, bytes, bytes]], runs: list[Settings]) -> None:
    n = len(events)

    def settings(tag: str) -> Settings:
        s = _settings(base, tag, args.partitions, args.scorer)
        runs.append(s)
        ensure_topics(s)
        return s

    s0 = settings("raw")
    _produce(s0, events)
    ceiling = raw_consume_rate(s0, n)
    print(f"ceiling (raw confluent-kafka consume + JSON decode): {ceiling:,.0f} events/s")
    sf = settings("floor")
    floor, _ = run_workers(sf, warm, events, 1, command=[sys.executable, "-m", "streams.bench", "--noop-worker"])
    floor_us = LAST_RUN.get("cpu_us_per_event", float("nan"))
    parse_us = parse_cost(events)
    print(f"floor: the worker's Faust app and batch consumer with handlers that only count: {floor:,.0f} events/s "
          f"(as fast as they were produced), {floor_us:.1f} us of CPU per event; parsing and validating as the worker "
          f"does: {parse_us:.1f} us per event; the two alone: {floor_us + parse_us:.0f} us, at most "
          f"{1e6 / (floor_us + parse_us):,.0f} events/s per core before any detection, rule, state or output")
    s1 = settings("one")
    one, _ = run_workers(s1, warm, events, 1)
    print(f"one worker:  {one:,.0f} events/s  ({one / ceiling:.1%} of the ceiling); {_cpu_note()}")

    s2 = settings("two")
    two, _ = run_workers(s2, warm, events, 2)
    print(f"two workers: {two:,.0f} events/s  ({two / one if one else float('nan'):.2f}x one worker); {_cpu_note()}")
    loads = partition_loads(s2)
    total = sum(loads.values()) or 1
    print(f"the data's bound: events per partition {', '.join(f'{loads[p] / total:.0%}' for p in sorted(loads))}; "
          f"an identity's events are one partition's, so two workers reach at most {split_bound(loads):.2f}x one worker "
          f"on this data whatever the cores (the most even split with {s2.topics.partitions // 2} partitions each)")
    if "others_us_per_event" in LAST_RUN:
        w, o, cores = LAST_RUN["cpu_us_per_event"], LAST_RUN["others_us_per_event"], os.cpu_count() or 1
        cap = cores_bound(w, o, cores)
        broker = f", of which the broker {LAST_RUN['broker_us_per_event']:.0f}" if "broker_us_per_event" in LAST_RUN else ""
        print(f"the cores' bound: {cores} cores / ({w:.0f} us of worker CPU + {o:.0f} us of everything else per event{broker}) "
              f"= {cap:,.0f} events/s at most, {cap / one if one else float('nan'):.2f}x one worker, however many workers run")

    if one > 0:
        s3 = settings("lat")
        half = one / 2
        m = min(n, int(half * 60))  # about a minute of traffic
        # Latency is measured from each input record's Kafka timestamp (its arrival), so the
        # events keep their own @timestamps: restamping them "now" squeezed a day of traffic
        # into seconds and made every rate detector fire.
        _, texts = run_workers(s3, warm, events[:m], 1, rate=half, timeout=max(180.0, 4 * m / half))
        since = LAST_RUN_SCRAPES[0] if LAST_RUN_SCRAPES else ""  # leave out the warm-up's backlog
        p99, alerts = p99_from_histogram(texts[0] if texts else "", since=since)
        p99e, scored = p99_from_histogram(texts[0] if texts else "", "ueba_event_processing_seconds", since=since)
        print(
            f"latency at half rate ({half:,.0f} events/s, {m} events): p99 event-to-alert <= {p99:g} s over {alerts} alerts; "
            f"p99 event scored and its outputs in Kafka <= {p99e:g} s over {scored} events (histogram buckets)"
        )


if __name__ == "__main__":
    main()
