"""The Modelfile parser: commands, quoting, heredocs, comments and line-numbered errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from power.errors import InvalidRequestError
from power.store.modelfile import (
    Command,
    ModelfileError,
    is_path_ref,
    modelfile_to_create_request,
    parse_modelfile,
    parse_parameter,
)


def _pairs(text: str) -> list[tuple[str, str]]:
    return [(c.name, c.args) for c in parse_modelfile(text).commands]


def test_commands_are_case_insensitive() -> None:
    text = "from llama3.2\nParameter temperature 0.5\nsYsTeM be brief\nLICENSE MIT\n"
    assert _pairs(text) == [
        ("model", "llama3.2"),
        ("temperature", "0.5"),
        ("system", "be brief"),
        ("license", "MIT"),
    ]


def test_heredoc_spans_lines_and_keeps_inner_text() -> None:
    text = 'FROM x\nTEMPLATE """{{ .System }}\n  USER: {{ .Prompt }}\n"""\nSYSTEM """one line"""\n'
    assert _pairs(text)[1:] == [
        ("template", "{{ .System }}\n  USER: {{ .Prompt }}\n"),
        ("system", "one line"),
    ]


def test_quoted_values_spaces_and_tabs() -> None:
    text = 'FROM x\nSYSTEM "  padded  "\nPARAMETER stop "<|im_end|>"\nADAPTER\t./a b.gguf\n'
    assert _pairs(text)[1:] == [
        ("system", "  padded  "),
        ("stop", "<|im_end|>"),
        ("adapter", "./a b.gguf"),
    ]


def test_comments_blank_lines_and_crlf() -> None:
    text = "# a comment\r\n\r\n   # indented comment\r\nFROM x\r\n\r\nSYSTEM hi # not a comment\r\n"
    assert _pairs(text) == [("model", "x"), ("system", "hi # not a comment")]


def test_value_without_trailing_newline() -> None:
    assert _pairs("FROM x") == [("model", "x")]


def test_messages_carry_role() -> None:
    parsed = parse_modelfile('FROM x\nMESSAGE user Hi there\nMESSAGE assistant """Hello\n"""')
    assert parsed.commands[1:] == [
        Command("message", "Hi there", 2, "user"),
        Command("message", "Hello\n", 3, "assistant"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "FROM x\nPARAMETER stop a\nBOGUS value\n",
            '(line 3): command must be one of "from", "license", "template", "system", "adapter", '
            '"renderer", "parser", "parameter", "message", or "requires"',
        ),
        ("FROM x\nMESSAGE robot hi\n", "(line 2): message role must be one of"),
        ('FROM x\nSYSTEM """never closed\nstill open\n', "(line 2): unexpected EOF: unterminated"),
        ("FROM x\nPARAMETER te-mp 1\n", "(line 2): unexpected character '-'"),
        ("SYSTEM hi\n# no from\n", "no FROM line"),
        ("", "no FROM line"),
    ],
)
def test_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ModelfileError) as info:
        parse_modelfile(text)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, InvalidRequestError)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("temperature", "0.7", 0.7),
        ("num_ctx", "4096", 4096),
        ("seed", "-1", -1),
        ("use_mmap", "false", False),
        ("use_mmap", "T", True),
        ("stop", "<|im_end|>", ["<|im_end|>"]),
    ],
)
def test_parameters_are_typed(name: str, value: str, expected: object) -> None:
    assert parse_parameter(name, value) == expected


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("bogus", "1", "unknown parameter 'bogus'"),
        ("Temperature", "1", "unknown parameter 'Temperature'"),
        ("num_ctx", "4.5", "invalid int value [4.5]"),
        ("top_p", "high", "invalid float value [high]"),
        ("use_mmap", "yes", "invalid bool value [yes]"),
    ],
)
def test_bad_parameters(name: str, value: str, message: str) -> None:
    with pytest.raises(ModelfileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_parameter(name, value)


def test_to_create_request() -> None:
    text = (
        "FROM ./weights.gguf\n"
        "PARAMETER temperature 0.2\n"
        "PARAMETER stop <|im_start|>\n"
        "PARAMETER stop <|im_end|>\n"
        "PARAMETER mirostat 1\n"  # deprecated: dropped with a warning
        'TEMPLATE """{{ .Prompt }}"""\n'
        "SYSTEM terse\n"
        "LICENSE MIT\n"
        "LICENSE Apache-2.0\n"
        "MESSAGE user hi\n"
        "ADAPTER @sha256:" + "a" * 64 + "\n"
    )
    req = modelfile_to_create_request(parse_modelfile(text))
    assert req == {
        "from": "./weights.gguf",
        "parameters": {"temperature": 0.2, "stop": ["<|im_start|>", "<|im_end|>"]},
        "template": "{{ .Prompt }}",
        "system": "terse",
        "license": ["MIT", "Apache-2.0"],
        "messages": [{"role": "user", "content": "hi"}],
        "adapters": {"sha256:" + "a" * 64: "sha256:" + "a" * 64},
    }


def test_from_model_name_and_blob() -> None:
    by_name = modelfile_to_create_request(parse_modelfile("FROM alice/tiny:q4"))
    assert by_name == {"from": "alice/tiny:q4"}
    blob = modelfile_to_create_request(parse_modelfile("FROM @sha256:" + "b" * 64))
    assert blob == {"from": "sha256:" + "b" * 64}


def test_paths_are_kept_as_written_and_never_looked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mapping is pure text: the CLI resolves and uploads files, the server reads none."""
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    text = (
        "FROM ./weights.gguf\nFROM ~/mmproj.gguf\nFROM @sha256:" + "c" * 64 + "\n"
        "ADAPTER /loras/a b.gguf\n"
    )
    req = modelfile_to_create_request(parse_modelfile(text))
    assert req == {
        "from": "./weights.gguf",
        "files": {"mmproj.gguf": "~/mmproj.gguf", "sha256-" + "c" * 64: "sha256:" + "c" * 64},
        "adapters": {"a b.gguf": "/loras/a b.gguf"},
    }


@pytest.mark.parametrize(
    ("ref", "is_path"),
    [
        ("/etc/hostname", True),
        ("./m.gguf", True),
        ("../m.gguf", True),
        ("~/m.gguf", True),
        ("C:\\models\\m.gguf", True),
        (".", True),
        ("llama3.2", False),
        ("alice/tiny:q4", False),
        ("m.gguf", False),  # a valid model name; the CLI uploads it if the file exists
        ("sha256:" + "a" * 64, False),
    ],
)
def test_is_path_ref(ref: str, is_path: bool) -> None:
    assert is_path_ref(ref) is is_path


def test_unknown_parameter_error_names_line() -> None:
    parsed = parse_modelfile("FROM x\n\nPARAMETER nope 1\n")
    with pytest.raises(ModelfileError, match=r"^\(line 3\): unknown parameter 'nope'$"):
        modelfile_to_create_request(parsed)
