"""``resolve_options``: numbers are range-checked and thread counts fit the machine."""

from __future__ import annotations

import os
from typing import Any

import msgspec
import pytest

from power.errors import InvalidRequestError
from power.options import Resolved, resolve_options
from power.settings import Settings
from proto import Generate, Load


def resolve(**options: Any) -> Resolved:
    return resolve_options(Settings(), model_path="m.gguf", model_params=None, request=options)


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def test_num_thread_beyond_the_usable_cpus_is_clamped_to_them() -> None:
    assert resolve(num_thread=100000).load.n_threads == usable_cpus()
    assert resolve(num_thread=20000.0).load.n_threads == usable_cpus()
    assert resolve(num_thread=1).load.n_threads == 1
    assert 1 <= resolve().load.n_threads <= usable_cpus()
    assert 1 <= resolve(num_thread=-5).load.n_threads <= usable_cpus()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("num_ctx", 2**70),
        ("num_ctx", 1e308),
        ("num_ctx", float("inf")),
        ("num_ctx", float("nan")),
        ("num_batch", 2**64),
        ("num_gpu", -(2**63) - 1),
        ("num_thread", 2**31),
        ("num_predict", 123456789012345678901234567890),
        ("num_keep", -(2**31) - 1),
        ("top_k", 2**32 + 1),
        ("repeat_last_n", 1e30),
        ("seed", 2**64),
        ("temperature", 1e308),
        ("top_p", -3.5e38),
        ("repeat_penalty", float("inf")),
        ("min_p", float("nan")),
    ],
)
def test_numbers_out_of_range_are_400s_naming_the_option(name: str, value: Any) -> None:
    with pytest.raises(InvalidRequestError, match=f'option "{name}" is out of range'):
        resolve(**{name: value})


def test_numbers_in_range_reach_the_runner_messages() -> None:
    r = resolve(num_ctx=2**31 - 1, num_predict=-(2**31), seed=2**63 - 1, temperature=3.4e38)
    assert (r.load.n_ctx, r.num_predict, r.sampling.seed) == (2**31 - 1, -(2**31), 2**63 - 1)
    # every value fits the wire format (msgpack refuses integers past 64 bits)
    msgspec.msgpack.encode(Load(params=r.load))
    msgspec.msgpack.encode(Generate(id=1, sampling=r.sampling, num_predict=r.num_predict))


@pytest.mark.parametrize(
    ("default", "model", "asked", "expected"),
    [
        (-1, {}, None, -1),  # auto: as many layers as fit
        (999, {}, None, 999),  # OLLAMA_NUM_GPU
        (0, {}, None, 0),
        (999, {"num_gpu": 10}, None, 10),  # the model's PARAMETER wins over the env
        (999, {"num_gpu": 10}, {"num_gpu": 0}, 0),  # and the request over both
    ],
)
def test_ollama_num_gpu_is_the_default_layer_count(
    default: int, model: dict[str, Any], asked: dict[str, Any] | None, expected: int
) -> None:
    resolved = resolve_options(
        Settings(num_gpu=default), model_path="m.gguf", model_params=model, request=asked
    )
    assert resolved.load.n_gpu_layers == expected


@pytest.mark.parametrize(("context_length", "expected"), [(0, 4096), (32768, 32768)])
def test_num_ctx_defaults_to_the_resolved_context_length(
    context_length: int, expected: int
) -> None:
    settings = Settings(context_length=context_length)
    resolved = resolve_options(settings, model_path="m.gguf", model_params={}, request=None)
    assert resolved.load.n_ctx == expected
