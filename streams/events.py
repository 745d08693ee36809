"""The event model: three ECS-shaped input streams, validated.

Every input is one JSON object per Kafka message, nested the way Elastic
Agent, Filebeat and Vector ship ECS (dotted keys such as ``"user.name"`` are
accepted too and expanded). Standard fields keep their ECS types (see
``shared/ecs/ecs_flat-9.4.0.yml``); what ECS has no field for lives under the
one custom namespace ``ueba.*``.

Streams and their identity (the Kafka message key):

``access``     logins and reads/downloads of datasets, model artifacts, secrets
               and buckets.  Identity: ``user.name`` (else ``user.id``).
``api``        calls to model inference APIs.  Identity: ``ueba.api_key.id``
               (else ``user.name``).  LLM calls carry ECS ``gen_ai.*``.
``telemetry``  per model/version inference telemetry and registry events
               (``event.action: model-deploy``).  Identity: ``ueba.model.id``.

``parse_event`` is the single entry point used by the stream, replay and the
tests: raw bytes in, a validated :class:`Event` out, or an :class:`EventError`
whose ``reason`` goes to the dead-letter topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
import inspect
import socket
from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import Meta

from detectors.flat import flatten, has_dotted_keys

from .errors import EventError

StreamKind = Literal["access", "api", "telemetry"]
STREAM_KINDS: tuple[str, ...] = ("access", "api", "telemetry")

# Field values an attacker controls are bounded so per-key state stays bounded.
Id = Annotated[str, Meta(min_length=1, max_length=512)]
Text = Annotated[str, Meta(max_length=65_536)]
NonNeg = Annotated[int, Meta(ge=0)]
Prob = Annotated[float, Meta(ge=0.0, le=1.0)]


class _Ecs(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base for ECS objects. Unknown ECS fields are allowed (kept in ``Event.doc``)."""


class GeoPoint(_Ecs):
    lat: Annotated[float, Meta(ge=-90, le=90)]
    lon: Annotated[float, Meta(ge=-180, le=180)]


class Geo(_Ecs):
    country_iso_code: Annotated[str, Meta(max_length=8)] | None = None
    country_name: str | None = None
    city_name: str | None = None
    location: GeoPoint | None = None


class AutonomousSystem(_Ecs):
    number: NonNeg | None = None


class Source(_Ecs):
    ip: Annotated[str, Meta(max_length=64)] | None = None
    geo: Geo | None = None
    as_: AutonomousSystem | None = msgspec.field(default=None, name="as")


class Group(_Ecs):
    name: str | None = None
    id: str | None = None


class User(_Ecs):
    name: Id | None = None
    id: Id | None = None
    roles: Annotated[list[str], Meta(max_length=64)] | None = None
    group: Group | None = None


EventKind = Literal["event", "alert", "metric", "state", "enrichment", "pipeline_error", "signal", "asset"]


class EventMeta(_Ecs):
    kind: EventKind = "event"
    category: list[str] | None = None
    type: list[str] | None = None
    action: Annotated[str, Meta(max_length=256)] | None = None
    outcome: Literal["success", "failure", "unknown"] | None = None
    #: ECS: nanoseconds.
    duration: NonNeg | None = None
    dataset: str | None = None
    id: Annotated[str, Meta(max_length=512)] | None = None


class Organization(_Ecs):
    id: Id | None = None
    name: str | None = None


class UserAgent(_Ecs):
    original: Annotated[str, Meta(max_length=4096)] | None = None


class HttpBody(_Ecs):
    bytes: NonNeg | None = None


class HttpRequest(_Ecs):
    method: str | None = None
    body: HttpBody | None = None


class HttpResponse(_Ecs):
    status_code: Annotated[int, Meta(ge=100, le=599)] | None = None
    body: HttpBody | None = None


class Http(_Ecs):
    request: HttpRequest | None = None
    response: HttpResponse | None = None


class Url(_Ecs):
    path: Annotated[str, Meta(max_length=4096)] | None = None
    full: Annotated[str, Meta(max_length=8192)] | None = None
    domain: str | None = None


class GenAiUsage(_Ecs):
    input_tokens: NonNeg | None = None
    output_tokens: NonNeg | None = None


class GenAiRequest(_Ecs):
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None


class GenAiResponse(_Ecs):
    model: str | None = None
    finish_reasons: list[str] | None = None


class GenAiOperation(_Ecs):
    name: str | None = None


class GenAi(_Ecs):
    system: str | None = None
    operation: GenAiOperation | None = None
    request: GenAiRequest | None = None
    response: GenAiResponse | None = None
    usage: GenAiUsage | None = None


# --- the custom namespace -------------------------------------------------


class UebaIdentity(_Ecs):
    """What kind of identity acted; drives peer groups and criticality."""

    type: Literal["human", "service_account", "api_key", "tenant", "model"] | None = None
    peer_group: Annotated[str, Meta(max_length=256)] | None = None


class UebaResource(_Ecs):
    """The resource an access event touched.

    ``owner`` is the owner the platform's catalog or secret store records for
    the resource: an identity (compare with ``user.name``) or, usually, the
    owning team or group (compare with the actor's ``user.group.name``).
    """

    type: Literal["dataset", "model_artifact", "secret", "bucket", "notebook", "endpoint", "other"] | None = None
    id: Annotated[str, Meta(max_length=4096)] | None = None
    owner: str | None = None
    sensitivity: Literal["public", "internal", "confidential", "restricted"] | None = None


class UebaChange(_Ecs):
    """Change-management context the platform stamps on access to governed
    resources (training datasets, model artifacts): whether the event falls
    inside a change window the owning team declared, and the approved change,
    incident or just-in-time access request that covers it, if any.

    Absent when the platform does not stamp it; rules then make no claim.
    """

    #: The event time lies in a declared change window of the resource's owning team.
    in_window: bool | None = None
    #: Name of that declared window (e.g. ``nlp-weekdays``).
    window: Annotated[str, Meta(max_length=256)] | None = None
    #: Approved change, incident or JIT access request covering the action (e.g. ``CHG0031337``).
    id: Annotated[str, Meta(max_length=256)] | None = None


class UebaTransfer(_Ecs):
    """How much an access event moved."""

    bytes: NonNeg | None = None
    rows: NonNeg | None = None
    objects: NonNeg | None = None


class UebaApiKey(_Ecs):
    id: Id | None = None
    owner: str | None = None


class UebaModel(_Ecs):
    id: Id | None = None
    version: Annotated[str, Meta(max_length=256)] | None = None
    artifact_hash: Annotated[str, Meta(max_length=256)] | None = None
    registered: bool | None = None


class UebaInput(_Ecs):
    """Optional fixed-length fingerprint of the inference input (e.g. a random
    projection of the feature vector or embedding), for extraction analysis.
    Never raw data."""

    fingerprint: Annotated[list[float], Meta(max_length=256)] | None = None


class UebaGenAi(_Ecs):
    """LLM content ECS has no field for. Prompts may be truncated upstream."""

    prompt: Text | None = None
    system_prompt: Text | None = None
    guardrail_action: str | None = None


class UebaTelemetry(_Ecs):
    """Model telemetry: one inference (prediction/confidence/features) or a
    window summary (count, error rate, histograms)."""

    prediction: str | float | None = None
    confidence: Prob | None = None
    features: Annotated[dict[str, float], Meta(max_length=512)] | None = None
    error: bool | None = None
    error_rate: Prob | None = None
    count: NonNeg | None = None
    caller_api_key: str | None = None
    histograms: Annotated[dict[str, list[float]], Meta(max_length=256)] | None = None


class Ueba(_Ecs):
    identity: UebaIdentity | None = None
    resource: UebaResource | None = None
    transfer: UebaTransfer | None = None
    api_key: UebaApiKey | None = None
    model: UebaModel | None = None
    input: UebaInput | None = None
    gen_ai: UebaGenAi | None = None
    telemetry: UebaTelemetry | None = None
    change: UebaChange | None = None
    deployment_id: str | None = None


class EcsEvent(_Ecs):
    """Fields common to all three streams."""

    timestamp: datetime = msgspec.field(name="@timestamp")
    event: EventMeta | None = None
    user: User | None = None
    source: Source | None = None
    organization: Organization | None = None
    user_agent: UserAgent | None = None
    ueba: Ueba | None = None
    tags: list[str] | None = None
    message: Text | None = None


class AccessEvent(EcsEvent):
    """A login, or a read/download/list/write of a dataset, model artifact, secret or bucket."""


class ApiCallEvent(EcsEvent):
    """One call to a model inference API (classical or LLM)."""

    url: Url | None = None
    http: Http | None = None
    gen_ai: GenAi | None = None


class TelemetryEvent(EcsEvent):
    """Telemetry of one model/version, or a registry event (model-deploy)."""


MODELS: dict[str, type[EcsEvent]] = {
    "access": AccessEvent,
    "api": ApiCallEvent,
    "telemetry": TelemetryEvent,
}


@dataclass(slots=True)
class Event:
    """A validated input event.

    ``doc`` is the nested ECS document (as received, dotted keys expanded);
    ``flat`` the same with dotted keys (``{"user.name": ...}``), the view
    rules and detectors read; ``ts`` seconds since the epoch (UTC).
    """

    kind: str
    identity: str
    ts: float
    doc: dict[str, Any]
    flat: dict[str, Any]

    def get(self, field: str, default: Any = None) -> Any:
        return self.flat.get(field, default)


def set_dotted(doc: dict[str, Any], dotted: str, value: Any) -> None:
    """``doc["a"]["b"] = value`` for ``"a.b"``, creating objects on the way;
    a dict value is merged into an object already there."""
    parts = dotted.split(".")
    cur = doc
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    last = parts[-1]
    if isinstance(value, dict) and isinstance(cur.get(last), dict):
        cur[last].update(value)
    else:
        cur[last] = value


def expand_dotted(obj: dict[str, Any]) -> dict[str, Any]:
    """Turn ``{"user.name": "a"}`` into ``{"user": {"name": "a"}}`` (recursively).

    ``@timestamp`` and keys without dots are kept as they are.
    """
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            value = expand_dotted(value)
        if "." in key and not key.startswith("@"):
            set_dotted(out, key, value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


def identity_of(kind: str, flat: dict[str, Any]) -> str | None:
    """The entity an event is keyed by (the Kafka message key)."""
    if kind == "access":
        return flat.get("user.name") or flat.get("user.id")
    if kind == "api":
        return flat.get("ueba.api_key.id") or flat.get("user.name") or flat.get("user.id")
    if kind == "telemetry":
        return flat.get("ueba.model.id")
    raise ValueError(f"unknown stream kind {kind!r}")


_IDENTITY_FIELDS = {
    "access": "user.name or user.id",
    "api": "ueba.api_key.id, user.name or user.id",
    "telemetry": "ueba.model.id",
}


def _is_ip(text: str) -> bool:
    # inet_pton is ~10x faster than ipaddress.ip_address on the hot path.
    try:
        socket.inet_pton(socket.AF_INET, text)
        return True
    except OSError:
        try:
            socket.inet_pton(socket.AF_INET6, text)
            return True
        except OSError:
            return False


def _check_ip(model: EcsEvent) -> None:
    src = model.source
    if src is not None and src.ip is not None and not _is_ip(src.ip):
        raise EventError("invalid", f"source.ip: {src.ip[:64]!r} is not an IP address")


def parse_event(kind: str, raw: bytes | str | dict[str, Any], *, max_bytes: int = 262_144) -> Event:
    """Decode and validate one input event of stream ``kind``.

    Raises :class:`EventError` with a reason code for anything that cannot be
    accepted; never returns a partially valid event.
    """
    model_type = MODELS.get(kind)
    if model_type is None:
        raise EventError("unknown_stream", f"stream kind {kind!r} is not one of {', '.join(STREAM_KINDS)}")
    if isinstance(raw, (bytes, str)):
        size = len(raw)
        if size > max_bytes:
            raise EventError("oversized", f"event is {size} bytes, limit is {max_bytes}")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise EventError("not_json", f"value is not valid JSON ({exc})") from None
    else:
        obj = raw
    if not isinstance(obj, dict):
        raise EventError("not_object", f"JSON value is a {type(obj).__name__}, expected an object")
    if "@timestamp" not in obj:
        raise EventError("missing_timestamp", "field @timestamp is required")
    doc = expand_dotted(obj) if has_dotted_keys(obj) else obj
    try:
        model = msgspec.convert(doc, model_type, strict=False)
    except msgspec.ValidationError as exc:
        raise EventError("invalid", str(exc)) from None
    _check_ip(model)
    ts_dt = model.timestamp
    if ts_dt.tzinfo is None:
        ts_dt = ts_dt.replace(tzinfo=timezone.utc)
    flat = flatten(doc)
    ident = identity_of(kind, flat)
    if not ident:
        raise EventError("missing_identity", f"{kind} events need {_IDENTITY_FIELDS[kind]}")
    if not isinstance(ident, str):
        raise EventError("invalid", f"identity field must be a string, got {type(ident).__name__}")
    return Event(kind=kind, identity=ident, ts=ts_dt.timestamp(), doc=doc, flat=flat)


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema (draft 2020-12) per stream, generated from the models.

    Descriptions (the models' docstrings) are cleaned with ``inspect.cleandoc``:
    msgspec 0.23 does so itself and earlier versions kept the indentation, and
    the schema files must not depend on which one is installed."""
    return {k: _clean_descriptions(msgspec.json.schema(m)) for k, m in MODELS.items()}


def _clean_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _clean_descriptions(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_clean_descriptions(v) for v in node]
    return node
