"""The simulated organisation: identities with habits, resources, tenants, models.

Built once per run from the seed. Everything an event needs that does not
change per event is precomputed here as a shared (read-only) ECS sub-object,
so generators only allocate the parts that vary.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from . import catalog as C
from .config import SimulationConfig

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
FP_DIM = 16
NEVER = np.iinfo(np.int64).max // 4

# Resource types and the actions done on them: (action, probability).
RES_TYPES = ("dataset", "model_artifact", "secret", "bucket", "notebook", "endpoint")
ACTIONS = ("read", "download", "list", "write", "invoke")
_ACTION_MIX = {
    "dataset": {"read": 0.55, "download": 0.25, "list": 0.12, "write": 0.08},
    "model_artifact": {"read": 0.5, "download": 0.45, "write": 0.05},
    "secret": {"read": 1.0},
    "bucket": {"list": 0.5, "read": 0.3, "write": 0.2},
    "notebook": {"read": 0.6, "write": 0.4},
    "endpoint": {"invoke": 1.0},
}
# ln(bytes) location per type (median e^mu) and spread: heavy tails on purpose.
_BYTES_MU = {"dataset": 19.0, "model_artifact": 21.0, "secret": 7.5, "bucket": 16.0, "notebook": 12.0, "endpoint": 9.0}
_BYTES_SIGMA = {"dataset": 1.8, "model_artifact": 1.0, "secret": 0.3, "bucket": 2.0, "notebook": 1.0, "endpoint": 1.2}
_CATEGORY = {"dataset": ["file"], "model_artifact": ["file"], "secret": ["iam"], "bucket": ["file"],
             "notebook": ["file"], "endpoint": ["network"]}


def _place(p: tuple) -> dict[str, Any]:
    city, iso, country, lat, lon, _tz, _asn = p
    return {"country_iso_code": iso, "country_name": country, "city_name": city,
            "location": {"lat": lat, "lon": lon}}


def haversine_km(a: tuple, b: tuple) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a[3], a[4], b[3], b[4]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


class IpPool:
    """Deterministic public IPs per (place, ASN): one /16 per network."""

    def __init__(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._prefix: dict[tuple[str, int], tuple[int, int]] = {}
        self._used: set[str] = set()

    def ip(self, place: tuple) -> str:
        key = (place[0], place[6])
        if key not in self._prefix:
            while True:
                pre = (int(self._rng.choice(C.PUBLIC_FIRST_OCTETS)), int(self._rng.integers(0, 256)))
                if pre not in self._prefix.values():
                    break
            self._prefix[key] = pre
        a, b = self._prefix[key]
        while True:
            ip = f"{a}.{b}.{int(self._rng.integers(0, 256))}.{int(self._rng.integers(1, 255))}"
            if ip not in self._used:
                self._used.add(ip)
                return ip

    def source(self, place: tuple) -> dict[str, Any]:
        return {"ip": self.ip(place), "geo": _place(place), "as": {"number": place[6]}}


@dataclass
class Resource:
    type: str
    id: str
    owner: str
    sensitivity: str
    doc: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trip:
    depart_ms: int
    arrive_ms: int
    back_depart_ms: int
    back_arrive_ms: int
    place: tuple
    source: dict[str, Any]


@dataclass
class Human:
    name: str
    role: str
    team: str
    home: tuple
    tz: int
    user: dict[str, Any]
    identity: dict[str, Any]
    sources: list[dict[str, Any]]
    uas: list[dict[str, Any]]
    slots: np.ndarray          # global resource indices, usual first, project ones last
    rate: float = 6.0           # access events per fully active hour
    trip: Trip | None = None
    project_ms: int = NEVER
    oncall: bool = False


@dataclass
class ServiceAccount:
    name: str
    kind: str                  # batch | ci | serving | etl
    team: str
    user: dict[str, Any]
    identity: dict[str, Any]
    sources: list[dict[str, Any]]
    ua: dict[str, Any]
    slots: np.ndarray
    rate: float                # events per active hour
    cron_hour: int             # UTC hour of the nightly batch
    cron_minute: int
    tz: int


@dataclass
class Model:
    id: str
    team: str
    classes: tuple[str, ...]
    class_p: np.ndarray
    features: tuple[str, ...]
    feat_mu: np.ndarray
    feat_sigma: np.ndarray
    conf_ab: tuple[float, float]
    latency_mu: float          # ln(ms)
    error_rate: float
    center: np.ndarray         # input-space centre (FP_DIM,)
    versions: list[tuple[str, str]]           # (version, artifact hash)
    deploys_ms: list[int]      # when versions[i+1] went live
    version_docs: list[dict[str, Any]] = field(default_factory=list)
    identity: dict[str, Any] = field(default_factory=dict)
    url: dict[str, Any] = field(default_factory=dict)
    # set by scenarios
    tamper_ms: int = NEVER
    tamper_doc: dict[str, Any] | None = None
    tamper_tag: str | None = None
    drift_start_ms: int = NEVER
    drift_end_ms: int = NEVER
    drift_tag: str | None = None
    drift_class: int = 0

    @property
    def feat_mu_l(self) -> list[float]:
        return self._feat_mu_l

    @property
    def feat_sigma_l(self) -> list[float]:
        return self._feat_sigma_l

    def __post_init__(self) -> None:
        self._feat_mu_l = [float(x) for x in self.feat_mu]
        self._feat_sigma_l = [float(x) for x in self.feat_sigma]

    def version_at(self, ms: int) -> int:
        return int(np.searchsorted(np.asarray(self.deploys_ms, dtype=np.int64), ms, side="right"))


@dataclass
class ApiKey:
    id: str
    tenant: str
    org: dict[str, Any]
    api_key: dict[str, Any]
    identity: dict[str, Any]
    sources: list[dict[str, Any]]
    ua: dict[str, Any]
    place: tuple
    pattern: str               # business | constant | cron
    rate: float                # calls per active hour
    tz: int
    cron_hour: int
    p_llm: float
    models: np.ndarray         # model indices (3,)
    model_p: np.ndarray        # cumulative probabilities (3,)
    llm: int
    fp_mu: np.ndarray          # (3, FP_DIM)
    fp_sigma: np.ndarray       # (3,)
    feat_shift: np.ndarray     # per model slot, (3,) shift in feature sigmas


@dataclass
class World:
    config: SimulationConfig
    humans: list[Human]
    services: list[ServiceAccount]
    keys: list[ApiKey]
    models: list[Model]
    resources: list[Resource]
    llm_docs: list[dict[str, Any]]
    prompts: list[dict[str, Any]]
    ips: IpPool
    rng: np.random.Generator
    res_type: np.ndarray       # index into RES_TYPES per resource
    res_mu: np.ndarray
    res_sigma: np.ndarray
    res_bpr: np.ndarray        # bytes per row (0 = no rows)
    team_resources: dict[str, dict[str, list[int]]]
    endpoints: list[int]
    human_profile: np.ndarray  # (n_humans, 168) activity weight by UTC hour of week
    team_home: dict[str, tuple]
    #: team -> its declared change window, (168,) bool by UTC hour of week
    change_windows: dict[str, np.ndarray] = field(default_factory=dict)
    #: team -> shared ``ueba.change`` sub-objects (inside, outside the window)
    change_docs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)
    _covered: dict[str, dict[str, Any]] = field(default_factory=dict)

    def change_of(self, r: int, t_ms: int) -> dict[str, Any] | None:
        """The ``ueba.change`` the platform stamps on an access to resource
        ``r`` at ``t_ms``: governed resources only (datasets, model artifacts),
        judged against the owning team's declared change window."""
        res = self.resources[r]
        if res.type not in GOVERNED:
            return None
        inside, outside = self.change_docs[res.owner]
        return inside if self.change_windows[res.owner][int((t_ms // HOUR_MS + 72) % 168)] else outside

    def covered(self, change_id: str) -> dict[str, Any]:
        """An out-of-window ``ueba.change`` covered by change (or incident) ``change_id`` (shared)."""
        doc = self._covered.get(change_id)
        if doc is None:
            doc = self._covered[change_id] = {"in_window": False, "id": change_id}
        return doc


#: Resource types under change management: the platform stamps ``ueba.change``
#: on every access to them.
GOVERNED = frozenset(("dataset", "model_artifact"))

#: Each team declares, for the training data and models it owns, a change
#: window on weekdays from 07:00 to 20:00 local time -- in the time zone of
#: every member, so a team with remote members covers their working day too.
CHANGE_WINDOW_LOCAL = (7, 20)

#: Share of the days a person works outside the window on which they opened a
#: change or just-in-time access request for it first (on-call engineers
#: always work under the incident). The rest is policy drift the training-data
#: rule reports.
CHANGE_COMPLIANCE = 0.98


def change_window(tzs: Iterable[int]) -> np.ndarray:
    """(168,) bool by UTC hour of week: weekdays within :data:`CHANGE_WINDOW_LOCAL`
    local time in any of the time zones ``tzs`` (UTC offsets in hours)."""
    w = np.zeros(168, dtype=bool)
    lo, hi = CHANGE_WINDOW_LOCAL
    for tz in set(tzs):
        for day in range(5):
            for h in range(lo, hi):
                w[(day * 24 + h - tz) % 168] = True  # local hour k is UTC hour k - tz
    return w


def _zipf_cum(n: int, s: float = 1.1) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** s
    return np.cumsum(w / w.sum())


def _workday_profile(tz: int, shift: int, oncall: bool, weekend: float) -> np.ndarray:
    """168 activity weights in UTC hours for someone working 9-18 local time."""
    day = np.array([0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.02, 0.1, 0.5, 1.0, 1.0, 1.0,
                    0.6, 1.0, 1.0, 1.0, 1.0, 0.7, 0.35, 0.15, 0.08, 0.08, 0.03, 0.02])
    day = np.roll(day, shift)
    if oncall:
        day = np.maximum(day, 0.12)
    local = np.concatenate([day] * 5 + [np.maximum(day * weekend, 0.005)] * 2)  # Mon..Sun
    # local hour-of-week k corresponds to UTC hour k - tz
    return np.roll(local, -tz)


def _unique(name: str, taken: set[str], rng: np.random.Generator) -> str:
    """``name``, or ``name`` plus a number when taken (vocabularies are finite)."""
    out = name
    while out in taken:
        out = f"{name}{int(rng.integers(2, 10 + len(taken)))}"
    taken.add(out)
    return out


def _hash(rng: np.random.Generator) -> str:
    return "sha256:" + rng.bytes(32).hex()


def build_prompts(rng: np.random.Generator, n: int = 400) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        t = C.PROMPT_TEMPLATES[int(rng.integers(len(C.PROMPT_TEMPLATES)))]
        fills = {k: v[int(rng.integers(len(v)))] for k, v in C.PROMPT_FILLS.items()}
        out.append({"prompt": t.format(**fills)})
    return out


def injection_prompts() -> list[str]:
    out = list(C.INJECTION_PROMPTS)
    for payload in C.INJECTION_B64_PAYLOADS:
        b64 = base64.b64encode(payload.encode()).decode()
        for wrapper in C.INJECTION_B64_WRAPPERS:
            out.append(wrapper.format(b64=b64))
    return out


def build_world(config: SimulationConfig) -> World:
    rng = np.random.default_rng([config.seed, 0xC0FFEE])
    ips = IpPool(rng)
    start, end = config.start_ms, config.end_ms
    n_teams = min(len(C.TEAMS), max(3, config.humans // 12))
    teams = C.TEAMS[:n_teams] if "platform" in C.TEAMS[:n_teams] else C.TEAMS[: n_teams - 1] + ("platform",)
    team_home = {t: C.OFFICES[i % len(C.OFFICES)] for i, t in enumerate(teams)}

    # --- models -------------------------------------------------------------
    models: list[Model] = []
    for i in range(config.models):
        name, classes, p, feats = C.CLASSICAL_MODELS[i % len(C.CLASSICAL_MODELS)]
        mid = name if i < len(C.CLASSICAL_MODELS) else f"{name}-{i // len(C.CLASSICAL_MODELS) + 1}"
        team = C.MODEL_TEAMS[i % len(C.MODEL_TEAMS)]
        team = team if team in teams else teams[i % len(teams)]
        major, minor = int(rng.integers(1, 4)), int(rng.integers(0, 10))
        n_deploys = int(rng.poisson(0.6 * config.duration_s / 604800))  # ~0.6 version rolls per model-week
        # deploys happen on working hours of the owning team, after the first day
        deploys = []
        for _ in range(n_deploys):
            day = int(rng.integers(1, max(2, int(config.duration_s // 86400))))
            hour = (int(rng.integers(10, 17)) - team_home[team][5]) % 24
            t = start + day * DAY_MS + hour * HOUR_MS + int(rng.integers(0, HOUR_MS))
            if start + DAY_MS <= t < end:
                deploys.append(t)
        deploys.sort()
        versions = [(f"{major}.{minor + k}.0", _hash(rng)) for k in range(len(deploys) + 1)]
        m = Model(
            id=mid, team=team, classes=classes, class_p=np.cumsum(p),
            features=feats, feat_mu=rng.normal(0, 3, len(feats)).round(2),
            feat_sigma=rng.uniform(0.5, 2.0, len(feats)).round(2),
            conf_ab=(float(rng.uniform(6, 12)), float(rng.uniform(1.2, 2.5))),
            latency_mu=math.log(float(rng.uniform(8, 90))), error_rate=float(rng.uniform(0.001, 0.006)),
            center=rng.normal(0, 1, FP_DIM), versions=versions, deploys_ms=deploys,
        )
        m.version_docs = [{"id": mid, "version": v, "artifact_hash": h, "registered": True} for v, h in versions]
        m.identity = {"type": "model", "peer_group": "classifier"}
        m.url = {"path": f"/v1/models/{mid}:predict"}
        models.append(m)

    # --- resources ----------------------------------------------------------
    resources: list[Resource] = []
    team_resources: dict[str, dict[str, list[int]]] = {t: {k: [] for k in RES_TYPES + ("project",)} for t in teams}

    def add(rtype: str, rid: str, owner: str, sens: str, bucket: str | None = None) -> int:
        r = Resource(rtype, rid, owner, sens)
        r.doc = {"type": rtype, "id": rid, "owner": owner, "sensitivity": sens}
        resources.append(r)
        idx = len(resources) - 1
        team_resources[owner][bucket or rtype].append(idx)
        return idx

    used_ids: set[str] = set()
    for t in teams:
        n_ds = int(rng.integers(8, 15))
        stems = rng.choice(len(C.DATASET_STEMS), size=min(n_ds, len(C.DATASET_STEMS)), replace=False)
        for s in stems:
            rid = f"s3://ml-data/{t}/{C.DATASET_STEMS[s]}-{C.DATASET_SUFFIXES[int(rng.integers(len(C.DATASET_SUFFIXES)))]}"
            if rid in used_ids:
                continue
            used_ids.add(rid)
            sens = ("internal", "confidential", "restricted")[int(rng.choice(3, p=[0.4, 0.4, 0.2]))]
            add("dataset", rid, t, sens)
        for k in range(3):  # datasets of projects that start during the run
            stem = C.DATASET_STEMS[int(rng.integers(len(C.DATASET_STEMS)))]
            add("dataset", f"s3://ml-data/{t}/{stem}-{C.PROJECT_SUFFIXES[k]}", t, "confidential", bucket="project")
        for name in ("db-password", "hf-token", "wandb-api-key", "openai-api-key"):
            add("secret", f"vault://kv/{t}/{name}", t, "restricted")
        add("bucket", f"s3://{t}-scratch", t, "internal")
        add("bucket", f"s3://{t}-exports", t, "confidential")
    for m in models:
        add("model_artifact", f"s3://ml-models/{m.team}/{m.id}/model.safetensors", m.team, "confidential")
    endpoints = []
    for i, svc in enumerate(("feature-store", "model-registry", "vector-db", "label-studio", "billing-api",
                             "iam-broker", "k8s-api", "metrics", "payments-core", "customer-db")):
        endpoints.append(add("endpoint", f"svc://{svc}", teams[i % len(teams)], "internal" if i < 4 else "restricted"))
    res_type = np.array([RES_TYPES.index(r.type) for r in resources], dtype=np.int64)
    res_mu = np.array([_BYTES_MU[r.type] for r in resources]) + rng.normal(0, 0.7, len(resources))
    res_sigma = np.array([_BYTES_SIGMA[r.type] for r in resources])
    res_bpr = np.array([float(rng.integers(80, 2000)) if r.type == "dataset" else 0.0 for r in resources])

    # --- humans -------------------------------------------------------------
    humans: list[Human] = []
    roles_by = {"data-scientist": ["data-scientist", "notebook-user"], "ml-engineer": ["ml-engineer", "model-deployer"],
                "analyst": ["analyst", "read-only"], "platform-admin": ["platform-admin", "iam-admin"]}
    names: set[str] = set()
    profiles = []
    n_days = max(1, int(config.duration_s // 86400))
    for i in range(config.humans):
        nm = _unique(f"{C.FIRST_NAMES[int(rng.integers(len(C.FIRST_NAMES)))]}."
                     f"{C.LAST_NAMES[int(rng.integers(len(C.LAST_NAMES)))]}", names, rng)
        team = teams[i % len(teams)]
        if team == "platform":
            role = "platform-admin" if rng.random() < 0.6 else "ml-engineer"
        else:
            role = ("data-scientist", "ml-engineer", "analyst")[int(rng.choice(3, p=[0.45, 0.33, 0.22]))]
        home = team_home[team] if rng.random() < 0.75 else C.OFFICES[int(rng.integers(len(C.OFFICES)))]
        sources = [ips.source(home) for _ in range(int(rng.integers(1, 4)))]
        uas = [{"original": C.HUMAN_UAS[j]} for j in rng.choice(len(C.HUMAN_UAS), size=int(rng.integers(1, 3)), replace=False)]
        tr = team_resources[team]
        pool = tr["dataset"] + tr["bucket"] + [r for r in tr["model_artifact"]]
        if role == "platform-admin":
            pool = tr["secret"] + [x for t in teams for x in team_resources[t]["secret"][:1]] + tr["bucket"]
        elif role == "analyst":
            pool = tr["dataset"] + tr["bucket"][:1]
        else:
            pool = pool + tr["secret"][:2]
        k = min(len(pool), int(rng.integers(5, 13)))
        usual = rng.choice(pool, size=k, replace=False)
        # Cross-team collaboration: some people read a shared (internal) dataset
        # of another team now and then (its own stream: the draws above stay put).
        xrng = np.random.default_rng([config.seed, 0xC0 + 1, i])
        if role in ("data-scientist", "analyst") and xrng.random() < 0.3:
            shared = [r for t in teams if t != team for r in team_resources[t]["dataset"]
                      if resources[r].sensitivity == "internal"]
            if shared:
                usual = np.append(usual, shared[int(xrng.integers(len(shared)))])
        project = np.array(tr["project"], dtype=np.int64)
        slots = np.concatenate([usual.astype(np.int64), project])
        oncall = role in ("ml-engineer", "platform-admin") and rng.random() < 0.3
        h = Human(
            name=nm, role=role, team=team, home=home, tz=home[5],
            user={"name": nm, "id": f"u-{10000 + i}", "roles": roles_by[role], "group": {"name": team}},
            identity={"type": "human", "peer_group": role},
            sources=sources, uas=uas, slots=slots, oncall=oncall,
            rate=float(np.exp(rng.normal(math.log(7.0 if role != "analyst" else 4.0), 0.5))),
        )
        if rng.random() < 0.15:
            h.project_ms = start + int(rng.uniform(0.2, 0.9) * (end - start))
        if rng.random() < 0.12 and n_days >= 2:
            dest = C.TRAVEL[int(rng.integers(len(C.TRAVEL)))]
            flight_h = int(math.ceil(haversine_km(home, dest) / 800 + 2))
            d0 = start + int(rng.integers(0, n_days)) * DAY_MS
            dep = d0 + ((7 - home[5]) % 24) * HOUR_MS  # leaves 07:00 local
            stay = int(rng.integers(2, 5)) * DAY_MS
            h.trip = Trip(dep, dep + flight_h * HOUR_MS, dep + stay, dep + stay + flight_h * HOUR_MS, dest, ips.source(dest))
        profiles.append(_workday_profile(h.tz, int(rng.integers(-1, 2)), oncall, weekend=0.04))
        humans.append(h)
    human_profile = np.vstack(profiles)

    # --- service accounts ---------------------------------------------------
    services: list[ServiceAccount] = []
    kinds = ("ci", "batch", "serving", "etl")
    for i in range(config.service_accounts):
        kind = kinds[i % 4] if i < 4 * len(teams) else kinds[int(rng.integers(4))]
        team = teams[(i // 4) % len(teams)]
        tr = team_resources[team]
        internal = [{"ip": f"10.{int(rng.integers(0, 64))}.{int(rng.integers(0, 256))}.{int(rng.integers(2, 255))}"}
                    for _ in range(int(rng.integers(1, 3)))]
        own_eps = list(rng.choice(endpoints, size=2, replace=False))
        if kind == "batch":
            pool, rate = tr["dataset"] + tr["bucket"], float(rng.uniform(80, 250))
        elif kind == "ci":
            pool, rate = tr["dataset"][:3] + tr["secret"][:2] + tr["model_artifact"], float(rng.uniform(4, 10))
        elif kind == "serving":
            pool, rate = tr["model_artifact"] + tr["secret"][:1] + own_eps, float(rng.uniform(3, 8))
        else:
            pool, rate = tr["dataset"][:4] + tr["bucket"], float(rng.uniform(3, 8))
        pool = pool + own_eps
        slots = np.array(sorted(set(int(x) for x in pool)), dtype=np.int64)
        nm = f"svc-{kind}-{team}-{i // (4 * len(teams)) + 1}"
        services.append(ServiceAccount(
            name=nm, kind=kind, team=team,
            user={"name": nm, "id": f"sa-{20000 + i}", "roles": ["service"], "group": {"name": team}},
            identity={"type": "service_account", "peer_group": {"ci": "ci-pipeline", "batch": "batch-job",
                                                                "serving": "model-serving", "etl": "etl"}[kind]},
            sources=internal, ua={"original": C.SERVICE_UAS[("batch", "ci", "serving", "etl").index(kind) % len(C.SERVICE_UAS)]},
            slots=slots, rate=rate, cron_hour=int(rng.integers(0, 5)), cron_minute=int(rng.integers(0, 60)),
            tz=team_home[team][5],
        ))

    # --- tenants and their API keys -----------------------------------------
    keys: list[ApiKey] = []
    tnames: set[str] = set()
    for i in range(config.tenants):
        tn = _unique(f"{C.TENANT_WORDS_A[int(rng.integers(len(C.TENANT_WORDS_A)))]}-"
                     f"{C.TENANT_WORDS_B[int(rng.integers(len(C.TENANT_WORDS_B)))]}", tnames, rng)
        org = {"id": f"org-{rng.bytes(3).hex()}", "name": tn}
        place = C.CLOUD_REGIONS[int(rng.integers(len(C.CLOUD_REGIONS)))]
        tier = "enterprise" if rng.random() < 0.3 else "standard"
        for j in range(int(rng.integers(1, 4))):
            app = C.APPS[int(rng.integers(len(C.APPS)))]
            kid = "ak_" + rng.bytes(8).hex()
            pattern = ("business", "constant", "cron")[int(rng.choice(3, p=[0.55, 0.3, 0.15]))]
            # calls per active hour: heavy-tailed across keys
            rate = float(min(np.exp(rng.normal(math.log(60), 1.0)), 2000))
            k = min(3, len(models))
            ms = rng.choice(len(models), size=k, replace=False)
            mp = rng.dirichlet(np.ones(k) * 0.7)
            fp_mu = np.stack([models[m].center + rng.normal(0, 0.35, FP_DIM) for m in ms])
            keys.append(ApiKey(
                id=kid, tenant=tn, org=org, api_key={"id": kid, "owner": f"{tn}/{app}"},
                identity={"type": "api_key", "peer_group": f"tenant-{tier}"},
                sources=[ips.source(place) for _ in range(int(rng.integers(1, 4)))],
                ua={"original": C.TENANT_UAS[int(rng.integers(len(C.TENANT_UAS)))]},
                place=place, pattern=pattern, rate=rate, tz=place[5], cron_hour=int(rng.integers(0, 24)),
                p_llm=float(rng.choice([0.0, 0.1, 0.5, 0.9], p=[0.35, 0.25, 0.2, 0.2])),
                models=ms.astype(np.int64), model_p=np.cumsum(mp), llm=int(rng.integers(len(C.LLMS))),
                fp_mu=fp_mu.round(3), fp_sigma=rng.uniform(0.3, 0.8, k), feat_shift=rng.normal(0, 0.3, k),
            ))

    llm_docs = [{"system": s, "operation": {"name": "chat"}, "request": {"model": m}} for m, s in C.LLMS]
    # Declared change windows: every team covers the working day of each member.
    tzs: dict[str, set[int]] = {t: {team_home[t][5]} for t in teams}
    for h in humans:
        tzs[h.team].add(h.tz)
    windows = {t: change_window(tzs[t]) for t in teams}
    change_docs = {t: ({"in_window": True, "window": f"{t}-weekdays"}, {"in_window": False}) for t in teams}
    return World(
        config=config, humans=humans, services=services, keys=keys, models=models, resources=resources,
        llm_docs=llm_docs, prompts=build_prompts(rng), ips=ips, rng=rng, res_type=res_type, res_mu=res_mu,
        res_sigma=res_sigma, res_bpr=res_bpr, team_resources=team_resources, endpoints=endpoints,
        human_profile=human_profile, team_home=team_home, change_windows=windows, change_docs=change_docs,
    )


def action_tables() -> tuple[np.ndarray, np.ndarray]:
    """Per resource type: cumulative action probabilities (T, 5) and action index per column."""
    cum = np.zeros((len(RES_TYPES), len(ACTIONS)))
    for t, mix in _ACTION_MIX.items():
        p = np.array([mix.get(a, 0.0) for a in ACTIONS])
        cum[RES_TYPES.index(t)] = np.cumsum(p / p.sum())
    cum[:, -1] = 1.0
    return cum, np.arange(len(ACTIONS))


CATEGORY_BY_TYPE = [_CATEGORY[t] for t in RES_TYPES]
