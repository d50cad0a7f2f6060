"""``power serve``: wiring and shutdown order.

SIGTERM or Ctrl+C: stop accepting, let streams finish within ``shutdown_grace_s``, stop every
runner in parallel, exit 0. A second Ctrl+C skips the grace steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from power.app import create_app
from power.config import Settings, load_settings
from power.logging import configure_logging
from power.store import ModelStore
from power.store.writeback import recover_unsynced
from power.supervisor import Supervisor

__all__ = ["hypercorn_config", "run_server", "serve"]

log = logging.getLogger(__name__)


def run_server(cli_overrides: dict[str, object]) -> int:
    settings = load_settings(path=None, env=os.environ, cli=cli_overrides)
    configure_logging(settings.debug)
    return asyncio.run(serve(settings))


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.graceful_timeout = settings.shutdown_grace_s
    config.accesslog = None
    config.errorlog = logging.getLogger("power.http")
    config.keep_alive_timeout = 75
    return config


def install_signal_handlers(stop: asyncio.Event, force: asyncio.Event) -> None:
    """TERM/INT set ``stop``; a second INT sets ``force``. Handlers never log."""
    loop = asyncio.get_running_loop()

    def on_int() -> None:
        if stop.is_set():
            force.set()
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, on_int)


async def serve(settings: Settings) -> int:
    stop, force = asyncio.Event(), asyncio.Event()
    install_signal_handlers(stop, force)
    store = ModelStore(settings.models_dir, noprune=settings.noprune)
    await asyncio.to_thread(recover_unsynced, store.blobs_dir)  # before prune sweeps markers
    await asyncio.to_thread(store.prune)
    async with Supervisor.open(settings, force=force) as supervisor:
        app = create_app(settings, supervisor, store)
        server = asyncio.ensure_future(
            hypercorn_serve(app, hypercorn_config(settings), shutdown_trigger=stop.wait)  # type: ignore[arg-type]
        )
        log.info(
            "A3S Power listening on %s:%d (models in %s)",
            settings.host,
            settings.port,
            settings.models_dir,
        )
        forced = asyncio.ensure_future(force.wait())
        try:
            await asyncio.wait({server, forced}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            forced.cancel()
            if not server.done():
                server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server
        log.info("stopping %d runner(s)", len(supervisor.loaded()))
    log.info("stopped")
    return 0
