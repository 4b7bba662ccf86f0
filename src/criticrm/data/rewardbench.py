"""Evaluation examples: RewardBench-format pairs, and RewardBench 2's lists of responses.

A plain row (prompt / chosen / rejected as strings or messages, in any format the data layer reads) is
one chosen and one rejected response. A RewardBench 2 row gives `chosen` and/or `rejected` as lists of
response strings (best-of-N: one or more correct answers among several). Both become an EvalExample
with lists, so one scorer and one metric serve both.
"""

from __future__ import annotations

from dataclasses import dataclass

from criticrm.data.readers import (
    DataConfig,
    MessageRenderer,
    Problem,
    load_records,
    normalise_row,
    render_transcript,
)
from criticrm.data.schema import PreferencePair
from criticrm.data.text import is_blank


@dataclass(frozen=True)
class EvalExample:
    id: str
    prompt: str
    chosen: list[str]
    rejected: list[str]
    subset: str
    section: str | None = None
    domain: str | None = None

    @property
    def is_pair(self) -> bool:
        return len(self.chosen) == 1 and len(self.rejected) == 1

    def as_pair(self) -> PreferencePair:
        """The plain pair (judges compare exactly two responses)."""
        return PreferencePair(self.id, self.prompt, self.chosen[0], self.rejected[0], subset=self.subset,
                              domain=self.domain, section=self.section)


def load_eval_examples(config: DataConfig, render_messages: MessageRenderer = render_transcript) -> list[EvalExample]:
    """Read and validate evaluation rows (problems are reported with file, line and field)."""
    return load_records(config, lambda row, location: _example(row, location, config, render_messages)).pairs


def is_ties_subset(name: str) -> bool:
    """RewardBench 2's Ties subset, found by name as upstream does (`subset.lower() == "ties"`)."""
    return name.lower() == "ties"


def ties_id(example_id: str) -> tuple[str, int]:
    """("ref" | "tied", prompt number) of a Ties example id `ref:N` / `tied:N`."""
    kind, _, number = example_id.partition(":")
    if kind not in ("ref", "tied") or not number.isdigit():
        raise ValueError(f"a Ties example id is ref:N or tied:N (RewardBench 2's ids), got {example_id!r}")
    return kind, int(number)


def _example(row: dict, location: str, config: DataConfig, render_messages: MessageRenderer) -> EvalExample | list[Problem]:
    lists = {}
    for column in (config.chosen_field, config.rejected_field):
        value = row.get(column)
        if isinstance(value, list) and not value:
            return [Problem(location, column, "expected a response (a string, messages, or a list of strings), got []")]
        if _is_response_list(value):
            if any(is_blank(text) for text in value):
                return [Problem(location, column, "expected non-empty response strings in the list")]
            lists[column] = value
    if lists:  # RewardBench 2: validate the rest of the row on its first responses
        probe = dict(row) | {column: values[0] for column, values in lists.items()}
        pair = normalise_row(probe, location, config, render_messages)
        if isinstance(pair, list):
            return pair
        chosen = lists.get(config.chosen_field, [pair.chosen])
        rejected = lists.get(config.rejected_field, [pair.rejected])
        example = EvalExample(pair.id, pair.prompt, list(chosen), list(rejected), pair.subset or "all",
                              pair.section, pair.domain)
    else:
        pair = normalise_row(row, location, config, render_messages)
        if isinstance(pair, list):
            return pair
        example = EvalExample(pair.id, pair.prompt, [pair.chosen], [pair.rejected], pair.subset or "all",
                              pair.section, pair.domain)
    return _ties_problems(example, location, config) or example


def _ties_problems(example: EvalExample, location: str, config: DataConfig) -> list[Problem]:
    """RewardBench 2's Ties subset is scored by prompt (`metrics.ties_score`): each row needs its upstream id,
    and a tied row the several correct answers it is about. Checked here, before any model is loaded."""
    if not is_ties_subset(example.subset):
        return []
    try:
        kind, _ = ties_id(example.id)
    except ValueError as error:
        return [Problem(location, config.id_field, str(error))]
    if kind == "tied" and len(example.chosen) < 2:
        return [Problem(location, config.chosen_field, "a tied row of the Ties subset lists several correct "
                                                       f"answers, got {len(example.chosen)}")]
    return []


def _is_response_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
