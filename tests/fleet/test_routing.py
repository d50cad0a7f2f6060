"""Routing by model through HAProxy: a model stays on one daemon whatever the spelling or the
API, models spread over the daemons, and requests without a model go to any daemon."""

from __future__ import annotations

import httpx

from tests.support.fleet import (
    FLEET_MODELS,
    SERVER_HEADER,
    Proxy,
    generate,
    loaded,
    placement,
    served_by,
)
from tests.support.wait import wait_until


def test_each_model_stays_on_one_daemon_and_models_spread(fleet: Proxy) -> None:
    where = placement(fleet, FLEET_MODELS)
    assert len(set(map(id, where.values()))) == len(fleet.names)  # every daemon got a model
    for model, server in where.items():
        # every spelling of the name, and every API, reaches the same daemon
        for spelling in (model, f"{model}:latest", model.upper(), f"{model.title()}:Latest"):
            resp = generate(fleet, spelling)
            assert resp.status_code == 200, resp.text
            assert served_by(fleet, resp) is server
        hi = [{"role": "user", "content": "hi"}]
        chat = {"model": model, "messages": hi, "stream": False, "options": {"num_predict": 2}}
        resp = httpx.post(f"{fleet.url}/api/chat", json=chat, timeout=60)
        assert (resp.status_code, served_by(fleet, resp)) == (200, server)
        show = httpx.post(f"{fleet.url}/api/show", json={"name": model}, timeout=60)
        assert (show.status_code, served_by(fleet, show)) == (200, server)
        openai = {"model": model, "messages": hi, "max_tokens": 2}
        resp = httpx.post(f"{fleet.url}/v1/chat/completions", json=openai, timeout=60)
        assert (resp.status_code, served_by(fleet, resp)) == (200, server)
    # and only that daemon loaded it
    for server in fleet.names.values():
        expected = {f"{m}:latest" for m, s in where.items() if s is server}
        assert loaded(server) == expected


def test_requests_without_a_model_reach_every_daemon(fleet: Proxy) -> None:
    seen: set[str] = set()

    def more() -> bool:
        resp = httpx.get(f"{fleet.url}/api/tags", timeout=10)
        assert resp.status_code == 200
        seen.add(resp.headers[SERVER_HEADER])
        return len(seen) == len(fleet.names)

    wait_until(more, timeout_s=30)
