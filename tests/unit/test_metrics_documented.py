"""Every metric the daemon exports is documented in the README's metrics table."""

from __future__ import annotations

from pathlib import Path

from power.metrics import Metrics
from power.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_series_is_in_the_readme() -> None:
    metrics = Metrics(Settings(), gpu_probe=lambda: ())
    names = set()
    for family in metrics.registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        names.add(family.name + suffix)
    text = README.read_text()
    documented = {name for name in names if f"| `{name}` |" in text}
    assert len(names) >= 16
    assert names == documented
