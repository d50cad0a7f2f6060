"""Go text/template engine: expected outputs are what Go's text/template prints.

Two deliberate differences (see power.template.gotemplate): nil prints as "" rather than
"<no value>", and mappings print as JSON (Ollama's template maps are JSON Stringers).
"""

from __future__ import annotations

import datetime
import re
from typing import Any

import pytest

from power.errors import InvalidRequestError
from power.template import GoTemplate, TemplateError
from power.template.gotemplate import JSONList, field_action, go_json


def render(source: str, data: Any = None) -> str:
    return GoTemplate.parse(source).execute({} if data is None else data)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a {{ 1 }} b", "a 1 b"),
        ("a  \n {{- 1 -}} \n\t b", "a1b"),
        ("a {{- 1 }} b", "a1 b"),
        ("a {{ 1 -}} b", "a 1b"),
        ("a {{-3}} b", "a -3 b"),
        ("a {{- -3 -}} b", "a-3b"),
        ("x{{/* comment */}}y", "xy"),
        ("x {{- /* comment */ -}} \n y", "xy"),
        ("x {{/* multi\nline */}} y", "x  y"),
        ("{{ `raw\\n` }}|{{ \"esc\\t\\u00e9\" }}|{{ 'a' }}", "raw\\n|esc\té|97"),
        (
            "{{ 0x1F }} {{ 1_000 }} {{ 1.5 }} {{ 2.0 }} {{ 1e3 }} {{ 0o17 }}",
            "31 1000 1.5 2 1000 15",
        ),
        ('{{ true }} {{ false }} {{ "" }}.', "true false ."),
        ("{{ .Nothing }}|{{ .Nothing.Deeper }}", "|"),
    ],
)
def test_text_trim_comments_and_literals(source: str, expected: str) -> None:
    assert render(source) == expected


def test_fields_on_mappings_objects_and_zero_values() -> None:
    class Obj:
        name = "obj"

    data = {
        "Messages": [{"Role": "user", "tool_calls": [{"function": {"name": "f"}}]}],
        "Tools": [{"function": {"name": "g", "parameters": {"$defs": {"x": 1}}}}],
        "Obj": Obj(),
    }
    source = (
        "{{ (index .Messages 0).Role }}|{{ range .Messages }}{{ range .ToolCalls }}"
        "{{ .Function.Name }}{{ end }}{{ end }}|{{ (index $.Tools 0).Function.Parameters.Defs }}"
        "|{{ .Obj.Name }}|{{ .Missing }}|{{ .Missing.Deeper }}|"
        "{{ if .Missing }}t{{ else }}f{{ end }}"
    )
    assert render(source, data) == 'user|f|{"x":1}|obj|||f'


def test_variables_declare_assign_and_scope() -> None:
    source = (
        '{{ $x := 1 }}{{ $y := "s" }}{{ range .L }}{{ $x = . }}{{ $z := 9 }}{{ $z }}{{ end }}'
        "{{ $x }}{{ $y }}{{ with $w := 5 }}{{ $w }}{{ end }}{{ $ | len }}"
    )
    assert render(source, {"L": [3, 4]}) == "994s51"


def test_if_else_if_else_and_with() -> None:
    source = (
        "{{ range .L }}{{ if eq . 1 }}one{{ else if eq . 2 3 }}two-or-three"
        "{{ else }}other{{ end }},{{ end }}"
        "{{ with .M }}{{ .k }}{{ else with .N }}n={{ . }}{{ else }}none{{ end }}"
    )
    assert (
        render(source, {"L": [1, 2, 3, 4], "N": "x"}) == "one,two-or-three,two-or-three,other,n=x"
    )


def test_range_forms() -> None:
    data = {"L": ["a", "b", "c"], "M": {"b": 2, "a": 1}, "E": []}
    assert render("{{ range $i, $v := .L }}{{ $i }}={{ $v }};{{ end }}", data) == "0=a;1=b;2=c;"
    assert render("{{ range $v := .L }}{{ $v }}{{ end }}", data) == "abc"
    assert render("{{ range $k, $v := .M }}{{ $k }}{{ $v }}{{ end }}", data) == "a1b2"
    assert render("{{ range .E }}x{{ else }}empty{{ end }}", data) == "empty"
    assert render("{{ range .Nope }}x{{ else }}nil{{ end }}", data) == "nil"
    assert render("{{ range 3 }}{{ . }}{{ end }}", data) == "012"
    source = (
        '{{ range .L }}{{ if eq . "b" }}{{ continue }}{{ end }}'
        '{{ if eq . "c" }}{{ break }}{{ end }}{{ . }}{{ end }}'
    )
    assert render(source, data) == "a"
    outer = (
        "{{ range $i, $_ := .L }}{{ $last := eq (len (slice $.L $i)) 1 }}"
        "{{ if $last }}{{ . }}{{ end }}{{ end }}"
    )
    assert render(outer, data) == "c"


def test_define_template_and_block() -> None:
    source = (
        '{{ define "item" }}<{{ . }}>{{ end }}{{ range .L }}{{ template "item" . }}{{ end }}'
        '{{ block "tail" .T }}[{{ . }}]{{ end }}{{ template "item" }}'
    )
    assert render(source, {"L": [1, 2], "T": "t"}) == "<1><2>[t]<>"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{{ and 1 0 2 }}|{{ and 1 2 }}|{{ or 0 "" }}|{{ or 0 "x" 1 }}', "0|2||x"),
        ("{{ and .Nil .Nil.Boom }}|{{ or 1 (index .Nil 3) }}", "|1"),
        ('{{ not 0 }} {{ not "a" }} {{ not .L }}', "true false false"),
        ('{{ eq 1 1 }} {{ eq "a" "b" "a" }} {{ ne 1 2 }} {{ eq 1 2 3 }}', "true true true false"),
        ('{{ lt 1 2 }} {{ le 2 2 }} {{ gt "b" "a" }} {{ ge 1.5 2.0 }}', "true true true false"),
        ('{{ len "héllo" }} {{ len .L }} {{ len .M }}', "6 3 1"),
        ('{{ index .L 1 }} {{ index .M "k" }} {{ index .M "zz" }}.{{ index "abc" 0 }}', "2 v .97"),
        ('{{ slice .L 1 }} {{ slice .L 0 2 }} {{ slice "hello" 1 3 }}', "[2 3] [1 2] el"),
        ('{{ print 1 2 "a" "b" 3 .Nil }}|{{ println "a" 1 }}|', "1 2ab3 <nil>|a 1\n|"),
        (
            '{{ printf "%s=%d %v %q %t %5.2f|%-4s|%03d %x %%"'
            ' "k" 7 .L "q" true 3.14159 "ab" 5 255 }}',
            'k=7 [1 2 3] "q" true  3.14|ab  |005 ff %',
        ),
        ('{{ printf "%d %s" "x" }}', "%!d(string=x) %!s(MISSING)"),
        ('{{ "x" | printf "%s-%s" "a" }}|{{ .L | len }}|{{ .M.k | printf "%q" }}', 'a-x|3|"v"'),
        (
            '{{ html "<a href=\'x\'>&" }} {{ urlquery "a b&c" }} {{ js "it\'s <b>" }}',
            "&lt;a href=&#39;x&#39;&gt;&amp; a+b%26c it\\'s \\u003Cb\\u003E",
        ),
    ],
)
def test_builtins(source: str, expected: str) -> None:
    assert render(source, {"L": [1, 2, 3], "M": {"k": "v"}, "Nil": None}) == expected


def test_printing_values_like_fmt() -> None:
    data = {"F": [1.0, 0.5, 1e6, 123456.0, 1.5e-5, -2.25], "B": [True, None, "s"], "D": {"a": [1]}}
    assert render("{{ .F }}|{{ .B }}|{{ .D }}|{{ .T }}", data | {"T": JSONList([{"x": 1}])}) == (
        '[1 0.5 1e+06 123456 1.5e-05 -2.25]|[true <nil> s]|{"a":[1]}|[{"x":1}]'
    )


def test_json_matches_go_marshal() -> None:
    value = {
        "b": '<tag> & "quote" \\ \n\t\u2028 é 😀',
        "a": [1, 2.5, 1.0, 1e21, 1e-7, 0.000001, None, True],
        "nested": {"z": {}, "y": []},
    }
    assert go_json(value) == (
        '{"b":"\\u003ctag\\u003e \\u0026 \\"quote\\" \\\\ \\n\\t\\u2028 é 😀",'
        '"a":[1,2.5,1,1e+21,1e-7,0.000001,null,true],"nested":{"z":{},"y":[]}}'
    )
    assert render("{{ json .X }}", {"X": {"k": [1, "<"]}}) == '{"k":[1,"\\u003c"]}'
    assert render("{{ json .X }}", {"X": float("nan")}) == ""


def test_ollama_functions() -> None:
    today = datetime.date.today()
    out = render("{{ currentDate }} {{ yesterdayDate }}")
    assert out == f"{today.isoformat()} {(today - datetime.timedelta(days=1)).isoformat()}"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{4}-\d{2}-\d{2}", out)
    props = {
        "a": {"type": "string"},
        "b": {"type": ["integer", "null"]},
        "c": {"anyOf": [{"type": "array"}, {"type": "object"}]},
        "d": {},
        "e": {"type": "boolean"},
    }
    source = "{{ range $k, $v := .P }}{{ $k }}: {{ toTypeScriptType $v }}; {{ end }}"
    assert render(source, {"P": props}) == (
        "a: string; b: number | null; c: any[] | Record<string, any>; d: any; e: boolean; "
    )


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("{{ if }}", "missing value for if"),
        ("{{ foo }}", "function 'foo' not defined"),
        ("{{ $x }}", "undefined variable '$x'"),
        ("{{ end }}", "unexpected {{end}}"),
        ("{{ if 1 }}x{{ else }}y{{ else }}z{{ end }}", "expected end"),
        ("{{ .X", "unclosed action"),
        ("{{ range .X }}", "unexpected EOF"),
        ("{{ break }}", "{{break}} outside {{range}}"),
        ("{{/* c */ }}", "comment ends before closing delimiter"),
        ("{{/* c", "unclosed comment"),
        ('{{ "abc }}', "unterminated quoted string"),
        ("{{ (1 }}", "unclosed left paren"),
        ("{{ 1 | 2 }}", "non executable command in pipeline stage 2"),
        ("{{ 3x }}", "bad number syntax"),
        ('{{ template "x" }}{{ define "y" }}{{ else }}{{ end }}', "unexpected {{else}}"),
        ("{{ $a, $b := 1 }}", "too many declarations"),
    ],
)
def test_parse_errors(source: str, fragment: str) -> None:
    with pytest.raises(TemplateError) as info:
        GoTemplate.parse(source)
    assert fragment in str(info.value)
    assert str(info.value).startswith("template error: ")
    assert isinstance(info.value, InvalidRequestError)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("{{ index .L 5 }}", "index out of range: 5"),
        ("{{ .S.Field }}", "can't evaluate field Field in type string"),
        ('{{ template "nope" }}', 'no such template "nope"'),
        ('{{ eq 1 "1" }}', "incompatible types for comparison"),
        ("{{ len 3 }}", "len of type int"),
        ("{{ range .S }}{{ end }}", "range can't iterate over"),
        ("{{ not }}", "wrong number of args for not"),
        ("{{ nil }}", "nil is not a command"),
        ("{{ .S 1 }}", "is not a method but has arguments"),
    ],
)
def test_execution_errors(source: str, fragment: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(fragment)):
        render(source, {"L": [1], "S": "str", "M": {}})


def test_identifiers_and_cut_after_response() -> None:
    tmpl = GoTemplate.parse(
        '{{ define "t" }}{{ .Suffix }}{{ end }}{{ if .System }}S{{ end }}'
        "{{ range $m := .Messages }}{{ $m.Role }}{{ end }}"
    )
    assert tmpl.identifiers() == {"suffix", "system", "messages", "$m", "role"}

    legacy = GoTemplate.parse("<s>{{ .Prompt }} [/INST] {{ .Response }}</s>{{ if 1 }}x{{ end }}")
    cut = legacy.cut_after(lambda n: n == field_action("Response").pipe.cmds[0].args[0])
    assert cut.execute({"Prompt": "p", "Response": "r"}) == "<s>p [/INST] r"
    assert legacy.execute({"Prompt": "p", "Response": "r"}) == "<s>p [/INST] r</s>x"


def test_parse_is_cached() -> None:
    assert GoTemplate.parse("{{ .A }}") is GoTemplate.parse("{{ .A }}")


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("{{range $i := 100000000}}x{{end}}", "exceeds 2000000 steps"),
        ("{{range $i := 100000000}}{{end}}", "exceeds 2000000 steps"),
        (
            '{{define "a"}}{{range 1000}}{{template "b"}}{{end}}{{end}}'
            '{{define "b"}}{{range 1000}}{{template "c"}}{{end}}{{end}}'
            '{{define "c"}}{{range 1000}}y{{end}}{{end}}{{template "a"}}',
            "steps",
        ),
        ('{{range $i := 8}}{{printf "%09999999d" 1}}{{end}}', "output exceeds"),
    ],
)
def test_rendering_is_bounded_in_work_and_output(source: str, fragment: str) -> None:
    with pytest.raises(TemplateError, match=fragment) as excinfo:
        GoTemplate.parse(source).execute({})
    assert excinfo.value.status == 400


def test_printf_refuses_a_width_or_precision_past_a_million_as_go_does() -> None:
    assert GoTemplate.parse('{{printf "%0999999999d|%d" 1 2}}').execute({}) == (
        "%!(NOVERB)%!(EXTRA int=1, int=2)"
    )
    assert GoTemplate.parse('{{printf "%.99999999f" 1.5}}').execute({}) == (
        "%!(NOVERB)%!(EXTRA float64=1.5)"
    )
    assert len(GoTemplate.parse('{{printf "%0999999d" 1}}').execute({})) == 999999
