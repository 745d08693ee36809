"""Smoke test of the dev/CI OpenSearch node started by deploy/opensearch.sh, with opensearch-py.

    bash deploy/opensearch.sh up
    .venv/bin/python deploy/opensearch/smoke.py [--port 9200] [--keep]

Checks, for real, what ai-ueba relies on: GET / (version, distribution), the loaded modules,
component + composable index templates with a data stream and explicit mappings, bulk `create`
into the data stream with explicit _ids (duplicate _id => per-item 409), a per-item mapping error,
_count, terms + date_histogram aggregations, painless (script_score, _update_by_query, ingest
script using an ingest-common painless extension), and an ingest pipeline with a `set` processor.
Everything it creates is named ueba-smoke-* / logs-ueba.alert-default and is deleted first (and
at the end unless --keep). Exit 0 when all checks pass; last line "N passed, M failed".
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Any, Callable

from opensearchpy import NotFoundError, OpenSearch, RequestError

DATA_STREAM = "logs-ueba.alert-default"
INDEX_TEMPLATE = "ueba-smoke-alerts"
CT_SETTINGS = "ueba-smoke-alerts-settings"
CT_MAPPINGS = "ueba-smoke-alerts-mappings"
PIPELINE = "ueba-smoke-alerts-ingest"

EXPECTED_MODULES = {
    "org.opensearch.transport.Netty4Plugin",
    "org.opensearch.analysis.common.CommonAnalysisPlugin",
    "org.opensearch.painless.PainlessPlugin",
    "org.opensearch.index.mapper.MapperExtrasPlugin",
    "org.opensearch.index.reindex.ReindexPlugin",
    "org.opensearch.join.ParentJoinPlugin",
    "org.opensearch.ingest.common.IngestCommonPlugin",
    "org.opensearch.search.aggregations.matrix.MatrixAggregationPlugin",
    "org.opensearch.percolator.PercolatorPlugin",
    "org.opensearch.index.rankeval.RankEvalPlugin",
    "org.opensearch.script.mustache.MustachePlugin",
}

# 6 alerts over 3 hours, 3 users; risk scores chosen so painless results are checkable.
DOCS = [
    ("a1", "2026-01-10T10:05:00Z", "alice", "impossible_travel", 80, 0.9, "10.0.0.1", 52.52, 13.40),
    ("a2", "2026-01-10T10:40:00Z", "bob", "mass_download", 40, 0.5, "10.0.0.2", 48.85, 2.35),
    ("a3", "2026-01-10T11:15:00Z", "alice", "mass_download", 60, 0.7, "10.0.0.1", 52.52, 13.40),
    ("a4", "2026-01-10T11:50:00Z", "carol", "rare_process", 20, 0.2, "10.0.0.3", 40.71, -74.00),
    ("a5", "2026-01-10T12:10:00Z", "alice", "rare_process", 95, 0.99, "10.0.0.9", 35.68, 139.69),
    ("a6", "2026-01-10T12:30:00Z", "bob", "impossible_travel", 10, 0.1, "10.0.0.2", 48.85, 2.35),
]


def alert(doc: tuple) -> dict[str, Any]:
    _id, ts, user, rule, risk, conf, ip, lat, lon = doc
    return {
        "@timestamp": ts,
        "user": {"name": user.upper()},  # lower-cased by the ingest pipeline's painless script
        "rule": {"name": rule},
        "risk_score": risk,
        "confidence": conf,
        "source": {"ip": ip, "geo": {"location": {"lat": lat, "lon": lon}}},
        "labels": {"tenant": "acme", "env": "dev"},
    }


class Smoke:
    def __init__(self, client: OpenSearch) -> None:
        self.c = client
        self.passed = 0
        self.failed = 0

    def check(self, name: str, fn: Callable[[], str]) -> None:
        try:
            detail = fn()
            self.passed += 1
            print(f"ok    {name}: {detail}")
        except Exception as e:  # noqa: BLE001 - report and go on
            self.failed += 1
            print(f"FAIL  {name}: {type(e).__name__}: {e}")
            if os.environ.get("SMOKE_TRACE"):
                traceback.print_exc()

    def cleanup(self) -> None:
        for fn in (
            lambda: self.c.indices.delete_data_stream(name=DATA_STREAM),
            lambda: self.c.indices.delete_index_template(name=INDEX_TEMPLATE),
            lambda: self.c.cluster.delete_component_template(name=CT_SETTINGS),
            lambda: self.c.cluster.delete_component_template(name=CT_MAPPINGS),
            lambda: self.c.ingest.delete_pipeline(id=PIPELINE),
            lambda: self.c.indices.delete(index="ueba-smoke-flattened"),
        ):
            try:
                fn()
            except NotFoundError:
                pass


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


def run(c: OpenSearch, keep: bool) -> Smoke:
    s = Smoke(c)
    s.cleanup()

    def root() -> str:
        info = c.info()
        v = info["version"]
        expect(v["distribution"] == "opensearch", f"distribution {v.get('distribution')}")
        expect(v["number"].startswith("2.19."), f"version {v['number']}")
        return f"opensearch {v['number']} ({v['distribution']}), lucene {v['lucene_version']}, cluster {info['cluster_name']}"

    def modules() -> str:
        rows = c.cat.plugins(format="json")
        have = {r["component"] for r in rows}
        missing = EXPECTED_MODULES - have
        expect(not missing, f"missing modules {sorted(missing)}")
        return f"{len(have)} modules loaded, incl. netty4, painless, ingest-common, reindex, mapper-extras, mustache"

    def health() -> str:
        h = c.cluster.health(wait_for_status="yellow")
        expect(h["status"] in ("yellow", "green"), h["status"])
        return f"status {h['status']}"

    def pipeline() -> str:
        c.ingest.put_pipeline(
            id=PIPELINE,
            body={
                "description": "ai-ueba smoke: set + painless (ingest-common)",
                "processors": [
                    {"set": {"field": "event.ingested", "value": "{{_ingest.timestamp}}"}},
                    {"set": {"field": "event.kind", "value": "alert"}},
                    # Processors.lowercase comes from ingest-common's PainlessExtension
                    {"script": {"lang": "painless", "source": "ctx.user.name = Processors.lowercase(ctx.user.name)"}},
                ],
            },
        )
        sim = c.ingest.simulate(id=PIPELINE, body={"docs": [{"_source": {"user": {"name": "ALICE"}}}]})
        src = sim["docs"][0]["doc"]["_source"]
        expect(src["event"]["kind"] == "alert" and "ingested" in src["event"], f"set processor: {src}")
        expect(src["user"]["name"] == "alice", f"painless Processors.lowercase: {src}")
        return "pipeline with set processors + painless Processors.lowercase() (ingest-common extension) simulated"

    def component_templates() -> str:
        c.cluster.put_component_template(
            name=CT_SETTINGS,
            body={"template": {"settings": {"number_of_shards": 1, "number_of_replicas": 0, "index.default_pipeline": PIPELINE}}},
        )
        c.cluster.put_component_template(
            name=CT_MAPPINGS,
            body={
                "template": {
                    "mappings": {
                        "dynamic": "strict",
                        "properties": {
                            "@timestamp": {"type": "date"},
                            "event": {"properties": {"ingested": {"type": "date"}, "kind": {"type": "keyword"}}},
                            "user": {"properties": {"name": {"type": "keyword"}}},
                            "rule": {"properties": {"name": {"type": "keyword"}}},
                            "risk_score": {"type": "long"},
                            "confidence": {"type": "float"},
                            "triage": {"type": "keyword"},
                            "source": {
                                "type": "object",
                                "properties": {
                                    "ip": {"type": "ip"},
                                    "geo": {"properties": {"location": {"type": "geo_point"}}},
                                },
                            },
                            # OpenSearch's answer to ES "flattened"
                            "labels": {"type": "flat_object"},
                        },
                    }
                }
            },
        )
        for name in (CT_SETTINGS, CT_MAPPINGS):
            got = c.cluster.get_component_template(name=name)["component_templates"]
            expect(got[0]["name"] == name, str(got))
        return f"{CT_SETTINGS} (settings, default_pipeline) + {CT_MAPPINGS} (keyword/date/long/float/ip/geo_point/object/flat_object)"

    def flattened_type() -> str:
        # ES' "flattened" does not exist in OpenSearch: make sure we know it (use flat_object).
        try:
            c.indices.create(index="ueba-smoke-flattened", body={"mappings": {"properties": {"x": {"type": "flattened"}}}})
        except RequestError as e:
            expect("No handler for type [flattened]" in str(e.info), str(e.info))
            return "'flattened' rejected (No handler for type [flattened]); 'flat_object' is the OpenSearch type"
        raise AssertionError("'flattened' unexpectedly accepted")

    def index_template() -> str:
        c.indices.put_index_template(
            name=INDEX_TEMPLATE,
            body={
                "index_patterns": ["logs-ueba.alert-*"],
                "data_stream": {},
                "priority": 200,
                "composed_of": [CT_SETTINGS, CT_MAPPINGS],
                "template": {"mappings": {"properties": {"rule": {"properties": {"severity": {"type": "keyword"}}}}}},
                "_meta": {"owner": "ai-ueba", "purpose": "smoke"},
            },
        )
        sim = c.indices.simulate_index_template(name=DATA_STREAM)
        props = sim["template"]["mappings"]["properties"]
        expect(props["labels"]["type"] == "flat_object" and "severity" in props["rule"]["properties"], str(props))
        return "composable template logs-ueba.alert-* with data_stream {}, composed_of 2 component templates (simulated)"

    def data_stream() -> str:
        c.indices.create_data_stream(name=DATA_STREAM)
        ds = c.indices.get_data_stream(name=DATA_STREAM)["data_streams"][0]
        backing = [i["index_name"] for i in ds["indices"]]
        expect(ds["template"] == INDEX_TEMPLATE and ds["timestamp_field"]["name"] == "@timestamp", str(ds))
        expect(backing[0].startswith(f".ds-{DATA_STREAM}-"), str(backing))
        return f"{DATA_STREAM} created, backing {backing}, status {ds['status']}"

    def bulk_create() -> str:
        body: list[dict] = []
        for d in DOCS:
            body += [{"create": {"_index": DATA_STREAM, "_id": d[0]}}, alert(d)]
        r = c.bulk(body=body, refresh="true")
        expect(not r["errors"], str([i for i in r["items"] if "error" in i["create"]]))
        statuses = {i["create"]["status"] for i in r["items"]}
        expect(statuses == {201}, str(statuses))
        return f"{len(DOCS)} docs, op_type create, explicit _ids, all 201"

    def bulk_item_errors() -> str:
        body = [
            {"create": {"_index": DATA_STREAM, "_id": "a1"}},  # duplicate _id
            alert(DOCS[0]),
            {"create": {"_index": DATA_STREAM, "_id": "bad-long"}},  # string into a long
            {**alert(DOCS[1]), "risk_score": "very-high"},
            {"create": {"_index": DATA_STREAM, "_id": "bad-ip"}},  # not an ip
            {**alert(DOCS[1]), "source": {"ip": "not-an-ip"}},
            {"create": {"_index": DATA_STREAM, "_id": "a7"}},  # fine
            {**alert(DOCS[2]), "@timestamp": "2026-01-10T12:45:00Z"},
            {"index": {"_index": DATA_STREAM, "_id": "a8"}},  # data streams only take op_type create
            alert(DOCS[3]),
        ]
        r = c.bulk(body=body, refresh="true")
        expect(r["errors"] is True, "errors flag not set")
        items = [next(iter(i.values())) for i in r["items"]]
        got = [(i["_id"], i["status"], i.get("error", {}).get("type")) for i in items]
        expect(got[0][1:] == (409, "version_conflict_engine_exception"), str(got[0]))
        expect(got[1][1:] == (400, "mapper_parsing_exception"), str(got[1]))
        expect(got[2][1:] == (400, "mapper_parsing_exception"), str(got[2]))
        expect(got[3][1] == 201, str(got[3]))
        expect(got[4][1] == 400 and got[4][2] == "illegal_argument_exception", str(got[4]))
        return "per item: " + ", ".join(f"{i}={st}{'/' + t if t else ''}" for i, st, t in got)

    def count() -> str:
        n = c.count(index=DATA_STREAM)["count"]
        expect(n == 7, f"count {n}")
        n_alice = c.count(index=DATA_STREAM, body={"query": {"term": {"user.name": "alice"}}})["count"]
        expect(n_alice == 4, f"alice {n_alice}")
        return f"_count {n} (6 + a7), user.name=alice -> {n_alice} (lower-cased by the pipeline)"

    def pipeline_applied() -> str:
        hit = c.search(index=DATA_STREAM, body={"query": {"ids": {"values": ["a1"]}}})["hits"]["hits"][0]
        src = hit["_source"]
        expect(src["event"]["kind"] == "alert" and src["event"]["ingested"], str(src))
        expect(hit["_index"].startswith(".ds-"), hit["_index"])
        return f"default_pipeline ran on bulk docs: event.kind={src['event']['kind']}, event.ingested={src['event']['ingested']}"

    def aggs() -> str:
        r = c.search(
            index=DATA_STREAM,
            body={
                "size": 0,
                "query": {"range": {"@timestamp": {"gte": "2026-01-10T00:00:00Z", "lt": "2026-01-11T00:00:00Z"}}},
                "aggs": {
                    "users": {"terms": {"field": "user.name", "size": 10}, "aggs": {"max_risk": {"max": {"field": "risk_score"}}}},
                    "per_hour": {"date_histogram": {"field": "@timestamp", "fixed_interval": "1h", "min_doc_count": 0}},
                    "by_net": {"terms": {"field": "source.ip"}},
                    "centroid": {"geo_centroid": {"field": "source.geo.location"}},
                },
            },
        )
        a = r["aggregations"]
        users = {b["key"]: (b["doc_count"], b["max_risk"]["value"]) for b in a["users"]["buckets"]}
        expect(users == {"alice": (4, 95.0), "bob": (2, 40.0), "carol": (1, 20.0)}, str(users))
        hours = [(b["key_as_string"][11:16], b["doc_count"]) for b in a["per_hour"]["buckets"]]
        expect(hours == [("10:00", 2), ("11:00", 2), ("12:00", 3)], str(hours))
        ips = {b["key"] for b in a["by_net"]["buckets"]}
        expect("10.0.0.1" in ips, str(ips))
        # flat_object: term queries on sub-paths work; aggregations on them are NOT supported in
        # OpenSearch 2.19 (opensearch-project/OpenSearch#14225: a terms agg on labels.tenant answers a
        # bogus "java.lang.Object@..." bucket). Map anything we aggregate on as keyword.
        n = c.count(index=DATA_STREAM, body={"query": {"term": {"labels.tenant": "acme"}}})["count"]
        expect(n == 7, f"flat_object term query {n}")
        return f"terms users {users}; date_histogram 1h {hours}; ip terms, geo_centroid, flat_object term query ok"

    def painless_score() -> str:
        r = c.search(
            index=DATA_STREAM,
            body={
                "size": 3,
                "query": {
                    "script_score": {
                        "query": {"match_all": {}},
                        "script": {
                            "lang": "painless",
                            "source": "doc['risk_score'].value * doc['confidence'].value * params.w",
                            "params": {"w": 2},
                        },
                    }
                },
            },
        )
        top = [(h["_id"], round(h["_score"], 2)) for h in r["hits"]["hits"]]
        expect(top[0][0] == "a5" and abs(top[0][1] - 95 * 0.99 * 2) < 0.1, str(top))
        return f"script_score top3 {top}"

    def painless_update_by_query() -> str:
        r = c.update_by_query(
            index=DATA_STREAM,
            body={
                "query": {"range": {"risk_score": {"gte": 60}}},
                "script": {"lang": "painless", "source": "ctx._source.triage = params.t", "params": {"t": "escalated"}},
            },
            refresh=True,
            conflicts="proceed",
        )
        expect(r["updated"] == 4 and not r["failures"], str(r))
        n = c.count(index=DATA_STREAM, body={"query": {"term": {"triage": "escalated"}}})["count"]
        expect(n == 4, f"escalated {n}")
        return f"_update_by_query (reindex module) + painless: updated {r['updated']}, count(triage=escalated)={n}"

    def painless_execute() -> str:
        r = c.transport.perform_request(
            "POST",
            "/_scripts/painless/_execute",
            body={"script": {"source": "params.a.stream().mapToInt(x -> x).sum() * 2", "params": {"a": [1, 2, 3]}}},
        )
        expect(str(r["result"]) == "12", str(r))
        return f"_scripts/painless/_execute lambda/stream -> {r['result']}"

    def dup_create_again() -> str:
        # single-document create with an existing _id also answers 409
        try:
            c.create(index=DATA_STREAM, id="a2", body=alert(DOCS[1]))
        except Exception as e:  # opensearchpy.ConflictError
            expect(getattr(e, "status_code", None) == 409, repr(e))
            return "PUT _create/a2 again -> 409 conflict"
        raise AssertionError("duplicate create accepted")

    s.check("GET /", root)
    s.check("modules", modules)
    s.check("cluster health", health)
    s.check("ingest pipeline", pipeline)
    s.check("component templates", component_templates)
    s.check("flattened vs flat_object", flattened_type)
    s.check("composable index template", index_template)
    s.check("data stream", data_stream)
    s.check("bulk create", bulk_create)
    s.check("bulk per-item errors", bulk_item_errors)
    s.check("_count", count)
    s.check("default pipeline", pipeline_applied)
    s.check("aggregations", aggs)
    s.check("painless script_score", painless_score)
    s.check("painless update_by_query", painless_update_by_query)
    s.check("painless execute", painless_execute)
    s.check("duplicate create", dup_create_again)

    if not keep:
        s.cleanup()
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=int(os.environ.get("OS_PORT", "9200")))
    ap.add_argument("--keep", action="store_true", help="leave the data stream, templates and pipeline in place")
    args = ap.parse_args()
    client = OpenSearch(hosts=[{"host": args.host, "port": args.port}], use_ssl=False, timeout=30)
    s = run(client, args.keep)
    print(f"{s.passed} passed, {s.failed} failed")
    return 0 if s.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
