"""`power rpc-worker`: serve this machine's memory to another machine's runners over llama.cpp's
RPC protocol (see docs/rpc.md).

The server is llama.cpp's own (`runner.rpc_worker` starts it in-process from the RPC-enabled
llama-cpp-python); this command only checks the options and replaces itself with it, so
signals reach the server directly. llama.cpp's RPC protocol has no authentication and no
encryption, and a client can make the worker allocate memory and run any graph: a non-loopback
address is refused unless `--allow-remote` says the network in between is trusted. `--mem`
caps the memory each device offers (llama.cpp's server lost `rpc-server --mem`; the worker
hands it a capped proxy of each device, `runner.capped_device`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys

import click

__all__ = ["parse_size", "rpc_worker"]

DEFAULT_PORT = 50052  # llama.cpp rpc-server's default
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in ``text``: a number with an optional binary unit (``512M``, ``2G``, ``1.5GiB``,
    ``2gb``; K, M, G, T are powers of 1024, as llama.cpp's MiB figures). Never 0."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size such as 512M or 2G")
    size = int(float(match[1]) * _UNITS[match[2].upper()])
    if size <= 0:
        raise ValueError(f"{text!r} is no memory at all")
    return size


class _Size(click.ParamType[int]):
    name = "SIZE"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


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
    "--mem",
    type=_Size(),
    default=None,
    help="Offer at most this much memory per device, e.g. 512M or 2G (default: what it has free).",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Listen on a non-loopback address. The RPC protocol has no authentication: anyone"
    " who reaches the port can use this machine's memory and CPU.",
)
def rpc_worker(
    host: str, port: int, threads: int | None, mem: int | None, allow_remote: bool
) -> None:
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
    if mem is not None:
        argv.append(str(mem))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
