"""Kibana saved objects (deploy/kibana/ueba.ndjson) and their import.

No Kibana runs here, so these tests check what can be checked without one:
the file's structure and internal references, that every field a
visualization or search uses is mapped by the templates ``ueba setup``
installs (and is written by the document builders), and the import client
against a real HTTP server on 127.0.0.1 that behaves like Kibana's
``_import`` endpoint.
"""

from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from streams import kibana
from streams.alerts import Alert
from streams.errors import ConfigError, UebaError
from streams.kibana import KibanaError, field_refs, fields_referenced, import_assets, load_assets, unmapped_fields
from streams.risk import RiskChange
from streams.search import ECS_FIELDS, UEBA_FIELDS
from streams.sink import _entity_doc

ALERTS_DV, RISK_DV, ENTITY_DV = "ai-ueba-alerts-dataview", "ai-ueba-risk-dataview", "ai-ueba-entity-risk-dataview"
DASHBOARD = "ai-ueba-overview-dashboard"
SEARCH = "ai-ueba-search-recent-alerts"

# Users bookmark these and re-imports overwrite by id: renaming one strands the old object.
FIXED_IDS = {
    ("index-pattern", ALERTS_DV),
    ("index-pattern", RISK_DV),
    ("index-pattern", ENTITY_DV),
    ("lens", "ai-ueba-lens-alerts-by-rule"),
    ("lens", "ai-ueba-lens-alerts-by-severity"),
    ("lens", "ai-ueba-lens-top-risky-entities"),
    ("lens", "ai-ueba-lens-risk-changes"),
    ("lens", "ai-ueba-lens-alerts-by-technique-id"),
    ("lens", "ai-ueba-lens-alerts-by-technique-name"),
    ("search", SEARCH),
    ("dashboard", DASHBOARD),
}

# Kibana migrates older objects up on import but refuses versions newer than
# it knows: these are the 8.x-export versions, importable into 8.9+ and 9.x.
MIGRATION_VERSIONS = {"index-pattern": "8.0.0", "lens": "8.9.0", "search": "8.0.0", "dashboard": "8.9.0"}

SEARCH_COLUMNS = [
    "message",
    "user.name",
    "ueba.alert.entity.id",
    "event.severity",
    "ueba.alert.explanation.reason",
    "ueba.alert.explanation.observed",
    "ueba.alert.explanation.window",
    "threat.technique.id",
]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return load_assets()


def by_id(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["id"]: o for o in objects}


def lens_layers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return obj["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(dashboard["attributes"]["panelsJSON"])


# --- structure -----------------------------------------------------------------


def test_every_line_is_a_saved_object_in_export_format():
    lines = kibana.DEFAULT_ASSETS.read_text(encoding="utf-8").splitlines()
    assert lines and all(line.strip() for line in lines)
    for line in lines:
        obj = json.loads(line)
        assert set(obj) == {"attributes", "coreMigrationVersion", "id", "managed", "references", "type", "typeMigrationVersion"}, obj["id"]
        assert obj["coreMigrationVersion"] == "8.8.0"
        assert obj["typeMigrationVersion"] == MIGRATION_VERSIONS[obj["type"]], obj["id"]
        assert obj["managed"] is False
        assert obj["attributes"]["title"]
        for ref in obj["references"]:
            assert set(ref) == {"id", "name", "type"}


def test_ids_are_the_fixed_ones_and_unique(objects):
    keys = [(o["type"], o["id"]) for o in objects]
    assert len(keys) == len(set(keys))
    assert len({o["id"] for o in objects}) == len(objects)
    assert set(keys) == FIXED_IDS


def test_references_resolve_within_the_file(objects):
    have = {(o["type"], o["id"]) for o in objects}
    for o in objects:
        names = [r["name"] for r in o["references"]]
        assert len(names) == len(set(names)), o["id"]
        for r in o["references"]:
            assert (r["type"], r["id"]) in have, f"{o['id']} -> {r['type']}/{r['id']}"


def test_data_views_cover_our_indices(objects):
    views = {o["id"]: o["attributes"] for o in objects if o["type"] == "index-pattern"}
    assert views[ALERTS_DV]["title"] == "logs-ueba.alert-*" and views[ALERTS_DV]["timeFieldName"] == "@timestamp"
    assert views[RISK_DV]["title"] == "logs-ueba.risk-*" and views[RISK_DV]["timeFieldName"] == "@timestamp"
    # Current state per entity: no time field, so the time picker does not hide quiet entities.
    assert views[ENTITY_DV]["title"] == "ueba-entity-risk-*" and "timeFieldName" not in views[ENTITY_DV]
    for attrs in views.values():
        for key in ("fieldAttrs", "fieldFormatMap", "runtimeFieldMap", "typeMeta"):
            assert isinstance(json.loads(attrs[key]), dict)
        assert json.loads(attrs["fields"]) == [] and json.loads(attrs["sourceFilters"]) == []


def test_lens_layers_point_at_data_views_and_their_own_columns(objects):
    views = {o["id"] for o in objects if o["type"] == "index-pattern"}
    lenses = [o for o in objects if o["type"] == "lens"]
    assert len(lenses) == 6
    for o in lenses:
        refs = {r["name"]: r for r in o["references"]}
        state = o["attributes"]["state"]
        assert state["query"] == {"language": "kuery", "query": ""} and state["filters"] == []
        vis = state["visualization"]
        for layer_id, layer in lens_layers(o).items():
            ref = refs[f"indexpattern-datasource-layer-{layer_id}"]
            assert ref["type"] == "index-pattern" and ref["id"] in views
            cols = layer["columns"]
            assert sorted(layer["columnOrder"]) == sorted(cols)
            for col in cols.values():
                order = col.get("params", {}).get("orderBy", {})
                if order.get("type") == "column":
                    assert order["columnId"] in cols and not cols[order["columnId"]]["isBucketed"]
            if o["attributes"]["visualizationType"] == "lnsXY":
                (vlayer,) = vis["layers"]
                assert vlayer["layerId"] == layer_id
                used = [vlayer["xAccessor"], *vlayer["accessors"], *([vlayer["splitAccessor"]] if "splitAccessor" in vlayer else [])]
            else:
                assert vis["layerId"] == layer_id
                used = [c["columnId"] for c in vis["columns"]] + [vis["sorting"]["columnId"]]
            assert set(used) <= set(cols) and set(cols) <= set(used), o["id"]


def test_lens_panels_show_what_the_issue_asks_for(objects):
    objs = by_id(objects)

    def sources(oid):
        (layer,) = lens_layers(objs[oid]).values()
        return {c["operationType"]: c.get("sourceField") for c in layer["columns"].values()} | {"_dv": objs[oid]["references"][0]["id"]}

    assert sources("ai-ueba-lens-alerts-by-rule") == {"date_histogram": "@timestamp", "terms": "rule.name", "count": "___records___", "_dv": ALERTS_DV}
    assert sources("ai-ueba-lens-alerts-by-severity") == {"date_histogram": "@timestamp", "terms": "event.severity", "count": "___records___", "_dv": ALERTS_DV}
    assert sources("ai-ueba-lens-alerts-by-technique-id")["terms"] == "threat.technique.id"
    assert sources("ai-ueba-lens-alerts-by-technique-name")["terms"] == "threat.technique.name"
    (layer,) = lens_layers(objs["ai-ueba-lens-top-risky-entities"]).values()
    entity = layer["columns"]["entity"]
    assert objs["ai-ueba-lens-top-risky-entities"]["references"][0]["id"] == ENTITY_DV
    assert entity["sourceField"] == "ueba.risk.entity.id"
    ranked_by = layer["columns"][entity["params"]["orderBy"]["columnId"]]
    assert ranked_by["operationType"] == "max" and ranked_by["sourceField"] == "ueba.risk.score"
    assert entity["params"]["orderDirection"] == "desc"


def test_saved_search_lists_alerts_with_their_explanation(objects):
    s = by_id(objects)[SEARCH]
    attrs = s["attributes"]
    assert attrs["columns"] == SEARCH_COLUMNS
    assert attrs["sort"] == [["@timestamp", "desc"]]
    source = json.loads(attrs["kibanaSavedObjectMeta"]["searchSourceJSON"])
    (ref,) = [r for r in s["references"] if r["name"] == source["indexRefName"]]
    assert ref == {"id": ALERTS_DV, "name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern"}


def test_dashboard_panels_reference_existing_objects_and_fit_the_grid(objects):
    objs = by_id(objects)
    d = objs[DASHBOARD]
    assert d["attributes"]["title"] == "AI-UEBA overview"
    json.loads(d["attributes"]["optionsJSON"])
    json.loads(d["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    refs = {r["name"]: r for r in d["references"]}
    ps = panels(d)
    assert len({p["panelIndex"] for p in ps}) == len(ps)
    shown = set()
    cells: set[tuple[int, int]] = set()
    for p in ps:
        ref = refs[f"{p['panelIndex']}:{p['panelRefName']}"]
        assert objs[ref["id"]]["type"] == ref["type"] == p["type"]
        shown.add(ref["id"])
        g = p["gridData"]
        assert g["i"] == p["panelIndex"] and 0 <= g["x"] and g["x"] + g["w"] <= 48 and g["w"] > 0 and g["h"] > 0
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['panelIndex']} overlaps another"
        cells |= mine
    assert len(refs) == len(ps)  # no dangling dashboard references
    assert shown == {o["id"] for o in objects if o["type"] in ("lens", "search")}


# --- loading errors ------------------------------------------------------------


@pytest.mark.parametrize(
    "text,match",
    [
        ('{"type":"lens","id":"a","attributes":{}}\n{not json\n', r":2: not JSON"),
        ('["a"]\n', r":1: expected a JSON object"),
        ('{"type":"lens","attributes":{}}\n', r":1: 'id' must be"),
        ('{"type":"lens","id":"a","attributes":"x"}\n', r"lens/a: 'attributes' must be an object"),
        ('{"type":"lens","id":"a","attributes":{},"references":{}}\n', r"'references' must be a list"),
        ('{"type":"lens","id":"a","attributes":{}}\n\n{"type":"lens","id":"a","attributes":{}}\n', r":3: lens/a already defined on line 1"),
    ],
)
def test_load_rejects_malformed_lines_with_their_location(tmp_path, text, match):
    f = tmp_path / "x.ndjson"
    f.write_text(text)
    with pytest.raises(KibanaError, match=match):
        load_assets(f)


def test_load_skips_the_export_details_trailer(tmp_path):
    f = tmp_path / "x.ndjson"
    f.write_text('{"type":"lens","id":"a","attributes":{}}\n{"excludedObjects":[],"exportedCount":1,"missingRefCount":0,"missingReferences":[]}\n')
    assert [o["id"] for o in load_assets(f)] == ["a"]


# --- fields ----------------------------------------------------------------------


def test_fields_are_found_in_every_kind_of_object(objects):
    found = fields_referenced(objects)
    assert set(SEARCH_COLUMNS) <= found
    assert {"@timestamp", "rule.name", "event.severity", "threat.technique.name", "ueba.risk.entity.id", "ueba.risk.score", "ueba.risk.level"} <= found
    assert "___records___" not in found
    # Each use is attributed to the data view it is read through.
    views = {(r.field, r.data_view) for r in field_refs(objects)}
    assert ("ueba.risk.score", ENTITY_DV) in views and ("rule.name", ALERTS_DV) in views and ("ueba.risk.level", RISK_DV) in views


def test_every_referenced_field_is_mapped_by_our_templates(objects):
    assert unmapped_fields(objects) == []
    mapped = set(ECS_FIELDS) | set(UEBA_FIELDS)
    for f in fields_referenced(objects):
        assert f in mapped or f.startswith("data_stream."), f


def _flatten(doc: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for k, v in doc.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out.add(prefix + k)
    return out


def test_every_referenced_field_is_written_by_the_document_builders(objects):
    """Mapped is not enough: a panel on a field nobody writes stays empty."""
    alert = Alert(
        id="a1", ts=1_795_860_000.0, source="detector:exfil_volume", kind="detector", rule_id="ueba-exfil_volume",
        rule_name="Exfiltration volume", title="alice downloaded 40x her usual volume", description="d", score=83.0,
        severity=73, level="high", entity_type="user", entity="alice", stream="access",
        explanation={"feature": "ueba.transfer.bytes", "observed": 4.1e9, "window": "1h", "reason": "r", "baseline": {"center": 1}},
        techniques=("T1530", "AML.T0025"), context={"user.name": "alice", "source.ip": "203.0.113.7"},
    )
    change = RiskChange("user", "alice", 1_795_860_000.0, 72.0, 35.0, "high", "moderate", 1.0, 3, [{"alert_id": "a1", "points": 50}])
    written = {
        ALERTS_DV: _flatten(alert.to_ecs("default")),
        RISK_DV: _flatten(change.to_ecs("default")),
        ENTITY_DV: _flatten(_entity_doc(change)),
    }
    for ref in field_refs(objects):
        assert ref.field in written[ref.data_view], f"{ref.object} {ref.where}: {ref.field} is not in {ref.data_view} documents"


def _doctor(objects, oid, change: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    out = copy.deepcopy(objects)
    change(by_id(out)[oid])
    return out


def _set_lens_column(oid, col, key, value):
    def change(o):
        (layer,) = lens_layers(o).values()
        target = layer["columns"][col]
        if key.startswith("params."):
            target["params"][key.split(".", 1)[1]] = value
        else:
            target[key] = value

    return oid, change


def _by_value_panel(o):
    """Put a copy of a Lens object into the dashboard by value, with a bad field."""
    lens = copy.deepcopy(by_id(load_assets())["ai-ueba-lens-alerts-by-rule"])
    (layer,) = lens["attributes"]["state"]["datasourceStates"]["formBased"]["layers"].values()
    layer["columns"]["rule"]["sourceField"] = "rule.nam"
    ps = panels(o)
    ps.append({"type": "lens", "gridData": {"x": 0, "y": 80, "w": 10, "h": 10, "i": "byval"}, "panelIndex": "byval",
               "embeddableConfig": {"attributes": {**lens["attributes"], "references": lens["references"]}, "enhancements": {}}})
    o["attributes"]["panelsJSON"] = json.dumps(ps)


def _search_source(query=None, filters=None):
    def change(o):
        meta = o["attributes"]["kibanaSavedObjectMeta"]
        source = json.loads(meta["searchSourceJSON"])
        if query is not None:
            source["query"] = {"language": "kuery", "query": query}
        if filters is not None:
            source["filter"] = filters
        meta["searchSourceJSON"] = json.dumps(source)

    return SEARCH, change


DOCTORED = {
    "lens sourceField": (*_set_lens_column("ai-ueba-lens-alerts-by-rule", "rule", "sourceField", "rule.nam"), "rule.nam"),
    "lens multi-terms": (*_set_lens_column("ai-ueba-lens-alerts-by-technique-id", "technique", "params.secondaryFields", ["threat.technique.title"]), "threat.technique.title"),
    "lens last_value sortField": (*_set_lens_column("ai-ueba-lens-top-risky-entities", "level", "params.sortField", "ueba.risk.updated"), "ueba.risk.updated"),
    "lens column filter": (*_set_lens_column("ai-ueba-lens-top-risky-entities", "level", "filter", {"language": "kuery", "query": "ueba.risk.levle: *"}), "ueba.risk.levle"),
    # Mapped for the alert stream, but not in the entity index: the check is per data view.
    "field of another index": (*_set_lens_column("ai-ueba-lens-top-risky-entities", "entity", "sourceField", "data_stream.namespace"), "data_stream.namespace"),
    "search column": (SEARCH, lambda o: o["attributes"]["columns"].append("ueba.alert.explanation.why"), "ueba.alert.explanation.why"),
    "search sort": (SEARCH, lambda o: o["attributes"].__setitem__("sort", [["event.timestamp", "desc"]]), "event.timestamp"),
    "search KQL query": (*_search_source(query='user.name: "bob" and not source.country: DE'), "source.country"),
    "search DSL filter": (*_search_source(filters=[{"meta": {"key": "user.nmae", "type": "phrase"}, "query": {"match_phrase": {"user.nmae": "bob"}}}]), "user.nmae"),
    "data view time field": (ALERTS_DV, lambda o: o["attributes"].__setitem__("timeFieldName", "timestamp"), "timestamp"),
    "dashboard by-value panel": (DASHBOARD, _by_value_panel, "rule.nam"),
}


@pytest.mark.parametrize("case", list(DOCTORED))
def test_an_unmapped_field_is_caught_wherever_it_is_used(objects, case):
    oid, change, field = DOCTORED[case]
    doctored = _doctor(objects, oid, change)
    bad = unmapped_fields(doctored)
    assert {r.field for r in bad} == {field}, bad
    assert field in fields_referenced(doctored)
    assert bad[0].where  # the report says where in the object


def test_runtime_fields_of_a_data_view_count_as_mapped(objects):
    def change(o):
        o["attributes"]["runtimeFieldMap"] = json.dumps({"rule.short": {"type": "keyword", "script": {"source": "emit('x')"}}})

    doctored = _doctor(objects, ALERTS_DV, change)
    by_id(doctored)[SEARCH]["attributes"]["columns"].append("rule.short")
    assert unmapped_fields(doctored) == []


def test_query_fields_ignore_quoted_values():
    assert kibana.query_fields('user.name: "a: b" or (event.severity >= 73 and not "quoted.field": x)') == [
        "quoted.field", "user.name", "event.severity"]
    assert kibana.query_fields("") == []


# --- import against a local Kibana stand-in -----------------------------------------

USER, PASSWORD = "ueba-admin", "pw-Sekr3t!xyz"
API_KEY = base64.b64encode(b"key-id:key-Sekr3t-value").decode()


class FakeKibana(ThreadingHTTPServer):
    """``POST /api/saved_objects/_import`` the way Kibana answers it."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.accept = {"Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(), f"ApiKey {API_KEY}"}
        self.override: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.override:
            return self.override(req)
        if req["headers"].get("kbn-xsrf") is None:
            return 400, {"statusCode": 400, "error": "Bad Request", "message": "Request must contain a kbn-xsrf header."}
        if req["headers"].get("Authorization") not in self.accept:
            return 401, {"statusCode": 401, "error": "Unauthorized", "message": "[security_exception]: unable to authenticate user for REST request"}
        files = [p for p in req["parts"] if p["name"] == "file"]
        if len(files) != 1 or not (files[0]["filename"] or "").endswith(".ndjson"):
            return 400, {"statusCode": 400, "error": "Bad Request", "message": "Invalid file extension"}
        lines = [json.loads(x) for x in files[0]["data"].decode().splitlines() if x.strip()]
        results = [{"type": o["type"], "id": o["id"], "meta": {"title": o["attributes"].get("title", "")}} for o in lines]
        return 200, {"success": True, "successCount": len(lines), "successResults": results}


class _Handler(BaseHTTPRequestHandler):
    server: FakeKibana

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ctype = self.headers.get("Content-Type", "")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
        parts = []
        if msg.is_multipart():
            for part in msg.iter_parts():
                parts.append({
                    "name": part.get_param("name", header="content-disposition"),
                    "filename": part.get_filename(),
                    "content_type": part.get_content_type(),
                    "data": part.get_payload(decode=True),
                })
        url = urlsplit(self.path)
        req = {"path": url.path, "query": parse_qs(url.query), "headers": dict(self.headers), "content_type": ctype, "parts": parts}
        self.server.requests.append(req)
        status, payload = self.server.answer(req)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_kibana():
    server = FakeKibana()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_import_posts_the_file_with_xsrf_overwrite_and_basic_auth(fake_kibana):
    result = import_assets(fake_kibana.url + "/", username=USER, password=PASSWORD)
    assert result["success"] is True and result["successCount"] == len(FIXED_IDS)
    assert {(r["type"], r["id"]) for r in result["successResults"]} == FIXED_IDS
    (req,) = fake_kibana.requests
    assert req["path"] == "/api/saved_objects/_import"
    assert req["query"] == {"overwrite": ["true"]}
    assert req["headers"]["kbn-xsrf"] == "true"
    assert req["headers"]["Authorization"] == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert req["content_type"].startswith("multipart/form-data; boundary=")
    (part,) = req["parts"]
    assert part["name"] == "file" and part["filename"] == "ueba.ndjson"
    assert part["data"] == kibana.DEFAULT_ASSETS.read_bytes()


@pytest.mark.parametrize("key", [API_KEY, "key-id:key-Sekr3t-value"])
def test_import_into_a_space_with_an_api_key(fake_kibana, key):
    result = import_assets(fake_kibana.url, kibana.DEFAULT_ASSETS, api_key=key, space="secops")
    assert result["success"] is True
    (req,) = fake_kibana.requests
    assert req["path"] == "/s/secops/api/saved_objects/_import"
    assert req["query"] == {"overwrite": ["true"]}
    assert req["headers"]["Authorization"] == f"ApiKey {API_KEY}"


def test_default_space_has_no_prefix(fake_kibana):
    import_assets(fake_kibana.url, api_key=API_KEY, space="default")
    assert fake_kibana.requests[0]["path"] == "/api/saved_objects/_import"


def test_a_file_not_named_ndjson_is_uploaded_under_an_ndjson_name(fake_kibana, tmp_path):
    f = tmp_path / "assets.txt"
    f.write_bytes(kibana.DEFAULT_ASSETS.read_bytes())
    assert import_assets(fake_kibana.url, f, api_key=API_KEY)["success"] is True
    assert fake_kibana.requests[0]["parts"][0]["filename"] == "ueba.ndjson"


def test_wrong_password_is_a_kibana_error_without_the_password(fake_kibana):
    with pytest.raises(KibanaError) as info:
        import_assets(fake_kibana.url, username=USER, password=PASSWORD + "-wrong")
    msg = info.value.diagnostics()
    assert "HTTP 401" in msg and "Unauthorized" in msg and "unable to authenticate" in msg
    assert PASSWORD not in msg and "wrong" not in msg
    assert isinstance(info.value, UebaError)


@pytest.mark.parametrize("auth", [{"api_key": API_KEY}, {"username": USER, "password": PASSWORD}])
def test_a_400_that_echoes_credentials_is_redacted(fake_kibana, auth):
    secret = auth.get("password") or auth["api_key"]

    def echo(req):
        return 400, {"statusCode": 400, "error": "Bad Request",
                     "message": f"bad request with {req['headers'].get('Authorization')} (secret {secret})"}

    fake_kibana.override = echo
    with pytest.raises(KibanaError) as info:
        import_assets(fake_kibana.url, **auth)
    msg = str(info.value)
    assert "HTTP 400" in msg and "Bad Request" in msg and "***" in msg
    secret_forms = [PASSWORD, API_KEY, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(), "key-Sekr3t-value"]
    assert not [s for s in secret_forms if s in msg]


def test_partial_failure_is_returned_and_described(fake_kibana):
    fake_kibana.override = lambda req: (200, {
        "success": False, "successCount": 10,
        "errors": [{"type": "lens", "id": "ai-ueba-lens-risk-changes", "meta": {"title": "x"},
                    "error": {"type": "missing_references", "references": [{"type": "index-pattern", "id": RISK_DV}]}}],
    })
    result = import_assets(fake_kibana.url, api_key=API_KEY)
    assert result["success"] is False
    assert kibana.import_errors(result) == [f"lens/ai-ueba-lens-risk-changes: missing_references index-pattern/{RISK_DV}"]


def test_an_answer_that_is_not_the_import_api_is_an_error(fake_kibana):
    fake_kibana.override = lambda req: (200, {"hello": "proxy"})
    with pytest.raises(KibanaError, match="unexpected answer"):
        import_assets(fake_kibana.url, api_key=API_KEY)


def test_unreachable_kibana_is_a_kibana_error_without_credentials():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(KibanaError, match="cannot reach Kibana") as info:
        import_assets(f"http://127.0.0.1:{port}", username=USER, password=PASSWORD, timeout=5)
    assert PASSWORD not in str(info.value)


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(ConfigError) as info:
        import_assets(f"http://{USER}:{PASSWORD}@127.0.0.1:5601", api_key=API_KEY)
    assert PASSWORD not in str(info.value) and API_KEY not in str(info.value)
    with pytest.raises(ConfigError, match="http"):
        import_assets("127.0.0.1:5601", api_key=API_KEY)


def test_input_is_validated_before_anything_is_sent(fake_kibana, tmp_path):
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"type":"lens"}\n')
    with pytest.raises(KibanaError, match="bad.ndjson:1"):
        import_assets(fake_kibana.url, bad, api_key=API_KEY)
    with pytest.raises(KibanaError, match="cannot read"):
        import_assets(fake_kibana.url, tmp_path / "missing.ndjson", api_key=API_KEY)
    with pytest.raises(ConfigError, match="space"):
        import_assets(fake_kibana.url, space="../admin", api_key=API_KEY)
    with pytest.raises(ConfigError, match="not both"):
        import_assets(fake_kibana.url, api_key=API_KEY, username=USER, password=PASSWORD)
    assert fake_kibana.requests == []
