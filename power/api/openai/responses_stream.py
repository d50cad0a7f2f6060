"""Native chat chunks -> Responses API output items, and the named SSE events that build them.

``ResponseBuilder`` is fed every native chunk. It keeps the output items (``reasoning``,
``message``, ``function_call``) and returns, per chunk, the events a streaming client sees:
``response.output_item.added``, text / reasoning / argument deltas and their ``.done``
events, ``response.output_item.done``; ``events`` wraps them between ``response.created`` /
``response.in_progress`` and the terminal event: ``response.completed``, ``response.incomplete``
when the output was cut at ``max_output_tokens`` (OpenAI's sequence; its body is the
non-streamed body, status "incomplete" with ``incomplete_details``), or ``response.failed``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from power.api.openai.sse import new_id, sse
from power.api.schemas import ChatChunk, prompt_tokens
from power.errors import PowerError

__all__ = ["ResponseBuilder", "events"]

Event = dict[str, Any]


class ResponseBuilder:
    def __init__(self, model: str, echo: dict[str, Any]) -> None:
        self.id = new_id("resp_")
        self.model = model
        self.echo = echo
        self.created_at = int(time.time())
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the reasoning or message item being written
        self.final: ChatChunk | None = None
        self.seq = 0

    def _event(self, kind: str, **fields: Any) -> Event:
        self.seq += 1
        return {"type": kind, "sequence_number": self.seq - 1, **fields}

    def snapshot(self, status: str, **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": status, "model": self.model, "output": self.output, "error": None,
            "incomplete_details": None, "usage": None, **self.echo, **extra,
        }  # fmt: skip

    def _close(self) -> list[Event]:
        item, self.open = self.open, None
        if item is None:
            return []
        where = {"item_id": item["id"], "output_index": self.output.index(item)}
        item["status"] = "incomplete" if self._cut() else "completed"
        if item["type"] == "reasoning":
            part = item["summary"][0]
            out = [
                self._event("response.reasoning_summary_text.done", **where, summary_index=0,
                            text=part["text"]),
                self._event("response.reasoning_summary_part.done", **where, summary_index=0,
                            part=part),
            ]  # fmt: skip
            del item["status"]  # reasoning items carry no status
        else:
            part = item["content"][0]
            out = [
                self._event("response.output_text.done", **where, content_index=0,
                            text=part["text"], logprobs=[]),
                self._event("response.content_part.done", **where, content_index=0, part=part),
            ]  # fmt: skip
        out.append(self._event("response.output_item.done", output_index=where["output_index"],
                               item=item))  # fmt: skip
        return out

    def _ensure(self, kind: str) -> tuple[list[Event], dict[str, Any]]:
        if self.open is not None and self.open["type"] == kind:
            return [], self.open
        out = self._close()
        if kind == "reasoning":
            item: dict[str, Any] = {"type": "reasoning", "id": new_id("rs_"), "summary": []}
        else:
            item = {"type": "message", "id": new_id("msg_"), "status": "in_progress",
                    "role": "assistant", "content": []}  # fmt: skip
        self.output.append(item)
        self.open = item
        where = {"item_id": item["id"], "output_index": len(self.output) - 1}
        out.append(self._event("response.output_item.added", output_index=where["output_index"],
                               item=json.loads(json.dumps(item))))  # fmt: skip
        part: dict[str, Any]
        if kind == "reasoning":
            part = {"type": "summary_text", "text": ""}
            item["summary"].append(part)
            out.append(self._event("response.reasoning_summary_part.added", **where,
                                   summary_index=0, part=dict(part)))  # fmt: skip
        else:
            part = {"type": "output_text", "text": "", "annotations": [],
                                    "logprobs": []}  # fmt: skip
            item["content"].append(part)
            out.append(self._event("response.content_part.added", **where, content_index=0,
                                   part=dict(part)))  # fmt: skip
        return out, item

    def _delta(self, kind: str, text: str) -> list[Event]:
        out, item = self._ensure(kind)
        where = {"item_id": item["id"], "output_index": self.output.index(item)}
        if kind == "reasoning":
            item["summary"][0]["text"] += text
            out.append(self._event("response.reasoning_summary_text.delta", **where,
                                   summary_index=0, delta=text))  # fmt: skip
        else:
            item["content"][0]["text"] += text
            out.append(self._event("response.output_text.delta", **where, content_index=0,
                                   delta=text, logprobs=[]))  # fmt: skip
        return out

    def _call(self, native: dict[str, Any]) -> list[Event]:
        out = self._close()
        fn = native.get("function", {})
        args = fn.get("arguments", {})
        args = args if isinstance(args, str) else json.dumps(args)
        item = {"type": "function_call", "id": new_id("fc_"),
                "call_id": native.get("id") or "call_" + secrets.token_hex(6),
                "name": fn.get("name", ""), "arguments": args, "status": "completed"}  # fmt: skip
        self.output.append(item)
        index = len(self.output) - 1
        where = {"item_id": item["id"], "output_index": index}
        added = {**item, "arguments": "", "status": "in_progress"}
        out += [
            self._event("response.output_item.added", output_index=index, item=added),
            self._event("response.function_call_arguments.delta", **where, delta=args),
            self._event("response.function_call_arguments.done", **where, arguments=args,
                        name=item["name"]),
            self._event("response.output_item.done", output_index=index, item=item),
        ]  # fmt: skip
        return out

    def consume(self, chunk: ChatChunk) -> list[Event]:
        msg = chunk.message
        out: list[Event] = []
        if msg.thinking:
            out += self._delta("reasoning", msg.thinking)  # type: ignore[arg-type]
        if msg.content:
            out += self._delta("message", msg.content)
        for call in msg.tool_calls or []:
            out += self._call(call)
        if chunk.done:
            self.final = chunk
        return out

    def _cut(self) -> bool:
        """Whether generation stopped at ``max_output_tokens`` (the runner's "length")."""
        return self.final is not None and self.final.done_reason == "length"

    def finish(self) -> dict[str, Any]:
        self._close()
        return self._result()

    def _result(self) -> dict[str, Any]:
        final = self.final
        prompt, cached = prompt_tokens(final)
        done = (final.eval_count or 0) if final is not None else 0
        usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
                 "output_tokens": done, "output_tokens_details": {"reasoning_tokens": 0},
                 "total_tokens": prompt + done}  # fmt: skip
        if self._cut():
            return self.snapshot("incomplete", usage=usage,
                                 incomplete_details={"reason": "max_output_tokens"})  # fmt: skip
        return self.snapshot("completed", usage=usage, completed_at=int(time.time()))

    def failed_event(self, exc: PowerError) -> bytes:
        error = {"code": "server_error", "message": str(exc)}
        response = self.snapshot("failed", error=error)
        return sse(self._event("response.failed", response=response), "response.failed")


def _sse(event: Event) -> bytes:
    return sse(event, event["type"])  # encoded now, while the items it refers to are current


async def events(chunks: AsyncIterator[ChatChunk], b: ResponseBuilder) -> AsyncIterator[bytes]:
    try:
        started = False
        async for chunk in chunks:
            if not started:  # after the first native chunk, so earlier errors keep their status
                started = True
                yield _sse(b._event("response.created", response=b.snapshot("in_progress")))
                yield _sse(b._event("response.in_progress", response=b.snapshot("in_progress")))
            for event in b.consume(chunk):
                yield _sse(event)
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    for event in b._close():
        yield _sse(event)
    result = b._result()
    kind = "response.incomplete" if result["status"] == "incomplete" else "response.completed"
    yield _sse(b._event(kind, response=result))
