"""A runner's load: its progress on the way to the gateway, what llama.cpp's log says it placed,
and the outbox's end."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from proto import (
    ConnectionClosed,
    FrameReader,
    FrameWriter,
    Msg,
    Pong,
    Progress,
    gateway_decoder,
)
from runner.outbox import Outbox
from runner.placement import Placement
from runner.progress import PROGRESS_INTERVAL_S, LoadProgress

MIB = 1 << 20


def test_progress_goes_out_a_few_times_a_second_at_most_and_says_stop_once_stopping() -> None:
    sent: list[Msg] = []
    now = 100.0
    stopping = threading.Event()
    report = LoadProgress(sent.append, stopping, clock=lambda: now)
    assert report(0.0)  # the first goes out at once
    now += PROGRESS_INTERVAL_S / 2
    assert report(0.1)  # too soon after it: dropped
    now += PROGRESS_INTERVAL_S / 2
    assert report(0.2)
    now += PROGRESS_INTERVAL_S
    assert report(1.5)  # (a fraction is never more than 1)
    assert sent == [Progress(fraction=0.0), Progress(fraction=0.2), Progress(fraction=1.0)]
    stopping.set()
    assert report(1.0) is False


# What llama.cpp 0.3.36 logs while it loads (formats from its source; the CPU lines as seen).
CUDA_LOAD_LOG = [
    "llama_model_loader: - kv   0:                       general.architecture str = llama\n",
    "load_tensors: offloading output layer to GPU\n",
    "load_tensors: offloading 29 repeating layers to GPU\n",
    "load_tensors: offloaded 31/31 layers to GPU\n",
    "load_tensors:   CPU_Mapped model buffer size =    28.12 MiB\n",
    "load_tensors:        CUDA0 model buffer size =   812.00 MiB\n",
    "llama_context:  CUDA_Host  output buffer size =     0.19 MiB\n",
    "llama_kv_cache:      CUDA0 KV buffer size =    11.25 MiB\n",
    "sched_reserve:      CUDA0 compute buffer size =    98.25 MiB\n",
    "sched_reserve:  CUDA_Host compute buffer size =     5.01 MiB\n",
    "sched_reserve:      CUDA0 compute buffer size =   100.00 MiB\n",  # reserved again
    "llama_adapter_lora_init_impl:        CUDA0 LoRA buffer size =     2.50 MiB\n",
    "reserve_compute_meta:      CUDA0 compute buffer size =    20.00 MiB\n",  # a projector's
]


def test_the_vram_placed_is_the_size_of_the_buffers_in_a_gpus_own_memory() -> None:
    placed = Placement()
    for line in CUDA_LOAD_LOG:
        placed.feed(line)
    assert placed.gpu_layers == 31
    assert placed.bytes_on({"CUDA0"}) == round((812 + 11.25 + 100 + 2.5 + 20) * MIB)
    assert placed.bytes_on({"CUDA_Host", "CPU_Mapped"}) == round((28.12 + 0.19 + 5.01) * MIB)
    assert placed.bytes_on(frozenset()) == 0  # no GPU: nothing is VRAM
    assert placed.describe().startswith("CPU_Mapped model 28.1 MiB, CUDA0 model 812.0 MiB")


def test_a_cpu_load_places_nothing_on_a_gpu() -> None:
    placed = Placement()
    for line in [
        "load_tensors:   CPU_Mapped model buffer size =    92.10 MiB\n",
        "llama_context:        CPU  output buffer size =     0.19 MiB\n",
        "llama_kv_cache:        CPU KV buffer size =    11.25 MiB\n",
        "sched_reserve:        CPU compute buffer size =    98.25 MiB\n",
    ]:
        placed.feed(line)
    assert placed.gpu_layers == 0
    assert placed.bytes_on({"CUDA0"}) == 0
    assert placed.bytes_on({"CPU", "CPU_Mapped"}) == round((92.10 + 0.19 + 11.25 + 98.25) * MIB)


@pytest.mark.anyio
async def test_once_closed_the_outbox_drops_what_is_pushed() -> None:
    ours, theirs = socket.socketpair()
    _, writer = await asyncio.open_unix_connection(sock=ours)
    reader, peer = await asyncio.open_unix_connection(sock=theirs)
    try:
        box = Outbox(FrameWriter(writer), asyncio.get_running_loop())
        box.push_threadsafe(Pong(id=1))  # queued: aclose sends it first
        await box.aclose()
        assert box.closed
        box.push(Pong(id=2))
        box.push_threadsafe(Pong(id=3))
        await box.aclose()  # (idempotent)
        frames = FrameReader(reader, gateway_decoder())
        assert await frames.read() == Pong(id=1)
        with pytest.raises(ConnectionClosed):
            await frames.read()
    finally:
        peer.close()
        await peer.wait_closed()
