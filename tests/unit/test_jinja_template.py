"""GGUF Jinja chat templates rendered with minijinja, the way HF/llama.cpp render them."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from power.errors import InvalidRequestError
from power.template import TemplateError, render_chat_template
from power.template.jinja import referenced_variables

# SmolLM2-Instruct's ChatML template (default system prompt when none is given).
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A Llama-3-style template written the way GGUF metadata stores it (escaped \n in strings).
LLAMA3 = r"""{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] | trim %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = '' %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if system_message or tools %}
    {{- '<|start_header_id|>system<|end_header_id|>\n\n' }}
    {%- if tools %}
        {{- 'Tools:\n' }}
        {%- for t in tools %}
            {{- t | tojson }}
            {{- '\n' }}
        {%- endfor %}
    {%- endif %}
    {{- system_message }}
    {{- '<|eot_id|>' }}
{%- endif %}
{%- for message in loop_messages %}
    {%- if message['role'] == 'assistant' and loop.first %}
        {{- raise_exception('Conversations must start with a user message') }}
    {%- endif %}
    {%- set role = 'ipython' if message.role == 'tool' else message.role %}
    {{- '<|start_header_id|>' + role + '<|end_header_id|>\n\n' }}
    {%- if message.tool_calls %}
        {%- for call in message.tool_calls %}
            {{- '{"name": "' + call.function.name + '", "parameters": ' }}
            {{- call.function.arguments | tojson + '}' }}
        {%- endfor %}
    {%- else %}
        {{- message['content'] | trim }}
    {%- endif %}
    {{- '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather <now> & later",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def test_smollm2_default_system_and_generation_prompt() -> None:
    out = render_chat_template(SMOLLM2, [{"role": "user", "content": "Hi"}])
    assert out == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_smollm2_with_system_and_no_generation_prompt() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    out = render_chat_template(SMOLLM2, messages, add_generation_prompt=False)
    assert out == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
    )


def test_llama3_bos_system_trim_and_generation_prompt() -> None:
    messages = [{"role": "system", "content": "  Be terse.\n"}, {"role": "user", "content": "Hi"}]
    out = render_chat_template(LLAMA3, messages, bos_token="<|begin_of_text|>")
    assert out == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_llama3_tools_tojson_keeps_order_and_does_not_html_escape() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}
            ],
        },
        {"role": "tool", "content": "22C"},
    ]
    out = render_chat_template(LLAMA3, messages, tools=[WEATHER_TOOL], bos_token="<s>")
    assert out == (
        "<s><|start_header_id|>system<|end_header_id|>\n\nTools:\n"
        '{"type": "function", "function": {"name": "get_weather", "description": '
        '"Weather <now> & later", "parameters": {"type": "object", "properties": '
        '{"city": {"type": "string"}}, "required": ["city"]}}}\n<|eot_id|>'
        "<|start_header_id|>user<|end_header_id|>\n\nWeather in Paris?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
        '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "C"}}<|eot_id|>'
        "<|start_header_id|>ipython<|end_header_id|>\n\n22C<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_raise_exception_becomes_template_error() -> None:
    with pytest.raises(TemplateError) as info:
        render_chat_template(LLAMA3, [{"role": "assistant", "content": "first"}])
    assert str(info.value) == "template error: Conversations must start with a user message"
    assert isinstance(info.value, InvalidRequestError)
    assert info.value.status == 400


def test_syntax_and_runtime_errors_become_template_errors() -> None:
    with pytest.raises(TemplateError, match="template error: "):
        render_chat_template("{% for m in messages %}", [])
    with pytest.raises(TemplateError, match="template error: "):
        render_chat_template("{{ messages[0].content.nope() }}", [{"role": "user", "content": ""}])


def test_python_string_and_dict_methods() -> None:
    source = (
        "{% for m in messages %}[{{ m.content.strip() }}|{{ m.content.split(',') | length }}"
        "|{{ m.content.startswith(' a') }}|{{ m.content.upper().strip() }}]{% endfor %}"
        "{% for k, v in extra.items() %}{{ k }}={{ v }};{% endfor %}"
        "{{ messages[0].get('role') }}{{ messages[0].get('missing', '-') }}"
    )
    out = render_chat_template(
        source, [{"role": "user", "content": " a,b,c "}], extra={"z": 1, "a": 2}
    )
    assert out == "[a,b,c|3|True|A,B,C]z=1;a=2;user-"


def test_tojson_arguments_and_strftime_now() -> None:
    source = (
        "{{ tools | tojson(indent=2) }}|{{ '<a>' | tojson }}|"
        "{{ {'b': 1, 'a': [1.5, none, true]} | tojson }}|{{ strftime_now('%Y') }}"
    )
    out = render_chat_template(source, [], tools=[{"n": "é"}])
    year = datetime.datetime.now().strftime("%Y")
    assert out == f'[\n  {{\n    "n": "é"\n  }}\n]|"<a>"|{{"b": 1, "a": [1.5, null, true]}}|{year}'


def test_context_defaults_and_extra_kwargs() -> None:
    source = (
        "{{ bos_token }}|{{ eos_token }}|{{ tools is none }}|{{ add_generation_prompt }}"
        "|{{ enable_thinking }}|{{ undefined_thing }}|"
        "{% if enable_thinking is defined and enable_thinking is false %}"
        "<think>\n\n</think>{% endif %}"
    )
    # Booleans print the Python way, as they do under HF's jinja2.
    assert render_chat_template(source, []) == "||True|True|||"
    assert render_chat_template(source, [], enable_thinking=False, eos_token="</s>") == (
        "|</s>|True|True|False||<think>\n\n</think>"
    )


def test_trim_blocks_and_lstrip_blocks() -> None:
    source = "A\n  {% if true %}\n  B\n  {% endif %}\nC"
    assert render_chat_template(source, []) == "A\n  B\nC"


def test_referenced_variables() -> None:
    names = referenced_variables(LLAMA3)
    assert {"messages", "tools", "bos_token", "add_generation_prompt"} <= names
    assert "enable_thinking" not in names


def test_rendering_is_bounded() -> None:
    endless = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
    with pytest.raises(TemplateError) as excinfo:
        render_chat_template(endless, [{"role": "user", "content": "hi"}])
    assert excinfo.value.status == 400
