"""Baseline traffic: one generator per population, one call per time slice.

Each generator returns a :class:`Batch` for the slice ``[t0, t1)`` (epoch ms):
random draws are vectorised with numpy over all identities and events of the
slice, then ECS documents are assembled from the shared per-identity
sub-objects built in :mod:`.world`. ``@timestamp`` and ``event.id`` are filled
in by the engine after the slice is put in time order. In wire mode (a
:class:`~.wire.JsonCache` given) the same draws become template-rendered
JSON lines instead of documents (:mod:`.wire`): byte for byte what orjson
makes of the documents.

Documents share constant sub-objects (``user``, ``source``, ``ueba.identity``
...). Treat them as read-only; copy before mutating.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable
from zlib import crc32

import numpy as np
import orjson

from . import catalog as C
from . import wire as W
from .wire import JsonCache
from .world import (
    ACTIONS,
    CATEGORY_BY_TYPE,
    CHANGE_COMPLIANCE,
    DAY_MS,
    FP_DIM,
    GOVERNED,
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
    In wire mode (:mod:`.wire`) ``docs`` may be empty and ``parts`` hold the
    events instead, in order: each renders its events' JSON lines given their
    ``@timestamp`` and ``event.id``. ``counts`` (events per kind) is optional.
    """

    ts: np.ndarray                       # int64 epoch ms
    kinds: list[str]
    docs: list[dict[str, Any]]
    tags: str | list[str | None] | None = None
    parts: list[W.Part | W.Docs | W.Items] | None = None
    counts: dict[str, int] | None = None

    @staticmethod
    def empty() -> "Batch":
        return Batch(np.empty(0, dtype=np.int64), [], [])


class _Acc:
    """Accumulates the events of one batch: documents, and in wire mode
    template-rendered :class:`~.wire.Part` s, in the order they were added."""

    def __init__(self) -> None:
        self._ts: list[list[int] | np.ndarray] = []   # per run of documents a list, per part an array
        self.kinds: list[str] = []
        self.docs: list[dict[str, Any]] = []
        self.tags: list[str | None] = []
        self.segments: list[W.Part | W.Docs] = []
        self.counts: dict[str, int] = {}
        self.tagged = False
        self.wired = False

    @property
    def ts(self) -> list[int]:
        """Timestamps (ms) of the events so far, in order."""
        out: list[int] = []
        for chunk in self._ts:
            out += chunk if type(chunk) is list else chunk.tolist()
        return out

    def _docs_run(self) -> tuple[list[int], list[dict[str, Any]]]:
        seg = self.segments[-1] if self.segments else None
        if type(seg) is not W.Docs:
            seg = W.Docs([])
            self.segments.append(seg)
            self._ts.append([])
        return self._ts[-1], seg.docs  # type: ignore[return-value,union-attr]

    def add(self, ts: int, kind: str, doc: dict[str, Any], tag: str | None = None) -> None:
        ts_run, docs_run = self._docs_run()
        ts_run.append(ts)
        docs_run.append(doc)
        self.kinds.append(kind)
        self.docs.append(doc)
        self.tags.append(tag)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if tag is not None:
            self.tagged = True

    def _tags(self, tags: list[str | None] | str | None, n: int) -> None:
        if isinstance(tags, list):
            self.tags.extend(tags)
            self.tagged = self.tagged or tags.count(None) != len(tags)
        else:
            self.tags.extend([tags] * n)
            self.tagged = self.tagged or (tags is not None and n > 0)

    def extend(self, ts: list[int], kind: str, docs: list[dict[str, Any]], tags: list[str | None] | str | None) -> None:
        n = len(docs)
        ts_run, docs_run = self._docs_run()
        ts_run.extend(ts)
        docs_run.extend(docs)
        self.kinds.extend([kind] * n)
        self.docs.extend(docs)
        self.counts[kind] = self.counts.get(kind, 0) + n
        self._tags(tags, n)

    def extend_wire(self, ts: np.ndarray, kind: str, part: W.Part, tags: list[str | None] | str | None) -> None:
        """Events of ``kind`` at ``ts`` (ms) that ``part`` renders (wire mode)."""
        n = len(ts)
        self._ts.append(np.asarray(ts, dtype=np.int64))
        self.segments.append(part)
        self.kinds.extend([kind] * n)
        self.counts[kind] = self.counts.get(kind, 0) + n
        self.wired = True
        self._tags(tags, n)

    def items(self) -> list:
        """Per event, in order: its document or its (template, values, lead) row."""
        out: list = []
        for seg in self.segments:
            out += seg.rows()
        return out

    def batch(self) -> Batch:
        tags = self.tags if self.tagged else None
        if not self._ts:
            ts = np.empty(0, dtype=np.int64)
        elif len(self._ts) == 1:
            ts = np.asarray(self._ts[0], dtype=np.int64)
        else:
            ts = np.concatenate([np.asarray(c, dtype=np.int64) for c in self._ts])
        if not self.wired:
            return Batch(ts, self.kinds, self.docs, tags, counts=self.counts)
        return Batch(ts, self.kinds, [], tags, self.segments, self.counts)


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


def transfer_arrays(rng: np.random.Generator, world: World, res: np.ndarray, mu_boost: float | np.ndarray = 0.0,
                    read_scale: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Actions and lognormal volumes for accesses to resources ``res``.

    Returns action index (into ``ACTIONS``), bytes, rows (-1 = none) and objects per event.
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
    return act, nbytes, rows, objects


def transfer_dict(nbytes: int, rows: int, objects: int) -> dict[str, int]:
    if rows >= 0:
        return {"bytes": nbytes, "rows": rows, "objects": objects}
    return {"bytes": nbytes, "objects": objects}


# -------------------------------------------------------------- humans


_ACCESS_LAYOUT = (len(RES_TYPES), len(ACTIONS), 2, 2, 2)   # resource type, action, failed, rows, change


def _access_template(code: int) -> bytes:
    rt, a, failed, with_rows, with_change = W.digits(code, _ACCESS_LAYOUT)
    action = ACTIONS[a]
    head = (b'{"@timestamp":"%s","event":{"kind":"event","category":' + W.esc(orjson.dumps(CATEGORY_BY_TYPE[rt]))
            + b',"type":' + W.esc(orjson.dumps(_TYPE_OF_ACTION[action])) + b',"action":' + W.esc(orjson.dumps(action))
            + b',"outcome":"' + (b"failure" if failed else b"success")
            + b'","dataset":"ueba.access","id":"%s"},%s,"resource":%s')
    if failed:
        transfer = b"%.0s%.0s%.0s"                      # a failed access moved nothing
    elif with_rows:
        transfer = b',"transfer":{"bytes":%s,"rows":%s,"objects":%s}'
    else:
        transfer = b',"transfer":{"bytes":%s%.0s,"objects":%s}'
    return head + transfer + (b',"change":%s' if with_change else b"%.0s") + b"}}\n"


def _login_template(failed: int) -> bytes:
    return (b'{"@timestamp":"%s","event":{"kind":"event","category":["authentication"],"type":["start"],'
            b'"action":"login","outcome":"' + (b"failure" if failed else b"success")
            + b'","dataset":"ueba.access","id":"%s"},%s}}\n')


class AccessWire:
    """Wire-mode rendering of access events (:func:`access_doc`, :func:`login_doc`):
    the ``user``/``source``/``user_agent``/``ueba.identity`` block of an
    identity, its resource and its ``ueba.change`` as serialised values in a
    template per event shape."""

    def __init__(self, world: World, J: JsonCache) -> None:
        self.w, self.J = world, J
        teams = list(world.change_docs)
        team_of = {t: i for i, t in enumerate(teams)}
        self.res_gov = np.array([r.type in GOVERNED for r in world.resources], dtype=bool)
        self.res_team = np.array([team_of.get(r.owner, 0) for r in world.resources], dtype=np.int64)
        self.windows = np.array([world.change_windows[t] for t in teams], dtype=bool).reshape(len(teams), 168)
        self.change_b = [b""] + [J(d) for t in teams for d in world.change_docs[t]]   # 1 + 2*team (+1 outside)
        self.res_b = [J(r.doc) for r in world.resources]

    def who(self, people: list, n_src: int, n_ua: int, idx: np.ndarray, src: np.ndarray, ua: np.ndarray,
            source_of: Callable[[Any, int], dict], ua_of: Callable[[Any, int], dict]) -> list[bytes]:
        """Per event, the JSON from ``"user"`` to the ``ueba.identity`` value of
        person or account ``people[idx]`` with source ``source_of(p, src)`` and
        user agent ``ua_of(p, ua)``."""
        J = self.J
        layout = (len(people), n_src, n_ua)

        def build(code: int) -> bytes:
            i, s, u = W.digits(code, layout)
            p = people[i]
            return (b'"user":' + J(p.user) + b',"source":' + J(source_of(p, s)) + b',"user_agent":'
                    + J(ua_of(p, u)) + b',"ueba":{"identity":' + J(p.identity))

        return J.templates(b"who", (people,), layout, W.combine(layout, idx, src, ua), build)

    def changes(self, res: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, list[bytes], np.ndarray]:
        """Per event: governed or not, the JSON of its ``ueba.change`` (see
        :meth:`World.change_of`), and the events outside the change window."""
        gov = self.res_gov[res]
        team = self.res_team[res]
        inside = self.windows[team, (ts // HOUR_MS + 72) % 168]
        code = np.where(gov, 1 + 2 * team + ~inside, 0)
        return gov, list(map(self.change_b.__getitem__, code.tolist())), np.flatnonzero(gov & ~inside)

    def accesses(self, who: list[bytes], res: np.ndarray, act: np.ndarray, failed: np.ndarray | bool, gov: np.ndarray,
                 nbytes: np.ndarray, rows: np.ndarray, objs: np.ndarray, chg: list[bytes]) -> W.Part:
        failed = np.broadcast_to(np.asarray(failed, dtype=np.int64), res.shape)
        code = W.combine(_ACCESS_LAYOUT, self.w.res_type[res], act, failed, rows >= 0, gov)
        tmpl = self.J.templates(b"access", (), _ACCESS_LAYOUT, code, _access_template)
        return W.Part(tmpl, [who, list(map(self.res_b.__getitem__, res.tolist())), W.json_values(nbytes),
                             W.json_values(rows), W.json_values(objs), chg], lead=0)

    def logins(self, who: list[bytes], failed: np.ndarray) -> W.Part:
        return W.Part(self.J.templates(b"login", (), (2,), failed.astype(np.int64), _login_template), [who], lead=0)


class HumanTraffic:
    """Logins and resource accesses of people: working hours in their own
    timezone on weekdays, on-call nights, business trips, new projects."""

    component = 1

    def __init__(self, world: World, wire: JsonCache | None = None) -> None:
        self.w = world
        self.wire = AccessWire(world, wire) if wire is not None else None
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
            act, nbytes, rows, objs = transfer_arrays(rng, w, res)
            failed = rng.random(n) < 0.004
            src_i = (rng.random(n) * self.n_src[idx]).astype(np.int64)
            ua_i = (rng.random(n) * self.n_ua[idx]).astype(np.int64)
            if self.wire is not None:
                self._wire_accesses(acc, idx, ts, res, act, nbytes, rows, objs, failed, src_i, ua_i, away[idx])
            else:
                self._accesses(acc, idx, ts, res, act, nbytes, rows, objs, failed, src_i, ua_i, away[idx])

        # logins, with the occasional typo first
        idx = np.repeat(np.arange(len(hs)), n_login)
        if len(idx):
            ts = t0 + rng.integers(0, t1 - t0, len(idx))
            typo = rng.random(len(idx)) < 0.05
            gap = rng.integers(4_000, 40_000, len(idx))
            src_i = (rng.random(len(idx)) * self.n_src[idx]).astype(np.int64)
            ua_i = (rng.random(len(idx)) * self.n_ua[idx]).astype(np.int64)
            if self.wire is not None:
                self._wire_logins(acc, t0, idx, ts, typo, gap, src_i, ua_i, away[idx])
            else:
                self._logins(acc, t0, idx, ts, typo, gap, src_i, ua_i, away[idx])
        return acc.batch()

    def _accesses(self, acc: _Acc, idx, ts, res, act, nbytes, rows, objs, failed, src_i, ua_i, away_e) -> None:
        w, hs, resources = self.w, self.w.humans, self.w.resources
        failed, src_i, ua_i, away_e = failed.tolist(), src_i.tolist(), ua_i.tolist(), away_e.tolist()
        nbytes, rows, objs = nbytes.tolist(), rows.tolist(), objs.tolist()
        names = [ACTIONS[a] for a in act.tolist()]
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

    def _logins(self, acc: _Acc, t0: int, idx, ts, typo, gap, src_i, ua_i, away_e) -> None:
        hs = self.w.humans
        typo, gap, src_i, ua_i, away_e = typo.tolist(), gap.tolist(), src_i.tolist(), ua_i.tolist(), away_e.tolist()
        for j, (i, t) in enumerate(zip(idx.tolist(), ts.tolist())):
            h = hs[i]
            src = h.trip.source if away_e[j] else h.sources[src_i[j]]
            ua = h.uas[ua_i[j]]
            if typo[j]:
                acc.add(max(t0, t - gap[j]), "access", login_doc(h.user, h.identity, src, ua, "failure"))
            acc.add(t, "access", login_doc(h.user, h.identity, src, ua, "success"))

    def _who(self, idx, src_i, ua_i, away_e) -> list[bytes]:
        trip = int(self.n_src.max())                  # source index of "abroad": the trip's network
        return self.wire.who(self.w.humans, trip + 1, int(self.n_ua.max()), idx,  # type: ignore[union-attr]
                             np.where(away_e, trip, src_i), ua_i,
                             lambda h, s: h.trip.source if s == trip else h.sources[s], lambda h, u: h.uas[u])

    def _wire_accesses(self, acc: _Acc, idx, ts, res, act, nbytes, rows, objs, failed, src_i, ua_i, away_e) -> None:
        """Wire-mode twin of :meth:`_accesses`."""
        aw = self.wire
        assert aw is not None
        gov, chg, outside = aw.changes(res, ts)
        if len(outside):
            J = aw.J
            for j, i, t in zip(outside.tolist(), idx[outside].tolist(), ts[outside].tolist()):
                cover = self.cover(i, t)
                if cover is not None:
                    chg[j] = J(cover)
        part = aw.accesses(self._who(idx, src_i, ua_i, away_e), res, act, failed, gov, nbytes, rows, objs, chg)
        acc.extend_wire(ts, "access", part, None)

    def _wire_logins(self, acc: _Acc, t0: int, idx, ts, typo, gap, src_i, ua_i, away_e) -> None:
        """Wire-mode twin of :meth:`_logins`: a typo's failed login, then the login."""
        aw = self.wire
        assert aw is not None
        k = np.repeat(np.arange(len(idx)), 1 + typo)
        failed = np.zeros(len(k), dtype=bool)
        failed[:-1] = k[:-1] == k[1:]                  # the first of a pair is the typo
        when = np.where(failed, np.maximum(t0, ts[k] - gap[k]), ts[k])
        who = self._who(idx[k], src_i[k], ua_i[k], away_e[k])
        acc.extend_wire(when, "access", aw.logins(who, failed), None)


# -------------------------------------------------------------- service accounts


class ServiceTraffic:
    """Machine identities: CI on the team's working hours, serving at a constant
    rate, ETL hourly at a fixed minute, nightly batch jobs with big volumes."""

    component = 2

    def __init__(self, world: World, wire: JsonCache | None = None) -> None:
        self.w = world
        self.wire = AccessWire(world, wire) if wire is not None else None
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
        drawn: list[tuple[np.ndarray, ...]] = []
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
            act, nbytes, rows, objs = transfer_arrays(rng, w, res, mu_boost=boost, read_scale=1.0)
            src_i = rng.integers(0, len(s.sources), n)
            if self.wire is not None:
                drawn.append((np.full(n, k, dtype=np.int64), ts, res, act, nbytes, rows, objs, src_i))
                continue
            names = [ACTIONS[a] for a in act.tolist()]
            nbytes, rows, objs, src_l = nbytes.tolist(), rows.tolist(), objs.tolist(), src_i.tolist()
            for j, (r, t) in enumerate(zip(res.tolist(), ts.tolist())):
                acc.add(t, "access", access_doc(s.user, s.identity, s.sources[src_l[j]], s.ua, names[j], "success",
                                                w.resources[r].doc, transfer_dict(nbytes[j], rows[j], objs[j]),
                                                self.change(k, r, t)))
        if drawn:
            self._wire_accesses(acc, *(np.concatenate(c) for c in zip(*drawn)))
        return acc.batch()

    def _wire_accesses(self, acc: _Acc, ks, ts, res, act, nbytes, rows, objs, src_i) -> None:
        """Wire-mode twin of the document loop in :meth:`generate`."""
        aw = self.wire
        assert aw is not None
        ss = self.w.services
        gov, chg, outside = aw.changes(res, ts)
        for j, k in zip(outside.tolist(), ks[outside].tolist()):
            chg[j] = aw.J(self.w.covered(f"STD-{ss[k].name}"))
        who = aw.who(ss, max(len(s.sources) for s in ss), 1, ks, src_i, np.zeros(len(ks), dtype=np.int64),
                     lambda s, i: s.sources[i], lambda s, _u: s.ua)
        acc.extend_wire(ts, "access", aw.accesses(who, res, act, False, gov, nbytes, rows, objs, chg), None)


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
    tampered_a = ts >= per_model[:, 4]
    t_tel_a = np.minimum(ts + lat_ms.astype(np.int64), t1 - 1)
    keys = w.keys
    if wire is not None:
        _wire_predictions(acc, wire, keys, models, ts, t_tel_a, idx, mi, src_i, vi, cls, tampered_a, drifting, status,
                          dur, req_b, resp_b, fps, conf, feats, tag, ua, source)
        return
    tampered, t_tel = tampered_a.tolist(), t_tel_a.tolist()
    drift_l = drifting.tolist()
    status_l, dur_l = status.tolist(), dur.tolist()
    ts_l, idx_l, mi_l, src_l, vi_l, cls_l = ts.tolist(), idx.tolist(), mi.tolist(), src_i.tolist(), vi.tolist(), cls.tolist()
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


def _wire_predictions(acc, J, keys, models, ts, t_tel, idx, mi, src_i, vi, cls, tampered, drifting, status, dur,
                      req, resp, fps, conf, feats, tag, ua, source) -> None:
    """Wire-mode twin of the document loop in :func:`emit_predictions`, rendered
    by :func:`.wire.predictions`. The calls, and their telemetry, are each put
    in time order first (stable: ties keep their order), which changes nothing
    in the engine's stable merge of the slice but lets it gather the lines
    nearly sequentially."""
    api_sel = np.argsort(ts, kind="stable")
    ran = np.flatnonzero((status != 429) & (status != 400))   # rejected calls never reached the model
    tel_sel = ran[np.argsort(t_tel[ran], kind="stable")]
    api, tel = W.predictions(J, keys, models, api_sel, tel_sel, idx, mi, src_i, vi, cls, tampered, status, dur, req,
                             resp, fps, conf, feats, ua, source)
    if tag is not None:
        api_tags: list[str | None] | str | None = tag
        tel_tags: list[str | None] | str | None = tag
    else:
        api_tags, tel_tags = model_tags(models, mi, tampered, drifting, api_sel, tel_sel)
    acc.extend_wire(ts[api_sel], "api", api, api_tags)
    acc.extend_wire(t_tel[tel_sel], "telemetry", tel, tel_tags)


def model_tags(models: list, mi: np.ndarray, tampered: np.ndarray, drifting: np.ndarray, api_sel: np.ndarray,
               tel_sel: np.ndarray) -> tuple[list[str | None] | None, list[str | None] | None]:
    """Scenario tags the models put on the predict calls ``api_sel`` (tampered
    artifact) and on the telemetry of the calls ``tel_sel`` (tampered artifact
    first, then poisoning drift), vectorised; ``None`` when no event has one."""
    tam_tags = np.array([m.tamper_tag for m in models], dtype=object)
    drift_tags = np.array([m.drift_tag for m in models], dtype=object)
    tam = tampered & (tam_tags != None)[mi]  # noqa: E711 (elementwise)
    dr = drifting & (drift_tags != None)[mi]  # noqa: E711
    api = None
    tam_a, mi_a = tam[api_sel], mi[api_sel]
    if tam_a.any():
        a = np.full(len(mi_a), None, dtype=object)
        a[tam_a] = tam_tags[mi_a[tam_a]]
        api = a.tolist()
    tel = None
    tam_t, dr_t, mi_t = tam[tel_sel], dr[tel_sel], mi[tel_sel]
    if tam_t.any() or dr_t.any():
        t = np.full(len(mi_t), None, dtype=object)
        t[dr_t] = drift_tags[mi_t[dr_t]]
        t[tam_t] = tam_tags[mi_t[tam_t]]
        tel = t.tolist()
    return api, tel


def emit_chats(acc: _Acc, rng: np.random.Generator, w: World, idx: np.ndarray, ts: np.ndarray, src_i: np.ndarray,
               *, prompts: list[dict] | None = None, tag: str | None = None, ua: dict | None = None,
               source: dict | None = None, out_scale: float = 1.0, wire: JsonCache | None = None) -> None:
    """LLM chat calls of keys ``idx`` at ``ts`` with prompts from the benign pool (or ``prompts``)."""
    n = len(idx)
    if not n:
        return
    pool = prompts if prompts is not None else w.prompts
    p_i_a = rng.integers(0, len(pool), n)
    ctx = np.exp(rng.normal(5.5, 0.9, n)).astype(np.int64)
    out_tok = (np.exp(rng.normal(5.0, 0.8, n)) * out_scale).astype(np.int64) + 1
    dur_a = ((250 + 18 * out_tok * rng.uniform(0.7, 1.4, n)) * 1e6).astype(np.int64)
    status_a = draw_status(rng, np.full(n, 0.004))
    keys, llms = w.keys, w.llm_docs
    if wire is not None:  # in time order (stable), see _wire_predictions
        o = np.argsort(ts, kind="stable")
        part = W.chats(wire, keys, llms, _LLM_MODEL_DOCS, idx[o], src_i[o], pool, p_i_a[o], ctx[o], out_tok[o], dur_a[o],
                       status_a[o], ua, source)
        acc.extend_wire(ts[o], "api", part, tag)
        return
    p_i, dur, status = p_i_a.tolist(), dur_a.tolist(), status_a.tolist()
    ctx_l, out_l = ctx.tolist(), out_tok.tolist()
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
