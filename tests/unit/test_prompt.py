"""Prompt building: Ollama-style Go templates per family, Jinja fallback, Ollama's rules.

Expected strings are what Ollama (Go text/template) renders for these templates.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import pytest

from power.template import (
    PromptModel,
    TemplateError,
    prompt,
    render_chat_template,
    template_capabilities,
    thinking_tags,
)

# The templates here are the tests' own: rendered in this process (the gateway uses a sandbox).
render_chat = functools.partial(prompt.render_chat, renderer=render_chat_template)
render_generate = functools.partial(prompt.render_generate, renderer=render_chat_template)


@dataclass(frozen=True)
class FakeGGUF:
    chat_template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    architecture: str | None = None


@dataclass(frozen=True)
class FakeModel:
    template: str | None = None
    system: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    gguf: FakeGGUF = field(default_factory=FakeGGUF)


def model(template: str | None = None, **kwargs: Any) -> PromptModel:
    return FakeModel(template=template, **kwargs)


LLAMA3 = """{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>
{{- if .System }}

{{ .System }}
{{- end }}
{{- if .Tools }}

You are a helpful assistant with tool calling capabilities.
{{- end }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>
{{- if and $.Tools $last }}

Given the following functions, please respond with a JSON for a function call.

{{ range $.Tools }}
{{- . }}
{{ end }}
Question: {{ .Content }}<|eot_id|>
{{- else }}

{{ .Content }}<|eot_id|>
{{- end }}{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}
{{ range .ToolCalls }}
{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}
{{- end }}{{ if not $last }}<|eot_id|>{{ end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content }}<|eot_id|>{{ if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"""

QWEN25 = """{{- if .Messages }}
{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>

For each function call, return a json object within <tool_call></tool_call> XML tags.
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"""

MISTRAL = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}
{{- if and $last $.Tools }}[AVAILABLE_TOOLS] {{ json $.Tools }}[/AVAILABLE_TOOLS]
{{- end }}[INST] {{ if and $.System $last }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .Content }} {{ .Content }}
{{- else if .ToolCalls }}[TOOL_CALLS] [
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}
{{- end }}]
{{- end }}</s>
{{- else if eq .Role "tool" }}[TOOL_RESULTS] {"content": {{ .Content }}} [/TOOL_RESULTS]
{{- end }}
{{- end }}"""

GEMMA = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""

PHI3 = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|{{ .Role }}|>
{{ .Content }}<|end|>
{{ if and (ne .Role "assistant") $last }}<|assistant|>
{{ end }}
{{- end }}"""

CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

CHATML_LEGACY = """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ .Response }}<|im_end|>
"""

QWEN3_THINK = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|im_start|>{{ .Role }}
{{ if and (eq .Role "assistant") .Thinking }}<think>{{ .Thinking }}</think>

{{ end }}{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ if and .IsThinkSet (not .Think) }}<think>

</think>

{{ else if .Think }}[{{ .ThinkLevel }}]{{ end }}"""

JINJA_CHATML = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined %}think={{ enable_thinking }}{% endif %}{% endif %}"
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}
# Ollama's api.Tool field order: "required" comes before "properties".
WEATHER_FUNCTION_JSON = (
    '{"name":"get_weather","description":"Get the weather","parameters":{"type":"object",'
    '"required":["city"],"properties":{"city":{"type":"string","description":"City name"}}}}'
)
WEATHER_JSON = '{"type":"function","function":' + WEATHER_FUNCTION_JSON + "}"

TOOL_ROUND_TRIP: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
    },
    {"role": "tool", "content": "22C", "tool_name": "get_weather"},
]


# ---------------------------------------------------------------------------------------
# Families


def test_llama3_system_and_user() -> None:
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}]
    assert render_chat(model(LLAMA3), messages) == (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_llama3_tools_in_last_user_turn() -> None:
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    assert render_chat(model(LLAMA3), messages, tools=[WEATHER]) == (
        "<|start_header_id|>system<|end_header_id|>\n\n"
        "You are a helpful assistant with tool calling capabilities.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
        "Given the following functions, please respond with a JSON for a function call.\n\n"
        f"{WEATHER_JSON}\n\nQuestion: Weather in Paris?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_llama3_tool_call_round_trip() -> None:
    assert render_chat(model(LLAMA3), TOOL_ROUND_TRIP, tools=[WEATHER]) == (
        "<|start_header_id|>system<|end_header_id|>\n\n"
        "You are a helpful assistant with tool calling capabilities.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWeather in Paris?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
        '{"name": "get_weather", "parameters": {"city":"Paris"}}<|eot_id|>'
        "<|start_header_id|>ipython<|end_header_id|>\n\n22C<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_qwen25_system_and_user() -> None:
    messages = [{"role": "system", "content": "You are Qwen."}, {"role": "user", "content": "Hi"}]
    assert render_chat(model(QWEN25), messages) == (
        "<|im_start|>system\nYou are Qwen.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_qwen25_tool_call_round_trip() -> None:
    assert render_chat(model(QWEN25), TOOL_ROUND_TRIP, tools=[WEATHER]) == (
        "<|im_start|>system\n\n# Tools\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        f'{{"type": "function", "function": {WEATHER_FUNCTION_JSON}}}\n</tools>\n\n'
        "For each function call, return a json object within <tool_call></tool_call> XML tags."
        "<|im_end|>\n"
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city":"Paris"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\n22C\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_mistral_available_tools_and_system_in_last_turn() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be concise."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Weather?"},
    ]
    assert render_chat(model(MISTRAL), messages, tools=[WEATHER]) == (
        "[INST] Hi[/INST] Hello!</s>"
        f"[AVAILABLE_TOOLS] [{WEATHER_JSON}][/AVAILABLE_TOOLS]"
        "[INST] Be concise.\n\nWeather?[/INST]"
    )


def test_mistral_tool_calls_and_results() -> None:
    assert render_chat(model(MISTRAL), TOOL_ROUND_TRIP, tools=[WEATHER]) == (
        "[INST] Weather in Paris?[/INST]"
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city":"Paris"}}]</s>'
        '[TOOL_RESULTS] {"content": 22C} [/TOOL_RESULTS]'
    )


def test_gemma_model_system_is_prepended_and_rendered_as_user_turn() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    assert render_chat(model(GEMMA, system="Sys"), messages) == (
        "<start_of_turn>user\nSys<end_of_turn>\n"
        "<start_of_turn>user\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )


def test_phi3() -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]
    assert render_chat(model(PHI3), messages) == (
        "<|system|>\nS<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
    )
    prefill = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure"}]
    assert render_chat(model(PHI3), prefill) == "<|user|>\nHi<|end|>\n<|assistant|>\nSure<|end|>\n"


def test_chatml() -> None:
    assert render_chat(model(CHATML, system="Sys"), [{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>system\nSys<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


# ---------------------------------------------------------------------------------------
# Ollama's assembly rules


def test_request_system_replaces_model_system_and_stored_messages_come_first() -> None:
    stored = [{"role": "user", "content": "s1"}, {"role": "assistant", "content": "s2"}]
    m = model(CHATML, system="Model sys", messages=stored)
    out = render_chat(m, [{"role": "user", "content": "Hi"}])
    assert out == (
        "<|im_start|>system\nModel sys<|im_end|>\n<|im_start|>user\ns1<|im_end|>\n"
        "<|im_start|>assistant\ns2<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    out = render_chat(
        m, [{"role": "system", "content": "Req sys"}, {"role": "user", "content": "Hi"}]
    )
    assert out == (
        "<|im_start|>user\ns1<|im_end|>\n<|im_start|>assistant\ns2<|im_end|>\n"
        "<|im_start|>system\nReq sys<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_consecutive_same_role_messages_merge_but_tool_messages_do_not() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "USER", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "tool", "content": "t1"},
        {"role": "tool", "content": "t2"},
    ]
    assert render_chat(model(CHATML), messages) == (
        "<|im_start|>user\na\n\nb<|im_end|>\n<|im_start|>tool\nt1<|im_end|>\n"
        "<|im_start|>tool\nt2<|im_end|>\n<|im_start|>assistant\n"
    )


def test_legacy_template_runs_per_turn_and_cuts_after_response() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert render_chat(model(CHATML_LEGACY), messages) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\na<|im_end|>\n"
        "<|im_start|>assistant\nb<|im_end|>\n"
        "<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n"
    )


def test_legacy_template_without_response_gets_it_appended() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert render_chat(model("[INST] {{ .Prompt }} [/INST]"), messages) == (
        "[INST] a [/INST]b[INST] c [/INST]"
    )


def test_fallback_template_is_the_prompt() -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert render_chat(model(), [*messages, {"role": "user", "content": "c"}]) == "abc"
    assert render_generate(model(), "hello", system="ignored by {{ .Prompt }}") == "hello"


def test_go_template_wins_over_jinja_which_wins_over_fallback() -> None:
    gguf = FakeGGUF(chat_template=JINJA_CHATML, bos_token="<s>")
    msgs = [{"role": "user", "content": "Hi"}]
    assert (
        render_chat(model("{{ range .Messages }}{{ .Content }}{{ end }}", gguf=gguf), msgs) == "Hi"
    )
    assert render_chat(model(gguf=gguf), msgs) == (
        "<s><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render_chat(model(gguf=gguf), msgs, add_generation_prompt=False) == (
        "<s><|im_start|>user\nHi<|im_end|>\n"
    )


def test_jinja_receives_openai_style_messages_and_raw_tools() -> None:
    source = (
        "{% for m in messages %}{{ m.role }}:{{ m.content }}"
        "{% for c in m.tool_calls or [] %}[{{ c.type }} {{ c.function.name }} "
        "{{ c.function.arguments | tojson }}]{% endfor %}"
        "{% if m.reasoning_content %}({{ m.reasoning_content }}){% endif %}"
        "{% if m.name %}<{{ m.name }}>{% endif %};{% endfor %}{{ tools | length }}"
    )
    history: list[dict[str, Any]] = [
        *TOOL_ROUND_TRIP[:1],
        {**TOOL_ROUND_TRIP[1], "thinking": "hmm"},
        *TOOL_ROUND_TRIP[2:],
    ]
    out = render_chat(model(gguf=FakeGGUF(chat_template=source)), history, tools=[WEATHER])
    assert out == (
        'user:Weather in Paris?;assistant:[function get_weather {"city": "Paris"}](hmm);'
        "tool:22C<get_weather>;1"
    )


def test_images_become_numbered_tags_in_go_templates() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "two", "images": ["aaa", "bbb"]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "look [img] here", "images": ["ccc"]},
    ]
    assert render_chat(model(CHATML), messages) == (
        "<|im_start|>user\n[img-0][img-1]two<|im_end|>\n<|im_start|>assistant\nok<|im_end|>\n"
        "<|im_start|>user\nlook [img-2] here<|im_end|>\n<|im_start|>assistant\n"
    )


def test_images_become_numbered_tags_in_jinja_templates_too() -> None:
    source = "{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}"
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "two", "images": ["aaa", "bbb"]},
        {"role": "user", "content": "look [img] here", "images": ["ccc"]},
    ]
    jinja = model(gguf=FakeGGUF(chat_template=source))
    assert render_chat(jinja, messages) == "user:[img-0][img-1]two;user:look [img-2] here;"
    assert render_generate(jinja, "Describe", images=["aaa"]) == "user:[img-0]Describe;"


# ---------------------------------------------------------------------------------------
# Thinking


@pytest.mark.parametrize(
    ("think", "tail"),
    [
        (None, ""),
        (False, "<think>\n\n</think>\n\n"),
        (True, "[medium]"),
        ("high", "[high]"),
    ],
)
def test_think_values_reach_go_templates(think: bool | str | None, tail: str) -> None:
    out = render_chat(model(QWEN3_THINK), [{"role": "user", "content": "Hi"}], think=think)
    assert out == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n" + tail


def test_previous_thinking_is_rendered_by_the_template() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1", "thinking": "because"},
        {"role": "user", "content": "q2"},
    ]
    assert render_chat(model(QWEN3_THINK), messages) == (
        "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\n<think>because</think>\n\na1"
        "<|im_end|>\n<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n"
    )


def test_qwen3_strips_think_blocks_before_the_last_user_turn() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "<think>hmm</think>\n\na1"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "<think>kept</think>a2"},
    ]
    expected = (
        "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
        "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n<think>kept</think>a2"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    qwen3 = model(CHATML, gguf=FakeGGUF(architecture="qwen3"))
    assert render_chat(qwen3, messages) == expected
    assert "<think>hmm</think>" in render_chat(model(CHATML), messages)


def test_think_reaches_jinja_as_enable_thinking() -> None:
    m = model(gguf=FakeGGUF(chat_template=JINJA_CHATML))
    msgs = [{"role": "user", "content": "Hi"}]
    assert render_chat(m, msgs).endswith("<|im_start|>assistant\n")
    assert render_chat(m, msgs, think=False).endswith("assistant\nthink=False")
    assert render_chat(m, msgs, think="low").endswith("assistant\nthink=True")


# ---------------------------------------------------------------------------------------
# Generate


def test_generate_with_messages_template() -> None:
    m = model(CHATML, system="Sys", messages=[{"role": "user", "content": "s1"}])
    assert render_generate(m, "Why?") == (
        "<|im_start|>system\nSys<|im_end|>\n<|im_start|>user\ns1\n\nWhy?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render_generate(m, "Why?", system="Other").startswith(
        "<|im_start|>system\nOther<|im_end|>\n"
    )


def test_generate_with_legacy_template_and_template_override() -> None:
    assert render_generate(model(CHATML_LEGACY, system="S"), "Hi") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    override = "{{ .System }}|{{ .Prompt }}"
    assert render_generate(model(CHATML), "hi", system="sys", template=override) == "sys|hi"


def test_generate_images_are_separate_user_messages() -> None:
    assert render_generate(model(CHATML), "Describe", images=["aaa", "bbb"]) == (
        "<|im_start|>user\n[img-0]\n\n[img-1]\n\nDescribe<|im_end|>\n<|im_start|>assistant\n"
    )


def test_generate_fill_in_the_middle() -> None:
    fim = (
        "{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>"
        "{{- else }}{{ .Prompt }}{{- end }}"
    )
    m = model(fim, system="never rendered in FIM mode")
    assert render_generate(m, "def f(", suffix="    return x") == (
        "<|fim_prefix|>def f(<|fim_suffix|>    return x<|fim_middle|>"
    )
    assert render_generate(m, "plain") == "plain"


def test_generate_with_jinja() -> None:
    m = model(system="Sys", gguf=FakeGGUF(chat_template=JINJA_CHATML, bos_token="<s>"))
    assert render_generate(m, "Hi") == (
        "<s><|im_start|>system\nSys<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with pytest.raises(TemplateError, match="suffix"):
        render_generate(m, "Hi", suffix="x")


def test_template_errors_are_invalid_requests() -> None:
    with pytest.raises(TemplateError, match="template error: "):
        render_chat(model("{{ if }}"), [{"role": "user", "content": "Hi"}])
    with pytest.raises(TemplateError, match="function 'nope' not defined"):
        render_generate(model(CHATML), "hi", template="{{ nope }}")


# ---------------------------------------------------------------------------------------
# Capabilities and thinking tags


@pytest.mark.parametrize(
    ("go", "jinja", "expected"),
    [
        (LLAMA3, None, {"tools"}),
        (QWEN25, None, {"tools"}),
        (CHATML, None, set()),
        (QWEN3_THINK, None, {"thinking"}),
        ("{{ .Prompt }}<FIM>{{ .Suffix }}", None, {"insert"}),
        (
            None,
            "{% if tools %}{{ tools | tojson }}{% endif %}<think></think>",
            {"tools", "thinking"},
        ),
        (None, JINJA_CHATML, set()),
        (CHATML, "{{ tools }}<think></think>", set()),
        (None, None, set()),
        ("{{ if }}", None, set()),
    ],
)
def test_template_capabilities(go: str | None, jinja: str | None, expected: set[str]) -> None:
    assert template_capabilities(go, jinja) == expected


def test_thinking_tags() -> None:
    assert thinking_tags(QWEN3_THINK, None) == ("<think>", "</think>")
    assert thinking_tags(CHATML, "<think></think>") is None
    assert thinking_tags(None, "{{ '<think>' }}...{{ '</think>' }}") == ("<think>", "</think>")
    split = "{% set content = message.content.split('</think>')[-1] %}"
    assert thinking_tags(None, split) == ("<think>", "</think>")
    assert thinking_tags(None, "<|START_THINKING|>x<|END_THINKING|>") == (
        "<|START_THINKING|>",
        "<|END_THINKING|>",
    )
    assert thinking_tags(None, None) is None
    # A range over .Messages must enclose the .Thinking reference.
    outside = "{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Prompt }}"
    assert thinking_tags(outside, None) is None
