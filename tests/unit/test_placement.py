"""GPU placement: one GPU when the model fits there, a layer split otherwise (always with
OLLAMA_SCHED_SPREAD), a partial offload when even all GPUs are too small; CUDA's device order."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from power.supervisor.memory import (
    SPLIT_LAYER,
    SPLIT_NONE,
    Estimate,
    Gpu,
    place,
    probe_machine,
    visible_order,
)

GIB = 2**30
# 10 blocks of 0.5 GiB (weights + KV), 1 GiB of compute buffers: 6 GiB on a GPU in all
EST = Estimate(weights=4 * GIB, kv_cache=1 * GIB, compute=1 * GIB, n_layers=10)


def gpus(*free_gib: float) -> tuple[Gpu, ...]:
    return tuple(Gpu(i, f"GPU {i}", 24 * GIB, int(f * GIB), "cuda") for i, f in enumerate(free_gib))


def test_no_gpu_or_num_gpu_0_keeps_everything_on_the_cpu() -> None:
    assert place(EST, (), overhead=0, spread=False).n_gpu_layers == 0
    none = place(EST, gpus(20), overhead=0, spread=False, layers=0)
    assert (none.n_gpu_layers, none.on_gpu) == (0, 0)


def test_a_model_that_fits_one_gpu_goes_whole_onto_the_roomiest_one() -> None:
    got = place(EST, gpus(7, 12, 9), overhead=0, spread=False)
    assert (got.n_gpu_layers, got.main_gpu, got.split_mode) == (11, 1, SPLIT_NONE)
    assert got.whole
    assert got.on_gpu == 6 * GIB


def test_sched_spread_splits_by_layer_over_every_gpu_by_free_memory() -> None:
    got = place(EST, gpus(10, 30), overhead=0, spread=True)
    assert (got.n_gpu_layers, got.split_mode) == (11, SPLIT_LAYER)
    assert got.tensor_split == pytest.approx((0.25, 0.75))


def test_a_model_too_big_for_any_one_gpu_is_split_when_together_they_hold_it() -> None:
    got = place(EST, gpus(4, 4), overhead=0, spread=False)
    assert (got.n_gpu_layers, got.split_mode, got.whole) == (11, SPLIT_LAYER, True)
    assert got.tensor_split == pytest.approx((0.5, 0.5))


def test_overhead_is_reserved_on_each_gpu_and_the_rest_is_a_partial_offload() -> None:
    got = place(EST, gpus(4, 4), overhead=1 * GIB, spread=False)  # 6 GiB of room for 6 needed
    assert got.whole
    got = place(EST, gpus(3.5, 3.5), overhead=1 * GIB, spread=False)  # 5 GiB: 8 blocks
    assert (got.n_gpu_layers, got.whole) == (8, False)
    assert got.on_gpu == 8 * (GIB // 2) + 1 * GIB


def test_num_gpu_and_main_gpu_from_the_user_are_obeyed() -> None:
    got = place(EST, gpus(20, 20), overhead=0, spread=False, layers=3)
    assert (got.n_gpu_layers, got.split_mode) == (3, SPLIT_LAYER)
    pinned = place(EST, gpus(20, 10), overhead=0, spread=False, main_gpu=1)
    assert (pinned.main_gpu, pinned.split_mode) == (1, SPLIT_NONE)


def test_cuda_visible_devices_selects_and_orders_what_a_runner_sees() -> None:
    all4 = list(gpus(1, 2, 3, 4))
    assert [g.index for g in visible_order(all4, None)] == [0, 1, 2, 3]
    assert [g.index for g in visible_order(all4, "3,1")] == [3, 1]
    assert [g.index for g in visible_order(all4, "2,9,0")] == [2]  # CUDA stops at a bad id
    assert [g.index for g in visible_order(all4, "GPU-1234abcd")] == [0, 1, 2, 3]


def test_the_probe_reads_gpus_and_per_process_vram_from_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        '  --query-gpu=*) printf "0, Test A, 24576, 20000\\n1, Test B, 81920, 80000\\n" ;;\n'
        '  --query-compute-apps=*) printf "4242, 1024\\n4242, 512\\n77, 2048\\n" ;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    machine = probe_machine()
    assert [(g.index, g.name, g.free // 2**20) for g in machine.gpus] == [
        (1, "Test B", 80000),
        (0, "Test A", 20000),
    ]
    assert machine.vram_by_pid == {4242: 1536 * 2**20, 77: 2048 * 2**20}
