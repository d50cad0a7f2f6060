"""power.supervisor.policy: reuse, eviction order and expiry as pure functions."""

from __future__ import annotations

import math

import pytest

from power.supervisor.policy import (
    RunnerSnapshot,
    eviction_order,
    expiry_deadline,
    pick_victim,
    serves,
)
from proto import LoadParams


def snap(name: str, refcount: int = 0, keep: float = 300.0, used: float = 0.0) -> RunnerSnapshot:
    return RunnerSnapshot(key=name, name=name, refcount=refcount, keep_alive_s=keep, last_used=used)


def test_idle_runners_go_before_busy_ones_then_shortest_keep_alive_then_lru() -> None:
    runners = [
        snap("busy", refcount=2, keep=1.0),
        snap("forever", keep=math.inf, used=0.0),
        snap("old", keep=300.0, used=1.0),
        snap("recent", keep=300.0, used=9.0),
        snap("short", keep=10.0, used=99.0),
    ]
    assert [r.name for r in eviction_order(runners)] == [
        "short",
        "old",
        "recent",
        "forever",
        "busy",
    ]


def test_a_runner_with_requests_in_flight_is_never_the_victim() -> None:
    assert pick_victim([snap("a", refcount=1), snap("b", refcount=3)]) is None
    victim = pick_victim([snap("a", refcount=1), snap("b")])
    assert victim is not None
    assert victim.name == "b"


@pytest.mark.parametrize(
    ("keep", "expected"), [(300.0, 310.0), (0.0, 10.0), (-5.0, 10.0), (math.inf, None)]
)
def test_expiry_deadline(keep: float, expected: float | None) -> None:
    assert expiry_deadline(10.0, keep) == expected


BASE = LoadParams(model_path="/m.gguf", n_ctx=4096, n_gpu_layers=-1)


@pytest.mark.parametrize(
    ("wanted", "ok"),
    [
        (BASE, True),
        (LoadParams(model_path="/m.gguf", n_ctx=2048, n_gpu_layers=-1), True),  # smaller ctx
        (LoadParams(model_path="/m.gguf", n_ctx=8192, n_gpu_layers=-1), False),
        (LoadParams(model_path="/m.gguf", n_ctx=4096, n_gpu_layers=0), False),
        (LoadParams(model_path="/m.gguf", n_ctx=4096, use_mlock=True, n_gpu_layers=-1), False),
        (LoadParams(model_path="/other.gguf", n_ctx=4096, n_gpu_layers=-1), False),
        (LoadParams(model_path="/m.gguf", n_ctx=4096, n_batch=128, n_gpu_layers=-1), False),
    ],
)
def test_which_loaded_runner_serves_which_request(wanted: LoadParams, ok: bool) -> None:
    assert serves(BASE, wanted) is ok
