"""A minimal per-identity scorer: "first time this identity touched this thing".

It is the backbone's end-to-end check and the fallback when the detector
library is not configured: access events look at ``ueba.resource.id``, API
calls at ``ueba.model.id``, telemetry at ``ueba.model.artifact_hash``.

Warm-up: the first ``warmup`` events of an identity only learn (score 0), so
a new identity does not alert on everything it does. Memory is bounded: at
most ``capacity`` 64-bit hashes per identity, oldest forgotten first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec

from detectors.base import Explanation, Finding

FIELDS = {"access": "ueba.resource.id", "api": "ueba.model.id", "telemetry": "ueba.model.artifact_hash"}
ENTITY_TYPES = {"access": "user", "api": "api_key", "telemetry": "model"}
TECHNIQUES = {"access": ("T1530",), "api": ("AML.T0040",), "telemetry": ("AML.T0018",)}


class FirstSeenState(msgspec.Struct, array_like=True):
    n: int = 0
    seen: list[int] = []


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(FirstSeenState)


def _h(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True, slots=True)
class FirstSeenScorer:
    kind: str
    warmup: int = 20
    capacity: int = 256
    score: float = 70.0

    def new_state(self) -> FirstSeenState:
        return FirstSeenState()

    def dumps(self, state: FirstSeenState) -> bytes:
        return _enc.encode(state)

    def loads(self, data: bytes) -> FirstSeenState:
        return _dec.decode(data)

    def process(self, state: FirstSeenState, flat: dict[str, Any], ts: float, peers: Any = None) -> list[Finding]:
        field = FIELDS[self.kind]
        value = flat.get(field)
        state.n += 1
        if value is None:
            return []
        h = _h(str(value))
        if h in state.seen:
            return []
        known = len(state.seen)
        state.seen.append(h)
        if len(state.seen) > self.capacity:
            del state.seen[0]
        if state.n <= self.warmup:
            return []
        entity = flat.get("user.name") if self.kind == "access" else None
        entity = entity or flat.get("ueba.api_key.id") or flat.get("ueba.model.id") or flat.get("user.id") or "?"
        return [
            Finding(
                detector=f"first_seen_{self.kind}",
                entity_type=ENTITY_TYPES[self.kind],
                entity=str(entity),
                score=self.score,
                title=f"{entity} used {field} {value} for the first time",
                explanation=Explanation(
                    feature=field,
                    observed=str(value),
                    baseline={"distinct_seen": known, "events": state.n - 1},
                    peers=None,
                    window="identity lifetime",
                    reason=f"{entity} had not used {field}={value} in {state.n - 1} earlier events.",
                ),
                techniques=TECHNIQUES[self.kind],
            )
        ]
