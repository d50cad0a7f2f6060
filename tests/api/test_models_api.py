"""The store-only endpoints: tags, show, copy, delete, create and blobs, as Ollama shapes them."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from power.api.models import format_time
from power.registry import RegistryService
from power.settings import Settings
from power.store.store import ModelStore
from tests.support.app import TestClient, app_client
from tests.support.gguf import JINJA, TOKENS, tiny_gguf
from tests.support.net import free_port
from tests.support.runners import ScriptedRunners


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


@pytest.fixture
def client(store: ModelStore, tmp_path: Path) -> Iterator[TestClient]:
    # A create whose base is missing pulls it: here from a registry that refuses connections.
    dead = {"registry.ollama.ai": f"http://127.0.0.1:{free_port()}"}
    registry = RegistryService(
        store, home=tmp_path / "home", env={}, hosts=dead, catalog={}, max_tries=1
    )
    settings = Settings(home=str(tmp_path / "home"))
    with app_client(settings, ScriptedRunners(), store, registry=registry) as c:
        yield c


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    return tiny_gguf(tmp_path / "tiny.gguf")


def _ndjson(body: str) -> list[dict[str, Any]]:
    assert body.endswith("\n")
    return [json.loads(line) for line in body.splitlines()]


def _create(client: TestClient, **req: Any) -> None:
    resp = client.post("/api/create", json={"stream": False, **req})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": "success"}


def _upload(client: TestClient, path: Path) -> str:
    """POST a file to /api/blobs, as a client uploads a local GGUF before creating from it."""
    data = path.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert client.post(f"/api/blobs/{digest}", content=data).status_code in (200, 201)
    return digest


def _blob_files(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.blobs_dir.iterdir())


def _manifest_files(store: ModelStore) -> list[str]:
    return sorted(str(p) for p in store.manifests_dir.rglob("*") if p.is_file())


# -- create ------------------------------------------------------------------------------------


def test_create_streams_progress(client: TestClient, gguf: Path) -> None:
    digest = _upload(client, gguf)
    resp = client.post("/api/create", json={"model": "tiny", "from": digest})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/x-ndjson"
    lines = _ndjson(resp.text)
    assert lines[0] == {"status": "parsing GGUF"}
    assert lines[1] == {"status": f"using existing layer {digest}"}
    assert lines[-2:] == [{"status": "writing manifest"}, {"status": "success"}]


def test_create_refuses_a_model_file_as_an_adapter(client: TestClient, gguf: Path) -> None:
    """llama.cpp loads only a GGUF whose general.type is "adapter" as one: a model stored with
    anything else failed every later load with a 500."""
    digest = _upload(client, gguf)
    _create(client, name="base", files={"model.gguf": digest})
    resp = client.post(
        "/api/create",
        json={"model": "m", "from": "base", "adapters": {"a.gguf": digest}, "stream": False},
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == (
        "a.gguf is not a LoRA adapter: its general.type is None, not 'adapter'"
    )
    assert client.post("/api/show", json={"model": "m"}).status_code == 404


def test_create_from_uploaded_blob_with_legacy_name(client: TestClient, gguf: Path) -> None:
    data = gguf.read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert client.post(f"/api/blobs/{digest}", content=data).status_code == 201
    _create(client, name="up:v1", files={"model.gguf": digest}, parameters={"seed": 42})
    shown = client.post("/api/show", json={"model": "up:v1"}).json()
    assert shown["details"]["parent_model"] == "model.gguf"
    assert shown["parameters"] == "seed                           42"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"model": "m"}, 400, "neither 'from' or 'files' was specified"),
        ({"model": "bad name", "from": "x"}, 400, "invalid model name"),
        ({"model": "m", "from": "x", "quantize": "q9"}, 400, "unsupported quantization type q9"),
        (
            {"model": "m", "files": {"/etc/x": "sha256:" + "a" * 64}},
            400,
            "file path must be relative",
        ),
        ({"model": "m", "modelfile": "FROM x\nBAD y"}, 400, "(line 2): command must be one of"),
        (  # (Ollama's typed messages refuse it too; stored, it failed every later request)
            {"model": "m", "from": "x", "messages": [{"role": "user", "content": 5}]},
            400,
            "Expected `str`, got `int` - at `$.messages[0].content`",
        ),
        ({"model": "m", "from": "x", "messages": [{"content": "hi"}]}, 400, "Object missing"),
    ],
)
def test_create_errors_before_streaming(
    client: TestClient, body: dict[str, Any], status: int, error: str
) -> None:
    resp = client.post("/api/create", json=body)
    assert resp.status_code == status
    assert resp.json()["error"].startswith(error)


def test_create_from_a_missing_base_pulls_it_first(client: TestClient) -> None:
    resp = client.post("/api/create", json={"model": "m", "from": "ghost"})
    assert resp.status_code == 200
    lines = _ndjson(resp.text)
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[1]["error"].startswith("pull model manifest: ")
    assert len(lines) == 2
    resp = client.post("/api/create", json={"model": "m", "from": "ghost", "stream": False})
    assert resp.status_code == 502
    assert resp.json()["error"].startswith("pull model manifest: ")


def test_create_error_after_streaming_started(client: TestClient, store: ModelStore) -> None:
    digest = store.add_blob_bytes(b"this blob is no GGUF file, not even close")
    resp = client.post("/api/create", json={"model": "m", "files": {"m.gguf": digest}})
    assert resp.status_code == 200
    assert _ndjson(resp.text) == [
        {"status": "parsing GGUF"},
        {"error": "supplied file was not in GGUF format"},
    ]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"from": "{gguf}"}, "from: '{gguf}' is a file path"),
        ({"from": "{text}"}, "from: '{text}' is a file path"),
        ({"from": "base", "adapters": {"a.gguf": "{text}"}}, "adapter a.gguf: '{text}' is not"),
        ({"from": "base", "adapters": {"a.gguf": "{gguf}"}}, "adapter a.gguf: '{gguf}' is not"),
        ({"modelfile": "FROM {gguf}"}, "FROM {gguf}: the server does not read files"),
        ({"modelfile": "FROM base\nADAPTER {text}"}, "ADAPTER {text}: the server does not"),
        ({"modelfile": "FROM base\nFROM {gguf}"}, "FROM {gguf}: the server does not read"),
    ],
)
def test_create_never_reads_a_file_the_client_names(
    client: TestClient, store: ModelStore, gguf: Path, tmp_path: Path, body: Any, error: str
) -> None:
    """Issue 11.1: names and blob digests only; the CLI uploads local files first."""
    _create(client, model="base", **{"from": _upload(client, gguf)})
    gguf.write_bytes(gguf.read_bytes() + b"changed, so not a blob yet")
    text = tmp_path / "secret.txt"
    text.write_text("a server-side secret\n")
    paths = {"{gguf}": str(gguf), "{text}": str(text)}
    raw = json.dumps(body)
    for key, value in paths.items():
        raw, error = raw.replace(key, value), error.replace(key, value)
    blobs, manifests = _blob_files(store), _manifest_files(store)
    for stream in (True, False):
        resp = client.post("/api/create", json={"model": "x", "stream": stream, **json.loads(raw)})
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"].startswith(error)
        assert _blob_files(store) == blobs  # nothing of the file was copied
        assert _manifest_files(store) == manifests


def test_create_answers_the_same_for_existing_and_missing_paths(
    client: TestClient, tmp_path: Path
) -> None:
    """A path in `from` is refused from its text alone: no probing of the server's disk."""
    there = tmp_path / "there.gguf"
    tiny_gguf(there)
    answers = []
    for path in (there, tmp_path / "missing.gguf"):
        resp = client.post("/api/create", json={"model": "x", "from": str(path)})
        answers.append((resp.status_code, resp.json()["error"].replace(path.name, "NAME")))
    assert answers[0] == answers[1]
    assert answers[0][0] == 400


@pytest.mark.parametrize(
    "body",
    [
        {"from": "/" + "a" * 300},
        {"from": "/tmp/" + "a" * 300 + "/x.gguf"},
        {"from": "h" * 300 + "/library/x"},
        {"from": "base", "model": "h" * 300 + "/library/x"},
        {"modelfile": "FROM /" + "a" * 300},
        {"modelfile": "FROM " + "h" * 300 + "/library/x"},
    ],
)
def test_create_with_an_overlong_name_part_is_400(
    client: TestClient, store: ModelStore, gguf: Path, body: dict[str, Any]
) -> None:
    """Issue 11.9: a part longer than a file name (255) is a bad request, not ENAMETOOLONG."""
    _create(client, model="base", **{"from": _upload(client, gguf)})
    manifests = _manifest_files(store)
    resp = client.post("/api/create", json={"model": "x", **body})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]
    assert _manifest_files(store) == manifests


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/show", {"model": "h" * 300 + "/library/x"}),
        ("DELETE", "/api/delete", {"model": "h" * 300 + "/library/x"}),
        ("POST", "/api/copy", {"source": "base", "destination": "h" * 300 + "/library/x"}),
    ],
)
def test_every_endpoint_answers_an_overlong_name_part_with_400(
    client: TestClient, gguf: Path, method: str, path: str, body: dict[str, Any]
) -> None:
    """Not ENAMETOOLONG (500): a name becomes a path in one place, which checks it."""
    _create(client, model="base", **{"from": _upload(client, gguf)})
    resp = client.request(method, path, json=body)
    assert resp.status_code == 400, resp.text
    assert "longer than 255 bytes" in resp.json()["error"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"template": "{{ .Prompt"}, "template error: 1: unclosed action"),
        ({"template": "{{ if .System }}x"}, "template error: "),
        ({"template": "{{ nofunc .Prompt }}"}, "template error: 1: function 'nofunc' not defined"),
        ({"parameters": {"temperature": "hot"}}, 'option "temperature" must be of type number'),
        ({"parameters": {"num_ctx": 2.5e3, "seed": "1"}}, 'option "seed" must be of type integer'),
        ({"parameters": {"use_mmap": 1}}, 'option "use_mmap" must be of type boolean'),
        ({"parameters": {"stop": [1, 2]}}, 'option "stop" must be of type array'),
        ({"parameters": ["temperature"]}, "Expected `object | null`"),
        ({"modelfile": 'FROM base\nTEMPLATE "{{ end }}"'}, "template error: 1: unexpected {{end}}"),
    ],
)
def test_create_validates_template_and_parameters(
    client: TestClient, store: ModelStore, gguf: Path, body: dict[str, Any], error: str
) -> None:
    """Issue 11.12: a template that does not parse or a mistyped option is a 400 at create time."""
    _create(client, model="base", **{"from": _upload(client, gguf)})
    blobs, manifests = _blob_files(store), _manifest_files(store)
    resp = client.post("/api/create", json={"model": "x", "from": "base", **body})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"].startswith(error)
    assert (_blob_files(store), _manifest_files(store)) == (blobs, manifests)


def test_create_keeps_unknown_and_obsolete_parameters(client: TestClient, gguf: Path) -> None:
    """As Ollama: unknown and dropped options are no error (requests warn and ignore them)."""
    params = {"mirostat": 1, "whatever": "x", "stop": "<|end|>", "num_ctx": 2048.0}
    _create(client, model="x", **{"from": _upload(client, gguf)}, parameters=params)
    assert client.post("/api/show", json={"model": "x"}).status_code == 200


# -- tags --------------------------------------------------------------------------------------


def test_tags(client: TestClient, gguf: Path, store: ModelStore) -> None:
    assert client.get("/api/tags").json() == {"models": []}
    _create(client, model="alice/tiny:q8", **{"from": _upload(client, gguf)})
    resp = client.get("/api/tags")
    assert resp.headers["content-type"] == "application/json; charset=utf-8"
    (entry,) = resp.json()["models"]
    raw = store.read_manifest_bytes("alice/tiny:q8")
    assert entry["name"] == entry["model"] == "alice/tiny:q8"
    assert entry["digest"] == hashlib.sha256(raw).hexdigest()
    assert entry["size"] == gguf.stat().st_size + sum(
        layer["size"] for layer in [json.loads(raw)["config"]]
    )
    assert entry["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "96",
        "quantization_level": "Q4_0",
    }
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", entry["modified_at"]
    )
    assert client.head("/api/tags").status_code == 200


def test_format_time() -> None:
    assert re.fullmatch(
        r"2026-\d\d-\d\dT\d\d:\d\d:\d\d\.5(Z|[+-]\d\d:\d\d)", format_time(1.7777e9 + 0.5)
    )


# -- show --------------------------------------------------------------------------------------


def test_show(client: TestClient, gguf: Path) -> None:
    _create(
        client,
        model="tiny",
        **{"from": _upload(client, gguf)},
        parameters={"stop": ["<|im_end|>", "</s>"], "temperature": 0.7},
        system="be brief",
        license="MIT",
    )
    resp = client.post("/api/show", json={"model": "TINY"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["license"] == "MIT"
    assert body["system"] == "be brief"
    assert body["template"] == JINJA  # no TEMPLATE layer: the GGUF's own template
    assert body["parameters"] == (
        'stop                           "<|im_end|>"\n'
        'stop                           "</s>"\n'
        "temperature                    0.7"
    )
    assert body["modelfile"].startswith(
        '# Modelfile generated by "ollama show"\n'
        "# To build a new Modelfile based on this, replace FROM with:\n"
        "# FROM tiny:latest\n\nFROM "
    )
    assert "PARAMETER stop <|im_end|>\nPARAMETER stop </s>\n" in body["modelfile"]
    assert "SYSTEM be brief\n" in body["modelfile"]
    assert "LICENSE MIT\n" in body["modelfile"]
    info = body["model_info"]
    assert "general.name" not in info
    assert "tokenizer.chat_template" not in info
    assert info["tokenizer.ggml.tokens"] == []
    assert info["tokenizer.ggml.scores"] == [0.0, 1.0, 2.0]
    assert info["general.architecture"] == "llama"
    assert info["llama.context_length"] == 4096
    assert info["general.parameter_count"] == 96
    assert body["details"]["quantization_level"] == "Q4_0"
    assert body["capabilities"] == ["completion"]
    assert "tensors" not in body
    assert "modified_at" in body


def test_show_verbose_and_template_layer(client: TestClient, gguf: Path) -> None:
    _create(client, model="t", **{"from": _upload(client, gguf)}, template="{{ .Prompt }}")
    body = client.post("/api/show", json={"name": "t", "verbose": True}).json()
    assert body["template"] == "{{ .Prompt }}"
    assert 'TEMPLATE "{{ .Prompt }}"' not in body["modelfile"]
    assert "TEMPLATE {{ .Prompt }}\n" in body["modelfile"]
    assert body["model_info"]["tokenizer.ggml.tokens"] == TOKENS
    assert body["tensors"] == [
        {"name": "token_embd.weight", "type": "Q4_0", "shape": [8, 6]},
        {"name": "output", "type": "Q4_0", "shape": [8, 6]},
    ]


def test_show_lists_a_long_vocabulary_whole_only_when_verbose(
    client: TestClient, tmp_path: Path
) -> None:
    """The cached header keeps only a long array's length; a verbose show reads it whole."""
    vocab = [f"tok{i}" for i in range(3000)]
    big = tiny_gguf(tmp_path / "big.gguf", extra={"tokenizer.ggml.tokens": vocab})
    _create(client, model="big", **{"from": _upload(client, big)})
    brief = client.post("/api/show", json={"model": "big"}).json()
    assert brief["model_info"]["tokenizer.ggml.tokens"] == []
    full = client.post("/api/show", json={"model": "big", "verbose": True}).json()
    assert full["model_info"]["tokenizer.ggml.tokens"] == vocab
    again = client.post("/api/show", json={"model": "big"}).json()
    assert again["model_info"]["tokenizer.ggml.tokens"] == []


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({}, 400, "model is required"),
        ({"model": "ghost"}, 404, "model 'ghost' not found"),
        ({"model": "bad:"}, 400, "invalid model name"),
        ({"model": 5}, 400, "Expected `str`"),
    ],
)
def test_show_errors(client: TestClient, body: dict[str, Any], status: int, error: str) -> None:
    resp = client.post("/api/show", json=body)
    assert resp.status_code == status
    assert resp.json()["error"].startswith(error)


@pytest.mark.parametrize(
    ("content", "error"),
    [(b"", "missing request body"), (b"{not json", "JSON is malformed"), (b"[1]", "JSON object")],
)
def test_bad_bodies(client: TestClient, content: bytes, error: str) -> None:
    for method, url in (("POST", "/api/show"), ("POST", "/api/create"), ("DELETE", "/api/delete")):
        resp = client.request(method, url, content=content)
        assert resp.status_code == 400
        assert error in resp.json()["error"]


# -- copy, delete ------------------------------------------------------------------------------


def test_copy_and_delete(client: TestClient, gguf: Path, store: ModelStore) -> None:
    _create(client, model="src", **{"from": _upload(client, gguf)})
    resp = client.post("/api/copy", json={"source": "src", "destination": "team/dst:v2"})
    assert (resp.status_code, resp.content) == (200, b"")
    assert store.read_manifest_bytes("team/dst:v2") == store.read_manifest_bytes("src")
    resp = client.request("DELETE", "/api/delete", json={"model": "src"})
    assert (resp.status_code, resp.content) == (200, b"")
    names = [m["name"] for m in client.get("/api/tags").json()["models"]]
    assert names == ["team/dst:v2"]
    assert client.post("/api/show", json={"model": "team/dst:v2"}).status_code == 200
    resp = client.request("DELETE", "/api/delete", json={"name": "src"})
    assert (resp.status_code, resp.json()) == (404, {"error": "model 'src' not found"})


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"source": "ghost", "destination": "x"}, 404, 'model "ghost" not found'),
        ({"source": "bad:", "destination": "x"}, 400, 'source "bad:" is invalid'),
        ({"source": "x", "destination": ""}, 400, 'destination "" is invalid'),
    ],
)
def test_copy_errors(client: TestClient, body: dict[str, Any], status: int, error: str) -> None:
    resp = client.post("/api/copy", json=body)
    assert (resp.status_code, resp.json()) == (status, {"error": error})


# -- blobs -------------------------------------------------------------------------------------


def test_blobs(client: TestClient, store: ModelStore) -> None:
    data = b"some blob content" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert client.head(f"/api/blobs/{digest}").status_code == 404
    assert client.post(f"/api/blobs/{digest}", content=data).status_code == 201
    assert client.head(f"/api/blobs/{digest.replace(':', '-')}").status_code == 200
    assert client.post(f"/api/blobs/{digest}", content=b"ignored").status_code == 200
    assert store.read_blob(digest) == data


def test_blob_digest_mismatch_stores_nothing(client: TestClient, store: ModelStore) -> None:
    wrong = "sha256:" + "0" * 64
    got = "sha256:" + hashlib.sha256(b"payload").hexdigest()
    resp = client.post(f"/api/blobs/{wrong}", content=b"payload")
    assert resp.status_code == 400
    assert resp.json() == {"error": f'digest mismatch, expected "{wrong}", got "{got}"'}
    assert list(store.blobs_dir.iterdir()) == []


@pytest.mark.parametrize("digest", ["sha256:abc", "md5-" + "a" * 64, "sha256:" + "z" * 64])
def test_blob_bad_digest(client: TestClient, digest: str) -> None:
    resp = client.post(f"/api/blobs/{digest}", content=b"x")
    assert (resp.status_code, resp.json()) == (400, {"error": "invalid digest format"})
    assert client.head(f"/api/blobs/{digest}").status_code == 400
