"""Baseline traffic: one generator per population, one call per time slice.

Each generator returns a :class:`Batch` for the slice ``[t0, t1)`` (epoch ms):
random draws are vectorised with numpy over all identities and events of the
slice, then ECS documents are assembled from the shared per-identity
sub-objects built in :mod:`.world`. ``@timestamp`` and ``event.id`` are filled
in by the engine after the slice is put in time order.

Documents share constant sub-objects (``user``, ``source``, ``ueba.identity``
...). Treat them as read-only; copy before mutating.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from zlib import crc32

import numpy as np
import orjson

from . import catalog as C
from .world import (
    ACTIONS,
    CATEGORY_BY_TYPE,
    CHANGE_COMPLIANCE,
    DAY_MS,
    FP_DIM,
    HOUR_MS,
    NEVER,
    RES_TYPES,
    World,
    _workday_profile,
    _zipf_cum,
    action_tables,
)

DS_ACCESS, DS_API, DS_TELEMETRY = "ueba.access", "ueba.api", "ueba.telemetry"

_TYPE_OF_ACTION = {"read": ["access"], "download": ["access"], "list": ["info"], "write": ["change"],
                   "invoke": ["access"], "login": ["start"]}
CAT_AUTH = ["authentication"]
CAT_API = ["api"]
CAT_PROCESS = ["process"]
CAT_CONFIG = ["configuration"]
TYPE_START, TYPE_ACCESS, TYPE_INFO, TYPE_CHANGE = ["start"], ["access"], ["info"], ["change"]


@dataclass
class Batch:
    """Events of one slice from one generator, in any order.

    ``tags`` is ``None`` (baseline), one scenario id for every event, or a list
    with a scenario id or ``None`` per event. Tags never enter the documents.
    """

    ts: np.ndarray                       # int64 epoch ms
    kinds: list[str]
    docs: list[dict[str, Any]]
    tags: str | list[str | None] | None = None

    @staticmethod
    def empty() -> "Batch":
        return Batch(np.empty(0, dtype=np.int64), [], [])


@dataclass
class _Acc:
    """Accumulates documents for one batch."""

    ts: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    docs: list[dict[str, Any]] = field(default_factory=list)
    tags: list[str | None] = field(default_factory=list)

    def add(self, ts: int, kind: str, doc: dict[str, Any], tag: str | None = None) -> None:
        self.ts.append(ts)
        self.kinds.append(kind)
        self.docs.append(doc)
        self.tags.append(tag)

    def extend(self, ts: list[int], kind: str, docs: list[dict[str, Any]], tags: list[str | None] | str | None) -> None:
        self.ts.extend(ts)
        self.kinds.extend([kind] * len(docs))
        self.docs.extend(docs)
        self.tags.extend(tags if isinstance(tags, list) else [tags] * len(docs))

    def batch(self) -> Batch:
        tags = self.tags if any(t is not None for t in self.tags) else None
        return Batch(np.asarray(self.ts, dtype=np.int64), self.kinds, self.docs, tags)


class JsonCache:
    """Serialized JSON of the shared, never-mutated sub-objects (by identity).

    Wire mode renders the high-volume event types straight to bytes around
    these, instead of building a dict per event and serialising it: several
    times faster, and parsed back it equals the dict-mode document (tested).
    """

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[Any, bytes]] = {}
        self._tables: dict[int, tuple[list, list]] = {}

    def tables(self, keys: list, models: list) -> tuple[list[tuple], list[tuple]]:
        """Per key and per model, the JSON of their shared sub-objects (memoised)."""
        tk = (id(keys), id(models))
        hit = self._tables.get(tk)
        if hit is None:
            kb = [(self(k.org), self(k.ua), self(k.identity), self(k.api_key), self(k.id), [self(x) for x in k.sources])
                  for k in keys]
            mb = [(self(m.url), self(m.identity), [self(v) for v in m.version_docs],
                   self(m.tamper_doc) if m.tamper_doc is not None else None, [self(c) for c in m.classes],
                   b"{" + b",".join(orjson.dumps(f) + b":%s" for f in m.features) + b"}", len(m.features))
                  for m in models]
            hit = self._tables[tk] = (kb, mb, keys, models)  # type: ignore[assignment]
        return hit[0], hit[1]

    def __call__(self, obj: Any) -> bytes:
        hit = self._by_id.get(id(obj))
        if hit is None:
            hit = self._by_id[id(obj)] = (obj, orjson.dumps(obj))  # keep obj alive: ids stay unique
        return hit[1]


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_SHIFTS = np.arange(36, -1, -4, dtype=np.uint64)


def hex_ids(prefix: bytes, first: int, n: int) -> list[bytes]:
    """``prefix`` + 10 lower-case hex digits of ``first .. first+n-1``, vectorised."""
    nums = np.arange(first, first + n, dtype=np.uint64)
    digits = _HEX[((nums[:, None] >> _SHIFTS[None, :]) & np.uint64(15)).astype(np.intp)]
    pre = np.frombuffer(prefix, dtype=np.uint8)
    out = np.concatenate([np.broadcast_to(pre, (n, len(pre))), digits], axis=1)
    return np.ascontiguousarray(out).view(f"S{out.shape[1]}").ravel().tolist()


def stamps(ts_ms: np.ndarray) -> list[bytes]:
    """``@timestamp`` values (ISO 8601 UTC, ms) as ASCII bytes, vectorised."""
    return np.datetime_as_string(np.asarray(ts_ms).astype("datetime64[ms]"), unit="ms", timezone="UTC").astype("S").tolist()


def json_values(values: np.ndarray) -> list[bytes]:
    """JSON of each number of a 1-d array, serialised in one orjson call."""
    if not len(values):
        return []
    return orjson.dumps(np.ascontiguousarray(values), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")


def json_rows(rows: np.ndarray) -> list[bytes]:
    """JSON array bodies (without brackets) of each row of a 2-d array, in one orjson call."""
    if not len(rows):
        return []
    return orjson.dumps(np.ascontiguousarray(rows), option=orjson.OPT_SERIALIZE_NUMPY)[2:-2].split(b"],[")


_OUTCOME = (b"success", b"failure")
_WIRE_PREDICT_A = (b'{"@timestamp":"%s","event":{"kind":"event","category":["api"],"type":["access"],"action":"predict",'
                   b'"outcome":"%s","duration":%s,"dataset":"ueba.api","id":"')
_WIRE_PREDICT_B = (b'"},"source":%s,"organization":%s,"user_agent":%s,"url":%s,"http":{"request":{"method":"POST",'
                   b'"body":{"bytes":%s}},"response":{"status_code":%s,"body":{"bytes":%s}}},"ueba":{"identity":%s,'
                   b'"api_key":%s,"model":%s,"input":{"fingerprint":[%s]}}}\n')
_WIRE_TEL_A = (b'{"@timestamp":"%s","event":{"kind":"event","category":["process"],"type":["info"],"action":"inference",'
               b'"outcome":"%s","duration":%s,"dataset":"ueba.telemetry","id":"')
_WIRE_TEL_B = (b'"},"ueba":{"identity":%s,"model":%s,"telemetry":{"prediction":%s,"confidence":%s,"features":%s,'
               b'"error":%s,"caller_api_key":%s}}}\n')
_WIRE_CHAT_A = (b'{"@timestamp":"%s","event":{"kind":"event","category":["api"],"type":["access"],"action":"chat",'
                b'"outcome":"%s","duration":%d,"dataset":"ueba.api","id":"')
_WIRE_CHAT_B = (b'"},"source":%s,"organization":%s,"user_agent":%s,"url":{"path":"/v1/chat/completions"},'
                b'"http":{"request":{"method":"POST","body":{"bytes":%d}},"response":{"status_code":%d,"body":{"bytes":%d}}},'
                b'"gen_ai":{"system":%s,"operation":%s,"request":%s,"usage":{"input_tokens":%d,"output_tokens":%d}},'
                b'"ueba":{"identity":%s,"api_key":%s,"model":%s,"gen_ai":%s}}\n')


def slice_rng(seed: int, component: int, slice_index: int) -> np.random.Generator:
    """Independent stream per (component, slice): adding a scenario never
    changes the baseline draws."""
    return np.random.default_rng([seed, component, slice_index])


def hour_of_week(t_ms: int) -> int:
    """0 = Monday 00:00 UTC. The epoch was a Thursday (72 h after a Monday)."""
    return int((t_ms // HOUR_MS + 72) % 168)


# ---------------------------------------------------------------- documents


def access_doc(user, identity, source, ua, action: str, outcome: str, res, transfer, change=None) -> dict[str, Any]:
    """An access event reading/writing resource ``res`` (a shared ``ueba.resource`` dict);
    ``change`` is the ``ueba.change`` the platform stamps (:meth:`World.change_of`)."""
    ueba = {"identity": identity, "resource": res}
    if transfer is not None:
        ueba["transfer"] = transfer
    if change is not None:
        ueba["change"] = change
    return {
        "@timestamp": None,
        "event": {"kind": "event", "category": CATEGORY_BY_TYPE[RES_TYPES.index(res["type"])],
                  "type": _TYPE_OF_ACTION[action], "action": action, "outcome": outcome, "dataset": DS_ACCESS},
        "user": user, "source": source, "user_agent": ua, "ueba": ueba,
    }


def login_doc(user, identity, source, ua, outcome: str) -> dict[str, Any]:
    return {
        "@timestamp": None,
        "event": {"kind": "event", "category": CAT_AUTH, "type": TYPE_START, "action": "login",
                  "outcome": outcome, "dataset": DS_ACCESS},
        "user": user, "source": source, "user_agent": ua, "ueba": {"identity": identity},
    }


_CHAT_URL = {"path": "/v1/chat/completions"}
_LLM_MODEL_DOCS = [{"id": m, "registered": True} for m, _ in C.LLMS]


def chat_doc(key, source, ua, llm: int, llm_doc, prompt_doc, status: int, duration_ns: int,
             in_tokens: int, out_tokens: int) -> dict[str, Any]:
    return {
        "@timestamp": None,
        "event": {"kind": "event", "category": CAT_API, "type": TYPE_ACCESS, "action": "chat",
                  "outcome": "success" if status < 400 else "failure", "duration": duration_ns, "dataset": DS_API},
        "source": source, "organization": key.org, "user_agent": ua, "url": _CHAT_URL,
        "http": {"request": {"method": "POST", "body": {"bytes": 4 * in_tokens + 120}},
                 "response": {"status_code": status, "body": {"bytes": 4 * out_tokens + 200}}},
        "gen_ai": {"system": llm_doc["system"], "operation": llm_doc["operation"], "request": llm_doc["request"],
                   "usage": {"input_tokens": in_tokens, "output_tokens": out_tokens}},
        "ueba": {"identity": key.identity, "api_key": key.api_key, "model": _LLM_MODEL_DOCS[llm],
                 "gen_ai": prompt_doc},
    }


def deploy_doc(model, model_doc, user, deployment_id: str) -> dict[str, Any]:
    return {
        "@timestamp": None,
        "event": {"kind": "event", "category": CAT_CONFIG, "type": TYPE_CHANGE, "action": "model-deploy",
                  "outcome": "success", "dataset": DS_TELEMETRY},
        "user": user,
        "ueba": {"identity": model.identity, "model": model_doc, "deployment_id": deployment_id},
    }


# -------------------------------------------------------------- volumes


_ACT_CUM, _ = action_tables()
_A_READ, _A_DOWNLOAD, _A_LIST, _A_WRITE = (ACTIONS.index(a) for a in ("read", "download", "list", "write"))


def draw_transfers(rng: np.random.Generator, world: World, res: np.ndarray, mu_boost: float | np.ndarray = 0.0,
                   read_scale: float = 0.1) -> tuple[list[int], list[str], list[int], list[int], list[int]]:
    """Actions and lognormal volumes for accesses to resources ``res``.

    Returns action index, action name, bytes, rows (-1 = none) and objects per event.
    """
    n = len(res)
    rtype = world.res_type[res]
    act = (_ACT_CUM[rtype] < rng.random(n)[:, None]).sum(1)
    z = rng.standard_normal(n)
    nbytes = np.exp(world.res_mu[res] + mu_boost + world.res_sigma[res] * z)
    nbytes = np.where(act == _A_READ, nbytes * read_scale, nbytes)
    nbytes = np.where(act == _A_WRITE, nbytes * 0.3, nbytes)
    objects = np.ones(n, dtype=np.int64)
    listed = act == _A_LIST
    if listed.any():
        objects[listed] = np.exp(rng.normal(3.5, 1.2, int(listed.sum()))).astype(np.int64) + 1
        nbytes = np.where(listed, objects * 180.0, nbytes)
    dl = act == _A_DOWNLOAD
    if dl.any():
        objects[dl] = 1 + rng.poisson(2.0, int(dl.sum()))
    bpr = world.res_bpr[res]
    rows = np.where((bpr > 0) & ~listed, nbytes / np.maximum(bpr, 1), -1).astype(np.int64)
    nbytes = nbytes.astype(np.int64) + 1
    return act.tolist(), [ACTIONS[a] for a in act.tolist()], nbytes.tolist(), rows.tolist(), objects.tolist()


def transfer_dict(nbytes: int, rows: int, objects: int) -> dict[str, int]:
    if rows >= 0:
        return {"bytes": nbytes, "rows": rows, "objects": objects}
    return {"bytes": nbytes, "objects": objects}


# -------------------------------------------------------------- humans


class HumanTraffic:
    """Logins and resource accesses of people: working hours in their own
    timezone on weekdays, on-call nights, business trips, new projects."""

    component = 1

    def __init__(self, world: World) -> None:
        self.w = world
        hs = world.humans
        n = len(hs)
        self.rate = np.array([h.rate for h in hs])
        k_max = max(len(h.slots) for h in hs)
        self.slots = np.zeros((n, k_max), dtype=np.int64)
        self.cum_before = np.ones((n, k_max))
        self.cum_after = np.ones((n, k_max))
        for i, h in enumerate(hs):
            n_proj = len(world.team_resources[h.team]["project"])
            k_usual = len(h.slots) - n_proj
            self.slots[i, : len(h.slots)] = h.slots
            self.cum_before[i, :k_usual] = _zipf_cum(k_usual)
            # after a project starts, ~40% of work goes to its new datasets
            w = np.concatenate([(1.0 / np.arange(1, k_usual + 1) ** 1.1), np.full(n_proj, 0.0)])
            w = w / w.sum() * 0.6
            w[k_usual:] = 0.4 / max(n_proj, 1)
            self.cum_after[i, : len(w)] = np.cumsum(w)
            self.cum_after[i, len(w) - 1:] = 1.0
            self.cum_before[i, k_usual - 1:] = 1.0
        self.project_ms = np.array([h.project_ms for h in hs], dtype=np.int64)
        trips = [h.trip for h in hs]
        self.dep = np.array([t.depart_ms if t else NEVER for t in trips], dtype=np.int64)
        self.arr = np.array([t.arrive_ms if t else NEVER for t in trips], dtype=np.int64)
        self.bdep = np.array([t.back_depart_ms if t else NEVER for t in trips], dtype=np.int64)
        self.barr = np.array([t.back_arrive_ms if t else NEVER for t in trips], dtype=np.int64)
        self.n_src = np.array([len(h.sources) for h in hs])
        self.n_ua = np.array([len(h.uas) for h in hs])
        self._cover: dict[tuple[int, int], dict[str, Any] | None] = {}

    def cover(self, i: int, t_ms: int) -> dict[str, Any] | None:
        """The change that covers person ``i`` working outside the change window
        on the (UTC) day of ``t_ms``: the team's incident for someone on call,
        else, on most days, a change or just-in-time request they opened (see
        :data:`~.world.CHANGE_COMPLIANCE`); None when they did not."""
        day = int(t_ms // DAY_MS)
        key = (i, day)
        hit = self._cover.get(key, False)
        if hit is False:
            h = self.w.humans[i]
            seed = self.w.config.seed
            if h.oncall:
                hit = self.w.covered(f"INC{crc32(f'{seed}/{h.team}/{day}'.encode()) % 10_000_000:07d}")
            elif np.random.default_rng([seed, 0xC4A, i, day]).random() < CHANGE_COMPLIANCE:
                hit = self.w.covered(f"CHG{crc32(f'{seed}/{h.name}/{day}'.encode()) % 10_000_000:07d}")
            else:
                hit = None
            self._cover[key] = hit
        return hit

    def activity(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray]:
        """Expected activity weight per human in the slice, and who is abroad."""
        factor = self.w.human_profile[:, hour_of_week(t0)] * ((t1 - t0) / HOUR_MS)
        flying = ((t0 < self.arr) & (t1 > self.dep)) | ((t0 < self.barr) & (t1 > self.bdep))
        factor = np.where(flying, 0.0, factor)
        away = (t0 >= self.arr) & (t0 < self.bdep)
        return factor, away

    def generate(self, si: int, t0: int, t1: int) -> Batch:
        w, hs = self.w, self.w.humans
        rng = slice_rng(w.config.seed, self.component, si)
        factor, away = self.activity(t0, t1)
        counts = rng.poisson(self.rate * factor)
        n_login = rng.poisson(0.35 * factor)
        acc = _Acc()

        # resource accesses
        idx = np.repeat(np.arange(len(hs)), counts)
        n = len(idx)
        if n:
            ts = t0 + rng.integers(0, t1 - t0, n)
            after = ts >= self.project_ms[idx]
            u = rng.random(n)
            cum = np.where(after[:, None], self.cum_after[idx], self.cum_before[idx])
            slot = (cum < u[:, None]).sum(1)
            res = self.slots[idx, slot]
            acts, names, nbytes, rows, objs = draw_transfers(rng, w, res)
            failed = (rng.random(n) < 0.004).tolist()
            src_i = (rng.random(n) * self.n_src[idx]).astype(np.int64).tolist()
            ua_i = (rng.random(n) * self.n_ua[idx]).astype(np.int64).tolist()
            away_e = away[idx].tolist()
            resources = w.resources
            for j, (i, r, t) in enumerate(zip(idx.tolist(), res.tolist(), ts.tolist())):
                h = hs[i]
                src = h.trip.source if away_e[j] else h.sources[src_i[j]]
                change = w.change_of(r, t)
                if change is not None and not change["in_window"]:
                    change = self.cover(i, t) or change
                if failed[j]:
                    doc = access_doc(h.user, h.identity, src, h.uas[ua_i[j]], names[j], "failure",
                                     resources[r].doc, None, change)
                else:
                    doc = access_doc(h.user, h.identity, src, h.uas[ua_i[j]], names[j], "success",
                                     resources[r].doc, transfer_dict(nbytes[j], rows[j], objs[j]), change)
                acc.add(t, "access", doc)

        # logins, with the occasional typo first
        idx = np.repeat(np.arange(len(hs)), n_login)
        if len(idx):
            ts = t0 + rng.integers(0, t1 - t0, len(idx))
            typo = (rng.random(len(idx)) < 0.05).tolist()
            gap = rng.integers(4_000, 40_000, len(idx)).tolist()
            src_i = (rng.random(len(idx)) * self.n_src[idx]).astype(np.int64).tolist()
            ua_i = (rng.random(len(idx)) * self.n_ua[idx]).astype(np.int64).tolist()
            away_e = away[idx].tolist()
            for j, (i, t) in enumerate(zip(idx.tolist(), ts.tolist())):
                h = hs[i]
                src = h.trip.source if away_e[j] else h.sources[src_i[j]]
                ua = h.uas[ua_i[j]]
                if typo[j]:
                    acc.add(max(t0, t - gap[j]), "access", login_doc(h.user, h.identity, src, ua, "failure"))
                acc.add(t, "access", login_doc(h.user, h.identity, src, ua, "success"))
        return acc.batch()


# -------------------------------------------------------------- service accounts


class ServiceTraffic:
    """Machine identities: CI on the team's working hours, serving at a constant
    rate, ETL hourly at a fixed minute, nightly batch jobs with big volumes."""

    component = 2

    def __init__(self, world: World) -> None:
        self.w = world
        self.profiles = [_workday_profile(s.tz, 0, False, weekend=0.02) for s in world.services]

    def change(self, k: int, r: int, t_ms: int) -> dict[str, Any] | None:
        """Pipelines run under a standard (pre-approved) change outside the window."""
        change = self.w.change_of(r, t_ms)
        if change is not None and not change["in_window"]:
            return self.w.covered(f"STD-{self.w.services[k].name}")
        return change

    def expected(self, k: int, t0: int, t1: int) -> float:
        """Expected events of service account ``k`` in ``[t0, t1)``."""
        s = self.w.services[k]
        frac = (t1 - t0) / HOUR_MS
        if s.kind == "ci":
            return s.rate * self.profiles[k][hour_of_week(t0)] * frac
        if s.kind == "batch":
            return (s.rate if (t0 // HOUR_MS) % 24 == s.cron_hour else 0.5) * frac
        return s.rate * frac

    def generate(self, si: int, t0: int, t1: int) -> Batch:
        w = self.w
        rng = slice_rng(w.config.seed, self.component, si)
        acc = _Acc()
        hour = (t0 // HOUR_MS) % 24
        span = t1 - t0
        for k, s in enumerate(w.services):
            n = int(rng.poisson(self.expected(k, t0, t1)))
            if not n:
                continue
            if s.kind == "etl" or (s.kind == "batch" and hour == s.cron_hour):
                start = min(s.cron_minute * 60_000, max(span - 1, 0))
                ts = t0 + start + np.minimum(rng.exponential(20_000 if s.kind == "etl" else 600_000, n).astype(np.int64),
                                             span - 1 - start)
            else:
                ts = t0 + rng.integers(0, span, n)
            res = s.slots[rng.integers(0, len(s.slots), n)]
            boost = 1.5 if s.kind == "batch" else 0.0
            _, names, nbytes, rows, objs = draw_transfers(rng, w, res, mu_boost=boost, read_scale=1.0)
            src_i = rng.integers(0, len(s.sources), n).tolist()
            for j, (r, t) in enumerate(zip(res.tolist(), ts.tolist())):
                acc.add(t, "access", access_doc(s.user, s.identity, s.sources[src_i[j]], s.ua, names[j], "success",
                                                w.resources[r].doc, transfer_dict(nbytes[j], rows[j], objs[j]),
                                                self.change(k, r, t)))
        return acc.batch()


# -------------------------------------------------------------- tenants / API


class TenantTraffic:
    """Inference calls by tenants' API keys (classical predict and LLM chat),
    and the per-inference telemetry each classical call leaves on its model."""

    component = 3

    def __init__(self, world: World, wire: JsonCache | None = None) -> None:
        self.w = world
        self.wire = wire
        ks = world.keys
        self.rate = np.array([k.rate for k in ks])
        self.p_llm = np.array([k.p_llm for k in ks])
        n_slot = max(len(k.models) for k in ks)
        self.models = np.zeros((len(ks), n_slot), dtype=np.int64)
        self.model_p = np.ones((len(ks), n_slot))
        self.fp_mu = np.zeros((len(ks), n_slot, FP_DIM))
        self.fp_sigma = np.ones((len(ks), n_slot))
        self.feat_shift = np.zeros((len(ks), n_slot))
        for i, k in enumerate(ks):
            m = len(k.models)
            self.models[i, :m] = k.models
            self.model_p[i, :m] = k.model_p
            self.model_p[i, m - 1:] = 1.0
            self.fp_mu[i, :m] = k.fp_mu
            self.fp_sigma[i, :m] = k.fp_sigma
            self.feat_shift[i, :m] = k.feat_shift
        self.profiles = [_workday_profile(k.tz, 0, False, weekend=0.15) for k in ks]
        self.n_src = np.array([len(k.sources) for k in ks])
        ms = world.models
        self.lat_mu = np.array([m.latency_mu for m in ms])
        self.err = np.array([m.error_rate for m in ms])

    def factor(self, t0: int, t1: int) -> np.ndarray:
        how = hour_of_week(t0)
        hour = (t0 // HOUR_MS) % 24
        out = np.empty(len(self.w.keys))
        for i, k in enumerate(self.w.keys):
            if k.pattern == "business":
                out[i] = self.profiles[i][how]
            elif k.pattern == "cron":
                out[i] = 6.0 if hour == k.cron_hour else 0.15
            else:
                out[i] = 1.0
        return out * ((t1 - t0) / HOUR_MS)

    def generate(self, si: int, t0: int, t1: int) -> Batch:
        w = self.w
        rng = slice_rng(w.config.seed, self.component, si)
        counts = rng.poisson(self.rate * self.factor(t0, t1))
        idx = np.repeat(np.arange(len(w.keys)), counts)
        acc = _Acc()
        n = len(idx)
        if not n:
            return acc.batch()
        ts = t0 + rng.integers(0, t1 - t0, n)
        is_llm = rng.random(n) < self.p_llm[idx]
        src_i = (rng.random(n) * self.n_src[idx]).astype(np.int64)
        classical = ~is_llm
        emit_predictions(acc, rng, w, idx[classical], ts[classical], src_i[classical], self, t1, wire=self.wire)
        emit_chats(acc, rng, w, idx[is_llm], ts[is_llm], src_i[is_llm], wire=self.wire)
        return acc.batch()


def draw_status(rng: np.random.Generator, err: np.ndarray) -> np.ndarray:
    u = rng.random(len(err))
    status = np.full(len(err), 200)
    status = np.where(u < err + 0.005, 400, status)
    status = np.where(u < err + 0.003, 429, status)
    status = np.where(u < err * 0.7, 500, status)
    status = np.where(u < err * 0.3, 503, status)
    return status


def emit_predictions(acc: _Acc, rng: np.random.Generator, w: World, idx: np.ndarray, ts: np.ndarray,
                     src_i: np.ndarray, tt: TenantTraffic, t1: int, *, fingerprints: np.ndarray | None = None,
                     model_override: int | None = None, tag: str | None = None, ua: dict | None = None,
                     source: dict | None = None, feat_offset: float = 0.0, pred_class: int | None = None,
                     conf_scale: float = 1.0, model_list: list | None = None, wire: JsonCache | None = None) -> None:
    """Classical predict calls of keys ``idx`` at ``ts`` plus their model telemetry.

    Scenario code reuses this with overrides so attack traffic has exactly the
    baseline's shape except for what the attack changes.
    """
    n = len(idx)
    if not n:
        return
    models = model_list if model_list is not None else w.models
    if model_override is None:
        slot = (tt.model_p[idx] < rng.random(n)[:, None]).sum(1)
        mi = tt.models[idx, slot]
    else:
        slot = np.zeros(n, dtype=np.int64)
        mi = np.full(n, model_override, dtype=np.int64)
    if fingerprints is None:
        fingerprints = tt.fp_mu[idx, slot] + tt.fp_sigma[idx, slot][:, None] * rng.standard_normal((n, FP_DIM))
    fps = fingerprints.round(3)
    per_model = np.array([(m.latency_mu, m.error_rate, m.drift_start_ms, m.drift_end_ms, m.tamper_ms) for m in models],
                         dtype=np.float64)[mi]
    status = draw_status(rng, per_model[:, 1])
    lat_ms = np.exp(per_model[:, 0] + 0.45 * rng.standard_normal(n))
    dur = (lat_ms * 1e6).astype(np.int64)
    req_b = (600 + np.exp(rng.normal(6.5, 0.6, n))).astype(np.int64)
    resp_b = rng.integers(90, 400, n)
    # telemetry, vectorised; poisoning drift ramps linearly from drift start to drift end
    u_cls = rng.random(n)
    conf = rng.beta(9.0, 1.8, n) * conf_scale
    zf = rng.standard_normal((n, 4)) + tt.feat_shift[idx, slot][:, None]
    u_drift = rng.random(n)
    ds, de = per_model[:, 2], per_model[:, 3]
    drifting = ts >= ds
    d = np.where(drifting, np.clip((ts - ds) / np.maximum(de - ds, 1.0), 0.0, 1.0), 0.0)
    zf[:, 0] += feat_offset + 2.0 * d
    conf = np.clip(conf - 0.2 * d, 0.0, 1.0).round(4)
    tampered = (ts >= per_model[:, 4]).tolist()
    vi = np.zeros(n, dtype=np.int64)
    cls = np.zeros(n, dtype=np.int64)
    feats = np.zeros((n, 4))
    for m_i in np.unique(mi).tolist():
        mask = mi == m_i
        m = models[m_i]
        if m.deploys_ms:
            vi[mask] = np.searchsorted(np.asarray(m.deploys_ms, dtype=np.int64), ts[mask], side="right")
        cls[mask] = np.minimum(np.searchsorted(m.class_p, u_cls[mask], side="right"), len(m.classes) - 1)
        if pred_class is None:
            cls[mask & (u_drift < 0.35 * d)] = m.drift_class
        nf = len(m.features)
        feats[mask, :nf] = (m.feat_mu + m.feat_sigma * zf[mask, :nf]).round(3)
    if pred_class is not None:
        cls[:] = pred_class
    t_tel = np.minimum(ts + lat_ms.astype(np.int64), t1 - 1).tolist()
    drift_l = drifting.tolist()
    status_l, dur_l = status.tolist(), dur.tolist()
    keys = w.keys
    ts_l, idx_l, mi_l, src_l, vi_l, cls_l = ts.tolist(), idx.tolist(), mi.tolist(), src_i.tolist(), vi.tolist(), cls.tolist()
    if wire is not None:
        _wire_predictions(acc, wire, keys, models, ts_l, t_tel, idx_l, mi_l, src_l, vi_l, cls_l, tampered, drift_l,
                          status, dur, req_b, resp_b, fps, conf, feats, tag, ua, source)
        return
    fps, conf, feats_l, req_b, resp_b = fps.tolist(), conf.tolist(), feats.tolist(), req_b.tolist(), resp_b.tolist()
    api_docs: list[dict[str, Any]] = []
    api_tags: list[str | None] = []
    tel_ts: list[int] = []
    tel_docs: list[dict[str, Any]] = []
    tel_tags: list[str | None] = []
    for j in range(n):
        k, m = keys[idx_l[j]], models[mi_l[j]]
        etag = tag
        if tampered[j]:
            mdoc = m.tamper_doc
            etag = etag or m.tamper_tag
        else:
            mdoc = m.version_docs[vi_l[j]]
        st = status_l[j]
        api_docs.append({
            "@timestamp": None,
            "event": {"kind": "event", "category": CAT_API, "type": TYPE_ACCESS, "action": "predict",
                      "outcome": "success" if st < 400 else "failure", "duration": dur_l[j], "dataset": DS_API},
            "source": source if source is not None else k.sources[src_l[j]], "organization": k.org,
            "user_agent": ua if ua is not None else k.ua, "url": m.url,
            "http": {"request": {"method": "POST", "body": {"bytes": req_b[j]}},
                     "response": {"status_code": st, "body": {"bytes": resp_b[j]}}},
            "ueba": {"identity": k.identity, "api_key": k.api_key, "model": mdoc, "input": {"fingerprint": fps[j]}},
        })
        api_tags.append(etag)
        if st == 429 or st == 400:
            continue  # rejected before the model ran
        if drift_l[j]:
            etag = etag or m.drift_tag
        tel_ts.append(t_tel[j])
        tel_docs.append({
            "@timestamp": None,
            "event": {"kind": "event", "category": CAT_PROCESS, "type": TYPE_INFO, "action": "inference",
                      "outcome": "failure" if st >= 500 else "success", "duration": dur_l[j], "dataset": DS_TELEMETRY},
            "ueba": {"identity": m.identity, "model": mdoc,
                     "telemetry": {"prediction": m.classes[cls_l[j]], "confidence": conf[j],
                                   "features": dict(zip(m.features, feats_l[j])), "error": st >= 500,
                                   "caller_api_key": k.id}},
        })
        tel_tags.append(etag)
    acc.extend(ts_l, "api", api_docs, api_tags)
    acc.extend(tel_ts, "telemetry", tel_docs, tel_tags)


def _wire_predictions(acc, J, keys, models, ts_l, t_tel, idx_l, mi_l, src_l, vi_l, cls_l, tampered, drift_l,
                      status, dur, req, resp, fps, conf, feats, tag, ua, source) -> None:
    """Wire-mode twin of the document loop in :func:`emit_predictions` (numbers come as arrays)."""
    kb, mb = J.tables(keys, models)
    # orjson formats float64 arrays exactly as it does the same values as Python floats
    fp_b = json_rows(fps)
    conf_b = json_values(conf)
    feat_b = json_values(feats.ravel())
    status_l, status_b, dur_b = status.tolist(), json_values(status), json_values(dur)
    req_b, resp_b = json_values(req), json_values(resp)
    st_api = stamps(np.asarray(ts_l, dtype=np.int64))
    st_tel = stamps(np.asarray(t_tel, dtype=np.int64))
    ua_b = J(ua) if ua is not None else None
    src_fixed = J(source) if source is not None else None
    pa, pb, ta, tb = _WIRE_PREDICT_A, _WIRE_PREDICT_B, _WIRE_TEL_A, _WIRE_TEL_B
    api_docs: list[tuple[bytes, bytes]] = []
    api_tags: list[str | None] = []
    tel_ts: list[int] = []
    tel_docs: list[tuple[bytes, bytes]] = []
    tel_tags: list[str | None] = []
    outcome = _OUTCOME
    for (s_api, s_tel, t_t, ki, mi, si, vi, ci, is_tam, is_drift, st, st_b, du, rq, rs, fp, cf, j4) in zip(
            st_api, st_tel, t_tel, idx_l, mi_l, src_l, vi_l, cls_l, tampered, drift_l, status_l, status_b, dur_b, req_b,
            resp_b, fp_b, conf_b, range(0, 4 * len(ts_l), 4)):
        org, kua, kident, kak, kid, ksrc = kb[ki]
        url, mident, vers, tam, classes, ftmpl, nf = mb[mi]
        etag = tag
        if is_tam:
            mdoc = tam
            etag = etag or models[mi].tamper_tag
        else:
            mdoc = vers[vi]
        api_docs.append((pa % (s_api, outcome[st >= 400], du),
                         pb % (src_fixed or ksrc[si], org, ua_b or kua, url, rq, st_b, rs, kident, kak, mdoc, fp)))
        api_tags.append(etag)
        if st == 429 or st == 400:
            continue
        if is_drift:
            etag = etag or models[mi].drift_tag
        tel_ts.append(t_t)
        tel_docs.append((ta % (s_tel, outcome[st >= 500], du),
                         tb % (mident, mdoc, classes[ci], cf, ftmpl % tuple(feat_b[j4:j4 + nf]),
                               b"true" if st >= 500 else b"false", kid)))
        tel_tags.append(etag)
    acc.extend(ts_l, "api", api_docs, api_tags)
    acc.extend(tel_ts, "telemetry", tel_docs, tel_tags)


def emit_chats(acc: _Acc, rng: np.random.Generator, w: World, idx: np.ndarray, ts: np.ndarray, src_i: np.ndarray,
               *, prompts: list[dict] | None = None, tag: str | None = None, ua: dict | None = None,
               source: dict | None = None, out_scale: float = 1.0, wire: JsonCache | None = None) -> None:
    """LLM chat calls of keys ``idx`` at ``ts`` with prompts from the benign pool (or ``prompts``)."""
    n = len(idx)
    if not n:
        return
    pool = prompts if prompts is not None else w.prompts
    p_i = rng.integers(0, len(pool), n).tolist()
    ctx = np.exp(rng.normal(5.5, 0.9, n)).astype(np.int64)
    out_tok = (np.exp(rng.normal(5.0, 0.8, n)) * out_scale).astype(np.int64) + 1
    dur = ((250 + 18 * out_tok * rng.uniform(0.7, 1.4, n)) * 1e6).astype(np.int64).tolist()
    status = draw_status(rng, np.full(n, 0.004)).tolist()
    ctx_l, out_l = ctx.tolist(), out_tok.tolist()
    keys, llms = w.keys, w.llm_docs
    if wire is not None:
        J = wire
        kb, _mb = J.tables(keys, w.models)
        llm_b = [(J(d["system"]), J(d["operation"]), J(d["request"]), J(_LLM_MODEL_DOCS[i])) for i, d in enumerate(llms)]
        st_b = stamps(ts)
        ua_b = J(ua) if ua is not None else None
        src_fixed = J(source) if source is not None else None
        src_l = src_i.tolist()
        docs: list[tuple[bytes, bytes]] = []
        for j, i in enumerate(idx.tolist()):
            k = keys[i]
            org, kua, kident, kak, _kid, ksrc = kb[i]
            pd = pool[p_i[j]]
            in_tok = len(pd["prompt"]) // 4 + ctx_l[j]
            st = status[j]
            out = out_l[j] if st < 400 else 0
            system, op, req, mdoc = llm_b[k.llm]
            docs.append((
                _WIRE_CHAT_A % (st_b[j], _OUTCOME[st >= 400], dur[j]),
                _WIRE_CHAT_B % (src_fixed or ksrc[src_l[j]], org, ua_b or kua, 4 * in_tok + 120, st, 4 * out + 200,
                                system, op, req, in_tok, out, kident, kak, mdoc, J(pd)),
            ))
        acc.extend(ts.tolist(), "api", docs, tag)
        return
    for j, (i, t) in enumerate(zip(idx.tolist(), ts.tolist())):
        k = keys[i]
        pd = pool[p_i[j]]
        in_tok = len(pd["prompt"]) // 4 + ctx_l[j]
        st = status[j]
        acc.add(t, "api", chat_doc(k, source if source is not None else k.sources[src_i[j]], ua or k.ua, k.llm,
                                   llms[k.llm], pd, st, dur[j], in_tok, out_l[j] if st < 400 else 0), tag)


# -------------------------------------------------------------- deploys


class ModelDeploys:
    """Registry events when a model version rolls: the CI service account
    writes the new artifact, then ``model-deploy`` appears on the telemetry
    stream with the new artifact hash."""

    component = 4

    def __init__(self, world: World) -> None:
        self.w = world

    def deployer(self, team: str):
        cis = [s for s in self.w.services if s.kind == "ci"]
        for s in cis:
            if s.team == team:
                return s
        return cis[0] if cis else self.w.services[0]

    def generate(self, si: int, t0: int, t1: int) -> Batch:
        acc = _Acc()
        for m in self.w.models:
            for k, t in enumerate(m.deploys_ms):
                if t0 <= t < t1:
                    sa = self.deployer(m.team)
                    art = next(r for r in self.w.resources if r.type == "model_artifact" and r.id.endswith(f"/{m.id}/model.safetensors"))
                    tw = max(t0, t - 90_000)
                    change = self.w.change_of(self.w.resources.index(art), tw)
                    if change is not None and not change["in_window"]:
                        change = self.w.covered(f"CHG-deploy-{m.id}-{k + 1}")
                    acc.add(tw, "access", access_doc(sa.user, sa.identity, sa.sources[0], sa.ua, "write", "success",
                                                     art.doc, {"bytes": int(np.exp(m.latency_mu) * 4e7), "objects": 1},
                                                     change))
                    acc.add(t, "telemetry", deploy_doc(m, m.version_docs[k + 1], sa.user, f"dep-{m.id}-{k + 1}"))
        return acc.batch()


__all__ = ["Batch", "HumanTraffic", "ServiceTraffic", "TenantTraffic", "ModelDeploys", "JsonCache"]
