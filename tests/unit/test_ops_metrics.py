"""What a `/metrics` scrape costs and keeps: one GPU probe (an ``nvidia-smi`` process) serves
every scrape for a while and all those that arrive while it runs, and the series of a deleted
model go with it while every other model's stay."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from power.metrics import GPU_PROBE_TTL_S, Metrics
from power.settings import Settings
from power.supervisor.memory import Gpu
from tests.support.app import TestClient, app_client, scripted_store
from tests.support.runners import ScriptedRunners

GPU = Gpu(index=0, name="gpu", total=8 << 30, free=6 << 30, library="cuda", utilization=0.5)


class Probe:
    """A GPU probe that counts its calls and, once ``release`` is set, answers one GPU."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def __call__(self) -> tuple[Gpu, ...]:
        self.calls += 1
        assert self.release.wait(30)
        return (GPU,)


@pytest.mark.anyio
async def test_concurrent_scrapes_share_one_gpu_probe() -> None:
    probe = Probe()
    metrics = Metrics(Settings(), gpu_probe=probe)
    scrapes = [asyncio.create_task(metrics.refresh(ScriptedRunners())) for _ in range(8)]
    await asyncio.sleep(0)  # each runs up to its wait for the GPUs
    probe.release.set()
    await asyncio.gather(*scrapes)
    assert probe.calls == 1
    total = {"device": "0", "kind": "total"}
    assert metrics.registry.get_sample_value("power_gpu_memory_bytes", total) == 8 << 30


@pytest.mark.anyio
async def test_one_scrape_giving_up_leaves_the_probe_to_the_others() -> None:
    probe = Probe()
    metrics = Metrics(Settings(), gpu_probe=probe)
    first = asyncio.create_task(metrics.refresh(ScriptedRunners()))
    second = asyncio.create_task(metrics.refresh(ScriptedRunners()))
    await asyncio.sleep(0)
    first.cancel()  # its client went away
    probe.release.set()
    await second
    assert first.cancelled()
    assert probe.calls == 1


@pytest.mark.anyio
async def test_the_gpus_are_probed_again_once_the_last_probe_is_old() -> None:
    probe, now = Probe(), [100.0]
    probe.release.set()
    metrics = Metrics(Settings(), gpu_probe=probe, clock=lambda: now[0])
    await metrics.refresh(ScriptedRunners())
    now[0] += GPU_PROBE_TTL_S / 2
    await metrics.refresh(ScriptedRunners())
    assert probe.calls == 1
    now[0] += GPU_PROBE_TTL_S
    await metrics.refresh(ScriptedRunners())
    assert probe.calls == 2


def series(client: TestClient, model: str) -> list[str]:
    text = client.get("/metrics").text
    return [line for line in text.splitlines() if f'model="{model}"' in line]


def generate(client: TestClient, model: str) -> None:
    body = {"model": model, "prompt": "hi", "stream": False}
    assert client.post("/api/generate", json=body).status_code == 200


def test_a_deleted_models_series_go_and_the_others_stay(tmp_path: Path) -> None:
    store = scripted_store(tmp_path)
    with app_client(Settings(home=str(tmp_path)), ScriptedRunners(), store) as client:
        generate(client, "plain")
        kept = series(client, "plain:latest")
        assert kept
        for i in range(3):  # what a client can repeat without end
            name = f"junk{i}"
            assert client.post(
                "/api/copy", json={"source": "plain", "destination": name}
            ).is_success
            generate(client, name)
            assert series(client, f"{name}:latest")
            assert client.request("DELETE", "/api/delete", json={"model": name}).is_success
            assert series(client, f"{name}:latest") == []
        assert series(client, "plain:latest") == kept  # counts and all
        generate(client, "plain")
        count = "power_inference_duration_seconds_count"
        assert f'{count}{{model="plain:latest"}} 2.0' in series(client, "plain:latest")
