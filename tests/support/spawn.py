"""The real ``Supervisor`` over real ``python -m runner`` children, as process and model tests
drive it: a spawner, settings, typed model stubs, request builders and stream collectors."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import psutil

from power.settings import Settings
from power.store.gguf_info import GGUFInfo
from power.store.model import LocalModel
from power.supervisor import RequestStream, RunnerProcess
from proto import Done, FromRunner, Generate, LoadParams, Sampling, Tokens

__all__ = [
    "GREEDY",
    "Spawner",
    "alive",
    "collect",
    "collect_tokens",
    "drain",
    "gen",
    "llama_settings",
    "llama_spawner",
    "model",
    "params",
    "quiet_start_lasting_policies",
    "settings",
    "stub_model",
    "thread_policies",
]

GREEDY = Sampling(temperature=0.0, seed=42)


class Spawner:
    """A ``RunnerFactory`` that starts real runner children: spawn n uses ``engines[n]`` (the
    last one repeats), e.g. ``Spawner("fake:echo?crash_before=1", "fake:echo")``.

    ``count`` is every spawn tried, a failed load included; ``runners`` those that started.
    """

    def __init__(self, *engines: str, load_timeout_s: float = 20.0) -> None:
        if not engines:
            raise ValueError("a Spawner needs at least one engine")
        self.engines = engines
        self.load_timeout_s = load_timeout_s
        self.count = 0
        self.runners: list[RunnerProcess] = []

    @property
    def pids(self) -> list[int]:
        return [r.pid for r in self.runners]

    async def __call__(self, params: LoadParams, *, model: str) -> RunnerProcess:
        engine = self.engines[min(self.count, len(self.engines) - 1)]
        self.count += 1
        runner = await RunnerProcess.start(
            params, model=model, engine=engine, load_timeout_s=self.load_timeout_s
        )
        self.runners.append(runner)
        return runner


def llama_spawner() -> Spawner:
    """Runners on llama-cpp-python (the model tier), with time to load a real GGUF."""
    return Spawner("llama", load_timeout_s=60)


def settings(tmp_path: Path, **kw: Any) -> Settings:
    """Settings for fake runners: a short stop ladder; ``kw`` overrides any field."""
    base: dict[str, Any] = {
        "home": str(tmp_path),
        "runner_stop_grace_s": 2.0,
        "runner_term_grace_s": 2.0,
        "ping_interval_s": 5.0,
        "ping_timeout_s": 5.0,
    }
    base.update(kw)
    return Settings(**base)


def llama_settings(tmp_path: Path) -> Settings:
    """Settings for real runners: the product's own stop ladder and ping deadlines."""
    return Settings(home=str(tmp_path), runner_stop_grace_s=5, runner_term_grace_s=5)


def stub_model(path: Path, name: str, *, metadata: Mapping[str, Any] | None = None) -> LocalModel:
    """A ``LocalModel`` for the supervisor: a name, a weights file and GGUF ``metadata`` (what
    placement reads); nothing is parsed from the file."""
    gguf = GGUFInfo(version=3, metadata=dict(metadata or {}), tensors=[])
    return LocalModel(name=name, digest="0" * 64, model_path=str(path), gguf=gguf)


def model(
    tmp_path: Path, name: str = "m", *, metadata: Mapping[str, Any] | None = None
) -> LocalModel:
    """``<name>:latest``, whose weights file is four bytes (fake engines never read it)."""
    path = tmp_path / f"{name}.gguf"
    path.write_bytes(b"GGUF")
    return stub_model(path, f"{name}:latest", metadata=metadata)


def params(m: LocalModel) -> LoadParams:
    return LoadParams(model_path=m.model_path, n_ctx=512)


def gen(prompt: str, **kw: Any) -> Callable[[int], Generate]:
    """A ``Generate`` builder; greedy sampling unless ``kw`` has ``sampling``."""
    kw.setdefault("sampling", GREEDY)
    return lambda i: Generate(id=i, prompt=prompt, **kw)


async def collect_tokens(events: AsyncIterator[list[Any]]) -> tuple[str, Done, list[Tokens]]:
    """A whole request's text, its ``Done`` and every ``Tokens`` message (a failure raises)."""
    text, done, tokens = [], None, []
    async for batch in events:
        for msg in batch:
            if isinstance(msg, Tokens):
                text.append(msg.text)
                tokens.append(msg)
            elif isinstance(msg, Done):
                done = msg
    assert done is not None
    return "".join(text), done, tokens


async def collect(events: AsyncIterator[list[Any]]) -> tuple[str, Done]:
    """A whole request's text and its ``Done`` (a failure raises)."""
    text, done, _ = await collect_tokens(events)
    return text, done


async def drain(stream: RequestStream) -> list[FromRunner]:
    """Every reply of ``stream`` up to its terminal one (a failure raises)."""
    out: list[FromRunner] = []
    while not stream.finished:
        try:
            out.extend(await stream.next_batch())
        except StopAsyncIteration:
            break
    return out


def alive(pid: int) -> bool:
    """The process runs (a zombie, exited but not yet reaped, does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def thread_policies(pid: int) -> dict[int, tuple[int, int]]:
    """Each thread's scheduling policy and nice value (``/proc/<pid>/task/<tid>/stat``, fields
    41 and 19; Linux): ``(os.SCHED_OTHER, 0)`` for a plain thread."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # (it ended meanwhile)
        fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 on
        out[int(task.name)] = (int(fields[38]), int(fields[16]))
    return out


def quiet_start_lasting_policies(pid: int) -> set[tuple[int, int]]:
    """The policies of a quietly started runner's threads but its quiet-start thread, which
    must be there: its one ``SCHED_IDLE`` thread, asleep for good (``runner.quiet``)."""
    policies = thread_policies(pid)
    idle = [tid for tid, (policy, _) in policies.items() if policy == os.SCHED_IDLE]
    assert len(idle) == 1, f"not one idle-policy thread: {policies}"
    stat = Path(f"/proc/{pid}/task/{idle[0]}/stat").read_text()
    state = stat[stat.rindex(")") + 2]
    assert state == "S", f"the quiet-start thread is not asleep but {state!r}"
    return {p for tid, p in policies.items() if tid != idle[0]}
