"""Fuzzing every JSON endpoint of a real server: malformed input is a 4xx, never a 5xx.

A real ``power serve`` child runs real runners on the fake ``echo`` engine. Hypothesis builds
bodies for every POST/DELETE JSON route of ``power.app`` (native ``/api/*``, OpenAI and
Anthropic ``/v1/*``): malformed JSON, wrong types, huge, negative and non-finite numbers, deep
nesting, unknown fields and oversized strings, mostly grafted onto a valid body so that they
reach the options, templates and runners. Every answer must be below 500, no stream may carry
an internal error, the gateway must log no traceback and no runner may crash; afterwards the
server still serves a plain request. The run is derandomized (the same bodies in CI every time)
and bounded by ``MAX_EXAMPLES`` and ``BUDGET_S``.

Names that could reach the network (pull, push, a create ``from`` that is not local) are
always invalid or local, so nothing leaves the machine.
"""

from __future__ import annotations

import collections
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from power.store.names import ModelName
from tests.support.limited import ENDPOINTS, MODEL
from tests.support.server import Server

pytestmark = pytest.mark.slow

log = logging.getLogger(__name__)

MAX_EXAMPLES = 1200
BUDGET_S = 30.0  # examples past this are skipped: the run stays well inside CI's limits

# Every field any of these endpoints reads, so that a mutation hits a real field most times.
FIELDS = [
    "model", "name", "prompt", "suffix", "system", "template", "context", "raw", "format",
    "keep_alive", "images", "options", "think", "truncate", "shift", "logprobs", "top_logprobs",
    "messages", "tools", "stream", "input", "dimensions", "verbose", "source", "destination",
    "from", "parameters", "files", "adapters", "quantize", "license", "modelfile", "insecure",
    "max_tokens", "max_completion_tokens", "max_output_tokens", "temperature", "top_p", "top_k",
    "seed", "stop", "stop_sequences", "frequency_penalty", "presence_penalty", "n", "best_of",
    "echo", "stream_options", "tool_choice", "response_format", "reasoning_effort",
    "encoding_format", "instructions", "text", "reasoning", "thinking", "metadata",
]  # fmt: skip
OPTIONS = [
    "num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "use_mmap", "use_mlock",
    "temperature", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty", "repeat_last_n",
    "presence_penalty", "frequency_penalty", "seed", "num_predict", "num_keep", "stop",
]  # fmt: skip

# Raw JSON that json.dumps cannot write (numbers it has no spelling for, nesting deeper than its
# recursion limit) travels as a string marker that is swapped for the text afterwards.
RAW_NUMBERS = ["1e999", "-1e999", "1e308", "-1e308", "123456789012345678901234567890", "-0"]
_RAW = re.compile(r'"@(raw|list|dict):([^"]*)"')


def _raw(match: re.Match[str]) -> str:
    kind, text = match.group(1), match.group(2)
    if kind == "raw":
        return text
    depth = int(text)
    return (
        ("[" * depth + "1" + "]" * depth)
        if kind == "list"
        else ('{"a":' * depth + "1" + "}" * depth)
    )


BIG_INTS = [2**31, 2**32 + 1, 2**63, 2**64, 2**70, -(2**63) - 1, -(2**31) - 1, 10**30]
FLOATS = [1e308, -1e308, 5e-324, 1e30, -1.5, 0.0, 0.5, 3.4e38, 3.5e38]
TEMPLATES = [
    "{{ .Prompt }}",
    "{{ .Foo",
    "{{range $i := 100000000}}x{{end}}",
    "{{range $i := 100000000}}{{end}}",
    '{{printf "%0999999999d" 1}}',
    '{{template "nope"}}',
    '{{define "a"}}{{template "a"}}{{end}}{{template "a"}}',
    "{{ index .Messages 99 }}",
]

numbers = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([*BIG_INTS, 2**31 - 1, 10**9, 100000, 20000, 4096, 100, -1, 0, 1]),
    st.sampled_from(FLOATS),
    st.sampled_from([f"@raw:{n}" for n in RAW_NUMBERS]),
)
leaf = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    st.text(max_size=12),
    st.sampled_from(["0", "-1", "5m", "1e308", "999999999999h", "json", "user", "x" * 300]),
)
value = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=3),
    max_leaves=8,
)  # fmt: skip
deep = st.builds(
    "@{}:{}".format, st.sampled_from(["list", "dict"]), st.sampled_from([64, 200, 900, 5000, 50000])
)
oversized = st.sampled_from([100_000, 2_000_000]).map(lambda n: "word " * (n // 5))
options = st.dictionaries(
    st.sampled_from(OPTIONS), st.one_of(numbers, numbers, numbers, leaf, value, deep), max_size=4
)
# content parts of the OpenAI, Responses and Anthropic shapes, with fields of any type
part = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "image", "tool_use", "tool_result",
                              "input_text", "input_image", "thinking", "function_call"])},
    optional={key: st.one_of(value, st.text(max_size=8)) for key in (
        "text", "image_url", "source", "input", "content", "id", "name", "tool_use_id",
        "arguments", "call_id", "thinking")},
)  # fmt: skip
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "developer", "bogus"])},
    optional={
        "content": st.one_of(st.text(max_size=20), value, oversized, st.lists(part, max_size=3)),
        "images": st.one_of(st.lists(st.sampled_from(["aGk=", "!!", ""]), max_size=2), value),
        "tool_calls": value,
        "thinking": value,
    },
)
anything = st.one_of(value, deep, oversized, numbers)
# What each field gets: mostly values of about its own kind, sometimes anything at all.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "options": options,
    "parameters": options,
    "messages": st.lists(message, max_size=3),
    "input": st.one_of(st.text(max_size=20), st.lists(message | part, max_size=3), value),
    "system": st.one_of(st.text(max_size=20), st.lists(part, max_size=2), value),
    "tools": st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["function", "custom", "web_search"])},
            optional={"function": value, "name": value, "input_schema": value, "parameters": value},
        ),
        max_size=2,
    ),
    "tool_choice": st.one_of(st.sampled_from(["auto", "none", "required", "any"]), value),
    "context": st.lists(numbers, max_size=3),
    "template": st.sampled_from(TEMPLATES),
    "keep_alive": st.one_of(numbers, st.sampled_from(["5m", "-1", "1e308s", "9999999999h", "x"])),
}
NUMERIC_FIELDS = [
    "max_tokens", "max_completion_tokens", "max_output_tokens", "top_logprobs", "top_k", "seed",
    "n", "best_of", "dimensions", "temperature", "top_p", "frequency_penalty", "presence_penalty",
    "logprobs",
]  # fmt: skip
FIELD_VALUES.update({name: numbers for name in NUMERIC_FIELDS})


def _safe_names(body: Any, path: str) -> Any:
    """Keep every name that could make the server pull or push invalid or local."""
    if not isinstance(body, dict):
        return body
    if path in ("/api/pull", "/api/push"):
        for key in ("model", "name"):
            if key in body and isinstance(body[key], str) and ModelName.parse(body[key]).is_valid():
                body[key] = "not a valid name"
    if path == "/api/create":
        if body.get("from") not in (None, MODEL, "smollm2"):
            body["from"] = MODEL
        body.pop("modelfile", None)  # its FROM could name a remote model
    if path in ("/api/create", "/api/copy", "/api/delete"):
        for key in ("model", "name", "destination"):
            if key in body and body[key] not in ("scratch", "not a valid name"):
                body[key] = "scratch"
    return body


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, bytes]:
    path = draw(st.sampled_from(sorted(ENDPOINTS)))
    method, base = ENDPOINTS[path]
    shape = draw(st.sampled_from(["mutate", "mutate", "mutate", "any", "deep", "malformed"]))
    if shape == "malformed":
        good = json.dumps(base).encode()
        raw = draw(
            st.one_of(
                st.binary(max_size=40),
                st.sampled_from([b"", b" ", b"null", b"[]", b'"x"', b"{", b'{"model":', b"\xff\xfe",
                                 b'{"model": "fuzz", "stream": false, }', b"NaN", b"Infinity"]),
                st.integers(0, len(good)).map(lambda n: good[:n]),
            )
        )  # fmt: skip
        return path, method, raw
    if shape == "deep":
        kind = draw(st.sampled_from(["list", "dict"]))
        depth = draw(st.sampled_from([1000, 5000, 100_000]))
        return path, method, _RAW.sub(_raw, f'"@{kind}:{depth}"').encode()
    body: Any
    if shape == "any":
        body = draw(value)
    else:
        body = dict(base)
        keys = st.sampled_from(FIELDS) | st.sampled_from(sorted(FIELD_VALUES))
        for key in draw(st.lists(keys, min_size=1, max_size=4)):
            typed = FIELD_VALUES.get(key, anything)
            body[key] = draw(st.one_of(typed, typed, typed, anything))
        if draw(st.booleans()):
            body[draw(st.text(min_size=1, max_size=8))] = draw(value)  # an unknown field
    text = json.dumps(_safe_names(body, path), allow_nan=True)
    return path, method, _RAW.sub(_raw, text).encode()


def _internal_error_in(text: str) -> bool:
    return "internal server error" in text or "Traceback" in text


def test_no_endpoint_answers_5xx_to_malformed_input(
    limited_server: Server, record_property: Callable[[str, object], None]
) -> None:
    statuses: collections.Counter[int] = collections.Counter()
    streamed_errors: list[str] = []
    started = time.monotonic()
    client = httpx.Client(base_url=limited_server.url, timeout=60)

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests())
    def fuzz(request: tuple[str, str, bytes]) -> None:
        if time.monotonic() - started > BUDGET_S:
            return
        path, method, body = request
        resp = client.request(
            method, path, content=body, headers={"Content-Type": "application/json"}
        )
        statuses[resp.status_code] += 1
        assert resp.status_code < 500, (path, body[:300], resp.status_code, resp.text[:300])
        if _internal_error_in(resp.text):
            streamed_errors.append(f"{path} {body[:200]!r}: {resp.text[:300]}")

    try:
        fuzz()
        sent = sum(statuses.values())
        elapsed = time.monotonic() - started
        record_property("fuzz_requests", sent)
        record_property("fuzz_statuses", dict(sorted(statuses.items())))
        log.info("fuzz: %d requests in %.1fs, statuses %s", sent, elapsed, sorted(statuses.items()))
        assert not streamed_errors, streamed_errors[:5]
        # the gateway and its runners survived: a plain request still works
        resp = client.post(
            "/api/generate", json={"model": MODEL, "prompt": "still here", "stream": False}
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["response"].strip() == "still here"
        assert client.get("/api/ps").status_code == 200
    finally:
        client.close()
    assert limited_server.proc.poll() is None
    text = limited_server.log_text()
    assert "Traceback" not in text, text[text.find("Traceback") - 2000 :][:6000]
    errors = [line for line in text.splitlines() if " ERROR " in line]  # crashes, 5xx, bad frames
    assert not errors, errors[:5]
