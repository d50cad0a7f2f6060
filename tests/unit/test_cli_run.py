"""`power run` as an Ollama user types it: flags, piped input, images, the REPL's commands,
and the output details (thinking markers, word wrap, embedding vectors, version, help, ls order).

Requests go to the canned server of `tests.support.fake_ollama`; the REPL reads scripted lines.
The same forms run through the real console script against `power serve` in
`tests/e2e/test_cli_run.py` and, on a terminal, in `tests/e2e/test_cli_repl.py`.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from power.cli import main
from power.cli.chat import Session
from power.cli.client import Client
from power.cli.display import GREY, RESET, ReplyPrinter, WordWrapper
from power.cli.format import go_float32_json
from power.cli.history import History
from power.cli.images import ImageError, extract_images, starts_with_image
from power.cli.repl import interactive
from tests.support.fake_ollama import FakeOllama, ScriptedLines

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def _stream(*tokens: str, thinking: str = "") -> list[dict[str, Any]]:
    chunks: list[dict[str, Any]] = []
    if thinking:
        chunks.append({"message": {"role": "assistant", "content": "", "thinking": thinking}})
    chunks += [{"message": {"role": "assistant", "content": t}, "done": False} for t in tokens]
    final = {
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "eval_count": 2,
        "eval_duration": 1_000_000_000,
        "total_duration": 1_500_000_000,
    }
    return [*chunks, final]


MODELS: dict[str, dict[str, Any]] = {
    "tiny": {
        "capabilities": ["completion"],
        "parameters": "temperature                    0.7",
        "modelfile": "FROM tiny\n",
        "system": "You are tiny.",
    },
    "thinker": {"capabilities": ["completion", "thinking"]},
    "eyes": {"capabilities": ["completion", "vision"]},
    "embedder": {"capabilities": ["embedding"]},
    "saved": {"capabilities": ["completion"], "messages": [{"role": "user", "content": "earlier"}]},
}


def _show(body: Any) -> tuple[int, Any]:
    name = body["model"]
    if name not in MODELS:
        return 404, {"error": f"model '{name}' not found"}
    return 200, {"details": {"family": "llama"}, **MODELS[name]}


def _serve(fake: FakeOllama) -> None:
    fake.on("POST", "/api/show", _show)
    fake.on("POST", "/api/generate", (200, {"done": True, "done_reason": "load"}))
    fake.on("POST", "/api/chat", (200, _stream("Hi", " there.")))
    fake.on("POST", "/api/create", (200, [{"status": "success"}]))


# -- flags -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "think", "content"),
    [
        (["--think", "why?"], True, "why?"),  # a bare --think takes no value
        (["why?", "--think"], True, "why?"),
        (["--think=false", "why?"], False, "why?"),
        (["--think=high", "why", "so?"], "high", "why so?"),
        (["--", "--think"], None, "--think"),  # after "--" it is the prompt
    ],
)
def test_think_flag_takes_a_value_only_after_equals(
    runner: CliRunner, fake: FakeOllama, args: list[str], think: object, content: str
) -> None:
    _serve(fake)
    result = runner.invoke(main, ["run", "tiny", *args])
    assert result.exit_code == 0, result.output
    body = fake.bodies("POST", "/api/chat")[0]
    assert body.get("think") == think
    assert body["messages"] == [{"role": "user", "content": content}]


def test_a_thinking_model_thinks_unless_told_not_to(runner: CliRunner, fake: FakeOllama) -> None:
    _serve(fake)
    assert runner.invoke(main, ["run", "thinker", "q"]).exit_code == 0
    assert runner.invoke(main, ["run", "thinker", "q", "--think=false"]).exit_code == 0
    assert [b.get("think") for b in fake.bodies("POST", "/api/chat")] == [True, False]


@pytest.mark.parametrize(
    "args",
    [
        ["--think=maybe", "x"],
        ["--keepalive", "5", "x"],  # Go's ParseDuration wants a unit
        ["--format", "yaml", "x"],
        ["--truncate=perhaps", "x"],
        ["--dimensions", "-1", "x"],
    ],
)
def test_bad_flag_values_are_usage_errors(runner: CliRunner, args: list[str]) -> None:
    result = runner.invoke(main, ["run", "tiny", *args])
    assert result.exit_code == 2
    assert "Error: Invalid value" in result.stderr


def test_format_keepalive_and_verbose(runner: CliRunner, fake: FakeOllama) -> None:
    _serve(fake)
    args = ["run", "tiny", "q", "--format", "json", "--keepalive", "1h30m", "--verbose"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    body = fake.bodies("POST", "/api/chat")[0]
    assert (body["format"], body["keep_alive"]) == ("json", "1h30m")
    assert result.stderr == (
        "total duration:       1.5s\n"
        "eval count:           2 token(s)\n"
        "eval duration:        1s\n"
        "eval rate:            2.00 tokens/s\n"
    )


# -- piped input -----------------------------------------------------------------------------


def test_piped_text_comes_before_the_prompt(runner: CliRunner, fake: FakeOllama) -> None:
    _serve(fake)
    result = runner.invoke(main, ["run", "tiny", "summarise this:"], input="line one\nline two\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Hi there.\n\n"  # not a terminal: no escapes, no spinner
    content = fake.bodies("POST", "/api/chat")[0]["messages"][0]["content"]
    assert content == "line one\nline two\n summarise this:"


def test_piped_text_alone_is_the_prompt(runner: CliRunner, fake: FakeOllama) -> None:
    _serve(fake)
    assert runner.invoke(main, ["run", "tiny"], input="just this").exit_code == 0
    assert fake.bodies("POST", "/api/chat")[0]["messages"][0]["content"] == "just this"


def test_nothing_to_ask_only_loads_the_model(runner: CliRunner, fake: FakeOllama) -> None:
    _serve(fake)
    result = runner.invoke(main, ["run", "tiny", "--keepalive", "10m"], input="")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert fake.bodies("POST", "/api/chat") == []
    assert fake.bodies("POST", "/api/generate") == [
        {"model": "tiny", "prompt": "", "stream": False, "keep_alive": "10m"}
    ]


# -- embedding models ------------------------------------------------------------------------


def test_embedding_model_prints_the_vector_as_go_json(runner: CliRunner, fake: FakeOllama) -> None:
    _serve(fake)
    vector = [0.012299999594688416, -0.5, 1.5e-7, 0.0]
    fake.on("POST", "/api/embed", (200, {"embeddings": [vector]}))
    result = runner.invoke(main, ["run", "embedder", "hello", "world", "--dimensions", "4"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "[0.0123,-0.5,1.5e-7,0]\n"
    runner.invoke(main, ["run", "embedder", "x", "--truncate"])
    runner.invoke(main, ["run", "embedder", "x", "--truncate=false", "--keepalive", "0"])
    assert fake.bodies("POST", "/api/embed") == [
        {"model": "embedder", "input": "hello world", "dimensions": 4},
        {"model": "embedder", "input": "x", "truncate": True},
        {"model": "embedder", "input": "x", "truncate": False, "keep_alive": "0"},
    ]


def test_embedding_model_needs_text(runner: CliRunner, fake: FakeOllama) -> None:
    _serve(fake)
    result = runner.invoke(main, ["run", "embedder"], input="")
    assert result.exit_code == 2
    assert "embedding models require input text" in result.stderr


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.5, "0.5"),
        (-0.0, "-0"),
        (1e22, "1e+22"),
        (123456789.0, "123456790"),
        (3e-6, "0.000003"),
        (9.99e-7, "9.99e-7"),
        (1.2e-12, "1.2e-12"),
    ],
)
def test_go_float32_json(value: float, text: str) -> None:
    assert go_float32_json([value, value]) == f"[{text},{text}]"


# -- images ----------------------------------------------------------------------------------


def test_extract_images_quoted_escaped_and_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "my cat.png").write_bytes(PNG)
    (tmp_path / "b.JPG").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 8)
    (tmp_path / "c.webp").write_bytes(b"RIFF\0\0\0\0WEBPVP8 ")
    escaped = str(tmp_path / "my cat.png").replace(" ", "\\ ")
    text = f"compare {escaped} with '{tmp_path / 'my cat.png'}' and ~/b.JPG, ~/c.webp"
    prompt = extract_images(text)
    assert prompt.text == "compare with and ,"
    assert prompt.paths == [tmp_path / "my cat.png"] * 2 + [tmp_path / "b.JPG", tmp_path / "c.webp"]
    assert base64.b64decode(prompt.images[0]) == PNG
    assert extract_images("no pictures/here.png at all").images == []  # not a path: no / first


def test_extract_images_rejects_missing_and_non_images(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"couldn't add image '.*nope.png': No such file"):
        extract_images(f"what is {tmp_path}/nope.png")
    (tmp_path / "fake.gif").write_text("not a gif")
    with pytest.raises(ImageError, match="not a PNG, JPEG, GIF, BMP or WebP image"):
        extract_images(f"'{tmp_path}/fake.gif'")


def test_run_sends_images_to_a_vision_model(
    runner: CliRunner, fake: FakeOllama, tmp_path: Path
) -> None:
    _serve(fake)
    (tmp_path / "x.png").write_bytes(PNG)
    result = runner.invoke(main, ["run", "eyes", f"what is in {tmp_path}/x.png?"])
    assert result.exit_code == 0, result.output
    assert f"Added image '{tmp_path}/x.png'\n" in result.stderr
    message = fake.bodies("POST", "/api/chat")[0]["messages"][0]
    assert message == {
        "role": "user",
        "content": "what is in ?",
        "images": [base64.b64encode(PNG).decode()],
    }
    missing = runner.invoke(main, ["run", "eyes", f"and {tmp_path}/gone.jpg"])
    assert missing.exit_code == 1
    assert missing.stderr.strip().splitlines() == [
        f"Error: couldn't add image '{tmp_path}/gone.jpg': No such file or directory"
    ]
    # a model without vision gets the text as typed
    assert runner.invoke(main, ["run", "tiny", f"{tmp_path}/x.png"]).exit_code == 0
    assert fake.bodies("POST", "/api/chat")[-1]["messages"][0] == {
        "role": "user",
        "content": f"{tmp_path}/x.png",
    }


def test_image_path_at_line_start_is_not_a_command() -> None:
    assert starts_with_image("/tmp/a\\ b.png what is it")
    assert not starts_with_image("/set parameter x.png")


# -- the REPL --------------------------------------------------------------------------------


def _repl(
    fake: FakeOllama, lines: list[str], model: str = "tiny", **kw: Any
) -> tuple[Session, ScriptedLines]:
    _serve(fake)
    session = Session(model=model, **kw)
    reader = ScriptedLines(lines)
    interactive(Client.from_env({"OLLAMA_HOST": fake.url}), session, reader)
    return session, reader


def test_repl_set_commands(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    _repl(
        fake,
        [
            "/set think low",
            "a",
            "/set nothink",
            "/set format json",
            "b",
            "/set noformat",
            "/set format yaml",
            "/set parameter stop <end> </s>",
            "/set parameter top_k 5",
            "/set parameter top_k many",
            "/set parameter bogus 1",
            "c",
            '/set system """Be',
            'brief."""',
            "/set verbose",
            "/set quiet",
            "/set wordwrap",
            "/set nowordwrap",
            "/set nonsense",
        ],
    )
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "Set 'think' mode to 'low'.",
        "Hi there.",
        "",
        "Set 'nothink' mode.",
        "Set format to 'json' mode.",
        "Hi there.",
        "",
        "Disabled format.",
        "Invalid or missing format. For 'json' mode use '/set format json'",
        "Set parameter 'stop' to '<end>, </s>'",
        "Set parameter 'top_k' to '5'",
        'Couldn\'t set parameter: "invalid int value [many]"',
        "Couldn't set parameter: \"unknown parameter 'bogus'\"",
        "Hi there.",
        "",
        "Set system message.",
        "Set 'verbose' mode.",
        "Set 'quiet' mode.",
        "Set 'wordwrap' mode.",
        "Set 'nowordwrap' mode.",
        "Unknown command '/set nonsense'. Type /? for help",
        "",
    ]
    assert err == 'warning: model "tiny" does not support thinking output\n' * 2
    a, b, c = fake.bodies("POST", "/api/chat")
    assert (a["think"], b["think"], b["format"]) == ("low", False, "json")
    assert "format" not in c
    assert c["options"] == {"stop": ["<end>", "</s>"], "top_k": 5}


def test_repl_system_then_clear_keeps_the_system(fake: FakeOllama) -> None:
    session, _ = _repl(fake, ["/set system Be brief.", "hello", "/clear", "again"])
    first, second = fake.bodies("POST", "/api/chat")
    system = {"role": "system", "content": "Be brief."}
    assert first["messages"] == [system, {"role": "user", "content": "hello"}]
    assert second["messages"] == [system, {"role": "user", "content": "again"}]
    assert session.messages[-1] == {"role": "assistant", "content": "Hi there."}


def test_repl_history_toggles(fake: FakeOllama) -> None:
    _, reader = _repl(fake, ["one", "/set nohistory", "two", "/set history", "three"])
    # a line is recorded as it is entered, before it runs (as in Ollama)
    assert reader.recorded == ["one", "/set nohistory", "three"]


def test_repl_show(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    _repl(
        fake,
        [
            "/show parameters",
            "/set parameter seed 42",
            "/show parameters",
            "/show system",
            "/set system Mine.",
            "/show system",
            "/show license",
            "/show template",
            "/show modelfile",
            "/show bogus",
        ],
    )
    assert capsys.readouterr().out.splitlines() == [
        "Model defined parameters:",
        "  temperature                    0.7",
        "",
        "Set parameter 'seed' to '42'",
        "Model defined parameters:",
        "  temperature                    0.7",
        "",
        "User defined parameters:",
        "  seed                           42",
        "",
        "You are tiny.",
        "",
        "Set system message.",
        "Mine.",
        "",
        "No license was specified for this model.",
        "No prompt template was specified for this model.",
        "FROM tiny",
        "",
        "Unknown command '/show bogus'. Type /? for help",
        "",
    ]
    shows = fake.bodies("POST", "/api/show")
    assert shows[-1] == {"model": "tiny", "system": "Mine.", "options": {"seed": 42}}


def test_repl_load_switches_model_and_keeps_the_conversation(
    fake: FakeOllama, capsys: pytest.CaptureFixture[str]
) -> None:
    session, _ = _repl(fake, ["hello", "/load nobody", "/load eyes", "more", "/load"])
    assert session.model == "eyes"
    assert session.vision
    out = capsys.readouterr().out
    assert "Loading model 'nobody'\nCouldn't find model 'nobody'\n" in out
    assert "Loading model 'eyes'\n" in out
    assert out.endswith("Usage:\n  /load <modelname>\n\n")
    assert fake.bodies("POST", "/api/generate") == [
        {"model": "eyes", "prompt": "", "stream": False}
    ]
    last = fake.bodies("POST", "/api/chat")[-1]
    assert last["model"] == "eyes"
    assert [m["content"] for m in last["messages"]] == ["hello", "Hi there.", "more"]


def test_repl_save_sends_the_session_as_a_model(
    fake: FakeOllama, capsys: pytest.CaptureFixture[str]
) -> None:
    _repl(
        fake,
        ["/set system Terse.", "/set parameter temperature 0.1", "hi", "/save mine", "/save"],
        model="saved",
        loaded_messages=[{"role": "user", "content": "earlier"}],
    )
    assert "Created new model 'mine'\n" in capsys.readouterr().out
    assert fake.bodies("POST", "/api/create") == [
        {
            "model": "mine",
            "from": "saved",
            "system": "Terse.",
            "parameters": {"temperature": 0.1},
            "stream": True,
            "messages": [
                {"role": "user", "content": "earlier"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "Hi there."},
            ],
        }
    ]


def test_repl_help_texts(fake: FakeOllama, capsys: pytest.CaptureFixture[str]) -> None:
    _repl(fake, ["/?", "/help shortcuts", "/? set", "/? show", "/set", "/show", "/set parameter"])
    err = capsys.readouterr().err
    assert err.count("Available Commands:") == 5
    assert "  /load <model>   Load a session or model\n" in err
    assert "  /? shortcuts    Help for keyboard shortcuts\n" in err
    assert "  Ctrl + c            Stop the model from responding\n" in err
    assert "  /set nohistory         Disable history\n" in err
    assert "  /show modelfile    Show Modelfile for this model\n" in err
    assert "Available Parameters:\n" in err
    assert "Use /path/to/file" not in err


def test_repl_images_for_a_vision_model(
    fake: FakeOllama, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.png").write_bytes(PNG)
    session, _ = _repl(
        fake,
        ["/?", f"{tmp_path}/p.png describe", f"{tmp_path}/none.png hm"],
        model="eyes",
        vision=True,
    )
    err = capsys.readouterr().err
    assert "Use /path/to/file to include .jpg, .png, .gif, .bmp or .webp images.\n" in err
    assert f"Added image '{tmp_path}/p.png'\n" in err
    assert f"Error: couldn't add image '{tmp_path}/none.png': No such file or directory\n" in err
    (chat,) = fake.bodies("POST", "/api/chat")
    assert chat["messages"] == [
        {"role": "user", "content": "describe", "images": [base64.b64encode(PNG).decode()]}
    ]
    assert len(session.messages) == 2


# -- line history ----------------------------------------------------------------------------


def test_history_file_is_shared_and_nohistory_records_nothing(tmp_path: Path) -> None:
    env = {"A3S_POWER_HOME": str(tmp_path)}
    first = History(env)
    for line in ("one", "", "two"):
        first.record(line)
    assert (tmp_path / "history").read_text().splitlines() == ["one", "two"]
    History(env).record("three")
    assert (tmp_path / "history").read_text().splitlines() == ["one", "two", "three"]
    off = History({**env, "OLLAMA_NOHISTORY": "1"})
    assert not off.enabled
    off.record("four")
    assert (tmp_path / "history").read_text().splitlines() == ["one", "two", "three"]


@pytest.mark.parametrize(
    ("value", "off"), [("1", True), ("yes", True), ("TRUE", True), ("false", False), ("0", False)]
)
def test_nohistory_reads_as_ollama_reads_a_boolean(tmp_path: Path, value: str, off: bool) -> None:
    """Go's ParseBool, and any other non-empty value true (Ollama's envconfig.Bool)."""
    history = History({"A3S_POWER_HOME": str(tmp_path), "OLLAMA_NOHISTORY": value})
    assert history.enabled is not off


def test_history_keeps_the_last_hundred(tmp_path: Path) -> None:
    history = History({"A3S_POWER_HOME": str(tmp_path)})
    for i in range(150):
        history.record(f"line {i}")
    lines = (tmp_path / "history").read_text().splitlines()
    assert lines == [f"line {i}" for i in range(50, 150)]


# -- output ----------------------------------------------------------------------------------


def test_thinking_is_dimmed_on_a_terminal() -> None:
    out: list[str] = []
    printer = ReplyPrinter(out.append, columns=None, color=True, hide_thinking=False)
    printer.thinking("hmm")
    printer.content("Hi")
    printer.finish()
    bold = "\x1b[1m"
    assert "".join(out) == (
        f"{GREY}{bold}Thinking...\n{RESET}{GREY}hmm\n{GREY}{bold}...done thinking.\n\n{RESET}Hi"
    )


def test_word_wrap_leaves_ollamas_margin() -> None:
    wrap = WordWrapper(20)  # lines of at most 15 columns
    out = wrap.feed("the quick brown fox jumps over") + wrap.flush()
    assert out == "the quick \nbrown fox \njumps over"
    long = WordWrapper(15)
    assert long.feed("a " + "x" * 25 + " b") + long.flush() == "a \nxxxxxxxxxx\nxxxxxxxxxx\nxxxxx b"


def test_version_prefers_power_version(runner: CliRunner, fake: FakeOllama) -> None:
    from power import __version__

    fake.on("GET", "/api/version", (200, {"version": "0.33.0", "power_version": __version__}))
    assert runner.invoke(main, ["--version"]).stdout == f"power version is {__version__}\n"
    fake.on("GET", "/api/version", (200, {"version": "0.33.0", "power_version": "9.0.0"}))
    assert runner.invoke(main, ["-v"]).stdout == (
        f"power version is 9.0.0\nWarning: client version is {__version__}\n"
    )
    fake.on("GET", "/api/version", (200, {"version": __version__}))  # an older Power server
    assert runner.invoke(main, ["-v"]).stdout == f"power version is {__version__}\n"


def test_version_without_a_server(tmp_path: Path) -> None:
    from power import __version__

    closed = CliRunner(env={"OLLAMA_HOST": "127.0.0.1:9", "A3S_POWER_HOME": str(tmp_path)})
    assert closed.invoke(main, ["--version"]).stdout == (
        "Warning: could not connect to a running Power server\n"
        f"Warning: client version is {__version__}\n"
    )


def test_help_command(runner: CliRunner) -> None:
    top = runner.invoke(main, ["help"])
    assert top.exit_code == 0
    assert top.stdout == runner.invoke(main, ["--help"]).stdout
    sub = runner.invoke(main, ["help", "run"])
    assert sub.stdout == runner.invoke(main, ["run", "--help"]).stdout
    assert "--think [=true|false|high|medium|low]" in sub.stdout
    assert runner.invoke(main, ["help", "ls"]).stdout == runner.invoke(main, ["ls", "-h"]).stdout
    bad = runner.invoke(main, ["help", "nope"])
    assert bad.exit_code == 2
    assert 'unknown help topic "nope"' in bad.stderr


def test_ls_newest_first(runner: CliRunner, fake: FakeOllama) -> None:
    now = datetime.now(UTC)
    models = [
        {
            "name": f"m{i}",
            "digest": "ab" * 32,
            "size": 1,
            "modified_at": (now - timedelta(hours=h)).isoformat(),
        }
        for i, h in enumerate([5, 1, 30])
    ]
    fake.on("GET", "/api/tags", (200, {"models": models}))
    rows = runner.invoke(main, ["ls"]).stdout.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["m1", "m0", "m2"]
