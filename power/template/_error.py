"""The one exception type of the template package."""

from __future__ import annotations

from power.errors import InvalidRequestError

__all__ = ["TemplateError"]


class TemplateError(InvalidRequestError):
    """A template failed to parse or to execute; reported to the client as a 400."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"template error: {detail}")
        self.detail = detail
