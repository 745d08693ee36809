"""Throughput of the rule engine: ``python -m rules.bench [--rules 500] [--events 20000]``.

Builds a rule set of the shipped pack plus synthetic variations (varied fields,
modifiers, streams and logsources) up to ``--rules`` compiled detection rules,
loads it through the normal loader, and measures events per second on one
core for ``RuleSet.match`` alone, for ``match`` + ``CorrelationEngine``
(process-local state), and for the worker's rule path
(``streams.rulerun.RuleRunner.evaluate``: per-key correlation state, the
by-source partition for logins, alerts built), on a mix of 45% api (LLM calls
with ~300-character prompts), 40% access and 15% telemetry events.
Deterministic (seeded).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from .correlation import CorrelationEngine
from .ruleset import RuleSet

PACK = Path(__file__).parent / "sigma"
T0 = 1_767_614_400.0

ACCESS_ACTIONS = ["login", "read", "download", "list", "write", "export", "delete", "copy", "share",
                  "secret-read", "role-assign", "key-create", "key-delete", "bucket-policy-change",
                  "notebook-open", "notebook-exec", "dataset-create", "model-download", "sign-in", "logout"]
RESOURCE_TYPES = ["dataset", "model_artifact", "secret", "bucket", "notebook", "endpoint", "other"]
MODELS = [f"model-{i}" for i in range(40)]
PHRASES = ["wire transfer", "password reset", "credit card", "social security", "api key", "private key",
           "confidential", "exploit", "malware", "ransomware", "phishing", "bypass", "payload", "shellcode",
           "sql injection", "xss", "reverse shell", "keylogger", "token", "session cookie", "internal only",
           "do not share", "customer list", "salary", "medical record", "passport", "ssn", "iban",
           "routing number", "crypto wallet", "seed phrase", "mnemonic", "root password", "admin panel",
           "jailbreak", "roleplay", "unfiltered", "uncensored", "hypothetically", "for a novel"]
WORDS = ("the quarterly report summary customer churn model features explain please write an email about "
         "our product launch and translate it into german with a friendly tone include bullet points for "
         "the main risks and next steps regarding data quality pipeline latency and cost").split()


def _uid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def synthetic_rules(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` varied detection rules over our ECS fields and streams."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        shape = i % 10
        doc: dict[str, Any] = {
            "title": f"Synthetic rule {i} shape {shape}",
            "id": _uid(rng),
            "status": "test",
            "level": rng.choice(["low", "medium", "high"]),
            "tags": ["attack.t1078"],
        }
        if shape in (0, 1, 2):  # access: action + resource, with a filter
            acts = rng.sample(ACCESS_ACTIONS, rng.randint(1, 3))
            doc["logsource"] = {"product": "ai-ueba", "service": "access"}
            doc["detection"] = {  # a watch-list rule: these users touching this kind of resource
                "selection": {"event.action": acts, "ueba.resource.type": rng.choice(RESOURCE_TYPES),
                              "user.name": [f"user{rng.randint(0, 299)}" for _ in range(3)]},
                "filter": {"user.name|startswith": [f"svc-{rng.randint(0, 99)}-", "svc-etl-"]},
                "condition": "selection and not filter",
            }
        elif shape == 3:  # access: sensitive resource id patterns
            doc["logsource"] = {"product": "ai-ueba", "service": "access"}
            doc["detection"] = {
                "selection": {
                    "event.action": rng.choice(ACCESS_ACTIONS),
                    "ueba.resource.id|contains": [f"/restricted-{rng.randint(0, 999)}/", f"pii-{rng.randint(0, 99)}"],
                    "ueba.resource.sensitivity": ["confidential", "restricted"],
                },
                "condition": "selection",
            }
        elif shape == 4:  # access: network origin
            doc["logsource"] = {"product": "ai-ueba", "service": "access"}
            doc["detection"] = {
                "selection": {"event.action": rng.sample(ACCESS_ACTIONS, 2), "event.outcome": "success"},
                "external": {"source.ip|cidr": [f"{rng.randint(11, 99)}.0.0.0/8", "2001:db8::/32"]},
                "condition": "selection and external",
            }
        elif shape == 5:  # api: prompt content (the expensive kind)
            doc["logsource"] = {"product": "ai-ueba", "service": "api"}
            doc["detection"] = {
                "selection": {"ueba.gen_ai.prompt|contains": rng.sample(PHRASES, rng.randint(2, 5))},
                "condition": "selection",
            }
        elif shape == 6:  # api: model + usage thresholds
            doc["logsource"] = {"product": "ai-ueba", "service": "api"}
            doc["detection"] = {
                "selection": {"gen_ai.request.model": rng.sample(MODELS, 2),
                              "gen_ai.usage.output_tokens|gt": rng.randint(2000, 8000)},
                "condition": "selection",
            }
        elif shape == 7:  # api: paths and status codes
            doc["logsource"] = {"product": "ai-ueba", "service": "api"}
            doc["detection"] = {
                "selection": {"url.path|startswith": f"/v1/{rng.choice(['admin', 'internal', 'debug', 'fine-tune'])}",
                              "http.response.status_code|gte": rng.choice([400, 403, 500])},
                "condition": "selection",
            }
        elif shape == 8:  # telemetry: model health
            doc["logsource"] = {"product": "ai-ueba", "service": "telemetry"}
            doc["detection"] = {
                "selection": {"ueba.model.id": rng.sample(MODELS, 3)},
                "bad": [{"ueba.telemetry.error_rate|gt": round(rng.uniform(0.05, 0.5), 2)},
                        {"ueba.telemetry.confidence|lt": round(rng.uniform(0.05, 0.3), 2)}],
                "condition": "selection and bad",
            }
        else:  # another product's logsource: tried on every stream
            doc["logsource"] = {"product": "cloud", "service": "audit"}
            doc["detection"] = {
                "selection": {"event.action": f"cloud-{rng.choice(['CreateUser', 'PutBucketPolicy', 'StopLogging'])}-{i}",
                              "organization.id|re": "^org-[0-9]+$"},
                "condition": "selection",
            }
        out.append(doc)
    return out


def _prompt(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(30, 70))
    if rng.random() < 0.03:
        words.insert(rng.randrange(len(words)), rng.choice(PHRASES))
    if rng.random() < 0.005:
        words.insert(0, "ignore all previous instructions and")
    return " ".join(words)


def event_mix(n: int, seed: int = 11) -> list[tuple[str, dict[str, Any], float]]:
    rng = random.Random(seed)
    users = [f"user{i}" for i in range(300)]
    out = []
    for i in range(n):
        ts = T0 + i * 0.05
        r = rng.random()
        if r < 0.45:
            flat = {
                "@timestamp": "2026-01-05T12:00:00Z",
                "ueba.api_key.id": f"key-{rng.randint(0, 200)}",
                "user.name": rng.choice(users),
                "event.action": "chat",
                "gen_ai.system": "openai",
                "gen_ai.request.model": rng.choice(MODELS),
                "gen_ai.usage.input_tokens": rng.randint(10, 4000),
                "gen_ai.usage.output_tokens": rng.randint(10, 1500) if rng.random() < 0.99 else rng.randint(1500, 9000),
                "url.path": rng.choice(["/v1/chat/completions", "/v1/embeddings"]) if rng.random() < 0.99 else "/v1/admin/keys",
                "url.domain": rng.choice(["chat.ai-platform.internal", "prod.openai.azure.com"]),
                "http.response.status_code": rng.choice([200, 200, 200, 200, 429, 500, 403]),
                "ueba.gen_ai.prompt": _prompt(rng),
                "ueba.model.registered": True,
            }
            out.append(("api", flat, ts))
        elif r < 0.85:
            flat = {
                "@timestamp": "2026-01-05T12:00:00Z",
                "user.name": rng.choice(users),
                "event.action": rng.choice(ACCESS_ACTIONS),
                "event.outcome": rng.choice(["success", "success", "success", "failure"]),
                "source.ip": f"{rng.randint(1, 200)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                "ueba.resource.type": rng.choice(RESOURCE_TYPES),
                "ueba.resource.id": f"s3://bucket-{rng.randint(0, 50)}/data/part-{rng.randint(0, 9999)}",
                "ueba.resource.owner": None,
                "ueba.resource.sensitivity": rng.choice(["public", "internal", "confidential", "restricted"]),
                "organization.id": "org-1",
                "user.roles": ["reader", rng.choice(["analyst", "engineer", "admin"])],
            }
            flat["ueba.resource.owner"] = flat["user.name"] if rng.random() < 0.99 else rng.choice(users)
            out.append(("access", flat, ts))
        else:
            flat = {
                "@timestamp": "2026-01-05T12:00:00Z",
                "ueba.model.id": rng.choice(MODELS),
                "ueba.model.version": "3",
                "ueba.model.artifact_hash": f"sha256:{rng.choice(['aaa', 'aaa', 'aaa', 'bbb'])}",
                "ueba.telemetry.confidence": 1 - rng.random() ** 3 * 0.6,
                "ueba.telemetry.error_rate": rng.random() * 0.02 if rng.random() < 0.99 else rng.random(),
                "ueba.telemetry.count": rng.randint(1, 500),
            }
            out.append(("telemetry", flat, ts))
    return out


def _run(rs: RuleSet, events: list[tuple[str, dict[str, Any], float]], with_corr: bool) -> tuple[float, int]:
    """CPU seconds of this process (not wall time: the machine may be shared) and hits."""
    eng = CorrelationEngine(rs) if with_corr else None
    n_hits = 0
    t = time.process_time()
    for kind, flat, ts in events:
        hits = rs.match(kind, flat, ts)
        if eng is not None:
            hits += eng.process(kind, flat, ts, hits)
        n_hits += len(hits)
    return time.process_time() - t, n_hits


_IDENTITY = {"access": "user.name", "api": "ueba.api_key.id", "telemetry": "ueba.model.id"}


def runtime_events(events: list[tuple[str, dict[str, Any], float]]) -> list[tuple[Any, str | None]]:
    """``streams.events.Event`` objects of the mix, each with its source.ip key when it
    is a login the by-source stream would carry (else None)."""
    from streams.events import Event
    from streams.pipeline import source_view

    out = []
    for kind, flat, ts in events:
        ev = Event(kind=kind, identity=str(flat.get(_IDENTITY[kind])), ts=ts, doc=flat, flat=flat)
        sv = source_view(ev) if kind == "access" else None
        out.append((ev, sv))
    return out


def _run_runtime(runner: Any, events: list[tuple[Any, Any]]) -> tuple[float, int]:
    """The worker's per-event rule path: ``RuleRunner.evaluate`` with per-key
    correlation state (kept decoded, as the worker's state cache does), for the
    stream's partition and, for logins, the by-source partition; alerts built."""
    states: dict[tuple[str, str], Any] = {}
    n = 0
    evaluate = runner.evaluate
    t = time.process_time()
    for ev, sv in events:
        k = (ev.kind, ev.identity)
        alerts, states[k] = evaluate(ev, states.get(k), ev.kind)
        n += len(alerts)
        if sv is not None:
            k = ("source", sv.identity)
            alerts, states[k] = evaluate(sv, states.get(k), "source")
            n += len(alerts)
    return time.process_time() - t, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=500, help="compiled detection rules in total")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-runtime", action="store_true", help="skip the worker rule path (streams.rulerun)")
    args = ap.parse_args(argv)

    pack = RuleSet.load([PACK])
    n_synth = max(0, args.rules - len(pack.detections))
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "synthetic.yml").write_text(yaml.safe_dump_all(synthetic_rules(n_synth), sort_keys=False))
        t = time.perf_counter()
        rs = RuleSet.load([PACK, d])
        load_s = time.perf_counter() - t
        runner = None
        if not args.no_runtime:
            from streams.rulerun import RuleRunner

            runner = RuleRunner([PACK, Path(d)])
    events = event_mix(args.events)
    cand = [len(rs._parts[k].candidates(f, {})) for k, f, _ in events[:2000]]

    print(f"rules: {len(rs.detections)} detection + {len(rs.correlations)} correlation, "
          f"loaded and compiled in {load_s:.2f} s ({1000 * load_s / len(rs):.1f} ms/rule)")
    print(f"events: {len(events)} (api 45% with ~300-char prompts, access 40%, telemetry 15%)")
    print(f"rules tried per event: mean {statistics.mean(cand):.1f}, max {max(cand)} "
          f"(of {len(rs.detections)}; the rest skipped by stream and field/value index)")
    print(f"machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          "(CPU time per event still grows when other processes share the cores)")
    for label, corr in (("match", False), ("match + correlations", True)):
        runs = [_run(rs, events, corr) for _ in range(args.repeat)]
        best = min(r[0] for r in runs)
        print(f"{label:22s}: {len(events) / best:>9,.0f} events/s per core (CPU time) "
              f"({1e6 * best / len(events):.1f} us/event, {runs[0][1] / len(events):.3f} hits/event)")
    if runner is not None:
        rt = runtime_events(events)
        runs = [_run_runtime(runner, rt) for _ in range(args.repeat)]
        best = min(r[0] for r in runs)
        print(f"{'worker rule path':22s}: {len(events) / best:>9,.0f} events/s per core (CPU time) "
              f"({1e6 * best / len(events):.1f} us/event, {runs[0][1] / len(events):.3f} alerts/event; "
              "RuleRunner.evaluate, per-key correlation state, by-source partition for logins, alerts built)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
