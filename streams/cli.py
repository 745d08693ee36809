"""``ueba``: the command line. Logs go to stderr, data to stdout; a
:class:`~streams.errors.UebaError` is printed once as a diagnostic (traceback
only with ``-v``) and exits with status 2.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .errors import UebaError

app = typer.Typer(help="ai-ueba: streaming UEBA for cloud AI platforms.", no_args_is_help=True, add_completion=False)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
services_app = typer.Typer(help="Local Kafka and OpenSearch for development and the demo (deploy/local.sh).", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(services_app, name="services")

err = Console(stderr=True)
out = Console()
_VERBOSE = False

REPO_ROOT = Path(__file__).resolve().parent.parent


def _settings():
    from .settings import get_settings

    return get_settings()


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
    from .app import create_app
    from .metrics import METRICS

    s = _settings()
    _logging(s.log_level)
    fapp = create_app(s)
    METRICS.serve(s.worker.metrics_port)
    faust_level = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error"}[s.log_level]
    sys.argv = [sys.argv[0], "worker", "-l", faust_level, "--web-port", str(s.worker.web_port), "--web-host", "127.0.0.1"]
    fapp.main()


@app.command()
def sink() -> None:
    """Run the search sink: alerts topic -> Elasticsearch/OpenSearch."""
    from .sink import run_sink

    s = _settings()
    _logging(s.log_level)
    run_sink(s)


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
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .app import scorer_factory_for
    from .policy import Policy
    from .replay import Replayer

    s = _settings()
    if scorer:
        s = s.model_copy(update={"worker": s.worker.model_copy(update={"scorer": scorer})})
    if stream is not None and stream not in ("access", "api", "telemetry"):
        raise UebaError(f"--stream must be access, api or telemetry, not {stream!r}")
    pol = Policy.load(policy or s.worker.policy_file)
    rp = Replayer(scorer_factory_for(s), policy=pol, min_score=s.worker.min_score, max_event_bytes=s.worker.max_event_bytes)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,} events"), TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("replaying", total=None)
        stats = rp.run(list(files), stream=stream, progress=lambda n: bar.advance(task, n))
    rp.write(output, risk_out=risk_output, namespace=s.search.namespace)
    import orjson

    out.print_json(orjson.dumps(stats.as_dict()).decode())


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
