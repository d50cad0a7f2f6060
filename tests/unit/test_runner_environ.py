"""A runner's environment: the gateway's, with glibc's malloc asked for huge pages on Linux
unless the user's own GLIBC_TUNABLES already decides it (what the kernel then gives a real
runner: tests/model/test_load_settings.py)."""

from __future__ import annotations

import sys

import pytest

from power.supervisor.process import runner_environ

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables")


def test_huge_pages_are_asked_for_and_the_rest_is_kept() -> None:
    env = runner_environ({"PATH": "/bin", "OLLAMA_HOST": "x"})
    assert env == {"PATH": "/bin", "OLLAMA_HOST": "x", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def test_the_users_other_tunables_are_kept_beside_it() -> None:
    env = runner_environ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


@pytest.mark.parametrize(
    "mine", ["glibc.malloc.hugetlb=0", "glibc.malloc.mxfast=0:glibc.malloc.hugetlb=2"]
)
def test_the_users_own_huge_page_setting_wins(mine: str) -> None:
    assert runner_environ({"GLIBC_TUNABLES": mine})["GLIBC_TUNABLES"] == mine


def test_the_base_is_not_changed() -> None:
    base = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    runner_environ(base)
    assert base == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
