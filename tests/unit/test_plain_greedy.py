"""Which requests the runner samples with a plain argmax, and which keep llama.cpp's chain."""

from __future__ import annotations

import pytest

from proto import Sampling
from runner.engine import BadRequestError
from runner.sampling import MAX_GRAMMAR_NESTING, check_nesting, plain_greedy


@pytest.mark.parametrize(
    ("sampling", "grammar", "plain"),
    [
        (Sampling(temperature=0), "", True),
        (Sampling(temperature=-1), "", True),
        (Sampling(temperature=0, repeat_penalty=1.2, repeat_last_n=0), "", True),  # no window
        (Sampling(temperature=0, top_k=1, top_p=0.5, min_p=0.2), "", True),  # moot at 0
        (Sampling(temperature=0, repeat_penalty=1.2), "", False),
        (Sampling(temperature=0, repeat_penalty=0.9, repeat_last_n=-1), "", False),
        (Sampling(temperature=0, frequency_penalty=0.3), "", False),
        (Sampling(temperature=0, presence_penalty=-0.3), "", False),
        (Sampling(temperature=0), 'root ::= "yes" | "no"', False),
        (Sampling(temperature=0.7), "", False),
        (Sampling(), "", False),
    ],
)
def test_only_unconstrained_unpenalised_greedy_is_a_plain_argmax(
    sampling: Sampling, grammar: str, plain: bool
) -> None:
    assert plain_greedy(sampling, grammar) is plain


def test_a_grammar_nested_past_the_limit_is_a_bad_request_and_literals_do_not_count() -> None:
    deep = MAX_GRAMMAR_NESTING + 1
    check_nesting("root ::= " + "(" * MAX_GRAMMAR_NESTING + '"a"' + ")" * MAX_GRAMMAR_NESTING)
    with pytest.raises(BadRequestError, match=f"nests {deep} groups deep"):
        check_nesting("root ::= " + "(" * deep + '"a"' + ")" * deep)
    quoted = '"' + "(" * deep + '"'
    check_nesting(f"root ::= {quoted} [(]* # {'(' * deep}\n")  # in a string, a class, a comment
