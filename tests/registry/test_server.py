"""``power serve`` as a child process against ``docker-registry``: the HTTP API and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.proxy import proxy
from tests.support.registry import MANIFEST_TYPE, Registry, publish_tiny, sha256
from tests.support.server import Server, power_server
from tests.support.synth import write_llama_gguf
from tests.support.wait import wait_until


def lines(server: Server, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{server.url}{path}", json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in r.iter_lines() if line]


def test_pull_api_stream_and_errors(server: Server, registry: Registry, tiny_gguf: bytes) -> None:
    raw = publish_tiny(registry, tiny_gguf)
    name = f"{registry.host}/library/tiny"
    out = lines(server, "/api/pull", {"model": name, "insecure": True})
    assert out[0] == {"status": "pulling manifest"}
    assert [x["status"] for x in out[-3:]] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    first = next(x for x in out if "digest" in x)
    assert set(first) <= {"status", "digest", "total", "completed"}
    tags = httpx.get(f"{server.url}/api/tags").json()["models"]
    assert [m["name"] for m in tags] == [f"{name}:latest"]
    assert tags[0]["digest"] == sha256(raw)[7:]

    r = httpx.post(
        f"{server.url}/api/pull", json={"model": name, "insecure": True, "stream": False}
    )
    assert (r.status_code, r.json()) == (200, {"status": "success"})

    missing = f"{registry.host}/library/missing"
    out = lines(server, "/api/pull", {"model": missing, "insecure": True})
    assert out == [
        {"status": "pulling manifest"},
        {"error": "pull model manifest: file does not exist"},
    ]
    r = httpx.post(
        f"{server.url}/api/pull", json={"name": missing, "insecure": True, "stream": False}
    )
    assert r.json() == {"error": "pull model manifest: file does not exist"}
    assert r.status_code >= 500
    r = httpx.post(f"{server.url}/api/pull", json={})
    assert (r.status_code, r.json()) == (400, {"error": "model is required"})
    r = httpx.post(f"{server.url}/api/push", json={"model": "a/b/c/d/e"})
    assert (r.status_code, r.json()) == (400, {"error": "invalid model name"})


def test_resume_after_the_server_is_killed(
    env: dict[str, str], registry: Registry, tmp_path: Path
) -> None:
    big = write_llama_gguf(
        tmp_path / "big.gguf", dtype="f16", n_embd=512, n_vocab=8192
    ).read_bytes()
    publish_tiny(registry, big)
    models = Path(env["OLLAMA_MODELS"])
    digest = sha256(big)
    states = models / "blobs" / f"sha256-{digest[7:]}-partial-0"
    with proxy(registry.port, rate=3_000_000) as p:
        name = f"{p.host}/library/tiny"
        with power_server(env, tmp_path / "one.log") as srv:

            def pull() -> None:
                try:
                    lines(srv, "/api/pull", {"model": name, "insecure": True})
                except (httpx.HTTPError, AssertionError):
                    pass

            worker = threading.Thread(target=pull)
            worker.start()

            def saved() -> int:
                try:
                    done: int = json.loads(states.read_bytes())["Completed"]
                    return done
                except (OSError, ValueError):
                    return 0

            wait_until(lambda: saved() > len(big) // 3, timeout_s=30)
            srv.stop(signal.SIGKILL)
            worker.join(30)
        on_disk = saved()
        assert 0 < on_disk < len(big)
        p.rate = 0
        before = p.downstream
        with power_server(env, tmp_path / "two.log") as srv:  # start-up keeps young partials
            out = lines(srv, "/api/pull", {"model": name, "insecure": True})
        fetched = p.downstream - before
    assert out[-1] == {"status": "success"}
    assert (models / "blobs" / f"sha256-{digest[7:]}").read_bytes() == big
    assert fetched < len(big) - on_disk + 1_100_000  # at most the unsaved last MiB again


def test_blobs_api(server: Server) -> None:
    data = b"hello blob"
    digest = sha256(data)
    url = f"{server.url}/api/blobs/{digest}"
    assert httpx.head(url).status_code == 404
    assert httpx.get(url).status_code == 404
    bad = httpx.post(url, content=b"other bytes")
    assert bad.status_code == 400
    assert "digest mismatch" in bad.json()["error"]
    assert httpx.head(url).status_code == 404  # nothing stored
    assert httpx.post(url, content=data).status_code == 201
    assert httpx.post(url, content=data).status_code == 200
    assert httpx.head(url).status_code == 200
    got = httpx.get(url.replace("sha256:", "sha256-"))
    assert (got.status_code, got.content) == (200, data)
    for wrong in ("sha256:abc", "sha256:" + "g" * 64, "md5:" + "0" * 64, "sha256-.."):
        for method in ("GET", "HEAD", "DELETE", "POST"):
            r = httpx.request(method, f"{server.url}/api/blobs/{wrong}")
            assert r.status_code == 400, (method, wrong)
        assert httpx.get(f"{server.url}/api/blobs/{wrong}").json() == {
            "error": "invalid digest format"
        }
    assert httpx.get(f"{server.url}/api/blobs/sha256-..%2F..%2Fetc").status_code == 404  # no route
    assert httpx.delete(url).status_code == 200
    assert httpx.delete(url).status_code == 404


def test_delete_blob_in_use_and_prune(
    env: dict[str, str], registry: Registry, tiny_gguf: bytes, tmp_path: Path
) -> None:
    publish_tiny(registry, tiny_gguf, repo="library/one")
    other = write_llama_gguf(tmp_path / "o.gguf", dtype="f16", seed=1).read_bytes()
    publish_tiny(registry, other, repo="library/two")
    blobs = Path(env["OLLAMA_MODELS"]) / "blobs"
    with power_server(env, tmp_path / "a.log") as srv:
        for repo in ("one", "two"):
            lines(srv, "/api/pull", {"model": f"{registry.host}/library/{repo}", "insecure": True})
        r = httpx.delete(f"{srv.url}/api/blobs/{sha256(tiny_gguf)}")
        assert r.status_code == 400
        assert "in use by" in r.json()["error"]
        shared = sha256(b"{{ .Prompt }}")
        r = httpx.request(
            "DELETE", f"{srv.url}/api/delete", json={"model": f"{registry.host}/library/two"}
        )
        assert r.status_code == 200
        assert not (blobs / f"sha256-{sha256(other)[7:]}").exists()  # only two used it
        assert (blobs / f"sha256-{shared[7:]}").exists()  # one still uses it
    orphan = blobs / ("sha256-" + "a" * 64)
    orphan.write_bytes(b"orphan")
    stale, fresh = blobs / f"sha256-{'b' * 64}-partial", blobs / f"sha256-{'c' * 64}-partial"
    for f in (stale, fresh):
        f.write_bytes(b"part")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    # A pulled blob whose bytes a power cut lost (its fsync never ran): checked even with
    # OLLAMA_NOPRUNE, and removed because its content does not match its name.
    lost = blobs / f"sha256-{sha256(b'lost')[7:]}"
    lost.write_bytes(b"\0\0\0\0")
    marker = blobs / f"{lost.name}-unsynced"
    marker.touch()
    os.utime(marker, (old, old))
    with power_server({**env, "OLLAMA_NOPRUNE": "1"}, tmp_path / "b.log"):
        pass
    assert orphan.exists()
    assert stale.exists()
    assert not lost.exists()
    assert not marker.exists()
    with power_server(env, tmp_path / "c.log"):
        pass
    assert not orphan.exists()
    assert not stale.exists()
    assert fresh.exists()  # a young partial is a resumable download


def test_modelfile_create_with_quantization(server: Server, tmp_path: Path) -> None:
    src = write_llama_gguf(tmp_path / "f16.gguf", dtype="f16")
    digest = sha256(src.read_bytes())
    uploaded = httpx.post(f"{server.url}/api/blobs/{digest}", content=src.read_bytes())
    assert uploaded.status_code in (200, 201)
    modelfile = f'from @{digest}\nPARAMETER temperature 0.2\n# comment\nSYSTEM """be\nbrief"""\n'
    out = lines(server, "/api/create", {"model": "q8", "modelfile": modelfile, "quantize": "q8_0"})
    statuses = [x["status"] for x in out]
    assert "quantizing F16 model to Q8_0" in statuses
    assert "verifying conversion" in statuses
    assert statuses[-2:] == ["writing manifest", "success"]
    progress = [x for x in out if x["status"].startswith("quantizing")]
    assert progress[-1]["completed"] == progress[-1]["total"]
    shown = httpx.post(f"{server.url}/api/show", json={"model": "q8"}).json()
    assert shown["details"]["quantization_level"] == "Q8_0"
    assert shown["system"] == "be\nbrief"
    r = httpx.post(
        f"{server.url}/api/create", json={"model": "x", "from": "q8", "quantize": "q9_9"}
    )
    assert (r.status_code, r.json()) == (400, {"error": "unsupported quantization type q9_9"})
    out = lines(server, "/api/create", {"model": "x", "from": "q8", "quantize": "q4_K_M"})
    assert "quantization is only supported for F16, BF16 and F32 models" in out[-1]["error"]


def test_cli_pull_and_push(
    server: Server, registry: Registry, tiny_gguf: bytes, env: dict[str, str]
) -> None:
    publish_tiny(registry, tiny_gguf)
    cli_env = {**env, "OLLAMA_HOST": server.url}
    name = f"{registry.host}/library/tiny"
    done = subprocess.run(
        [sys.executable, "-m", "power", "pull", name, "--insecure"],
        env=cli_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "success" in done.stdout + done.stderr
    copy = httpx.post(
        f"{server.url}/api/copy", json={"source": name, "destination": f"{registry.host}/bob/tiny"}
    )
    assert copy.status_code == 200
    done = subprocess.run(
        [sys.executable, "-m", "power", "push", f"{registry.host}/bob/tiny", "--insecure"],
        env=cli_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with registry.client() as c:
        got = c.get("/v2/bob/tiny/manifests/latest", headers={"Accept": MANIFEST_TYPE})
    assert (got.status_code, got.content) == (200, registry.published["library/tiny:latest"])
    bad = subprocess.run(
        [sys.executable, "-m", "power", "pull", f"{registry.host}/library/none", "--insecure"],
        env=cli_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 1
    assert "pull model manifest: file does not exist" in bad.stderr + bad.stdout
