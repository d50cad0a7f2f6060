"""Pull against a real ``docker-registry``: progress, resume, sharing and every bad outcome."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from power.errors import RegistryError
from power.registry import RegistryService, pull
from power.registry.parts import DiskError, pwritev
from power.store.store import ModelStore
from tests.support.net import free_port
from tests.support.proxy import proxy
from tests.support.registry import (
    PASSWORD,
    USER,
    Registry,
    collect_progress,
    make_service,
    publish_tiny,
    sha256,
)
from tests.support.synth import write_llama_gguf

pytestmark = pytest.mark.anyio


def store_files(store: ModelStore) -> list[str]:
    return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())


async def test_pull_progress_manifest_and_blobs(
    registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    raw = publish_tiny(registry, tiny_gguf)
    svc = make_service(tmp_path)
    events = await collect_progress(pull(svc, f"{registry.host}/library/tiny", insecure=True))

    statuses = [e["status"] for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    manifest = json.loads(raw)
    wanted = [x["digest"] for x in [*manifest["layers"], manifest["config"]]]
    pulled = [e["digest"] for e in events if "digest" in e]
    assert list(dict.fromkeys(pulled)) == wanted  # layer order, then the config
    for e in events:
        if "digest" in e:
            assert e["status"] == f"pulling {e['digest'][7:19]}"
            assert e.get("completed", 1) != 0  # omitted while zero
    final = {e["digest"]: e for e in events if "digest" in e}
    assert all(e["completed"] == e["total"] for e in final.values())

    name = svc.store.resolve(f"{registry.host}/library/tiny:latest")
    assert svc.store.manifest_path(name).read_bytes() == raw  # verbatim
    assert svc.store.read_blob(wanted[0]) == tiny_gguf
    assert not list(svc.store.blobs_dir.glob("*partial*"))

    again = await collect_progress(pull(svc, f"{registry.host}/library/tiny", insecure=True))
    layers = [e for e in again if "digest" in e]
    assert len(layers) == len(wanted)  # one line each: already present
    assert all(e["completed"] == e["total"] for e in layers)


async def test_parallel_parts(registry: Registry, tiny_gguf: bytes, tmp_path: Path) -> None:
    publish_tiny(registry, tiny_gguf)
    svc = make_service(tmp_path, part_min=100_000)  # ~16 parts
    await collect_progress(pull(svc, f"{registry.host}/library/tiny", insecure=True))
    assert svc.store.read_blob(sha256(tiny_gguf)) == tiny_gguf


async def test_unknown_model_leaves_store_alone(registry: Registry, tmp_path: Path) -> None:
    svc = make_service(tmp_path)
    before = store_files(svc.store)
    with pytest.raises(RegistryError, match=r"^pull model manifest: file does not exist$"):
        await collect_progress(pull(svc, f"{registry.host}/library/nope", insecure=True))
    assert store_files(svc.store) == before


async def test_registry_down(tmp_path: Path) -> None:
    svc = make_service(tmp_path)
    with pytest.raises(RegistryError, match="pull model manifest: "):
        await collect_progress(pull(svc, f"127.0.0.1:{free_port()}/library/tiny", insecure=True))
    assert store_files(svc.store) == []


async def test_https_is_the_default(registry: Registry, tmp_path: Path) -> None:
    svc = make_service(tmp_path)
    with pytest.raises(RegistryError, match="pull model manifest"):  # TLS to a plain-http port
        await collect_progress(pull(svc, f"{registry.host}/library/tiny", insecure=False))
    with pytest.raises(RegistryError, match="insecure protocol http"):
        await collect_progress(pull(svc, f"http://{registry.host}/library/tiny", insecure=False))


async def test_digest_mismatch(registry: Registry, tiny_gguf: bytes, tmp_path: Path) -> None:
    publish_tiny(registry, tiny_gguf)
    blob = registry.blob_file(sha256(tiny_gguf))
    tampered = bytearray(blob.read_bytes())
    tampered[-1] ^= 0xFF
    blob.write_bytes(bytes(tampered))
    svc = make_service(tmp_path, max_tries=1)
    with pytest.raises(RegistryError, match="digest mismatch, file must be downloaded again"):
        await collect_progress(pull(svc, f"{registry.host}/library/tiny", insecure=True))
    assert not svc.store.has_blob(sha256(tiny_gguf))
    assert not list(svc.store.blobs_dir.glob("*partial*"))
    assert not list(svc.store.manifests_dir.rglob("latest"))


async def test_concurrent_pulls_share_one_download(
    registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    publish_tiny(registry, tiny_gguf)
    with proxy(registry.port, rate=4_000_000) as p:
        svc = make_service(tmp_path)
        name = f"{p.host}/library/tiny"
        a, b = await asyncio.gather(
            collect_progress(pull(svc, name, insecure=True)),
            collect_progress(pull(svc, name, insecure=True)),
        )
    assert a[-1] == b[-1] == {"status": "success"}
    assert len(tiny_gguf) <= p.downstream < 1.5 * len(tiny_gguf)


async def test_resume_after_interrupted_pull(
    registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    publish_tiny(registry, tiny_gguf)
    digest = sha256(tiny_gguf)
    with proxy(registry.port, rate=150_000) as p:  # per connection: 8 parts, ~1.3 s in all
        svc = make_service(tmp_path, part_min=200_000)
        progress = pull(svc, f"{p.host}/library/tiny", insecure=True)
        async for e in progress:
            if e.get("digest") == digest and e.get("completed", 0) > len(tiny_gguf) // 2:
                break
        await progress.aclose()  # the only follower left: the transfer pauses
        states = list(svc.store.blobs_dir.glob("*-partial-*"))
        assert states
        on_disk = sum(json.loads(s.read_bytes())["Completed"] for s in states)
        assert on_disk > len(tiny_gguf) // 2
        before = p.downstream
        p.rate = 0
        await collect_progress(pull(svc, f"{p.host}/library/tiny", insecure=True))
        again = p.downstream - before
    assert svc.store.read_blob(digest) == tiny_gguf
    # Only what was missing. Slack: the proxy may still push one 16 KiB chunk per connection
    # (16 parts) into sockets the first pull had already closed, and counts it.
    assert again < len(tiny_gguf) - on_disk + 16 * 2 * 16_384 + 50_000
    assert not list(svc.store.blobs_dir.glob("*partial*"))


async def test_basic_auth_from_docker_config(
    auth_registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    publish_tiny(auth_registry, tiny_gguf)
    svc = make_service(tmp_path)
    with pytest.raises(RegistryError, match="unauthorized: access denied"):
        await collect_progress(pull(svc, f"{auth_registry.host}/library/tiny", insecure=True))
    docker = tmp_path / "docker"
    docker.mkdir()
    import base64

    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (docker / "config.json").write_text(
        json.dumps({"auths": {auth_registry.host: {"auth": token}}})
    )
    svc = RegistryService(
        svc.store, home=tmp_path / "home", env={"DOCKER_CONFIG": str(docker)}, catalog={}
    )
    events = await collect_progress(pull(svc, f"{auth_registry.host}/library/tiny", insecure=True))
    assert events[-1] == {"status": "success"}


def test_many_small_chunks_in_one_write(tmp_path: Path) -> None:
    chunks = [bytes([i % 251]) * (i % 7 + 1) for i in range(3000)]  # more than IOV_MAX
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        pwritev(fd, chunks, 5)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"\0" * 5 + b"".join(chunks)


def test_disk_full_is_not_retried() -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(DiskError, match="no space left on device"):
            pwritev(fd, [b"x" * 10], 0)
    finally:
        os.close(fd)


async def test_repull_of_a_changed_model_removes_unused_layers(
    registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    publish_tiny(registry, tiny_gguf)
    svc = make_service(tmp_path)
    name = f"{registry.host}/library/tiny"
    await collect_progress(pull(svc, name, insecure=True))
    newer = write_llama_gguf(tmp_path / "v2.gguf", dtype="f16", seed=9).read_bytes()
    publish_tiny(registry, newer)
    events = await collect_progress(pull(svc, name, insecure=True))
    statuses = [e["status"] for e in events]
    assert statuses[-3:] == ["writing manifest", "removing unused layers", "success"]
    assert not svc.store.has_blob(sha256(tiny_gguf))
    assert svc.store.has_blob(sha256(newer))


def leave_ollama_partial(svc: RegistryService, data: bytes, saved: list[int]) -> list[Path]:
    """The files a killed Ollama (or power) pull leaves: the sparse ``-partial`` and per-part
    state ``{"N","Offset","Size","Completed"}``; part i has its first ``saved[i]`` bytes."""
    size = -(-len(data) // len(saved))
    partial = svc.store.blob_path(sha256(data)).with_name(f"sha256-{sha256(data)[7:]}-partial")
    with partial.open("wb") as f:
        f.truncate(len(data))
        for n, done in enumerate(saved):
            f.seek(n * size)
            f.write(data[n * size : n * size + done])
    for n, done in enumerate(saved):
        state = {"N": n, "Offset": n * size, "Size": min(size, len(data) - n * size)}
        state["Completed"] = done
        Path(f"{partial}-{n}").write_text(json.dumps(state))
    return [partial, *(Path(f"{partial}-{n}") for n in range(len(saved)))]


async def test_resume_from_saved_parts_hashes_what_is_on_disk(
    registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    publish_tiny(registry, tiny_gguf)
    svc = make_service(tmp_path)
    size = -(-len(tiny_gguf) // 4)
    leave_ollama_partial(svc, tiny_gguf, [size, size // 3, 0, 1000])
    with proxy(registry.port) as p:
        events = await collect_progress(pull(svc, f"{p.host}/library/tiny", insecure=True))
        fetched = p.downstream
    await svc.aclose()
    assert events[-1] == {"status": "success"}
    assert svc.store.read_blob(sha256(tiny_gguf)) == tiny_gguf
    assert fetched < len(tiny_gguf) - size - size // 3 + 100_000  # only the missing bytes
    assert not list(svc.store.blobs_dir.glob("*partial*"))
    assert not list(svc.store.blobs_dir.glob("*-unsynced"))  # fsynced, marker gone


@pytest.mark.parametrize("where", ["saved prefix", "saved later part"])
async def test_a_corrupted_saved_byte_fails_verification_and_leaves_nothing(
    registry: Registry, tiny_gguf: bytes, tmp_path: Path, where: str
) -> None:
    publish_tiny(registry, tiny_gguf)
    svc = make_service(tmp_path, max_tries=1)
    size = -(-len(tiny_gguf) // 4)
    files = leave_ollama_partial(svc, tiny_gguf, [size, 0, size // 2, 0])
    offset = 100 if where == "saved prefix" else 2 * size + 100
    with files[0].open("r+b") as f:  # bit rot in bytes the state says are done
        f.seek(offset)
        f.write(bytes([tiny_gguf[offset] ^ 0x01]))
    name = f"{registry.host}/library/tiny"
    with pytest.raises(RegistryError, match="digest mismatch, file must be downloaded again"):
        await collect_progress(pull(svc, name, insecure=True))
    assert not svc.store.has_blob(sha256(tiny_gguf))
    assert not list(svc.store.blobs_dir.glob(f"sha256-{sha256(tiny_gguf)[7:]}*"))
    assert not list(svc.store.manifests_dir.rglob("latest"))
    events = await collect_progress(pull(svc, name, insecure=True))  # a fresh start then succeeds
    assert events[-1] == {"status": "success"}
    assert svc.store.read_blob(sha256(tiny_gguf)) == tiny_gguf
    await svc.aclose()


async def test_a_pulled_blob_is_fsynced_after_the_pull(
    registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    publish_tiny(registry, tiny_gguf)
    svc = make_service(tmp_path)
    await collect_progress(pull(svc, f"{registry.host}/library/tiny", insecure=True))
    await svc.aclose()  # what the app's shutdown awaits
    assert not list(svc.store.blobs_dir.glob("*-unsynced"))
    assert svc.store.read_blob(sha256(tiny_gguf)) == tiny_gguf
