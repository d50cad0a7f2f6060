"""What /api/generate and /api/chat share: body parsing, model lookup, options, the runner call,
and turning runner events into Ollama's fields.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from msgspec import UnsetType
from starlette.datastructures import State
from starlette.responses import Response

from power.api.body import decode_body
from power.api.schemas import Logprob, TopLogprob
from power.duration import parse_keep_alive
from power.errors import InvalidRequestError, ProtocolError
from power.options import Resolved, resolve_options
from power.parse import OutputParser, Parsed, ThinkingParser, ToolFormat, ToolParser, tool_format
from power.supervisor.service import RequestTiming, Runners
from power.template import thinking_tags
from proto import MAX_FRAME, Done, Generate, Tokenize, Tokenized, Tokens

if TYPE_CHECKING:
    from power.config import Settings
    from power.store import ModelStore
    from power.store.model import LocalModel

__all__ = [
    "Outcome",
    "Piece",
    "Prepared",
    "count_tokens",
    "created_at",
    "decode_body",
    "decode_images",
    "image_payload",
    "joined",
    "json_response",
    "lookup_model",
    "output_parser",
    "parse_stream",
    "prepare",
    "run",
]

T = TypeVar("T")

MAX_IMAGE_BYTES = MAX_FRAME - (1 << 20)  # all images of a request ride in one Generate frame

_second: int = -1
_second_text: str = ""


def created_at() -> str:
    """RFC 3339 with nanoseconds, UTC (the seconds part is formatted once per second)."""
    global _second, _second_text
    ns = time.time_ns()
    sec, frac = divmod(ns, 1_000_000_000)
    if sec != _second:
        _second = sec
        _second_text = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_second_text}.{frac:09d}Z"


def joined(parts: Iterable[list[T] | UnsetType]) -> list[T]:
    """The lists that are set, concatenated (tool calls or logprobs of every chunk)."""
    out: list[T] = []
    for part in parts:
        if part is not msgspec.UNSET:
            out.extend(part)
    return out


async def lookup_model(state: State, name: str) -> LocalModel:
    store: ModelStore = state.store
    return await asyncio.to_thread(store.get, name)


_json_encoder = msgspec.json.Encoder()


def json_response(obj: object, status: int = 200) -> Response:
    return Response(
        _json_encoder.encode(obj), status_code=status, media_type="application/json; charset=utf-8"
    )


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


def decode_images(images: Iterable[str], where: str) -> tuple[bytes, ...]:
    """The bytes of base64 ``images`` (found at ``where``); a 400 that names a bad one.

    Line breaks are ignored, as Go's decoder (Ollama's) ignores them; nothing else is.
    """
    out: list[bytes] = []
    for i, data in enumerate(images):
        try:
            out.append(base64.b64decode(data.replace("\n", "").replace("\r", ""), validate=True))
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequestError(f"invalid image data in {where}[{i}]: {exc}") from exc
    return tuple(out)


def image_payload(images: Iterable[bytes]) -> tuple[bytes, ...]:
    """The images one request sends to the runner; a 400 when they cannot fit in its frame."""
    out = tuple(images)
    total = sum(map(len, out))
    if total > MAX_IMAGE_BYTES:
        raise InvalidRequestError(
            f"the images of one request may take {MAX_IMAGE_BYTES >> 20} MiB at most, not"
            f" {total / (1 << 20):.1f} MiB"
        )
    return out


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

    def metrics(self) -> dict[str, Any]:
        total_ns = int((time.perf_counter() - self.started) * 1e9)
        out: dict[str, Any] = {"total_duration": total_ns}
        if self.load_s:
            out["load_duration"] = int(self.load_s * 1e9)
        if self.done is not None:
            s = self.done.stats
            evaluated = s.prompt_tokens - s.prompt_cached  # a reused KV prefix costs nothing
            if evaluated:
                out["prompt_eval_count"] = evaluated
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


THINK_LEVELS = ("low", "medium", "high", "max")


def check_common(
    model: LocalModel, *, think: bool | str | None, top_logprobs: int, images: bool
) -> bool | str | None:
    """Checks shared by generate and chat that need the model; returns the effective ``think``.

    A thinking-capable model thinks unless told not to (``think`` omitted means on).
    """
    if isinstance(think, str) and think not in THINK_LEVELS:
        raise InvalidRequestError(
            f"invalid think value: {think!r} (must be a boolean or one of low, medium, high, max)"
        )
    if not 0 <= top_logprobs <= 20:
        raise InvalidRequestError("top_logprobs must be between 0 and 20")
    thinks = "thinking" in model.capabilities
    if think not in (None, False) and not thinks:
        raise InvalidRequestError(f'"{model.name}" does not support thinking')
    if images and "vision" not in model.capabilities:
        raise InvalidRequestError(f'"{model.name}" does not support images')
    return True if think is None and thinks else think


def json_schema_for(fmt: Any) -> str:
    """``format`` as the runner's ``json_schema``: "" (none), "json", or the schema's JSON text."""
    if fmt is None or fmt == "":
        return ""
    if fmt == "json":
        return "json"
    if isinstance(fmt, dict):
        return _json_encoder.encode(fmt).decode()
    shown = _json_encoder.encode(fmt).decode()
    raise InvalidRequestError(
        f'invalid format: {shown}; expected "json" or a valid JSON Schema object'
    )


def add_bos_for(model: LocalModel, prompt: str) -> bool:
    """Tokenize with the model's BOS unless the rendered prompt already starts with it."""
    bos = model.gguf.bos_token
    return not (bos and prompt.startswith(bos))


def output_parser(
    model: LocalModel,
    prompt: str,
    *,
    think: bool | str | None,
    tools: list[dict[str, Any]] | None,
    template: str | None = None,
    tagged_tools_only: bool = False,
) -> OutputParser:
    """The parsers this request's output goes through.

    Thinking is split when ``think`` is on and the template's tags are known (a prompt that
    already ends with the opening tag starts inside the block). Tool calls are parsed when the
    request has ``tools``, in the format the template teaches; ``tagged_tools_only`` (generate)
    parses only the tagged formats, never bare JSON, and accepts any tool name.
    """
    source = template or model.template
    chat_template = model.gguf.chat_template if not source else None
    thinking = None
    tags = thinking_tags(source, chat_template) if think else None
    if tags is not None:
        primed = prompt.rstrip().endswith(tags[0])
        thinking = ThinkingParser(tags[0], tags[1], primed=primed)
    parser = None
    fmt = tool_format(source or chat_template)
    if tools:
        parser = ToolParser(fmt, _tool_names(tools))
    elif tagged_tools_only and "tools" in model.capabilities and fmt is not ToolFormat.JSON:
        parser = ToolParser(fmt)
    return OutputParser(thinking=thinking, tools=parser)


def _tool_names(tools: list[dict[str, Any]]) -> list[str]:
    names = []
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            names.append(fn["name"])
    return names


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


async def count_tokens(runners: Runners, prep: Prepared, text: str, *, add_special: bool) -> int:
    """How many tokens ``text`` is for ``prep``'s model (one Tokenize round trip)."""
    model, params = prep.model, prep.options.load
    reply = await runners.call(
        model, params, None, lambda i: Tokenize(id=i, text=text, add_special=add_special)
    )
    if not isinstance(reply, Tokenized):
        raise ProtocolError(f"expected Tokenized, got {reply!r}", model=model.name)
    return len(reply.tokens)
