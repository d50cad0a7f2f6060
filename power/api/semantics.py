"""What a generate or chat request means for its model: lookups, images, ``format``, BOS,
``think``, and the parsers its output goes through. Checks raise before anything runs.
"""

from __future__ import annotations

import asyncio
import binascii
import concurrent.futures
import json
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.datastructures import State

from power.errors import InvalidRequestError
from power.parse import OutputParser, ThinkingParser, ToolFormat, ToolParser, tool_format
from power.registry.through import deferred
from power.store.names import ModelName
from power.template import thinking_tags
from proto import MAX_FRAME

if TYPE_CHECKING:
    from power.store import ModelStore
    from power.store.model import LocalModel

__all__ = [
    "MAX_IMAGE_BYTES",
    "THINK_LEVELS",
    "add_bos_for",
    "check_common",
    "decode_images",
    "image_payload",
    "is_base64",
    "json_schema_for",
    "lookup_model",
    "output_parser",
    "read_images",
]

MAX_IMAGE_BYTES = MAX_FRAME - (1 << 20)  # all images of a request ride in one Generate frame

# A JSON schema's length and count bounds, and the {m,n} of its patterns, become as many
# repeated or nested grammar rules in the runner (llama-cpp-python's converter): a minItems of
# 10**9 would build gigabytes of grammar there, and a maxLength of 30,000 overflowed the stack
# of llama.cpp's grammar parser (the runner died). llama.cpp refuses the grammar of a bound
# past about 1,000 anyway ("exceeds sane defaults").
MAX_SCHEMA_BOUND = 1024
_BOUND_KEYS = frozenset(
    {"minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"}
)
_QUANTIFIER = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")

_json_encoder = msgspec.json.Encoder()


# Where ``store.get`` runs: a lookup reads a manifest and a GGUF header, and should not queue
# behind the default executor's longer jobs. No lookup waits here for a pull-through (it is
# awaited on the loop, power.registry.through.deferred), so the pool holds only short jobs and
# a local model is found at once while pulls for others stall.
_LOOKUPS = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="lookup")


async def lookup_model(state: State, name: str) -> LocalModel:
    """The model ``name``; in a fleet, one the store lacks is pulled through first."""
    store: ModelStore = state.store
    return await deferred(store.get, name, executor=_LOOKUPS)


# Base64 as ``decode_images`` takes it: the standard alphabet, padded, line breaks anywhere.
_BASE64 = re.compile(r"[A-Za-z0-9+/\r\n]*(?:=[\r\n]*){0,2}")

# Decoding takes about 2.5 ms a MiB of base64: past this much it would hold the event loop up
# for more than half a millisecond, so ``read_images`` decodes on a worker thread.
_DECODE_ON_LOOP_CHARS = 1 << 18


def is_base64(text: str) -> bool:
    """Whether ``decode_images`` takes ``text``, found without decoding it: one scan, no copy.
    The OpenAI and Anthropic converters check their images with it; they are decoded once,
    later, with the rest of the request's."""
    if _BASE64.fullmatch(text) is None:
        return False
    return (len(text) - text.count("\n") - text.count("\r")) % 4 == 0


def decode_images(images: Iterable[str], where: str) -> tuple[bytes, ...]:
    """The bytes of base64 ``images`` (found at ``where``); a 400 that names a bad one.

    Line breaks are ignored, as Go's decoder (Ollama's) ignores them; nothing else is. The text
    is decoded as it is: ``base64.b64decode`` would first copy it whole into ASCII bytes.
    """
    out: list[bytes] = []
    for i, data in enumerate(images):
        try:
            text = data.replace("\n", "").replace("\r", "")  # (no copy when there are none)
            out.append(binascii.a2b_base64(text, strict_mode=True))
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequestError(f"invalid image data in {where}[{i}]: {exc}") from exc
    return tuple(out)


async def read_images(images: Sequence[str], where: str) -> tuple[bytes, ...]:
    """``decode_images``, on a worker thread when there is enough to hold the event loop up."""
    if sum(map(len, images)) <= _DECODE_ON_LOOP_CHARS:
        return decode_images(images, where)
    return await asyncio.to_thread(decode_images, images, where)


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


THINK_LEVELS = ("low", "medium", "high", "max")


def check_common(
    model: LocalModel,
    *,
    requested: str,
    think: bool | str | None,
    top_logprobs: int,
    images: bool,
    endpoint: str = "chat",
    tools: bool = False,
    suffix: bool = False,
) -> bool | str | None:
    """Checks shared by generate and chat that need the model; returns the effective ``think``.

    A thinking-capable model thinks unless told not to (``think`` omitted means on). The
    capability errors are worded as Ollama's, which clients match: the name as ``requested``
    and quoted for thinking and the ``endpoint`` ("chat" or "generate") a model without
    ``completion`` cannot serve; the full name, unquoted, for tools and ``suffix`` (insert).
    """
    if isinstance(think, str) and think not in THINK_LEVELS:
        raise InvalidRequestError(
            f"invalid think value: {think!r} (must be a boolean or one of low, medium, high, max)"
        )
    if not 0 <= top_logprobs <= 20:
        raise InvalidRequestError("top_logprobs must be between 0 and 20")
    caps = model.capabilities
    thinks = "thinking" in caps
    if think not in (None, False) and not thinks:
        raise InvalidRequestError(f"{_go_quote(requested)} does not support thinking")
    if "completion" not in caps:
        raise InvalidRequestError(f"{_go_quote(requested)} does not support {endpoint}")
    full = ModelName.parse(model.name).full
    if tools and "tools" not in caps:
        raise InvalidRequestError(f"{full} does not support tools")
    if suffix and "insert" not in caps:
        raise InvalidRequestError(f"{full} does not support insert")
    if images and "vision" not in caps:
        raise InvalidRequestError(f"{_go_quote(requested)} does not support images")
    return True if think is None and thinks else think


def _go_quote(text: str) -> str:
    """Go's ``%q`` (strconv.Quote) for a model name: double quotes, printable text kept."""
    return json.dumps(text, ensure_ascii=False)


def json_schema_for(fmt: Any) -> str:
    """``format`` as the runner's ``json_schema``: "" (none), "json", or the schema's JSON text."""
    if fmt is None or fmt == "":
        return ""
    if fmt == "json":
        return "json"
    if isinstance(fmt, dict):
        _check_bounds(fmt)
        return _json_encoder.encode(fmt).decode()
    shown = _json_encoder.encode(fmt).decode()
    raise InvalidRequestError(
        f'invalid format: {shown}; expected "json" or a valid JSON Schema object'
    )


def _check_bounds(schema: dict[str, Any]) -> None:
    """A 400 naming the first bound of ``schema`` past ``MAX_SCHEMA_BOUND``."""
    todo: list[tuple[object, str]] = [(schema, "format")]
    while todo:
        node, where = todo.pop()
        if isinstance(node, list):
            todo.extend((item, f"{where}[{i}]") for i, item in enumerate(node))
            continue
        if not isinstance(node, dict):
            continue
        for key, value in node.items():
            at = f"{where}.{key}"
            if (
                key in _BOUND_KEYS
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            ):
                too_big = value > MAX_SCHEMA_BOUND
            elif key == "pattern" and isinstance(value, str):
                counts = (n for m in _QUANTIFIER.finditer(value) for n in m.groups() if n)
                too_big = any(len(n) > 6 or int(n) > MAX_SCHEMA_BOUND for n in counts)
            else:
                todo.append((value, at))
                continue
            if too_big:
                raise InvalidRequestError(
                    f"invalid format: {at} asks for more than {MAX_SCHEMA_BOUND} repetitions,"
                    " more than a grammar can hold"
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
