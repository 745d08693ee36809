"""Per-identity multivariate behaviour: a global PyOD model over feature snapshots.

Two parts:

:class:`FeatureSnapshotter`
    Streams flat events (any of the three streams) into per-identity
    aggregates over fixed periods (``period`` seconds, default one hour) and
    emits one row per identity per period with the features in
    :data:`FEATURES`. Distinct counts use 256-bit linear-counting bitmaps, so
    an identity costs ~140 bytes whatever it touches; at most
    ``max_identities`` are open at once (the least recently seen is flushed
    early when a new one arrives).
:class:`MultivariateDetector`
    A PyOD model (``iforest`` by default; ``ecod`` and ``copod`` are also
    offered) fitted periodically on snapshot rows of *all* identities, and used
    between fits to score new rows one at a time. It is a *global* model, not
    per-entity state, so it is deliberately **not** registered in
    :data:`detectors.base.DETECTORS`: the per-entity contract (state <= 2 KiB,
    ``learn_one``) does not apply. Its pickle holds the fitted model (IForest
    ~1-2 MB with 100 trees; ECOD/COPOD keep the training matrix).

Scores: ``decision_function`` is PyOD's raw outlier score (higher = more
anomalous). ``score_one`` turns it into the project's calibrated score with
the empirical tail of the training scores, ``p = (1 + #{train >= s}) /
(n + 1)``, ``score = 100 * (1 - p)`` (so at most ``100 * n / (n + 1)``), and
explains it with the features whose robust z-score (median / MAD of the
training rows, on the model's log1p scale) is largest. Warm-up: score 0 until
a model has been fitted on at least ``min_rows`` rows.
"""

from __future__ import annotations

import math
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from ._tails import num, score_of, surprise, text
from .base import Explanation, Score

__all__ = ["FEATURES", "FeatureSnapshotter", "MultivariateParams", "MultivariateDetector"]

#: Snapshot features, in column order. Counts per period; ``off_hours_share`` in 0-1.
FEATURES: tuple[str, ...] = (
    "events",
    "bytes",
    "distinct_resources",
    "distinct_ips",
    "failures",
    "off_hours_share",
)

#: Features modelled on a log1p scale (heavy-tailed counts).
_LOG_FEATURES = frozenset(("events", "bytes", "distinct_resources", "distinct_ips", "failures"))

_BITS = 256


def _bit(value: str) -> int:
    # A stable (not per-process randomised) hash: snapshots must be reproducible.
    h = 1469598103934665603
    for b in value.encode("utf-8", "surrogatepass")[:512]:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return 1 << (h % _BITS)


def _linear_count(bits: int) -> float:
    """Linear-counting estimate of the distinct values hashed into a bitmap."""
    zeros = _BITS - bits.bit_count()
    if zeros == 0:
        return float(_BITS) * math.log(_BITS)  # saturated: a lower bound
    return -_BITS * math.log(zeros / _BITS)


class _Aggregate:
    __slots__ = ("period", "events", "bytes", "failures", "off_hours", "resources", "ips")

    def __init__(self, period: int) -> None:
        self.period = period
        self.events = 0
        self.bytes = 0.0
        self.failures = 0
        self.off_hours = 0
        self.resources = 0
        self.ips = 0


class FeatureSnapshotter:
    """Per-identity period aggregates from flat events; emits snapshot rows.

    Parameters
    ----------
    period : float
        Snapshot length in seconds (3600 = hourly, 86400 = daily).
    work_hours : tuple[int, int]
        UTC hours ``[start, end)`` considered working time on weekdays.
    max_identities : int
        Open aggregates kept at once; beyond it the least recently seen
        identity's partial row is emitted early.

    >>> snap = FeatureSnapshotter(period=3600)
    >>> rows = snap.update("ana", {"source.ip": "10.0.0.1", "ueba.transfer.bytes": 10}, 1_704_103_200.0)
    >>> rows = snap.update("ana", {"source.ip": "10.0.0.2", "event.outcome": "failure"}, 1_704_103_300.0)
    >>> [r["events"] for r in snap.update("ana", {}, 1_704_107_000.0)]
    [2]
    """

    def __init__(self, period: float = 3600.0, work_hours: tuple[int, int] = (8, 19), max_identities: int = 100_000):
        if period <= 0 or max_identities < 1:
            raise ValueError("period must be > 0 and max_identities >= 1")
        self.period = float(period)
        self.work_hours = work_hours
        self.max_identities = max_identities
        self._open: OrderedDict[str, _Aggregate] = OrderedDict()

    def _row(self, identity: str, agg: _Aggregate) -> dict[str, Any]:
        return {
            "identity": identity,
            "period_start": agg.period * self.period,
            "events": agg.events,
            "bytes": agg.bytes,
            "distinct_resources": _linear_count(agg.resources),
            "distinct_ips": _linear_count(agg.ips),
            "failures": agg.failures,
            "off_hours_share": agg.off_hours / agg.events if agg.events else 0.0,
        }

    def _off_hours(self, ts: float) -> bool:
        dt = datetime.fromtimestamp(ts, tz=timezone.utc)
        return dt.weekday() >= 5 or not self.work_hours[0] <= dt.hour < self.work_hours[1]

    def update(self, identity: str, x: dict[str, Any], ts: float) -> list[dict[str, Any]]:
        """Add one event; return the rows this closed (the identity's previous period, evictions)."""
        out: list[dict[str, Any]] = []
        t = num(ts)
        ident = text(identity, 512)
        if t is None or ident is None:
            return out
        period = int(t // self.period)
        agg = self._open.get(ident)
        if agg is not None and period > agg.period:
            out.append(self._row(ident, agg))
            agg = None
        if agg is None:
            agg = _Aggregate(period)
            self._open[ident] = agg
            while len(self._open) > self.max_identities:
                old_id, old = self._open.popitem(last=False)
                out.append(self._row(old_id, old))
        self._open.move_to_end(ident)
        agg.events += 1
        for field in ("ueba.transfer.bytes", "http.response.body.bytes"):
            b = num(x.get(field))
            if b is not None and b > 0:
                agg.bytes += b
        if x.get("event.outcome") == "failure":
            agg.failures += 1
        if self._off_hours(t):
            agg.off_hours += 1
        res = text(x.get("ueba.resource.id") or x.get("url.path") or x.get("ueba.model.id"), 512)
        if res:
            agg.resources |= _bit(res)
        ip = text(x.get("source.ip"), 64)
        if ip:
            agg.ips |= _bit(ip)
        return out

    def flush(self, before: float | None = None) -> list[dict[str, Any]]:
        """Emit (and close) every open row, or only those of periods ending at or before ``before``."""
        out = []
        for ident in list(self._open):
            agg = self._open[ident]
            if before is None or (agg.period + 1) * self.period <= before:
                out.append(self._row(ident, agg))
                del self._open[ident]
        return out

    @staticmethod
    def to_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
        """Rows as a DataFrame with ``identity``, ``period_start`` and :data:`FEATURES` columns."""
        return pd.DataFrame(rows, columns=["identity", "period_start", *FEATURES])


@dataclass(frozen=True, slots=True)
class MultivariateParams:
    """Hyperparameters of :class:`MultivariateDetector`."""

    model: str = "iforest"
    features: tuple[str, ...] = FEATURES
    refit_every: float = 86_400.0
    min_rows: int = 50
    contamination: float = 0.01
    n_estimators: int = 100
    seed: int = 0
    top_features: int = 3

    def __post_init__(self) -> None:
        if self.model not in ("iforest", "ecod", "copod"):
            raise ValueError("model must be one of iforest, ecod, copod")
        if not self.features:
            raise ValueError("features must not be empty")


class MultivariateDetector:
    """Global PyOD model over per-identity snapshots; streaming scores between fits.

    Fitted attributes end in ``_``: ``model_``, ``train_scores_`` (sorted),
    ``median_``, ``mad_``, ``fitted_at_``, ``n_train_``.

    >>> rng = np.random.default_rng(0)
    >>> df = pd.DataFrame(rng.lognormal(3, 0.3, size=(300, 6)), columns=list(FEATURES))
    >>> df["off_hours_share"] = rng.uniform(0, 0.2, 300)
    >>> det = MultivariateDetector().fit(df, ts=0.0)
    >>> normal = det.score_one(df.iloc[0].to_dict())
    >>> odd = det.score_one(dict(df.iloc[0].to_dict(), bytes=1e9, distinct_ips=200))
    >>> normal.score < odd.score, odd.explanation.feature in ("bytes", "distinct_ips")
    (True, True)
    """

    name = "multivariate"

    def __init__(self, params: MultivariateParams | None = None) -> None:
        self.params = params if params is not None else MultivariateParams()
        self.model_: Any = None
        self.train_scores_: np.ndarray | None = None
        self.median_: np.ndarray | None = None
        self.mad_: np.ndarray | None = None
        self.fitted_at_: float | None = None
        self.n_train_ = 0

    # --- features ---------------------------------------------------------------

    def _matrix(self, X: Any) -> np.ndarray:
        """Model-scale matrix of shape (n_samples, n_features); missing values -> 0."""
        feats = self.params.features
        if isinstance(X, pd.DataFrame):
            M = X.reindex(columns=list(feats)).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, copy=True)
        else:
            M = np.asarray(X, dtype=np.float64)
            if M.ndim == 1:
                M = M[None, :]
            if M.shape[1] != len(feats):
                raise ValueError(f"expected {len(feats)} feature columns {feats}, got {M.shape[1]}")
            M = M.copy()
        M[~np.isfinite(M)] = 0.0
        for j, f in enumerate(feats):
            if f in _LOG_FEATURES:
                M[:, j] = np.log1p(np.maximum(M[:, j], 0.0))
        return M

    def _row(self, features: dict[str, Any]) -> np.ndarray:
        return self._matrix(np.array([[num(features.get(f)) or 0.0 for f in self.params.features]]))

    # --- batch (PyOD style) --------------------------------------------------------

    def _new_model(self):
        p = self.params
        if p.model == "iforest":
            from pyod.models.iforest import IForest

            return IForest(n_estimators=p.n_estimators, contamination=p.contamination, random_state=p.seed)
        if p.model == "ecod":
            from pyod.models.ecod import ECOD

            return ECOD(contamination=p.contamination)
        from pyod.models.copod import COPOD

        return COPOD(contamination=p.contamination)

    def fit(self, snapshots: Any, ts: float | None = None) -> "MultivariateDetector":
        """Fit on snapshot rows: DataFrame with the feature columns, or an array
        of shape (n_samples, n_features). ``ts``: fit time (seconds), for :meth:`refit_due`."""
        M = self._matrix(snapshots)
        if M.shape[0] < 2:
            raise ValueError("need at least 2 snapshot rows to fit")
        model = self._new_model()
        model.fit(M)
        _drop_scratch(model)
        self.model_ = model
        # PyOD's decision_scores_ are the training rows' scores (for ECOD/COPOD each row
        # is counted once in its own ECDF, as when it is scored alone afterwards +-1/n).
        self.train_scores_ = np.sort(np.asarray(model.decision_scores_, dtype=np.float64))
        self.median_ = np.median(M, axis=0)
        mad = np.median(np.abs(M - self.median_), axis=0) * 1.4826
        std = M.std(axis=0)
        self.mad_ = np.where(mad > 1e-9, mad, np.where(std > 1e-9, std, 1.0))
        self.fitted_at_ = ts
        self.n_train_ = int(M.shape[0])
        return self

    def decision_function_matrix(self, M: np.ndarray) -> np.ndarray:
        if self.params.model == "iforest":
            return np.asarray(self.model_.decision_function(M), dtype=np.float64)
        # ECOD/COPOD re-estimate their ECDFs over train + the batch: score rows one at
        # a time so a row's score does not depend on the rest of the batch, and drop
        # the work arrays they leave on the model so scoring does not change the state.
        out = np.array([float(self.model_.decision_function(M[i : i + 1])[0]) for i in range(M.shape[0])])
        _drop_scratch(self.model_)
        return out

    def decision_function(self, X: Any) -> np.ndarray:
        """Raw outlier scores, numpy array of shape (n_samples,); higher = more anomalous."""
        if self.model_ is None:
            raise RuntimeError("MultivariateDetector is not fitted")
        return self.decision_function_matrix(self._matrix(X))

    def tail(self, raw: float) -> float:
        """Empirical tail probability of a raw score among the training scores."""
        assert self.train_scores_ is not None
        n = self.train_scores_.shape[0]
        above = n - int(np.searchsorted(self.train_scores_, raw, side="left"))
        return (1 + above) / (n + 1)

    # --- streaming ---------------------------------------------------------------------

    def refit_due(self, ts: float) -> bool:
        """True when no model is fitted or the last fit is ``refit_every`` seconds old."""
        if self.model_ is None or self.fitted_at_ is None:
            return True
        return ts - self.fitted_at_ >= self.params.refit_every

    def score_one(self, features: dict[str, Any], ts: float | None = None) -> Score:
        """Score one snapshot row (feature name -> value); pure."""
        p = self.params
        if self.model_ is None or self.n_train_ < p.min_rows:
            return Score(0.0)
        M = self._row(features)
        raw = float(self.decision_function_matrix(M)[0])
        tail = self.tail(raw)
        assert self.median_ is not None and self.mad_ is not None
        z = (M[0] - self.median_) / self.mad_
        order = np.argsort(-np.abs(z), kind="stable")[: p.top_features]
        top = [(p.features[j], float(z[j])) for j in order]
        f0, z0 = top[0]
        j0 = int(order[0])
        observed = num(features.get(f0)) or 0.0
        center = float(np.expm1(self.median_[j0])) if f0 in _LOG_FEATURES else float(self.median_[j0])
        detail = ", ".join(f"{f} (z={zz:+.1f})" for f, zz in top)
        reason = (
            f"This identity's activity profile is rarer than {1 - tail:.1%} of the {self.n_train_} profiles "
            f"the model was fitted on; most unusual: {detail}."
        )
        expl = Explanation(
            feature=f0,
            observed=observed,
            baseline={"center": round(center, 4), "robust_z": round(z0, 2), "n": self.n_train_,
                      "top": [{"feature": f, "robust_z": round(zz, 2)} for f, zz in top]},  # fmt: skip
            peers=None,
            window="snapshot",
            reason=reason,
        )
        return Score(score_of(tail), raw, expl)

    # --- persistence ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Pickle of the fitted model and calibration. Load only state you wrote yourself."""
        return pickle.dumps(
            (1, self.model_, self.train_scores_, self.median_, self.mad_, self.fitted_at_, self.n_train_),
            protocol=pickle.HIGHEST_PROTOCOL,
        )

    @classmethod
    def from_bytes(cls, data: bytes, params: MultivariateParams | None = None) -> "MultivariateDetector":
        """Rebuild from :meth:`to_bytes`. Uses pickle: only for trusted, self-written state."""
        version, model, scores, median, mad, fitted_at, n = pickle.loads(data)  # noqa: S301 - trusted store
        if version != 1:
            raise ValueError(f"unsupported multivariate state version {version}")
        det = cls(params)
        det.model_, det.train_scores_, det.median_, det.mad_ = model, scores, median, mad
        det.fitted_at_, det.n_train_ = fitted_at, n
        return det


def _drop_scratch(model: Any) -> None:
    """ECOD/COPOD keep per-call work arrays (``U_l``, ``U_r``, ``U_skew``, ``O``) on the model."""
    for scratch in ("U_l", "U_r", "U_skew", "O"):
        if hasattr(model, scratch):
            setattr(model, scratch, None)


if __name__ == "__main__":  # pragma: no cover - benchmark figures for the report
    import time

    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.lognormal(3, 0.4, size=(2000, 6)), columns=list(FEATURES))
    df["off_hours_share"] = rng.uniform(0, 0.3, 2000)
    for model in ("iforest", "ecod"):
        det = MultivariateDetector(MultivariateParams(model=model))
        t0 = time.process_time()
        det.fit(df, ts=0.0)
        fit_s = time.process_time() - t0
        rows = df.iloc[:200].to_dict("records")
        t0 = time.process_time()
        for r in rows:
            det.score_one(r)
        per = (time.process_time() - t0) / len(rows) * 1e6
        print(f"multivariate[{model}]: fit {fit_s:.2f}s on 2000 rows, score_one {per:.0f} µs, "
              f"pickle {len(det.to_bytes()) / 1024:.0f} KiB")  # fmt: skip
    snap = FeatureSnapshotter()
    t0 = time.process_time()
    for i in range(20000):
        snap.update(f"u{i % 500}", {"source.ip": f"10.0.{i % 7}.1", "ueba.resource.id": f"r{i % 31}",
                                    "ueba.transfer.bytes": 1000}, 1_704_067_200.0 + i * 2.0)  # fmt: skip
    print(f"FeatureSnapshotter.update: {(time.process_time() - t0) / 20000 * 1e6:.1f} µs per event")
