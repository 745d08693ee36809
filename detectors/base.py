"""The detector contract shared by every scorer in ``detectors/``.

Streaming protocol (River style)
--------------------------------
A detector instance holds the *learned state of one entity* (one user, API
key, tenant, model...). Hyperparameters live in a separate, shared, frozen
``params`` object so per-entity state stays small.

* ``learn_one(x, ts)`` updates the state with one observation.
* ``score_one(x, ts) -> Score`` scores one observation against the state and
  **never mutates it** (the contract suite checks this).
* Score direction: higher = more anomalous. ``Score.score`` is calibrated to
  0-100 with one meaning for every detector: ``100 * (1 - p)`` where ``p`` is
  the (estimated) tail probability of seeing something at least this extreme
  under the baseline, so 99 means "1 in 100", 99.9 "1 in 1000" -- per test,
  under the detector's model of the identity. ``Score.raw`` is the detector's
  own statistic (z-score, distance, ``-log10 p``...).
* The runtime does not alert on that per-test score: the suite
  (:mod:`detectors.suite`) re-calibrates it per *identity-day* against what the
  same detector produced for the identity's peers (per identity-hour) and for
  the identity itself (per day), because per-test tails are too light for real,
  heavy-tailed behaviour and an identity is tested all day long. A Finding's
  score of 99.99 reads "an identity-day this unusual comes up about once in
  10,000 identity-days". Detectors help that calibration by reporting their
  evidence beyond what a 0-100 score can hold (``p`` below ~1e-15):
  ``CoreDetector._surprise`` or, for other detectors, ``raw_is_surprise = True``
  with ``raw = -log10 p``.
* Warm-up: until a detector has seen ``params.warmup`` observations for the
  entity it returns ``Score.score == 0`` unless a peer or global prior is
  available (then it scores against that prior and says so in the
  explanation).
* ``x`` is the flat dotted ECS dict of one event (``Event.flat``) or a
  feature dict derived from it; missing fields mean "not observed" and must
  never raise; unknown fields are ignored.

State is serialisable: ``to_bytes()`` / ``from_bytes(data, params)`` round-trip
exactly, and the contract suite measures its size.

Batch protocol (PyOD style), for notebooks
------------------------------------------
``fit(X)`` / ``decision_function(X)`` on pandas/numpy where a detector has a
batch form; fitted attributes end in ``_``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The Protocols live in a module mypyc does not compile: a compiled Protocol class
# loses its protocol flag and @runtime_checkable raises TypeError at import.
from ._protocols import BatchDetector, StreamingDetector  # noqa: F401  (re-exported)


@dataclass(slots=True)
class Explanation:
    """Why a score is what it is: everything an analyst needs to judge it.

    ``observed``: the value seen (number or string).
    ``baseline``: the identity's own baseline, e.g. ``{"center": 1.2e6,
    "spread": 3e5, "n": 412}`` or ``{"seen": 37}`` for set membership.
    ``peers``: the same for the identity's peer group, or None.
    ``window``: the window the value was measured over (e.g. ``"1h"``, ``"event"``).
    ``reason``: one sentence a SOC analyst can read.
    """

    feature: str
    observed: Any
    baseline: dict[str, Any]
    peers: dict[str, Any] | None
    window: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "observed": self.observed,
            "baseline": self.baseline,
            "peers": self.peers,
            "window": self.window,
            "reason": self.reason,
        }


@dataclass(slots=True)
class Score:
    """One detector's verdict on one observation.

    ``score``: calibrated 0-100, higher = more anomalous.
    ``raw``: the detector's own statistic (z-score, distance, PSI...).
    ``explanation``: None only when ``score == 0`` (nothing to explain).
    """

    score: float
    raw: float = 0.0
    explanation: Explanation | None = None


@dataclass(slots=True)
class Finding:
    """A score above zero, attributed, as the runtime turns it into an alert.

    ``detector``: the detector's stable name (becomes ``rule.id``-like keys).
    ``entity_type``: user, service_account, api_key, tenant, model, host, source_ip.
    ``techniques``: MITRE ATT&CK ids (``T1530``) and/or ATLAS ids (``AML.T0024``).
    ``explanation``: None only when the caller's ``explain`` hook declined it
    (``DetectorSuite.process``).
    """

    detector: str
    entity_type: str
    entity: str
    score: float
    title: str
    explanation: Explanation | None
    techniques: tuple[str, ...] = ()
    raw: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


#: Every streaming detector class, by ``name``; the contract suite runs on all of them.
DETECTORS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: add a streaming detector to :data:`DETECTORS`."""
    name = getattr(cls, "name", None)
    if not name or not isinstance(name, str):
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    if name in DETECTORS and DETECTORS[name] is not cls:
        raise ValueError(f"detector name {name!r} is registered twice")
    DETECTORS[name] = cls
    return cls
