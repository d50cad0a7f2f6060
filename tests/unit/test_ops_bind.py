"""What `power serve` listens on: a wildcard host takes IPv4 and IPv6 at once, as Go's listener
does for Ollama, and any other address is bound as given."""

from __future__ import annotations

import contextlib
import socket

import pytest

from power.serve import listen
from power.settings import Settings

pytestmark = pytest.mark.skipif(
    not socket.has_dualstack_ipv6(), reason="this machine cannot listen dual-stack"
)


def reaches(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("host", ["::", "0.0.0.0", ""])  # [::]:P, 0.0.0.0:P, :P (and host = "")
def test_a_wildcard_host_is_reached_over_ipv4_and_ipv6(host: str) -> None:
    with contextlib.closing(listen(Settings(host=host, port=0))) as sock:
        port = sock.getsockname()[1]
        assert reaches("127.0.0.1", port)  # what `power ls` connects to
        assert reaches("::1", port)  # a client that resolves localhost to ::1


def test_a_specific_address_is_bound_as_given() -> None:
    with contextlib.closing(listen(Settings(host="127.0.0.1", port=0))) as sock:
        assert sock.family == socket.AF_INET
        port = sock.getsockname()[1]
        assert reaches("127.0.0.1", port)
        assert not reaches("::1", port)
    with contextlib.closing(listen(Settings(host="::1", port=0))) as sock:
        port = sock.getsockname()[1]
        assert reaches("::1", port)
        assert not reaches("127.0.0.1", port)
