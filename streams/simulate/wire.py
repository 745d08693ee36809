"""Wire mode: events rendered straight to JSON lines, without a dict per event.

:func:`~streams.simulate.engine.write_jsonl` runs in two phases per hour slice:

1. the generators draw everything vectorised, as in dict mode (the same
   draws in the same order), and return per event its timestamp, stream
   kind and scenario tag; the events themselves as *segments*: a
   :class:`Part` (one template per event and columns of serialised values),
   :class:`Docs` (documents, for the rare hand-built events) or
   :class:`Items` (a scenario's mix of both);
2. the engine merges the slice in time order, which fixes every event's
   ``event.id``, formats all ``@timestamp`` and ``event.id`` values at once
   (numpy tables, no datetime formatting per event) and has the segments
   render their lines a chunk at a time.

A :class:`Part` fills one bytes template per event with ``%``: one C call
per line, driven by ``map`` (no Python loop per event). A template has the
event's constant sub-objects (``source``, ``organization``, ``ueba.api_key``,
the model version, the HTTP status...) serialised into it; it is built once
per combination, found by an integer code computed with numpy. Numbers are
serialised by orjson in one call per column. Parsed back, each line equals
the document the dict mode builds, byte for byte: the lines are
``orjson.dumps`` of those documents (tested).
"""

from __future__ import annotations

from itertools import repeat
from typing import Any, Callable

import numpy as np
import orjson

#: HTTP statuses the simulator draws (:func:`~streams.simulate.generate.draw_status`), in code order.
STATUSES = (200, 400, 429, 500, 503)
_STATUS_ARR = np.array(STATUSES, dtype=np.int64)
_MOD = bytes.__mod__


def esc(b: bytes) -> bytes:
    """``b`` as a literal inside a ``%`` template."""
    return b.replace(b"%", b"%%")


# ------------------------------------------------------------------ numbers, times, ids


def json_values(values: np.ndarray) -> list[bytes]:
    """JSON of each number of a 1-d array, serialised in one orjson call
    (orjson formats float64 arrays exactly as it does the same Python floats)."""
    if not len(values):
        return []
    return orjson.dumps(np.ascontiguousarray(values), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")


def json_rows(rows: np.ndarray) -> list[bytes]:
    """JSON array bodies (without brackets) of each row of a 2-d array, in one orjson call."""
    if not len(rows):
        return []
    if rows.shape[1] == 0:
        return [b""] * len(rows)
    return orjson.dumps(np.ascontiguousarray(rows), option=orjson.OPT_SERIALIZE_NUMPY)[2:-2].split(b"],[")


_H2 = np.array([b"%02x" % i for i in range(256)], dtype="S2")
_H4 = np.array([b"%04x" % i for i in range(65536)], dtype="S4")


def hex_ids(prefix: bytes, nums: np.ndarray) -> np.ndarray:
    """``prefix`` + 10 lower-case hex digits (the low 40 bits) of each of ``nums``,
    as an ``S`` array, by table look-up."""
    nums = np.asarray(nums, dtype=np.int64)
    fields = [("p", f"S{len(prefix)}")] if prefix else []
    out = np.empty(len(nums), dtype=fields + [("a", "S2"), ("b", "S4"), ("c", "S4")])
    if prefix:
        out["p"] = prefix
    out["a"] = _H2[(nums >> 32) & 0xFF]
    out["b"] = _H4[(nums >> 16) & 0xFFFF]
    out["c"] = _H4[nums & 0xFFFF]
    return out.view(f"S{len(prefix) + 10}")


_HOUR_MS = 3_600_000
_MMSS = np.array([b"%02d:%02d" % divmod(i, 60) for i in range(3600)], dtype="S5")
_DOT_MS_Z = np.array([b".%03dZ" % i for i in range(1000)], dtype="S5")
_STAMP = np.dtype([("h", "S14"), ("s", "S5"), ("m", "S5")])


def stamp_array(ts_ms: np.ndarray) -> np.ndarray:
    """``@timestamp`` values (ISO 8601 UTC, ms, ``Z``) as an ``S24`` array: the
    same text as ``numpy.datetime_as_string(..., unit="ms", timezone="UTC")``,
    from tables (date and hour per distinct hour, minute:second, milliseconds)."""
    ts = np.asarray(ts_ms, dtype=np.int64)
    if not len(ts):
        return np.empty(0, dtype="S24")
    hour = ts // _HOUR_MS
    h0, h1 = int(hour.min()), int(hour.max())
    hours = None
    if h1 - h0 < 4096:
        hours = np.datetime_as_string(np.arange(h0, h1 + 1, dtype=np.int64).astype("datetime64[h]"), unit="h")
    if hours is None or (np.char.str_len(hours) != 13).any():  # years outside 0000..9999, or a long span
        return np.datetime_as_string(ts.astype("datetime64[ms]"), unit="ms", timezone="UTC").astype("S")
    out = np.empty(len(ts), dtype=_STAMP)
    out["h"] = np.char.add(hours, ":").astype("S14")[hour - h0]
    ms = ts - hour * _HOUR_MS
    sec = ms // 1000
    out["s"] = _MMSS[sec]
    out["m"] = _DOT_MS_Z[ms - sec * 1000]
    return out.view("S24")


def status_codes(status: np.ndarray) -> np.ndarray:
    """Index of each HTTP status in :data:`STATUSES`."""
    code = np.searchsorted(_STATUS_ARR, status)
    if len(code) and not (_STATUS_ARR[np.minimum(code, len(STATUSES) - 1)] == status).all():
        raise ValueError(f"HTTP status outside {STATUSES}")
    return code


# ------------------------------------------------------------------ templates


def digits(code: int, layout: tuple[int, ...]) -> list[int]:
    """The mixed-radix digits of ``code`` (most significant first) in ``layout``."""
    out = []
    for r in reversed(layout[1:]):
        code, d = divmod(code, r)
        out.append(d)
    out.append(code)
    return out[::-1]


def combine(layout: tuple[int, ...], *digit_arrays: np.ndarray | int) -> np.ndarray:
    """One int64 code per event from its digits (each ``< layout[i]``): the
    inverse of :func:`digits`."""
    code = np.asarray(digit_arrays[0], dtype=np.int64)
    for digit, radix in zip(digit_arrays[1:], layout[1:]):
        code = code * radix + digit
    return code


class _Space:
    """Templates of one kind of event for one set of shared objects: a table
    of built templates and, when the code space is small, a dense code ->
    table index array (else a dict)."""

    DENSE_MAX = 1 << 22

    def __init__(self, objs: tuple, size: float) -> None:
        self.objs = objs                  # keeps the objects alive while their ids key the cache
        self.table: list[bytes] = []
        self.dense = np.full(int(size), -1, dtype=np.int32) if size <= self.DENSE_MAX else None
        self.sparse: dict[int, int] = {}


class JsonCache:
    """Serialised JSON of the shared, never-mutated sub-objects (by identity),
    and the per-combination line templates built from them."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[Any, bytes]] = {}
        self._spaces: dict[tuple, _Space] = {}
        self._pools: dict[int, tuple[list, list[bytes], np.ndarray]] = {}

    def __call__(self, obj: Any) -> bytes:
        hit = self._by_id.get(id(obj))
        if hit is None:
            hit = self._by_id[id(obj)] = (obj, orjson.dumps(obj))  # keep obj alive: ids stay unique
        return hit[1]

    def lit(self, obj: Any) -> bytes:
        """JSON of ``obj`` as a template literal."""
        return esc(self(obj))

    def templates(self, name: bytes, objs: tuple, layout: tuple[int, ...], codes: np.ndarray,
                  build: Callable[[int], bytes]) -> list[bytes]:
        """The template (any bytes) of each event from its code (see
        :func:`combine`), built by ``build(code)`` once per code, ``name``,
        ``layout`` and objects ``objs`` it is built from (kept alive: their ids
        key the cache)."""
        if not len(codes):
            return []
        key = (name, layout, *map(id, objs))
        sp = self._spaces.get(key)
        if sp is None:
            sp = self._spaces[key] = _Space(objs, int(np.prod(layout, dtype=np.float64)))
        table = sp.table
        if sp.dense is not None:
            tid = sp.dense[codes]
            missing = tid < 0
            if missing.any():
                for c in np.unique(codes[missing]).tolist():
                    sp.dense[c] = len(table)
                    table.append(build(c))
                tid = sp.dense[codes]
            return list(map(table.__getitem__, tid.tolist()))
        uniq, inv = np.unique(codes, return_inverse=True)
        local = []
        for c in uniq.tolist():
            i = sp.sparse.get(c)
            if i is None:
                i = sp.sparse[c] = len(table)
                table.append(build(c))
            local.append(table[i])
        return list(map(local.__getitem__, inv.ravel().tolist()))

    def pool(self, prompts: list[dict[str, Any]]) -> tuple[list[bytes], np.ndarray]:
        """JSON of each prompt document of a pool and the length of its prompt."""
        hit = self._pools.get(id(prompts))
        if hit is None:
            hit = self._pools[id(prompts)] = (prompts, [self(p) for p in prompts],
                                              np.array([len(p["prompt"]) for p in prompts], dtype=np.int64))
        return hit[1], hit[2]


class Part:
    """Events of one kind rendered from templates: the line of event ``j`` is
    ``templates[j] % (stamp, cols[0][j], event_id, cols[1][j], cols[2][j], ...)``,
    or with ``lead=0`` ``templates[j] % (stamp, event_id, cols[0][j], ...)``."""

    __slots__ = ("templates", "cols", "lead")

    def __init__(self, templates: list[bytes], cols: list[list], lead: int = 1) -> None:
        self.templates = templates
        self.cols = cols
        self.lead = lead

    def __len__(self) -> int:
        return len(self.templates)

    def render(self, stamps: list[bytes], ids: list[bytes], lo: int = 0, hi: int | None = None) -> list[bytes]:
        """Lines of events ``lo:hi`` given their stamps and ids."""
        t, c = self.templates, self.cols
        if lo or hi is not None:
            t, c = t[lo:hi], [x[lo:hi] for x in c]
        if self.lead:
            return list(map(_MOD, t, zip(stamps, c[0], ids, *c[1:])))
        return list(map(_MOD, t, zip(stamps, ids, *c)))

    def take(self, order: list[int]) -> "Part":
        """The events in ``order``."""
        return Part(list(map(self.templates.__getitem__, order)), [list(map(c.__getitem__, order)) for c in self.cols],
                    self.lead)

    def rows(self) -> list[tuple[bytes, tuple, int]]:
        """Per event: its template, its values and ``lead`` (for :func:`render_items`)."""
        return list(zip(self.templates, zip(*self.cols), repeat(self.lead)))


class Docs:
    """Events built as documents: ``@timestamp`` and ``event.id`` are set on
    them (they are mutated) and they are serialised with orjson."""

    __slots__ = ("docs",)

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs

    def __len__(self) -> int:
        return len(self.docs)

    def render(self, stamps: list[bytes], ids: list[bytes], lo: int = 0, hi: int | None = None) -> list[bytes]:
        return dumps_docs(self.docs[lo:hi], stamps, ids)

    def take(self, order: list[int]) -> "Docs":
        return Docs(list(map(self.docs.__getitem__, order)))

    def rows(self) -> list[dict[str, Any]]:
        return self.docs


class Items:
    """A mix of documents and :meth:`Part.rows` (a scenario's events in a slice)."""

    __slots__ = ("items",)

    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def render(self, stamps: list[bytes], ids: list[bytes], lo: int = 0, hi: int | None = None) -> list[bytes]:
        return render_items(self.items[lo:hi], stamps, ids)

    def take(self, order: list[int]) -> "Items":
        return Items(list(map(self.items.__getitem__, order)))

    def rows(self) -> list:
        return self.items


def dumps_docs(docs: list[dict[str, Any]], stamps: list[bytes], ids: list[bytes]) -> list[bytes]:
    """JSON lines of documents, stamped with their ``@timestamp`` and ``event.id``."""
    dumps, opt = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    out: list[bytes] = []
    for d, stamp, i in zip(docs, stamps, ids):
        d["@timestamp"] = stamp.decode()
        d["event"]["id"] = i.decode()
        out.append(dumps(d, option=opt))
    return out


def render_items(items: list, stamps: list[bytes], ids: list[bytes]) -> list[bytes]:
    """JSON lines of a mix of documents and :meth:`Part.rows` items."""
    dumps, opt = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    out: list[bytes] = []
    for item, stamp, i in zip(items, stamps, ids):
        if type(item) is dict:
            item["@timestamp"] = stamp.decode()
            item["event"]["id"] = i.decode()
            out.append(dumps(item, option=opt))
        else:
            tmpl, vals, lead = item
            out.append(tmpl % (((stamp, vals[0], i) + vals[1:]) if lead else (stamp, i) + vals))
    return out


# ------------------------------------------------------------------ predict calls and their telemetry

_PREDICT = (b'{"@timestamp":"%%s","event":{"kind":"event","category":["api"],"type":["access"],"action":"predict",'
            b'"outcome":"%(outcome)s","duration":%%s,"dataset":"ueba.api","id":"%%s"},"source":%(source)s,'
            b'"organization":%(org)s,"user_agent":%(ua)s,"url":%(url)s,"http":{"request":{"method":"POST",'
            b'"body":{"bytes":%%s}},"response":{"status_code":%(status)s,"body":{"bytes":%%s}}},"ueba":{"identity":'
            b'%(identity)s,"api_key":%(api_key)s,"model":%(model)s,"input":{"fingerprint":[%%s]}}}\n')
_TELEMETRY = (b'{"@timestamp":"%%s","event":{"kind":"event","category":["process"],"type":["info"],'
              b'"action":"inference","outcome":"%(outcome)s","duration":%%s,"dataset":"ueba.telemetry","id":"%%s"},'
              b'"ueba":{"identity":%(identity)s,"model":%(model)s,"telemetry":{"prediction":%(prediction)s,'
              b'"confidence":%%s,"features":{%(features)s},"error":%(error)s,"caller_api_key":%(key)s}}}\n')
_CHAT = (b'{"@timestamp":"%%s","event":{"kind":"event","category":["api"],"type":["access"],"action":"chat",'
         b'"outcome":"%(outcome)s","duration":%%d,"dataset":"ueba.api","id":"%%s"},"source":%(source)s,'
         b'"organization":%(org)s,"user_agent":%(ua)s,"url":{"path":"/v1/chat/completions"},'
         b'"http":{"request":{"method":"POST","body":{"bytes":%%d}},"response":{"status_code":%(status)s,'
         b'"body":{"bytes":%%d}}},"gen_ai":{"system":%(system)s,"operation":%(operation)s,"request":%(request)s,'
         b'"usage":{"input_tokens":%%d,"output_tokens":%%d}},"ueba":{"identity":%(identity)s,"api_key":%(api_key)s,'
         b'"model":%(model)s,"gen_ai":%%s}}\n')
_FEATURE_SLOTS = 4


def _mdoc(m, vsel: int, n_ver: int) -> Any:
    return m.tamper_doc if vsel == n_ver else m.version_docs[vsel]


def predictions(J: JsonCache, keys: list, models: list, api_sel: np.ndarray, tel_sel: np.ndarray, idx: np.ndarray,
                mi: np.ndarray, src_i: np.ndarray, vi: np.ndarray, cls: np.ndarray, tampered: np.ndarray,
                status: np.ndarray, dur: np.ndarray, req: np.ndarray, resp: np.ndarray, fps: np.ndarray,
                conf: np.ndarray, feats: np.ndarray, ua: dict | None, source: dict | None) -> tuple[Part, Part]:
    """Classical predict calls ``api_sel`` (call ``j``: key ``idx[j]``, its
    source ``src_i[j]``, model ``mi[j]``, version ``vi[j]`` or the tampered
    artifact, HTTP ``status[j]``...) and the telemetry left by the calls
    ``tel_sel`` (those the model ran). ``ua``/``source`` replace the key's."""
    n_ver = max(len(m.version_docs) for m in models)            # version n_ver: the tampered artifact
    n_src = 1 if source is not None else max(len(k.sources) for k in keys)
    ua_b = J.lit(ua) if ua is not None else None
    src_b = J.lit(source) if source is not None else None
    vsel = np.where(tampered, n_ver, vi)

    api_layout = (len(keys), n_src, len(models), n_ver + 1, len(STATUSES))

    def build_api(code: int) -> bytes:
        k, s, m, v, st = digits(code, api_layout)
        key, model = keys[k], models[m]
        return _PREDICT % {
            b"outcome": b"success" if STATUSES[st] < 400 else b"failure", b"status": b"%d" % STATUSES[st],
            b"source": src_b or J.lit(key.sources[s]), b"org": J.lit(key.org), b"ua": ua_b or J.lit(key.ua),
            b"url": J.lit(model.url), b"identity": J.lit(key.identity), b"api_key": J.lit(key.api_key),
            b"model": J.lit(_mdoc(model, v, n_ver)),
        }

    a = api_sel
    codes = combine(api_layout, idx[a], src_i[a] if source is None else 0, mi[a], vsel[a], status_codes(status[a]))
    api = Part(J.templates(b"predict", (keys, models, ua, source), api_layout, codes, build_api),
               [json_values(dur[a]), json_values(req[a]), json_values(resp[a]), json_rows(fps[a])])

    tel_layout = (len(keys), len(models), n_ver + 1, 2, max(len(m.classes) for m in models))

    def build_tel(code: int) -> bytes:
        k, m, v, failed, c = digits(code, tel_layout)
        model = models[m]
        feats_t = b",".join(esc(orjson.dumps(name)) + b":%s" for name in model.features)
        return _TELEMETRY % {
            b"outcome": b"failure" if failed else b"success", b"error": b"true" if failed else b"false",
            b"identity": J.lit(model.identity), b"model": J.lit(_mdoc(model, v, n_ver)),
            b"prediction": J.lit(model.classes[c]), b"key": J.lit(keys[k].id),
            b"features": feats_t + b"%.0s" * (_FEATURE_SLOTS - len(model.features)),  # unused slots print nothing
        }

    t = tel_sel
    codes = combine(tel_layout, idx[t], mi[t], vsel[t], status[t] >= 500, cls[t])
    t_feat = json_values(feats[t][:, :_FEATURE_SLOTS].ravel())
    tel = Part(J.templates(b"telemetry", (keys, models), tel_layout, codes, build_tel),
               [json_values(dur[t]), json_values(conf[t]), *(t_feat[i::_FEATURE_SLOTS] for i in range(_FEATURE_SLOTS))])
    return api, tel


def chats(J: JsonCache, keys: list, llm_docs: list, model_docs: list, idx: np.ndarray, src_i: np.ndarray,
          pool: list[dict[str, Any]], p_i: np.ndarray, ctx: np.ndarray, out_tok: np.ndarray, dur: np.ndarray,
          status: np.ndarray, ua: dict | None, source: dict | None) -> Part:
    """LLM chat calls (call ``j``: key ``idx[j]``, prompt ``pool[p_i[j]]``...)."""
    n_src = 1 if source is not None else max(len(k.sources) for k in keys)
    ua_b = J.lit(ua) if ua is not None else None
    src_b = J.lit(source) if source is not None else None
    layout = (len(keys), n_src, len(STATUSES))

    def build(code: int) -> bytes:
        k, s, st = digits(code, layout)
        key = keys[k]
        llm = llm_docs[key.llm]
        return _CHAT % {
            b"outcome": b"success" if STATUSES[st] < 400 else b"failure", b"status": b"%d" % STATUSES[st],
            b"source": src_b or J.lit(key.sources[s]), b"org": J.lit(key.org), b"ua": ua_b or J.lit(key.ua),
            b"system": J.lit(llm["system"]), b"operation": J.lit(llm["operation"]), b"request": J.lit(llm["request"]),
            b"identity": J.lit(key.identity), b"api_key": J.lit(key.api_key), b"model": J.lit(model_docs[key.llm]),
        }

    codes = combine(layout, idx, src_i if source is None else 0, status_codes(status))
    tmpl = J.templates(b"chat", (keys, llm_docs, model_docs, ua, source), layout, codes, build)
    prompt_b, prompt_len = J.pool(pool)
    in_tok = prompt_len[p_i] // 4 + ctx
    out = np.where(status < 400, out_tok, 0)
    return Part(tmpl, [dur.tolist(), (4 * in_tok + 120).tolist(), (4 * out + 200).tolist(), in_tok.tolist(),
                       out.tolist(), list(map(prompt_b.__getitem__, p_i.tolist()))])
