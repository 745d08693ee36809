"""Batch (PyOD-style) forms of the windowed volume detectors, for notebooks.

``fit(X)`` scores a whole history prequentially (each event against the
baseline learned from the events before it, exactly as the stream does) and
keeps the per-entity state; ``decision_function(X)`` scores further events
from that fitted state without changing it.  Scores equal the streaming
path's (to float rounding, ~1e-9) because the same baseline objects are
used: only the per-event arithmetic (window running totals, z-scores, tails)
is vectorised, while the baseline recursion runs once per *window*, which
is what makes >= 500k events/s possible in plain numpy.

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
from .exfiltration import INBOUND_ACTIONS, TRANSFER_FIELDS, ExfiltrationDetector, ExfiltrationParams
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
    # Sequential per-group sums (pandas adds left to right like the stream's
    # ``cur += x``, so totals are bit-identical).
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
            vols[ge[gi]] = vol
            if vol.win == gw[gi]:
                x[starts[gi]] = vol.cur + x[starts[gi]]   # continue the open window

        run = _running(x, np.cumsum(new))
        totals = run[ends]
        G = len(starts)
        m = np.empty(G)
        s2 = np.empty(G)
        n = np.empty(G, dtype=np.int64)
        floor2 = prm.min_log_std * prm.min_log_std
        for gi in range(G):
            vol = vols[ge[gi]]
            wi = int(gw[gi])
            if first_flag[gi] and vol.win != wi and vol.win >= 0:
                vol._close(vol.cur, (vol.win + 1) * width, prm, None, key)
            b = vol.base
            m[gi], s2[gi], n[gi] = b.mean, b.var + floor2, b.n
            if last_flag[gi]:
                vol.win = wi
                vol.cur = float(totals[gi])
            else:
                vol._close(float(totals[gi]), (wi + 1) * width, prm, None, key)
        gidx = np.cumsum(new) - 1
        z = (np.log1p(run) - m[gidx]) / np.sqrt(s2[gidx])
        burst = np.where(n[gidx] >= prm.warmup, z_tail_score_array(z), 0.0)
        res = burst
        if day:
            res = np.maximum(res, self._drip(e, t, v[idx], vols, prm))
        out[idx] = res
        return out

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
            vol = vols[ge[gi]]
            if vol.day == gd[gi]:
                x[starts[gi]] = vol.day_sum + x[starts[gi]]
        run = _running(x, np.cumsum(new))
        totals = run[ends]
        G = len(starts)
        m = np.empty(G)
        s2 = np.empty(G)
        n = np.empty(G, dtype=np.int64)
        cus = np.empty(G)
        floor2 = prm.min_log_std * prm.min_log_std
        for gi in range(G):
            vol = vols[ge[gi]]
            di = int(gd[gi])
            if first_flag[gi] and vol.day != di and vol.day >= 0:
                vol._close_day(vol.day_sum, (vol.day + 1) * 86400.0, prm)
            b = vol.dbase
            m[gi], s2[gi], n[gi], cus[gi] = b.mean, b.var + floor2, b.n, vol.cusum
            if last_flag[gi]:
                vol.day = di
                vol.day_sum = float(totals[gi])
            else:
                vol._close_day(float(totals[gi]), (di + 1) * 86400.0, prm)
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
        ent_raw = X["entity"].astype(str).to_numpy() if "entity" in X else np.zeros(len(X), dtype=object)
        names, ent = np.unique(ent_raw.astype(str), return_inverse=True)
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
            ok &= ~X["event.action"].isin(INBOUND_ACTIONS).to_numpy()[order]
        if "event.outcome" in X:
            ok &= (X["event.outcome"] != "failure").to_numpy()[order]
        best = np.zeros(len(X))
        for i, col in enumerate(TRANSFER_FIELDS):
            v = _num_col(X, col)[order]
            mask = ok & ~np.isnan(v)
            best = np.maximum(best, self._feature(ent, ts, v, mask, i, states, names,
                                                  "exfiltration." + col.rsplit(".", 1)[1], True))
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
        from .calibration import poisson_sf, poisson_sf_array

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
        from .calibration import poisson_sf

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
        for gi in ent_first:
            vol = states[names[ge[gi]]].vols[0]
            if vol.win == gw[gi]:
                x[starts[gi]] = vol.cur + 1.0
        run = _running(x, np.cumsum(new))
        totals = run[ends]
        err_run = np.zeros(nrow)
        lam_before = np.empty(nrow)
        G = len(starts)
        m = np.empty(G)
        s2 = np.empty(G)
        n = np.empty(G, dtype=np.int64)
        floor2 = prm.min_log_std * prm.min_log_std
        key = "api_usage.requests"

        def close_errors(det, n_req: float, k: float, t_end: float) -> None:
            if n_req > 0:
                lam = det._error_lambda() * n_req
                wt = prm.protect_weight if k and poisson_sf(k, lam) < 0.01 else 1.0
                det.ebase.update(k / n_req, t_end, wt)
            det.errs = 0.0

        for gi in range(G):
            det = states[names[ge[gi]]]
            vol = det.vols[0]
            wi = int(gw[gi])
            a, b_ = starts[gi], ends[gi] + 1
            k0 = 0.0
            if first_flag[gi]:
                if vol.win == wi:
                    k0 = det.errs
                elif vol.win >= 0:
                    t_end = (vol.win + 1) * width
                    close_errors(det, vol.cur, det.errs, t_end)
                    vol._close(vol.cur, t_end, prm, None, key)
            lam_before[a:b_] = det._error_lambda()
            er = np.cumsum(errs_f[a:b_]) + k0
            err_run[a:b_] = er
            k = float(er[-1])
            bs = vol.base
            m[gi], s2[gi], n[gi] = bs.mean, bs.var + floor2, bs.n
            tot = float(totals[gi])
            if last_flag[gi]:
                vol.win = wi
                vol.cur = tot
                det.errs = k
            else:
                t_end = (wi + 1) * width
                close_errors(det, tot, k, t_end)
                vol._close(tot, t_end, prm, None, key)
        gidx = np.cumsum(new) - 1
        z = (np.log1p(run) - m[gidx]) / np.sqrt(s2[gidx])
        return run, err_run, lam_before, np.where(n[gidx] >= prm.warmup, z_tail_score_array(z), 0.0)
