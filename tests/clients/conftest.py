"""The ecosystem's clients against a real ``power serve``: ``nox -s clients`` (and ``openwebui``).

These tests need the pinned clients that only those nox sessions install, so they are
collected only when ``A3S_CLIENT_RESULTS`` names the file to record their results in (the
sessions set it); plain ``pytest`` and the ``tests`` session leave this folder out.

Each test is marked with the client packages it drives (``@pytest.mark.client("llm",
"llm-ollama")``; ``"npm:ai"`` for an npm package) and its docstring's first line says what
it verifies; at the end of the run every test's client, installed version, claim and outcome
are written to that file, from which ``scripts/render_compatibility.py`` regenerates
``docs/compatibility.md``.

The client test modules open with an inline mypy setting that tolerates unresolved imports:
the ``typecheck`` session installs the pinned clients and checks these tests against their
types, while a development environment without them still type-checks the rest.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.clients.served import JS_DIR, Power, create_scripted, install_smollm2, power

RESULTS_ENV = "A3S_CLIENT_RESULTS"  # set by noxfile.py (CLIENT_RESULTS_ENV)

ACTIVE = bool(os.environ.get(RESULTS_ENV))
collect_ignore_glob = [] if ACTIVE else ["*"]

_outcomes: dict[str, dict[str, str]] = {}


def pytest_configure(config: pytest.Config) -> None:
    if not ACTIVE:
        return  # (this file is loaded by every run; it must not change the others)
    config.addinivalue_line(
        "markers", "client(*packages): the client packages this test drives (npm:NAME for npm)"
    )
    # Client libraries open HTTP clients they never close (langchain-ollama's ollama.Client,
    # among others); the ResourceWarnings of their sockets are theirs, not the server's.
    config.addinivalue_line("filterwarnings", "ignore::ResourceWarning")


def installed_version(package: str) -> str:
    if package.startswith("npm:"):
        manifest = JS_DIR / "node_modules" / package[4:] / "package.json"
        version: str = json.loads(manifest.read_text())["version"]
        return version
    return importlib.metadata.version(package)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    marker = item.get_closest_marker("client")
    if marker is None or not isinstance(item, pytest.Function):
        return report
    doc = (item.function.__doc__ or "").strip().splitlines()
    claim = doc[0] if doc else item.name
    if hasattr(item, "callspec"):
        claim += f" [{item.callspec.id}]"
    entry = _outcomes.setdefault(
        item.nodeid,
        {
            "client": " + ".join(marker.args),
            "verified": claim,
            "test": item.nodeid,
            "outcome": "passed",
        },
    )
    if report.outcome != "passed" and entry["outcome"] == "passed":
        entry["outcome"] = report.outcome
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(RESULTS_ENV)
    if not path or not _outcomes:
        return
    rows = []
    for entry in _outcomes.values():
        versions = [installed_version(p) for p in entry["client"].split(" + ")]
        rows.append({**entry, "version": " + ".join(versions)})
    Path(path).write_text(json.dumps(rows, indent=2) + "\n")


@pytest.fixture(scope="session")
def client_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model store for the run, so the starter model is imported once."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture
def client_env(clean_env: dict[str, str], client_models: Path) -> dict[str, str]:
    return dict(clean_env, OLLAMA_MODELS=str(client_models))


@pytest.fixture
def smollm2(client_env: dict[str, str], tmp_path: Path) -> Iterator[Power]:
    """``power serve`` with the real runner; the model is ``smollm2``."""
    with power(client_env, tmp_path / "server.log") as pw:
        install_smollm2(pw)
        yield pw


@pytest.fixture
def scripted(client_env: dict[str, str], tmp_path: Path) -> Iterator[Power]:
    """``power serve`` on the fake echo engine, with the model ``scripted`` (see ``served``)."""
    with power(client_env, tmp_path / "server.log", engine="fake:echo") as pw:
        create_scripted(pw)
        yield pw
