"""Final-answer extraction and equivalence (`criticrm.correction.answers`), on hand-made cases and real texts:
responses of dev_sections.jsonl and outputs of the default model, each with its answer read by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from criticrm.correction.answers import (
    boxed_answers,
    equivalent,
    extract_answer,
    normalize,
    parse_choices,
    split_items,
    to_number,
)

FIXTURES = Path(__file__).parent / "fixtures"
CHOICES = {"A": "air quality", "B": "plant diversity", "C": "solar radiation", "D": "thermal pollution"}


@pytest.mark.parametrize(("text", "expected"), [
    ("so the total is $\\boxed{147}$ minutes.", "147"),
    ("\\boxed{\\frac{m \\pm \\sqrt{m^2 + 4}}{2}}", "\\frac{m \\pm \\sqrt{m^2 + 4}}{2}"),  # nested braces
    ("first \\boxed{1}, then corrected: \\boxed{2}", "2"),  # the last one written
    ("\\fbox{42}", "42"),
    ("The answer is 350.", "350"),
    ("The answer is 350. The vendor saves 350 dollars. The final answer is 350.", "350"),
    ("Final answer: 17", "17"),
    ("Final answer: **12**", "12"),
    ("Answer: -3.5", "-3.5"),
    ("The final answer is: $\\boxed{300}$", "300"),
    ("The answer is $(-1,-9),(4+2\\sqrt{2},8)$.", "(-1,-9),(4+2\\sqrt{2},8)"),
    ("The correct answer is:\n\n7 apples", "7 apples"),  # the line after an empty marker
    ("\\boxed{5} was wrong. Final answer: 6", "6"),  # the marker written last wins
    ("Therefore, Kelly must read a total of 105 minutes in total.", "105"),  # fallback: the last number
    ("She spends $43.00 on dry-cleaning in 5 weeks.", "43.00"),  # the number stated as the result
    ("It costs 1,250 dollars", "1,250"),
    ("The temperature drops to -7 degrees", "-7"),
    ("No numbers here at all.", None),
    ("\\boxed{unclosed", None),
])
def test_extracts_the_final_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("The answer is (C) solar radiation.", "C"),
    ("Thus, the correct answer is \\(\\boxed{A}\\).", "A"),
    ("The final answer is: $\\boxed{(A)}$", "A"),
    ("Final answer: B", "B"),
    ("Final answer: D.", "D"),
    ("Answer: \\text{C}", "C"),
    ("The answer is solar radiation.", "C"),  # an option's own text
    ("I would pick option B here.", "B"),  # fallback: the last option named
    ("Between (A) and (D), (D) fits best.", "D"),
    ("B\n\nThe correct answer is:\n\nB\n\nThe correct answer is:\n\nD", "D"),
    ("It is caused by the sun.", None),
    ("The answer is a gene for dimples.", "a gene for dimples"),  # the article "a" is no option
    ("The correct answer is (F).", "(F)"),  # no option of this problem: kept, agrees with no letter
    ("The loop prints it.\nsolar radiation", "C"),  # a last line that is an option's own text
])
def test_multiple_choice_answers_are_letters(text, expected):
    assert extract_answer(text, CHOICES) == expected


def test_multiple_choice_options_are_read_from_the_prompt():
    prompt = "Which factor?\nAnswer Choices: (A) air quality (B) plant diversity (C) solar radiation (D) thermal pollution"
    assert parse_choices(prompt) == CHOICES
    assert parse_choices("What is 2 + 2?") == {}


@pytest.mark.parametrize(("a", "b"), [
    ("1/2", "0.5"), ("\\frac{1}{2}", "0.5"), ("\\dfrac12", "1/2"), ("\\tfrac{1}{2}", "\\frac12"),
    ("-\\frac{3}{4}", "-0.75"), ("\\frac{-3}{4}", "-0.75"), ("0.33", "1/3"), ("0.3333", "\\frac{1}{3}"),
    ("1,000", "1000"), ("350 dollars", "350"), ("\\$350", "350"), ("0.7\\text{ dollars}", "0.7"),
    ("50%", "0.5"), ("50\\%", "50"), ("1.45e-5", "1.45 \\times 10^{-5}"), ("10^{3}", "1000"), ("3.0", "3"),
    ("-2", "-2.0"), ("x = 5", "5"), ("X_{d}=125-1.25 P", "X_d = 125 - 1.25P"), ("\\left(2,3\\right)", "(2, 3)"),
    ("\\text{Yes}", "yes"), ("(-1,-9),(4+2\\sqrt{2},8)", "(4+2\\sqrt{2},8), (-1,-9)"), ("2, 3, 4", "4,3,2"),
    ("90^\\circ", "90"), ("$\\sqrt{2}$", "\\sqrt{2}"), ("C", "C"),
])
def test_equivalent_answers(a, b):
    assert equivalent(a, b) and equivalent(b, a)


@pytest.mark.parametrize(("a", "b"), [
    ("3.98", "3.9"), ("0.7", "0.74"), ("2x", "2"), ("210^{3}", "210000"), ("-2", "2"), ("1/2", "2"),
    ("\\sqrt{8}", "2\\sqrt{2}"),  # no symbolic algebra: a false "wrong", never a false "right"
    ("(1,9),(2,16)", "(1,9),(2,16),(-4,-56)"), ("A", "B"), ("12", None), (None, None),
])
def test_different_answers(a, b):
    assert not equivalent(a, b) and not equivalent(b, a)


def test_normalisation_and_numbers():
    assert normalize("$\\left( \\dfrac{1}{2} \\right)$.") == "( \\frac{1}{2} )"
    assert normalize("\\text{ 5 } \\, \\mathrm{cm}") == "5 cm"
    assert to_number("-1,234.5") == (-1234.5, False)
    assert to_number("12.5\\%") == (12.5, True)
    assert to_number("\\sqrt{2}") is None
    assert boxed_answers("a \\boxed{x^{2}} b \\boxed{\\frac{1}{2}}") == [(2, "x^{2}"), (18, "\\frac{1}{2}")]
    assert split_items("(1, 2), \\{3, 4\\}, 5") == ["(1, 2)", "\\{3, 4\\}", "5"]


def test_real_responses_of_dev_sections():
    """Reference and rejected answers of 20 real math/science pairs, read by hand (fixture note)."""
    pairs = json.loads((FIXTURES / "answers_dev_sections.json").read_text())["pairs"]
    assert len(pairs) == 20
    for pair in pairs:
        choices = parse_choices(pair["prompt"]) or None
        assert (choices is not None) == pair["subset"].startswith("sci-"), pair["id"]
        reference, rejected = extract_answer(pair["chosen"], choices), extract_answer(pair["rejected"], choices)
        assert equivalent(reference, pair["chosen_answer"]), (pair["id"], reference)
        assert equivalent(rejected, pair["rejected_answer"]), (pair["id"], rejected)
        assert equivalent(rejected, reference) == pair["rejected_agrees"], pair["id"]


def test_real_outputs_of_the_default_model():
    """Revisions and solutions the default model wrote to the prompts of criticrm.prompts.revise (fixture note):
    the answer each states, read by hand (None: it states none)."""
    outputs = json.loads((FIXTURES / "revision_outputs.json").read_text())["outputs"]
    assert len(outputs) >= 20
    for item in outputs:
        choices = parse_choices(item["prompt"]) or None
        answer = extract_answer(item["output"], choices)
        if item["expected"] is None:
            assert answer is None, (item["id"], item["condition"], answer)
        else:
            assert equivalent(answer, item["expected"]), (item["id"], item["condition"], answer)
