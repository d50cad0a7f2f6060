"""``python -m power ...`` runs the `power` CLI."""

from __future__ import annotations

from power.cli import main

if __name__ == "__main__":
    main(prog_name="power")
