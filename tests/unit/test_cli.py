"""The `power` CLI: parsing, help and output, against a tiny canned Ollama HTTP server.

The fake server (`tests.support.fake_ollama`) runs in a thread of the test process; each test
registers the JSON it should answer with.
"""

from __future__ import annotations

import hashlib
import socket
import sys
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from power.cli import main
from power.cli.chat import Session
from power.cli.client import Client, ConnectError, ResponseError
from power.cli.display import WordWrapper
from power.cli.format import (
    go_duration,
    human_bytes,
    human_duration,
    human_number,
    human_time,
    parse_time,
    processor,
    render_table,
    timings,
)
from power.cli.progress import Progress, render_bar
from power.cli.repl import interactive
from power.cli.show import render_show_info
from tests.support.fake_ollama import FakeOllama, ScriptedLines


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- pure formatting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 KB"),
        (98_000_000, "98 MB"),
        (1_288_490_188, "1.3 GB"),
        (4_700_000_000, "4.7 GB"),
        (2_000_000_000, "2 GB"),
        (12_500_000_000, "12 GB"),
        (3_000_000_000_000, "3 TB"),
    ],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    ("n", "text"), [(494_032_768, "494.0M"), (3_000_000_000, "3B"), (1_240_000_000, "1.2B")]
)
def test_human_number(n: int, text: str) -> None:
    assert human_number(n) == text


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(milliseconds=300), "Less than a second"),
        (timedelta(seconds=1), "1 second"),
        (timedelta(seconds=42), "42 seconds"),
        (timedelta(seconds=90), "About a minute"),
        (timedelta(minutes=2, seconds=5), "2 minutes"),
        (timedelta(minutes=61), "About an hour"),
        (timedelta(hours=5), "5 hours"),
        (timedelta(days=3), "3 days"),
        (timedelta(days=20), "2 weeks"),
        (timedelta(days=100), "3 months"),
        (timedelta(days=800), "2 years"),
    ],
)
def test_human_duration(delta: timedelta, text: str) -> None:
    assert human_duration(delta) == text


def test_human_time() -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert human_time(now - timedelta(minutes=2), now) == "2 minutes ago"
    assert human_time(now + timedelta(minutes=4, seconds=30), now) == "4 minutes from now"
    assert human_time(now + timedelta(days=365 * 292), now) == "Forever"
    assert human_time(None, now) == "Never"


def test_parse_time() -> None:
    parsed = parse_time("2026-03-01T09:15:02.481516123Z")
    assert parsed == datetime(2026, 3, 1, 9, 15, 2, 481516, tzinfo=UTC)
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("garbage") is None
    assert parse_time(None) is None


@pytest.mark.parametrize(
    ("size", "vram", "text"),
    [
        (100, 0, "100% CPU"),
        (100, 100, "100% GPU"),
        (100, 52, "48%/52% CPU/GPU"),
        (100, 200, "Unknown"),
    ],
)
def test_processor(size: int, vram: int, text: str) -> None:
    assert processor(size, vram) == text


def test_render_table() -> None:
    out = render_table(["NAME", "ID"], [["a:latest", "0123"], ["longer-name:q4", "4567"]])
    assert out == "NAME              ID\na:latest          0123\nlonger-name:q4    4567\n"


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (850, "850ns"),
        (1_500, "1.5µs"),
        (41_000_000, "41ms"),
        (12_345_600, "12.3456ms"),
        (1_500_000_000, "1.5s"),
        (123_100_000_000, "2m3.1s"),
        (3_600_000_000_000, "1h0m0s"),
    ],
)
def test_go_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text


def test_timings() -> None:
    stats = {
        "total_duration": 912_000_000,
        "load_duration": 41_000_000,
        "prompt_eval_count": 18,
        "prompt_eval_duration": 60_000_000,
        "eval_count": 37,
        "eval_duration": 790_000_000,
    }
    assert timings(stats) == (
        "total duration:       912ms\n"
        "load duration:        41ms\n"
        "prompt eval count:    18 token(s)\n"
        "prompt eval duration: 60ms\n"
        "prompt eval rate:     300.00 tokens/s\n"
        "eval count:           37 token(s)\n"
        "eval duration:        790ms\n"
        "eval rate:            46.84 tokens/s\n"
    )
    assert timings({}) == ""


def test_render_bar() -> None:
    line = render_bar("pulling 6f2a91c0d3e4", 45, 100, rate_bps=10.0, width=80)
    assert line.startswith("pulling 6f2a91c0d3e4  45% ▕")
    assert line.endswith("45 B/100 B     10 B/s      5s")
    assert len(line) == 79  # one column spare, so the terminal never wraps
    done = render_bar("pulling 6f2a91c0d3e4", 100, 100, done=True, width=80)
    assert done.startswith("pulling 6f2a91c0d3e4 100% ▕█")
    assert done.endswith("▏  100 B")


def _events() -> list[dict[str, Any]]:
    return [
        {"status": "pulling manifest"},
        {"status": "pulling aaaaaaaaaaaa", "digest": "sha256:aa", "total": 100, "completed": 50},
        {"status": "pulling aaaaaaaaaaaa", "digest": "sha256:aa", "total": 100, "completed": 100},
        {"status": "verifying sha256 digest"},
        {"status": "success"},
    ]


def test_progress_plain_prints_each_status_once() -> None:
    out: list[str] = []
    progress = Progress(out.append, tty=False, width=60)
    for event in _events():
        progress.update(event)
    progress.finish()
    lines = "".join(out).splitlines()
    assert lines[0] == "pulling manifest"
    assert lines[1].startswith("pulling aaaaaaaaaaaa 100% ▕")
    assert lines[2:] == ["verifying sha256 digest", "success"]


def test_progress_tty_redraws_in_place() -> None:
    clock = iter(float(i) for i in range(100))
    out: list[str] = []
    progress = Progress(out.append, tty=True, width=60, clock=lambda: next(clock))
    for event in _events()[:3]:
        progress.update(event)
    progress.finish()
    assert out[0] == "\r\x1b[Kpulling manifest ⠋\n"
    assert out[-1].startswith("\x1b[2A\r\x1b[Kpulling manifest\n\r\x1b[Kpulling aaaaaaaaaaaa 100%")


def test_render_show_info() -> None:
    resp = {
        "details": {"parameter_size": "494.03M", "quantization_level": "Q4_K_M"},
        "model_info": {
            "general.architecture": "qwen2",
            "qwen2.context_length": 32768,
            "qwen2.embedding_length": 896,
        },
        "capabilities": ["completion", "tools"],
        "parameters": f'{"stop":<30} "<|im_end|>"\n{"temperature":<30} 0.7',
        "license": "Apache License\nVersion 2.0\nJanuary 2004\n",
    }
    assert render_show_info(resp) == (
        "  Model\n"
        "    architecture        qwen2\n"
        "    parameters          494.03M\n"
        "    context length      32768\n"
        "    embedding length    896\n"
        "    quantization        Q4_K_M\n"
        "\n"
        "  Capabilities\n"
        "    completion\n"
        "    tools\n"
        "\n"
        "  Parameters\n"
        '    stop           "<|im_end|>"\n'
        "    temperature    0.7\n"
        "\n"
        "  License\n"
        "    Apache License\n"
        "    Version 2.0\n"
        "    ...\n"
        "\n"
    )


def test_word_wrapper() -> None:
    wrap = WordWrapper(12)
    out = wrap.feed("the quick brown fox jumps") + wrap.flush()
    assert out == "the quick \nbrown fox \njumps"


# -- client ----------------------------------------------------------------------------------


def test_client_stream_raises_on_error_line(fake: FakeOllama) -> None:
    fake.on("POST", "/api/pull", (200, [{"status": "pulling manifest"}, {"error": "boom"}]))
    client = Client.from_env({"OLLAMA_HOST": fake.url})
    seen: list[dict[str, Any]] = []
    with pytest.raises(ResponseError, match="boom") as info:
        seen.extend(client.stream("/api/pull", {"model": "x"}))
    assert info.value.status == -1
    assert seen == [{"status": "pulling manifest"}]
    assert fake.bodies("POST", "/api/pull") == [{"model": "x", "stream": True}]


def test_client_error_status_carries_server_message(fake: FakeOllama) -> None:
    client = Client.from_env({"OLLAMA_HOST": fake.url})
    fake.on("POST", "/api/show", (404, {"error": "model 'x' not found"}))
    with pytest.raises(ResponseError, match="model 'x' not found") as info:
        client.post("/api/show", {"model": "x"})
    assert info.value.status == 404
    assert client.heartbeat()


def test_client_upload_blob_only_when_missing(fake: FakeOllama, tmp_path: Path) -> None:
    blob = tmp_path / "m.gguf"
    blob.write_bytes(b"GGUF" * 1000)
    digest = "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
    fake.on("POST", f"/api/blobs/{digest}", (201, None))
    client = Client.from_env({"OLLAMA_HOST": fake.url})
    assert client.upload_blob(blob) == digest
    assert fake.bodies("POST", f"/api/blobs/{digest}") == [b"GGUF" * 1000]
    fake.on("HEAD", f"/api/blobs/{digest}", (200, None))
    assert client.upload_blob(blob) == digest
    assert len(fake.bodies("POST", f"/api/blobs/{digest}")) == 1


def test_client_connect_error() -> None:
    client = Client.from_env({"OLLAMA_HOST": f"127.0.0.1:{_closed_port()}"})
    assert not client.heartbeat()
    with pytest.raises(ConnectError, match="could not connect"):
        client.get("/api/tags")


@pytest.mark.timeout(30)
def test_a_listener_that_never_answers_is_not_a_server() -> None:
    """A heartbeat gives up after its 2 s, also once connected (``power run`` then starts one)."""
    with socket.create_server(("127.0.0.1", 0)) as mute:  # accepts (the backlog), says nothing
        client = Client.from_env({"OLLAMA_HOST": f"127.0.0.1:{mute.getsockname()[1]}"})
        assert not client.heartbeat()


# -- commands --------------------------------------------------------------------------------


def _iso(when: datetime) -> str:
    return when.isoformat()


def test_help_lists_commands(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "run", "list", "ps", "show", "stop", "rm", "cp", "pull", "push"):
        assert command in result.output


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.splitlines()[0] == "power version is 9.9.9"


def test_ls(runner: CliRunner, fake: FakeOllama) -> None:
    now = datetime.now(UTC)
    models = [
        {"name": "llama3.2:latest", "digest": "a80c4f17acd5" + "0" * 52, "size": 2_019_393_189,
         "modified_at": _iso(now - timedelta(minutes=2, seconds=5))},
        {"name": "tiny:q8", "digest": "5f1c0e" * 10 + "abcd", "size": 98_000_000,
         "modified_at": _iso(now - timedelta(days=3))},
    ]  # fmt: skip
    fake.on("GET", "/api/tags", (200, {"models": models}))
    for command in ("ls", "list"):
        result = runner.invoke(main, [command])
        assert result.exit_code == 0, result.output
        assert result.stdout == (
            "NAME               ID              SIZE      MODIFIED\n"
            "llama3.2:latest    a80c4f17acd5    2.0 GB    2 minutes ago\n"
            "tiny:q8            5f1c0e5f1c0e    98 MB     3 days ago\n"
        )
    for prefix in ("tiny", "TINY:Q"):  # (case aside, as Ollama's `ls`)
        result = runner.invoke(main, ["ls", prefix])
        assert result.stdout.splitlines()[1:] == ["tiny:q8    5f1c0e5f1c0e    98 MB    3 days ago"]


def test_ls_empty(runner: CliRunner, fake: FakeOllama) -> None:
    fake.on("GET", "/api/tags", (200, {"models": []}))
    assert runner.invoke(main, ["ls"]).stdout == "NAME    ID    SIZE    MODIFIED\n"


def test_ps_with_extra_columns(runner: CliRunner, fake: FakeOllama) -> None:
    now = datetime.now(UTC)
    models = [
        {"name": "qwen3:4b", "digest": "8a3b" * 16, "size": 5_000_000_000,
         "size_vram": 2_600_000_000, "context_length": 4096,
         "expires_at": _iso(now + timedelta(minutes=4, seconds=30)), "pid": 4242,
         "requests_in_flight": 2},
        {"name": "tiny:latest", "digest": "77" * 32, "size": 98_000_000, "size_vram": 0,
         "context_length": 2048, "expires_at": "2318-06-01T10:00:00.123456789-05:00", "pid": 7},
    ]  # fmt: skip
    fake.on("GET", "/api/ps", (200, {"models": models}))
    result = runner.invoke(main, ["ps"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "NAME           ID              SIZE     PROCESSOR          CONTEXT    UNTIL"
        "                 PID     IN FLIGHT\n"
        "qwen3:4b       8a3b8a3b8a3b    5 GB     48%/52% CPU/GPU    4096       4 minutes from now"
        "    4242    2\n"
        "tiny:latest    777777777777    98 MB    100% CPU           2048       Forever"
        "               7\n"
    )


def test_ps_ollama_columns_only(runner: CliRunner, fake: FakeOllama) -> None:
    fake.on("GET", "/api/ps", (200, {"models": []}))
    assert runner.invoke(main, ["ps"]).stdout == (
        "NAME    ID    SIZE    PROCESSOR    CONTEXT    UNTIL\n"
    )


_SHOW = {
    "license": "MIT",
    "modelfile": '# Modelfile generated by "power show"\nFROM tiny\n',
    "parameters": "temperature                    0.7",
    "template": "{{ .Prompt }}",
    "details": {"family": "llama", "parameter_size": "135M", "quantization_level": "Q8_0"},
    "model_info": {"general.architecture": "llama", "llama.context_length": 2048},
    "capabilities": ["completion"],
}


def test_show(runner: CliRunner, fake: FakeOllama) -> None:
    fake.on("POST", "/api/show", (200, _SHOW))
    result = runner.invoke(main, ["show", "tiny"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("  Model\n    architecture      llama\n")
    assert "  License\n    MIT\n" in result.stdout
    assert fake.bodies("POST", "/api/show") == [{"model": "tiny"}]
    assert runner.invoke(main, ["show", "tiny", "--license"]).stdout == "MIT\n"
    assert runner.invoke(main, ["show", "tiny", "--template"]).stdout == "{{ .Prompt }}\n"
    assert runner.invoke(main, ["show", "tiny", "--system"]).stdout == (
        "No system message was specified for this model.\n"
    )
    verbose = runner.invoke(main, ["show", "tiny", "-v"])
    assert "  Metadata\n" in verbose.stdout
    assert fake.bodies("POST", "/api/show")[-1] == {"model": "tiny", "verbose": True}


def test_show_rejects_two_views(runner: CliRunner) -> None:
    result = runner.invoke(main, ["show", "tiny", "--license", "--template"])
    assert result.exit_code == 2
    assert "only one of" in result.output


def test_show_missing_model_is_error_exit_1(runner: CliRunner, fake: FakeOllama) -> None:
    fake.on("POST", "/api/show", (404, {"error": "model 'nope' not found"}))
    result = runner.invoke(main, ["show", "nope"])
    assert result.exit_code == 1
    assert result.stderr == "Error: model 'nope' not found\n"


def test_no_server_is_error_exit_1(tmp_path: Path) -> None:
    runner = CliRunner(env={"OLLAMA_HOST": f"127.0.0.1:{_closed_port()}"})
    result = runner.invoke(main, ["ls"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: could not connect to a Power server at http://")


def test_rm_cp_stop(runner: CliRunner, fake: FakeOllama) -> None:
    fake.on("POST", "/api/generate", (200, {"done": True, "done_reason": "unload"}))
    fake.on("DELETE", "/api/delete", (200, None))
    fake.on("POST", "/api/copy", (200, None))
    result = runner.invoke(main, ["rm", "a", "b"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "deleted 'a'\ndeleted 'b'\n"
    assert fake.bodies("DELETE", "/api/delete") == [{"model": "a"}, {"model": "b"}]
    result = runner.invoke(main, ["cp", "a", "c"])
    assert result.stdout == "copied 'a' to 'c'\n"
    assert fake.bodies("POST", "/api/copy") == [{"source": "a", "destination": "c"}]
    assert runner.invoke(main, ["stop", "a"]).exit_code == 0
    assert fake.bodies("POST", "/api/generate")[-1] == {
        "model": "a", "prompt": "", "keep_alive": 0, "stream": False
    }  # fmt: skip


def test_stop_unknown_model(runner: CliRunner, fake: FakeOllama) -> None:
    fake.on("POST", "/api/generate", (404, {"error": "model 'x' not found"}))
    result = runner.invoke(main, ["stop", "x"])
    assert result.exit_code == 1
    assert result.stderr == 'Error: couldn\'t find model "x" to stop\n'


def test_rm_needs_a_model(runner: CliRunner) -> None:
    assert runner.invoke(main, ["rm"]).exit_code == 2


def test_pull_progress_and_error(runner: CliRunner, fake: FakeOllama) -> None:
    fake.on("POST", "/api/pull", (200, _events()))
    result = runner.invoke(main, ["pull", "tiny", "--insecure"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == "pulling manifest"
    assert result.stderr.splitlines()[-1] == "success"
    assert fake.bodies("POST", "/api/pull") == [{"model": "tiny", "insecure": True, "stream": True}]
    fake.on("POST", "/api/push", (200, [{"status": "retrieving manifest"}, {"error": "denied"}]))
    result = runner.invoke(main, ["push", "me/tiny"])
    assert result.exit_code == 1
    assert result.stderr == "retrieving manifest\nError: denied\n"


def test_create_uploads_local_files(runner: CliRunner, fake: FakeOllama, tmp_path: Path) -> None:
    (tmp_path / "weights.gguf").write_bytes(b"GGUF-weights")
    digest = "sha256:" + hashlib.sha256(b"GGUF-weights").hexdigest()
    (tmp_path / "Modelfile").write_text(
        'FROM ./weights.gguf\nPARAMETER temperature 0.5\nPARAMETER stop "<|end|>"\n'
        'SYSTEM """You are terse."""\n'
    )
    fake.on("POST", f"/api/blobs/{digest}", (201, None))
    fake.on("POST", "/api/create", (200, [{"status": "parsing GGUF"}, {"status": "success"}]))
    result = runner.invoke(
        main, ["create", "mine", "-f", str(tmp_path / "Modelfile"), "-q", "q8_0"]
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == "parsing GGUF\nsuccess\n"
    assert fake.bodies("POST", "/api/create") == [
        {
            "model": "mine",
            "files": {"weights.gguf": digest},
            "system": "You are terse.",
            "parameters": {"temperature": 0.5, "stop": ["<|end|>"]},
            "quantize": "q8_0",
            "stream": True,
        }
    ]


def test_create_uploads_a_projector_beside_the_model(
    runner: CliRunner, fake: FakeOllama, tmp_path: Path
) -> None:
    digests = {}
    for name in ("weights.gguf", "mmproj.gguf"):
        (tmp_path / name).write_bytes(b"GGUF-" + name.encode())
        digests[name] = "sha256:" + hashlib.sha256(b"GGUF-" + name.encode()).hexdigest()
        fake.on("POST", f"/api/blobs/{digests[name]}", (201, None))
    (tmp_path / "Modelfile").write_text("FROM ./weights.gguf\nFROM ./mmproj.gguf\n")
    fake.on("POST", "/api/create", (200, [{"status": "success"}]))
    result = runner.invoke(main, ["create", "mine", "-f", str(tmp_path / "Modelfile")])
    assert result.exit_code == 0, result.output
    assert fake.bodies("POST", "/api/create") == [
        {"model": "mine", "files": digests, "stream": True}
    ]
    (tmp_path / "Modelfile").write_text("FROM base\nFROM ./gone.gguf\n")
    missing = runner.invoke(main, ["create", "mine", "-f", str(tmp_path / "Modelfile")])
    assert missing.exit_code == 1
    assert "only the first FROM may name a model" in missing.stderr


def test_create_uploads_an_adapter_for_a_named_base(
    runner: CliRunner, fake: FakeOllama, tmp_path: Path
) -> None:
    """ADAPTER ./lora.gguf is uploaded and sent as a digest; the server reads no path."""
    (tmp_path / "lora.gguf").write_bytes(b"GGUF-lora")
    digest = "sha256:" + hashlib.sha256(b"GGUF-lora").hexdigest()
    proj = "sha256:" + "c" * 64
    (tmp_path / "Modelfile").write_text(f"FROM smollm2\nFROM @{proj}\nADAPTER ./lora.gguf\n")
    fake.on("POST", f"/api/blobs/{digest}", (201, None))
    fake.on("POST", "/api/create", (200, [{"status": "success"}]))
    result = runner.invoke(main, ["create", "mine", "-f", str(tmp_path / "Modelfile")])
    assert result.exit_code == 0, result.output
    assert fake.bodies("POST", "/api/create") == [
        {
            "model": "mine",
            "from": "smollm2",
            "files": {"sha256-" + "c" * 64: proj},
            "adapters": {"lora.gguf": digest},
            "stream": True,
        }
    ]


def test_create_from_a_missing_local_file(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "Modelfile").write_text("FROM ./gone.gguf\n")
    result = runner.invoke(main, ["create", "mine", "-f", str(tmp_path / "Modelfile")])
    assert result.exit_code == 1
    assert result.stderr == "Error: FROM ./gone.gguf: no such file or directory\n"
    (tmp_path / "Modelfile").write_text("FROM smollm2\nADAPTER gone.gguf\n")
    result = runner.invoke(main, ["create", "mine", "-f", str(tmp_path / "Modelfile")])
    assert result.exit_code == 1
    assert result.stderr == "Error: adapter not found: gone.gguf\n"


def test_create_from_model_name(
    runner: CliRunner, fake: FakeOllama, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "Modelfile").write_text("FROM tiny:latest\n")
    fake.on("POST", "/api/create", (200, [{"status": "success"}]))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(main, ["create", "mine"])  # ./Modelfile by default
    assert result.exit_code == 0, result.output
    assert fake.bodies("POST", "/api/create") == [
        {"model": "mine", "from": "tiny:latest", "stream": True}
    ]


def test_create_bad_modelfile(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "Modelfile").write_text("BOGUS x\n")
    result = runner.invoke(main, ["create", "mine", "-f", str(tmp_path / "Modelfile")])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: (line ")
    missing = runner.invoke(main, ["create", "mine", "-f", str(tmp_path / "nope")])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("Error: reading ")


def _chat_stream(*tokens: str) -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = [
        {"message": {"role": "assistant", "content": t}, "done": False} for t in tokens
    ]
    final = {
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "total_duration": 912_000_000,
        "eval_count": 37,
        "eval_duration": 790_000_000,
    }
    return [*chunks, final]


def _serve_model(fake: FakeOllama, capabilities: list[str] | None = None) -> None:
    fake.on("POST", "/api/show", (200, {**_SHOW, "capabilities": capabilities or ["completion"]}))
    fake.on("POST", "/api/generate", (200, {"done": True, "done_reason": "load"}))
    fake.on("POST", "/api/chat", (200, _chat_stream("Rayleigh", " scattering.")))


def test_run_one_shot(runner: CliRunner, fake: FakeOllama) -> None:
    _serve_model(fake)
    result = runner.invoke(
        main, ["run", "tiny", "why", "blue?", "--keepalive", "10m", "--verbose", "--think=low"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "Rayleigh scattering.\n\n"
    assert "eval count:           37 token(s)\n" in result.stderr
    assert fake.bodies("POST", "/api/generate") == []  # one answer: no separate load (Ollama)
    assert fake.bodies("POST", "/api/chat") == [
        {"model": "tiny", "messages": [{"role": "user", "content": "why blue?"}],
         "keep_alive": "10m", "think": "low", "stream": True}
    ]  # fmt: skip


def test_run_prepends_piped_stdin(runner: CliRunner, fake: FakeOllama) -> None:
    _serve_model(fake)
    result = runner.invoke(main, ["run", "tiny", "summarise", "--format", "json"], input="text\n")
    assert result.exit_code == 0, result.output
    body = fake.bodies("POST", "/api/chat")[0]
    assert body["messages"] == [{"role": "user", "content": "text\n summarise"}]
    assert body["format"] == "json"


def test_run_thinking_output(runner: CliRunner, fake: FakeOllama) -> None:
    _serve_model(fake)
    stream = [{"message": {"role": "assistant", "content": "", "thinking": "hmm"}, "done": False},
              *_chat_stream("Hi")]  # fmt: skip
    fake.on("POST", "/api/chat", (200, stream))
    result = runner.invoke(main, ["run", "tiny", "hello"])
    assert result.stdout == "Thinking...\nhmm\n...done thinking.\n\nHi\n\n"
    result = runner.invoke(main, ["run", "tiny", "hello", "--hidethinking"])
    assert result.stdout == "Hi\n\n"


def test_run_pulls_missing_model(runner: CliRunner, fake: FakeOllama) -> None:
    _serve_model(fake)
    shows = iter([(404, {"error": "model 'tiny' not found"}), (200, _SHOW)])
    fake.on("POST", "/api/show", lambda _body: next(shows))
    fake.on("POST", "/api/pull", (200, [{"status": "pulling manifest"}, {"status": "success"}]))
    result = runner.invoke(main, ["run", "tiny", "hi"])
    assert result.exit_code == 0, result.output
    assert result.stderr == "pulling manifest\nsuccess\n"
    assert result.stdout == "Rayleigh scattering.\n\n"


def test_run_embedding_model(runner: CliRunner, fake: FakeOllama) -> None:
    _serve_model(fake, ["embedding"])
    fake.on("POST", "/api/embed", (200, {"embeddings": [[0.5, -0.25]]}))
    result = runner.invoke(main, ["run", "embedder", "hello"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "[0.5,-0.25]\n"


@pytest.mark.parametrize(
    "args",
    [["run"], ["run", "tiny", "--format", "yaml"], ["run", "tiny", "--think=maybe", "x"],
     ["run", "tiny", "--keepalive", "3 days", "x"]],
)  # fmt: skip
def test_run_usage_errors(runner: CliRunner, args: list[str]) -> None:
    assert runner.invoke(main, args).exit_code == 2


def test_serve_passes_only_set_flags(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, object]] = []

    def run_server(cli_overrides: dict[str, object]) -> int:
        calls.append(cli_overrides)
        return 3

    module = types.ModuleType("power.serve")
    module.run_server = run_server  # type: ignore[attr-defined]
    module.ListenError = type("ListenError", (Exception,), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "power.serve", module)
    result = runner.invoke(main, ["serve", "--port", "1234", "--debug", "--keep-alive", "1h"])
    assert result.exit_code == 3
    assert runner.invoke(main, ["start"]).exit_code == 3
    assert calls == [{"port": 1234, "keep_alive": "1h", "debug": 1}, {}]
    assert "OLLAMA_HOST" in runner.invoke(main, ["serve", "--help"]).output


# -- interactive -----------------------------------------------------------------------------


def test_interactive_session(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    _serve_model(fake)
    lines = iter(
        ["/set parameter temperature 0.5", "/set system Be brief.", "hello", '"""two', 'lines"""',
         "/show license", "/nonsense", "/clear", "again", "/bye", "never read"]
    )  # fmt: skip
    reader = ScriptedLines(lines)
    client = Client.from_env({"OLLAMA_HOST": fake.url})
    session = Session(model="tiny")
    interactive(client, session, reader)
    prompts = reader.prompts
    out = capsys.readouterr().out
    assert "Set parameter 'temperature' to '0.5'\n" in out
    assert "Set system message.\n" in out
    assert "Rayleigh scattering.\n\n" in out
    assert "MIT\n" in out
    assert "Unknown command '/nonsense'. Type /? for help\n" in out
    assert "Cleared session context\n" in out
    assert prompts == [">>> "] * 4 + ["... "] + [">>> "] * 5
    chats = fake.bodies("POST", "/api/chat")
    system = {"role": "system", "content": "Be brief."}
    assert chats[0]["options"] == {"temperature": 0.5}
    assert chats[0]["messages"] == [system, {"role": "user", "content": "hello"}]
    assert chats[1]["messages"][-3:] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Rayleigh scattering."},
        {"role": "user", "content": "two\nlines"},
    ]
    assert chats[2]["messages"] == [system, {"role": "user", "content": "again"}]


def test_interactive_eof_and_server_error(
    fake: FakeOllama, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.on("POST", "/api/chat", (500, {"error": "runner crashed"}))
    session = Session(model="tiny")
    interactive(Client.from_env({"OLLAMA_HOST": fake.url}), session, ScriptedLines(["hi"]))
    assert "Error: runner crashed\n" in capsys.readouterr().err
    assert session.messages == []


def test_render_show_info_lists_a_vision_projector() -> None:
    resp = {
        "details": {"parameter_size": "134.52M", "quantization_level": "Q4_1"},
        "capabilities": ["completion", "vision"],
        "projector_info": {
            "general.architecture": "clip",
            "general.parameter_count": 303_000_000,
            "clip.vision.embedding_length": 1024,
            "clip.vision.projection_dim": 768,
        },
    }
    out = render_show_info(resp)
    assert (
        "  Capabilities\n    completion\n    vision\n\n"
        "  Projector\n"
        "    architecture        clip\n"
        "    parameters          303M\n"
        "    embedding length    1024\n"
        "    dimensions          768\n"
    ) in out
