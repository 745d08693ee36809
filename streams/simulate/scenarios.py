"""Labelled attack scenarios injected on top of the baseline.

Each scenario is planned once from the seed (who, when, what), after the
run's warm-up, on entities no other scenario uses. Small scenarios build their
events at plan time; model tampering and data poisoning change the victim
model's own telemetry (see ``Model.tamper_*`` / ``Model.drift_*``), so those
baseline events carry the scenario's tag too.

Ground truth lives only in :meth:`Scenario.label` and in the engine's per-event
tags; nothing in an event says it is an attack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError
from . import catalog as C
from . import wire as W
from .generate import (
    Batch,
    TenantTraffic,
    _Acc,
    access_doc,
    emit_chats,
    emit_predictions,
    login_doc,
    transfer_dict,
)
from .world import DAY_MS, FP_DIM, HOUR_MS, Model, World, haversine_km, injection_prompts


@dataclass(frozen=True)
class ScenarioSpec:
    id: str
    letter: str
    name: str
    techniques: tuple[str, ...]
    signals: str


SCENARIOS: dict[str, ScenarioSpec] = {s.id: s for s in (
    ScenarioSpec("exfil-burst", "a", "Insider exfiltration of training data and weights (burst)",
                 ("T1530", "T1567", "AML.T0025"),
                 "access: one human, ~150 download events in 45 min starting 20:00-21:00 local (off-hours), "
                 "datasets of every team (restricted first) and all model artifacts, ueba.transfer.bytes ~e^(mu+1.5) "
                 "full-object sizes (sum in the TB range), most resources never touched by that user before; "
                 "usual IP and user agent"),
    ScenarioSpec("exfil-slow-drip", "a", "Insider exfiltration of training data and weights (slow drip)",
                 ("T1530", "T1567", "AML.T0025"),
                 "access: one human, ~10 extra download events per working day over up to 3 days, within 10-17 "
                 "local, restricted datasets of other teams and model artifacts (new resources), full-object bytes; "
                 "half of them with user_agent rclone/v1.68.2"),
    ScenarioSpec("model-extraction", "b", "Model extraction through the inference API",
                 ("AML.T0024", "AML.T0040"),
                 "api: one key, ~1.5 predict calls/s for 2 h to one model (regular spacing), user_agent "
                 "python-requests/2.31.0, ueba.input.fingerprint values on a 7-level lattice in [-3,3] sweeping all "
                 "16 dims (far from the key's usual Gaussian inputs); telemetry of that model with "
                 "caller_api_key = the key and confidence scaled by 0.8"),
    ScenarioSpec("stolen-api-key", "c", "Stolen API key used from a new geography",
                 ("T1078", "T1078.004"),
                 "api: an existing key called from a hostile-network country/ASN/IP never seen for it "
                 "(source.geo.country_iso_code, source.as.number), user_agent python-requests/curl, ~80 calls/h for "
                 "3 h alongside its normal traffic, chat calls with 3x output tokens"),
    ScenarioSpec("impossible-travel", "c", "Compromised account: impossible travel",
                 ("T1078",),
                 "access: a human logs in from home, then 35-50 min later a successful login from a hostile city "
                 ">3000 km away (new country, ASN, IP, user agent), followed by 6-12 secret reads/dataset downloads "
                 "from there"),
    ScenarioSpec("password-spraying", "c", "Password spraying from one IP over many users",
                 ("T1110.003", "T1078"),
                 "access: one source.ip (hostile ASN) with event.action login, outcome failure against ~40 distinct "
                 "user.name values (plus 8 non-existent ones: admin, test, ...) at 20-70 s intervals; one success for "
                 "a real user near the end, then 2 secret reads from the same IP"),
    ScenarioSpec("prompt-injection", "d", "Prompt-injection campaign",
                 ("AML.T0051", "AML.T0054"),
                 "api: one key, ~60 chat calls/h for 2 h, 70% of ueba.gen_ai.prompt are injection/jailbreak texts "
                 "('ignore all previous instructions', DAN personas, base64-encoded payloads)"),
    ScenarioSpec("model-tampering", "e", "Model tampering: artifact changed without a deploy",
                 ("AML.T0018", "T1565"),
                 "telemetry (and api): from the start time to the end of the run, ueba.model.artifact_hash of one "
                 "model changes to a new value with the same ueba.model.version and no event.action model-deploy "
                 "for it"),
    ScenarioSpec("data-poisoning", "f", "Data poisoning traced to one tenant",
                 ("AML.T0020",),
                 "telemetry: one model's prediction share of its rarest class rises to +35 pts, confidence drops by "
                 "up to 0.2 and its first feature shifts by up to +2 sigma, ramping linearly over the ramp window and "
                 "staying; the attacker key's own calls (10->60/h) have fingerprints shifted by +2.5 along one "
                 "direction, first feature +4 sigma and always the target class (caller_api_key = the key)"),
    ScenarioSpec("shadow-ai", "g", "Shadow AI: inference on an unregistered model endpoint",
                 ("AML.T0040",),
                 "api and telemetry: url.path /v1/models/<id>:predict with ueba.model.registered false and a model id "
                 "absent from the registry (never deployed), ~30 calls/h for 6 h from one key"),
    ScenarioSpec("lateral-movement", "h", "Service account lateral movement",
                 ("T1021", "T1550"),
                 "access: one service account, ~40 events in 2 h touching endpoints (svc://...) and other teams' "
                 "secrets and buckets it never used before, 30% from an internal IP it never used"),
)}

_BY_LETTER: dict[str, list[str]] = {}
for _s in SCENARIOS.values():
    _BY_LETTER.setdefault(_s.letter, []).append(_s.id)


def resolve_scenarios(names: Iterable[str]) -> list[str]:
    """Scenario ids from ids, letters (``"a"``..``"h"``) or ``"all"``; unknown names are an error."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    out: list[str] = []
    for raw in names:
        name = raw.strip()
        ids = list(SCENARIOS) if name == "all" else _BY_LETTER.get(name, [name] if name in SCENARIOS else None)
        if ids is None:
            raise ConfigError(f"simulate.scenarios: unknown scenario {name!r}; known: all, "
                              f"{', '.join(SCENARIOS)} or letters {', '.join(sorted(_BY_LETTER))}")
        out.extend(i for i in ids if i not in out)
    return [i for i in SCENARIOS if i in out]  # canonical order keeps plans independent of argument order


def iso_ms(ms: int) -> str:
    return str(np.datetime_as_string(np.datetime64(int(ms), "ms"), unit="ms", timezone="UTC"))


@dataclass
class Scenario:
    spec: ScenarioSpec
    start_ms: int
    end_ms: int
    entities: list[dict[str, str]]
    events: _Acc = field(default_factory=_Acc)
    details: dict[str, Any] = field(default_factory=dict)
    _ts: np.ndarray | None = None
    _order: list[int] | None = None
    _items: list | None = None

    def finish(self) -> None:
        ts = np.asarray(self.events.ts, dtype=np.int64)
        order = np.argsort(ts, kind="stable")
        self._ts = ts[order]
        self._order = order.tolist()
        self._items = self.events.items() if self.events.wired else self.events.docs

    def generate(self, si: int, t0: int, t1: int) -> Batch:
        assert self._ts is not None and self._order is not None and self._items is not None
        lo, hi = np.searchsorted(self._ts, [t0, t1], side="left").tolist()
        if lo == hi:
            return Batch.empty()
        sel = self._order[lo:hi]
        kinds = [self.events.kinds[i] for i in sel]
        items = [self._items[i] for i in sel]
        if self.events.wired:  # documents and template rows (wire mode)
            return Batch(self._ts[lo:hi].copy(), kinds, [], self.spec.id, [W.Items(items)])
        return Batch(self._ts[lo:hi].copy(), kinds, items, self.spec.id)

    def label(self) -> dict[str, Any]:
        return {
            "scenario_id": self.spec.id,
            "name": self.spec.name,
            "letter": self.spec.letter,
            "techniques": list(self.spec.techniques),
            "entities": self.entities,
            "start": iso_ms(self.start_ms),
            "end": iso_ms(self.end_ms),
            "signals": self.spec.signals,
            **({"details": self.details} if self.details else {}),
        }


def _ent(kind: str, field_: str, value: str) -> dict[str, str]:
    return {"kind": kind, "field": field_, "value": value}


class Planner:
    """Chooses victims and windows, each scenario from its own seeded stream,
    on entities no earlier-planned scenario uses."""

    def __init__(self, world: World, tt: TenantTraffic) -> None:
        self.w = world
        self.tt = tt
        cfg = world.config
        self.S, self.E = cfg.start_ms, cfg.end_ms
        self.A = self.S + int(cfg.warmup * (self.E - self.S))
        self.k = float(cfg.attack_intensity)
        self.used_humans: set[int] = set()
        self.used_keys: set[int] = set()
        self.used_models: set[int] = set()
        self.used_services: set[int] = set()

    # -- helpers
    def rng(self, sid: str) -> np.random.Generator:
        return np.random.default_rng([self.w.config.seed, 0x5CE, list(SCENARIOS).index(sid)])

    def window(self, rng: np.random.Generator, dur_ms: int) -> tuple[int, int]:
        dur = min(dur_ms, max(HOUR_MS, self.E - self.A - 60_000))
        latest = max(self.A, self.E - dur - 60_000)
        s = int(rng.integers(self.A, latest + 1))
        return s, min(s + dur, self.E - 1)

    def pick(self, rng: np.random.Generator, n: int, used: set[int], ok=lambda i: True) -> int:
        cands = [i for i in range(n) if i not in used and ok(i)] or [i for i in range(n) if i not in used] or list(range(n))
        i = int(cands[int(rng.integers(len(cands)))])
        used.add(i)
        return i

    def human(self, rng, roles=("data-scientist", "ml-engineer")) -> int:
        hs = self.w.humans
        return self.pick(rng, len(hs), self.used_humans, lambda i: hs[i].trip is None and hs[i].role in roles)

    def model_for_key(self, rng) -> tuple[int, int]:
        ks = self.w.keys
        ki = self.pick(rng, len(ks), self.used_keys, lambda i: ks[i].p_llm < 0.9 and int(ks[i].models[0]) not in self.used_models)
        m = int(ks[ki].models[0])
        self.used_models.add(m)
        return ki, m

    def hostile(self, rng, far_from: tuple | None = None) -> tuple:
        cands = [p for p in C.HOSTILE if far_from is None or haversine_km(p, far_from) > 3000] or list(C.HOSTILE)
        return cands[int(rng.integers(len(cands)))]

    # -- scenarios
    def plan(self, ids: Iterable[str]) -> list[Scenario]:
        out = []
        # scenarios that change the baseline models go first, so attack traffic
        # built at plan time already sees the tampered/drifting models
        ids = sorted(ids, key=lambda i: (i not in ("model-tampering", "data-poisoning"), list(SCENARIOS).index(i)))
        for sid in ids:
            sc = getattr(self, "_" + sid.replace("-", "_"))(self.rng(sid), SCENARIOS[sid])
            sc.finish()
            out.append(sc)
        out.sort(key=lambda sc: list(SCENARIOS).index(sc.spec.id))
        return out

    def _exfil_burst(self, rng, spec) -> Scenario:
        w = self.w
        hi = self.human(rng)
        h = w.humans[hi]
        # an evening 20:00 local, on a day inside the attack window
        s, _ = self.window(rng, DAY_MS)
        day0 = (s // DAY_MS) * DAY_MS
        start = day0 + ((20 - h.tz) % 24) * HOUR_MS + int(rng.integers(0, HOUR_MS))
        while start < self.A:
            start += DAY_MS
        if start + HOUR_MS >= self.E:
            start = max(self.A, self.E - 2 * HOUR_MS)
        n = max(10, int(150 * self.k))
        dur = 45 * 60_000
        pool = [r for t in w.team_resources.values() for r in t["dataset"]]
        pool.sort(key=lambda r: (w.resources[r].sensitivity != "restricted", w.resources[r].owner != h.team))
        pool += [r for t in w.team_resources.values() for r in t["model_artifact"]]
        res = np.array([pool[i % len(pool)] for i in range(n)], dtype=np.int64)
        ts = np.sort(start + 60_000 + rng.integers(0, dur, n))
        acc = _Acc()
        acc.add(start, "access", login_doc(h.user, h.identity, h.sources[0], h.uas[0], "success"))
        nbytes = np.exp(w.res_mu[res] + 1.5 + w.res_sigma[res] * rng.standard_normal(n)).astype(np.int64)
        for r, t, b in zip(res.tolist(), ts.tolist(), nbytes.tolist()):
            rows = b // int(w.res_bpr[r]) if w.res_bpr[r] > 0 else -1
            acc.add(t, "access", access_doc(h.user, h.identity, h.sources[0], h.uas[0], "download", "success",
                                            w.resources[r].doc, transfer_dict(b, rows, 1 + int(rng.poisson(20))),
                                            w.change_of(r, t)))
        return Scenario(spec, start, int(ts[-1]), [_ent("access", "user.name", h.user["name"])], acc,
                        {"events": n, "total_bytes": int(nbytes.sum())})

    def _exfil_slow_drip(self, rng, spec) -> Scenario:
        w = self.w
        hi = self.human(rng)
        h = w.humans[hi]
        n_days = max(1, min(3, int((self.E - self.A) // DAY_MS)))
        pool = [r for t, tr in w.team_resources.items() if t != h.team for r in tr["dataset"]
                if w.resources[r].sensitivity == "restricted"]
        pool += [r for t in w.team_resources.values() for r in t["model_artifact"]]
        day0 = (self.A // DAY_MS) * DAY_MS + DAY_MS if self.E - self.A > 2 * DAY_MS else (self.A // DAY_MS) * DAY_MS
        acc = _Acc()
        per_day = max(2, int(10 * self.k))
        rclone = {"original": C.EXFIL_UA}
        total = 0
        for d in range(n_days + 2):
            day = day0 + d * DAY_MS
            if (day // DAY_MS + 3) % 7 >= 5:  # weekend
                continue
            lo = day + ((10 - h.tz) % 24) * HOUR_MS
            ts = lo + rng.integers(0, 7 * HOUR_MS, per_day)
            ok = ts[(ts >= self.A) & (ts < self.E - 1)]
            for t in ok.tolist():
                r = pool[int(rng.integers(len(pool)))]
                b = int(np.exp(w.res_mu[r] + 0.5 + w.res_sigma[r] * rng.standard_normal()))
                rows = b // int(w.res_bpr[r]) if w.res_bpr[r] > 0 else -1
                ua = rclone if rng.random() < 0.5 else h.uas[0]
                acc.add(t, "access", access_doc(h.user, h.identity, h.sources[0], ua, "download", "success",
                                                w.resources[r].doc, transfer_dict(b, rows, 1), w.change_of(r, t)))
                total += b
            if len(acc.ts) >= per_day * n_days:
                break
        if not acc.ts:  # run too short for a working day after warm-up: drip in the window anyway
            for t in (self.A + rng.integers(0, max(1, self.E - self.A - 1), per_day)).tolist():
                r = pool[int(rng.integers(len(pool)))]
                acc.add(t, "access", access_doc(h.user, h.identity, h.sources[0], rclone, "download", "success",
                                                w.resources[r].doc, {"bytes": int(np.exp(w.res_mu[r] + 0.5)), "objects": 1},
                                                w.change_of(r, t)))
        return Scenario(spec, min(acc.ts), max(acc.ts), [_ent("access", "user.name", h.user["name"])], acc,
                        {"events": len(acc.ts)})

    def _model_extraction(self, rng, spec) -> Scenario:
        w = self.w
        ki, m = self.model_for_key(rng)
        k = w.keys[ki]
        s, e = self.window(rng, 2 * HOUR_MS)
        period = 1000.0 / (1.5 * self.k)
        n = max(50, int((e - s) / period))
        ts = (s + np.arange(n) * period + rng.uniform(-0.1, 0.1, n) * period).astype(np.int64)
        ts = np.clip(np.sort(ts), s, e)
        levels = np.linspace(-3.0, 3.0, 7)
        q = np.arange(n)[:, None]
        d = np.arange(FP_DIM)[None, :]
        fps = levels[((q // 7 ** (d % 5)) + d // 5) % 7]
        acc = _Acc()
        idx = np.full(n, ki, dtype=np.int64)
        emit_predictions(acc, rng, w, idx, ts, np.zeros(n, dtype=np.int64), self.tt, e + 1, fingerprints=fps,
                         model_override=m, tag=None, ua={"original": C.ATTACKER_UAS[0]}, source=k.sources[0],
                         conf_scale=0.8, wire=self.tt.wire)
        return Scenario(spec, s, int(max(acc.ts)), [_ent("api", "ueba.api_key.id", k.id),
                                                    _ent("telemetry", "ueba.model.id", w.models[m].id)], acc,
                        {"queries": n, "model": w.models[m].id})

    def _stolen_api_key(self, rng, spec) -> Scenario:
        w = self.w
        ki = self.pick(rng, len(w.keys), self.used_keys)
        k = w.keys[ki]
        place = self.hostile(rng, k.place)
        src = w.ips.source(place)
        ua = {"original": C.ATTACKER_UAS[int(rng.integers(2))]}
        s, e = self.window(rng, 3 * HOUR_MS)
        n = max(10, int(rng.poisson(80 * self.k * (e - s) / HOUR_MS)))
        ts = np.sort(s + rng.integers(0, e - s, n))
        acc = _Acc()
        chat = rng.random(n) < 0.6
        idx = np.full(n, ki, dtype=np.int64)
        z = np.zeros(n, dtype=np.int64)
        emit_chats(acc, rng, w, idx[chat], ts[chat], z[chat], ua=ua, source=src, out_scale=3.0, wire=self.tt.wire)
        emit_predictions(acc, rng, w, idx[~chat], ts[~chat], z[~chat], self.tt, e + 1, ua=ua, source=src,
                         wire=self.tt.wire)
        return Scenario(spec, s, int(max(acc.ts)), [_ent("api", "ueba.api_key.id", k.id),
                                                    _ent("telemetry", "ueba.telemetry.caller_api_key", k.id)], acc,
                        {"source_ip": src["ip"], "country": place[1], "asn": place[6]})

    def _impossible_travel(self, rng, spec) -> Scenario:
        w = self.w
        hi = self.human(rng, roles=("data-scientist", "ml-engineer", "analyst", "platform-admin"))
        h = w.humans[hi]
        place = self.hostile(rng, h.home)
        src = w.ips.source(place)
        ua = {"original": C.ATTACKER_UAS[2]}
        s, _ = self.window(rng, 2 * HOUR_MS)
        acc = _Acc()
        acc.add(s, "access", login_doc(h.user, h.identity, h.sources[0], h.uas[0], "success"))
        t = s + int(rng.integers(35, 51)) * 60_000
        acc.add(t, "access", login_doc(h.user, h.identity, src, ua, "success"))
        tr = w.team_resources[h.team]
        pool = tr["secret"] + tr["dataset"]
        for _ in range(int(rng.integers(6, 13))):
            t += int(rng.integers(30_000, 240_000))
            r = pool[int(rng.integers(len(pool)))]
            rt = w.resources[r].type
            b = int(np.exp(w.res_mu[r] + w.res_sigma[r] * rng.standard_normal()))
            acc.add(t, "access", access_doc(h.user, h.identity, src, ua, "read" if rt == "secret" else "download",
                                            "success", w.resources[r].doc, {"bytes": b, "objects": 1}, w.change_of(r, t)))
        km = haversine_km(h.home, place)
        return Scenario(spec, s, t, [_ent("access", "user.name", h.user["name"])], acc,
                        {"distance_km": round(km), "from": h.home[0], "to": place[0], "source_ip": src["ip"]})

    def _password_spraying(self, rng, spec) -> Scenario:
        w = self.w
        place = self.hostile(rng)
        src = w.ips.source(place)
        ua = {"original": C.ATTACKER_UAS[0]}
        n_real = min(len(w.humans), max(5, int(40 * self.k)))
        real = rng.choice(len(w.humans), size=n_real, replace=False).tolist()
        fake = ["admin", "test", "administrator", "root", "guest", "svc-backup", "jenkins", "helpdesk"]
        targets: list[tuple[dict, dict | None]] = [(w.humans[i].user, w.humans[i].identity) for i in real]
        targets += [({"name": f}, None) for f in fake]
        order = rng.permutation(len(targets)).tolist()
        s, _ = self.window(rng, 2 * HOUR_MS)
        acc = _Acc()
        t = s
        winner = next(j for j in reversed(order[: int(len(order) * 0.85)]) if targets[j][1] is not None)
        for j in order:
            user, ident = targets[j]
            t += int(rng.integers(20_000, 70_000))
            ok = j == winner
            doc = login_doc(user, ident, src, ua, "success" if ok else "failure")
            if ident is None:
                del doc["ueba"]
            acc.add(t, "access", doc)
            if ok:
                hw = next(h for h in w.humans if h.user is user)
                for r in w.team_resources[hw.team]["secret"][:2]:
                    t += int(rng.integers(5_000, 30_000))
                    acc.add(t, "access", access_doc(user, ident, src, ua, "read", "success", w.resources[r].doc,
                                                    {"bytes": 2048, "objects": 1}))
        return Scenario(spec, s + 20_000, t, [_ent("access", "source.ip", src["ip"]),
                                              _ent("access", "user.name", targets[winner][0]["name"])], acc,
                        {"attempts": len(targets), "compromised_user": targets[winner][0]["name"]})

    def _prompt_injection(self, rng, spec) -> Scenario:
        w = self.w
        ks = w.keys
        ki = self.pick(rng, len(ks), self.used_keys, lambda i: ks[i].p_llm >= 0.5)
        k = ks[ki]
        s, e = self.window(rng, 2 * HOUR_MS)
        n = max(10, int(rng.poisson(60 * self.k * (e - s) / HOUR_MS)))
        ts = np.sort(s + rng.integers(0, e - s, n))
        mal = rng.random(n) < 0.7
        bad = [{"prompt": p} for p in injection_prompts()]
        acc = _Acc()
        idx = np.full(n, ki, dtype=np.int64)
        z = np.zeros(n, dtype=np.int64)
        emit_chats(acc, rng, w, idx[mal], ts[mal], z[mal], prompts=bad, wire=self.tt.wire)
        emit_chats(acc, rng, w, idx[~mal], ts[~mal], z[~mal], wire=self.tt.wire)
        return Scenario(spec, s, int(max(acc.ts)), [_ent("api", "ueba.api_key.id", k.id)], acc,
                        {"calls": n, "injections": int(mal.sum())})

    def called(self, mi: int) -> bool:
        return any(mi in k.models.tolist() for k in self.w.keys)

    def _model_tampering(self, rng, spec) -> Scenario:
        w = self.w
        mi = self.pick(rng, len(w.models), self.used_models, self.called)
        m = w.models[mi]
        s, _ = self.window(rng, 6 * HOUR_MS)
        # no legitimate deploy may follow, or it would mask the tampering
        keep = [t for t in m.deploys_ms if t < s]
        m.deploys_ms = keep
        m.versions = m.versions[: len(keep) + 1]
        m.version_docs = m.version_docs[: len(keep) + 1]
        cur = m.version_docs[-1]
        new_hash = "sha256:" + rng.bytes(32).hex()
        m.tamper_ms, m.tamper_tag = s, spec.id
        m.tamper_doc = {**cur, "artifact_hash": new_hash}
        return Scenario(spec, s, self.E - 1, [_ent("telemetry", "ueba.model.id", m.id)], _Acc(),
                        {"model": m.id, "version": cur["version"], "old_hash": cur["artifact_hash"], "new_hash": new_hash})

    def _data_poisoning(self, rng, spec) -> Scenario:
        w = self.w
        mi = self.pick(rng, len(w.models), self.used_models, self.called)
        m = w.models[mi]
        ki = self.pick(rng, len(w.keys), self.used_keys, lambda i: mi in w.keys[i].models.tolist())
        k = w.keys[ki]
        # the ramp takes at most half the attack period, so a poisoned plateau follows
        s, e = self.window(rng, int(min(1.5 * DAY_MS, (self.E - self.A) // 2)))
        m.drift_start_ms, m.drift_end_ms, m.drift_tag = s, e, spec.id
        m.drift_class = int(np.argmin(np.diff(np.concatenate([[0.0], m.class_p]))))
        # the attacker's own calls: rate ramps 10 -> 60 per hour
        hours = max(1.0, (e - s) / HOUR_MS)
        grid = np.linspace(0, 1, 200)
        rate = (10 + 50 * grid) * self.k
        n = max(20, int(rng.poisson(rate.mean() * hours)))
        u = rng.random(n)
        cdf = np.cumsum(rate) / rate.sum()
        ts = np.sort(s + (np.interp(u, cdf, grid) * (e - s)).astype(np.int64))
        direction = rng.normal(0, 1, FP_DIM)
        direction /= np.linalg.norm(direction)
        slot = int(np.where(k.models == mi)[0][0]) if mi in k.models.tolist() else 0
        base = k.fp_mu[slot] if mi in k.models.tolist() else m.center
        fps = base + 2.5 * direction + 0.3 * rng.standard_normal((n, FP_DIM))
        acc = _Acc()
        idx = np.full(n, ki, dtype=np.int64)
        emit_predictions(acc, rng, w, idx, ts, np.zeros(n, dtype=np.int64), self.tt, self.E, fingerprints=fps,
                         model_override=mi, feat_offset=4.0, pred_class=m.drift_class, wire=self.tt.wire)
        return Scenario(spec, s, self.E - 1, [_ent("telemetry", "ueba.model.id", m.id),
                                              _ent("api", "ueba.api_key.id", k.id),
                                              _ent("telemetry", "ueba.telemetry.caller_api_key", k.id)], acc,
                        {"model": m.id, "ramp_end": iso_ms(e), "target_class": m.classes[m.drift_class],
                         "attacker_calls": n})

    def _shadow_ai(self, rng, spec) -> Scenario:
        w = self.w
        ki = self.pick(rng, len(w.keys), self.used_keys)
        k = w.keys[ki]
        mid = C.SHADOW_MODELS[int(rng.integers(len(C.SHADOW_MODELS)))]
        base = w.models[0]
        shadow = Model(id=mid, team=k.tenant, classes=base.classes, class_p=base.class_p, features=base.features,
                       feat_mu=base.feat_mu, feat_sigma=base.feat_sigma, conf_ab=base.conf_ab, latency_mu=math.log(140.0),
                       error_rate=0.03, center=rng.normal(0, 1, FP_DIM), versions=[("0.0.1-dev", "")], deploys_ms=[])
        shadow.version_docs = [{"id": mid, "version": "0.0.1-dev", "artifact_hash": "sha256:" + rng.bytes(32).hex(),
                                "registered": False}]
        shadow.identity = {"type": "model", "peer_group": "classifier"}
        shadow.url = {"path": f"/v1/models/{mid}:predict"}
        s, e = self.window(rng, 6 * HOUR_MS)
        n = max(10, int(rng.poisson(30 * self.k * (e - s) / HOUR_MS)))
        ts = np.sort(s + rng.integers(0, e - s, n))
        fps = shadow.center + 0.5 * rng.standard_normal((n, FP_DIM))
        acc = _Acc()
        emit_predictions(acc, rng, w, np.full(n, ki, dtype=np.int64), ts, np.zeros(n, dtype=np.int64), self.tt, e + 1,
                         fingerprints=fps, model_override=0, model_list=[shadow], wire=self.tt.wire)
        return Scenario(spec, s, int(max(acc.ts)), [_ent("api", "ueba.api_key.id", k.id),
                                                    _ent("telemetry", "ueba.model.id", mid)], acc, {"model": mid})

    def _lateral_movement(self, rng, spec) -> Scenario:
        w = self.w
        ss = w.services
        si = self.pick(rng, len(ss), self.used_services, lambda i: ss[i].kind in ("serving", "ci"))
        sa = ss[si]
        own = set(sa.slots.tolist())
        new = [r for r in w.endpoints if r not in own]
        new += [tr["secret"][0] for t, tr in w.team_resources.items() if t != sa.team]
        new += [tr["bucket"][-1] for t, tr in w.team_resources.items() if t != sa.team]
        new_ip = {"ip": f"10.{int(rng.integers(64, 128))}.{int(rng.integers(0, 256))}.{int(rng.integers(2, 255))}"}
        s, e = self.window(rng, 2 * HOUR_MS)
        n = max(8, int(40 * self.k))
        ts = np.sort(s + rng.integers(0, e - s, n))
        acc = _Acc()
        act = {"endpoint": "invoke", "secret": "read", "bucket": "list"}
        for t in ts.tolist():
            r = new[int(rng.integers(len(new)))]
            res = w.resources[r]
            src = new_ip if rng.random() < 0.3 else sa.sources[0]
            acc.add(t, "access", access_doc(sa.user, sa.identity, src, sa.ua, act.get(res.type, "read"), "success",
                                            res.doc, {"bytes": int(rng.integers(500, 50_000)), "objects": 1},
                                            w.change_of(r, t)))
        return Scenario(spec, int(ts[0]), int(ts[-1]), [_ent("access", "user.name", sa.name)], acc,
                        {"new_source_ip": new_ip["ip"]})


def plan_scenarios(world: World, tt: TenantTraffic, ids: Iterable[str]) -> list[Scenario]:
    return Planner(world, tt).plan(ids)


__all__ = ["SCENARIOS", "ScenarioSpec", "Scenario", "plan_scenarios", "resolve_scenarios"]
