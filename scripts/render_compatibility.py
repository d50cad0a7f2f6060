"""Regenerate one suite's table in docs/compatibility.md from a client-test results file.

    python scripts/render_compatibility.py SUITE RESULTS.json

The nox sessions ``clients`` and ``openwebui`` run this after their tests passed;
``RESULTS.json`` is what ``tests/clients/conftest.py`` recorded (client packages, installed
versions, the first docstring line of each test, its outcome). Only the part of the document
between ``<!-- SUITE:begin -->`` and ``<!-- SUITE:end -->`` is replaced, so each session keeps
its own table and the prose around them stays as written. The output depends only on the
results, so a run that verified the same things leaves the file unchanged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "compatibility.md"


def _package(name: str) -> str:
    return f"{name[4:]} (npm)" if name.startswith("npm:") else name


def table(rows: list[dict[str, str]]) -> str:
    """One line per client (in the order the tests ran), its version and what was verified."""
    failed = [r["test"] for r in rows if r["outcome"] != "passed"]
    if failed:
        raise SystemExit(f"not rendering: these tests did not pass: {', '.join(failed)}")
    clients: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        clients.setdefault((row["client"], row["version"]), []).append(row["verified"])
    lines = ["| Client | Version | Verified against `power serve` |", "| --- | --- | --- |"]
    for (client, version), verified in clients.items():
        name = " + ".join(_package(p) for p in client.split(" + "))
        lines.append(f"| {name} | {version} | {'<br>'.join(verified)} |")
    return "\n".join(lines)


def replace_section(doc: str, suite: str, body: str) -> str:
    begin, end = f"<!-- {suite}:begin -->", f"<!-- {suite}:end -->"
    head, found, rest = doc.partition(begin)
    _, found_end, tail = rest.partition(end)
    if not found or not found_end:
        raise SystemExit(f"{DOC} has no {begin} … {end} section")
    return f"{head}{begin}\n{body}\n{end}{tail}"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    suite, results = argv
    rows = json.loads(Path(results).read_text())
    DOC.write_text(replace_section(DOC.read_text(), suite, table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
