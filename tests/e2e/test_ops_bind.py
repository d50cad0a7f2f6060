"""`OLLAMA_HOST=[::]:P` and `OLLAMA_HOST=:P`: the daemon answers over IPv4 and IPv6 alike, so
the CLI (which connects to 127.0.0.1 for a wildcard host) and IPv6-first clients both reach it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.server import power_server

pytestmark = pytest.mark.skipif(
    not socket.has_dualstack_ipv6(), reason="this machine cannot listen dual-stack"
)


def test_an_ipv6_wildcard_serves_ipv4_clients_and_the_cli(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(server_env, OLLAMA_HOST="[::]")  # (the port comes from --port)
    # the fixture waits for 127.0.0.1 to answer: an IPv6-only listener never would
    with power_server(env, tmp_path / "server.log") as server:
        assert httpx.get(f"http://[::1]:{server.port}/api/version").status_code == 200
        listed = subprocess.run(
            [sys.executable, "-m", "power", "ls"],
            env=dict(env, OLLAMA_HOST=f"[::]:{server.port}"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.startswith("NAME")


def test_a_host_left_empty_serves_ipv6_clients(server_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(server_env, OLLAMA_HOST=":1")  # every interface (--port overrides the 1)
    with power_server(env, tmp_path / "server.log") as server:
        assert httpx.get(f"http://[::1]:{server.port}/api/version").status_code == 200
        assert httpx.get(f"{server.url}/api/version").status_code == 200
