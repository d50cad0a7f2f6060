"""OpenAI chat request pieces -> native ones: messages, images, tools, tool_choice, formats, think.

Pure functions, no I/O; errors are ``ParamError`` (a 400 naming the field).
"""

from __future__ import annotations

import json
from typing import Any

from power.api.openai.sse import ParamError
from power.api.schemas import Message
from power.api.semantics import is_base64

__all__ = [
    "apply_tool_choice",
    "convert_messages",
    "convert_tools",
    "data_url_image",
    "native_tool_call",
    "openai_tool_call",
    "response_format",
    "think_from_effort",
]

_EFFORT: dict[str, bool | str] = {
    "none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
    "max": "max", "xhigh": "max", "ultra": "max",
}  # fmt: skip
_DATA_PREFIXES = ("data:image/jpeg;base64,", "data:image/jpg;base64,", "data:image/png;base64,",
                  "data:image/webp;base64,", "data:image/gif;base64,", "data:;base64,")  # fmt: skip


def data_url_image(url: str, param: str) -> str:
    """The base64 payload of a ``data:`` image URL; http(s) URLs are refused (no fetching)."""
    if url.startswith(("http://", "https://")):
        raise ParamError(
            "image URLs cannot be fetched by this server; send the image inline as a base64 "
            "data URL (data:image/png;base64,...)",
            param=param,
            code="invalid_image_url",
        )
    for prefix in _DATA_PREFIXES:
        if url.startswith(prefix):
            payload = url[len(prefix) :]
            if not is_base64(payload):  # checked, not decoded: the chat path decodes it once
                raise ParamError("image data is not valid base64", param=param)
            return payload
    raise ParamError(
        "unsupported image URL: expected data:image/{png,jpeg,webp,gif};base64,...", param=param
    )


def _parts(content: Any, param: str) -> tuple[str, list[str]]:
    """Text and images from a string or an array of content parts."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise ParamError("content must be a string or an array of content parts", param=param)
    texts: list[str] = []
    images: list[str] = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "input_text", "output_text"):
            texts.append(str(part.get("text", "")))
        elif kind in ("image_url", "input_image"):
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str):
                raise ParamError("image_url must carry a url", param=where)
            images.append(data_url_image(url, where))
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))
        else:
            raise ParamError(f"unsupported content part type: {kind!r}", param=where)
    return "\n".join(texts), images


def native_tool_call(call: Any, index: int, param: str) -> dict[str, Any]:
    """An OpenAI tool call (arguments as a JSON string) -> the native form (an object)."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise ParamError("tool call needs function.name", param=param)
    raw = fn.get("arguments") or "{}"
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ParamError("invalid tool call arguments: not JSON", param=param) from exc
    if not isinstance(args, dict):
        raise ParamError("invalid tool call arguments: not a JSON object", param=param)
    out: dict[str, Any] = {"function": {"index": index, "name": fn["name"], "arguments": args}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def openai_tool_call(native: dict[str, Any], index: int, fallback_id: str) -> dict[str, Any]:
    fn = native.get("function", {})
    args = fn.get("arguments", {})
    return {
        "index": index,
        "id": native.get("id") or fallback_id,
        "type": "function",
        "function": {
            "name": fn.get("name", ""),
            "arguments": args if isinstance(args, str) else json.dumps(args),
        },
    }


def convert_messages(messages: list[dict[str, Any]]) -> list[Message]:
    if not messages:
        raise ParamError("[] is too short - 'messages'", param="messages")
    out: list[Message] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for role "tool"
    for i, msg in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise ParamError("each message needs a role", param=param)
        role = msg["role"]
        role = "system" if role == "developer" else role
        if role not in ("system", "user", "assistant", "tool"):
            raise ParamError(f"invalid role: {role!r}", param=f"{param}.role")
        text, images = _parts(msg.get("content"), f"{param}.content")
        native = Message(role=role, content=text)
        if images:
            native.images = images
        reasoning = msg.get("reasoning") or msg.get("reasoning_content")
        if role == "assistant" and isinstance(reasoning, str) and reasoning:
            native.thinking = reasoning
        calls = msg.get("tool_calls") or []
        if calls and role == "assistant":
            native.tool_calls = [
                native_tool_call(c, j, f"{param}.tool_calls[{j}]") for j, c in enumerate(calls)
            ]
            for c in native.tool_calls:
                if isinstance(c.get("id"), str):
                    names[c["id"]] = c["function"]["name"]
        elif msg.get("content") is None:
            raise ParamError("content is required unless the message has tool_calls", param=param)
        if role == "tool":
            call_id = msg.get("tool_call_id")
            if isinstance(call_id, str):
                native.tool_call_id = call_id
            name = msg.get("name") or names.get(call_id if isinstance(call_id, str) else "")
            if isinstance(name, str) and name:
                native.tool_name = name
        out.append(native)
    return out


def convert_tools(tools: list[Any] | None) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type") != "function" or not fn.get("name"):
            raise ParamError("only function tools with a name are supported", param=f"tools[{i}]")
        out.append({"type": "function", "function": fn})
    return out


def apply_tool_choice(
    tools: list[dict[str, Any]] | None, mode: str, name: str | None
) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(tools to send, an instruction for the system prompt) for a normalised tool choice.

    ``mode`` is ``auto``, ``none``, ``required`` or ``function`` (then ``name`` is set). ``none``
    sends no tools at all; a named function sends only that tool; ``required`` and a named
    function also tell the model, in the system prompt, that it must call a tool.
    """
    if mode == "auto":
        return tools, None
    if mode == "none":
        return None, None
    if not tools:
        raise ParamError("tool_choice requires tools", param="tool_choice")
    if mode == "required":
        return tools, "You must respond by calling one or more of the provided tools."
    chosen = [t for t in tools if t["function"].get("name") == name]
    if not chosen:
        raise ParamError(f"tool_choice names an unknown function: {name!r}", param="tool_choice")
    return chosen, f"You must respond by calling the tool `{name}`."


def openai_tool_choice(value: Any) -> tuple[str, str | None]:
    if value is None or value == "auto":
        return "auto", None
    if value in ("none", "required"):
        return str(value), None
    if isinstance(value, dict) and value.get("type") == "function":
        fn = value.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return "function", fn["name"]
    raise ParamError(
        "tool_choice must be 'none', 'auto', 'required' or a named function", param="tool_choice"
    )


def add_instruction(messages: list[Message], instruction: str | None) -> list[Message]:
    if not instruction:
        return messages
    if messages and messages[0].role == "system":
        first = messages[0]
        first.content = f"{first.content}\n\n{instruction}" if first.content else instruction
        return messages
    return [Message(role="system", content=instruction), *messages]


def response_format(value: Any) -> Any:
    """``response_format`` -> native ``format``: ``"json"``, a JSON schema, or None."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ParamError("json_schema.schema must be an object", param="response_format")
        return schema
    raise ParamError(
        "response_format.type must be 'text', 'json_object' or 'json_schema'",
        param="response_format",
    )


def think_from_effort(effort: Any, param: str = "reasoning_effort") -> bool | str | None:
    if effort is None:
        return None
    if isinstance(effort, str) and effort in _EFFORT:
        return _EFFORT[effort]
    raise ParamError(f"invalid {param}: {effort!r}", param=param)
