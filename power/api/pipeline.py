"""The one generation pipeline: a prepared request goes to a runner, its tokens through the
output parsers, and out as pieces and one final summary, whatever API asked.

``/api/generate`` and ``/api/chat`` (and the OpenAI and Anthropic layers on top of them) turn
``Piece`` and ``Finished`` into their own chunks; the token accounting lives here once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from power import observe
from power.api.schemas import Logprob, TopLogprob
from power.duration import parse_keep_alive
from power.errors import ProtocolError
from power.options import Resolved, resolve_options
from power.parse import OutputParser, Parsed
from power.supervisor.service import RequestTiming, Runners
from proto import Done, Generate, Tokenize, Tokenized, Tokens

if TYPE_CHECKING:
    from power.settings import Settings
    from power.store.model import LocalModel

__all__ = [
    "Finished",
    "Outcome",
    "Piece",
    "Prepared",
    "count_tokens",
    "generate_message",
    "generation",
    "load_or_unload",
    "prepare",
]


@dataclass(frozen=True, slots=True)
class Prepared:
    model: LocalModel
    options: Resolved
    keep_alive_s: float | None


def prepare(
    settings: Settings,
    model: LocalModel,
    options: dict[str, Any] | None,
    keep_alive: Any,
    *,
    embedding: bool = False,
) -> Prepared:
    keep_alive_s = None if keep_alive is None else parse_keep_alive(keep_alive)
    resolved = resolve_options(
        settings,
        model_path=model.model_path,
        model_params=model.parameters,
        request=options,
        lora_paths=tuple(model.adapters),
        projector_path="" if embedding else model.projector or "",
        embedding=embedding,
    )
    return Prepared(model=model, options=resolved, keep_alive_s=keep_alive_s)


def generate_message(
    prep: Prepared,
    prompt: str,
    *,
    tokens: tuple[int, ...] = (),
    images: tuple[bytes, ...] = (),
    add_bos: bool = True,
    logprobs: int = -1,
    shift: bool = True,
    truncate: bool = True,
    grammar: str = "",
    json_schema: str = "",
) -> Callable[[int], Generate]:
    o = prep.options

    def build(req_id: int) -> Generate:
        return Generate(
            id=req_id,
            prompt=prompt,
            tokens=tokens,
            add_bos=add_bos,
            sampling=o.sampling,
            num_predict=o.num_predict,
            stop=o.stop,
            num_keep=o.num_keep,
            grammar=grammar,
            logprobs=logprobs,
            shift=shift,
            truncate=truncate,
            json_schema=json_schema,
            images=images,
            n_ctx=prep.options.load.n_ctx,  # its own, also when a larger runner serves it
        )

    return build


@dataclass(slots=True)
class Outcome:
    """The terminal facts of one generation, for the final chunk."""

    done: Done | None = None
    load_s: float = 0.0
    started: float = 0.0
    first_token_at: float | None = None  # perf_counter when the first token arrived

    def metrics(self) -> dict[str, Any]:
        total_ns = int((time.perf_counter() - self.started) * 1e9)
        out: dict[str, Any] = {"total_duration": total_ns}
        if self.load_s:
            out["load_duration"] = int(self.load_s * 1e9)
        if self.done is not None:
            s = self.done.stats
            # The whole prompt, as Ollama counts it; the duration is the evaluated part's
            # alone (a reused KV prefix costs nothing), and the reused count is our extra.
            if s.prompt_tokens:
                out["prompt_eval_count"] = s.prompt_tokens
            if s.prompt_cached:
                out["prompt_cache_count"] = s.prompt_cached
            if s.prompt_eval_s:
                out["prompt_eval_duration"] = int(s.prompt_eval_s * 1e9)
            if s.eval_tokens:
                out["eval_count"] = s.eval_tokens
            if s.eval_s:
                out["eval_duration"] = int(s.eval_s * 1e9)
        return out


async def run(
    runners: Runners, prep: Prepared, build: Callable[[int], Generate], outcome: Outcome
) -> AsyncIterator[tuple[str, list[Tokens]]]:
    """Yield (text, token events) per batch; fill ``outcome`` when the runner says Done."""
    timing = RequestTiming()
    events = runners.request(prep.model, prep.options.load, prep.keep_alive_s, build, timing=timing)
    try:
        async for batch in events:
            outcome.load_s = timing.load_s
            tokens: list[Tokens] = []
            for msg in batch:
                if isinstance(msg, Tokens):
                    tokens.append(msg)
                elif isinstance(msg, Done):
                    outcome.done = msg
            if tokens:
                if outcome.first_token_at is None:
                    outcome.first_token_at = time.perf_counter()
                yield "".join(t.text for t in tokens), tokens
    finally:
        await events.aclose()  # type: ignore[attr-defined]
        outcome.load_s = timing.load_s


def done_reason(outcome: Outcome) -> str:
    if outcome.done is None:
        return "stop"
    return "length" if outcome.done.reason == "length" else "stop"


async def load_or_unload(runners: Runners, prep: Prepared) -> str:
    """The empty-prompt forms: ``keep_alive: 0`` unloads, anything else loads. Returns the
    ``done_reason`` ("unload" or "load")."""
    if prep.keep_alive_s is not None and prep.keep_alive_s <= 0:
        await runners.unload(prep.model, prep.options.load)
        return "unload"
    await runners.load(prep.model, prep.options.load, prep.keep_alive_s)
    return "load"


def logprob_entries(events: list[Tokens], top: int) -> list[Logprob]:
    out: list[Logprob] = []
    for ev in events:
        for lp in ev.logprobs:
            entry = Logprob(token=lp.token, logprob=lp.logprob, bytes=list(lp.utf8))
            if top > 0:
                entry.top_logprobs = [
                    TopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.utf8)) for t in lp.top
                ]
            out.append(entry)
    return out


@dataclass(slots=True)
class Piece:
    """Parsed output ready to send, with the log-probabilities of the tokens behind it."""

    parsed: Parsed
    logprobs: list[Logprob]


async def parse_stream(
    events: AsyncIterator[tuple[str, list[Tokens]]], parser: OutputParser, top_logprobs: int | None
) -> AsyncIterator[Piece]:
    """Run runner text through ``parser``. Log-probabilities of held-back tokens wait for the
    piece that releases their text; the last piece may carry only log-probabilities.
    ``top_logprobs`` None means logprobs are off."""
    pending: list[Logprob] = []
    try:
        async for text, tokens in events:
            if top_logprobs is not None:
                pending.extend(logprob_entries(tokens, top_logprobs))
            parsed = parser.feed(text)
            if parsed:
                yield Piece(parsed, pending)
                pending = []
        parsed = parser.flush()
        if parsed or pending:
            yield Piece(parsed, pending)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


@dataclass(slots=True)
class Finished:
    """The end of a generation: why it stopped, Ollama's counters and durations, the
    log-probabilities of tokens whose text never showed, the ``context`` token ids (None
    when the runner sent no ``Done``) and the stop string that ended it ("" when none did)."""

    done_reason: str
    metrics: dict[str, Any]
    logprobs: list[Logprob] = field(default_factory=list)
    context: list[int] | None = None
    stop: str = ""


async def generation(
    runners: Runners,
    prep: Prepared,
    build: Callable[[int], Generate],
    parser: OutputParser,
    *,
    kind: str,
    top_logprobs: int | None,
    started: float,
) -> AsyncIterator[Piece | Finished]:
    """Run ``build`` on a runner: each parsed ``Piece`` with text, then one ``Finished``.
    Errors before the first piece propagate, so the caller can still answer with a status.
    What it did (``kind``: "generate" or "chat") goes on the request's ``RequestInfo``."""
    outcome = Outcome(started=started)
    info = observe.current()
    pieces = parse_stream(run(runners, prep, build, outcome), parser, top_logprobs)
    leftover: list[Logprob] = []
    try:
        async for piece in pieces:
            if piece.parsed:
                yield piece
            else:
                leftover = piece.logprobs
    except BaseException as exc:
        if info is not None:
            info.error = str(exc) or type(exc).__name__
        raise
    finally:
        await pieces.aclose()  # type: ignore[attr-defined]
        if info is not None:
            note(info, kind, prep.model.name, outcome)
    # (an image's positions are negative placeholders, not tokens)
    context = None if outcome.done is None else [t for t in outcome.done.context if t >= 0]
    stop = "" if outcome.done is None else outcome.done.stop
    yield Finished(done_reason(outcome), outcome.metrics(), leftover, context, stop)


def note(info: observe.RequestInfo, kind: str, model: str, outcome: Outcome) -> None:
    """What a generation did, on its request's record (for the access log, metrics, usage)."""
    info.kind, info.model, info.load_s = kind, model, outcome.load_s
    if outcome.first_token_at is not None:
        info.ttft_s = outcome.first_token_at - outcome.started
    if outcome.done is not None:
        stats = outcome.done.stats
        info.prompt_tokens = stats.prompt_tokens
        info.cached_tokens = stats.prompt_cached
        info.output_tokens = stats.eval_tokens


async def count_tokens(runners: Runners, prep: Prepared, text: str, *, add_special: bool) -> int:
    """How many tokens ``text`` is for ``prep``'s model (one Tokenize round trip)."""
    model, params = prep.model, prep.options.load
    reply = await runners.call(
        model, params, None, lambda i: Tokenize(id=i, text=text, add_special=add_special)
    )
    if not isinstance(reply, Tokenized):
        raise ProtocolError(f"expected Tokenized, got {reply!r}", model=model.name)
    return len(reply.tokens)
