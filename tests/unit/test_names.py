"""Model names parse, validate and display exactly as Ollama's do."""

from __future__ import annotations

from pathlib import Path

import pytest

from power.errors import InvalidRequestError
from power.store.names import MISSING_PART, ModelName, parse_name


@pytest.mark.parametrize(
    ("text", "parts", "display"),
    [
        ("llama3.2", ("registry.ollama.ai", "library", "llama3.2", "latest"), "llama3.2:latest"),
        ("llama3.2:1b", ("registry.ollama.ai", "library", "llama3.2", "1b"), "llama3.2:1b"),
        ("alice/tiny", ("registry.ollama.ai", "alice", "tiny", "latest"), "alice/tiny:latest"),
        (
            "localhost:5000/team/tiny:q4",
            ("localhost:5000", "team", "tiny", "q4"),
            "localhost:5000/team/tiny:q4",
        ),
        (
            "registry.ollama.ai/library/x:y",
            ("registry.ollama.ai", "library", "x", "y"),
            "x:y",
        ),
        ("REGISTRY.ollama.ai/LIBRARY/x:y", ("REGISTRY.ollama.ai", "LIBRARY", "x", "y"), "x:y"),
        (
            "example.com/library/m:t",
            ("example.com", "library", "m", "t"),
            "example.com/library/m:t",
        ),
        ("https://example.com/ns/m:t", ("example.com", "ns", "m", "t"), "example.com/ns/m:t"),
        ("_under/_score:_t", ("registry.ollama.ai", "_under", "_score", "_t"), "_under/_score:_t"),
        (
            "m-1.5_b:q4_K_M",
            ("registry.ollama.ai", "library", "m-1.5_b", "q4_K_M"),
            "m-1.5_b:q4_K_M",
        ),
        ("a" * 80, ("registry.ollama.ai", "library", "a" * 80, "latest"), "a" * 80 + ":latest"),
    ],
)
def test_valid_names(text: str, parts: tuple[str, ...], display: str) -> None:
    name = parse_name(text)
    assert name.parts == parts
    assert name.display == display
    assert name.filepath() == Path(*parts)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "foo:",  # tag promised but missing
        ":tag",
        "/foo",
        "ns/",
        "localhost:5000/foo",  # two parts are always namespace/model; ':' not allowed there
        "ns.dotted/model",  # no '.' in a namespace
        "x/y/z/w",  # host would contain '/'
        "-leading-dash",
        ".leading-dot",
        "model:-tag",
        "model:ta/g",
        "mod el",
        "mödel",
        "a" * 81,
        "m:" + "t" * 81,
        "h" * 351 + "/ns/m:t",
        MISSING_PART,
    ],
)
def test_invalid_names(text: str) -> None:
    assert not ModelName.parse(text).is_valid()
    with pytest.raises(InvalidRequestError, match=r"^invalid model name$"):
        parse_name(text)


def test_missing_part_sentinel_marks_promised_parts() -> None:
    bare = ModelName.parse_bare("foo:")
    assert bare.model == "foo"
    assert bare.tag == MISSING_PART
    assert ModelName.parse_bare("/foo").namespace == MISSING_PART


def test_scheme_is_kept_apart_from_host() -> None:
    name = ModelName.parse("http://localhost:8080/ns/m")
    assert (name.scheme, name.host) == ("http", "localhost:8080")
    assert ModelName.parse("m").scheme == "https"


def test_two_parts_are_namespace_and_model() -> None:
    bare = ModelName.parse_bare("alice/tiny:q8")
    assert (bare.host, bare.namespace, bare.model, bare.tag) == ("", "alice", "tiny", "q8")


def test_equality_ignores_case_on_every_part() -> None:
    a = parse_name("Example.COM/Team/Tiny:Q4")
    b = parse_name("example.com/team/tiny:q4")
    assert a == b
    assert a.equal_fold(b)
    assert hash(a) == hash(b)
    assert {a: 1}[b] == 1
    assert a.display == "Example.COM/Team/Tiny:Q4"  # case is preserved
    assert a != parse_name("example.com/team/tiny:q5")


def test_from_parts_validates() -> None:
    assert ModelName.from_parts(("registry.ollama.ai", "library", "m", "t")) is not None
    assert ModelName.from_parts(("registry.ollama.ai", "library", "m")) is None
    assert ModelName.from_parts(("registry.ollama.ai", "library", "m", ".m.tmp")) is None
