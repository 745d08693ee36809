"""Synthetic traffic of a cloud AI platform, with labelled attacks injected.

Three ECS streams (see :mod:`streams.events`): ``access`` (people and service
accounts logging in and touching datasets, model artifacts, secrets, buckets,
internal endpoints), ``api`` (tenants' API keys calling classical models and
LLMs) and ``telemetry`` (per-inference model telemetry and ``model-deploy``
registry events). Output is seeded and deterministic, in timestamp order, and
streamed hour by hour, so its size is limited only by disk.

>>> from streams.simulate import SimulationConfig, simulate
>>> cfg = SimulationConfig.preset("tiny", duration="2h", scenarios=())
>>> kind, doc = next(simulate(cfg))
>>> kind in ("access", "api", "telemetry") and doc["event"]["dataset"] == "ueba." + kind
True
"""

from .config import SimulationConfig, parse_duration
from .engine import (
    DATASETS,
    ProduceError,
    ProduceReport,
    Simulation,
    TokenBucket,
    kind_of,
    labels,
    produce,
    simulate,
    simulate_labelled,
    write_jsonl,
)
from .scenarios import SCENARIOS, ScenarioSpec, resolve_scenarios

__all__ = [
    "DATASETS",
    "SCENARIOS",
    "ProduceError",
    "ProduceReport",
    "ScenarioSpec",
    "Simulation",
    "SimulationConfig",
    "TokenBucket",
    "kind_of",
    "labels",
    "parse_duration",
    "produce",
    "resolve_scenarios",
    "simulate",
    "simulate_labelled",
    "write_jsonl",
]
