"""A chat-template render worker: ``python -m power.template._render_worker``.

It answers ``Render`` requests from its stdin on its stdout, one at a time, until stdin ends
(the gateway closed it, or died). A chat template is code from an uploaded GGUF file, and a
few bytes of it can ask minijinja for gigabytes (``([s] * 100000)|string``): a failed
allocation aborts the process it happens in. So each rendering runs here, under an
address-space cap of ``HEADROOM`` over what the worker already maps plus ``PER_BYTE`` times the
request. Past the cap, Python raises MemoryError (answered as a refusal) or minijinja aborts
this process, which the gateway reports as the request's error; the gateway lives on either way.

Where the system cannot cap a process's address space (macOS ignores RLIMIT_AS), rendering is
still out of the gateway's process, bounded in time by the gateway's deadline.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
from collections.abc import Iterator

import msgspec

from power.template._error import TemplateError
from power.template._render_wire import (
    MAX_REQUEST,
    Refused,
    Render,
    Rendered,
    decode_ext,
    read_frame,
    write_frame,
)
from power.template.jinja import COMPILE_STACK, render_chat_template

__all__ = ["HEADROOM", "PER_BYTE", "answer", "main"]

# Bytes of address space a rendering may add: 256 MiB to work in (a real template's prompt is
# a few MiB at most beside the conversation), and what a compile's thread reserves (its stack,
# and up to two 64 MiB malloc arenas' worth of address space).
HEADROOM = 256 * 2**20 + COMPILE_STACK + 128 * 2**20
PER_BYTE = 6  # and per byte of the request: its decoded objects and minijinja's copies
_decoder = msgspec.msgpack.Decoder(Render, ext_hook=decode_ext)
_encoder = msgspec.msgpack.Encoder()


def _statm(field: int) -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[field]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _resident() -> int:
    rss = _statm(1)
    if rss is not None:
        return rss
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS
    return peak if sys.platform == "darwin" else peak * 1024


@contextlib.contextmanager
def _capped(request_bytes: int) -> Iterator[int | None]:
    """Cap the address space for one rendering; yields the cap (None where it cannot be set)."""
    mapped = _statm(0)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if mapped is None:
        yield None
        return
    cap = mapped + HEADROOM + PER_BYTE * request_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ValueError, OSError):
        yield None
        return
    try:
        yield cap
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def answer(body: bytes | bytearray, retire_rss: int) -> bytes:
    """The encoded reply to one encoded request."""
    cap: int | None = None
    try:
        with _capped(len(body)) as cap:
            req = _decoder.decode(body)
            text = render_chat_template(
                req.source,
                req.messages,
                tools=req.tools,
                add_generation_prompt=req.add_generation_prompt,
                bos_token=req.bos_token,
                eos_token=req.eos_token,
                **req.variables,
            )
            return _encoder.encode(Rendered(text=text, retire=_resident() > retire_rss))
    except (MemoryError, TemplateError) as exc:
        if isinstance(exc, TemplateError) and not _out_of_memory(exc):
            return _encoder.encode(Refused(detail=exc.detail, retire=_resident() > retire_rss))
        limit = f" ({cap // 2**20} MiB)" if cap else ""
        detail = f"rendering the chat template needs more memory than allowed{limit}"
        return _encoder.encode(Refused(detail=detail, retire=True, exhausted=True))
    except msgspec.DecodeError as exc:
        return _encoder.encode(Refused(detail=f"bad render request: {exc}"))


def _out_of_memory(exc: BaseException | None) -> bool:
    """Whether exc is, or was caused by, a MemoryError (the renderer wraps what it catches)."""
    while exc is not None:
        if isinstance(exc, MemoryError):
            return True
        exc = exc.__cause__
    return False


def main(argv: list[str] | None = None) -> int:
    """argv: the resident size (bytes) past which a reply asks the gateway to retire it."""
    (retire_rss,) = map(int, sys.argv[1:] if argv is None else argv)
    # an abort for memory here is expected: no core file of it (gigabytes to write)
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    logging.disable(logging.CRITICAL)  # the gateway reports what failed, with the request
    replies = os.dup(1)
    os.dup2(2, 1)  # nothing printed by accident can corrupt a reply
    try:
        while (body := read_frame(0, MAX_REQUEST, None)) is not None:
            reply = answer(body, retire_rss)
            del body
            write_frame(replies, reply, None)
    except (BrokenPipeError, ConnectionError):
        pass  # the gateway is gone
    return 0


if __name__ == "__main__":
    sys.exit(main())
