"""A fleet on loopback: ``deploy/haproxy.cfg`` run by Debian's ``haproxy`` in front of real
``power serve`` daemons.

The config is the shipped template itself; only its addresses change: the ``bind`` line gets a
free loopback port and the ``server`` lines of both backends point at the daemons (those beyond
the number of daemons are dropped). Which daemon answered is HAProxy's ``X-Power-Server`` header
(the template sets it to the server's name, ``power1`` …).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.net import free_port
from tests.support.server import Server
from tests.support.wait import wait_until

__all__ = [
    "FLEET_MODELS",
    "HAPROXY_BIN",
    "SERVER_HEADER",
    "TEMPLATE",
    "Proxy",
    "generate",
    "loaded",
    "placement",
    "render_config",
    "run_haproxy",
    "served_by",
]

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
HAPROXY_BIN = shutil.which("haproxy") or "/usr/sbin/haproxy"
START_TIMEOUT_S = 20.0
SERVER_HEADER = "X-Power-Server"
FLEET_MODELS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")  # tests/fleet's store

_SERVER = re.compile(r"^(\s*server\s+power(\d+)\s+)(\S+)(.*)$")
_BIND = re.compile(r"^(\s*bind\s+)\S+(.*)$")


def render_config(template: str, port: int, backends: Sequence[int]) -> str:
    """``template`` listening on 127.0.0.1:``port``, with ``power<i>`` at ``backends[i-1]``."""
    out = []
    for line in template.splitlines():
        if m := _BIND.match(line):
            line = f"{m.group(1)}127.0.0.1:{port}{m.group(2)}"
        elif m := _SERVER.match(line):
            index = int(m.group(2))
            if index > len(backends):
                continue
            line = f"{m.group(1)}127.0.0.1:{backends[index - 1]}{m.group(4)}"
        out.append(line)
    return "\n".join(out) + "\n"


@dataclass
class Proxy:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    names: dict[str, Server]  # "power1" -> its daemon

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def served_by(proxy: Proxy, resp: httpx.Response) -> Server:
    """The daemon that answered ``resp`` through ``proxy``."""
    return proxy.names[resp.headers[SERVER_HEADER]]


def generate(proxy: Proxy, model: str, **extra: Any) -> httpx.Response:
    """A short non-streamed ``/api/generate`` of ``model`` through ``proxy``."""
    body = {"model": model, "prompt": "hi", "stream": False, "options": {"num_predict": 2}}
    return httpx.post(f"{proxy.url}/api/generate", json={**body, **extra}, timeout=60)


def placement(proxy: Proxy, models: Iterable[str]) -> dict[str, Server]:
    """The daemon that answers each of ``models`` through ``proxy``."""
    out = {}
    for model in models:
        resp = generate(proxy, model)
        assert resp.status_code == 200, resp.text
        out[model] = served_by(proxy, resp)
    return out


def loaded(server: Server) -> set[str]:
    """The models ``server`` has loaded (its ``/api/ps``)."""
    resp = httpx.get(f"{server.url}/api/ps", timeout=10)
    assert resp.status_code == 200
    return {m["name"] for m in resp.json()["models"]}


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/version", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def run_haproxy(tmp: Path, daemons: Sequence[Server]) -> Iterator[Proxy]:
    """HAProxy in the foreground on a free port, once it answers; stopped and reaped on exit."""
    if not Path(HAPROXY_BIN).exists():
        pytest.fail("haproxy is missing: apt-get install -y haproxy")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(render_config(TEMPLATE.read_text(), port, [d.port for d in daemons]))
    log = tmp / "haproxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [HAPROXY_BIN, "-db", "-f", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    names = {f"power{i}": d for i, d in enumerate(daemons, 1)}
    proxy = Proxy(proc, port, log, names)
    try:
        try:
            wait_until(lambda: proc.poll() is not None or _answers(proxy.url), START_TIMEOUT_S)
        except AssertionError:
            raise AssertionError(f"haproxy did not start:\n{proxy.log_text()}") from None
        if proc.poll() is not None:
            raise AssertionError(f"haproxy did not start:\n{proxy.log_text()}")
        yield proxy
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
