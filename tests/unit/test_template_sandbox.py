"""``TemplateSandbox``: chat templates rendered in worker processes, as the gateway renders them.

Real workers (``python -m power.template._render_worker``) throughout: a template that asks for
gigabytes, a worker that stops answering, one killed from outside, many threads at once.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from power.template import TemplateError, TemplateSandbox, render_chat_template
from tests.unit.test_jinja_template import LLAMA3, SMOLLM2, WEATHER_TOOL

HI = [{"role": "user", "content": "hi"}]
# Each asks minijinja for one allocation far past the worker's cap (a failed allocation there
# aborts the process it happens in: once the gateway's own).
STRINGS = '{% set s = "x" * 1000000 %}{{ ([s] * 100000)|string|length }}'  # 100 GB at once
DOUBLING = (  # 2**40 characters, doubling (minijinja's fuel does not stop 40 steps)
    '{% set ns = namespace(s="x") %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}'
    "{% endfor %}{{ ns.s|length }}"
)
JOINED = '{% set s = "x" * 10000000 %}{{ ([s] * 1000)|join|length }}'  # 10 GB
FORMAT = '{{ "%0999999999d"|format(1) }}'  # 1 GB and a second copy of it
TOO_MUCH = "rendering the chat template needs more memory than allowed"


@pytest.fixture
def sandbox() -> Iterator[TemplateSandbox]:
    box = TemplateSandbox(size=2)
    try:
        yield box
    finally:
        box.close()


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def test_renders_what_the_template_renders_in_process(sandbox: TemplateSandbox) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris", "n": 2**70}}}
            ],
        },
    ]
    for source, kwargs in (
        (SMOLLM2, {}),
        (LLAMA3, {"tools": [WEATHER_TOOL], "bos_token": "<s>", "add_generation_prompt": False}),
        ("{{ enable_thinking }}|{{ reasoning_effort }}", {"enable_thinking": True}),
    ):
        expected = render_chat_template(source, messages, **kwargs)  # type: ignore[arg-type]
        assert sandbox(source, messages, **kwargs) == expected  # type: ignore[arg-type]
    # an int past msgpack's 64 bits reaches the template as an int all the same
    assert '"n": 1180591620717411303424}' in sandbox(LLAMA3, messages)


def test_images_reach_the_template_as_empty_strings(sandbox: TemplateSandbox) -> None:
    source = "{% for m in messages %}{{ m.images|length }}:{{ m.images|join(',') }};{% endfor %}"
    look = {"role": "user", "content": "look", "images": ["aGVsbG8=", "d29ybGQ="]}
    messages: list[dict[str, Any]] = [look, *HI]
    assert sandbox(source, messages) == "2:,;0:;"


def test_template_errors_are_template_errors(sandbox: TemplateSandbox) -> None:
    with pytest.raises(TemplateError, match="Conversations must start with a user message"):
        sandbox(LLAMA3, [{"role": "assistant", "content": "first"}])
    with pytest.raises(TemplateError) as info:
        sandbox("{% for m in messages %}", HI)
    assert info.value.status == 400
    assert len(sandbox.pids()) == 1  # a template that fails leaves its worker usable


@pytest.mark.parametrize("source", [STRINGS, DOUBLING, JOINED, FORMAT])
def test_a_template_that_asks_for_gigabytes_fails_in_its_worker(
    sandbox: TemplateSandbox, source: str
) -> None:
    sandbox.warm()
    (first,) = sandbox.pids()
    before = _rss()
    with pytest.raises(TemplateError, match=TOO_MUCH):
        sandbox(source, HI)
    assert _rss() - before < 64 * 2**20  # nothing of it was built here
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE
    assert sandbox(SMOLLM2, HI).endswith("<|im_start|>assistant\n")  # a new worker renders


def test_a_worker_that_stops_answering_is_killed_at_the_deadline() -> None:
    failures: list[str] = []
    box = TemplateSandbox(size=1, timeout_s=0.5, on_failure=failures.append)
    try:
        box.warm()
        (pid,) = box.pids()
        os.kill(pid, signal.SIGSTOP)  # it reads nothing more: the deadline must end the call
        with pytest.raises(TemplateError, match=r"took longer than 0\.5 s"):
            box(SMOLLM2, HI)
        assert box.pids() == []
        assert not psutil.pid_exists(pid)  # killed and reaped
        assert box("{{ messages[0].content }}", HI) == "hi"  # a new worker renders
        with pytest.raises(TemplateError, match=r"0\.5 s \d+ s ago; this chat template is not"):
            box(SMOLLM2, HI)  # (the template that overran is not tried again for a while)
        assert failures == ["deadline", "quarantined"]
    finally:
        box.close()


def test_a_worker_killed_while_idle_is_replaced(sandbox: TemplateSandbox) -> None:
    sandbox.warm()
    (pid,) = sandbox.pids()
    os.kill(pid, signal.SIGKILL)
    psutil.Process(pid).wait(5)  # a zombie until the sandbox reaps it
    assert sandbox(SMOLLM2, HI).startswith("<|im_start|>system")
    (other,) = sandbox.pids()
    assert other != pid
    assert not psutil.pid_exists(pid)


def test_threads_share_at_most_size_workers(sandbox: TemplateSandbox) -> None:
    seen: set[int] = set()
    results: dict[int, str] = {}
    lock = threading.Lock()

    def render(i: int) -> None:
        out = sandbox(SMOLLM2, [{"role": "user", "content": f"question {i}"}])
        with lock:
            results[i] = out
            seen.update(sandbox.pids())

    threads = [threading.Thread(target=render, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(16))
    assert all(f"user\nquestion {i}<|im_end|>" in out for i, out in results.items())
    assert 1 <= len(seen) <= 2


def test_idle_workers_beyond_the_last_are_closed() -> None:
    box = TemplateSandbox(size=2, idle_s=0.0)
    try:
        barrier = threading.Barrier(2)

        def render() -> None:
            barrier.wait()
            box(SMOLLM2, HI)

        threads = [threading.Thread(target=render) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        box(SMOLLM2, HI)  # checks out the newest idle worker; the older one is closed
        assert len(box.pids()) == 1
    finally:
        box.close()


def test_a_worker_grown_large_is_replaced() -> None:
    box = TemplateSandbox(size=1, retire_rss=64 * 2**20)
    try:
        box.warm()
        (pid,) = box.pids()
        assert box("{{ 'x' * 1000 }}", HI) == "x" * 1000
        assert box.pids() == [pid]  # small: kept
        big = "{% set s = '\U0001f600' * 5000000 %}{{ s ~ s ~ s }}"  # 60 MB as a str
        assert len(box(big, HI)) == 15_000_000
        assert box.pids() == []
        assert not psutil.pid_exists(pid)
    finally:
        box.close()


def test_a_template_that_exhausted_a_worker_is_refused_for_a_while() -> None:
    failures: list[str] = []
    box = TemplateSandbox(size=1, on_failure=failures.append)
    try:
        with pytest.raises(TemplateError, match=TOO_MUCH):
            box(STRINGS, HI)
        assert box.pids() == []
        started = time.monotonic()
        with pytest.raises(TemplateError, match=TOO_MUCH + r" \d+ s ago; this chat template is"):
            box(STRINGS, [{"role": "user", "content": "other"}])
        assert time.monotonic() - started < 0.5  # refused at once
        assert box.pids() == []  # no worker was started for it
        assert box(SMOLLM2, HI).endswith("<|im_start|>assistant\n")  # other templates render
        assert failures == ["memory", "quarantined"]
    finally:
        box.close()
    again = TemplateSandbox(size=1, quarantine_s=0)
    try:
        for _ in range(2):  # without a quarantine, each request tries it (and ends a worker)
            with pytest.raises(TemplateError, match=f"^template error: {TOO_MUCH}$"):
                again(STRINGS, HI)
    finally:
        again.close()


def test_without_a_temporary_folder_it_renders_and_still_names_the_cause(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))  # as TMPDIR would say
    box = TemplateSandbox(size=1)
    try:
        assert box(SMOLLM2, HI).startswith("<|im_start|>system")
        with pytest.raises(TemplateError, match=TOO_MUCH):
            box(JOINED, HI)
    finally:
        box.close()


def test_closed_sandbox_renders_nothing_and_leaves_no_process() -> None:
    box = TemplateSandbox()
    box.warm()
    (pid,) = box.pids()
    box.close()
    assert not psutil.pid_exists(pid)
    with pytest.raises(TemplateError, match="stopping"):
        box(SMOLLM2, HI)
    box.close()  # again: nothing to do
