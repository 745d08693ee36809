"""Alerts -> SOAR webhooks: targets file, payloads, signatures, delivery.

Targets come from a strict YAML file (:func:`load_targets`): unknown keys,
duplicate keys and duplicate target names are errors that name the file and
line. Each target receives the alerts its filters select, rendered in one of
three formats:

``standard``
    Standard Webhooks JSON: ``{"type": "ueba.alert", "timestamp": <ISO>,
    "data": <ECS alert document>}``.
``thehive``
    A TheHive 5 alert (``POST /api/v1/alert``) with observables.
``xsoar``
    A Cortex XSOAR incident for the Generic Webhook integration.

Every request carries the Standard Webhooks headers (``webhook-id`` = alert
id, ``webhook-timestamp``, ``webhook-signature``) and GitHub's
``X-Hub-Signature-256`` when the target has a secret, so any receiver can
verify it with off-the-shelf code.

:class:`WebhookDispatcher` never blocks the stream: :meth:`~WebhookDispatcher.submit`
only appends to a bounded in-memory queue served by background threads.
Failed attempts are retried with exponential backoff and full jitter
(``Retry-After`` wins on 429/503). A delivery that cannot be made is never
dropped silently: it is handed to the caller's ``on_dead`` callback (the
dead-letter topic, see :func:`kafka_dead_letter`) with a reason:

``webhook_queue_full``  the queue was full when the alert was submitted;
``webhook_failed``      the last attempt failed, or the target answered a
                        permanent error (4xx other than 408/425/429, 3xx);
``webhook_target_gone`` the target answered 410 Gone once, so it is disabled
                        for the life of the dispatcher;
``webhook_closed``      :meth:`~WebhookDispatcher.close` timed out before the
                        delivery was made.

:class:`WebhookRelay` makes delivery at least once across crashes: it reads
the alerts topic with its own consumer group and commits an alert's offset
only once the alert and every earlier one were delivered, filtered out or
dead-lettered. It bounds what it holds by pausing its partitions (the topic
is the queue), so it never uses ``webhook_queue_full``, and on stop it
leaves undelivered alerts uncommitted for the next run instead of writing
``webhook_closed`` dead letters. ``ueba sink`` runs it beside the search
sink; ``ueba webhooks-relay`` runs it alone.

Secrets (HMAC secrets, Authorization values, URL userinfo and query strings)
never reach logs or dead-letter details.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import itertools
import logging
import random
import re
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Protocol, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from standardwebhooks.webhooks import Webhook

from . import __version__
from .alerts import SEVERITY_LEVELS, Alert
from .errors import ConfigError

log = logging.getLogger("ueba.webhooks")

EVENT_TYPE = "ueba.alert"
USER_AGENT = f"ai-ueba-webhooks/{__version__}"

#: Dead-letter reasons (the ``ueba.dlq.reason`` header).
REASON_QUEUE_FULL = "webhook_queue_full"
REASON_FAILED = "webhook_failed"
REASON_GONE = "webhook_target_gone"
REASON_CLOSED = "webhook_closed"

#: Extra dead-letter headers naming the target.
DLQ_WEBHOOK_TARGET = "ueba.dlq.webhook.target"
DLQ_WEBHOOK_FORMAT = "ueba.dlq.webhook.format"

_SEVERITY_BY_NAME = {name: number for name, number, _ in SEVERITY_LEVELS}
_SEVERITY_NUMBERS = sorted(_SEVERITY_BY_NAME.values())  # 21, 47, 73, 99
#: ECS event.severity -> TheHive 1 (low) .. 4 (critical); XSOAR uses the same 1..4.
_SEVERITY_1_TO_4 = {21: 1, 47: 2, 73: 3, 99: 4}
_RETRYABLE_STATUS = frozenset({408, 425, 429})
_RETRY_AFTER_STATUS = frozenset({429, 503})


# --------------------------------------------------------------------------- errors


class WebhookConfigError(ConfigError):
    """The targets file is missing, not YAML, or does not validate.

    ``problems`` holds every problem found, each as ``(line or None, message)``.
    """

    def __init__(self, path: Path | str, problems: Sequence[tuple[int | None, str]]) -> None:
        self.path = Path(path)
        self.problems = list(problems)
        super().__init__(self.diagnostics())

    def diagnostics(self) -> str:
        lines = [f"invalid webhook targets file {self.path}:"]
        for line, msg in self.problems:
            where = f"{self.path}:{line}" if line else str(self.path)
            lines.append(f"  {where}: {msg}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- targets


class WebhookFormat(str, Enum):
    STANDARD = "standard"
    THEHIVE = "thehive"
    XSOAR = "xsoar"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _severity_number(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("must be 21, 47, 73, 99 or low/medium/high/critical")
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _SEVERITY_BY_NAME:
            return _SEVERITY_BY_NAME[v]
        if v.isdigit():
            value = int(v)
    if isinstance(value, int) and value in _SEVERITY_NUMBERS:
        return value
    raise ValueError("must be 21, 47, 73, 99 or low/medium/high/critical")


class TargetFilters(_Strict):
    """Which alerts a target receives. Empty lists select everything.

    ``rules`` match a rule id (``ueba-impossible_travel``, a Sigma rule id),
    a rule name, an alert source (``detector:impossible_travel``) or a bare
    detector name; ``entities`` match an entity id (``alice``) or
    ``type:id`` (``user:alice``).
    """

    min_severity: int = 21
    rules: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()

    @field_validator("min_severity", mode="before")
    @classmethod
    def _sev(cls, v: Any) -> int:
        return _severity_number(v)

    @field_validator("rules", "entities")
    @classmethod
    def _nonempty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s.strip() for s in v):
            raise ValueError("entries must be non-empty strings")
        return v

    def matches(self, alert: Alert) -> bool:
        if alert.severity < self.min_severity:
            return False
        if self.rules:
            detector = alert.source.split(":", 1)[1] if ":" in alert.source else alert.source
            names = {alert.rule_id, alert.rule_name, alert.source, detector}
            if names.isdisjoint(self.rules):
                return False
        if self.entities:
            if alert.entity not in self.entities and f"{alert.entity_type}:{alert.entity}" not in self.entities:
                return False
        return True


def _read_secret_file(path: Path, what: str) -> SecretStr:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise ValueError(f"{what}: {path} is empty")
    return SecretStr(value)


class WebhookTarget(_Strict):
    """One receiver.

    ``secret`` signs every request (Standard Webhooks + ``X-Hub-Signature-256``);
    a ``whsec_<base64>`` secret follows the Standard Webhooks convention (the
    HMAC key is the decoded bytes; GitHub-style signatures still use the whole
    string), any other string is used as UTF-8 bytes for both. ``authorization``
    is sent verbatim as the ``Authorization`` header (TheHive API key:
    ``Bearer <key>``; XSOAR Generic Webhook: ``Basic ...``). Each can instead be
    read from a ``*_file`` (relative paths are relative to the targets file).
    ``timeout`` is seconds per attempt; ``max_attempts`` counts the first one.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    url: str
    format: WebhookFormat = WebhookFormat.STANDARD
    secret: SecretStr | None = None
    secret_file: Path | None = None
    authorization: SecretStr | None = None
    authorization_file: Path | None = None
    filters: TargetFilters = TargetFilters()
    timeout: float = Field(10.0, gt=0, le=300)
    max_attempts: int = Field(5, ge=1, le=50)
    enabled: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # The value itself may hold credentials: do not echo it.
            raise ValueError("must be an absolute http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _secrets(self) -> "WebhookTarget":
        for name in ("secret", "authorization"):
            value, path = getattr(self, name), getattr(self, f"{name}_file")
            if value is not None and path is not None:
                raise ValueError(f"set {name} or {name}_file, not both")
            if value is None and path is not None:
                object.__setattr__(self, name, _read_secret_file(path, f"{name}_file"))
        if self.secret is not None:
            _hmac_keys(self.secret)  # a malformed whsec_ secret fails at load time
        if self.secret is None and self.authorization is None:
            raise ValueError("needs a secret (signing) or an authorization header; unauthenticated targets are refused")
        return self

    @property
    def safe_url(self) -> str:
        return safe_url(self.url)

    def __repr__(self) -> str:  # never the URL's userinfo or query
        return f"WebhookTarget(name={self.name!r}, url={self.safe_url!r}, format={self.format.value!r})"

    __str__ = __repr__


class WebhooksConfig(_Strict):
    """The targets file. Delay settings are seconds."""

    targets: tuple[WebhookTarget, ...] = ()
    #: Deliveries held in memory (queued, waiting for a retry or in flight).
    queue_size: int = Field(1000, ge=1, le=1_000_000)
    #: Delivery threads (HTTP requests in flight at once).
    workers: int = Field(2, ge=1, le=32)
    #: Backoff before retry n (n >= 1) is uniform in [0, min(backoff_max, backoff_initial * 2**(n-1))].
    backoff_initial: float = Field(0.5, gt=0)
    backoff_max: float = Field(60.0, gt=0)
    #: Upper bound on an honoured Retry-After.
    retry_after_max: float = Field(300.0, ge=0)
    #: Where a new relay consumer group starts on the alerts topic: ``latest``
    #: (alerts raised from now on) or ``earliest`` (everything still retained).
    #: Once the group has committed offsets it always resumes from them.
    start_at: Literal["latest", "earliest"] = "latest"

    @model_validator(mode="after")
    def _unique(self) -> "WebhooksConfig":
        seen: set[str] = set()
        for t in self.targets:
            if t.name in seen:
                raise ValueError(f"duplicate target name {t.name!r}")
            seen.add(t.name)
        return self

    def policy(self) -> "RetryPolicy":
        return RetryPolicy(self.backoff_initial, self.backoff_max, self.retry_after_max)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode):
                out[path + (k.value,)] = k.start_mark.line + 1
                _lines(v, path + (k.value,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _lines(v, path + (i,), out)


def _resolve_files(data: Any, base: Path) -> None:
    if not isinstance(data, dict):
        return
    targets = data.get("targets")
    if not isinstance(targets, list):
        return
    for t in targets:
        if isinstance(t, dict):
            for key in ("secret_file", "authorization_file"):
                if isinstance(t.get(key), str) and not Path(t[key]).is_absolute():
                    t[key] = str(base / t[key])


def parse_targets(text: str, source: Path | str = "<string>") -> WebhooksConfig:
    """Validate a targets document; raises :class:`WebhookConfigError` listing every problem."""
    source = Path(source)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise WebhookConfigError(source, [(mark.line + 1 if mark else None, exc.problem or str(exc))]) from None
    except yaml.YAMLError as exc:
        raise WebhookConfigError(source, [(None, str(exc))]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebhookConfigError(source, [(1, "top level must be a mapping with a 'targets' list")])
    lines: dict[tuple[Any, ...], int] = {}
    if root is not None:
        _lines(root, (), lines)
    _resolve_files(data, source.parent)
    try:
        return WebhooksConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for e in exc.errors(include_input=False, include_url=False):
            loc = tuple(e["loc"])
            # Nearest enclosing node that exists in the file (a missing key has no line).
            line = next((lines[loc[:i]] for i in range(len(loc), -1, -1) if loc[:i] in lines), None)
            where = ".".join(str(p) for p in loc) or "(top level)"
            msg = e["msg"].removeprefix("Value error, ")
            problems.append((line, f"{where}: {msg}"))
        raise WebhookConfigError(source, problems) from None


def load_targets(path: Path | str) -> WebhooksConfig:
    """Read and validate the targets file at ``path`` (see :class:`WebhooksConfig`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise WebhookConfigError(path, [(None, f"cannot read: {exc.strerror}")]) from None
    return parse_targets(text, path)


# --------------------------------------------------------------------------- redaction


def safe_url(url: str) -> str:
    """``url`` without userinfo; a query string is replaced by ``?...`` (it may hold a token)."""
    try:
        p = urlsplit(url)
        host = p.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{p.port}" if p.port else host
        return urlunsplit((p.scheme, netloc, p.path, "..." if p.query else "", ""))
    except ValueError:
        return "<unparseable url>"


def _secret_values(target: WebhookTarget) -> list[str]:
    values = []
    for s in (target.secret, target.authorization):
        if s is not None:
            v = s.get_secret_value()
            values.append(v)
            if v.startswith("whsec_"):
                values.append(v[len("whsec_"):])
            if " " in v:  # "Bearer <token>": the token alone too
                values.append(v.split(" ", 1)[1])
    p = urlsplit(target.url)
    for part in (p.password, p.username, p.query):
        if part:
            values.append(part)
    if p.query or p.username:
        values.append(target.url)
    return [v for v in values if len(v) >= 3]


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret value and any URL userinfo replaced by ``***``."""
    for s in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(s, "***")
    return _USERINFO.sub(r"\1***@", text)


# --------------------------------------------------------------------------- payloads


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def standard_payload(alert: Alert, namespace: str = "default") -> dict[str, Any]:
    """Standard Webhooks event: the ECS alert document under ``data``."""
    return {"type": EVENT_TYPE, "timestamp": _iso(alert.ts), "data": alert.to_ecs(namespace)}


def _md(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        value = orjson.dumps(value, default=str).decode()
    text = str(value).replace("\r", " ").replace("\n", " ")
    return text.replace("|", "\\|")


def alert_markdown(alert: Alert) -> str:
    """Markdown description: the explanation (observed, baseline, peers, window, reason) as a table."""
    expl = alert.explanation or {}
    rows: list[tuple[str, Any]] = [
        ("Entity", f"{alert.entity_type} `{alert.entity}`"),
        ("Score", f"{alert.score:.1f} / 100 ({alert.level})"),
        ("Source", f"{alert.source} (rule `{alert.rule_id}`)"),
    ]
    for key in ("feature", "observed", "baseline", "peers", "window", "reason", "matched"):
        if expl.get(key) is not None:
            rows.append((key.capitalize(), expl[key]))
    if alert.techniques:
        rows.append(("MITRE ATT&CK", ", ".join(alert.techniques)))
    if alert.count > 1:
        rows.append(("Occurrences", alert.count))
    rows.append(("Alert id", f"`{alert.id}`"))
    out = [_md(alert.description), "", "| Field | Value |", "|---|---|"]
    out += [f"| {k} | {_md(v)} |" for k, v in rows]
    if alert.context:
        out += ["", "**Context**", "", "| Field | Value |", "|---|---|"]
        out += [f"| {k} | {_md(v)} |" for k, v in sorted(alert.context.items())]
    return "\n".join(out)


#: context field -> (TheHive dataType, tag)
_OBSERVABLE_FIELDS: tuple[tuple[str, str], ...] = (
    ("source.ip", "ip"),
    ("user.name", "mail-or-other"),
    ("user.id", "other"),
    ("ueba.api_key.id", "other"),
    ("ueba.model.artifact_hash", "hash"),
    ("user_agent.original", "user-agent"),
    ("url.path", "uri_path"),
    ("source.as.number", "autonomous-system"),
)
_ENTITY_TYPES = {"source_ip": ("ip", "source.ip"), "user": ("mail-or-other", "user.name"), "human": ("mail-or-other", "user.name")}


def _observables(alert: Alert) -> list[dict[str, Any]]:
    obs: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()

    def add(data_type: str, value: Any, fieldname: str) -> None:
        if value is None or value == "":
            return
        data = str(value)
        if data_type == "mail-or-other":
            data_type = "mail" if re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", data) else "other"
        if (data_type, data) in seen:
            return
        seen.add((data_type, data))
        obs.append({"dataType": data_type, "data": data, "message": fieldname, "tags": [f"ecs:{fieldname}"]})

    for fieldname, data_type in _OBSERVABLE_FIELDS:
        add(data_type, alert.context.get(fieldname), fieldname)
    dt, fieldname = _ENTITY_TYPES.get(alert.entity_type, ("other", f"ueba.entity.{alert.entity_type}"))
    add(dt, alert.entity, fieldname)
    return obs


def thehive_payload(alert: Alert) -> dict[str, Any]:
    """TheHive 5 alert (``POST /api/v1/alert``); ``sourceRef`` = alert id, so re-sends are recognisable."""
    tags = [*alert.techniques, f"rule:{alert.rule_id}", f"source:{alert.source}", f"entity-type:{alert.entity_type}"]
    return {
        "type": "ai-ueba",
        "source": "ai-ueba",
        "sourceRef": alert.id,
        "title": alert.title,
        "description": alert_markdown(alert),
        "severity": _SEVERITY_1_TO_4.get(alert.severity, 1),
        "date": int(round(alert.ts * 1000)),
        "tags": tags,
        "observables": _observables(alert),
    }


def xsoar_payload(alert: Alert, namespace: str = "default") -> dict[str, Any]:
    """Cortex XSOAR incident (Generic Webhook integration). ``severity`` on
    XSOAR's 1 (low) .. 4 (critical) scale; ``rawJSON`` is the ECS alert
    document as a JSON string, as XSOAR stores it."""
    labels = [
        {"type": "ueba.alert.id", "value": alert.id},
        {"type": "rule.id", "value": alert.rule_id},
        {"type": "rule.name", "value": alert.rule_name},
        {"type": "ueba.alert.source", "value": alert.source},
        {"type": "ueba.entity", "value": f"{alert.entity_type}:{alert.entity}"},
        {"type": "ueba.level", "value": alert.level},
        {"type": "ueba.score", "value": f"{alert.score:.2f}"},
    ]
    labels += [{"type": "threat.technique.id", "value": t} for t in alert.techniques]
    labels += [{"type": k, "value": str(v)} for k, v in sorted(alert.context.items()) if v is not None]
    return {
        "name": alert.title,
        "type": "AI UEBA Alert",
        "severity": _SEVERITY_1_TO_4.get(alert.severity, 1),
        "details": alert_markdown(alert),
        "occurred": _iso(alert.ts),
        "rawJSON": orjson.dumps(alert.to_ecs(namespace), default=str).decode(),
        "labels": labels,
    }


def render(alert: Alert, fmt: WebhookFormat | str, namespace: str = "default") -> bytes:
    """The exact request body for ``alert`` in format ``fmt`` (compact UTF-8 JSON)."""
    fmt = WebhookFormat(fmt)
    if fmt is WebhookFormat.THEHIVE:
        doc = thehive_payload(alert)
    elif fmt is WebhookFormat.XSOAR:
        doc = xsoar_payload(alert, namespace)
    else:
        doc = standard_payload(alert, namespace)
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=str)


# --------------------------------------------------------------------------- signing


def _hmac_keys(secret: SecretStr) -> tuple[bytes, bytes]:
    """(Standard Webhooks key, GitHub-style key) for a secret."""
    raw = secret.get_secret_value()
    if raw.startswith("whsec_"):
        try:
            std = base64.b64decode(raw[len("whsec_"):], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("secret: a whsec_ secret must be base64 after the prefix") from None
        if not std:
            raise ValueError("secret: empty after the whsec_ prefix")
    else:
        std = raw.encode()
    return std, raw.encode()


def sign_headers(body: bytes, msg_id: str, timestamp: int, secret: SecretStr) -> dict[str, str]:
    """Signature headers for one request.

    ``webhook-signature`` is ``v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>``
    (Standard Webhooks, via ``standardwebhooks.Webhook.sign``);
    ``X-Hub-Signature-256`` is ``sha256=<hex HMAC-SHA256(body)>`` keyed with the
    secret string as configured (GitHub, adnanh/webhook's payload-hmac-sha256).
    ``timestamp`` is Unix seconds.
    """
    std_key, raw_key = _hmac_keys(secret)
    sig = Webhook(std_key).sign(msg_id, datetime.fromtimestamp(timestamp, tz=timezone.utc), body.decode("utf-8"))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sig,
        "X-Hub-Signature-256": "sha256=" + hmac.new(raw_key, body, hashlib.sha256).hexdigest(),
    }


def build_request(target: WebhookTarget, alert: Alert, body: bytes, now: float) -> dict[str, str]:
    """All headers of one attempt (signed at send time: receivers reject stale timestamps)."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    if target.secret is not None:
        headers.update(sign_headers(body, alert.id, int(now), target.secret))
    else:
        headers.update({"webhook-id": alert.id, "webhook-timestamp": str(int(now))})
    if target.authorization is not None:
        headers["Authorization"] = target.authorization.get_secret_value()
    return headers


# --------------------------------------------------------------------------- retry policy


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP
    date, relative to ``now`` in Unix seconds); None when absent or unparseable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if re.fullmatch(r"\d+(\.\d*)?", value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": HTTP dates are GMT anyway
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter; ``Retry-After`` on 429/503 wins (capped). Seconds."""

    initial: float = 0.5
    maximum: float = 60.0
    retry_after_max: float = 300.0

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Delay before retry number ``retry`` (1 = the second attempt)."""
        cap = min(self.maximum, self.initial * (2 ** (retry - 1)))
        return rng.uniform(0.0, cap)

    def delay(self, retry: int, status: int | None, retry_after: str | None, now: float, rng: random.Random) -> float:
        if status in _RETRY_AFTER_STATUS:
            ra = parse_retry_after(retry_after, now)
            if ra is not None:
                return min(ra, self.retry_after_max)
        return self.backoff(retry, rng)


def is_retryable(status: int) -> bool:
    return status >= 500 or status in _RETRYABLE_STATUS


# --------------------------------------------------------------------------- dispatcher


class OnDead(Protocol):
    def __call__(self, alert: Alert, target: WebhookTarget, reason: str, detail: str) -> None: ...


@dataclass
class WebhookStats:
    submitted: int = 0
    delivered: int = 0
    attempts: int = 0
    retries: int = 0
    duplicates: int = 0
    #: Deliveries dropped undelivered by ``close(dead_letter_pending=False)`` (re-read from Kafka after a restart).
    abandoned: int = 0
    dead: dict[str, int] = field(default_factory=dict)
    #: Every retry delay scheduled, seconds (the last 1000).
    delays: deque[float] = field(default_factory=lambda: deque(maxlen=1000))

    @property
    def deadlettered(self) -> int:
        return sum(self.dead.values())


class _Ticket:
    """Calls ``on_done`` once every delivery of one submitted alert has finished."""

    __slots__ = ("_left", "_lock", "_on_done")

    def __init__(self, on_done: Callable[[], None]) -> None:
        self._left = 1  # held by submit() until every delivery is queued
        self._lock = threading.Lock()
        self._on_done = on_done

    def add(self) -> None:
        with self._lock:
            self._left += 1

    def release(self) -> None:
        with self._lock:
            self._left -= 1
            done = self._left == 0
        if done:
            try:
                self._on_done()
            except Exception:
                log.exception("webhook completion callback failed")


@dataclass(slots=True)
class _Delivery:
    alert: Alert
    target: WebhookTarget
    body: bytes
    attempt: int = 0
    last: str = ""
    ticket: _Ticket | None = None


class _RedactHttpxUrls(logging.Filter):
    """httpx logs every request URL at INFO; a target URL may carry userinfo or a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(safe_url(str(a)) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


_HTTPX_FILTER = _RedactHttpxUrls()


class WebhookDispatcher:
    """Delivers alerts to webhook targets from background threads.

    ``submit`` is O(targets) and never waits on the network. At most
    ``queue_size`` deliveries are held at once (queued, waiting for a retry or
    in flight); beyond that they are dead-lettered (``webhook_queue_full``).
    ``on_dead(alert, target, reason, detail)`` is called from the submitting
    thread (queue full) or a delivery thread; it must be thread-safe.
    ``clock`` (Unix seconds) stamps signatures and resolves Retry-After dates;
    ``client`` replaces the ``httpx.Client`` (tests inject transports).

    ``submit(alert, on_done=...)`` calls ``on_done()`` once every delivery of
    that alert has *finished*: delivered, or handed to ``on_dead``; at once
    when no target selected it. :class:`WebhookRelay` commits Kafka offsets
    on it. ``close(dead_letter_pending=False)`` drops what is still pending
    without dead-lettering it and without calling ``on_done`` (it is re-read
    from Kafka after a restart).
    """

    def __init__(
        self,
        config: WebhooksConfig,
        on_dead: OnDead,
        *,
        namespace: str = "default",
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        start: bool = True,
    ) -> None:
        self.config = config
        self.targets = tuple(t for t in config.targets if t.enabled)
        self.on_dead = on_dead
        self.namespace = namespace
        self.policy = config.policy()
        self.clock = clock
        self.rng = rng or random.Random()
        self.client = client or httpx.Client(follow_redirects=False, trust_env=False)
        self._own_client = client is None
        logging.getLogger("httpx").addFilter(_HTTPX_FILTER)  # idempotent: same filter object
        self.stats = WebhookStats()
        self._cond = threading.Condition()
        self._ready: deque[_Delivery] = deque()
        self._waiting: list[tuple[float, int, _Delivery]] = []  # (monotonic due, seq, delivery)
        self._seq = itertools.count()
        self._inflight = 0
        self._closing = False
        self._abandon = False
        self._keep_pending = False
        self._gone: set[str] = set()
        self._recent: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._secrets = {t.name: _secret_values(t) for t in config.targets}
        self._threads = [
            threading.Thread(target=self._work, name=f"ueba-webhook-{i}", daemon=True) for i in range(config.workers)
        ]
        if start:
            for th in self._threads:
                th.start()

    # -- public API

    def submit(self, alert: Alert, on_done: Callable[[], None] | None = None) -> int:
        """Queue ``alert`` for every enabled target whose filters select it.

        Returns the number of deliveries queued. A delivery that cannot be
        queued (queue full, target gone, dispatcher closed) goes to ``on_dead``.
        The same (target, alert id) is only queued once per recent 100 000.
        ``on_done`` is called once all of this alert's deliveries finished
        (see the class docstring), possibly before ``submit`` returns.
        """
        ticket = _Ticket(on_done) if on_done is not None else None
        try:
            return self._submit(alert, ticket)
        finally:
            if ticket is not None:
                ticket.release()

    def _submit(self, alert: Alert, ticket: _Ticket | None) -> int:
        queued = 0
        bodies: dict[WebhookFormat, bytes] = {}
        for target in self.targets:
            if not target.filters.matches(alert):
                continue
            key = (target.name, alert.id)
            with self._cond:
                if key in self._recent:
                    self.stats.duplicates += 1
                    continue
                self._remember(key)
                self.stats.submitted += 1
                if target.name in self._gone:
                    reject = (REASON_GONE, f"target {target.name} answered 410 Gone earlier; disabled")
                elif self._closing:
                    reject = (REASON_CLOSED, "dispatcher is closed")
                elif len(self._ready) + len(self._waiting) + self._inflight >= self.config.queue_size:
                    reject = (REASON_QUEUE_FULL, f"webhook queue full ({self.config.queue_size} deliveries held)")
                else:
                    reject = None
            if reject is not None:
                self._dead(alert, target, *reject)
                continue
            body = bodies.get(target.format)
            if body is None:
                body = bodies[target.format] = render(alert, target.format, self.namespace)
            if ticket is not None:
                ticket.add()
            with self._cond:
                self._ready.append(_Delivery(alert, target, body, ticket=ticket))
                self._cond.notify()
            queued += 1
        return queued

    def pending(self) -> int:
        with self._cond:
            return len(self._ready) + len(self._waiting) + self._inflight

    def close(self, timeout: float = 30.0, *, dead_letter_pending: bool = True) -> WebhookStats:
        """Stop accepting alerts and wait up to ``timeout`` seconds for pending
        deliveries (retries included); whatever is left is dead-lettered
        (``webhook_closed``), or with ``dead_letter_pending=False`` dropped
        without a dead letter and without ``on_done`` (counted in
        ``stats.abandoned``): the caller re-reads it from its source."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._keep_pending = not dead_letter_pending
            self._cond.notify_all()
        for th in self._threads:
            if th.is_alive():
                th.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._abandon = True
            left = list(self._ready) + [d for _, _, d in self._waiting]
            self._ready.clear()
            self._waiting.clear()
            self._cond.notify_all()
        for d in left:
            self._end(d, REASON_CLOSED, f"not delivered before close after {d.attempt} attempt(s); {d.last}".rstrip("; "))
        for th in self._threads:
            if th.is_alive():  # an attempt in flight ends within its target's timeout
                th.join(max(0.1, deadline - time.monotonic()))
        if self._own_client:
            self.client.close()
        return self.stats

    def __enter__(self) -> "WebhookDispatcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals

    def _remember(self, key: tuple[str, str]) -> None:
        self._recent[key] = None
        while len(self._recent) > 100_000:
            self._recent.popitem(last=False)

    def _next(self) -> _Delivery | None:
        with self._cond:
            while True:
                if self._abandon:
                    return None
                now = time.monotonic()
                if self._waiting and self._waiting[0][0] <= now:
                    d = heapq.heappop(self._waiting)[2]
                elif self._ready:
                    d = self._ready.popleft()
                elif self._closing and not self._waiting and self._inflight == 0:
                    self._cond.notify_all()
                    return None
                else:
                    timeout = self._waiting[0][0] - now if self._waiting else None
                    self._cond.wait(timeout)
                    continue
                self._inflight += 1
                return d

    def _work(self) -> None:
        while True:
            d = self._next()
            if d is None:
                return
            try:
                self._attempt(d)
            except Exception as exc:  # a bug must not kill the thread and strand deliveries
                log.exception("webhook delivery to %s crashed", d.target.name)
                self._finish(d, REASON_FAILED, self._redact(d.target, f"internal error: {type(exc).__name__}: {exc}"))
            finally:
                with self._cond:
                    self._inflight -= 1
                    self._cond.notify_all()

    def _attempt(self, d: _Delivery) -> None:
        target = d.target
        if target.name in self._gone:
            self._finish(d, REASON_GONE, f"target {target.name} answered 410 Gone earlier; disabled")
            return
        d.attempt += 1
        with self._cond:
            self.stats.attempts += 1
        status: int | None = None
        retry_after: str | None = None
        try:
            headers = build_request(target, d.alert, d.body, self.clock())
            resp = self.client.post(target.url, content=d.body, headers=headers, timeout=target.timeout)
            status = resp.status_code
            retry_after = resp.headers.get("Retry-After")
            snippet = resp.text[:200].strip().replace("\n", " ") if resp.content else ""
            d.last = f"HTTP {status}" + (f": {snippet}" if snippet else "")
        except httpx.HTTPError as exc:
            d.last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        d.last = self._redact(target, d.last)
        if status is not None and 200 <= status < 300:
            with self._cond:
                self.stats.delivered += 1
            log.debug("delivered alert %s to %s (attempt %d)", d.alert.id, target.name, d.attempt)
            self._finish(d)
            return
        if status == 410:
            self._disable(target)
            self._finish(d, REASON_GONE, f"{d.last}; target {target.name} disabled")
            return
        if status is not None and not is_retryable(status):
            self._finish(d, REASON_FAILED, f"{d.last} (permanent, attempt {d.attempt})")
            return
        if d.attempt >= target.max_attempts:
            self._finish(d, REASON_FAILED, f"{d.last} (after {d.attempt} attempt(s))")
            return
        delay = self.policy.delay(d.attempt, status, retry_after, self.clock(), self.rng)
        with self._cond:
            if not self._abandon:
                self.stats.retries += 1
                self.stats.delays.append(delay)
                heapq.heappush(self._waiting, (time.monotonic() + delay, next(self._seq), d))
                self._cond.notify()
                log.info("webhook %s: %s; retry %d in %.2fs", target.name, d.last, d.attempt, delay)
                return
        self._end(d, REASON_CLOSED, f"{d.last} (closed after {d.attempt} attempt(s))")

    def _finish(self, d: _Delivery, reason: str | None = None, detail: str = "") -> None:
        """A delivery is over: delivered (``reason`` None) or dead-lettered.

        When the dead letter itself could not be written, the delivery is not
        finished: ``on_done`` never fires for it, so a relay re-reads it after a
        restart instead of committing past a lost alert."""
        if reason is not None and not self._dead(d.alert, d.target, reason, detail):
            return
        if d.ticket is not None:
            d.ticket.release()

    def _end(self, d: _Delivery, reason: str, detail: str) -> None:
        """A delivery cut short by close(): dead-lettered, or dropped for its source to re-read."""
        if self._keep_pending:
            with self._cond:
                self.stats.abandoned += 1
            log.info("webhook %s: alert %s not delivered before close; left for redelivery", d.target.name, d.alert.id)
            return
        self._finish(d, reason, detail)

    def _disable(self, target: WebhookTarget) -> None:
        with self._cond:
            if target.name in self._gone:
                return
            self._gone.add(target.name)
        log.warning("webhook target %s (%s) answered 410 Gone: disabled until restart", target.name, target.safe_url)

    def _redact(self, target: WebhookTarget, text: str) -> str:
        return redact(text, self._secrets.get(target.name, ()))

    def _dead(self, alert: Alert, target: WebhookTarget, reason: str, detail: str) -> bool:
        """Hand a delivery to ``on_dead``; False when the callback failed."""
        with self._cond:
            self.stats.dead[reason] = self.stats.dead.get(reason, 0) + 1
        detail = self._redact(target, detail)
        log.warning("webhook %s: alert %s dead-lettered (%s): %s", target.name, alert.id, reason, detail)
        try:
            self.on_dead(alert, target, reason, detail)
            return True
        except Exception as exc:
            log.error("webhook dead-letter callback failed for alert %s: %s", alert.id, self._redact(target, str(exc)))
            return False


def kafka_dead_letter(producer: Any, topic: str, source_topic: str, *, metrics: Any = None) -> OnDead:
    """An ``on_dead`` callback writing a :class:`~streams.kafka.DeadLetter`
    (stage ``webhook``, value = the alert's wire JSON, key = ``type:entity``,
    partition/offset -1) plus ``ueba.dlq.webhook.target``/``.format`` headers
    to ``topic`` with a confluent-kafka ``producer`` (thread-safe)."""
    from .kafka import DeadLetter

    def on_dead(alert: Alert, target: WebhookTarget, reason: str, detail: str) -> None:
        value = alert.to_json()
        key = f"{alert.entity_type}:{alert.entity}".encode()
        dl = DeadLetter(value, key, reason, f"{target.name}: {detail}", source_topic, -1, -1, stage="webhook")
        headers = dl.headers() + [(DLQ_WEBHOOK_TARGET, target.name.encode()), (DLQ_WEBHOOK_FORMAT, target.format.value.encode())]
        for _ in range(2):
            try:
                producer.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:  # local queue full: serve delivery reports, then once more
                producer.poll(1.0)
        else:
            raise RuntimeError("producer queue full")
        producer.poll(0)
        if metrics is not None:
            metrics.deadletters.labels(stream="webhook", reason=reason).inc()

    return on_dead


# --------------------------------------------------------------------------- relay


class _Track:
    """Offsets of one partition read by the relay and not yet committed, in order."""

    __slots__ = ("gen", "offsets", "done", "commit_to", "committed")

    def __init__(self, gen: int) -> None:
        self.gen = gen
        self.offsets: deque[int] = deque()
        self.done: set[int] = set()
        #: next offset to commit (all before it finished) and the last one committed
        self.commit_to: int | None = None
        self.committed: int | None = None


@dataclass
class RelayStats:
    consumed: int = 0
    submitted: int = 0
    #: records that need no delivery: suppressed repeats (count > 1) and undecodable records
    skipped: int = 0
    commits: int = 0


class WebhookRelay:
    """The alerts topic -> webhook targets, at least once across crashes and restarts.

    The relay reads the alerts topic with its own consumer group
    (``<app_id>-webhooks``), independently of the search sink: a slow or
    unreachable receiver never holds indexing back, and an engine outage
    does not hold SOAR deliveries back. Each alert goes to a
    :class:`WebhookDispatcher`; a partition's offset is committed only up to
    the first alert whose deliveries have not all *finished* (delivered,
    filtered out, or written to the dead-letter topic, which is flushed
    before the commit). A crash or restart therefore re-sends what was in
    flight; receivers dedupe by ``webhook-id`` = alert id, as Standard
    Webhooks prescribe. On :meth:`stop`, pending deliveries get
    ``drain_timeout`` seconds; what is left is *not* dead-lettered but left
    uncommitted for the next run.

    Memory is bounded: past ``queue_size`` pending deliveries (or
    ``max_tracked`` uncommitted offsets) the relay pauses its partitions and
    only polls to stay in its group; the topic is the queue. Suppressed
    repeats (count > 1) are not re-sent: a SOAR case is opened once per alert.
    A new group starts at ``start_at`` (default ``latest``) and commits that
    position at once, so alerts raised while it is down later are not skipped.
    """

    def __init__(
        self,
        settings: Any,
        config: WebhooksConfig,
        *,
        group_id: str | None = None,
        client: httpx.Client | None = None,
        commit_interval: float = 1.0,
        drain_timeout: float = 10.0,
        max_tracked: int = 100_000,
    ) -> None:
        from confluent_kafka import Consumer

        from .kafka import producer as make_producer
        from .metrics import METRICS

        self.settings = settings
        self.config = config
        self.topic = settings.topics.alerts
        self.group_id = group_id or f"{settings.worker.app_id}-webhooks"
        self.commit_interval = commit_interval
        self.drain_timeout = drain_timeout
        self.max_tracked = max_tracked
        conf = settings.kafka.confluent_config()
        conf.update(
            {
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": config.start_at,
                "enable.partition.eof": False,
            }
        )
        self.consumer = Consumer(conf)
        self.producer = make_producer(settings)
        self._to_dlq = kafka_dead_letter(self.producer, settings.topics.deadletter, self.topic, metrics=METRICS)
        # The relay bounds what it holds by pausing its partitions, so the
        # dispatcher's own queue never overflows into webhook_queue_full.
        self.dispatcher = WebhookDispatcher(
            config.model_copy(update={"queue_size": 1_000_000}), self._to_dlq, namespace=settings.search.namespace, client=client
        )
        self.stats = RelayStats()
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._tracks: dict[tuple[str, int], _Track] = {}
        self._gens: dict[tuple[str, int], int] = {}
        self._tracked = 0
        self._paused: list[Any] = []
        #: partitions of a new group whose start position is not committed yet
        self._unanchored: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> "WebhookRelay":
        self._thread = threading.Thread(target=self._main, name="ueba-webhook-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> RelayStats:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.drain_timeout + 30)
        return self.stats

    def _main(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # logged; the sink beside it keeps running
            self.error = exc
            log.exception("webhook relay stopped on an error; deliveries resume from the last commit on restart")

    def run(self) -> RelayStats:
        """Consume and deliver until :meth:`stop`."""
        from confluent_kafka import KafkaException

        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        next_commit = time.monotonic() + self.commit_interval
        try:
            while not self._stop.is_set():
                if self._full():
                    self._pause()
                    msgs = self.consumer.consume(100, timeout=0.2)  # keeps the group membership
                else:
                    self._resume()
                    msgs = self.consumer.consume(500, timeout=0.2)
                for m in msgs:
                    if m.error() is None:
                        self._take(m)
                if time.monotonic() >= next_commit:
                    if self._unanchored:
                        self._anchor()
                    self._commit()
                    next_commit = time.monotonic() + self.commit_interval
        finally:
            stats = self.dispatcher.close(self.drain_timeout, dead_letter_pending=False)
            try:
                self._commit()
            finally:
                try:
                    self.consumer.close()
                except (KafkaException, RuntimeError) as exc:
                    log.warning("closing the webhook relay consumer: %s", exc)
                self.producer.flush(10)
            if stats.abandoned:
                log.info("webhook relay stopped with %d delivery(ies) pending: re-sent after restart", stats.abandoned)
        return self.stats

    # -- consuming

    def _full(self) -> bool:
        return self.dispatcher.pending() + len(self.dispatcher.targets) > self.config.queue_size or self._tracked >= self.max_tracked

    def _pause(self) -> None:
        if self._paused:
            return
        parts = self.consumer.assignment()
        if parts:
            self.consumer.pause(parts)
            self._paused = list(parts)

    def _resume(self) -> None:
        if self._paused:
            self.consumer.resume(self._paused)
            self._paused = []

    def _take(self, m: Any) -> None:
        k = (m.topic(), m.partition())
        off = m.offset()
        with self._lock:
            tr = self._tracks.get(k)
            if tr is None:
                tr = self._tracks[k] = _Track(self._gens.setdefault(k, 0))
            tr.offsets.append(off)
            self._tracked += 1
            gen = tr.gen
        self.stats.consumed += 1
        try:
            alert = Alert.from_json(m.value())
        except Exception:
            alert = None  # the search sink dead-letters undecodable records
        if alert is None or alert.count > 1:
            self.stats.skipped += 1
            self._done(k, gen, off)
            return
        self.stats.submitted += 1
        self.dispatcher.submit(alert, on_done=lambda: self._done(k, gen, off))

    def _done(self, k: tuple[str, int], gen: int, off: int) -> None:
        with self._lock:
            tr = self._tracks.get(k)
            if tr is not None and tr.gen == gen:
                tr.done.add(off)

    def _commit(self) -> None:
        """Commit, per partition, the offset after the last alert whose predecessors all finished."""
        from confluent_kafka import KafkaException, TopicPartition

        with self._lock:
            want: dict[tuple[str, int], int] = {}
            for k, tr in self._tracks.items():
                while tr.offsets and tr.offsets[0] in tr.done:
                    last = tr.offsets.popleft()
                    tr.done.discard(last)
                    self._tracked -= 1
                    tr.commit_to = last + 1
                if tr.commit_to is not None and tr.commit_to != tr.committed:
                    want[k] = tr.commit_to
        if not want:
            return
        # A dead letter stands in for a delivery: it is durable before the offset moves.
        if self.producer.flush(10) > 0:
            log.warning("dead-letter topic not acknowledging: webhook offsets held")
            return
        try:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in want.items()], asynchronous=False)
        except KafkaException as exc:
            log.warning("webhook relay offset commit failed (retried; a restart re-sends, receivers dedupe): %s", exc)
            return
        self.stats.commits += 1
        with self._lock:
            for k, o in want.items():
                tr = self._tracks.get(k)
                if tr is not None:
                    tr.committed = o

    # -- rebalances

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        with self._lock:
            for tp in partitions:
                k = (tp.topic, tp.partition)
                self._gens[k] = self._gens.get(k, 0) + 1
                self._tracks[k] = _Track(self._gens[k])
        if self.config.start_at != "latest" or not partitions:
            return
        # A new group starts at the end of the topic, and says so at once: if it
        # stopped before its first delivery, it must not skip what came meanwhile.
        # Right after a topic is created the broker may not know its leaders yet:
        # retry a little, else anchor from the main loop once positions are known.
        for attempt in range(4):
            try:
                committed = consumer.committed(partitions, timeout=10)
                fresh = [tp for tp in committed if tp.offset < 0]
                if not fresh:
                    return
                start = []
                for tp in fresh:
                    _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
                    start.append(TopicPartition(tp.topic, tp.partition, high))
                consumer.assign([tp for tp in committed if tp.offset >= 0] + start)
                consumer.commit(offsets=start, asynchronous=False)
                log.info("webhook relay group %s starts at the end of %s", self.group_id, self.topic)
                return
            except (KafkaException, RuntimeError) as exc:
                if attempt == 3:
                    log.warning("webhook relay: start offsets not known yet (%s); auto.offset.reset=latest applies, "
                                "committed once known", exc)
                    with self._lock:
                        self._unanchored.update((tp.topic, tp.partition) for tp in partitions)
                    return
                time.sleep(0.5 * 2**attempt)

    def _anchor(self) -> None:
        """Commit the start position of partitions whose first assignment could not do it."""
        from confluent_kafka import KafkaException, TopicPartition

        with self._lock:
            keys = [k for k in self._unanchored if k in self._tracks and not self._tracks[k].offsets and self._tracks[k].commit_to is None]
            self._unanchored.intersection_update(self._tracks)
        if not keys:
            return
        try:
            pos = [tp for tp in self.consumer.position([TopicPartition(t, p) for t, p in keys]) if tp.offset >= 0]
            if pos:
                self.consumer.commit(offsets=pos, asynchronous=False)
        except KafkaException as exc:
            log.debug("webhook relay: anchoring start offsets later: %s", exc)
            return
        with self._lock:
            for tp in pos:
                self._unanchored.discard((tp.topic, tp.partition))
                tr = self._tracks.get((tp.topic, tp.partition))
                if tr is not None and tr.commit_to is None:
                    tr.committed = tp.offset

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._commit()
        with self._lock:
            for tp in partitions:
                k = (tp.topic, tp.partition)
                self._gens[k] = self._gens.get(k, 0) + 1
                tr = self._tracks.pop(k, None)
                if tr is not None:
                    self._tracked -= len(tr.offsets)
        self._paused = [tp for tp in self._paused if (tp.topic, tp.partition) not in {(p.topic, p.partition) for p in partitions}]


def run_relay(settings: Any) -> None:
    """``ueba webhooks-relay``: the relay alone, until SIGINT/SIGTERM."""
    import signal

    relay = WebhookRelay(settings, load_targets(settings.worker.webhooks_file))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: relay.stop(timeout=0))
    stats = relay.run()
    log.info("webhook relay stopped: %s", stats)
