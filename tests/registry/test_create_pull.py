"""``/api/create`` whose base model is not in the store pulls it from a real ``docker-registry``.

The registry speaks plain http, and a create never forces http (Ollama's create has no
``insecure``), so the tests reach it through the service's ``hosts`` seam: ``registry.test``
stands for the loopback registry, as a TLS-terminated registry would.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from power.api.create import routes as create_routes
from power.api.models import routes as model_routes
from power.errors import PowerError
from power.registry import RegistryService
from power.store.store import ModelStore
from tests.support.registry import Registry, publish_tiny, sha256

with warnings.catch_warnings():  # starlette prefers httpx2; plain httpx works the same here
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

HOST = "registry.test"
BASE = f"{HOST}/library/tiny"


async def _power_error(request: Request, exc: Exception) -> Response:
    status = exc.status if isinstance(exc, PowerError) else 500
    return JSONResponse({"error": str(exc)}, status_code=status)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def client(registry: Registry, store: ModelStore, tmp_path: Path) -> Iterator[TestClient]:
    app = Starlette(
        routes=[*model_routes, *create_routes], exception_handlers={PowerError: _power_error}
    )
    app.state.store = store
    app.state.registry = RegistryService(
        store, home=tmp_path / "home", env={}, hosts={HOST: registry.url}, catalog={}, max_tries=1
    )
    with TestClient(app) as c:
        yield c


def ndjson(resp: Any) -> list[dict[str, Any]]:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/x-ndjson"
    return [json.loads(line) for line in resp.text.splitlines()]


def test_create_from_a_missing_base_pulls_it_then_creates(
    client: TestClient, registry: Registry, tiny_gguf: bytes, store: ModelStore
) -> None:
    raw = json.loads(publish_tiny(registry, tiny_gguf))
    out = ndjson(client.post("/api/create", json={"model": "mine", "from": BASE, "system": "hi"}))
    statuses = [str(x.get("status")) for x in out]
    assert "error" not in json.dumps(out)
    # The pull's stream, verbatim and whole (its "success" too), then the create's.
    assert statuses[0] == "pulling manifest"
    pulled = statuses.index("success")
    assert statuses[pulled - 2 : pulled] == ["verifying sha256 digest", "writing manifest"]
    pulling = [x for x in out[:pulled] if "digest" in x]
    wanted = [x["digest"] for x in [*raw["layers"], raw["config"]]]
    assert list(dict.fromkeys(x["digest"] for x in pulling)) == wanted
    created = statuses[pulled + 1 :]
    assert created[0] == f"using existing layer {sha256(tiny_gguf)}"
    assert any(re.fullmatch(r"creating new layer sha256:[0-9a-f]{64}", s) for s in created)
    assert created[-2:] == ["writing manifest", "success"]

    names = {m["name"] for m in client.get("/api/tags").json()["models"]}
    assert names == {f"{BASE}:latest", "mine:latest"}
    mine = json.loads(store.read_manifest_bytes("mine"))
    model = next(x for x in mine["layers"] if x["digest"] == sha256(tiny_gguf))
    assert model["from"] == f"{BASE}:latest"
    shown = client.post("/api/show", json={"model": "mine"}).json()
    assert shown["system"] == "hi"

    again = ndjson(client.post("/api/create", json={"model": "mine2", "from": BASE}))
    assert again[0]["status"] == f"using existing layer {sha256(tiny_gguf)}"  # no second pull


def test_modelfile_from_a_missing_base_and_stream_false(
    client: TestClient, registry: Registry, tiny_gguf: bytes
) -> None:
    publish_tiny(registry, tiny_gguf, tag="v1")
    modelfile = f"FROM {BASE}:v1\nPARAMETER temperature 0.1\n"
    resp = client.post("/api/create", json={"model": "mf", "modelfile": modelfile, "stream": False})
    assert (resp.status_code, resp.json()) == (200, {"status": "success"})
    shown = client.post("/api/show", json={"model": "mf"}).json()
    assert "temperature" in shown["parameters"]
    assert client.post("/api/show", json={"model": f"{BASE}:v1"}).status_code == 200


def test_a_base_the_registry_lacks_fails_in_band_and_creates_nothing(
    client: TestClient, store: ModelStore
) -> None:
    out = ndjson(client.post("/api/create", json={"model": "mine", "from": f"{HOST}/library/no"}))
    assert out == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    assert client.get("/api/tags").json() == {"models": []}
    assert not [p for p in store.blobs_dir.iterdir()]


def test_create_never_forces_plain_http(
    client: TestClient, registry: Registry, tiny_gguf: bytes, store: ModelStore
) -> None:
    publish_tiny(registry, tiny_gguf)
    out = ndjson(
        client.post(
            "/api/create", json={"model": "m", "from": f"http://{registry.host}/library/tiny"}
        )
    )
    assert out == [{"status": "pulling manifest"}, {"error": "insecure protocol http"}]
    out = ndjson(
        client.post("/api/create", json={"model": "m", "from": f"{registry.host}/library/tiny"})
    )
    assert out[-1]["error"].startswith("pull model manifest: ")  # https to a plain-http port
    assert client.get("/api/tags").json() == {"models": []}


def test_bad_requests_fail_before_any_pull(client: TestClient) -> None:
    r = client.post("/api/create", json={"model": "m", "from": BASE, "quantize": "q9"})
    assert (r.status_code, r.json()) == (400, {"error": "unsupported quantization type q9"})
    r = client.post("/api/create", json={"model": "m", "from": "a/b/c/d/e"})
    assert (r.status_code, r.json()) == (400, {"error": "invalid model name"})
