"""``ScriptedRunners``: the ``Runners`` the API layer sees, replaying scripted runner events.

With it the real app (``create_app``: middleware, error handlers, every route) runs in-process
and the exact NDJSON and SSE the gateway makes from runner events can be asserted.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from power.errors import PowerError
from power.store.model import LocalModel
from power.supervisor import LoadedRunner, RequestTiming, RunnerStats, ServedModel, Supervisor
from power.supervisor.service import RunnersStatus
from proto import (
    Detokenize,
    Detokenized,
    Done,
    Embed,
    Embeddings,
    FromRunner,
    Generate,
    LoadParams,
    Msg,
    Stats,
    Tokenize,
    Tokenized,
    TokenLogprob,
    Tokens,
)

__all__ = ["ScriptedRunners", "done", "each", "leased", "tokens"]


def tokens(*texts: str, logprobs: bool = False) -> list[Msg]:
    """One ``Tokens`` event per text (ids 1, 2, …; with ``logprobs``, logprob -id)."""
    return [
        Tokens(
            id=1,
            text=t,
            ids=(i,),
            logprobs=(TokenLogprob(token=t, logprob=-float(i), utf8=t.encode()),)
            if logprobs
            else (),
        )
        for i, t in enumerate(texts, 1)
    ]


def each(*texts: str, logprobs: bool = False) -> list[list[Msg]]:
    """A script of one runner batch per text."""
    return [[t] for t in tokens(*texts, logprobs=logprobs)]


def done(reason: Literal["stop", "length", "cancel"] = "stop", **stats: Any) -> Done:
    """The end of a generation, with ``Stats`` fields from ``stats``."""
    return Done(id=1, reason=reason, stats=Stats(**stats))


class ScriptedRunners:
    """Replays ``script`` (batches of runner events; an error in it is raised there, as the
    supervisor raises a runner's failure) for each generation; embeds return ``vectors``;
    Tokenize counts words (plus one for ``add_special``)."""

    def __init__(self) -> None:
        self.script: list[list[Msg] | PowerError] = [[Done(id=1, reason="stop", stats=Stats())]]
        self.vectors: list[list[float]] = []
        self.sent: list[Msg] = []
        self.n_ctx = 4096
        self.n_vocab = 49152
        self.loads = 0
        self.unloads: list[str] = []
        self.draining = False

    async def request(
        self,
        model: LocalModel,
        params: LoadParams,
        keep_alive_s: float | None,
        build: Callable[[int], Msg],
        timing: RequestTiming | None = None,
        deadline_s: float | None = None,
    ) -> AsyncIterator[list[FromRunner]]:
        msg = build(1)
        self.sent.append(msg)
        if isinstance(msg, Embed):
            n = sum(len(text.split()) for text in msg.inputs)
            yield [Embeddings(id=1, vectors=tuple(map(tuple, self.vectors)), prompt_tokens=n)]
            yield [Done(id=1, reason="stop", stats=Stats(prompt_tokens=n))]
            return
        for batch in self.script:
            if isinstance(batch, PowerError):  # the runner failed here: the supervisor raises
                raise batch
            yield batch  # type: ignore[misc]

    async def call(
        self,
        model: LocalModel,
        params: LoadParams,
        keep_alive_s: float | None,
        build: Callable[[int], Msg],
    ) -> FromRunner:
        msg = build(1)
        self.sent.append(msg)
        if isinstance(msg, Tokenize):
            count = len(msg.text.split()) + int(msg.add_special)
            return Tokenized(id=1, tokens=tuple(range(count)))
        if isinstance(msg, Detokenize):
            return Detokenized(id=1, text=" ".join(map(str, msg.tokens)))
        raise AssertionError(f"not a one-reply request: {msg!r}")

    async def load(
        self, model: LocalModel, params: LoadParams, keep_alive_s: float | None
    ) -> RunnerStats:
        self.loads += 1
        return self._stats(model, params)

    async def unload(self, model: LocalModel, params: LoadParams) -> bool:
        self.unloads.append(model.name)
        return True

    async def stats(self) -> list[RunnerStats]:
        return []

    def status(self) -> RunnersStatus:
        return RunnersStatus(
            draining=self.draining, queue_depth=0, loaded_models=0, recent_exits=()
        )

    def generations(self) -> list[Generate]:
        return [m for m in self.sent if isinstance(m, Generate)]

    def _stats(self, model: LocalModel, params: LoadParams) -> RunnerStats:
        n_ctx = min(self.n_ctx, params.n_ctx)
        served = ServedModel(name=model.name, digest=model.digest, details={}, context_length=n_ctx)
        return RunnerStats(
            pid=0,
            models=(served,),
            n_ctx=n_ctx,
            n_vocab=self.n_vocab,
            num_parallel=1,
            rss=0,
            vram=0,
            all_on_gpu=False,
            expires_at=None,
            requests_in_flight=0,
            queued=0,
            mean_wait_s=0.0,
            load_s=0.0,
            cpu_mode="extra",
            cpu_mode_is_default=True,
        )


@contextlib.asynccontextmanager
async def leased(
    sup: Supervisor, model: LocalModel, params: LoadParams, keep_alive_s: float | None = None
) -> AsyncIterator[LoadedRunner]:
    """Hold a runner (no sequence) to drive its client by hand, as process tests do."""
    loaded = await sup.acquire(model, params, keep_alive_s)
    try:
        yield loaded
    finally:
        sup.release(loaded)
