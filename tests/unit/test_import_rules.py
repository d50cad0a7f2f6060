"""The package boundaries, checked by parsing every module's imports."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def imports_of(package: str) -> dict[str, set[str]]:
    """Module path -> top-level (or dotted, for power.*) names it imports."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        out[str(path.relative_to(ROOT))] = names
    return out


def top(name: str) -> str:
    return name.split(".")[0]


def test_proto_imports_only_msgspec_and_the_standard_library() -> None:
    for module, names in imports_of("proto").items():
        foreign = {n for n in names if top(n) not in STDLIB | {"msgspec", "proto"}}
        assert not foreign, f"{module} imports {foreign}"


def test_runner_never_imports_power() -> None:
    for module, names in imports_of("runner").items():
        assert not {n for n in names if top(n) == "power"}, module


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("power", {"runner"}),  # the gateway starts `python -m runner`, it never imports it
        ("power/supervisor", {"starlette"}),
        ("power/api", {"subprocess", "socket", "power.supervisor.process"}),
        ("power", {"llama_cpp"}),  # the gateway stays small; llama.cpp lives in runners
    ],
)
def test_gateway_boundaries(package: str, forbidden: set[str]) -> None:
    for module, names in imports_of(package).items():
        bad = {n for n in names if n in forbidden or top(n) in forbidden}
        assert not bad, f"{module} imports {bad}"


def test_the_api_sees_the_supervisor_only_through_its_service_interface() -> None:
    """``power.api`` talks to runners only through ``Runners`` (power.supervisor.service):
    no runner object, process, client or record is in reach of a handler."""
    for module, names in imports_of("power/api").items():
        supervisor = {n for n in names if n.startswith("power.supervisor")}
        assert supervisor <= {"power.supervisor.service"}, f"{module} imports {supervisor}"
    assert "Supervisor" not in (ROOT / "power/app.py").read_text()


def test_location_imports_only_the_standard_library() -> None:
    """Host, port and data folder rules, shared by the server and the CLI: stdlib only."""
    names = imports_of("power")["power/location.py"]
    foreign = {n for n in names if top(n) not in STDLIB}
    assert not foreign, f"power/location.py imports {foreign}"


def test_the_cli_client_imports_only_the_standard_library_and_location() -> None:
    """`power ls` and friends start fast: no msgspec, no server modules behind the client."""
    names = imports_of("power")["power/cli/client.py"]
    foreign = {n for n in names if top(n) not in STDLIB and n != "power.location"}
    assert not foreign, f"power/cli/client.py imports {foreign}"
