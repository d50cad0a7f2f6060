"""The real app (``create_app``) in-process over fake runners, as a Starlette TestClient."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

from power.app import create_app
from power.config import Settings
from power.store.store import ModelStore
from power.supervisor.service import Runners

with warnings.catch_warnings():  # starlette prefers httpx2; plain httpx works the same here
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

__all__ = ["TestClient", "app_client"]


@contextlib.contextmanager
def app_client(
    settings: Settings, runners: Runners, store: ModelStore, **state: Any
) -> Iterator[TestClient]:
    """A client of ``create_app(settings, runners, store)`` with its lifespan running;
    ``state`` goes on ``app.state`` first (e.g. a ``registry``)."""
    app = create_app(settings, runners, store)
    for key, value in state.items():
        setattr(app.state, key, value)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client
