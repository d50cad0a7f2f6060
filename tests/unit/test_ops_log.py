"""What a client sends cannot forge log lines: control characters in a request's path (which
arrives percent-decoded), a model name or an error are escaped in the text log, and the JSON log
leaves none raw that json.dumps would."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import httpx

from power.logging import JsonFormatter, TextFormatter, escape_controls
from tests.support.server import power_server

FORGED = "2099-01-01T00:00:00.000 INFO  power.access: POST /api/pull 200 0.1s client=10.0.0.9:1"


def test_a_request_path_cannot_write_a_line_of_its_own_even_unauthenticated(
    clean_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(clean_env, A3S_POWER_API_KEYS="k1", A3S_POWER_RUNNER_ENGINE="fake:echo")
    with power_server(env, tmp_path / "server.log") as server:
        path = "/api/tags%0a" + FORGED.replace(" ", "%20") + "%1b[2J%c2%9b%e2%80%a8"
        assert httpx.get(server.url + path).status_code == 401
        assert server.stop() == 0
    text = (tmp_path / "server.log").read_text()
    assert not any(line.startswith("2099-") for line in text.splitlines())
    assert "\x1b" not in text
    assert "\x9b" not in text
    assert "\u2028" not in text
    line = next(x for x in text.splitlines() if "power.access: GET /api/tags" in x)
    assert "/api/tags\\n2099-01-01T00:00:00.000 INFO  power.access: POST" in line
    assert "\\x1b[2J\\x9b\\u2028 401 " in line


def record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("power.x", logging.ERROR, __file__, 1, msg, args, info)


def test_the_text_format_escapes_controls_in_messages_and_tracebacks() -> None:
    text = TextFormatter().format(record("%s %s failed", "GET", "/a\r\nb\x00\x7f\tc"))
    assert text.endswith("power.x: GET /a\\r\\nb\\x00\\x7f\tc failed")  # (a tab stays)
    try:
        raise ValueError("bad\x1b[31m model\nINFO forged")
    except ValueError as exc:
        text = TextFormatter().format(record("failed", exc=exc))
    assert "\x1b" not in text
    assert "ValueError: bad\\x1b[31m model" in text.splitlines()


def test_the_json_format_escapes_what_json_dumps_leaves_raw() -> None:
    text = JsonFormatter().format(record("%s", "a\x85b\x9b[31m\u2028c\u202ed é"))
    assert text.isprintable()
    assert json.loads(text)["message"] == "a\x85b\x9b[31m\u2028c\u202ed é"  # still the text


def test_escape_controls_keeps_printable_text() -> None:
    assert escape_controls("smollm2:latest é 中 \t") == "smollm2:latest é 中 \t"
    assert escape_controls("a\nb\x1b") == "a\\nb\\x1b"


def test_an_ipv4_client_of_a_dual_stack_listener_is_logged_as_ipv4() -> None:
    code = (
        "from power.logging import AccessLog, configure_logging\n"
        "from power.observe import RequestInfo\n"
        "configure_logging(0)\n"
        "for client in ('::ffff:10.0.0.9:5', '::1:6', '10.0.0.9:7'):\n"
        "    AccessLog().request_done(RequestInfo('GET', '/x', client, 0.0, 0.0, status=404))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    clients = [line.rsplit("client=", 1)[1] for line in done.stderr.splitlines()]
    assert clients == ["10.0.0.9:5", "::1:6", "10.0.0.9:7"]
