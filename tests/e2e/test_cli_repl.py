"""The ``power run`` REPL on a real terminal (tmux) against ``power serve``.

SmolLM2 answers (as ``brief``: greedy and a few tokens long); the Ctrl+C case runs on the fake
``count`` engine, whose answer would go on for minutes, so that it is certainly still running
when the key is pressed and the server has something to cancel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

from tests.support.server import Server, power_server
from tests.support.terminal import PROMPT, terminal
from tests.support.wait import wait_until

POWER = str(Path(sys.executable).with_name("power"))  # the console script
BRIEF = {"num_predict": 6, "temperature": 0, "seed": 1}


def _create(server: Server, name: str, **fields: object) -> None:
    body = {"model": name, "from": "smollm2", "stream": False, **fields}
    resp = httpx.post(f"{server.url}/api/create", json=body, timeout=120)
    assert resp.status_code == 200, resp.text


@pytest.fixture
def client_env(server_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return dict(server_env, A3S_POWER_HOME=str(tmp_path / "client"))


@pytest.fixture
def brief(server: Server, client_env: dict[str, str]) -> dict[str, str]:
    """The client's environment, pointed at a server that has the model ``brief``."""
    _create(server, "brief", parameters=BRIEF)
    return dict(client_env, OLLAMA_HOST=server.url)


def _in_flight(server: Server) -> int:
    models = httpx.get(f"{server.url}/api/ps", timeout=10).json()["models"]
    return sum(int(m.get("requests_in_flight", 0)) for m in models)


def test_history_survives_a_second_session_and_ctrl_d_exits(brief: dict[str, str]) -> None:
    with terminal(brief, [POWER, "run", "brief"]) as term:
        term.wait_prompt(0)
        term.ask("/show license")
        term.type_line("/bye")
        assert term.wait_exit() == 0
    home = Path(brief["A3S_POWER_HOME"])
    assert (home / "history").read_text().splitlines()[-2:] == ["/show license", "/bye"]

    with terminal(brief, [POWER, "run", "brief"]) as term:
        term.wait_prompt(0)
        term.send("Up")
        term.wait(lambda s: term.lines(s)[-1] == ">>> /bye", "the last line recalled")
        term.send("Up")
        term.wait(lambda s: term.lines(s)[-1] == ">>> /show license", "the line before it")
        before = term.prompts()
        term.send("Enter")  # runs the recalled line
        screen = term.wait_prompt(before)
        assert screen.splitlines()[-2] == "No license was specified for this model."
        term.send("Up")
        term.wait(lambda s: term.lines(s)[-1] == ">>> /show license", "it recalled again")
        term.send("C-c")  # at the prompt: drops the line, a hint, and the REPL goes on
        term.wait_text("Use Ctrl + d or /bye to exit.")
        term.wait(lambda s: term.lines(s)[-1] == PROMPT, "an empty prompt")
        term.send("C-d")
        assert term.wait_exit() == 0


def test_nohistory_records_nothing(brief: dict[str, str]) -> None:
    env = dict(brief, OLLAMA_NOHISTORY="1")
    with terminal(env, [POWER, "run", "brief"]) as term:
        term.wait_prompt(0)
        term.ask("/show template")
        term.send("C-d")
        assert term.wait_exit() == 0
    assert not (Path(brief["A3S_POWER_HOME"]) / "history").exists()


def test_ctrl_c_stops_the_answer_and_the_next_prompt_works(
    server_env: dict[str, str], client_env: dict[str, str], tmp_path: Path
) -> None:
    engine_env = dict(server_env, A3S_POWER_RUNNER_ENGINE="fake:count?delay=0.05")
    with power_server(engine_env, tmp_path / "server.log") as server:
        env = dict(client_env, OLLAMA_HOST=server.url)
        with terminal(env, [POWER, "run", "smollm2"]) as term:
            term.wait_prompt(0)
            term.ask("/set parameter num_ctx 8192")
            term.type_line("count for me")
            term.wait(lambda s: " 5 6 " in s.rsplit("count for me", 1)[-1], "counting")
            assert _in_flight(server) == 1
            term.send("C-c")
            term.wait_prompt(2)
            wait_until(lambda: _in_flight(server) == 0, timeout_s=30)  # the server cancelled
            assert "Use Ctrl + d" not in term.screen()  # the REPL, not the prompt, took it

            term.ask("/set parameter num_predict 3")
            screen = term.ask("again")
            assert screen.rsplit(">>> again", 1)[-1].split() == ["1", "2", "3", PROMPT]


def test_save_then_run_the_saved_model_resumes(brief: dict[str, str], server: Server) -> None:
    with terminal(brief, [POWER, "run", "brief"]) as term:
        term.wait_prompt(0)
        term.ask("/set system You are terse.")
        term.ask("Say hi")
        screen = term.ask("/save brief-chat")
        assert "Created new model 'brief-chat'" in screen
        term.type_line("/bye")
        term.wait_exit()
    saved = httpx.post(f"{server.url}/api/show", json={"model": "brief-chat"}).json()
    user, assistant = saved["messages"]
    assert user == {"role": "user", "content": "Say hi"}
    assert assistant["role"] == "assistant"
    assert assistant["content"]
    assert saved["system"] == "You are terse."

    with terminal(brief, [POWER, "run", "brief-chat"]) as term:
        screen = term.wait_prompt(1)
        assert term.lines()[0] == ">>> Say hi"  # the conversation so far, replayed
        screen = term.ask("/show modelfile")
        assert "MESSAGE user Say hi" in screen
        assert f"MESSAGE assistant {assistant['content'].splitlines()[0]}" in screen
        assert "SYSTEM You are terse." in screen
        term.send("C-d")
        term.wait_exit()


def test_load_switches_the_model_and_keeps_the_conversation(
    brief: dict[str, str], server: Server
) -> None:
    _create(server, "other", parameters=BRIEF, system="You are the other one.")
    with terminal(brief, [POWER, "run", "brief"]) as term:
        term.wait_prompt(0)
        term.ask("Hello")
        screen = term.ask("/load nobody")
        assert "Couldn't find model 'nobody'" in screen
        screen = term.ask("/load other")
        assert "Loading model 'other'" in screen
        screen = term.ask("/show system")
        assert screen.splitlines()[-3] == "You are the other one."
        term.ask("And you?")
        term.ask("/save both")
        term.type_line("/bye")
        term.wait_exit()
    loaded = {m["name"] for m in httpx.get(f"{server.url}/api/ps").json()["models"]}
    assert "other:latest" in loaded
    saved = httpx.post(f"{server.url}/api/show", json={"model": "both"}).json()
    assert [m["content"] for m in saved["messages"] if m["role"] == "user"] == [
        "Hello",
        "And you?",
    ]
    assert saved["system"] == "You are the other one."
