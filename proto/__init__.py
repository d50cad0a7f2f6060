"""The private gateway <-> runner protocol: typed messages and their framing.

``proto`` imports only msgspec and the standard library. It changes behind
``PROTOCOL_VERSION``: the runner's first frame is ``Hello(protocol=PROTOCOL_VERSION)`` and a
mismatch is a start-up error.
"""

from __future__ import annotations

from proto.framing import (
    MAX_FRAME,
    ConnectionClosed,
    FrameError,
    FrameReader,
    FrameWriter,
    gateway_decoder,
    runner_decoder,
)
from proto.messages import (
    MAX_TOKENIZE_BYTES,
    Cancel,
    CpuMode,
    Detokenize,
    Detokenized,
    Done,
    Embed,
    Embeddings,
    ErrorCode,
    Failed,
    FromRunner,
    Generate,
    Hello,
    Load,
    LoadParams,
    Memory,
    Msg,
    Ping,
    Pong,
    Progress,
    Ready,
    Sampling,
    Shutdown,
    Stats,
    Tokenize,
    Tokenized,
    TokenLogprob,
    Tokens,
    TopLogprob,
    ToRunner,
)

PROTOCOL_VERSION = 2  # 2: LoadParams.seed, Ready.n_ctx_train and Ready.load_s removed

# Exit codes are protocol too.
EXIT_OK = 0
EXIT_BAD_ARGS = 2
EXIT_LOAD_FAILED = 3

__all__ = [
    "EXIT_BAD_ARGS",
    "EXIT_LOAD_FAILED",
    "EXIT_OK",
    "MAX_FRAME",
    "MAX_TOKENIZE_BYTES",
    "PROTOCOL_VERSION",
    "Cancel",
    "ConnectionClosed",
    "CpuMode",
    "Detokenize",
    "Detokenized",
    "Done",
    "Embed",
    "Embeddings",
    "ErrorCode",
    "Failed",
    "FrameError",
    "FrameReader",
    "FrameWriter",
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
    "gateway_decoder",
    "runner_decoder",
]
