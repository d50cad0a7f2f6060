"""The runner's frame loop: ``python -m runner --fd N [--engine llama|fake:…]``.

The gateway hands over one end of a socketpair as fd N. The runner says ``Hello``, waits for
``Load``, loads on its inference thread, answers ``Ready`` (or ``Failed`` and exit 3), then
serves requests until the socket closes, ``Shutdown`` arrives or SIGTERM: each of those cancels
what is in flight (every request still gets its terminal message) and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from proto import (
    EXIT_BAD_ARGS,
    EXIT_LOAD_FAILED,
    EXIT_OK,
    PROTOCOL_VERSION,
    Cancel,
    ConnectionClosed,
    Detokenize,
    Detokenized,
    Embed,
    ErrorCode,
    Failed,
    FrameError,
    FrameReader,
    FrameWriter,
    Generate,
    Hello,
    Load,
    Ping,
    Pong,
    Ready,
    Shutdown,
    Tokenize,
    Tokenized,
    runner_decoder,
)
from runner.engine import Engine
from runner.outbox import Outbox
from runner.worker import Worker

# CUDA numbers GPUs in PCI bus order, as nvidia-smi (and so the gateway's placement) does
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")

__all__ = ["main", "serve"]

log = logging.getLogger("runner")


def _make_engine(spec: str, *, verbose: bool) -> Engine:
    if spec.startswith("fake"):
        from runner.fake import parse_fake_spec

        return parse_fake_spec(spec)
    if spec != "llama":
        raise ValueError(f"unknown engine {spec!r}")
    from runner.llama_engine import LlamaEngine

    return LlamaEngine(verbose=verbose)


async def serve(sock: socket.socket, engine: Engine) -> int:
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    frames = FrameReader(reader, runner_decoder())
    out = FrameWriter(writer)
    outbox = Outbox(out, loop)
    outbox.push(Hello(protocol=PROTOCOL_VERSION, pid=os.getpid()))
    worker = Worker(engine, outbox)
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main_task.cancel)
    try:
        try:
            first = await frames.read()
            if not isinstance(first, Load):
                outbox.push(Failed(id=None, code=ErrorCode.PROTOCOL, message="expected Load"))
                return EXIT_BAD_ARGS
            started = time.perf_counter()
            try:
                info = await asyncio.wrap_future(worker.load(first.params))
            except Exception as exc:
                log.error("load failed: %s", exc)
                outbox.push(Failed(id=None, code=ErrorCode.LOAD, message=str(exc)))
                return EXIT_LOAD_FAILED
            outbox.push(
                Ready(
                    memory=engine.memory(),
                    n_ctx=info.n_ctx,
                    n_ctx_train=info.n_ctx_train,
                    n_vocab=info.n_vocab,
                    num_parallel=info.num_parallel,
                    load_s=time.perf_counter() - started,
                    gpu_layers=info.gpu_layers,
                )
            )
            await _serve_requests(frames, outbox, worker, engine)
        except (ConnectionClosed, asyncio.CancelledError):
            pass  # the gateway is gone or asked us to stop: wind down below
        except FrameError as exc:
            log.error("bad frame from the gateway: %s", exc)
        return EXIT_OK
    finally:
        worker.stop()
        await loop.run_in_executor(None, worker.join, 10.0)
        outbox.flush()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await out.drain()
        out.close()
        await out.wait_closed()


async def _serve_requests(
    frames: FrameReader[Any], outbox: Outbox, worker: Worker, engine: Engine
) -> None:
    while True:
        msg = await frames.read()
        if isinstance(msg, Generate | Embed):
            worker.submit(msg)
        elif isinstance(msg, Cancel):
            worker.cancel(msg.id)
        elif isinstance(msg, Ping):
            outbox.push(Pong(id=msg.id))
        elif isinstance(msg, Tokenize):
            tokens = engine.tokenize(
                msg.text, add_special=msg.add_special, parse_special=msg.parse_special
            )
            outbox.push(Tokenized(id=msg.id, tokens=tuple(tokens)))
        elif isinstance(msg, Detokenize):
            outbox.push(Detokenized(id=msg.id, text=engine.detokenize(msg.tokens)))
        elif isinstance(msg, Shutdown):
            return
        else:
            outbox.push(Failed(id=None, code=ErrorCode.PROTOCOL, message=f"unexpected {msg!r}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner")
    parser.add_argument("--fd", type=int, required=True, help="inherited socket to the gateway")
    parser.add_argument("--engine", default="llama", help="llama, or fake:<mode>?<options>")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        engine = _make_engine(args.engine, verbose=args.verbose)
        sock = socket.socket(fileno=args.fd)
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return EXIT_BAD_ARGS
    try:
        return asyncio.run(serve(sock, engine))
    finally:
        sock.close()
