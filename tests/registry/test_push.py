"""Push to a real ``docker-registry`` and pull back byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from power.create.build import create_model
from power.errors import ModelNotFoundError
from power.registry import RegistryService, pull, push
from power.store.store import ModelStore
from tests.support.registry import Registry, collect_progress, local_model, make_service, sha256

pytestmark = pytest.mark.anyio


async def test_push_then_pull_round_trips(
    registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    svc = make_service(tmp_path / "a", part_min=300_000)  # several PATCH parts
    name = f"{registry.host}/alice/tiny:v1"
    raw = local_model(svc.store, tiny_gguf, name)
    events = await collect_progress(push(svc, name, insecure=True))
    statuses = [e["status"] for e in events]
    assert statuses[0] == "retrieving manifest"
    assert statuses[-2:] == ["pushing manifest", "success"]
    manifest = json.loads(raw)
    layers = [*manifest["layers"], manifest["config"]]
    pushed = [e["digest"] for e in events if "digest" in e]
    assert list(dict.fromkeys(pushed)) == [x["digest"] for x in layers]
    assert all(e["status"] == f"pushing {e['digest'][7:19]}" for e in events if "digest" in e)
    last = {e["digest"]: e for e in events if "digest" in e}
    assert all(e["completed"] == e["total"] for e in last.values())
    assert registry.blob_file(sha256(tiny_gguf)).read_bytes() == tiny_gguf

    again = await collect_progress(push(svc, name, insecure=True))  # everything already there
    assert all(e["completed"] == e["total"] for e in again if "digest" in e)

    other = make_service(tmp_path / "b")
    await collect_progress(pull(other, name, insecure=True))
    assert other.store.read_manifest_bytes(name) == raw
    for layer in layers:
        assert other.store.read_blob(layer["digest"]) == svc.store.read_blob(layer["digest"])


async def test_push_mounts_blobs_from_another_repository(
    registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    svc = make_service(tmp_path)
    first = f"{registry.host}/alice/base:latest"
    local_model(svc.store, tiny_gguf, first)
    await collect_progress(push(svc, first, insecure=True))
    derived = f"{registry.host}/bob/derived:latest"
    list(create_model(svc.store, derived, {"from": first, "system": "other"}))
    events = await collect_progress(push(svc, derived, insecure=True))
    (model,) = [e for e in events if e.get("digest") == sha256(tiny_gguf)]  # one line: mounted
    assert model["completed"] == model["total"]
    assert events[-1] == {"status": "success"}


async def test_push_missing_model(registry: Registry, tmp_path: Path) -> None:
    svc: RegistryService = make_service(tmp_path)
    progress = push(svc, f"{registry.host}/alice/none", insecure=True)
    assert await anext(progress) == {"status": "retrieving manifest"}
    assert await anext(progress) == {"status": "couldn't retrieve manifest"}
    with pytest.raises(ModelNotFoundError):
        await anext(progress)


async def test_push_with_basic_auth(
    auth_registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "auth.json").write_text(
        json.dumps({"auths": {auth_registry.host: {"username": "alice", "password": "s3cret-pw"}}})
    )
    store = ModelStore(tmp_path / "models")
    svc = RegistryService(store, home=home, env={}, catalog={})
    name = f"{auth_registry.host}/alice/tiny:latest"
    local_model(store, tiny_gguf, name)
    events = await collect_progress(push(svc, name, insecure=True))
    assert events[-1] == {"status": "success"}
