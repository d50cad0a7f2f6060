"""``power serve``: wiring and shutdown order.

Start: bind the port first (a busy port is one error line, before anything touches the store),
claim the model store (only a daemon alone on it prunes it), then the supervisor and the app.

SIGTERM or Ctrl+C: stop accepting and refuse new requests (503, each API in its own shape);
requests in flight get ``shutdown_grace_s`` to finish, then whatever still runs is cut, a stream
with an in-band error line, a waiting request with a 503; then every runner is stopped in
parallel and the exit status is 0. A second Ctrl+C skips the grace steps.

Once listening, the daemon records its pid under the data folder (`power.daemon`), so
``power service stop`` can send that SIGTERM; a clean exit removes the record.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import signal
import socket
from pathlib import Path

import psutil
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from power import daemon
from power.aio import Interrupted, until
from power.app import create_app
from power.config import load_settings
from power.create.starter import import_if_starter
from power.location import is_loopback
from power.logging import configure_logging
from power.metrics import Metrics
from power.registry import RegistryService
from power.registry.through import PullThrough
from power.settings import ConfigError, Settings, resolve_context_length
from power.store import ModelStore
from power.store.names import ModelName
from power.store.writeback import recover_unsynced
from power.supervisor import Supervisor
from power.supervisor.memory import probe_machine
from power.usage import open_recorder, usage_path

__all__ = ["ListenError", "hypercorn_config", "listen", "run_server", "serve", "stop_timeout_s"]

log = logging.getLogger(__name__)

# After the cut, what it ended (an error line per stream) has this long to be written; then
# Hypercorn stops listening, and the connections left have this long again before they are
# shut (a client that stopped reading holds its stream's handler in a write until then).
_CUT_MARGIN_S = 5.0
_KILL_WAIT_S = 5.0  # after a runner's SIGKILL, until it is reaped
_STOP_MARGIN_S = 10.0
_BACKLOG = 1024
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
_NO_IPV6 = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT})


class ListenError(Exception):
    """The address cannot be listened on (say, the port is taken)."""


def run_server(cli_overrides: dict[str, object]) -> int:
    settings = load_settings(path=None, env=os.environ, cli=cli_overrides)
    configure_logging(
        settings.debug,
        fmt=settings.log_format,
        file=settings.log_file,
        max_bytes=settings.log_max_bytes,
        backups=settings.log_backups,
    )
    return asyncio.run(serve(settings))


def listen(settings: Settings) -> socket.socket:
    """The listening socket, bound before anything else happens (Ollama's wording on error).

    A wildcard host (``0.0.0.0``, ``::``, or none as in ``OLLAMA_HOST=:11434``) takes IPv4 and
    IPv6 at once where the system can (``IPV6_V6ONLY`` off), as Go's listener does for Ollama:
    ``power ls`` connects to 127.0.0.1 and a client that resolves ``localhost`` to ``::1`` must
    both reach it. Without IPv6, a wildcard is IPv4's; any other address is bound as given.
    """
    try:
        return _bind(settings.host, settings.port)
    except OSError as exc:
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        why = (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
        raise ListenError(f"listen tcp {host}:{settings.port}: bind: {why}") from None


def _bind(host: str, port: int) -> socket.socket:
    if host in _WILDCARD_HOSTS:
        dual = socket.has_dualstack_ipv6()
        if dual or host == "::":
            try:
                return socket.create_server(
                    ("::", port), family=socket.AF_INET6, dualstack_ipv6=dual, backlog=_BACKLOG
                )
            except OSError as exc:
                if exc.errno not in _NO_IPV6:
                    raise
        host = "0.0.0.0"  # (no IPv6 here)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=_BACKLOG)


def hypercorn_config(settings: Settings, sock: socket.socket) -> Config:
    """Hypercorn serving on ``sock``, which it takes over."""
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    # after `_drain_on`: a backstop to its shutting of what is left (its tasks are then cancelled)
    config.graceful_timeout = 2 * _CUT_MARGIN_S
    config.accesslog = None
    config.errorlog = logging.getLogger("power.http")
    config.keep_alive_timeout = 75
    return config


def install_signal_handlers(stop: asyncio.Event, force: asyncio.Event) -> None:
    """TERM/INT set ``stop``; a second INT sets ``force``. HUP (the terminal of a foreground
    ``power serve`` closed) stops as TERM does, unless it is ignored (``nohup``). Handlers
    never log."""
    loop = asyncio.get_running_loop()

    def on_int() -> None:
        if stop.is_set():
            force.set()
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, on_int)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        loop.add_signal_handler(signal.SIGHUP, stop.set)


async def _drain_on(
    stop: asyncio.Event, supervisor: Supervisor, settings: Settings, port: int
) -> None:
    """Hypercorn's shutdown trigger. On ``stop``: refuse new requests (``/health`` says
    "draining", so a load balancer sends no more) while still listening, until what is in
    flight has finished or the grace period cut it (and the cut's margin passed); then
    Hypercorn stops listening, and the connections left get ``_CUT_MARGIN_S`` to end. One whose
    client reads no more would never end (Hypercorn has no write deadline, and a socket with
    data unsent does not finish closing), holding the exit for as long as that client keeps
    it: then the connections still open on ``port`` are shut down, and such a write fails.

    Under systemd, the service manager is told first how long all that may take."""
    await stop.wait()
    daemon.notify_stopping(stop_timeout_s(settings), os.environ)
    grace_s = settings.shutdown_grace_s
    waiting = supervisor.drain()
    log.info("stopping: new requests are refused; %d in flight get %gs to finish", waiting, grace_s)

    def cut() -> None:
        if cut_short := supervisor.cut():
            log.warning("%d request(s) still running after %gs were cut short", cut_short, grace_s)

    loop = asyncio.get_running_loop()
    cutting = loop.call_later(grace_s, cut)
    try:
        await asyncio.wait_for(supervisor.wait_idle(), grace_s + _CUT_MARGIN_S)
    except TimeoutError:
        log.warning("requests still running %gs after the cut: closing", _CUT_MARGIN_S)
    finally:
        if supervisor.idle():
            cutting.cancel()  # (nothing left to cut)
        loop.call_later(_CUT_MARGIN_S, _shut_connections, port)


def _shut_connections(port: int) -> None:
    """Shut down this process's TCP connections on local ``port``, so that a write waiting for
    a client that reads no more fails at once."""
    try:
        conns = psutil.Process().net_connections(kind="tcp")
    except psutil.Error as exc:
        log.warning("cannot list the connections left open: %s", exc)
        return
    shut = 0
    for conn in conns:
        if conn.fd < 0 or not conn.laddr or conn.laddr.port != port or not conn.raddr:
            continue
        try:
            with socket.socket(fileno=os.dup(conn.fd)) as dup:  # (closing it leaves the original)
                dup.shutdown(socket.SHUT_RDWR)
        except OSError:
            continue
        shut += 1
    if shut:
        log.warning("%d connection(s) of clients that read no more were shut", shut)


def open_bind_warning(settings: Settings) -> str | None:
    """What to warn about a bind other machines can reach with no API keys; None if nothing."""
    if settings.api_keys or is_loopback(settings.host):
        return None
    where = settings.host or "every interface"
    return (
        f"listening on {where} without API keys: anyone who can reach this port can run,"
        " pull, push and delete models (set api_keys or A3S_POWER_API_KEYS)"
    )


def stop_timeout_s(settings: Settings) -> float:
    """The longest a SIGTERM'd ``serve`` takes to exit, plus a margin: the drain grace, the cut,
    then the runner stop ladder (Shutdown, SIGTERM, SIGKILL). A service manager waits this long
    before it kills (systemd's ``TimeoutStopSec``), and so does ``power service stop``."""
    ladder_s = settings.runner_stop_grace_s + settings.runner_term_grace_s + _KILL_WAIT_S
    return settings.shutdown_grace_s + 2 * _CUT_MARGIN_S + ladder_s + _STOP_MARGIN_S


def _make_folders(settings: Settings) -> None:
    """The data folder and the model store, made up front: one that cannot be (a ``data_dir``
    under ``/proc``, a read-only disk) is a setting to fix, said in one line, not a traceback."""
    for folder in (Path(settings.home), settings.models_dir):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise ConfigError(
                f"cannot create the data folder {folder} (data_dir, A3S_POWER_HOME or"
                f" OLLAMA_MODELS): {why}"
            ) from None


async def serve(settings: Settings) -> int:
    sock = listen(settings)
    try:
        await asyncio.to_thread(_make_folders, settings)
    except BaseException:
        sock.close()
        raise
    home = Path(settings.home)
    try:
        other = await asyncio.to_thread(daemon.record, home)
    except OSError as exc:
        log.warning("cannot record this daemon's pid in %s: %s", home, exc)
    else:
        if other is not None:
            log.warning(
                "another daemon (pid %d) runs on the data folder %s: this one is recorded"
                " beside it (power service stop stops both)", other.pid, home
            )  # fmt: skip
    if os.environ.get("SYSTEMD_EXEC_PID") == str(os.getpid()) and "NOTIFY_SOCKET" not in os.environ:
        # a systemd unit's own process, which cannot tell systemd how long a stop takes
        log.info(
            "under systemd without NotifyAccess: a stop is cut short after the unit's"
            " TimeoutStopSec, and this configuration needs up to %gs (power service install"
            " writes a unit that lets the daemon extend it)", stop_timeout_s(settings)
        )  # fmt: skip
    try:
        return await _serve(settings, sock)
    finally:
        await asyncio.to_thread(daemon.forget, home)


async def _serve(settings: Settings, sock: socket.socket) -> int:
    host, port = sock.getsockname()[:2]
    home, loop = Path(settings.home), asyncio.get_running_loop()
    stop, force = asyncio.Event(), asyncio.Event()
    install_signal_handlers(stop, force)
    machine = await asyncio.to_thread(probe_machine)
    settings = resolve_context_length(settings, (gpu.total for gpu in machine.gpus))
    log.info("default context length %d", settings.context_length)
    through: list[PullThrough] = []  # the fleet's pull-through, made once the store is

    def on_missing(store: ModelStore, name: ModelName) -> bool:
        return import_if_starter(store, name) or any(pull(store, name) for pull in through)

    store = ModelStore(
        settings.models_dir,
        noprune=settings.noprune,
        on_missing=on_missing,
        tmp_dir=Path(settings.tmpdir) if settings.tmpdir else None,
    )
    if await asyncio.to_thread(store.claim):
        await asyncio.to_thread(recover_unsynced, store.blobs_dir)  # before prune sweeps markers
        await asyncio.to_thread(store.prune)
    else:
        log.warning("another A3S Power daemon uses %s: not pruning it", settings.models_dir)
    metrics = Metrics(settings)
    # the recorder outlives the supervisor: requests cut short while it stops are recorded too
    recording = open_recorder(
        usage_path(settings.home), retention_days=settings.usage_retention_days
    )
    supervising = Supervisor.open(settings, force=force, events=metrics)
    async with recording as usage, supervising as supervisor:
        app = create_app(settings, supervisor, store, metrics=metrics, usage=usage)
        if source := settings.model_source_parts:
            # one registry service for /api/pull and pull-through: transfers are shared, and
            # the app's lifespan waits for the fsyncs of what either pulled
            svc = app.state.registry = RegistryService(store, home=home, env=dict(os.environ))
            insecure = settings.model_source_insecure
            through.append(PullThrough(svc, *source, insecure=insecure, loop=loop))
            log.info("models this daemon lacks are pulled from %s", settings.model_source)
        trigger = functools.partial(_drain_on, stop, supervisor, settings, port)
        config = hypercorn_config(settings, sock)
        server = hypercorn_serve(app, config, shutdown_trigger=trigger)  # type: ignore[arg-type]
        shown = f"[{host}]" if ":" in host else host
        log.info("A3S Power listening on %s:%d (models in %s)", shown, port, settings.models_dir)
        if warning := open_bind_warning(settings):
            log.warning("%s", warning)
        try:
            await until(server, force)
        except Interrupted:
            supervisor.cut()  # a second Ctrl+C: no grace
        for pulling in through:
            await pulling.aclose()
        log.info("stopping %d runner(s)", len(supervisor.loaded()))
    store.release()
    log.info("stopped")
    return 0
