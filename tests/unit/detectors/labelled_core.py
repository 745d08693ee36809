"""Labelled synthetic single-entity streams for the core detectors.

``STREAMS[name](seed) -> (events, timestamps, labels)``: flat ECS dicts as
``Event.flat`` gives them, seconds since the epoch, 1 = attack.  Each stream
is one entity's history: a regular baseline period (longer than the
detector's warm-up) with the attack events interleaved afterwards.  Events
that are individually indistinguishable from normal behaviour (the first
failure of a brute-force burst) are labelled 0: the label says what a
per-event detector *should* flag.
"""

from __future__ import annotations

import math
import random
from typing import Callable

Stream = tuple[list[dict], list[float], list[int]]

# Monday 2024-01-01 00:00 UTC: weekday/hour arithmetic stays readable.
T0 = 1_704_067_200.0
H = 3600.0
D = 86400.0


def _workday_hours(days: int):
    for d in range(days):
        if d % 7 in (5, 6):
            continue
        for h in range(9, 18):
            yield d, h


def _sorted(rows: list[tuple[float, dict, int]]) -> Stream:
    rows.sort(key=lambda r: r[0])
    return [r[1] for r in rows], [r[0] for r in rows], [r[2] for r in rows]


def exfiltration(seed: int) -> Stream:
    rng = random.Random(seed)
    rows: list[tuple[float, dict, int]] = []
    base = {"user.name": "ana", "event.action": "download", "event.category": ["file"],
            "ueba.resource.type": "dataset"}
    # The last working hour, so no normal event follows a pull on the same day.
    attack_hours = set(rng.sample([dh for dh in _workday_hours(42) if dh[0] >= 21 and dh[1] == 17], 8))
    for d, h in _workday_hours(42):
        start = T0 + d * D + h * H
        if (d, h) in attack_hours:
            # Bulk pull at the end of an hour: nothing normal follows in it.
            for k in range(rng.randint(2, 5)):
                ev = dict(base, **{"ueba.transfer.bytes": rng.lognormvariate(math.log(4e9), 0.5),
                                   "ueba.transfer.rows": rng.randint(5_000_000, 50_000_000)})
                rows.append((start + 3300 + 60 * k, ev, 1))
            n_normal, end = rng.randint(1, 3), 3000
        else:
            n_normal, end = rng.randint(1, 6), 3590
        for _ in range(n_normal):
            ev = dict(base, **{"ueba.transfer.bytes": rng.lognormvariate(math.log(3e6), 0.8),
                               "ueba.transfer.rows": rng.randint(1_000, 40_000)})
            if rng.random() < 0.2:
                ev["event.action"] = "upload"  # inbound: never exfiltration
                ev["ueba.transfer.bytes"] *= 50
            rows.append((start + rng.uniform(0, end), ev, 0))
    return _sorted(rows)


_RESOURCES = [f"s3://ml-datasets/team-a/ds-{i:03d}" for i in range(25)]


def unusual_access(seed: int) -> Stream:
    rng = random.Random(seed)
    rows: list[tuple[float, dict, int]] = []
    home = {"source.geo.country_iso_code": "US", "source.as.number": 7018,
            "source.geo.location.lat": 40.71, "source.geo.location.lon": -74.0,
            "user_agent.original": "aws-cli/2.15.0 Python/3.11.6 Linux/6.1"}

    def ev(**kw):
        e = {"user.name": "bob", "event.action": "read", "ueba.resource.type": "dataset",
             "ueba.resource.sensitivity": "internal"}
        e.update(home)
        e.update(kw)
        return e

    n_new = 0
    for d, h in _workday_hours(60):
        for _ in range(rng.randint(0, 3)):
            if rng.random() < 0.02:
                n_new += 1
                rid = f"s3://ml-datasets/team-a/new-{n_new}"
            else:
                rid = rng.choice(_RESOURCES)
            rows.append((T0 + d * D + h * H + rng.uniform(0, 3500), ev(**{"ueba.resource.id": rid}), 0))
    attack_days = [d for d in range(30, 60) if d % 7 not in (5, 6)]
    travel: set[float] = set()
    for i, d in enumerate(rng.sample(attack_days, 12)):
        t = T0 + d * D + 11 * H + rng.uniform(0, 1800)
        kind = i % 3
        if kind == 0:   # new restricted secret
            rows.append((t, ev(**{"ueba.resource.id": f"vault://prod/db-root-{i}", "ueba.resource.type": "secret",
                                  "ueba.resource.sensitivity": "restricted"}), 1))
        elif kind == 1:  # from Moscow 10 minutes after a New York event
            rows.append((t - 600, ev(**{"ueba.resource.id": _RESOURCES[0]}), 0))
            rows.append((t, ev(**{"ueba.resource.id": _RESOURCES[1], "source.geo.country_iso_code": "RU",
                                  "source.as.number": 12389, "source.geo.location.lat": 55.75,
                                  "source.geo.location.lon": 37.62}), 1))
            rows.append((t + 1200, ev(**{"ueba.resource.id": _RESOURCES[2]}), 0))
            travel.add(t)
        else:            # Sunday 03:00 with a new user agent
            sunday = T0 + (d - d % 7 + 6) * D + 3 * H
            rows.append((sunday + rng.uniform(0, 600), ev(**{"ueba.resource.id": rng.choice(_RESOURCES),
                                                            "user_agent.original": "python-requests/2.31"}), 1))
    xs, ts, ys = _sorted(rows)
    # The next event after a jump to Moscow is back home: the pair is the
    # signal (which side is the attacker is the analyst's call), label both.
    for i, t in enumerate(ts[:-1]):
        if t in travel:
            ys[i + 1] = 1
    return xs, ts, ys


def credential_abuse(seed: int) -> Stream:
    rng = random.Random(seed)
    rows: list[tuple[float, dict, int]] = []

    def login(outcome: str, ip: str = "198.51.100.7", cc: str = "US") -> dict:
        return {"user.name": "carol", "event.action": "login", "event.category": ["authentication"],
                "event.outcome": outcome, "source.ip": ip, "source.geo.country_iso_code": cc}

    for d in range(40):
        for _ in range(rng.randint(1, 4)):
            t = T0 + d * D + rng.uniform(8 * H, 19 * H)
            if rng.random() < 0.15:
                rows.append((t - 30, login("failure"), 0))
            rows.append((t, login("success", ip=rng.choice(["198.51.100.7", "198.51.100.8"])), 0))
    for i, d in enumerate(rng.sample(range(15, 40), 8)):
        t = T0 + d * D + 2 * H + rng.uniform(0, 600)
        if i % 2 == 0:  # brute force: 12 failures in 4 minutes, then success
            for k in range(12):
                rows.append((t + 20 * k, login("failure", ip="203.0.113.50", cc="NL"), int(k >= 2)))
            rows.append((t + 250, login("success", ip="203.0.113.50", cc="NL"), 1))
        else:           # the credential used from 6 IPs in 3 countries within minutes
            for k in range(6):
                rows.append((t + 40 * k, login("success", ip=f"192.0.2.{10 + k}", cc=("BR", "VN", "DE")[k % 3]),
                             int(k >= 2)))
    return _sorted(rows)


def password_spraying(seed: int) -> Stream:
    rng = random.Random(seed)
    rows: list[tuple[float, dict, int]] = []
    staff = [f"user{i}" for i in range(8)]

    def login(user: str, outcome: str) -> dict:
        return {"user.name": user, "event.action": "login", "event.category": ["authentication"],
                "event.outcome": outcome, "source.ip": "203.0.113.9"}

    for d in range(30):
        for _ in range(rng.randint(5, 15)):
            t = T0 + d * D + rng.uniform(8 * H, 19 * H)
            u = rng.choice(staff)
            if rng.random() < 0.1:
                rows.append((t - 20, login(u, "failure"), 0))
            rows.append((t, login(u, "success"), 0))
    for d in rng.sample(range(10, 30), 6):
        t = T0 + d * D + 1 * H + rng.uniform(0, 600)
        victims = [f"victim{rng.randint(0, 10**6)}" for _ in range(40)]
        for k, v in enumerate(victims):
            rows.append((t + 15 * k, login(v, "failure"), int(k >= 2)))
    return _sorted(rows)


def api_key_client(seed: int) -> Stream:
    rng = random.Random(seed)
    rows: list[tuple[float, dict, int]] = []
    ips = ["10.0.1.5", "10.0.1.6", "10.0.2.9"]

    def call(ip: str, ua: str = "openai-python/1.30.1") -> dict:
        return {"ueba.api_key.id": "key-1", "url.path": "/v1/chat/completions", "source.ip": ip,
                "user_agent.original": ua, "http.response.status_code": 200}

    n = 0
    for i in range(1500):
        t = T0 + i * 600 + rng.uniform(0, 300)
        if rng.random() < 0.005:
            n += 1
            rows.append((t, call(f"10.0.3.{n}"), 0))  # new internal pod IP now and then
        else:
            rows.append((t, call(rng.choice(ips)), 0))
    for i in range(12):
        t = T0 + rng.randint(300, 1499) * 600 + 450
        rows.append((t, call(f"185.220.101.{i}", ua=f"curl/8.{i}.0"), 1))
    return _sorted(rows)


def api_usage(seed: int) -> Stream:
    rng = random.Random(seed)
    rows: list[tuple[float, dict, int]] = []

    def call(tokens_in: int, tokens_out: int, status: int = 200, size: int = 2000) -> dict:
        return {"ueba.api_key.id": "key-7", "organization.id": "tenant-3", "url.path": "/v1/chat/completions",
                "gen_ai.usage.input_tokens": tokens_in, "gen_ai.usage.output_tokens": tokens_out,
                "http.response.status_code": status, "http.response.body.bytes": size}

    n_windows = 600
    attack = set(rng.sample(range(100, n_windows), 10))
    for w in range(n_windows):
        start = T0 + w * 300
        if w in attack:
            if w % 2:   # cost harvesting: huge prompts, many calls
                for k in range(60):
                    rows.append((start + 5 * k, call(60_000, 4_000, size=20_000), 1))
            else:       # enumeration: error burst
                for k in range(40):
                    rows.append((start + 7 * k, call(0, 0, status=403, size=200), 1))
            continue
        for _ in range(rng.randint(5, 20)):
            st = 500 if rng.random() < 0.01 else 200
            rows.append((start + rng.uniform(0, 299), call(rng.randint(100, 900), rng.randint(50, 400), st,
                                                          rng.randint(800, 4000)), 0))
    return _sorted(rows)


STREAMS: dict[str, Callable[[int], Stream]] = {
    "exfiltration": exfiltration,
    "unusual_access": unusual_access,
    "credential_abuse": credential_abuse,
    "password_spraying": password_spraying,
    "api_key_client": api_key_client,
    "api_usage": api_usage,
}
