"""``ueba``: the command line. Logs go to stderr, data to stdout; a
:class:`~streams.errors.UebaError` is printed once as a diagnostic (traceback
only with ``-v``) and exits with status 2.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .errors import UebaError

app = typer.Typer(help="ai-ueba: streaming UEBA for cloud AI platforms.", no_args_is_help=True, add_completion=False)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
rules_app = typer.Typer(help="Sigma rules: validate and test rule files.", no_args_is_help=True)
kibana_app = typer.Typer(help="Kibana saved objects (data views, dashboard, saved search).", no_args_is_help=True)
services_app = typer.Typer(help="Local Kafka and OpenSearch for development and the demo (deploy/local.sh).", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(services_app, name="services")
app.add_typer(rules_app, name="rules")
app.add_typer(kibana_app, name="kibana")

err = Console(stderr=True)
out = Console()
_VERBOSE = False

REPO_ROOT = Path(__file__).resolve().parent.parent


def orjson_dumps(obj: object) -> str:
    import orjson

    return orjson.dumps(obj, default=str).decode()


def dataclasses_asdict(obj: object) -> dict:
    return dataclasses.asdict(obj)  # type: ignore[arg-type]


def _settings():
    from .settings import get_settings

    return get_settings()


#: The numeric libraries' thread pools (OpenBLAS, OpenMP, MKL). The worker and
#: replay call numpy on tiny arrays, one event at a time, where a pool never
#: helps, and each pool's idle threads spin after every call on the cores the
#: broker and the other workers need: 7-8% of a worker's CPU here, measured.
NUMERIC_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_numeric_thread() -> None:
    """One thread per numeric library in this process, unless the environment
    already chose (each variable is only set when unset). Before numpy is
    imported the variables are enough; after, ``threadpoolctl`` limits the
    pools already loaded."""
    chosen = [var for var in NUMERIC_THREAD_VARS if var in os.environ]
    for var in NUMERIC_THREAD_VARS:
        os.environ.setdefault(var, "1")
    if "numpy" in sys.modules and not chosen:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks on errors.")) -> None:
    global _VERBOSE
    _VERBOSE = verbose


@app.command()
def version() -> None:
    """Print the ai-ueba version."""
    from . import __version__

    out.print(__version__)


@app.command()
def schemas(folder: Path = typer.Option(REPO_ROOT / "streams" / "schemas", help="Where to write <stream>.schema.json.")) -> None:
    """Write the JSON Schema (draft 2020-12) of each input stream, generated from the event model."""
    import orjson

    from .events import json_schemas

    folder.mkdir(parents=True, exist_ok=True)
    for kind, schema in json_schemas().items():
        path = folder / f"{kind}.schema.json"
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2) + b"\n")
        out.print(str(path))


@topics_app.command("create")
def topics_create() -> None:
    """Pre-create the input, alerts, risk and dead-letter topics with fixed partition counts."""
    from .kafka import ensure_topics

    s = _settings()
    for name, action in ensure_topics(s).items():
        out.print(f"{name}\t{action}\tpartitions={s.topics.partitions}")


@app.command()
def setup() -> None:
    """Install index and component templates in the search engine (idempotent)."""
    from .search import engine_info, install_templates, make_client

    s = _settings()
    client = make_client(s.search)
    info = engine_info(client)
    err.print(f"{s.search.engine} {info['number']} ({info['distribution']}) at {s.search.url}")
    for name, action in install_templates(client, s.search.engine).items():
        out.print(f"{name}\t{action}")


@app.command()
def worker() -> None:
    """Run a stream worker (Faust): score the three input topics, emit alerts."""
    one_numeric_thread()
    from .app import create_app, run_worker

    s = _settings()
    _logging(s.log_level)
    run_worker(create_app(s), s)


@app.command()
def sink(
    webhooks: bool = typer.Option(True, help="Also run the webhook relay (when UEBA_WORKER__WEBHOOKS_FILE is set) in this process."),
) -> None:
    """Run the search sink: alerts topic -> Elasticsearch/OpenSearch (and the webhook relay)."""
    from .sink import run_sink

    s = _settings()
    _logging(s.log_level)
    run_sink(s, webhooks=webhooks)


@app.command()
def webhooks_relay() -> None:
    """Run only the webhook relay: alerts topic -> SOAR webhook targets, at least once (own consumer group)."""
    from .webhooks import run_relay

    s = _settings()
    _logging(s.log_level)
    if not s.worker.webhooks_file:
        raise UebaError("UEBA_WORKER__WEBHOOKS_FILE is not set: no webhook targets to deliver to")
    run_relay(s)


@app.command()
def produce(
    files: list[Path] = typer.Argument(..., help="ECS JSON-lines files; each line's event.dataset (ueba.access/api/telemetry) picks its topic."),
    stream: Optional[str] = typer.Option(None, help="Send every line to this stream (access, api, telemetry) instead."),
) -> None:
    """Send events from JSON-lines files to the input topics, keyed by identity."""
    from .feed import produce_files

    s = _settings()
    counts = produce_files(s, files, stream=stream)
    for k, v in counts.items():
        out.print(f"{k}\t{v}")


@app.command()
def replay(
    files: list[Path] = typer.Argument(..., help="ECS JSON lines (.jsonl, .jsonl.gz), Parquet or CSV, processed in order."),
    output: Path = typer.Option(..., "-o", "--output", help="Alerts as ECS JSON lines."),
    risk_output: Optional[Path] = typer.Option(None, "--risk-output", help="Also write the entity risk timeline (risk changes) here."),
    stream: Optional[str] = typer.Option(None, help="Treat every record as this stream (access, api, telemetry)."),
    policy: Optional[Path] = typer.Option(None, help="Policy YAML (default: UEBA_WORKER__POLICY_FILE)."),
    scorer: Optional[str] = typer.Option(None, help="suite (default) or first_seen."),
) -> None:
    """Run the identical pipeline in-process over files: no Kafka, no search engine."""
    one_numeric_thread()
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .app import rules_for, scorer_factory_for
    from .policy import Policy
    from .replay import Replayer

    s = _settings()
    if scorer:
        s = s.model_copy(update={"worker": s.worker.model_copy(update={"scorer": scorer})})
    if stream is not None and stream not in ("access", "api", "telemetry"):
        raise UebaError(f"--stream must be access, api or telemetry, not {stream!r}")
    pol = Policy.load(policy or s.worker.policy_file)
    rp = Replayer(
        scorer_factory_for(s),
        policy=pol,
        min_score=s.worker.min_score,
        max_event_bytes=s.worker.max_event_bytes,
        rules=rules_for(s),
        by_source=s.worker.scorer == "suite",
    )
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,} events"), TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("replaying", total=None)
        stats = rp.run(list(files), stream=stream, progress=lambda n: bar.advance(task, n))
    rp.write(output, risk_out=risk_output, namespace=s.search.namespace)
    import orjson

    out.print_json(orjson.dumps(stats.as_dict()).decode())


@app.command()
def simulate(
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write ECS JSON lines here (labels beside it as <output>.labels.jsonl)."),
    labels_output: Optional[Path] = typer.Option(None, "--labels", help="Labels file (default: <output>.labels.jsonl)."),
    preset: str = typer.Option("week", help="week (1-3M events), eval (~150k) or tiny (2 days, ~104k)."),
    seed: int = typer.Option(7, help="Same seed, same bytes."),
    duration: Optional[str] = typer.Option(None, help="Override the preset's duration, e.g. 1d, 36h."),
    scenarios: Optional[str] = typer.Option(None, help="Comma-separated scenario ids or letters a-h; 'none' for benign traffic only."),
    to_kafka: bool = typer.Option(False, "--to-kafka", help="Produce straight to the input topics instead of a file."),
    rate: Optional[float] = typer.Option(None, help="With --to-kafka: events/s (default: as fast as possible)."),
    time_scale: Optional[float] = typer.Option(None, help="With --to-kafka: simulated seconds per real second."),
) -> None:
    """Generate realistic AI-platform traffic with labelled attacks (seeded, deterministic)."""
    from .simulate import SimulationConfig, produce, write_jsonl

    overrides: dict = {"seed": seed}
    if duration:
        overrides["duration"] = duration
    if scenarios is not None:
        overrides["scenarios"] = () if scenarios.strip().lower() == "none" else tuple(x.strip() for x in scenarios.split(",") if x.strip())
    cfg = SimulationConfig.preset(preset, **overrides)
    if to_kafka:
        s = _settings()
        report = produce(cfg, s.kafka.confluent_config(), s.topics.inputs(), rate=rate, time_scale=time_scale)
        out.print_json(orjson_dumps(report.__dict__ if hasattr(report, "__dict__") else dataclasses_asdict(report)))
        return
    if output is None:
        raise UebaError("give -o FILE, or --to-kafka")
    labels_path = labels_output or output.with_name(output.name + ".labels.jsonl")
    t0 = time.perf_counter()
    summary = write_jsonl(cfg, output, labels_path)
    err.print(f"{summary['events']:,} events in {time.perf_counter() - t0:.1f}s -> {output} (labels: {labels_path})")
    out.print_json(orjson_dumps(summary))


@rules_app.command("validate")
def rules_validate(paths: list[Path] = typer.Argument(..., help="Rule files or folders.")) -> None:
    """Check rule files: strict YAML, the Sigma JSON schemas, semantics. Exit 1 on errors."""
    from rules import validate_paths

    issues = validate_paths(paths)
    errors = [i for i in issues if str(getattr(i, "severity", "error")).lower().endswith("error")]
    for i in issues:
        (err if i in errors else out).print(str(i))
    out.print(f"{len(errors)} error(s), {len(issues) - len(errors)} warning(s)")
    raise typer.Exit(1 if errors else 0)


@rules_app.command("test")
def rules_test(paths: list[Path] = typer.Argument(..., help="Rule files or folders with embedded x_tests or *.tests.yml.")) -> None:
    """Run each rule's embedded match/nomatch test events. Exit 1 on a failure."""
    from rules import RuleSet, run_rule_tests

    report = run_rule_tests(RuleSet.load(paths))
    out.print(report.text())
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def evaluate(
    events: Optional[Path] = typer.Argument(None, help="Labelled ECS JSON lines (from `ueba simulate`); default: the built-in eval set, generated in memory."),
    labels: Optional[Path] = typer.Option(None, help="Labels JSON lines (default: <events>.labels.jsonl)."),
    policy: Optional[Path] = typer.Option(None, help="Policy YAML to evaluate (thresholds, allow-lists...)."),
    preset: str = typer.Option("eval", help="With no EVENTS: simulation preset (eval ~150k events, tiny ~104k)."),
    seed: int = typer.Option(7),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON here."),
) -> None:
    """Replay a labelled set through the pipeline and report detection per scenario, false alerts, precision, recall."""
    one_numeric_thread()
    from .evaluate import evaluate as run_evaluation

    s = _settings()
    report = run_evaluation(events, labels, settings=s, preset=preset, seed=seed, policy=policy)
    out.print(report)
    if json_out:
        report.write_json(json_out)
        err.print(f"report written to {json_out}")


@app.command()
def demo(
    preset: str = typer.Option("tiny", help="Simulation preset: tiny (2 days, ~104k events) or eval (3 days)."),
    seed: int = typer.Option(7),
    rate: float = typer.Option(1500.0, help="Events per second sent to Kafka."),
    no_services: bool = typer.Option(False, "--no-services", help="Use already running Kafka/OpenSearch from the settings."),
) -> None:
    """The main job: local Kafka + OpenSearch, a worker, two simulated days with attacks, live view, report."""
    from .demo import demo_settings, run_demo

    s = demo_settings(_settings())
    run_demo(s, preset=preset, seed=seed, rate=rate, console=out, start_services=not no_services)


@kibana_app.command("import")
def kibana_import(
    url: str = typer.Option(..., help="Kibana base URL, e.g. https://kibana:5601"),
    file: Optional[Path] = typer.Option(None, help="NDJSON saved objects (default: deploy/kibana/ueba.ndjson)."),
    space: Optional[str] = typer.Option(None, help="Kibana space id (default space if unset)."),
    api_key: Optional[str] = typer.Option(None, envvar="UEBA_KIBANA_API_KEY", help="API key (encoded or id:key)."),
    username: Optional[str] = typer.Option(None, envvar="UEBA_KIBANA_USERNAME"),
    password: Optional[str] = typer.Option(None, envvar="UEBA_KIBANA_PASSWORD"),
    ca_certs: Optional[Path] = typer.Option(None, help="CA bundle for https."),
    insecure: bool = typer.Option(False, help="Do not verify the TLS certificate."),
) -> None:
    """Import the saved objects (overwrite: running it again updates them)."""
    from .kibana import DEFAULT_ASSETS, import_assets, import_errors

    result = import_assets(
        url, file or DEFAULT_ASSETS, api_key=api_key, username=username, password=password, space=space,
        ca_certs=str(ca_certs) if ca_certs else None, verify=not insecure,
    )
    out.print(f"imported {result.get('successCount', 0)} objects")
    problems = import_errors(result)
    for line in problems:
        err.print(line)
    raise typer.Exit(0 if result.get("success") and not problems else 1)


@app.command()
def webhooks_check(file: Path = typer.Argument(..., help="Webhook targets YAML.")) -> None:
    """Validate a webhook targets file and list its targets (secrets never shown)."""
    from .webhooks import load_targets, safe_url

    cfg = load_targets(file)
    for t in cfg.targets:
        out.print(f"{t.name}\t{t.format.value if hasattr(t.format, 'value') else t.format}\t{safe_url(t.url)}\t{'enabled' if t.enabled else 'disabled'}")


@services_app.command("up")
def services_up() -> None:
    """Start Kafka and OpenSearch on 127.0.0.1 (fetching them on first use)."""
    raise typer.Exit(subprocess.call(["bash", str(REPO_ROOT / "deploy" / "local.sh"), "up"]))


@services_app.command("down")
def services_down() -> None:
    """Stop the local Kafka and OpenSearch."""
    raise typer.Exit(subprocess.call(["bash", str(REPO_ROOT / "deploy" / "local.sh"), "down"]))


@services_app.command("status")
def services_status() -> None:
    """Show whether the local services run."""
    raise typer.Exit(subprocess.call(["bash", str(REPO_ROOT / "deploy" / "local.sh"), "status"]))


def main() -> None:
    try:
        app()
    except UebaError as exc:
        if _VERBOSE or os.environ.get("UEBA_DEBUG"):
            raise
        err.print(f"[bold red]error:[/] {exc.diagnostics()}")
        sys.exit(2)


if __name__ == "__main__":
    main()
