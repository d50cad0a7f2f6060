"""The public Ollama JSON: request bodies and response objects, field for field.

Requests are lenient (unknown fields are ignored, as Ollama does). Responses use ``UNSET`` for
the fields Ollama omits when empty, so the encoder leaves them out.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "MAX_MESSAGES",
    "ChatChunk",
    "ChatRequest",
    "DebugInfo",
    "EmbedRequest",
    "EmbedResponse",
    "EmbeddingsRequest",
    "GenerateChunk",
    "GenerateRequest",
    "Logprob",
    "Message",
    "PsModel",
    "TopLogprob",
    "prompt_tokens",
]


TokenId = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]  # llama.cpp's tokens are int32

# A conversation of more messages fits no context (each costs a few template tokens at least);
# rendering 3 million small ones took the gateway 4 GiB and two minutes of CPU.
MAX_MESSAGES = 100_000


class Message(msgspec.Struct, kw_only=True, omit_defaults=False):
    role: str
    content: str = ""
    thinking: str | UnsetType = UNSET
    images: list[str] | UnsetType = UNSET
    tool_calls: list[dict[str, Any]] | UnsetType = UNSET
    tool_name: str | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET


class GenerateRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    prompt: str = ""
    suffix: str = ""
    system: str | None = None
    template: str | None = None
    context: list[TokenId] | None = None
    stream: bool = True
    raw: bool = False
    format: Any = None
    keep_alive: Any = None
    images: list[str] | None = None
    options: dict[str, Any] | None = None
    think: bool | str | None = None
    truncate: bool = True
    shift: bool = True
    logprobs: bool = False
    top_logprobs: int = 0
    # Ollama's debug switch: answer with the rendered prompt (``_debug_info``), generate nothing
    debug_render_only: bool = msgspec.field(default=False, name="_debug_render_only")


class ChatRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    messages: Annotated[list[Message], msgspec.Meta(max_length=MAX_MESSAGES)] = msgspec.field(
        default_factory=list
    )
    tools: list[dict[str, Any]] | None = None
    stream: bool = True
    format: Any = None
    keep_alive: Any = None
    options: dict[str, Any] | None = None
    think: bool | str | None = None
    truncate: bool = True
    shift: bool = True
    logprobs: bool = False
    top_logprobs: int = 0
    debug_render_only: bool = msgspec.field(default=False, name="_debug_render_only")


class EmbedRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    input: Any = None  # a string or a list of strings; checked by the handler
    truncate: bool = True
    dimensions: int | None = None
    keep_alive: Any = None
    options: dict[str, Any] | None = None


class EmbedResponse(msgspec.Struct, kw_only=True):
    model: str
    embeddings: list[list[float]]
    total_duration: int | UnsetType = UNSET
    load_duration: int | UnsetType = UNSET
    prompt_eval_count: int | UnsetType = UNSET


class EmbeddingsRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    prompt: str = ""
    keep_alive: Any = None
    options: dict[str, Any] | None = None


class TopLogprob(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int]


class Logprob(msgspec.Struct, kw_only=True):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob] | UnsetType = UNSET


class DebugInfo(msgspec.Struct, kw_only=True):
    """What ``_debug_render_only`` answers with: the prompt as rendered for the model."""

    rendered_template: str
    image_count: int | UnsetType = UNSET


class _Metrics(msgspec.Struct, kw_only=True):
    total_duration: int | UnsetType = UNSET
    load_duration: int | UnsetType = UNSET
    prompt_eval_count: int | UnsetType = UNSET
    prompt_eval_duration: int | UnsetType = UNSET
    eval_count: int | UnsetType = UNSET
    eval_duration: int | UnsetType = UNSET


class GenerateChunk(msgspec.Struct, kw_only=True):
    model: str
    created_at: str
    response: str
    thinking: str | UnsetType = UNSET
    done: bool
    done_reason: str | UnsetType = UNSET
    context: list[int] | UnsetType = UNSET
    total_duration: int | UnsetType = UNSET
    load_duration: int | UnsetType = UNSET
    prompt_eval_count: int | UnsetType = UNSET
    prompt_eval_duration: int | UnsetType = UNSET
    # A3S Power: how many of prompt_eval_count were reused from the KV cache, not evaluated
    prompt_cache_count: int | UnsetType = UNSET
    eval_count: int | UnsetType = UNSET
    eval_duration: int | UnsetType = UNSET
    tool_calls: list[dict[str, Any]] | UnsetType = UNSET
    logprobs: list[Logprob] | UnsetType = UNSET
    debug_info: DebugInfo | UnsetType = msgspec.field(default=UNSET, name="_debug_info")


class ChatChunk(msgspec.Struct, kw_only=True):
    model: str
    created_at: str
    message: Message
    done: bool
    done_reason: str | UnsetType = UNSET
    total_duration: int | UnsetType = UNSET
    load_duration: int | UnsetType = UNSET
    prompt_eval_count: int | UnsetType = UNSET
    prompt_eval_duration: int | UnsetType = UNSET
    # A3S Power: how many of prompt_eval_count were reused from the KV cache, not evaluated
    prompt_cache_count: int | UnsetType = UNSET
    eval_count: int | UnsetType = UNSET
    eval_duration: int | UnsetType = UNSET
    logprobs: list[Logprob] | UnsetType = UNSET
    debug_info: DebugInfo | UnsetType = msgspec.field(default=UNSET, name="_debug_info")


class PsModel(msgspec.Struct, kw_only=True):
    name: str
    model: str
    size: int
    digest: str
    details: dict[str, Any]
    expires_at: str
    size_vram: int
    context_length: int
    # A3S Power extras: which process holds the model, and what it measurably uses.
    pid: int
    memory: dict[str, int]
    requests_in_flight: int
    queued: int  # requests waiting for one of this runner's parallel sequences
    mean_wait_s: float  # mean time requests to this model waited for admission
    num_parallel: int
    # the runner's CPU mode (proto.CpuMode), shown when it is not the daemon's default
    cpu_mode: str | UnsetType = UNSET


def prompt_tokens(chunk: GenerateChunk | ChatChunk | None) -> tuple[int, int]:
    """(all prompt tokens, of which cached) from a final chunk, for the compatible APIs' usage."""
    if chunk is None:
        return 0, 0
    return chunk.prompt_eval_count or 0, chunk.prompt_cache_count or 0
