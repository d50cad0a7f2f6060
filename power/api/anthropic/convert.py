"""Anthropic Messages pieces -> native ones, errors in Anthropic's shape, and stop sequences.

Stop sequences go to the runner as stop strings, added to the model's own; the runner ends the
generation at the first and says which it was, so the response can name it (``stop_reason:
"stop_sequence"`` with ``stop_sequence`` set).
"""

from __future__ import annotations

import secrets
from typing import Any

from power.api.openai.convert import apply_tool_choice
from power.api.openai.sse import error_responses
from power.api.schemas import Message
from power.api.semantics import is_base64
from power.errors import InvalidRequestError, PowerError

__all__ = [
    "anthropic_error_body",
    "anthropic_errors",
    "convert_messages",
    "convert_tools",
    "stop_strings",
    "system_text",
    "tool_choice",
]

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 408: "invalid_request_error",
          413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error"}  # fmt: skip


def anthropic_error_body(exc: PowerError) -> dict[str, Any]:
    kind = _TYPES.get(exc.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": str(exc)},
            "request_id": "req_" + secrets.token_hex(12)}  # fmt: skip


anthropic_errors = error_responses(anthropic_error_body)


def system_text(system: Any) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    if isinstance(system, list):
        for i, block in enumerate(system):
            if not (
                isinstance(block, dict)
                and block.get("type") == "text"
                and isinstance(block.get("text"), str)
            ):
                raise InvalidRequestError(f"system.{i}: must be a text block")
        return "\n".join(block["text"] for block in system)
    raise InvalidRequestError("system: must be a string or an array of text blocks")


def _image(block: dict[str, Any], where: str) -> str:
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64":
        raise InvalidRequestError(
            f"{where}: only base64 image sources are supported (this server cannot fetch URLs)"
        )
    data = str(source.get("data", ""))
    if not is_base64(data):  # checked, not decoded: the chat path decodes it once
        raise InvalidRequestError(f"{where}: image data is not valid base64")
    return data


def _result_text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return "" if content is None else str(content)


def convert_messages(messages: list[Any], system: str) -> list[Message]:
    if not messages:
        raise InvalidRequestError("messages: at least one message is required")
    out = [Message(role="system", content=system)] if system else []
    names: dict[str, str] = {}  # tool_use id -> tool name
    for i, msg in enumerate(messages):
        where = f"messages.{i}"
        role = msg.get("role") if isinstance(msg, dict) else None
        if role not in ("user", "assistant"):
            raise InvalidRequestError(f"{where}.role: must be 'user' or 'assistant'")
        content = msg.get("content")
        if content in ("", []) and not (role == "assistant" and i == len(messages) - 1):
            raise InvalidRequestError(  # (as Anthropic's API: only a final assistant turn may)
                f"{where}.content: must not be empty (only the final assistant message may be)"
            )
        if isinstance(content, str):
            out.append(Message(role=role, content=content))
            continue
        if not isinstance(content, list):
            raise InvalidRequestError(f"{where}.content: must be a string or an array of blocks")
        texts: list[str] = []
        thinking: list[str] = []
        images: list[str] = []
        calls: list[dict[str, Any]] = []
        for j, block in enumerate(content):
            at = f"{where}.content.{j}"
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append(str(block.get("text", "")))
            elif kind == "image":
                images.append(_image(block, at))
            elif kind == "thinking" and role == "assistant":
                thinking.append(str(block.get("thinking", "")))
            elif kind == "redacted_thinking":
                continue
            elif kind == "tool_use" and role == "assistant":
                call_id, name = str(block.get("id", "")), str(block.get("name", ""))
                names[call_id] = name
                args = block.get("input") or {}
                calls.append(
                    {"id": call_id, "function": {"index": len(calls), "name": name,
                                                 "arguments": args}}
                )  # fmt: skip
            elif kind == "tool_result" and role == "user":
                call_id = str(block.get("tool_use_id", ""))
                text = _result_text(block.get("content"))
                if block.get("is_error"):
                    text = f"Error: {text}"
                tool = Message(role="tool", content=text, tool_call_id=call_id)
                if call_id in names:
                    tool.tool_name = names[call_id]
                out.append(tool)
            else:
                raise InvalidRequestError(f"{at}: unsupported content block type {kind!r}")
        if texts or images or thinking or calls:
            native = Message(role=role, content="\n".join(texts))
            if images:
                native.images = images
            if thinking:
                native.thinking = "".join(thinking)
            if calls:
                native.tool_calls = calls
            out.append(native)
    return out


def convert_tools(tools: list[Any] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not tool.get("name"):
            raise InvalidRequestError(f"tools.{i}: a tool needs a name")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise InvalidRequestError(f"tools.{i}: server tool {kind!r} is not supported")
        fn = {
            "name": tool["name"],
            "description": tool.get("description", ""),
            "parameters": tool.get("input_schema") or {"type": "object", "properties": {}},
        }
        out.append({"type": "function", "function": fn})  # fmt: skip
    return out


def tool_choice(
    tools: list[dict[str, Any]] | None, choice: Any
) -> tuple[list[dict[str, Any]] | None, str | None]:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if choice is None or kind == "auto":
        return apply_tool_choice(tools, "auto", None)
    modes = {"none": "none", "any": "required", "tool": "function"}
    if kind not in modes:
        raise InvalidRequestError("tool_choice.type: must be auto, any, tool or none")
    name = choice.get("name") if kind == "tool" else None
    try:
        return apply_tool_choice(tools, modes[kind], name)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"tool_choice: {exc}") from exc


def stop_strings(value: Any) -> list[str]:
    """A ``stop`` option (one string, a list, or absent) as a list; a value of the wrong type
    is kept for the options' own check to refuse."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value) if isinstance(value, list) else [value]
