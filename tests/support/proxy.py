"""A loopback TCP proxy that counts (and can throttle) the bytes a server sends back.

It runs its own event loop in a thread, so it serves both in-process tests and child servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from tests.support.net import free_port


class Proxy:
    def __init__(self, target_port: int, *, rate: float = 0.0) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.rate = rate  # bytes per second downstream; 0 = unlimited
        self.downstream = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        conns: set[asyncio.Task[None]] = set()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            conns.add(task)
            try:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                writer.close()
                conns.discard(task)
                return
            try:
                await asyncio.gather(
                    self._pipe(reader, up_w, count=False), self._pipe(up_r, writer, count=True)
                )
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                for w in (writer, up_w):
                    w.close()
                conns.discard(task)

        server = await asyncio.start_server(handle, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in list(conns):
                task.cancel()
            if conns:
                await asyncio.wait(conns)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        while chunk := await reader.read(16384):
            writer.write(chunk)
            await writer.drain()
            if count:
                self.downstream += len(chunk)
                sent += len(chunk)
                if self.rate:
                    ahead = sent / self.rate - (loop.time() - start)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        with contextlib.suppress(OSError):
            writer.write_eof()

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@contextlib.contextmanager
def proxy(target_port: int, *, rate: float = 0.0) -> Iterator[Proxy]:
    p = Proxy(target_port, rate=rate)
    p.start()
    try:
        yield p
    finally:
        p.stop()
