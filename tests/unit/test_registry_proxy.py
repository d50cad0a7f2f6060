"""Registry traffic's proxy comes from the environment, by scheme, minus NO_PROXY hosts."""

from __future__ import annotations

import pytest

from power.registry.proxy import proxy_for


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_by_scheme_and_not_for_no_proxy_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    assert proxy_for("https://registry.ollama.ai/v2/") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://plain.corp:8080")
    monkeypatch.setenv("NO_PROXY", "localhost,.internal,10.0.0.5")
    assert proxy_for("https://registry.ollama.ai/v2/library/x") == "http://proxy.corp:3128"
    assert proxy_for("http://registry.example:5000/v2/") == "http://plain.corp:8080"
    assert proxy_for("http://localhost:5000/v2/") is None
    assert proxy_for("https://hub.internal/v2/") is None
    assert proxy_for("http://10.0.0.5:5000/v2/") is None
