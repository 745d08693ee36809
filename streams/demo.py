"""``ueba demo``: the whole pipeline on this machine, in one command.

1. starts the local genuine Kafka and OpenSearch (``deploy/local.sh up``),
2. creates the topics and installs the index templates,
3. starts a stream worker (a child process, as in production) and the sink,
4. streams two simulated days of AI-platform traffic (attacks on the second,
   once the baselines have a daily cycle) into
   Kafka at a visible pace,
5. shows a live view (events/s, alerts by scenario and severity, top risky
   entities) and ends with the detection report and where to look.

Ctrl-C stops the producer, the worker and the sink cleanly; the services keep
running so the results can be explored (``ueba services down`` stops them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from .alerts import Alert
from .errors import UebaError
from .evaluate import LabelledScenario, scenario_of
from .kafka import ensure_topics
from .risk import RiskChange
from .search import alert_stream, install_templates, make_client, risk_index
from .settings import Settings, to_env
from .sink import SinkThread

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class DemoState:
    produced: int = 0
    started: float = field(default_factory=time.monotonic)
    alerts: dict[str, Alert] = field(default_factory=dict)
    risk: dict[str, tuple[float, str]] = field(default_factory=dict)
    by_scenario: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    first_alert: dict[str, float] = field(default_factory=dict)
    severity: Counter = field(default_factory=Counter)
    done_producing: bool = False


def _view(st: DemoState, scenarios: list[LabelledScenario], total: int) -> Group:
    elapsed = max(time.monotonic() - st.started, 1e-6)
    head = Table.grid(padding=(0, 3))
    head.add_row(
        f"[b]events[/] {st.produced:,}/{total:,}",
        f"[b]rate[/] {st.produced / elapsed:,.0f}/s",
        f"[b]alerts[/] {len(st.alerts):,}",
        " ".join(f"{k}:{v}" for k, v in sorted(st.severity.items())),
    )
    sc = Table(title="scenarios", expand=True)
    sc.add_column("scenario")
    sc.add_column("techniques")
    sc.add_column("alerts", justify="right")
    sc.add_column("status")
    for s in scenarios:
        n = len(st.by_scenario.get(s.scenario_id, ()))
        sc.add_row(s.scenario_id, ", ".join(s.techniques[:3]), str(n), "[green]detected[/]" if n else "[dim]waiting[/]")
    top = Table(title="top risky entities", expand=True)
    top.add_column("entity")
    top.add_column("risk", justify="right")
    top.add_column("level")
    for ent, (score, level) in sorted(st.risk.items(), key=lambda kv: -kv[1][0])[:8]:
        top.add_row(ent, f"{score:.0f}", level)
    return Group(head, sc, top)


def run_demo(
    settings: Settings,
    *,
    preset: str = "tiny",
    seed: int = 7,
    rate: float = 1500.0,
    console: Console | None = None,
    start_services: bool = True,
    settle_seconds: float = 20.0,
) -> DemoState:
    from .simulate import SimulationConfig, labels, produce

    console = console or Console()
    if start_services:
        console.print("[b]1/5[/] starting genuine Kafka and OpenSearch on 127.0.0.1 (first run fetches them from Maven Central)")
        rc = subprocess.call(["bash", str(REPO_ROOT / "deploy" / "local.sh"), "up"])
        if rc != 0:
            raise UebaError("deploy/local.sh up failed; see deploy/.work/*/*.log")
    console.print("[b]2/5[/] topics and index templates")
    ensure_topics(settings)
    client = make_client(settings.search)
    install_templates(client, settings.search.engine)

    cfg = SimulationConfig.preset(preset, seed=seed)
    scenarios = [LabelledScenario.from_label(rec) for rec in labels(cfg)]
    st = DemoState()

    console.print("[b]3/5[/] starting a stream worker and the search sink")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UEBA_") and k != "BROKER_URL"}
    env.update(to_env(settings))
    log_path = Path(settings.worker.data_dir) / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(log_path, "wb")
    worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    sink = SinkThread(settings)
    sink.start()

    stop = threading.Event()
    consumer = Consumer(
        {**settings.kafka.confluent_config(), "group.id": f"demo-view-{time.time_ns()}", "auto.offset.reset": "latest", "enable.auto.commit": False}
    )
    consumer.subscribe([settings.topics.alerts, settings.topics.risk])

    class _Counter:
        def produce(self, *a: Any, **kw: Any) -> None:
            st.produced += 1
            self.inner.produce(*a, **kw)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    def producer_thread() -> None:
        from confluent_kafka import Producer

        wrapped = _Counter()
        wrapped.inner = Producer({**settings.kafka.confluent_config(), "linger.ms": 20})
        try:
            produce(cfg, settings.kafka.confluent_config(), settings.topics.inputs(), rate=rate, producer=wrapped)
        finally:
            st.done_producing = True

    total = _count_events(cfg)
    interrupted = False
    prev = signal.getsignal(signal.SIGINT)

    def on_sigint(*_: Any) -> None:
        nonlocal interrupted
        interrupted = True
        stop.set()

    signal.signal(signal.SIGINT, on_sigint)
    console.print(f"[b]4/5[/] streaming a simulated {cfg.duration} ({total:,} events, {len(scenarios)} attack scenarios) at ~{rate:,.0f} events/s")
    prod = threading.Thread(target=producer_thread, name="demo-producer", daemon=True)
    prod.start()
    quiet_since: float | None = None
    try:
        with Live(_view(st, scenarios, total), console=console, refresh_per_second=2) as live:
            while not stop.is_set():
                for m in consumer.consume(500, timeout=0.5):
                    if m.error() is not None:
                        continue
                    _absorb(st, m.topic() == settings.topics.risk, m.value(), scenarios)
                    quiet_since = None
                live.update(_view(st, scenarios, total))
                if worker.poll() is not None:
                    raise UebaError(f"the worker exited with status {worker.returncode}; see {log_path}")
                if st.done_producing:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > settle_seconds:
                        break
    finally:
        signal.signal(signal.SIGINT, prev)
        stop.set()
        consumer.close()
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        time.sleep(1.0)
        sink.stop()
        log_file.close()
    console.print("[b]5/5[/] detection report" + (" (interrupted)" if interrupted else ""))
    _report(console, st, scenarios, settings)
    return st


def _count_events(cfg: Any) -> int:
    from .simulate import simulate

    return sum(1 for _ in simulate(cfg))


def _absorb(st: DemoState, is_risk: bool, value: bytes, scenarios: list[LabelledScenario]) -> None:
    if is_risk:
        rc = RiskChange.from_json(value)
        st.risk[f"{rc.entity_type}:{rc.entity}"] = (rc.score, rc.level)
        return
    a = Alert.from_json(value)
    if a.id not in st.alerts:
        st.severity[a.level] += 1
        st.alerts[a.id] = a
    sid = scenario_of(a, scenarios)
    if sid:
        st.by_scenario[sid].add(a.id)
        st.first_alert[sid] = min(st.first_alert.get(sid, a.ts), a.ts)


def _report(console: Console, st: DemoState, scenarios: list[LabelledScenario], settings: Settings) -> None:
    t = Table(title="detection report")
    for c in ("scenario", "detected", "time to detect", "alerts", "first alert"):
        t.add_column(c)
    for s in scenarios:
        sid = s.scenario_id
        n = len(st.by_scenario.get(sid, ()))
        first = st.first_alert.get(sid)
        ttd = f"{(first - s.start) / 60:.1f} min" if first is not None else "-"
        title = next((st.alerts[i].title for i in st.by_scenario.get(sid, ())), "")
        t.add_row(sid, "[green]yes[/]" if n else "[red]no[/]", ttd, str(n), title[:70])
    console.print(t)
    matched = set().union(*st.by_scenario.values()) if st.by_scenario else set()
    other = len(st.alerts) - len(matched)
    console.print(f"alerts: {len(st.alerts)} ({len(matched)} on labelled attacks, {other} on other activity)")
    ns = settings.search.namespace
    console.print(
        Panel.fit(
            f"alerts:      {settings.search.url}/{alert_stream(ns)}/_search\n"
            f"entity risk: {settings.search.url}/{risk_index(ns)}/_search\n"
            f"example:     curl -s '{settings.search.url}/logs-ueba.alert-*/_search?q=event.severity:99&size=5&pretty'\n"
            f"Kibana:      ueba kibana import --url http://localhost:5601   (saved objects in deploy/kibana/)\n"
            f"replay:      ueba replay events.jsonl -o alerts.jsonl   (same pipeline, no services)\n"
            f"stop:        ueba services down",
            title="where to look",
        )
    )


def demo_settings(base: Settings) -> Settings:
    """Demo runs use their own topics and consumer group, so each run starts clean
    (alert ids are deterministic: the same seed lands on the same documents)."""
    run = time.strftime("%Y%m%d%H%M%S")
    topics = base.topics.model_copy(
        update={k: f"demo-{run}.{k}" for k in ("access", "api", "telemetry", "bysource", "candidates", "alerts", "risk", "deadletter")}
    )
    worker = base.worker.model_copy(update={"app_id": f"ai-ueba-demo-{run}", "data_dir": Path(base.worker.data_dir) / f"demo-{run}"})
    return base.model_copy(update={"topics": topics, "worker": worker})
