"""`OLLAMA_HOST` and `A3S_POWER_HOME`, as `power serve` and the CLI read them: one table.

`power.location` holds both rules. Each row goes through the real callers: `load_settings`
for what the server listens on (and warns about) and where it keeps its data, the CLI's
`Client.from_env` and `client_home` for what a command connects to and where `power run`
logs a server it starts. Where the columns disagree beyond "any interface -> 127.0.0.1", the
two sides read the same malformed text differently (see the `power.location` docstring).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from power.cli.client import Client
from power.config import load_settings
from power.location import client_home

HOST, HOME = "OLLAMA_HOST", "A3S_POWER_HOME"
H = str(Path("~/.a3s/power").expanduser())
L = "http://127.0.0.1:11434"
U = str(Path("~/power").expanduser())

TABLE = [
    # var  value (None: unset)         `power serve` uses      the CLI uses               warns
    (HOST, None,                       ("127.0.0.1", 11434),   L,                         False),
    (HOST, "",                         ("127.0.0.1", 11434),   L,                         False),
    (HOST, "example.com",              ("example.com", 11434), "http://example.com:11434", False),
    (HOST, "example.com:8080",         ("example.com", 8080),  "http://example.com:8080", False),
    (HOST, "example.com:1234",         ("example.com", 1234),  "http://example.com:1234", False),
    (HOST, ":8080",                    ("0.0.0.0", 8080),      "http://127.0.0.1:8080",   False),
    (HOST, "0.0.0.0",                  ("0.0.0.0", 11434),     L,                         False),
    (HOST, "0.0.0.0:8080",             ("0.0.0.0", 8080),      "http://127.0.0.1:8080",   False),
    (HOST, "0.0.0.0:9999",             ("0.0.0.0", 9999),      "http://127.0.0.1:9999",   False),
    (HOST, "0.0.0.0:11500",            ("0.0.0.0", 11500),     "http://127.0.0.1:11500",  False),
    (HOST, "[::]:9999",                ("::", 9999),           "http://127.0.0.1:9999",   False),
    (HOST, "[::]",                     ("::", 11434),          L,                         False),
    (HOST, "::",                       ("::", 11434),          L,                         False),
    (HOST, "[::1]:9999",               ("::1", 9999),          "http://[::1]:9999",       False),
    (HOST, "[::1]:8080",               ("::1", 8080),          "http://[::1]:8080",       False),
    (HOST, "[::1]",                    ("::1", 11434),         "http://[::1]:11434",      False),
    (HOST, "::1",                      ("::1", 11434),         "http://[::1]:11434",      False),
    (HOST, "http://[::1]:9000",        ("::1", 9000),          "http://[::1]:9000",       False),
    (HOST, "http://box",               ("box", 80),            "http://box:80",           False),
    (HOST, "https://box",              ("box", 443),           "https://box:443",         False),
    (HOST, "https://box:8443/prefix/", ("box", 8443),          "https://box:8443/prefix", False),
    (HOST, "http://example.com",       ("example.com", 80),    "http://example.com:80",   False),
    (HOST, "https://example.com",      ("example.com", 443),   "https://example.com:443", False),
    (HOST, "http://example.com:8080/some/path", ("example.com", 8080),
     "http://example.com:8080/some/path", False),
    (HOST, "https://example.com/path", ("example.com", 443),
     "https://example.com:443/path", False),
    (HOST, '"localhost:1234"',         ("localhost", 1234),    "http://localhost:1234",   False),
    (HOST, '"127.0.0.1:9000"',         ("127.0.0.1", 9000),    "http://127.0.0.1:9000",   False),
    (HOST, "  '127.0.0.1:9000'  ",     ("127.0.0.1", 9000),    "http://127.0.0.1:9000",   False),
    (HOST, "ollama.com",               ("ollama.com", 443),    "https://ollama.com:443",  False),
    (HOST, "localhost:0",              ("localhost", 0),       "http://localhost:0",      False),
    # an invalid port: the default for the scheme; only the server says so
    (HOST, "localhost:notaport",       ("localhost", 11434),   "http://localhost:11434",  True),
    (HOST, "localhost:abc",            ("localhost", 11434),   "http://localhost:11434",  True),
    (HOST, "localhost:99999",          ("localhost", 11434),   "http://localhost:11434",  True),
    (HOST, "localhost:",               ("localhost", 11434),   "http://localhost:11434",  True),
    (HOST, "https://localhost:-1",     ("localhost", 443),     "https://localhost:443",   True),
    (HOST, "http://localhost:x/",      ("localhost", 80),      "http://localhost:80",     True),
    # where the two rules differ: the server's is Go's, the client's is looser
    (HOST, "0:0:0:0:0:0:0:1",          ("::1", 11434),
     "http://[0:0:0:0:0:0:0:1]:11434", False),
    (HOST, "FE80::1",                  ("fe80::1", 11434),     "http://[FE80::1]:11434",  False),
    (HOST, "localhost: 80",            ("localhost", 11434),   "http://localhost:80",     True),
    (HOST, "localhost:1_000",          ("localhost", 11434),   "http://localhost:1000",   True),
    (HOST, "[::1]x:8080",              ("[::1]x:8080", 11434), "http://[::1]:11434",      False),
    (HOST, "[]",                       ("[]", 11434),          L,                         False),
    # the data folder; the server trims quotes as for every variable, the CLI only spaces
    (HOME, None,                       H,                      H,                         False),
    (HOME, "",                         H,                      H,                         False),
    (HOME, "/srv/power",               "/srv/power",           "/srv/power",              False),
    (HOME, "~/power",                  U,                      U,                         False),
    (HOME, "  /srv/power  ",           "/srv/power",           "/srv/power",              False),
    (HOME, '"/srv/power"',             "/srv/power",           '"/srv/power"',            False),
    (HOME, "''",                       H,                      "''",                      False),
]  # fmt: skip


@pytest.mark.parametrize(("variable", "value", "serve", "client", "warns"), TABLE)
def test_server_and_client_read_the_environment(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    variable: str,
    value: str | None,
    serve: tuple[str, int] | str,
    client: str,
    warns: bool,
) -> None:
    env = {} if value is None else {variable: value}
    with caplog.at_level(logging.WARNING, logger="power.location"):
        settings = load_settings(path=tmp_path / "absent.toml", env=env, cli={})
    if variable == HOST:
        assert (settings.host, settings.port) == serve
        assert Client.from_env(env).base_url == client
    else:
        assert settings.home == serve
        assert str(client_home(env)) == client
    assert ("invalid port" in caplog.text) is warns
