"""`power rpc-worker`: serve this machine's memory to another machine's runners over llama.cpp's
RPC protocol (see docs/rpc.md).

The server is llama.cpp's own (`runner.rpc_worker` starts it in-process from the RPC-enabled
llama-cpp-python); this command only checks the options and replaces itself with it, so
signals reach the server directly. llama.cpp's RPC protocol has no authentication and no
encryption, and a client can make the worker allocate memory and run any graph: a non-loopback
address is refused unless `--allow-remote` says the network in between is trusted.
"""

from __future__ import annotations

import ipaddress
import os
import sys

import click

__all__ = ["rpc_worker"]

DEFAULT_PORT = 50052  # llama.cpp rpc-server's default


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _default_threads() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


@click.command("rpc-worker")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="CPU threads (physical cores)."
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Listen on a non-loopback address. The RPC protocol has no authentication: anyone"
    " who reaches the port can use this machine's memory and CPU.",
)
def rpc_worker(host: str, port: int, threads: int | None, allow_remote: bool) -> None:
    """Serve this machine's memory to a model split over machines (llama.cpp RPC)."""
    if not _is_loopback(host) and not allow_remote:
        raise click.UsageError(
            f"--host {host} is not a loopback address; llama.cpp's RPC protocol has no"
            " authentication, so anyone who reaches the port can use this worker. Add"
            " --allow-remote to listen there anyway (on a trusted network only)."
        )
    if not _is_loopback(host):
        click.echo(f"Warning: serving unauthenticated llama.cpp RPC on {host}:{port}", err=True)
    argv = [sys.executable, "-m", "runner.rpc_worker", host, str(port)]
    argv.append(str(threads or _default_threads()))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
