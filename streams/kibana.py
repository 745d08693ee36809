"""Kibana saved objects for ai-ueba: load, check against our mappings, import.

``deploy/kibana/ueba.ndjson`` holds the data views, Lens visualizations, saved
search and dashboard in Kibana's saved-objects export format (one object per
line, fixed ids so a re-import overwrites instead of duplicating).

* :func:`load_assets` reads and validates the file (every line an object with
  ``type``/``id``/``attributes``; an export-details trailer line is skipped).
* :func:`field_refs` / :func:`fields_referenced` list every field the objects
  use: data-view time fields, Lens columns (``sourceField``, ``sortField``,
  multi-terms ``secondaryFields``, column filters), saved-search ``columns`` and
  ``sort``, KQL/Lucene queries and DSL filters, and the same inside by-value
  panels of a dashboard's ``panelsJSON``.
* :func:`unmapped_fields` checks each reference against the mappings that
  :func:`streams.search.install_templates` installs for the index pattern of
  the data view it is read through.
* :func:`import_assets` posts the file to ``/api/saved_objects/_import``.

Kibana needs ``kbn-xsrf`` on the import and refuses files whose name does not
end in ``.ndjson``; it answers HTTP 200 even when some objects failed, with
``success: false`` and per-object ``errors`` (see :func:`import_errors`).
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import urlsplit

from .errors import ConfigError, UebaError
from .search import templates

DEFAULT_ASSETS = Path(__file__).resolve().parent.parent / "deploy" / "kibana" / "ueba.ndjson"

#: Lens' pseudo-field for "count of records"; not a document field.
RECORDS = "___records___"

_LAYER_REF = "indexpattern-datasource-layer-"
_SPACE_ID = re.compile(r"^[a-z0-9_-]+$")


class KibanaError(UebaError):
    """Kibana refused a request or a saved-objects file is malformed."""


# --- loading ----------------------------------------------------------------


def load_assets(path: str | Path = DEFAULT_ASSETS) -> list[dict[str, Any]]:
    """Saved objects from an NDJSON export, in file order.

    Raises :class:`KibanaError` naming ``path:line`` for a line that is not a
    JSON object, lacks a string ``type``/``id`` or an object ``attributes``,
    has a non-list ``references``, or repeats a ``(type, id)`` pair. Blank
    lines and the export-details trailer (``exportedCount``) are skipped.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KibanaError(f"cannot read saved objects {path}: {exc.strerror or exc}") from None
    objects: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KibanaError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise KibanaError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        if "exportedCount" in obj and "type" not in obj:
            continue
        for key in ("type", "id"):
            if not isinstance(obj.get(key), str) or not obj[key]:
                raise KibanaError(f"{where}: {key!r} must be a non-empty string")
        if not isinstance(obj.get("attributes"), dict):
            raise KibanaError(f"{where}: {obj['type']}/{obj['id']}: 'attributes' must be an object")
        if not isinstance(obj.get("references", []), list):
            raise KibanaError(f"{where}: {obj['type']}/{obj['id']}: 'references' must be a list")
        key2 = (obj["type"], obj["id"])
        if key2 in seen:
            raise KibanaError(f"{where}: {key2[0]}/{key2[1]} already defined on line {seen[key2]}")
        seen[key2] = lineno
        objects.append(obj)
    return objects


# --- field references ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldRef:
    """One use of a field by a saved object.

    ``where`` is the path inside the object's attributes (JSON strings such as
    ``panelsJSON`` are entered as if they were objects); ``data_view`` is the
    id of the data view the field is read through, ``None`` when the use is
    not tied to one (a dashboard-wide query).
    """

    field: str
    object: str
    where: str
    data_view: str | None


def fields_referenced(objects: Iterable[Mapping[str, Any]]) -> set[str]:
    """Every field name any of ``objects`` references (see :func:`field_refs`)."""
    return {r.field for r in field_refs(objects)}


def field_refs(objects: Iterable[Mapping[str, Any]]) -> list[FieldRef]:
    """Every field use in data views, Lens objects, saved searches, legacy
    visualizations and dashboards (including by-value panels).

    ES|QL (text-based) layers and Vega/TSVB specs are not parsed.
    """
    objects = list(objects)
    search_view = {o.get("id"): _search_view(o.get("attributes") or {}, o.get("references") or []) for o in objects if o.get("type") == "search"}
    out: list[FieldRef] = []
    for obj in objects:
        kind, oid = obj.get("type"), obj.get("id")
        name = f"{kind}/{oid}"
        attrs = obj.get("attributes") or {}
        refs = obj.get("references") or []
        if kind == "index-pattern":
            out.extend(_dataview_refs(attrs, name, oid))
        elif kind == "lens":
            out.extend(_lens_refs(attrs, refs, name, ""))
        elif kind == "search":
            out.extend(_search_refs(attrs, refs, name, ""))
        elif kind == "visualization":
            out.extend(_visualization_refs(attrs, refs, name))
        elif kind == "dashboard":
            out.extend(_dashboard_refs(attrs, refs, name, search_view))
    return out


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else {}
        except json.JSONDecodeError:
            return {}
    return value


def _dataview_refs(attrs: Mapping[str, Any], name: str, oid: str) -> Iterator[FieldRef]:
    if attrs.get("timeFieldName"):
        yield FieldRef(attrs["timeFieldName"], name, "timeFieldName", oid)
    for key in ("fieldAttrs", "fieldFormatMap"):
        for f in _json(attrs.get(key)) or {}:
            yield FieldRef(f, name, f"{key}.{f}", oid)


def _ref_id(refs: Iterable[Mapping[str, Any]], ref_name: str) -> str | None:
    for r in refs:
        if r.get("name") == ref_name:
            return r.get("id")
    return None


def _lens_refs(attrs: Mapping[str, Any], refs: list[Mapping[str, Any]], name: str, prefix: str) -> Iterator[FieldRef]:
    state = _json(attrs.get("state")) or {}
    layer_dv: dict[str, str | None] = {}
    for ds_key in ("formBased", "indexpattern"):
        layers = ((state.get("datasourceStates") or {}).get(ds_key) or {}).get("layers") or {}
        for layer_id, layer in layers.items():
            dv = _ref_id(refs, f"{_LAYER_REF}{layer_id}") or layer.get("indexPatternId")
            layer_dv[layer_id] = dv
            base = f"{prefix}state.datasourceStates.{ds_key}.layers.{layer_id}.columns"
            for col_id, col in (layer.get("columns") or {}).items():
                yield from _column_refs(col, name, f"{base}.{col_id}", dv)
    dvs = set(layer_dv.values())
    common = dvs.pop() if len(dvs) == 1 else None
    yield from _query_refs(state.get("query"), name, f"{prefix}state.query", common)
    yield from _filter_refs(state.get("filters"), name, f"{prefix}state.filters", common)


def _column_refs(col: Mapping[str, Any], name: str, where: str, dv: str | None) -> Iterator[FieldRef]:
    src = col.get("sourceField")
    if src and src != RECORDS:
        yield FieldRef(src, name, f"{where}.sourceField", dv)
    params = col.get("params") or {}
    if params.get("sortField"):
        yield FieldRef(params["sortField"], name, f"{where}.params.sortField", dv)
    for i, f in enumerate(params.get("secondaryFields") or []):
        yield FieldRef(f, name, f"{where}.params.secondaryFields.{i}", dv)
    yield from _query_refs(col.get("filter"), name, f"{where}.filter", dv)
    for i, flt in enumerate(params.get("filters") or []):  # the "filters" bucket operation
        yield from _query_refs((flt or {}).get("input"), name, f"{where}.params.filters.{i}.input", dv)


def _search_view(attrs: Mapping[str, Any], refs: list[Mapping[str, Any]]) -> str | None:
    source = _json((attrs.get("kibanaSavedObjectMeta") or {}).get("searchSourceJSON")) or {}
    dv = _ref_id(refs, source.get("indexRefName", "kibanaSavedObjectMeta.searchSourceJSON.index"))
    if dv is None and isinstance(source.get("index"), str):
        dv = source["index"]
    return dv


def _search_refs(attrs: Mapping[str, Any], refs: list[Mapping[str, Any]], name: str, prefix: str) -> Iterator[FieldRef]:
    source = _json((attrs.get("kibanaSavedObjectMeta") or {}).get("searchSourceJSON")) or {}
    dv = _search_view(attrs, refs)
    yield from _columns_sort(attrs, name, prefix, dv)
    yield from _query_refs(source.get("query"), name, f"{prefix}kibanaSavedObjectMeta.searchSourceJSON.query", dv)
    yield from _filter_refs(source.get("filter"), name, f"{prefix}kibanaSavedObjectMeta.searchSourceJSON.filter", dv)


def _columns_sort(attrs: Mapping[str, Any], name: str, prefix: str, dv: str | None) -> Iterator[FieldRef]:
    for i, c in enumerate(attrs.get("columns") or []):
        if c != "_source":
            yield FieldRef(c, name, f"{prefix}columns.{i}", dv)
    sort = attrs.get("sort") or []
    if len(sort) == 2 and all(isinstance(s, str) for s in sort):  # the pre-7 ["field", "dir"] form
        sort = [sort]
    for i, s in enumerate(sort):
        if isinstance(s, (list, tuple)) and s and s[0] != "_score":
            yield FieldRef(s[0], name, f"{prefix}sort.{i}", dv)


def _visualization_refs(attrs: Mapping[str, Any], refs: list[Mapping[str, Any]], name: str) -> Iterator[FieldRef]:
    source = _json((attrs.get("kibanaSavedObjectMeta") or {}).get("searchSourceJSON")) or {}
    dv = _ref_id(refs, source.get("indexRefName", "kibanaSavedObjectMeta.searchSourceJSON.index"))
    vis = _json(attrs.get("visState")) or {}
    for i, agg in enumerate(vis.get("aggs") or []):
        field = (agg.get("params") or {}).get("field")
        if field:
            yield FieldRef(field, name, f"visState.aggs.{i}.params.field", dv)
    yield from _query_refs(source.get("query"), name, "kibanaSavedObjectMeta.searchSourceJSON.query", dv)
    yield from _filter_refs(source.get("filter"), name, "kibanaSavedObjectMeta.searchSourceJSON.filter", dv)


def _dashboard_refs(
    attrs: Mapping[str, Any], refs: list[Mapping[str, Any]], name: str, search_view: Mapping[str, str | None]
) -> Iterator[FieldRef]:
    source = _json((attrs.get("kibanaSavedObjectMeta") or {}).get("searchSourceJSON")) or {}
    yield from _query_refs(source.get("query"), name, "kibanaSavedObjectMeta.searchSourceJSON.query", None)
    yield from _filter_refs(source.get("filter"), name, "kibanaSavedObjectMeta.searchSourceJSON.filter", None)
    for i, panel in enumerate(_json(attrs.get("panelsJSON")) or []):
        config = panel.get("embeddableConfig") or {}
        pid = panel.get("panelIndex", str(i))
        prefix = f"panelsJSON.{i}.embeddableConfig."
        # Dashboard-level references of a by-value panel are "<panelIndex>:<name>".
        own = [dict(r, name=str(r.get("name")).split(":", 1)[1]) for r in refs if str(r.get("name", "")).startswith(f"{pid}:")]
        inner = config.get("attributes")
        if isinstance(inner, dict):
            inner_refs = list(inner.get("references") or []) + own
            if "state" in inner:
                yield from _lens_refs(inner, inner_refs, name, prefix + "attributes.")
            elif "columns" in inner or "kibanaSavedObjectMeta" in inner:
                yield from _search_refs(inner, inner_refs, name, prefix + "attributes.")
        # A saved-search panel may override the search's columns and sort.
        target = _ref_id(refs, f"{pid}:{panel.get('panelRefName')}") if panel.get("panelRefName") else None
        yield from _columns_sort(config, name, prefix, search_view.get(target) if target else None)
        yield from _query_refs(config.get("query"), name, prefix + "query", None)
        yield from _filter_refs(config.get("filters"), name, prefix + "filters", None)


# KQL and Lucene both write "field: value" / "field > value"; quoted values are
# removed first so their contents cannot look like fields.
_QUOTED_FIELD = re.compile(r'"((?:[^"\\]|\\.)+)"\s*(?::|<=|>=|<|>)')
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_FIELD = re.compile(r"(?<![\w.@*-])([A-Za-z_@][\w.@*-]*)\s*(?::|<=|>=|<|>)")


def query_fields(query: str) -> list[str]:
    """Field names a KQL or Lucene query string filters on (best effort).

    >>> query_fields('user.name: "a:b" and not event.severity >= 73')
    ['user.name', 'event.severity']
    """
    found = [m.group(1) for m in _QUOTED_FIELD.finditer(query)]
    found += [m.group(1) for m in _FIELD.finditer(_QUOTED.sub('""', query))]
    return list(dict.fromkeys(found))


def _query_refs(query: Any, name: str, where: str, dv: str | None) -> Iterator[FieldRef]:
    if isinstance(query, dict):
        q = query.get("query")
        if isinstance(q, str):
            for f in query_fields(q):
                yield FieldRef(f, name, f"{where}.query", dv)
        elif isinstance(q, dict):  # a DSL query object
            yield from _dsl_refs(q, name, f"{where}.query", dv)


_DSL_FIELD_KEYS = {"match", "match_phrase", "match_phrase_prefix", "term", "terms", "range", "prefix", "wildcard", "regexp", "fuzzy"}


def _filter_refs(filters: Any, name: str, where: str, dv: str | None) -> Iterator[FieldRef]:
    for i, flt in enumerate(filters or []):
        if not isinstance(flt, dict):
            continue
        meta = flt.get("meta") or {}
        fdv = meta.get("index") if isinstance(meta.get("index"), str) else dv
        if meta.get("type") in ("phrase", "phrases", "range", "exists") and meta.get("key"):
            yield FieldRef(meta["key"], name, f"{where}.{i}.meta.key", fdv)
        body = {k: v for k, v in flt.items() if k not in ("meta", "$state")}
        yield from _dsl_refs(body, name, f"{where}.{i}", fdv)


def _dsl_refs(node: Any, name: str, where: str, dv: str | None) -> Iterator[FieldRef]:
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _dsl_refs(item, name, f"{where}.{i}", dv)
    elif isinstance(node, dict):
        for k, v in node.items():
            if k in _DSL_FIELD_KEYS and isinstance(v, dict):
                for f in v:
                    if f not in ("boost", "_name"):
                        yield FieldRef(f, name, f"{where}.{k}", dv)
            elif k == "exists" and isinstance(v, dict) and isinstance(v.get("field"), str):
                yield FieldRef(v["field"], name, f"{where}.exists.field", dv)
            elif k == "query_string" and isinstance(v, dict) and isinstance(v.get("query"), str):
                for f in query_fields(v["query"]):
                    yield FieldRef(f, name, f"{where}.query_string", dv)
            else:
                yield from _dsl_refs(v, name, f"{where}.{k}", dv)


# --- checking against our mappings -------------------------------------------


@dataclass(frozen=True, slots=True)
class MappedFields:
    """Field names an index pattern's mappings define."""

    exact: frozenset[str]
    flattened: tuple[str, ...]  # a flattened field accepts any sub-key

    def has(self, field: str) -> bool:
        if "*" in field:
            return any(fnmatch.fnmatchcase(f, field) for f in self.exact)
        return field in self.exact or any(field.startswith(p + ".") for p in self.flattened)


def _walk_properties(props: Mapping[str, Any], prefix: str, exact: set[str], flat: list[str]) -> None:
    for key, spec in props.items():
        name = prefix + key
        if "properties" in spec:
            _walk_properties(spec["properties"], name + ".", exact, flat)
            continue
        exact.add(name)
        if spec.get("type") in ("flattened", "flat_object"):
            flat.append(name)
        for sub in spec.get("fields") or {}:
            exact.add(f"{name}.{sub}")


def mapped_fields(index_pattern: str | None, engine: str = "elasticsearch") -> MappedFields:
    """Fields the index templates of ``streams.search`` map for ``index_pattern``.

    ``index_pattern`` is a data view title (comma-separated patterns allowed);
    ``None`` means the union over all our templates. A pattern no template
    covers maps nothing.
    """
    t = templates(engine=engine)
    exact: set[str] = set()
    flat: list[str] = []
    for tmpl in t["index"].values():
        if index_pattern is not None and not _covers(tmpl["index_patterns"], index_pattern):
            continue
        for comp in tmpl.get("composed_of", []):
            body = t["component"].get(comp)  # the @custom ones are the user's, empty by default
            if body:
                _walk_properties(body["template"]["mappings"].get("properties", {}), "", exact, flat)
        _walk_properties(((tmpl.get("template") or {}).get("mappings") or {}).get("properties", {}), "", exact, flat)
    return MappedFields(frozenset(exact), tuple(flat))


def _covers(template_patterns: list[str], title: str) -> bool:
    # A concrete name the data view would match must be matched by the template.
    wanted = [p.strip() for p in title.split(",") if p.strip() and not p.strip().startswith("-")]
    return bool(wanted) and all(any(fnmatch.fnmatchcase(p.replace("*", "x"), tp) for tp in template_patterns) for p in wanted)


def unmapped_fields(objects: Iterable[Mapping[str, Any]], engine: str = "elasticsearch") -> list[FieldRef]:
    """References to fields our templates do not map for the data view used.

    A data view's runtime fields count as mapped for that data view; a
    reference through a data view that is not among ``objects`` is checked
    against the union of all our templates.
    """
    objects = list(objects)
    views = {o["id"]: o.get("attributes") or {} for o in objects if o.get("type") == "index-pattern"}
    cache: dict[str | None, MappedFields] = {}
    bad: list[FieldRef] = []
    for ref in field_refs(objects):
        view = views.get(ref.data_view) if ref.data_view else None
        key = view.get("title") if view else None
        if key not in cache:
            cache[key] = mapped_fields(key, engine)
        runtime = _json(view.get("runtimeFieldMap")) if view else {}
        if not (cache[key].has(ref.field) or ref.field in (runtime or {})):
            bad.append(ref)
    return bad


# --- import -------------------------------------------------------------------


def import_url(url: str, space: str | None = None) -> str:
    """The import endpoint for ``space`` (``None``/``"default"``: the default space)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"Kibana URL must be http(s)://host[:port][/base-path], got {_redact(url, [])!r}")
    if parts.username is not None or parts.password is not None:
        # They would end up in shell history and logs; the options exist for them.
        raise ConfigError("put Kibana credentials in the username/password or API key options, not in the URL")
    base = url.rstrip("/")
    if space in (None, "", "default"):
        return f"{base}/api/saved_objects/_import"
    if not _SPACE_ID.match(space):
        raise ConfigError(f"invalid Kibana space id {space!r}: lowercase letters, digits, '_' and '-' only")
    return f"{base}/s/{space}/api/saved_objects/_import"


def import_assets(
    url: str,
    objects_path: str | Path = DEFAULT_ASSETS,
    *,
    api_key: str | None = None,
    username: str | None = None,
    password: str | None = None,
    space: str | None = None,
    ca_certs: str | Path | None = None,
    verify: bool = True,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Import the saved objects in ``objects_path`` into Kibana at ``url``, overwriting.

    ``api_key`` is Elasticsearch's ``encoded`` key (base64 of ``id:key``) or
    the ``id:key`` pair itself; it excludes ``username``/``password`` (basic
    auth). ``ca_certs`` is a PEM bundle for Kibana's TLS certificate;
    ``verify=False`` skips verification. The file is validated with
    :func:`load_assets` before anything is sent.

    Returns Kibana's answer (``success``, ``successCount``, ``errors`` when
    some objects failed: Kibana says HTTP 200 then, see :func:`import_errors`).
    Raises :class:`KibanaError` for an HTTP error, an unreachable Kibana or an
    answer that is not the import API's JSON; messages never contain
    credentials.
    """
    import httpx

    if api_key and (username or password):
        raise ConfigError("give either an API key or a username and password for Kibana, not both")
    if password and not username:
        raise ConfigError("a Kibana password needs a username")
    endpoint = import_url(url, space)
    objects_path = Path(objects_path)
    load_assets(objects_path)
    content = objects_path.read_bytes()

    secrets = [s for s in (password, api_key) if s]
    headers = {"kbn-xsrf": "true", "Accept": "application/json"}
    auth = None
    if api_key:
        encoded = base64.b64encode(api_key.encode()).decode() if ":" in api_key else api_key
        secrets.append(encoded)
        headers["Authorization"] = f"ApiKey {encoded}"
    elif username:
        auth = httpx.BasicAuth(username, password or "")
        secrets.append(base64.b64encode(f"{username}:{password or ''}".encode()).decode())
    tls: bool | ssl.SSLContext = verify
    if verify and ca_certs:
        try:
            tls = ssl.create_default_context(cafile=str(ca_certs))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load Kibana CA certificates {ca_certs}: {exc}") from None
    # Kibana checks the extension of the uploaded file's name.
    filename = objects_path.name if objects_path.suffix == ".ndjson" else "ueba.ndjson"
    where = _redact(endpoint, secrets)
    try:
        with httpx.Client(verify=tls, timeout=timeout, trust_env=False) as client:
            resp = client.post(
                endpoint,
                params={"overwrite": "true"},
                headers=headers,
                auth=auth,
                files={"file": (filename, content, "application/ndjson")},
            )
    except httpx.HTTPError as exc:
        raise KibanaError(_redact(f"cannot reach Kibana at {where}: {type(exc).__name__}: {exc}", secrets)) from None
    if resp.status_code >= 400:
        raise KibanaError(_redact(f"Kibana refused the import at {where}: HTTP {resp.status_code} {_error_text(resp)}", secrets))
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "success" not in body:
        raise KibanaError(_redact(f"unexpected answer from {where} (HTTP {resp.status_code}): {resp.text[:300]!r}", secrets))
    return body


def import_errors(result: Mapping[str, Any]) -> list[str]:
    """One line per object Kibana did not import, e.g.
    ``lens/ai-ueba-lens-x: missing_references index-pattern/y``."""
    lines = []
    for err in result.get("errors") or []:
        e = err.get("error") or {}
        detail = e.get("type", "error")
        if e.get("references"):
            detail += " " + ", ".join(f"{r.get('type')}/{r.get('id')}" for r in e["references"])
        elif e.get("message"):
            detail += f" {e['message']}"
        lines.append(f"{err.get('type')}/{err.get('id')}: {detail}")
    return lines


def _error_text(resp: Any) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.reason_phrase or resp.text[:300]
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("error", "message") if body.get(k)]
        if parts:
            return ": ".join(parts)[:1000]
    return json.dumps(body)[:300]


def _redact(text: str, secrets: Iterable[str]) -> str:
    text = re.sub(r"(https?://)[^/@\s]+@", r"\1***@", text)
    for s in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(s, "***")
    return text
