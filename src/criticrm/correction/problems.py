"""The problems a correction run can check: pairs with a reference answer and a wrong rejected answer.

The reference answer is read from the pair's chosen response (the correct one in math / science sets
such as RealCritic's). A pair is skipped, and counted, when its chosen response states no answer that
can be read, or when its rejected response states the reference answer after all (a right answer with
flawed reasoning: revising it cannot show whether a critique fixes a wrong answer).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from criticrm.correction.answers import equivalent, extract_answer, parse_choices
from criticrm.data.rewardbench import EvalExample
from criticrm.errors import ConfigError

STARTS = ("rejected", "chosen")  # Δ↑ runs start from the wrong solution, Δ↓ runs from the right one


@dataclass(frozen=True)
class Problem:
    id: str
    prompt: str
    subset: str
    chosen: str
    rejected: str
    reference: str  # the final answer of the chosen response
    choices: dict[str, str] = field(default_factory=dict)  # letter -> option text of a multiple-choice problem
    domain: str | None = None
    section: str | None = None

    def solution(self, start: str) -> str:
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {start!r}")
        return self.chosen if start == "chosen" else self.rejected

    def answer_of(self, text: str) -> str | None:
        return extract_answer(text, self.choices or None)

    def is_correct(self, answer: str | None) -> bool:
        return equivalent(answer, self.reference)


def subset_prefixes(text: str) -> tuple[str, ...]:
    """"math-,sci-" -> ("math-", "sci-"); an empty text keeps every subset."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def select_problems(examples: list[EvalExample], prefixes: tuple[str, ...]) -> tuple[list[Problem], dict[str, int]]:
    """The checkable problems among `examples` whose subset starts with one of `prefixes`, and what was skipped.

    Raises ConfigError when none is left, naming the subsets the data has.
    """
    skipped: Counter[str] = Counter()
    problems = []
    for example in examples:
        if prefixes and not example.subset.startswith(prefixes):
            skipped["other_subset"] += 1
            continue
        if not example.is_pair:
            skipped["not_a_pair"] += 1
            continue
        choices = parse_choices(example.prompt)
        reference = extract_answer(example.chosen[0], choices or None)
        if reference is None:
            skipped["no_reference_answer"] += 1
            continue
        if equivalent(extract_answer(example.rejected[0], choices or None), reference):
            skipped["rejected_states_reference"] += 1
            continue
        problems.append(Problem(example.id, example.prompt, example.subset, example.chosen[0], example.rejected[0],
                                reference, choices, example.domain, example.section))
    if not problems:
        subsets = sorted({example.subset for example in examples})
        wanted = ", ".join(prefixes) or "any"
        raise ConfigError(f"no problem to correct: of {len(examples)} pair(s) none has a subset starting with "
                          f"{wanted} and a readable reference answer in its chosen response ({dict(skipped)}); "
                          f"the data's subsets: {', '.join(subsets[:20])}")
    return problems, dict(skipped)
