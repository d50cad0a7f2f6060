"""Every message that crosses the gateway <-> runner socket.

Commands (gateway -> runner) have imperative names, events (runner -> gateway) are nouns. Every
request carries an ``id``; replies to it reuse the id and end with exactly one terminal ``Done``
or ``Failed``. Several requests may be in flight on one runner at once, so a runner that serves
many sequences in one batch needs no change here.

Evolution rules (msgspec): new fields get defaults, a field's type never changes, and anything
else bumps ``PROTOCOL_VERSION``.
"""

from __future__ import annotations

import enum
from typing import Literal

import msgspec

__all__ = [
    "MAX_TOKENIZE_BYTES",
    "Cancel",
    "CpuMode",
    "Detokenize",
    "Detokenized",
    "Done",
    "Embed",
    "Embeddings",
    "ErrorCode",
    "Failed",
    "FromRunner",
    "Generate",
    "Hello",
    "Load",
    "LoadParams",
    "Memory",
    "Msg",
    "Ping",
    "Pong",
    "Progress",
    "Ready",
    "Sampling",
    "Shutdown",
    "Stats",
    "ToRunner",
    "TokenLogprob",
    "Tokenize",
    "Tokenized",
    "Tokens",
    "TopLogprob",
]


# The most UTF-8 text a runner tokenizes for one request: a ``Tokenize`` text, a ``Generate``
# prompt, each ``Embed`` input; longer is a BAD_REQUEST that names the limit. About a million
# tokens of prose, more than any context holds; llama.cpp takes seconds a MiB on a small CPU.
MAX_TOKENIZE_BYTES = 8 << 20


class ErrorCode(enum.StrEnum):
    LOAD = "load"  # the model could not be loaded; never retried
    BAD_REQUEST = "bad_request"  # the request cannot be served as asked (e.g. prompt too long)
    INTERNAL = "internal"  # a bug or engine failure while serving a request
    PROTOCOL = "protocol"  # an unexpected or malformed message


class CpuMode(enum.StrEnum):
    """Which of llama.cpp's CPU weight layouts a runner's model uses."""

    AUTO = "auto"  # the runner decides from its CPU's flags (runner.cpu); never in Ready
    EXTRA = "extra"  # llama.cpp's default: its extra buffer types (weights repacked for the
    #                  CPU's fastest kernels; AMX tiles where the build has them)
    NO_AMX = "no-amx"  # the extra buffer types, with AMX denied to the runner process
    PLAIN = "plain"  # no extra buffer types: weights as the file has them


class Msg(msgspec.Struct, frozen=True, kw_only=True, tag_field="op", tag=str.lower):
    """Base of every message on the wire."""


# ---------------------------------------------------------------------------- shared parts


class LoadParams(msgspec.Struct, frozen=True, kw_only=True):
    model_path: str
    n_ctx: int = 4096  # per sequence
    n_batch: int = 512
    n_gpu_layers: int = 0
    main_gpu: int = -1  # a position among the visible GPUs; -1 = the gateway's choice
    split_mode: int = 1  # llama.cpp's llama_split_mode: 0 none (main_gpu only), 1 by layer
    tensor_split: tuple[float, ...] = ()  # each GPU's share of the layers; () = by free memory
    n_threads: int = 0  # 0 = let the runner choose
    use_mmap: bool = True
    use_mlock: bool = False
    cpu_mode: CpuMode = CpuMode.AUTO
    flash_attn: bool | None = None  # None = engine default
    kv_cache_type: str = "f16"
    lora_paths: tuple[str, ...] = ()
    projector_path: str = ""  # a multimodal projector (mmproj GGUF); "" = text only
    embedding: bool = False
    num_parallel: int = 1
    # llama.cpp RPC workers ("host:port") that take a share of the layers; () = this machine
    rpc_workers: tuple[str, ...] = ()


class Sampling(msgspec.Struct, frozen=True, kw_only=True):
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1  # -1 = random


class Memory(msgspec.Struct, frozen=True, kw_only=True):
    rss: int  # bytes resident in the runner process
    vram: int = 0  # bytes the runner placed on a GPU


class Stats(msgspec.Struct, frozen=True, kw_only=True):
    prompt_tokens: int = 0  # tokens of the prompt (cached + evaluated)
    prompt_cached: int = 0  # of which reused from the KV cache
    prompt_eval_s: float = 0.0
    eval_tokens: int = 0
    eval_s: float = 0.0


class TopLogprob(msgspec.Struct, frozen=True, array_like=True):
    token: str
    logprob: float
    utf8: bytes


class TokenLogprob(msgspec.Struct, frozen=True, array_like=True):
    token: str
    logprob: float
    utf8: bytes
    top: tuple[TopLogprob, ...] = ()


# ---------------------------------------------------------------------------- commands


class Load(Msg, frozen=True):
    params: LoadParams


class Generate(Msg, frozen=True):
    id: int
    tokens: tuple[int, ...] = ()  # tokens that come first (e.g. a previous `context`)
    prompt: str = ""  # text tokenized after them, special tokens parsed
    add_bos: bool = True
    sampling: Sampling = Sampling()
    num_predict: int = -1  # -1 = until a stop or the context is full
    stop: tuple[str, ...] = ()
    num_keep: int = 4
    grammar: str = ""  # GBNF; empty = unconstrained
    logprobs: int = -1  # -1 = off; n >= 0 = on with n alternatives
    shift: bool = True  # shift the context instead of stopping when it fills
    truncate: bool = True  # trim an over-long prompt instead of failing
    json_schema: str = ""  # JSON schema text that constrains the output; "json" = any object
    images: tuple[bytes, ...] = ()  # encoded images; the prompt's "[img-N]" tags place image N
    # The request's own context length (its model's num_ctx): a runner loaded with a larger
    # context serves it as if it had this one (truncate, shift, too long). 0 = the runner's.
    n_ctx: int = 0


class Embed(Msg, frozen=True):
    id: int
    inputs: tuple[str, ...]
    truncate: bool = True
    normalize: bool = True
    n_ctx: int = 0  # the request's own context length, as for Generate; 0 = the runner's
    # Token ids to embed as they are, one array per input, in place of the texts (``inputs``
    # is then empty)
    tokens: tuple[tuple[int, ...], ...] = ()


class Tokenize(Msg, frozen=True):
    id: int
    text: str
    add_special: bool = False
    parse_special: bool = True


class Detokenize(Msg, frozen=True):
    id: int
    tokens: tuple[int, ...]


class Cancel(Msg, frozen=True):
    id: int


class Ping(Msg, frozen=True):
    id: int


class Shutdown(Msg, frozen=True):
    pass


# ---------------------------------------------------------------------------- events


class Hello(Msg, frozen=True):
    protocol: int
    pid: int
    engine: str = ""  # what computes, e.g. "llama-cpp-python 0.3.36"
    system_info: str = ""  # the CPU features the engine uses (llama.cpp's system info)
    cpu: str = ""  # the CPU model and its flags that matter
    auto_cpu_mode: CpuMode = CpuMode.EXTRA  # what CpuMode.AUTO becomes on this machine
    auto_cpu_mode_why: str = ""


class Progress(Msg, frozen=True):
    """A load going on: a few a second at most; each resets the gateway's stall deadline."""

    fraction: float  # of the model's weights read, 0.0 to 1.0


class Ready(Msg, frozen=True):
    memory: Memory
    n_ctx: int  # per sequence
    n_vocab: int
    num_parallel: int = 1
    gpu_layers: int = 0  # layers llama.cpp offloaded to a GPU (0 without one, whatever was asked)
    cpu_mode: CpuMode = CpuMode.EXTRA  # the mode the model was loaded in (see LoadParams)


class Tokens(Msg, frozen=True):
    """One or more generated tokens, coalesced when they were ready together."""

    id: int
    text: str
    ids: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...] = ()
    first: bool = False  # the first tokens of this request


class Embeddings(Msg, frozen=True):
    """Vectors of an ``Embed``'s inputs in order, in one or more frames before its ``Done``."""

    id: int
    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int


class Tokenized(Msg, frozen=True):
    id: int
    tokens: tuple[int, ...]


class Detokenized(Msg, frozen=True):
    id: int
    text: str


class Done(Msg, frozen=True):
    id: int
    reason: Literal["stop", "length", "cancel"]
    stats: Stats
    context: tuple[int, ...] = ()  # prompt + generated tokens, for /api/generate's `context`
    stop: str = ""  # the stop string (``Sampling.stop``) that ended it; "" when none did


class Failed(Msg, frozen=True):
    id: int | None  # None = runner-wide (e.g. load)
    code: ErrorCode
    message: str


class Pong(Msg, frozen=True):
    id: int


ToRunner = Load | Generate | Embed | Tokenize | Detokenize | Cancel | Ping | Shutdown
FromRunner = (
    Hello | Progress | Ready | Tokens | Embeddings | Tokenized | Detokenized | Done | Failed | Pong
)
