"""Batch (PyOD-style) forms of the windowed volume detectors, for notebooks.

``fit(X)`` scores a whole history prequentially (each event against the
baseline learned from the events before it, exactly as the stream does) and
keeps the per-entity state; ``decision_function(X)`` scores further events
from that fitted state without changing it.  Scores equal the streaming
path's (to float rounding, ~1e-10) because the same baseline objects are
used: only the per-event arithmetic (window running totals, z-scores, tails)
is vectorised, while the baseline recursion runs once per *window*, which
is what makes >= 500k events/s possible in plain numpy.

These are the detectors' own per-test scores (``score_one``); the stream's
alerts go through the suite's per-identity-day calibration on top of them
(:mod:`detectors.suite`), which needs the peer groups' history.

Input: a pandas DataFrame with the flat ECS columns the streaming detector
reads (``ueba.transfer.bytes``...), a ``ts`` column (seconds since the epoch)
and optionally an ``entity`` column (default: one entity).  Rows are scored
in ``(entity, ts)`` order (stable); the result is aligned with ``X``'s rows.
Peer groups are not used in batch (cold-start entities score 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .calibration import z_tail_score_array
from .exfiltration import _KEYS as EXFIL_KEYS
from .exfiltration import (RESOURCE_CLASSES, TRANSFER_FIELDS, UNSCORED_ACTIONS, ExfiltrationDetector, ExfiltrationParams,
                           resource_class)
from .usage import ApiUsageDetector, ApiUsageParams

__all__ = ["ExfiltrationBatch", "ApiUsageBatch"]


def _num_col(X: pd.DataFrame, col: str) -> np.ndarray:
    """Column as float with NaN where missing, negative or not finite (like ``num``)."""
    if col not in X:
        return np.full(len(X), np.nan)
    v = pd.to_numeric(X[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(v) | (v < 0)
    if bad.any():
        v = v.copy()
        v[bad] = np.nan
    return v


def _group_starts(ent: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Boolean: row starts a new (entity, key) group (rows already sorted)."""
    new = np.empty(len(ent), dtype=bool)
    if len(ent):
        new[0] = True
        new[1:] = (ent[1:] != ent[:-1]) | (key[1:] != key[:-1])
    return new


def _running(v: np.ndarray, gid: np.ndarray) -> np.ndarray:
    # Per-group running sums. pandas uses compensated summation, so totals
    # can differ from the stream's plain ``cur += x`` in the last bits only.
    return pd.Series(v).groupby(gid, sort=False).cumsum().to_numpy()


class _VolumeBatch:
    """Shared machinery: prequential windowed volumes per entity."""

    detector_cls: type = ExfiltrationDetector

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.detector_cls.Params()

    # -- per-feature core ----------------------------------------------------

    def _feature(self, ent: np.ndarray, ts: np.ndarray, v: np.ndarray, mask: np.ndarray, i: int,
                 states: dict, names: np.ndarray, key: str, day: bool) -> np.ndarray:
        """Scores (burst and drip, max) of feature ``i`` on rows ``mask``; updates ``states``."""
        prm = self.params
        out = np.zeros(len(ts))
        idx = np.flatnonzero(mask)
        if not len(idx):
            return out
        e, t, x = ent[idx], ts[idx], v[idx].copy()
        width = prm.window
        w = np.floor(t / width).astype(np.int64)
        new = _group_starts(e, w)
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], len(idx)) - 1
        ge, gw = e[starts], w[starts]
        ent_first = np.flatnonzero(_group_starts(e, np.zeros(len(e), dtype=np.int64))[starts])
        first_flag = np.zeros(len(starts), dtype=bool)
        first_flag[ent_first] = True
        last_flag = np.zeros(len(starts), dtype=bool)
        last_flag[np.append(ent_first[1:], len(starts)) - 1] = True

        vols = {}
        for gi in ent_first:
            det = states.get(names[ge[gi]])
            if det is None:
                det = states[names[ge[gi]]] = self.detector_cls(prm)
            vol = det.vols[i]
            if vol is None:
                vol = det.vols[i] = self._new_vol(i)
            vols[int(ge[gi])] = vol
            if vol.win == gw[gi]:
                x[starts[gi]] = vol.cur + x[starts[gi]]   # continue the open window

        run = _running(x, np.cumsum(new))
        m, s2, n = self._window_loop(run[ends].tolist(), ge.tolist(), gw.tolist(), first_flag.tolist(),
                                     last_flag.tolist(), vols, width, key)
        gidx = np.cumsum(new) - 1
        z = (np.log1p(run) - m[gidx]) / np.sqrt(s2[gidx])
        burst = np.where(n[gidx] >= prm.warmup, z_tail_score_array(z), 0.0)
        res = burst
        if day:
            res = np.maximum(res, self._drip(e, t, v[idx], vols, prm))
        out[idx] = res
        return out

    def _window_loop(self, totals, ge, gw, first, last, vols, width, key):
        """Once per window, in order: snapshot the baseline the window's events
        are scored against, then learn the window (as the stream does).
        Plain lists and scalars here: this loop is the batch path's cost."""
        prm = self.params
        floor2 = prm.min_log_std * prm.min_log_std
        m, s2, n = [], [], []
        am, as2, an = m.append, s2.append, n.append
        for gi in range(len(totals)):
            vol = vols[ge[gi]]
            wi = gw[gi]
            if first[gi] and vol.win != wi and vol.win >= 0:
                vol._close(vol.cur, (vol.win + 1) * width, prm, None, key)
            b = vol.base
            am(b.mean)
            as2(b.var + floor2)
            an(b.n)
            if last[gi]:
                vol.win = wi
                vol.cur = totals[gi]
            else:
                vol._close(totals[gi], (wi + 1) * width, prm, None, key)
        return np.array(m), np.array(s2), np.array(n, dtype=np.int64)

    def _drip(self, e, t, x, vols, prm) -> np.ndarray:
        d = np.floor(t / 86400.0).astype(np.int64)
        x = x.copy()
        new = _group_starts(e, d)
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], len(e)) - 1
        ge, gd = e[starts], d[starts]
        ent_first = np.flatnonzero(_group_starts(e, np.zeros(len(e), dtype=np.int64))[starts])
        first_flag = np.zeros(len(starts), dtype=bool)
        first_flag[ent_first] = True
        last_flag = np.zeros(len(starts), dtype=bool)
        last_flag[np.append(ent_first[1:], len(starts)) - 1] = True
        # The hourly pass already advanced each vol; its day fields are untouched.
        for gi in ent_first:
            vol = vols[int(ge[gi])]
            if vol.day == gd[gi]:
                x[starts[gi]] = vol.day_sum + x[starts[gi]]
        run = _running(x, np.cumsum(new))
        totals, gel, gdl, fl, ll = run[ends].tolist(), ge.tolist(), gd.tolist(), first_flag.tolist(), last_flag.tolist()
        floor2 = prm.min_log_std * prm.min_log_std
        m, s2, n, cus = [], [], [], []
        for gi in range(len(totals)):
            vol = vols[gel[gi]]
            di = gdl[gi]
            if fl[gi] and vol.day != di and vol.day >= 0:
                vol._close_day(vol.day_sum, (vol.day + 1) * 86400.0, prm)
            b = vol.dbase
            m.append(b.mean)
            s2.append(b.var + floor2)
            n.append(b.n)
            cus.append(vol.cusum)
            if ll[gi]:
                vol.day = di
                vol.day_sum = totals[gi]
            else:
                vol._close_day(totals[gi], (di + 1) * 86400.0, prm)
        m, s2, n, cus = np.array(m), np.array(s2), np.array(n, dtype=np.int64), np.array(cus)
        gidx = np.cumsum(new) - 1
        z = (np.log1p(run) - m[gidx]) / np.sqrt(s2[gidx])
        on = (n[gidx] >= prm.drip_warmup) & (z > prm.drip_k)
        s = cus[gidx] + np.minimum(z, prm.drip_zmax) - prm.drip_k
        return np.where(on, 100.0 * (1.0 - np.exp(-2.0 * prm.drip_k * np.maximum(s, 0.0))), 0.0)

    def _new_vol(self, i: int):
        raise NotImplementedError

    # -- PyOD-style API --------------------------------------------------------

    def _prepare(self, X: pd.DataFrame):
        if "ts" not in X:
            raise ValueError("X needs a 'ts' column (seconds since the epoch)")
        if "entity" in X:
            # factorize hashes (fast); np.unique would sort strings
            ent, uniq = pd.factorize(X["entity"], sort=False)
            names = np.array([str(u) for u in uniq], dtype=object)
            if (ent < 0).any():
                raise ValueError("X['entity'] has missing values")
        else:
            ent, names = np.zeros(len(X), dtype=np.int64), np.array(["0"], dtype=object)
        ts = X["ts"].to_numpy(dtype=float)
        order = np.lexsort((ts, ent))  # stable: by entity, then ts, then input order
        return order, ent[order], ts[order], names

    def _score(self, X: pd.DataFrame, states: dict) -> np.ndarray:
        raise NotImplementedError

    def fit(self, X: pd.DataFrame, y: Any = None) -> "_VolumeBatch":
        """Score ``X`` prequentially and keep the per-entity state.

        Sets ``decision_scores_`` (numpy array of shape (n_samples,), 0-100,
        higher = more anomalous) and ``states_`` (entity -> streaming
        detector, usable by the stream afterwards).
        """
        self.states_: dict[str, Any] = {}
        self.decision_scores_ = self._score(X, self.states_)
        return self

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """Scores of ``X`` (shape (n_samples,)) continuing from the fitted state,
        which is left unchanged."""
        states = {k: type(v).from_bytes(v.to_bytes(), self.params) for k, v in getattr(self, "states_", {}).items()}
        return self._score(X, states)


class ExfiltrationBatch(_VolumeBatch):
    """Batch form of :class:`~detectors.exfiltration.ExfiltrationDetector`.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"ts": [0.0, 3600.0], "ueba.transfer.bytes": [1e6, 2e6]})
    >>> ExfiltrationBatch().fit(X).decision_scores_.tolist()
    [0.0, 0.0]
    """

    detector_cls = ExfiltrationDetector

    def __init__(self, params: ExfiltrationParams | None = None) -> None:
        super().__init__(params)

    def _new_vol(self, i: int):
        from .baseline import WindowedVolume

        return WindowedVolume(self.params.half_life, day=True)

    def _score(self, X: pd.DataFrame, states: dict) -> np.ndarray:
        order, ent, ts, names = self._prepare(X)
        ok = np.ones(len(X), dtype=bool)
        if "event.action" in X:
            ok &= ~X["event.action"].isin(UNSCORED_ACTIONS).to_numpy()[order]
        if "event.outcome" in X:
            ok &= (X["event.outcome"] != "failure").to_numpy()[order]
        cls = np.zeros(len(X), dtype=np.int64)
        if "ueba.resource.type" in X:
            cls = X["ueba.resource.type"].map(resource_class).to_numpy(dtype=np.int64)[order]
        amounts = [_num_col(X, col)[order] for col in TRANSFER_FIELDS]
        best = np.zeros(len(X))
        for c in range(len(RESOURCE_CLASSES)):
            in_c = ok & (cls == c)
            if not in_c.any():
                continue
            for i, v in enumerate(amounts):
                mask = in_c & ~np.isnan(v)
                slot = 3 * c + i
                best = np.maximum(best, self._feature(ent, ts, v, mask, slot, states, names, EXFIL_KEYS[slot], True))
        out = np.empty(len(X))
        out[order] = best
        return out


class ApiUsageBatch(_VolumeBatch):
    """Batch form of :class:`~detectors.usage.ApiUsageDetector` (calls, tokens,
    response bytes and error bursts per window)."""

    detector_cls = ApiUsageDetector

    def __init__(self, params: ApiUsageParams | None = None) -> None:
        super().__init__(params)

    def _new_vol(self, i: int):
        from .baseline import WindowedVolume

        return WindowedVolume(self.params.half_life, day=False)

    def _score(self, X: pd.DataFrame, states: dict) -> np.ndarray:
        from .calibration import poisson_sf_array

        prm = self.params
        order, ent, ts, names = self._prepare(X)
        nrow = len(X)
        ti = _num_col(X, "gen_ai.usage.input_tokens")[order]
        to = _num_col(X, "gen_ai.usage.output_tokens")[order]
        has_ti = X["gen_ai.usage.input_tokens"].notna().to_numpy()[order] if "gen_ai.usage.input_tokens" in X else np.zeros(nrow, bool)
        has_to = X["gen_ai.usage.output_tokens"].notna().to_numpy()[order] if "gen_ai.usage.output_tokens" in X else np.zeros(nrow, bool)
        # tokens = in + out when at least one is present and none is invalid
        tok_ok = (has_ti | has_to) & ~(has_ti & np.isnan(ti)) & ~(has_to & np.isnan(to))
        tok = np.where(np.isnan(ti), 0.0, ti) + np.where(np.isnan(to), 0.0, to)
        rb = _num_col(X, "http.response.body.bytes")[order]
        if "http.response.status_code" in X:
            sc = pd.to_numeric(X["http.response.status_code"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)[order]
            err = (sc >= 400) & (sc != 404)
        else:
            err = np.zeros(nrow, dtype=bool)

        # Pre-create states so every entity has its request volume.
        for code in np.unique(ent):
            if names[code] not in states:
                states[names[code]] = ApiUsageDetector(prm)
        req_run, err_run, lam_before, best = self._feature_req(ent, ts, err.astype(float), states, names)
        best = np.maximum(best, self._feature(ent, ts, tok, tok_ok, 1, states, names, "api_usage.tokens", False))
        best = np.maximum(best, self._feature(ent, ts, rb, ~np.isnan(rb), 2, states, names, "api_usage.bytes", False))
        if err.any():
            # P(N >= errors so far) given the key's error rate x calls so far in the window
            ps = poisson_sf_array(err_run[err], lam_before[err] * req_run[err])
            best[err] = np.maximum(best[err], np.where(ps < 1.0, 100.0 * (1.0 - ps), 0.0))
        out = np.empty(nrow)
        out[order] = best
        return out

    def _feature_req(self, ent, ts, errs_f, states, names):
        """Request counts per window (burst scores) and the error bookkeeping
        that rides on the same windows; returns (requests so far, errors so
        far, error rate before the window, burst scores), per row."""
        prm = self.params
        nrow = len(ts)
        width = prm.window
        w = np.floor(ts / width).astype(np.int64)
        new = _group_starts(ent, w)
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], nrow) - 1
        ge, gw = ent[starts], w[starts]
        ent_first = np.flatnonzero(_group_starts(ent, np.zeros(nrow, dtype=np.int64))[starts])
        first_flag = np.zeros(len(starts), dtype=bool)
        first_flag[ent_first] = True
        last_flag = np.zeros(len(starts), dtype=bool)
        last_flag[np.append(ent_first[1:], len(starts)) - 1] = True
        x = np.ones(nrow)
        e0 = errs_f.copy()
        dets = [states[nm] for nm in names]
        for gi in ent_first:
            det = dets[ge[gi]]
            vol = det.vols[0]
            if vol.win == gw[gi]:   # continue the open window: its calls and errors so far
                x[starts[gi]] = vol.cur + 1.0
                e0[starts[gi]] = det.errs + errs_f[starts[gi]]
        gid = np.cumsum(new)
        run = _running(x, gid)
        err_run = _running(e0, gid)
        totals, ks = run[ends].tolist(), err_run[ends].tolist()
        gel, gwl, fl, ll = ge.tolist(), gw.tolist(), first_flag.tolist(), last_flag.tolist()
        floor2 = prm.min_log_std * prm.min_log_std
        key = "api_usage.requests"
        m, s2, n, lam = [], [], [], []

        for gi in range(len(totals)):
            det = dets[gel[gi]]
            vol = det.vols[0]
            wi = gwl[gi]
            if fl[gi] and vol.win != wi and vol.win >= 0:
                t_end = (vol.win + 1) * width
                if vol.cur > 0:
                    det.ebase.update(det.errs / vol.cur, t_end, det._close_weight(vol.cur, det.errs))
                det.errs = 0.0
                vol._close(vol.cur, t_end, prm, None, key)
            lam.append(det._error_lambda())
            bs = vol.base
            m.append(bs.mean)
            s2.append(bs.var + floor2)
            n.append(bs.n)
            tot, k = totals[gi], ks[gi]
            if ll[gi]:
                vol.win = wi
                vol.cur = tot
                det.errs = k
            else:
                t_end = (wi + 1) * width
                if tot > 0:
                    det.ebase.update(k / tot, t_end, det._close_weight(tot, k))
                det.errs = 0.0
                vol._close(tot, t_end, prm, None, key)
        m, s2, n = np.array(m), np.array(s2), np.array(n, dtype=np.int64)
        gidx = gid - 1
        lam_before = np.array(lam)[gidx]
        z = (np.log1p(run) - m[gidx]) / np.sqrt(s2[gidx])
        return run, err_run, lam_before, np.where(n[gidx] >= prm.warmup, z_tail_score_array(z), 0.0)
