"""Templates built to exhaust the stack or memory: refused with a TemplateError (a 400).

A GGUF chat template with a long operator chain once overflowed minijinja's parser and killed
the gateway; those run in a child process here, so an unfixed build fails the test instead
of crashing pytest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from power.errors import InvalidRequestError
from power.template import GoTemplate, TemplateError, render_chat_template, render_generate
from power.template._goparse import MAX_DEPTH
from power.template._jinjacheck import MAX_SOURCE, MAX_TAG_LINKS
from power.template.jinja import MAX_OUTPUT, referenced_variables
from power.template.prompt import template_capabilities

HI = [{"role": "user", "content": "hi"}]
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class FakeModel:
    template: str | None = None
    system: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    gguf: None = None


# The gateway's own calls: /api/tags and /api/show list capabilities through
# template_capabilities (in the gateway's process), chat renders through render_chat (in the
# app's template sandbox).
_BOMBS = textwrap.dedent(
    """
    import json, sys
    from dataclasses import dataclass, field
    from power.template import TemplateError, TemplateSandbox, render_chat, template_capabilities

    @dataclass
    class GGUF:
        chat_template: str
        bos_token: str = ""
        eos_token: str = ""
        architecture: str = "llama"

    @dataclass
    class Model:
        gguf: GGUF
        template: None = None
        system: None = None
        messages: list = field(default_factory=list)

    sandbox = TemplateSandbox()
    for source in json.loads(sys.stdin.read()):
        caps = template_capabilities(None, source)
        try:
            render_chat(
                Model(GGUF(source)), [{"role": "user", "content": "hi"}], renderer=sandbox
            )
        except TemplateError as exc:
            print(sorted(caps), exc.status, exc.detail, flush=True)
    sandbox.close()
    """
)


def test_operator_chains_are_refused_without_crashing_the_process() -> None:
    bombs = [
        "{{ " + "-" * 100_000 + "1 }}",
        "{{ " + "not " * 20_000 + "1 }}",
        "{{ x" + ".a" * 20_000 + " }}",
        "{{ " + "1+" * 20_000 + "1 }}",
        "{{ x" + "|e" * 20_000 + " }}",
        "{{ " + "1 if 1 else " * 20_000 + "1 }}",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _BOMBS],
        input=json.dumps(bombs),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == len(bombs)
    for line in lines:
        assert line.startswith("[] 400 chat template too complex: a tag at line 1 chains more")


@pytest.mark.parametrize(
    ("before", "after", "links"),
    [
        ("", "", 0),
        ("'}}' and ", "", 1),  # a tag end inside a string does not end the tag
        ("{'a': {'b': 1}} and ", "", 3),  # nor does one inside braces
        ("x and ", " and '%}'", 2),
        ("1.5e+3 and ", "", 1),
    ],
)
@pytest.mark.parametrize("chain", ["-", "not ", "0b1and ", "x.", "1 if 1 else "])
def test_a_chain_one_past_the_limit_is_refused_wherever_it_hides(
    before: str, after: str, links: int, chain: str
) -> None:
    per_link = 2 if chain == "1 if 1 else " else 1
    count = (MAX_TAG_LINKS - links) // per_link
    # Raw blocks and comments hold no tags; the tag after them is the one that counts.
    head = "{% raw %}{{ '{% endraw %}{# {{ ' #}x{{- "
    fits = head + before + chain * count + "1" + after + " -}}"
    referenced_variables(fits)  # within the limit: compiles
    over = head + before + chain * (count + 1) + "1" + after + " -}}"
    with pytest.raises(TemplateError, match=r"chat template too complex: a tag at line 1"):
        render_chat_template(over, HI)


def test_a_chat_template_over_the_size_limit_is_refused() -> None:
    source = "x" * (MAX_SOURCE + 1)
    with pytest.raises(TemplateError, match=f"longer than {MAX_SOURCE} characters") as caught:
        render_chat_template(source, HI)
    assert isinstance(caught.value, InvalidRequestError)
    assert template_capabilities(None, source) == set()  # listed, without capabilities


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ("indent=17", "indent must be 0 to 16"),
        ("indent=300000000", "indent must be 0 to 16"),
        ("indent=' ' * 17", "indent must be 0 to 16"),
        ("separators=(',' * 17, ':')", "separators must be two strings"),
        ("separators=(',',)", "separators must be two strings"),
    ],
)
def test_tojson_padding_is_bounded(args: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=problem):
        render_chat_template(f"{{{{ messages|tojson({args}) }}}}", HI)


def test_tojson_within_the_bounds_is_unchanged() -> None:
    source = "{{ messages|tojson(indent=4) }}|{{ messages|tojson(separators=(',', ':')) }}"
    compact = json.dumps(HI, separators=(",", ":"))
    assert render_chat_template(source, HI) == f"{json.dumps(HI, indent=4)}|{compact}"


def test_tojson_stops_encoding_at_the_output_limit() -> None:
    # Each number sits 61 levels deep: about a thousand characters of indent per line.
    value: Any = [0] * (MAX_OUTPUT // (16 * 61) + 1000)
    for _ in range(60):
        value = [value]
    messages = [{"role": "user", "content": value}]
    with pytest.raises(TemplateError, match=f"tojson output exceeds {MAX_OUTPUT} characters"):
        render_chat_template("{{ messages[0].content|tojson(indent=16) }}", messages)


def _nested(shape: str, depth: int) -> str:
    if shape == "paren":
        return "{{ " + "(" * depth + "print $.Prompt" + ")" * depth + " }}"
    if shape == "else if":
        links = "{{ else if not 1 }}" * (depth - 1)
        return "{{ if not 1 }}" + links + "{{ else }}{{ $.Prompt }}{{ end }}"
    opening = {"if": "{{ if 1 }}", "range": "{{ range 1 }}", "block": '{{ block "b%d" . }}'}[shape]
    openings = "".join(opening.replace("%d", str(i)) for i in range(depth))
    return openings + "{{ $.Prompt }}" + "{{ end }}" * depth


@pytest.mark.parametrize("shape", ["if", "range", "block", "paren", "else if"])
def test_go_template_nesting_past_the_limit_is_a_template_error(shape: str) -> None:
    with pytest.raises(TemplateError, match=f"nests too deeply \\(more than {MAX_DEPTH} levels"):
        GoTemplate.parse(_nested(shape, 300))
    with pytest.raises(TemplateError, match="nests too deeply"):
        GoTemplate.parse(_nested(shape, MAX_DEPTH + 1))


@pytest.mark.parametrize("shape", ["if", "range", "block", "paren", "else if"])
def test_go_template_at_the_nesting_limit_renders(shape: str) -> None:
    # A legacy template (no .Messages): the last turn renders from a pruned copy of the tree.
    source = _nested(shape, MAX_DEPTH)
    assert render_generate(FakeModel(template=source), "hi", renderer=render_chat_template) == "hi"
    assert (
        render_generate(FakeModel(), "hi", template=source, renderer=render_chat_template) == "hi"
    )
