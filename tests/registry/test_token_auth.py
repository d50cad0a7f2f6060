"""Bearer token auth against the real ``docker-registry`` (``auth: token``), with the realm served
by the test: pull, push, cross-repository mounts and every refusal."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from power.create.build import create_model
from power.errors import RegistryError
from power.registry import RegistryService, pull, push
from power.store.store import ModelStore
from tests.support.registry import (
    PASSWORD,
    USER,
    Registry,
    collect_progress,
    local_model,
    publish_tiny,
    sha256,
)
from tests.support.token_realm import SERVICE, TokenIssuer, serve_tokens

pytestmark = pytest.mark.anyio


def service(tmp_path: Path, reg: Registry, *, password: str | None) -> RegistryService:
    """A service whose store is ``tmp_path/models``; ``password`` None means no credentials."""
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    if password is not None:
        auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
        (home / "auth.json").write_text(json.dumps({"auths": {reg.host: {"auth": auth}}}))
    return RegistryService(ModelStore(tmp_path / "models"), home=home, env={}, catalog={})


def issuer(reg: Registry) -> TokenIssuer:
    assert reg.tokens is not None
    return reg.tokens


async def pull_tiny_with_a_token(reg: Registry, tiny_gguf: bytes, tmp_path: Path) -> TokenIssuer:
    """Publish the tiny model, pull it with credentials the realm accepts, and check it
    arrived whole; the realm, for what it was asked."""
    publish_tiny(reg, tiny_gguf)
    tokens = issuer(reg)
    tokens.users = {USER: PASSWORD}
    tokens.allowed = {"library/tiny": {"pull"}}
    svc = service(tmp_path, reg, password=PASSWORD)
    async with serve_tokens(tokens):
        events = await collect_progress(pull(svc, f"{reg.host}/library/tiny", insecure=True))
    await svc.aclose()
    assert events[-1] == {"status": "success"}
    assert svc.store.read_blob(sha256(tiny_gguf)) == tiny_gguf
    return tokens


async def test_pull_with_a_bearer_token(
    token_registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    tokens = await pull_tiny_with_a_token(token_registry, tiny_gguf, tmp_path)
    asked = tokens.requests[0]
    assert asked["service"] == SERVICE
    assert asked["scope"] == "repository:library/tiny:pull"
    assert asked["authorization"].startswith("Basic ")
    assert asked["ts"].isdigit()
    assert asked["nonce"]


async def test_a_netrc_entry_for_the_registry_does_not_break_token_auth(
    token_registry: Registry, tiny_gguf: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proxies come from the environment, but ~/.netrc is not read (aiohttp's trust_env would
    read it and then refuse the registry's own Authorization header)."""
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine {token_registry.host.split(':')[0]} login me password other\n")
    monkeypatch.setenv("NETRC", str(netrc))
    await pull_tiny_with_a_token(token_registry, tiny_gguf, tmp_path)


async def test_push_with_a_bearer_token_and_a_mount(
    token_registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    tokens = issuer(token_registry)
    tokens.users = {USER: PASSWORD}
    tokens.allowed = {"alice/base": {"pull", "push"}, "alice/derived": {"pull", "push"}}
    svc = service(tmp_path, token_registry, password=PASSWORD)
    base = f"{token_registry.host}/alice/base:latest"
    local_model(svc.store, tiny_gguf, base)
    derived = f"{token_registry.host}/alice/derived:latest"
    list(create_model(svc.store, derived, {"from": base, "system": "other"}))
    async with serve_tokens(tokens):
        events = await collect_progress(push(svc, base, insecure=True))
        assert events[-1] == {"status": "success"}
        events = await collect_progress(push(svc, derived, insecure=True))
        assert events[-1] == {"status": "success"}
        (model,) = [e for e in events if e.get("digest") == sha256(tiny_gguf)]  # mounted
        assert model["completed"] == model["total"]
        asked = [s.rpartition(":") for r in tokens.requests for s in r["scope"].split()]
        scopes = {(name, frozenset(actions.split(","))) for name, _, actions in asked}
        assert ("repository:alice/derived", frozenset({"pull", "push"})) in scopes  # any order
        other = service(tmp_path / "b", token_registry, password=PASSWORD)
        await collect_progress(pull(other, derived, insecure=True))
    assert other.store.read_manifest_bytes(derived) == svc.store.read_manifest_bytes(derived)
    assert token_registry.blob_file(sha256(tiny_gguf)).read_bytes() == tiny_gguf


@pytest.mark.parametrize("password", [None, "wrong"])
async def test_the_realm_refuses_unknown_users(
    token_registry: Registry, tiny_gguf: bytes, tmp_path: Path, password: str | None
) -> None:
    publish_tiny(token_registry, tiny_gguf)
    tokens = issuer(token_registry)
    tokens.users = {USER: PASSWORD}
    tokens.allowed = {"library/tiny": {"pull"}}
    svc = service(tmp_path, token_registry, password=password)
    async with serve_tokens(tokens):
        with pytest.raises(RegistryError, match=r"unauthorized: access denied"):
            await collect_progress(pull(svc, f"{token_registry.host}/library/tiny", insecure=True))
    assert len(tokens.requests) == 1  # asked once, refused, not retried
    assert not svc.store.has_blob(sha256(tiny_gguf))


async def test_a_token_without_the_scope_is_refused_by_the_registry(
    token_registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    publish_tiny(token_registry, tiny_gguf)
    tokens = issuer(token_registry)
    tokens.allowed = {"library/tiny": {"pull"}}  # anonymous pulls only
    svc = service(tmp_path, token_registry, password=None)
    name = f"{token_registry.host}/library/tiny"
    async with serve_tokens(tokens):
        await collect_progress(pull(svc, name, insecure=True))  # fine: pull is granted
        with pytest.raises(RegistryError, match=r"unauthorized: access denied"):
            await collect_progress(push(svc, name, insecure=True))  # the token says pull only
        with pytest.raises(RegistryError, match=r"unauthorized: access denied"):
            await collect_progress(pull(svc, f"{token_registry.host}/library/other", insecure=True))
    await svc.aclose()
