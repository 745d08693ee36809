"""Peer groups: who an identity should be compared with, and their baselines.

A new identity has no history; alerting on everything it does would bury
analysts on the first day of every new hire or API key.  Detectors instead
score it against its *peer group* (same team, role or tenant) and, failing
that, against the global population.  Every explanation also says where the
identity sits among its peers.

The peer group of an event is, in order of preference: ``ueba.identity.peer_group``,
``user.group.name``, the first of ``user.roles``, ``organization.id``,
``ueba.identity.type``, else ``"*"``.

:class:`PeerBaselines` is process-local (each stream worker keeps the groups
of the identities in its partitions) and bounded: at most ``max_groups``
groups, least recently used evicted.  Two stores can be merged (e.g. to
build a global view offline from every worker's snapshot).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, Callable

__all__ = ["PeerGroup", "PeerBaselines", "peer_group_of", "GLOBAL_GROUP"]

GLOBAL_GROUP = "*"


def peer_group_of(flat: dict[str, Any]) -> str:
    """The peer-group name an event's identity belongs to (see module docstring)."""
    g = flat.get("ueba.identity.peer_group") or flat.get("user.group.name")
    if g:
        return g if type(g) is str else str(g)
    roles = flat.get("user.roles")
    if roles and type(roles) is list:
        return "role:" + str(roles[0])
    org = flat.get("organization.id")
    if org:
        return "org:" + str(org)
    t = flat.get("ueba.identity.type")
    if t:
        return "type:" + str(t)
    return GLOBAL_GROUP


class PeerGroup:
    """The shared statistics of one peer group, by detector-chosen key.

    ``parent`` is the global group (None for the global group itself), which
    detectors fall back to when the group has too little data.
    """

    __slots__ = ("name", "stats", "parent")

    def __init__(self, name: str, parent: "PeerGroup | None" = None) -> None:
        self.name = name
        self.stats: dict[str, Any] = {}
        self.parent = parent

    def get(self, key: str) -> Any:
        return self.stats.get(key)

    def setdefault(self, key: str, factory: Callable[[], Any]) -> Any:
        s = self.stats.get(key)
        if s is None:
            s = self.stats[key] = factory()
        return s

    def lookup(self, key: str, min_n: int) -> tuple[Any, str] | tuple[None, None]:
        """This group's statistic if it has ``min_n`` observations, else the
        global one if that has, else ``(None, None)``; with the level used."""
        s = self.stats.get(key)
        if s is not None and s.n >= min_n:
            return s, self.name
        p = self.parent
        if p is not None:
            s = p.stats.get(key)
            if s is not None and s.n >= min_n:
                return s, p.name
        return None, None

    def merge(self, other: "PeerGroup") -> "PeerGroup":
        for key, stat in other.stats.items():
            mine = self.stats.get(key)
            if mine is None:
                self.stats[key] = copy.deepcopy(stat)
            else:
                mine.merge(stat)
        return self


class PeerBaselines:
    """Bounded LRU store of peer groups plus one global group.

    Parameters
    ----------
    max_groups : int
        Most groups kept; the least recently used is dropped beyond that
        (peer-group names come from event fields an attacker may control).

    Examples
    --------
    >>> store = PeerBaselines(max_groups=2)
    >>> g = store.view({"user.roles": ["data-scientist"]})
    >>> g.name, g.parent.name
    ('role:data-scientist', '*')
    """

    __slots__ = ("max_groups", "groups", "global_")

    def __init__(self, max_groups: int = 1024) -> None:
        self.max_groups = max_groups
        self.groups: OrderedDict[str, PeerGroup] = OrderedDict()
        self.global_ = PeerGroup(GLOBAL_GROUP)

    def group(self, name: str) -> PeerGroup:
        if name == GLOBAL_GROUP:
            return self.global_
        groups = self.groups
        g = groups.get(name)
        if g is None:
            g = groups[name] = PeerGroup(name, self.global_)
            if len(groups) > self.max_groups:
                groups.popitem(last=False)
        else:
            groups.move_to_end(name)
        return g

    def view(self, flat: dict[str, Any]) -> PeerGroup:
        """The peer group of an event's identity (created on first use)."""
        return self.group(peer_group_of(flat))

    def __len__(self) -> int:
        return len(self.groups)

    def merge(self, other: "PeerBaselines") -> "PeerBaselines":
        self.global_.merge(other.global_)
        for name, g in other.groups.items():
            self.group(name).merge(g)
        return self

    def __iadd__(self, other: "PeerBaselines") -> "PeerBaselines":  # mypyc: no method aliases
        return self.merge(other)
