"""msgspec state records of the detectors, in a module mypyc does not compile.

mypyc builds these non-native classes without their class keywords, so a
compiled ``array_like=True`` Struct would (de)serialise as a map: states written
by the pure-Python and the compiled build would not read each other.
"""

from __future__ import annotations

import math

import msgspec


# change.py
class _ChangeState(msgspec.Struct, array_like=True):
    version: int
    n: list[int]
    mean: list[float]
    var: list[float]
    fast: list[float]
    hi: list[float]
    lo: list[float]
    deploys: int


# drift.py
class _DriftState(msgspec.Struct, array_like=True):
    version: int
    deploys: int
    n: int
    model_version: str | None
    pred_kind: int
    classes: list[str]
    features: list[str]
    buf: bytes
    buf_len: int
    active: int
    edges: bytes
    ref: bytes
    cur: bytes
    s2: bytes
    callers: list[str]
    counts: bytes
    hists: bytes
    # version 2
    scale: float = 1.0
    elig: int = 0
    pv: list[float] = []
    over: list[int] = []
    rts: float = -math.inf


# extraction.py
class _State(msgspec.Struct, array_like=True):
    version: int
    n: int
    win: int
    # version 3: integral sums as msgpack integers (1-5 bytes instead of 9)
    cur: list[int | float]
    prev: list[int | float]
    obs: int
    mean: list[float]
    var: list[float]
    nwin: list[int]
    fp_dim: int
    fp_n: int
    alt_dim: int
    alt_run: int
    mu: bytes
    sd: bytes
    res: bytes
    res_len: int
    res_pos: int
    md: bytes
    md_len: int
    md_pos: int
    bm_cur: bytes
    bm_prev: bytes
    nov_ring: int
    nov_len: int
    nov_s: float
    nov_n: float
    cv_mean: float
    cv_var: float
    cv_n: int
    w_mean: float
    w_var: float
    w_n: int
    lvl_mean: float
    lvl_var: float
    lvl_n: int
    # version 2: the shape statistics of the last computation (see shape_every)
    sh_new: int = 0
    sh: bytes = b""
