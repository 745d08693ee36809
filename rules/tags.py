"""Sigma tags to ATT&CK / ATLAS technique ids.

``attack.t1110.003`` -> ``("attack", "T1110.003", tactic)``;
``atlas.aml.t0051`` -> ``("atlas", "AML.T0051", tactic)``. ``tactic`` is the
rule's tactic tag of the same framework (``attack.credential-access`` or
``attack.credential_access`` -> ``"credential-access"``; ``atlas.aml.ta0005``
-> ``"AML.TA0005"``), the first one when there are several, else None.
A tactic tag without a technique tag yields ``(framework, "", tactic)``.
"""

from __future__ import annotations

import re
from functools import lru_cache

#: ATT&CK Enterprise tactics (names as in the ATT&CK STIX data, shortname form).
ATTACK_TACTICS: dict[str, str] = {
    "reconnaissance": "TA0043",
    "resource-development": "TA0042",
    "initial-access": "TA0001",
    "execution": "TA0002",
    "persistence": "TA0003",
    "privilege-escalation": "TA0004",
    "defense-evasion": "TA0005",
    "credential-access": "TA0006",
    "discovery": "TA0007",
    "lateral-movement": "TA0008",
    "collection": "TA0009",
    "command-and-control": "TA0011",
    "exfiltration": "TA0010",
    "impact": "TA0040",
}

_ATTACK_TECH = re.compile(r"t(\d{4})(?:\.(\d{3}))?")
_ATLAS_TECH = re.compile(r"aml\.t(\d{4})(?:\.(\d{3}))?")
_ATLAS_TACTIC = re.compile(r"aml\.ta(\d{4})")
_OTHER_ATTACK = re.compile(r"[gs]\d{4}|detection\..+|cve\..+")

Technique = tuple[str, str, "str | None"]


def _tactic_name(name: str) -> str | None:
    n = name.replace("_", "-")
    return n if n in ATTACK_TACTICS else None


def techniques(tags: list[str] | tuple[str, ...]) -> list[Technique]:
    """Technique references of a rule's tags, in tag order, without duplicates
    (cached per tag tuple: alerts of one rule ask again and again)."""
    return list(_techniques_cached(tuple(tags)))


@lru_cache(maxsize=4096)
def technique_ids(tags: tuple[str, ...]) -> tuple[str, ...]:
    """The technique ids of a rule's tags: ``("T1110.003", "AML.T0051")`` (cached)."""
    return tuple(t for _, t, _ in _techniques_cached(tuple(tags)) if t)


@lru_cache(maxsize=4096)
def _techniques_cached(tags: tuple[str, ...]) -> tuple[Technique, ...]:
    return tuple(_techniques(tags))


def _techniques(tags: list[str] | tuple[str, ...]) -> list[Technique]:
    attack_tactic: str | None = None
    atlas_tactic: str | None = None
    for tag in tags:
        ns, _, name = tag.lower().partition(".")
        if ns == "attack" and attack_tactic is None:
            attack_tactic = _tactic_name(name)
        elif ns == "atlas" and atlas_tactic is None:
            m = _ATLAS_TACTIC.fullmatch(name)
            if m:
                atlas_tactic = f"AML.TA{m.group(1)}"
    out: list[Technique] = []
    seen: set[tuple[str, str]] = set()
    for tag in tags:
        ns, _, name = tag.lower().partition(".")
        if ns == "attack":
            m = _ATTACK_TECH.fullmatch(name)
            if m:
                tid = f"T{m.group(1)}" + (f".{m.group(2)}" if m.group(2) else "")
                if ("attack", tid) not in seen:
                    seen.add(("attack", tid))
                    out.append(("attack", tid, attack_tactic))
        elif ns == "atlas":
            m = _ATLAS_TECH.fullmatch(name)
            if m:
                tid = f"AML.T{m.group(1)}" + (f".{m.group(2)}" if m.group(2) else "")
                if ("atlas", tid) not in seen:
                    seen.add(("atlas", tid))
                    out.append(("atlas", tid, atlas_tactic))
    if attack_tactic and not any(f == "attack" for f, _, _ in out):
        out.append(("attack", "", attack_tactic))
    if atlas_tactic and not any(f == "atlas" for f, _, _ in out):
        out.append(("atlas", "", atlas_tactic))
    return out


def tag_problem(tag: str) -> str | None:
    """Why an attack.* / atlas.* tag is not understood, or None if fine (other namespaces pass)."""
    ns, _, name = tag.lower().partition(".")
    if ns == "attack":
        if _ATTACK_TECH.fullmatch(name) or _tactic_name(name) or _OTHER_ATTACK.fullmatch(name):
            return None
        return f"tag {tag!r} is neither an ATT&CK technique (attack.tNNNN[.NNN]) nor a tactic"
    if ns == "atlas":
        if _ATLAS_TECH.fullmatch(name) or _ATLAS_TACTIC.fullmatch(name):
            return None
        return f"tag {tag!r} is not an ATLAS technique (atlas.aml.tNNNN[.NNN]) or tactic (atlas.aml.taNNNN)"
    return None
