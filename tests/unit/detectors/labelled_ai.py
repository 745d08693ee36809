"""Labelled synthetic single-entity streams for the AI-specific detectors.

``STREAMS[name](seed) -> (events, timestamps, labels)``: flat ECS dicts as
``Event.flat`` gives them, seconds since the epoch, 1 = attack. Each stream is
one entity's history (one API key, one model): a normal period longer than
the detector's warm-up, the attack, then normal traffic again. The label says
what a per-event detector should flag: in a poisoning window only the
poisoner's events are attacks, the other tenants' events stay 0.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timezone
from typing import Callable

Stream = tuple[list[dict], list[float], list[int]]

T0 = 1_704_067_200.0  # Monday 2024-01-01 00:00 UTC


def _stamp(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


# --- api_extraction ------------------------------------------------------------------


def _clusters(rng: random.Random, k: int, dim: int, scale: float) -> list[list[float]]:
    return [[rng.gauss(0.0, scale) for _ in range(dim)] for _ in range(k)]


def _api_call(key: str, ts: float, fp: list[float] | None, body: float) -> dict:
    ev = {
        "@timestamp": _stamp(ts),
        "event.kind": "event",
        "event.action": "inference",
        "ueba.api_key.id": key,
        "ueba.model.id": "churn-clf",
        "ueba.model.version": "3",
        "url.path": "/v1/models/churn-clf:predict",
        "http.response.status_code": 200,
        "http.response.body.bytes": int(body),
    }
    if fp is not None:
        ev["ueba.input.fingerprint"] = [round(v, 5) for v in fp]
    return ev


def api_extraction(seed: int, fingerprints: bool = True, attack_rate: float = 5.0, sweep: str = "jbda") -> Stream:
    """A client key: ~10 calls/min from three input clusters for ~4 days of
    working traffic, then a synthetic sweep at ``attack_rate`` calls/s, then
    normal traffic again. ``sweep="jbda"``: Jacobian-style augmentation (seed
    points and small sign steps, Papernot et al.); ``"grid"``: a systematic
    walk over a lattice covering the input space."""
    rng = random.Random(seed)
    dim = 32
    centers = _clusters(rng, 3, dim, 3.0)
    rows: list[tuple[float, dict, int]] = []
    t = T0 + 9 * 3600

    def benign(n: int) -> None:
        nonlocal t
        for _ in range(n):
            t += rng.expovariate(1 / 6.0)
            c = rng.choice(centers)
            fp = [m + rng.gauss(0, 1.0) for m in c] if fingerprints else None
            rows.append((t, _api_call("key-churn-app", t, fp, rng.lognormvariate(math.log(1800), 0.3)), 0))

    benign(2500)
    # JbDA-style: a few natural seeds, then augmentation steps of fixed size lam
    # along random sign directions from points already queried.
    queried = [[m + rng.gauss(0, 1.0) for m in rng.choice(centers)] for _ in range(5)]
    lam = 0.1
    lo = [min(c[j] for c in centers) - 2 for j in range(dim)]
    hi = [max(c[j] for c in centers) + 2 for j in range(dim)]
    for i in range(400):
        t += rng.expovariate(attack_rate)
        if sweep == "grid":
            # Boustrophedon walk: one coordinate at a time in 8 steps over its range.
            j, k = divmod(i, 8)
            fp = [lo[d] + (hi[d] - lo[d]) * (((k if (j % 2 == 0) else 7 - k) / 7) if d == j % dim else 0.5)
                  for d in range(dim)]  # fmt: skip
        elif i < 5:
            fp = queried[i]
        else:
            base = queried[rng.randrange(len(queried))]
            fp = [v + lam * rng.choice((-1.0, 1.0)) for v in base]
            queried.append(fp)
        rows.append(
            (t, _api_call("key-churn-app", t, fp if fingerprints else None, rng.lognormvariate(math.log(1800), 0.3)), 1)
        )
    t += 600
    benign(300)
    rows.sort(key=lambda r: r[0])
    return [r[1] for r in rows], [r[0] for r in rows], [r[2] for r in rows]


# --- telemetry_drift -----------------------------------------------------------------


def _telemetry(ts: float, caller: str, org: str, pred: str, conf: float, amount: float, age: float) -> dict:
    return {
        "@timestamp": _stamp(ts),
        "event.kind": "metric",
        "event.action": "inference",
        "ueba.model.id": "fraud-scorer",
        "ueba.model.version": "7",
        "ueba.telemetry.prediction": pred,
        "ueba.telemetry.confidence": round(min(max(conf, 0.0), 1.0), 5),
        "ueba.telemetry.features": {"amount": round(amount, 2), "account_age_days": round(age, 1)},
        "ueba.telemetry.caller_api_key": caller,
        "organization.id": org,
        "event.duration": 40_000_000,
    }


def telemetry_drift(seed: int) -> Stream:
    """A deploy, 2500 events from ten tenants, then 700 events in which one
    tenant (70% of that traffic) sends poisoned inputs (large amounts, young
    accounts) that flip predictions with low confidence, then normal traffic."""
    rng = random.Random(seed)
    rows: list[tuple[float, dict, int]] = []
    t = T0
    deploy = {
        "@timestamp": _stamp(t),
        "event.kind": "event",
        "event.action": "model-deploy",
        "ueba.model.id": "fraud-scorer",
        "ueba.model.version": "7",
    }
    rows.append((t, deploy, 0))

    def normal_event() -> dict:
        i = rng.randrange(10)
        fraud = rng.random() < 0.08
        return _telemetry(
            t, f"key-tenant{i}", f"tenant{i}", "fraud" if fraud else "legit",
            rng.betavariate(12, 1.5), rng.lognormvariate(math.log(80), 0.8), rng.gauss(900, 300),
        )  # fmt: skip

    for _ in range(2500):
        t += rng.expovariate(1.0)
        rows.append((t, normal_event(), 0))
    for _ in range(700):
        t += rng.expovariate(1.0)
        if rng.random() < 0.7:
            ev = _telemetry(
                t, "key-tenant-x", "tenant-x", "fraud" if rng.random() < 0.5 else "legit",
                rng.betavariate(3, 3), rng.lognormvariate(math.log(2500), 0.3), abs(rng.gauss(5, 3)),
            )  # fmt: skip
            rows.append((t, ev, 1))
        else:
            rows.append((t, normal_event(), 0))
    for _ in range(200):
        t += rng.expovariate(1.0)
        rows.append((t, normal_event(), 0))
    return [r[1] for r in rows], [r[0] for r in rows], [r[2] for r in rows]


# --- telemetry_change ----------------------------------------------------------------


def telemetry_change(seed: int) -> Stream:
    """A model serving ~80 ms at 1% errors and ~0.9 confidence; for 400 events
    latency triples, errors reach 12% and confidence drops to ~0.7 (a swapped
    or degraded model), then it recovers."""
    rng = random.Random(seed)
    rows: list[tuple[float, dict, int]] = []
    t = T0

    def ev(lat_ms: float, err_p: float, conf_mu: float) -> dict:
        err = rng.random() < err_p
        out = {
            "@timestamp": _stamp(t),
            "event.kind": "metric",
            "ueba.model.id": "search-ranker",
            "ueba.model.version": "12",
            "event.duration": int(rng.lognormvariate(math.log(lat_ms), 0.25) * 1e6),
            "ueba.telemetry.error": err,
            "ueba.telemetry.caller_api_key": f"key-{rng.randrange(6)}",
        }
        if not err:
            out["ueba.telemetry.confidence"] = round(min(max(rng.gauss(conf_mu, 0.05), 0.0), 1.0), 5)
        return out

    for _ in range(2500):
        t += rng.expovariate(2.0)
        rows.append((t, ev(80, 0.01, 0.9), 0))
    for _ in range(400):
        t += rng.expovariate(2.0)
        rows.append((t, ev(240, 0.12, 0.7), 1))
    for _ in range(300):
        t += rng.expovariate(2.0)
        rows.append((t, ev(80, 0.01, 0.9), 0))
    return [r[1] for r in rows], [r[0] for r in rows], [r[2] for r in rows]


STREAMS: dict[str, Callable[[int], Stream]] = {
    "api_extraction": api_extraction,
    "telemetry_drift": telemetry_drift,
    "telemetry_change": telemetry_change,
}
