"""The runner's frame loop: ``python -m runner --fd N [--engine llama|fake:…] [--quiet-start]``.

The gateway hands over one end of a socketpair as fd N. The runner says ``Hello``, waits for
``Load``, loads on its inference thread, answers ``Ready`` (or ``Failed`` and exit 3), then
serves requests until the socket closes, ``Shutdown`` arrives or SIGTERM: each of those cancels
what is in flight (every request still gets its terminal message) and exits 0. This loop only
routes frames, so it always answers ``Ping``: the work runs on the worker's threads. A runner
that dies of a fatal signal leaves every thread's Python stack on stderr (``faulthandler``).
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from proto import (
    EXIT_BAD_ARGS,
    EXIT_LOAD_FAILED,
    EXIT_OK,
    PROTOCOL_VERSION,
    Cancel,
    ConnectionClosed,
    CpuMode,
    Detokenize,
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
    runner_decoder,
)
from runner.cpu import amx_denial_possible, auto_mode, read_cpu
from runner.engine import Engine
from runner.llama_compat import UnsupportedEngineError, check_version, installed_version
from runner.outbox import Outbox
from runner.worker import Worker

# CUDA numbers GPUs in PCI bus order, as nvidia-smi (and so the gateway's placement) does
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")

__all__ = ["import_engine", "main", "make_engine", "serve"]

log = logging.getLogger("runner")


def make_engine(spec: str, *, verbose: bool) -> Engine:
    """The engine ``spec`` names; ``ValueError`` for an unknown one, ``UnsupportedEngineError``
    when llama-cpp-python is not a tested release (checked before it is imported)."""
    return _engine_maker(spec)(verbose)


def import_engine(spec: str) -> None:
    """Import what ``make_engine(spec)`` needs, making no engine (``runner.quiet``)."""
    _engine_maker(spec)


def _engine_maker(spec: str) -> Callable[[bool], Engine]:
    if spec.startswith("fake"):
        from runner.fake import parse_fake_spec

        return lambda _verbose: parse_fake_spec(spec)
    if spec != "llama":
        raise ValueError(f"unknown engine {spec!r}")
    check_version(installed_version())
    from runner.llama_engine import LlamaEngine

    return lambda verbose: LlamaEngine(verbose=verbose)


async def serve(sock: socket.socket, make: Callable[[], Engine]) -> int:
    """Say ``Hello`` (or why the engine cannot start), load, then serve until told to stop."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    frames = FrameReader(reader, runner_decoder())
    out = FrameWriter(writer)
    outbox = Outbox(out, loop)
    try:
        engine = make()
    except (ValueError, OSError, UnsupportedEngineError) as exc:
        log.error("%s", exc)
        outbox.push(Failed(id=None, code=ErrorCode.LOAD, message=str(exc)))
        await outbox.aclose()
        return EXIT_BAD_ARGS
    name, system_info = engine.about()
    cpu = read_cpu()
    auto, why = auto_mode(cpu, amx_denial=amx_denial_possible())
    worker = Worker(engine, outbox)  # (before Hello: a runner that said Hello has its threads)
    outbox.push(
        Hello(
            protocol=PROTOCOL_VERSION,
            pid=os.getpid(),
            engine=name,
            system_info=system_info,
            cpu=cpu.describe(),
            auto_cpu_mode=auto,
            auto_cpu_mode_why=why,
        )
    )
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
            params = first.params
            if params.cpu_mode == CpuMode.AUTO:
                params = msgspec.structs.replace(params, cpu_mode=auto)
            load = asyncio.wrap_future(worker.load(params))
            load.add_done_callback(_seen)  # (a load given up ends in an error nobody awaits)
            reading = await _watch(load, frames, outbox)
            if reading is None:
                return EXIT_OK  # told to stop while loading: the load is given up below
            try:
                info = load.result()
            except Exception as exc:
                reading.cancel()
                log.error("load failed: %s", exc)
                outbox.push(Failed(id=None, code=ErrorCode.LOAD, message=str(exc)))
                return EXIT_LOAD_FAILED
            outbox.push(
                Ready(
                    memory=engine.memory(),
                    n_ctx=info.n_ctx,
                    n_vocab=info.n_vocab,
                    num_parallel=info.num_parallel,
                    gpu_layers=info.gpu_layers,
                    cpu_mode=info.cpu_mode,
                )
            )
            await _serve_requests(frames, outbox, worker, reading)
        except (ConnectionClosed, asyncio.CancelledError):
            pass  # the gateway is gone or asked us to stop: wind down below
        except FrameError as exc:
            log.error("bad frame from the gateway: %s", exc)
        return EXIT_OK
    finally:
        worker.stop()
        await loop.run_in_executor(None, worker.join, 10.0)
        await outbox.aclose()  # (what the thread sends if it outlived the join is dropped)


def _seen(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _watch(
    load: asyncio.Future[Any], frames: FrameReader[Any], outbox: Outbox
) -> asyncio.Future[Any] | None:
    """Wait for ``load`` while reading from the gateway; the read still waiting, to go on with.

    A gateway that is gone (``ConnectionClosed``, raised) or says ``Shutdown`` (None) ends the
    wait at once: nobody waits for this model any more, and the load is given up (its progress
    callback says stop) instead of holding memory until it ends. ``Ping`` is answered.
    """
    reading: asyncio.Future[Any] = asyncio.ensure_future(frames.read())
    while True:
        await asyncio.wait({load, reading}, return_when=asyncio.FIRST_COMPLETED)
        if not reading.done():
            return reading
        msg = reading.result()
        if isinstance(msg, Shutdown):
            return None
        if isinstance(msg, Ping):
            outbox.push(Pong(id=msg.id))
        else:  # (the gateway sends requests only after Ready)
            outbox.push(Failed(id=None, code=ErrorCode.PROTOCOL, message=f"unexpected {msg!r}"))
        reading = asyncio.ensure_future(frames.read())


async def _serve_requests(
    frames: FrameReader[Any], outbox: Outbox, worker: Worker, reading: asyncio.Future[Any]
) -> None:
    """Hand each request to its thread; nothing here may take long (``Ping`` must be answered).
    ``reading``: the read of the first frame, already waiting."""
    msg = await reading
    while True:
        if isinstance(msg, Generate | Embed | Tokenize | Detokenize):
            worker.submit(msg)
        elif isinstance(msg, Cancel):
            worker.cancel(msg.id)
        elif isinstance(msg, Ping):
            outbox.push(Pong(id=msg.id))
        elif isinstance(msg, Shutdown):
            return
        else:
            outbox.push(Failed(id=None, code=ErrorCode.PROTOCOL, message=f"unexpected {msg!r}"))
        msg = await frames.read()


def main(argv: list[str] | None = None) -> int:
    # A fatal signal (a native crash, an abort) writes every thread's Python stack to stderr,
    # which the gateway keeps with the crash error and logs.
    faulthandler.enable(file=sys.stderr, all_threads=True)
    parser = argparse.ArgumentParser(prog="python -m runner")
    parser.add_argument("--fd", type=int, required=True, help="inherited socket to the gateway")
    parser.add_argument("--engine", default="llama", help="llama, or fake:<mode>?<options>")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument(
        "--quiet-start",
        action="store_true",
        help="import in the CPU's idle time first (runner.quiet; read by runner.__main__)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        sock = socket.socket(fileno=args.fd)
    except OSError as exc:
        log.error("%s", exc)
        return EXIT_BAD_ARGS
    try:
        return asyncio.run(serve(sock, lambda: make_engine(args.engine, verbose=args.verbose)))
    finally:
        sock.close()
