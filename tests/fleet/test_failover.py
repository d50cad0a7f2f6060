"""A daemon that goes away: killed outright (its models move once HAProxy's check sees it), or
stopped with SIGTERM (its streams finish while new requests go to another daemon)."""

from __future__ import annotations

import json
import signal

import httpx

from tests.support.fleet import FLEET_MODELS, Proxy, generate, placement, served_by
from tests.support.server import Server
from tests.support.wait import wait_until

STREAM_TOKENS = 60  # 3 s at the fake engine's 50 ms a token


def answered_elsewhere(proxy: Proxy, model: str, gone: Server) -> Server:
    """Poll ``model`` through ``proxy`` until a daemon other than ``gone`` answers it; the
    requests in between may fail (HAProxy has not yet seen the daemon go)."""
    found: list[Server] = []

    def answered() -> bool:
        try:
            resp = generate(proxy, model)
        except httpx.HTTPError:
            return False
        if resp.status_code == 200 and served_by(proxy, resp) is not gone:
            found.append(served_by(proxy, resp))
            return True
        return False

    wait_until(answered, timeout_s=30, interval_s=0.1)
    return found[0]


def test_a_killed_daemon_s_models_move_and_the_others_stay(fleet: Proxy) -> None:
    before = placement(fleet, FLEET_MODELS)
    victim = before["alpha"]
    victim.proc.kill()  # kill -9: no draining, no goodbye
    victim.proc.wait()
    heir = answered_elsewhere(fleet, "alpha", victim)
    # from now on alpha stays on its heir, and the models of the living daemons did not move
    for _ in range(3):
        assert served_by(fleet, generate(fleet, "alpha")) is heir
    after = placement(fleet, FLEET_MODELS)
    for model, server in before.items():
        if server is not victim:
            assert after[model] is server
        else:
            assert after[model] is not victim


def test_sigterm_lets_a_stream_finish_while_new_requests_go_elsewhere(fleet: Proxy) -> None:
    owner = placement(fleet, FLEET_MODELS)["alpha"]
    body = {"model": "alpha", "prompt": "hi", "options": {"num_predict": STREAM_TOKENS}}
    with httpx.stream("POST", f"{fleet.url}/api/generate", json=body, timeout=60) as stream:
        assert served_by(fleet, stream) is owner
        lines = stream.iter_lines()
        first = json.loads(next(lines))
        assert first["done"] is False
        owner.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: _health(owner) == 503)  # draining, still listening
        heir = answered_elsewhere(fleet, "alpha", owner)
        assert heir is not owner
        rest = [json.loads(line) for line in lines if line]
    # the stream ran to its end on the draining daemon, which then exited cleanly
    assert [x["done"] for x in rest] == [False] * (STREAM_TOKENS - 1) + [True]
    assert rest[-1]["done_reason"] == "length"
    assert owner.proc.wait(30) == 0


def _health(server: Server) -> int:
    try:
        return httpx.get(f"{server.url}/health", timeout=5).status_code
    except httpx.HTTPError:
        return 0
