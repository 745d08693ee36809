"""Elasticsearch and OpenSearch through one document-building and bulk path.

* :func:`make_client` builds the official client for the configured engine
  (``elasticsearch`` 8.x for Elastic deployments, ``opensearch-py`` for
  OpenSearch) with TLS and API-key or basic auth.
* :func:`install_templates` installs component and index templates for the
  alert and risk data streams idempotently (``ueba setup``); ``@custom``
  component templates are created empty only when missing, so users' own
  mappings survive.
* :class:`BulkWriter` writes documents with ``_id`` = alert id and
  ``op_type: create`` (a retry or replay never duplicates: a 409 means "already
  there"), retries 429/5xx and connection errors with backoff, and hands back
  per-document failures that retrying cannot fix (mapping errors) for the
  dead-letter topic.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson

from .errors import ConfigError, UebaError
from .settings import SearchSettings

log = logging.getLogger("ueba.search")

ALERT_DATASET = "ueba.alert"
RISK_DATASET = "ueba.risk"


class SearchError(UebaError):
    """The search engine refused or could not be reached."""


def alert_stream(namespace: str) -> str:
    return f"logs-{ALERT_DATASET}-{namespace}"


def risk_stream(namespace: str) -> str:
    return f"logs-{RISK_DATASET}-{namespace}"


def risk_index(namespace: str) -> str:
    """Latest risk per entity (one document per entity, overwritten)."""
    return f"ueba-entity-risk-{namespace}"


def make_client(s: SearchSettings) -> Any:
    """The official client for ``s.engine``; never logs credentials."""
    common: dict[str, Any] = {"verify_certs": s.verify_certs}
    if s.ca_certs:
        common["ca_certs"] = str(s.ca_certs)
    if s.engine == "elasticsearch":
        from elasticsearch import Elasticsearch

        kw: dict[str, Any] = {"request_timeout": s.request_timeout, **common}
        if s.api_key is not None:
            kw["api_key"] = s.api_key.get_secret_value()
        elif s.username:
            kw["basic_auth"] = (s.username, s.password.get_secret_value() if s.password else "")
        return Elasticsearch(s.url, **kw)
    if s.engine == "opensearch":
        from opensearchpy import OpenSearch

        kw = {"timeout": s.request_timeout, **common}
        if s.url.startswith("https"):
            kw["use_ssl"] = True
        if s.api_key is not None:
            kw["headers"] = {"Authorization": f"ApiKey {s.api_key.get_secret_value()}"}
        elif s.username:
            kw["http_auth"] = (s.username, s.password.get_secret_value() if s.password else "")
        return OpenSearch(hosts=[s.url], **kw)
    raise ConfigError(f"unknown search engine {s.engine!r}")


def engine_info(client: Any) -> dict[str, str]:
    """``GET /``: version number and distribution (``elasticsearch`` when absent)."""
    info = client.info()
    info = info.body if hasattr(info, "body") else info
    v = info.get("version", {})
    return {"number": v.get("number", "?"), "distribution": v.get("distribution", "elasticsearch"), "name": info.get("cluster_name", "")}


# --- mappings ---------------------------------------------------------------
#
# ECS fields we write, with their ECS types (a test checks each against
# shared/ecs/ecs_flat-9.4.0.yml). Keyword fields that may hold long text
# (message, reason) are ``match_only_text``/``text`` in ECS; we use the
# portable ``text`` where ECS says match_only_text since OpenSearch lacks it.

ECS_FIELDS: dict[str, str] = {
    "@timestamp": "date",
    "ecs.version": "keyword",
    "message": "match_only_text",
    "tags": "keyword",
    "event.kind": "keyword",
    "event.category": "keyword",
    "event.type": "keyword",
    "event.module": "keyword",
    "event.dataset": "keyword",
    "event.id": "keyword",
    "event.severity": "long",
    "event.risk_score": "float",
    "event.risk_score_norm": "float",
    "event.reason": "keyword",
    "event.created": "date",
    "event.ingested": "date",
    "event.action": "keyword",
    "event.outcome": "keyword",
    "rule.id": "keyword",
    "rule.name": "keyword",
    "rule.description": "keyword",
    "rule.ruleset": "keyword",
    "rule.category": "keyword",
    "rule.uuid": "keyword",
    "rule.reference": "keyword",
    "rule.version": "keyword",
    "rule.author": "keyword",
    "threat.framework": "keyword",
    "threat.technique.id": "keyword",
    "threat.technique.name": "keyword",
    "threat.technique.reference": "keyword",
    "threat.tactic.id": "keyword",
    "threat.tactic.name": "keyword",
    "user.name": "keyword",
    "user.id": "keyword",
    "user.roles": "keyword",
    "user.group.name": "keyword",
    "source.ip": "ip",
    "source.geo.country_iso_code": "keyword",
    "source.geo.city_name": "keyword",
    "source.as.number": "long",
    "organization.id": "keyword",
    "user_agent.original": "keyword",
    "url.path": "wildcard",
    "gen_ai.request.model": "keyword",
    "related.user": "keyword",
    "related.ip": "ip",
    "related.hash": "keyword",
    "host.name": "keyword",
}

# The custom namespace: everything under ``ueba``.
UEBA_FIELDS: dict[str, str] = {
    "ueba.alert.source": "keyword",
    "ueba.alert.kind": "keyword",
    "ueba.alert.level": "keyword",
    "ueba.alert.score": "float",
    "ueba.alert.stream": "keyword",
    "ueba.alert.entity.type": "keyword",
    "ueba.alert.entity.id": "keyword",
    "ueba.alert.count": "long",
    "ueba.alert.event_ref": "keyword",
    "ueba.alert.first_seen": "date",
    "ueba.alert.last_seen": "date",
    "ueba.alert.explanation.feature": "keyword",
    "ueba.alert.explanation.observed": "keyword",
    "ueba.alert.explanation.observed_value": "double",
    "ueba.alert.explanation.window": "keyword",
    "ueba.alert.explanation.reason": "text",
    "ueba.alert.explanation.baseline": "flattened",
    "ueba.alert.explanation.peers": "flattened",
    "ueba.alert.explanation.matched": "flattened",
    "ueba.api_key.id": "keyword",
    "ueba.model.id": "keyword",
    "ueba.model.version": "keyword",
    "ueba.model.artifact_hash": "keyword",
    "ueba.resource.type": "keyword",
    "ueba.resource.id": "keyword",
    "ueba.identity.type": "keyword",
    "ueba.risk.entity.type": "keyword",
    "ueba.risk.entity.id": "keyword",
    "ueba.risk.score": "float",
    "ueba.risk.previous_score": "float",
    "ueba.risk.level": "keyword",
    "ueba.risk.previous_level": "keyword",
    "ueba.risk.criticality": "float",
    "ueba.risk.alert_count": "long",
    "ueba.risk.contributions": "flattened",
}

_PORTABLE = {"match_only_text": "text", "wildcard": "keyword", "constant_keyword": "keyword"}


def _field_mapping(es_type: str, engine: str) -> dict[str, Any]:
    t = _PORTABLE.get(es_type, es_type)
    if t == "flattened" and engine == "opensearch":
        return {"type": "flat_object"}
    if t == "keyword":
        return {"type": "keyword", "ignore_above": 1024}
    if t == "text" and es_type == "match_only_text":
        return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}}
    return {"type": t}


def properties(fields: dict[str, str], engine: str) -> dict[str, Any]:
    """Nested ``properties`` for dotted field names."""
    root: dict[str, Any] = {}
    for dotted, es_type in fields.items():
        parts = dotted.split(".")
        cur = root
        for p in parts[:-1]:
            node = cur.setdefault(p, {"properties": {}})
            cur = node.setdefault("properties", {})
        cur[parts[-1]] = _field_mapping(es_type, engine)
    return root


def templates(namespace_pattern: str = "*", engine: str = "opensearch") -> dict[str, Any]:
    """Component and index templates, keyed by kind and name."""
    ecs = {"template": {"mappings": {"dynamic": True, "properties": properties(ECS_FIELDS, engine)}}}
    custom = {"template": {"mappings": {"properties": properties(UEBA_FIELDS, engine)}}}
    ds_fields = {
        "template": {
            "mappings": {
                "properties": {
                    "data_stream": {
                        "properties": {
                            "type": {"type": "constant_keyword" if engine == "elasticsearch" else "keyword"},
                            "dataset": {"type": "constant_keyword" if engine == "elasticsearch" else "keyword"},
                            "namespace": {"type": "constant_keyword" if engine == "elasticsearch" else "keyword"},
                        }
                    }
                }
            },
            "settings": {"index": {"number_of_replicas": 0}} if engine == "opensearch" else {},
        }
    }
    components = {
        "ueba@ecs-mappings": ecs,
        "ueba@mappings": custom,
        "ueba@data-stream": ds_fields,
    }
    index_templates = {}
    for dataset in (ALERT_DATASET, RISK_DATASET):
        index_templates[f"logs-{dataset}"] = {
            "index_patterns": [f"logs-{dataset}-{namespace_pattern}"],
            "data_stream": {},
            # Above the built-in logs template (priority 100) in Elasticsearch.
            "priority": 250,
            "composed_of": ["ueba@data-stream", "ueba@ecs-mappings", "ueba@mappings", f"logs-{dataset}@custom"],
            "_meta": {"managed_by": "ai-ueba", "description": f"{dataset} data stream"},
        }
    index_templates["ueba-entity-risk"] = {
        "index_patterns": ["ueba-entity-risk-*"],
        "priority": 250,
        "composed_of": ["ueba@ecs-mappings", "ueba@mappings", "ueba-entity-risk@custom"],
        "template": {"settings": {"index": {"number_of_replicas": 0}}} if engine == "opensearch" else {},
        "_meta": {"managed_by": "ai-ueba", "description": "latest risk per entity"},
    }
    customs = [f"logs-{ALERT_DATASET}@custom", f"logs-{RISK_DATASET}@custom", "ueba-entity-risk@custom"]
    return {"component": components, "index": index_templates, "custom": customs}


def _body(resp: Any) -> Any:
    return resp.body if hasattr(resp, "body") else resp


def install_templates(client: Any, engine: str) -> dict[str, str]:
    """Install component/index templates idempotently. Returns name -> action."""
    t = templates(engine=engine)
    done: dict[str, str] = {}
    for name in t["custom"]:
        if not client.cluster.exists_component_template(name=name):
            _put_component(client, engine, name, {"template": {"mappings": {}}, "_meta": {"managed_by": "user"}})
            done[name] = "created (empty, yours to edit)"
        else:
            done[name] = "kept"
    for name, body in t["component"].items():
        _put_component(client, engine, name, body)
        done[name] = "installed"
    for name, body in t["index"].items():
        if engine == "elasticsearch":
            client.indices.put_index_template(name=name, **body)
        else:
            client.indices.put_index_template(name=name, body=body)
        done[name] = "installed"
    return done


def _put_component(client: Any, engine: str, name: str, body: dict[str, Any]) -> None:
    if engine == "elasticsearch":
        client.cluster.put_component_template(name=name, **body)
    else:
        client.cluster.put_component_template(name=name, body=body)


# --- bulk -------------------------------------------------------------------


@dataclass(slots=True)
class BulkFailure:
    """A document the engine rejected for good (e.g. a mapping error)."""

    index: str
    doc_id: str
    status: int
    reason: str
    source: dict[str, Any]


@dataclass(slots=True)
class BulkResult:
    created: int = 0
    existed: int = 0
    updated: int = 0
    missing: list[str] = field(default_factory=list)  # update targets not found (404)
    failures: list[BulkFailure] = field(default_factory=list)
    retries: int = 0
    #: doc id -> concrete index that holds it (a data stream's backing index)
    locations: dict[str, str] = field(default_factory=dict)


_RETRY_STATUS = {429, 500, 502, 503, 504}

#: Only what :meth:`BulkWriter.write` reads from a bulk response (a 1,000-item
#: response shrinks about tenfold, and so does the client's JSON decoding).
_BULK_FILTER = "items.*.status,items.*.error,items.*._index"


class WriteAborted(SearchError):
    """:meth:`BulkWriter.write` gave up retrying because its stop event was set."""


def bulk_body(docs: Iterable[tuple[str, str, dict[str, Any], str]]) -> bytes:
    """The NDJSON body of a bulk request, serialised once with orjson."""
    out = bytearray()
    dumps = orjson.dumps
    for index, doc_id, source, op in docs:
        out += dumps({op: {"_index": index, "_id": doc_id}})
        out += b"\n"
        out += dumps({"doc": source} if op == "update" else source, default=str)
        out += b"\n"
    return bytes(out)


class BulkWriter:
    """Writes documents with deterministic ids, retrying what can succeed later.

    ``max_wait`` bounds the time one call keeps retrying transient failures
    (engine down, 429s); past it a :class:`SearchError` is raised and the
    caller must not commit its Kafka offsets (nothing is lost: the documents
    are re-read and re-sent, and ``create`` with the same ids dedupes).
    ``max_wait=None`` retries until ``stop`` (a :class:`threading.Event`) is
    set, which ends the wait at once with :class:`WriteAborted`.
    """

    def __init__(
        self,
        client: Any,
        engine: str,
        *,
        max_wait: float | None = 300.0,
        base_delay: float = 0.2,
        max_delay: float = 10.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.client = client
        self.engine = engine
        self.max_wait = max_wait
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.stop = stop or threading.Event()
        #: True while the latest request failed for a transient reason (engine down, 429/5xx)
        self.failing = False

    def _bulk(self, body: bytes) -> dict[str, Any]:
        if self.engine == "elasticsearch":
            return _body(self.client.bulk(operations=body, refresh=False, filter_path=_BULK_FILTER))
        return _body(self.client.bulk(body=body, refresh=False, filter_path=_BULK_FILTER))

    def write(self, docs: Iterable[tuple[str, str, dict[str, Any], str]]) -> BulkResult:
        """Write ``(index, doc_id, source, op)`` tuples.

        ``op`` is ``create`` (409 = already there, counted in ``existed``),
        ``index`` (overwrite; not allowed on data streams) or ``update`` (``source``
        is the partial document; 404 is reported in ``missing``).
        """
        pending = list(docs)
        result = BulkResult()
        deadline = None if self.max_wait is None else time.monotonic() + self.max_wait
        attempt = 0
        body = bulk_body(pending)
        while pending:
            if self.stop.is_set():
                raise WriteAborted(f"stopped with {len(pending)} documents not acknowledged")
            try:
                resp = self._bulk(body)
            except Exception as exc:  # connection refused, timeouts, 5xx on the whole request
                if not _transient(exc):
                    raise SearchError(f"bulk request rejected: {_safe(exc)}") from None
                self.failing = True
                attempt += 1
                result.retries += 1
                if deadline is not None and time.monotonic() > deadline:
                    raise SearchError(f"search engine unavailable for {self.max_wait:.0f}s: {_safe(exc)}") from None
                if attempt in (1, 5) or attempt % 20 == 0:
                    log.warning("bulk of %d documents: engine unavailable (attempt %d), retrying: %s", len(pending), attempt, _safe(exc))
                self._sleep(attempt)
                continue
            items = resp.get("items") or []
            if len(items) != len(pending):
                # Never guess which document an answer belongs to: send them all again.
                attempt += 1
                result.retries += 1
                log.warning("bulk answered %d items for %d documents; retrying", len(items), len(pending))
                if deadline is not None and time.monotonic() > deadline:
                    raise SearchError(f"bulk answers did not match the request for {self.max_wait:.0f}s")
                self._sleep(attempt)
                continue
            retry: list[tuple[str, str, dict[str, Any], str]] = []
            for item, doc in zip(items, pending):
                (op_name, r), = item.items()
                status = int(r.get("status", 0))
                if r.get("_index"):
                    result.locations[doc[1]] = r["_index"]
                if 200 <= status < 300:
                    if op_name == "update":
                        result.updated += 1
                    else:
                        result.created += 1
                elif status == 409 and op_name == "create":
                    result.existed += 1
                elif status == 404 and op_name == "update":
                    result.missing.append(doc[1])
                elif status in _RETRY_STATUS:
                    retry.append(doc)
                else:
                    err = r.get("error") or {}
                    reason = f"{err.get('type', 'error')}: {err.get('reason', '')}" if isinstance(err, dict) else str(err)
                    result.failures.append(BulkFailure(doc[0], doc[1], status, reason[:2000], doc[2]))
            self.failing = bool(retry)
            if retry and len(retry) != len(pending):
                body = bulk_body(retry)
            pending = retry
            if pending:
                attempt += 1
                result.retries += 1
                if deadline is not None and time.monotonic() > deadline:
                    raise SearchError(f"{len(pending)} documents still rejected with 429/5xx after {self.max_wait:.0f}s")
                self._sleep(attempt)
        return result

    def _sleep(self, attempt: int) -> None:
        delay = min(self.max_delay, self.base_delay * (2 ** min(attempt, 10)))
        self.stop.wait(delay * (0.5 + random.random() / 2))


def search(client: Any, engine: str, index: str, body: dict[str, Any]) -> dict[str, Any]:
    """One search call for both clients (the 8.x Elasticsearch client takes keyword arguments)."""
    if engine == "elasticsearch":
        return _body(client.search(index=index, **body))
    return _body(client.search(index=index, body=body))


def locate(client: Any, engine: str, index_pattern: str, ids: list[str]) -> dict[str, str]:
    """Concrete (backing) index of each document id found under ``index_pattern``."""
    if not ids:
        return {}
    client.indices.refresh(index=index_pattern)
    resp = search(client, engine, index_pattern, {"query": {"ids": {"values": ids}}, "size": len(ids), "_source": False})
    return {h["_id"]: h["_index"] for h in resp.get("hits", {}).get("hits", [])}


def _transient(exc: Exception) -> bool:
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "meta", None), "status", None)
    if isinstance(status, int):
        return status in _RETRY_STATUS
    name = type(exc).__name__
    return any(k in name for k in ("Connection", "Timeout", "Transport", "Unavailable")) or isinstance(exc, (ConnectionError, TimeoutError, OSError))


def _safe(exc: Exception) -> str:
    """Error text without credentials (URLs with userinfo, auth headers)."""
    import re

    text = f"{type(exc).__name__}: {exc}"
    text = re.sub(r"(https?://)[^/@\s]+@", r"\1***@", text)
    text = re.sub(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(\w+\s+)?[^\s'\",}]+", r"\1***", text)
    return text[:2000]
