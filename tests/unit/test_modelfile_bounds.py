"""The Modelfile parser on large and hostile input: linear in the text's length (megabytes of
spaces or blank lines inside a value parse at once; the parser that stripped the whole value at
each space or line break took minutes on these), the same commands as before on tricky quoting,
and an integer PARAMETER of thousands of digits a 400, not a 500."""

from __future__ import annotations

import pytest

from power.create.request import prepare
from power.errors import InvalidRequestError
from power.store.modelfile import PARAMETER_TYPES, ModelfileError, parse_modelfile

_BIG = 1_500_000  # repetitions: ~3 MB of text; a quadratic parse of any of these takes minutes


def _values(text: str) -> list[tuple[str, str, int, str]]:
    return [(c.name, c.args, c.line, c.role) for c in parse_modelfile(text).commands[1:]]


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (' """' + "a " * _BIG + '"""', "a " * _BIG),  # a space before the quotes
        ("a " * _BIG, "a " * (_BIG - 1) + "a"),  # bare
        ('"""' + "\n" * _BIG + '"""', "\n" * _BIG),  # blank lines in a heredoc
    ],
    ids=["spaces-then-quotes", "bare-spaces", "blank-lines"],
)
def test_megabytes_of_spaces_or_lines_in_a_value_parse_in_linear_time(
    value: str, parsed: str
) -> None:
    assert _values(f"FROM x\nSYSTEM {value}\nLICENSE MIT\n") == [
        ("system", parsed, 2, ""),
        ("license", "MIT", 2 + parsed.count("\n") + 1, ""),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('SYSTEM  """ a """  \n', [("system", " a ", 2, "")]),
        ('SYSTEM """"""\n', [("system", "", 2, "")]),
        (
            'SYSTEM """ab""\n"""\nLICENSE "a\nb"\n',
            [("system", 'ab""\n', 2, ""), ("license", "a\nb", 4, "")],
        ),
        ('SYSTEM """a\x01\x0b"""\n', [("system", "a", 2, "")]),  # control characters drop
        ('SYSTEM \t"""a\tb"""\t\n', [("system", "a\tb", 2, "")]),
        ('SYSTEM a\r\rLICENSE "\r"\n', [("system", "a", 2, ""), ("license", "\r", 4, "")]),
        ('SYSTEM """a\r\n\r\nb"""', [("system", "a\n\nb", 2, "")]),
        (
            'MESSAGE user """hi\n  there """ \nPARAMETER stop "\\n"\n',
            [("message", "hi\n  there ", 2, "user"), ("stop", "\\n", 4, "")],
        ),
    ],
)
def test_tricky_quoting_parses_as_before(
    text: str, expected: list[tuple[str, str, int, str]]
) -> None:
    assert _values("FROM x\n" + text) == expected


@pytest.mark.parametrize("text", ['SYSTEM "\n', 'SYSTEM """"\n"', '\nSYSTEM """\n\n'])
def test_an_unclosed_quote_is_an_error_naming_its_line(text: str) -> None:
    with pytest.raises(ModelfileError, match=r"^\(line [23]\): unexpected EOF: unterminated"):
        parse_modelfile("FROM x\n" + text)


@pytest.mark.parametrize("name", sorted(k for k, v in PARAMETER_TYPES.items() if v == "int"))
def test_an_integer_parameter_of_thousands_of_digits_is_a_400(name: str) -> None:
    modelfile = f"FROM x\nPARAMETER {name} {'9' * 5000}\n"
    with pytest.raises(ModelfileError, match=f'parameter "{name}" is out of range') as info:
        prepare({"modelfile": modelfile})
    assert isinstance(info.value, InvalidRequestError)
    assert info.value.status == 400


def test_leading_zeros_do_not_count_as_digits() -> None:
    modelfile = f"FROM x\nPARAMETER num_ctx {'0' * 5000}4096\nPARAMETER seed -{'0' * 5000}7\n"
    assert prepare({"modelfile": modelfile}).parameters == {"num_ctx": 4096, "seed": -7}
