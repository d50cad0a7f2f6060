"""GET /v1/usage: what the models did, per UTC day and model, priced at the configured prices.

Query parameters, all optional: ``start`` and ``end`` (YYYY-MM-DD, inclusive, UTC) and
``model`` (a model name; ``smollm2`` means ``smollm2:latest``). Errors have OpenAI's shape; a bad
parameter is a 400 whose ``param`` names it. The body is ``power.usage.report``'s.
"""

from __future__ import annotations

import contextlib
import re
from datetime import date

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from power.api import response as reply
from power.api.openai.sse import ParamError, openai_errors
from power.errors import PowerError
from power.store.names import ModelName
from power.usage.report import report

__all__ = ["routes"]

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _date(request: Request, param: str) -> date | None:
    text = request.query_params.get(param)
    if not text:
        return None
    if _DATE.fullmatch(text):
        with contextlib.suppress(ValueError):  # 2025-02-30
            return date.fromisoformat(text)
    raise ParamError(f"invalid '{param}' date {text!r}: expected YYYY-MM-DD", param=param)


def _model(request: Request) -> str | None:
    text = request.query_params.get("model")
    if not text:
        return None
    name = ModelName.parse(text)
    if not name.is_valid():
        raise ParamError(f"invalid 'model' name {text!r}", param="model")
    return name.display


@openai_errors
async def usage(request: Request) -> Response:
    start, end = _date(request, "start"), _date(request, "end")
    if start is not None and end is not None and end < start:
        raise ParamError(f"'end' ({end}) is before 'start' ({start})", param="end")
    model = _model(request)
    recorder = request.app.state.usage
    if recorder is None:
        raise PowerError("usage is not recorded by this server")
    rows = await recorder.summary(start=start, end=end, model=model)
    return reply.json_response(report(rows, request.app.state.settings.price_of))


routes = [Route("/v1/usage", usage, methods=["GET"])]
