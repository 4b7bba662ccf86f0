"""Score extraction: the written score and the probability-weighted score."""

from __future__ import annotations

import pytest

from criticrm.models.backbone import load_tokenizer
from criticrm.prompts.scores import ScoreTokens, expected_score, parse_score, strip_score_line

# Verbatim outputs of the default model (SmolLM2-135M-Instruct, judge template, sampled at 0.8).
REAL_OUTPUTS = [
    ("The response is not entirely accurate. It seems to be asking a different question than what the "
     "conversation is about.\n\nScore: 2/10", 2.0),
    ("The request is not applicable to cooking food out of a dumpster, but rather to managing a waste "
     "disposal unit.\nScore: 10/10", 10.0),
    ("The response asks about a situation where something should not be eaten.\nScore: 11/10", 10.0),
    ("Frustration is understandable, but let's talk about what is really causing your anger. That's a "
     "valid reason, but I'd like to explore the reasons you're so upset with them.", None),
]


@pytest.mark.parametrize(("text", "expected"), REAL_OUTPUTS)
def test_parse_score_on_real_outputs(text, expected):
    assert parse_score(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Good.\nScore: 7", 7.0),
    ("score = 4/10", 4.0),
    ("Score: **8**/10", 8.0),
    ("Score: 4/5", 8.0),  # another scale is rescaled
    ("Score: 0/10", 1.0),  # clamped to 1..10
    ("Score: 3/10 at first, but on reflection\nScore: 6/10", 6.0),  # the last one counts
    ("It would score well.", None),  # no "Score:" marker: nothing is guessed
])
def test_parse_score_formats(text, expected):
    assert parse_score(text) == expected


def test_strip_score_line_keeps_the_body():
    assert strip_score_line("Fine answer.\nScore: 8/10") == "Fine answer."
    assert strip_score_line("No score here.") == "No score here."


def test_score_tokens_of_the_default_tokenizer_split_ten():
    tokens = ScoreTokens.from_tokenizer(load_tokenizer(None), "Score: ")
    tokenizer = load_tokenizer(None)
    assert [tokenizer.decode([t]) for t in tokens.score_ids] == [str(k) for k in range(1, 10)] + ["1"]
    assert tokens.split_ten and tokenizer.decode([tokens.ten_second_id]) == "0"
    assert len(tokens.digit_ids) == 10


def test_expected_score_math():
    one_hot_seven = [0.0] * 10
    one_hot_seven[6] = 0.5
    assert expected_score(one_hot_seven) == (7.0, 0.5)
    # "1" then "0" with probability 0.75 -> P(10) = 0.75 p1, P(1) = 0.25 p1.
    first = [1.0] + [0.0] * 9
    score, mass = expected_score(first, after_one_zero=0.75, after_one_digit=0.75)
    assert score == pytest.approx(0.25 * 1 + 0.75 * 10) and mass == pytest.approx(1.0)
    with pytest.raises(ValueError):
        expected_score([0.0] * 10)
