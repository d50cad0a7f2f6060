"""Where Power is: the address in `OLLAMA_HOST` and the data folder, for server and client alike.

The one home of the default port, the default data folder and the rules that read
`OLLAMA_HOST`; `power.config` (what `serve` listens on) and the CLI's client (what `power ls`
and friends connect to) both call this module. It imports only the standard library, so the
CLI stays quick to start.

`OLLAMA_HOST` forms: `host`, `host:port`, `:port`, `[v6]:port`, `scheme://host[:port][/path]`,
each may be wrapped in spaces and quotes. Without a port: 11434, or 80 for `http://` and 443 for
`https://`; a bare `ollama.com` is `https://ollama.com:443`. The two sides share that much and
then part, as Ollama's server and its desktop client do:

- `listen_address` follows Ollama's `envconfig.Host` exactly (Go's `net.SplitHostPort`, IP
  text normalised): an empty host (`:port`) means every interface, and an invalid port falls
  back to the default with a warning.
- `connect_url` splits more loosely and silently: a port is whatever Python's `int()` takes
  (` 80`, `1_000`), `[v6]` keeps what is inside the brackets and drops the rest, and IPv6 text
  is kept as written. An unspecified host (empty, `0.0.0.0`, `::`) connects to 127.0.0.1.

They agree on every well-formed address; `tests/unit/test_location.py` holds both columns in
one table, malformed inputs where they differ included.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "DEFAULT_HOME",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "HOME_VAR",
    "HOST_VAR",
    "client_home",
    "connect_url",
    "home_dir",
    "is_loopback",
    "listen_address",
    "trim_env",
]

log = logging.getLogger(__name__)

HOST_VAR = "OLLAMA_HOST"
HOME_VAR = "A3S_POWER_HOME"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11434
DEFAULT_HOME = "~/.a3s/power"

_ANY_INTERFACE = "0.0.0.0"
_UNSPECIFIED_HOSTS = frozenset({"0.0.0.0", "::", ""})
_INT = re.compile(r"[+-]?[0-9]+")


def trim_env(value: str) -> str:
    """Ollama's `envconfig.Var`: trim spaces, then surrounding quotes."""
    return value.strip().strip("\"'")


# -- the data folder -----------------------------------------------------------------------


def home_dir(value: str = "") -> Path:
    """The data folder `value` names, `~` expanded; empty means `DEFAULT_HOME`."""
    return Path(value or DEFAULT_HOME).expanduser()


def client_home(env: Mapping[str, str]) -> Path:
    """The data folder as the CLI reads it: `$A3S_POWER_HOME` trimmed of spaces (not quotes)."""
    return home_dir(env.get(HOME_VAR, "").strip())


# -- OLLAMA_HOST ---------------------------------------------------------------------------


class _Parts(NamedTuple):
    scheme: str
    hostport: str
    path: str
    default_port: int


def _split_url(text: str) -> _Parts:
    """Scheme, `host[:port]`, path and the scheme's default port, as `envconfig.Host` cuts them."""
    default_port = DEFAULT_PORT
    scheme, sep, hostport = text.partition("://")
    if not sep:
        scheme, hostport = "http", text
        if text == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    hostport, _, path = hostport.partition("/")
    return _Parts(scheme, hostport, path, default_port)


def _go_split_host_port(hostport: str) -> tuple[str, str]:
    """Go's `net.SplitHostPort`; raises ValueError where Go returns an error."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or hostport[end + 1 : end + 2] != ":":
            raise ValueError(f"missing port in address {hostport!r}")
        host, port = hostport[1:end], hostport[end + 2 :]
        if "[" in host or "]" in host:
            raise ValueError(f"unexpected bracket in address {hostport!r}")
    else:
        host, sep, port = hostport.rpartition(":")
        if not sep:
            raise ValueError(f"missing port in address {hostport!r}")
        if ":" in host:
            raise ValueError(f"too many colons in address {hostport!r}")
        if "[" in host or "]" in host:
            raise ValueError(f"unexpected bracket in address {hostport!r}")
    if "[" in port or "]" in port:
        raise ValueError(f"unexpected bracket in address {hostport!r}")
    return host, port


def is_loopback(host: str) -> bool:
    """Whether a listen host is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_address(value: str) -> tuple[str, int]:
    """`OLLAMA_HOST` as the (host, port) `serve` listens on (Ollama's `envconfig.Host`).

    An empty host (`:port`) means every interface, as Go's listener does, and is returned as
    `0.0.0.0`. An invalid port falls back to the default with a warning. The scheme and the
    path matter only to clients.
    """
    parts = _split_url(trim_env(value))
    hostport, default_port = parts.hostport, str(parts.default_port)
    try:
        host, port = _go_split_host_port(hostport)
    except ValueError:
        host, port = DEFAULT_HOST, default_port
        try:
            host = str(ipaddress.ip_address(hostport.strip("[]")))
        except ValueError:
            if hostport:
                host = hostport
    if not _INT.fullmatch(port) or not 0 <= int(port) <= 65535:
        log.warning("invalid port %r in OLLAMA_HOST, using default %s", port, default_port)
        port = default_port
    return host or _ANY_INTERFACE, int(port)


def _loose_split_host_port(hostport: str, default_port: int) -> tuple[str, int]:
    host, port_text = hostport, ""
    if hostport.startswith("["):
        inner, _, rest = hostport[1:].partition("]")
        host, port_text = inner, rest.removeprefix(":")
    elif hostport.count(":") == 1:
        host, _, port_text = hostport.partition(":")
    try:
        port = int(port_text)
    except ValueError:
        port = default_port
    if not 0 <= port <= 65535:
        port = default_port
    return host, port


def connect_url(env: Mapping[str, str]) -> str:
    """The base URL a client connects to for `$OLLAMA_HOST` (unset: `http://127.0.0.1:11434`).

    An unspecified listen address (empty, `0.0.0.0`, `::`) connects to 127.0.0.1; the path is
    kept, without trailing slashes.
    """
    parts = _split_url(trim_env(env.get(HOST_VAR, "")).strip())
    host, port = _loose_split_host_port(parts.hostport, parts.default_port)
    if host in _UNSPECIFIED_HOSTS:
        host = DEFAULT_HOST
    if ":" in host:
        host = f"[{host}]"
    base = f"{parts.scheme}://{host}:{port}"
    path = parts.path
    return f"{base}/{path.rstrip('/')}" if path.strip("/") else base
