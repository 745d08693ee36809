"""Search sink throughput: ``python -m streams.sinkbench``.

1. Realistic alerts: the full pipeline (detector suite and the Sigma rule
   pack) replayed in-process over the simulator's ``tiny`` preset (about
   30 s); its alerts and risk changes are the templates. Each
   template is cloned with a fresh deterministic id (and entity for risk),
   so every document is new to the engine but reads like a real one.
2. An alerts topic and a risk topic (``--partitions``) are pre-filled with
   ``--alerts`` alerts and the risk changes at the replay's own ratio.
3. The ceiling: the engine alone, documents/s for bulk requests of the same
   documents as ready-made NDJSON (same mix, request size and concurrency),
   measured before and after the sink run (the machine is shared: the mean
   of the two is the reference).
4. The sink (:class:`streams.sink.AlertSink`, the code ``ueba sink`` runs)
   drains the topics into the engine; alerts/s and documents/s are measured
   from its first acknowledged batch to its last commit (consumer group
   start-up excluded) and the engine's ``_count`` is checked afterwards.

Runs against OpenSearch (``UEBA_SEARCH__URL``) and, when it answers, the
Elasticsearch API emulator (``--es-url``, ``deploy/es-emulator.sh up``).
Needs Kafka and the engine (``ueba services up``). Prints figures; asserts
nothing. Each run uses its own topics and namespace and deletes its data
streams afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import threading
import time
import uuid
from dataclasses import replace
from typing import Any

import httpx
from confluent_kafka import Producer

from .alerts import Alert
from .kafka import ensure_topics
from .risk import RiskChange
from .search import alert_stream, engine_info, install_templates, make_client, risk_index, risk_stream
from .settings import Settings, get_settings

TARGET = 2000.0  # alerts/s into the engine (issue 5)


def templates(seed: int) -> tuple[list[Alert], list[RiskChange], int]:
    """Alerts and risk changes raised by the real pipeline over the whole tiny preset.

    A suppressed alert is taken in its first form (count 1), as the sink
    first sees it; the ratio of risk changes to alerts is the pipeline's.
    """
    from .evaluate import _replayer
    from .policy import Policy
    from .simulate import SimulationConfig, simulate

    s = Settings(worker={"rules_enabled": True, "scorer": "suite"})
    rp = _replayer(s, Policy.load(None))
    events = 0
    for kind, doc in simulate(SimulationConfig.preset("tiny", seed=seed)):
        rp.feed(doc, stream=kind)
        events += 1
    alerts = [replace(a, count=1, first_seen=None, last_seen=None) for a in rp.alerts.values()]
    return alerts, list(rp.risk_changes), events


def _new_id(run: str, i: int) -> str:
    return hashlib.sha256(f"{run}:{i}".encode()).hexdigest()[:40]


def build_records(alerts: list[Alert], risk: list[RiskChange], n: int, run: str) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """``n`` alerts cloned from the templates with new ids, and risk changes at the templates' ratio."""
    now = time.time()
    out_a: list[tuple[bytes, bytes]] = []
    for i in range(n):
        t = alerts[i % len(alerts)]
        a = replace(t, id=_new_id(run, i), ts=now - (n - i) * 0.01)
        out_a.append((f"{a.entity_type}:{a.entity}".encode(), a.to_json()))
    out_r: list[tuple[bytes, bytes]] = []
    if risk:
        n_risk = round(n * len(risk) / max(1, len(alerts)))
        for i in range(n_risk):
            t = risk[i % len(risk)]
            rc = replace(t, entity=f"{t.entity}-{run}-{i % 997}", ts=t.ts + i * 1e-3)  # id derives from entity, ts, level
            out_r.append((f"{rc.entity_type}:{rc.entity}".encode(), rc.to_json()))
    return out_a, out_r


def prefill(s: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    p = Producer({**s.kafka.confluent_config(), "linger.ms": 20, "compression.type": "lz4"})
    for i, (key, value) in enumerate(records):
        while True:
            try:
                p.produce(topic, key=key, value=value)
                break
            except BufferError:
                p.poll(0.5)
        if i % 5000 == 0:
            p.poll(0)
    if p.flush(120):
        raise RuntimeError("could not pre-fill the benchmark topics")


def _settings(base: Settings, tag: str, url: str, engine: str, partitions: int) -> Settings:
    run = f"sinkbench{tag}{uuid.uuid4().hex[:6]}"
    topics = base.topics.model_copy(
        update={k: f"{run}.{k}" for k in ("access", "api", "telemetry", "bysource", "candidates", "alerts", "risk", "deadletter")} | {"partitions": partitions}
    )
    search = base.search.model_copy(update={"url": url, "engine": engine, "namespace": run})
    worker = base.worker.model_copy(update={"app_id": run, "webhooks_file": None})
    return base.model_copy(update={"topics": topics, "search": search, "worker": worker})


def run_once(s: Settings, alerts: list[tuple[bytes, bytes]], risk: list[tuple[bytes, bytes]], batch_size: int, max_in_flight: int) -> dict[str, Any]:
    from .sink import AlertSink

    client = make_client(s.search)
    install_templates(client, s.search.engine)
    ensure_topics(s)
    prefill(s, s.topics.alerts, alerts)
    prefill(s, s.topics.risk, risk)
    total = len(alerts) + len(risk)
    sink = AlertSink(s, batch_size=batch_size, max_in_flight=max_in_flight)
    first: list[float] = []
    err: list[BaseException] = []

    def body() -> None:
        try:
            sink.run()
        except BaseException as exc:  # reported below
            err.append(exc)

    th = threading.Thread(target=body, name="sinkbench-sink", daemon=True)
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    th.start()
    deadline = time.monotonic() + 600
    first_batch = 0
    while time.monotonic() < deadline and not err:
        consumed = sink.stats.consumed
        if consumed and not first:
            first.append(time.perf_counter())
            first_batch = consumed
        if consumed >= total:
            break
        time.sleep(0.02)
    t_end = time.perf_counter()
    cpu = time.process_time() - cpu_start
    sink.stop()
    th.join(60)
    if err:
        raise err[0]
    st = sink.stats
    if not first or st.consumed < total:
        return {"error": f"only {st.consumed} of {total} records consumed", "stats": st}
    # From the first acknowledged batch to the last: that first batch's records
    # are not counted (their time is not measured).
    span = max(t_end - first[0], 1e-9)
    counted = total - first_batch
    n_alerts = len(alerts)
    rate_records = counted / span
    idx = alert_stream(s.search.namespace)
    client.indices.refresh(index=idx)
    count = client.count(index=idx)
    count = (count.body if hasattr(count, "body") else count)["count"]
    out = {
        "records": total,
        "alerts": n_alerts,
        "risk": len(risk),
        "seconds": span,
        "alerts_per_s": rate_records * n_alerts / total,
        "docs_per_s": rate_records * (n_alerts + 2 * len(risk)) / total,
        "wall_with_startup": t_end - t_start,
        "cpu_us_per_record": 1e6 * cpu / total,
        "engine_count": count,
        "stats": st,
    }
    return out


def ceiling(s: Settings, alerts: list[tuple[bytes, bytes]], risk: list[tuple[bytes, bytes]], n: int, batch_size: int,
            in_flight: int, tag: str = "ceil") -> float:
    """The engine alone: documents/s for bulk requests of ready-made NDJSON (no Kafka, no sink).

    The same documents the sink writes for ``n`` records of the same mix: an
    alert document per alert; a risk-change document and the entity's
    latest-risk document per risk change.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .search import BulkWriter, bulk_body
    from .sink import _entity_doc

    client = make_client(s.search)
    install_templates(client, s.search.engine)
    ns = s.search.namespace + tag
    now = time.time()
    n_risk = round(n * len(risk) / max(1, len(alerts) + len(risk)))
    alert_docs = []
    for _, value in alerts[: n - n_risk]:
        a = Alert.from_json(value)
        alert_docs.append((alert_stream(ns), a.id, a.to_ecs(ns, ingested=now), "create"))
    risk_docs = []
    for _, value in risk[:n_risk]:
        rc = RiskChange.from_json(value)
        risk_docs.append([(risk_stream(ns), rc.id, rc.to_ecs(ns), "create"),
                          (risk_index(ns), f"{rc.entity_type}:{rc.entity}", _entity_doc(rc), "index")])
    # risk changes spread evenly through the alerts, as they arrive
    docs: list[tuple[str, str, dict[str, Any], str]] = []
    every = len(alert_docs) / max(1, len(risk_docs))
    r = 0
    for i, d in enumerate(alert_docs):
        docs.append(d)
        while r < len(risk_docs) and r * every <= i:
            docs.extend(risk_docs[r])
            r += 1
    for pair in risk_docs[r:]:
        docs.extend(pair)
    bodies = [bulk_body(docs[i : i + batch_size]) for i in range(0, len(docs), batch_size)]
    writer = BulkWriter(client, s.search.engine)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as ex:
        for resp in ex.map(writer._bulk, bodies):
            bad = [i for i in resp.get("items", []) if next(iter(i.values())).get("status", 0) >= 300]
            if bad:
                raise RuntimeError(f"ceiling run: {len(bad)} documents refused, e.g. {bad[0]}")
    rate = len(docs) / max(time.perf_counter() - t0, 1e-9)
    try:
        client.indices.delete(index=risk_index(ns), ignore_unavailable=True)
    except Exception:
        pass
    for name in (alert_stream(ns), risk_stream(ns)):
        _drop(client, name)
    return rate


def _drop(client: Any, name: str) -> None:
    """Delete a data stream (the emulator has no data stream API: then the index of that name)."""
    try:
        client.indices.delete_data_stream(name=name)
    except Exception:
        try:
            client.indices.delete(index=name, ignore_unavailable=True)
        except Exception:
            pass


def _cleanup(client: Any, s: Settings) -> None:
    ns = s.search.namespace
    for name in (alert_stream(ns), risk_stream(ns)):
        _drop(client, name)
    try:
        client.indices.delete(index=risk_index(ns), ignore_unavailable=True)
    except Exception:
        pass
    from confluent_kafka.admin import AdminClient

    from .kafka import all_topics

    adm = AdminClient(s.kafka.confluent_config())
    for fut in adm.delete_topics(all_topics(s), operation_timeout=30).values():
        try:
            fut.result(timeout=60)  # wait: the request is lost if the client goes away first
        except Exception:
            pass


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _load() -> str:
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average ?"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=30_000, help="alerts to pre-fill (risk changes come on top)")
    ap.add_argument("--es-alerts", type=int, default=5_000, help="alerts for the Elasticsearch API emulator (it indexes slowly)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=None, help="the sink's batch size (default: UEBA_SINK__BATCH_SIZE)")
    ap.add_argument("--max-in-flight", type=int, default=None, help="bulk requests in flight (default: UEBA_SINK__MAX_IN_FLIGHT)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--ceiling-records", type=int, default=10_000, help="records (alerts and risk changes) for the engine-alone ceiling")
    ap.add_argument("--es-url", default=os.environ.get("UEBA_TEST_ES_EMULATOR_URL", "http://127.0.0.1:9201"),
                    help="Elasticsearch API emulator (skipped when it does not answer)")
    ap.add_argument("--engines", default="opensearch,elasticsearch")
    args = ap.parse_args(argv)
    base = get_settings()
    t0 = time.perf_counter()
    alerts, risk, events = templates(args.seed)
    print(f"templates: {len(alerts)} alerts and {len(risk)} risk changes raised by the pipeline over {events} simulated events "
          f"({time.perf_counter() - t0:.0f} s)")
    run = uuid.uuid4().hex[:8]
    a_recs, r_recs = build_records(alerts, risk, args.alerts, run)
    avg = sum(len(v) for _, v in a_recs) / max(1, len(a_recs))
    print(f"records: {len(a_recs)} alerts (avg {avg:,.0f} bytes on the wire) + {len(r_recs)} risk changes, "
          f"{args.partitions} partitions, sink batch {args.batch_size or base.sink.batch_size}, "
          f"{args.max_in_flight or base.sink.max_in_flight} bulk requests in flight; {_load()}")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for engine in engines:
        url = base.search.url if engine == "opensearch" else args.es_url
        if not _answers(url):
            print(f"{engine}: nothing answers at {url}; skipped")
            continue
        s = _settings(base, engine[:2], url, engine, args.partitions)
        info = engine_info(make_client(s.search))
        name = f"OpenSearch {info['number']}" if engine == "opensearch" else f"Elasticsearch API {info['number']} (noida-db emulator)"
        bs, mif = args.batch_size or base.sink.batch_size, args.max_in_flight or base.sink.max_in_flight
        n = len(a_recs) if engine == "opensearch" else min(len(a_recs), args.es_alerts)
        a_use, r_use = a_recs[:n], r_recs[: round(len(r_recs) * n / max(1, len(a_recs)))]
        try:
            n_ceil = min(len(a_use) + len(r_use), args.ceiling_records)
            before = ceiling(s, a_use, r_use, n_ceil, bs, mif, "ceil1")
            print(f"{name}: engine ceiling {before:,.0f} documents/s (bulk requests of the same documents as ready-made NDJSON, "
                  f"{bs} per request, {mif} in flight; no Kafka, no sink); {_load()}")
            r = run_once(s, a_use, r_use, bs, mif)
            after = ceiling(s, a_use, r_use, n_ceil, bs, mif, "ceil2")
        finally:
            _cleanup(make_client(s.search), s)
        ceil = (before + after) / 2
        print(f"{name}: engine ceiling again after the sink run {after:,.0f} documents/s; {_load()}")
        if "error" in r:
            print(f"{name}: FAILED: {r['error']} ({r['stats']})")
            continue
        st = r["stats"]
        verdict = "meets" if r["alerts_per_s"] >= TARGET else "BELOW"
        print(
            f"{name}: sink {r['alerts_per_s']:,.0f} alerts/s ({r['docs_per_s']:,.0f} documents/s incl. risk, "
            f"{r['docs_per_s'] / ceil:.0%} of the mean ceiling) over {r['seconds']:.1f} s; "
            f"{verdict} the {TARGET:,.0f} alerts/s target; engine _count {r['engine_count']} of {r['alerts']} alerts; "
            f"created {st.created}, existed {st.existed}, dead-lettered {st.deadlettered}, batches {st.batches}; "
            f"{r['wall_with_startup']:.1f} s with start-up; sink process CPU {r['cpu_us_per_record']:.0f} µs per record "
            f"(all threads, librdkafka's included); {_load()}"
        )


if __name__ == "__main__":
    main()
