"""Faithfulness of a Critic-RM's reward to its critique: does r(x, y, c) move when c changes?

A Critic-RM claims that its critique explains its reward. If the reward head learnt to read (x, y) and
ignore the critique, the critique explains nothing: changing it leaves the reward where it was. So each
pair is scored with the model's own greedy critiques c+ (of the chosen response y+) and c- (of y-), and
again with the critique replaced:

- `own`: r(x, y+, c+) and r(x, y-, c-), the reference;
- `empty`: an empty critique, r(x, y, "");
- `swapped`: the other response's critique, r(x, y+, c-) and r(x, y-, c+);
- `opposite`: a critique of the opposite verdict. A verdict is the side of the scale midpoint (5.5) of the
  score a critique writes. Of `samples` critiques sampled at T = 0.8 the first, in sampling order, whose
  written score lies on the other side from the greedy critique's is used ("sampled"); when none does,
  the greedy critique with its last written score k replaced by 11 - k ("replaced"); when the greedy
  critique wrote no score (or exactly 5.5) there is no verdict to oppose and the response has no reward
  under this condition ("none"). Which source each response used is counted.

Every reward, the own critique's included, is read by the same forward pass in the training layout
(`RewardScorer.rewards_of`), so a difference is the critique's doing and not the reading path's.

Reported per condition: the mean |Δreward| from `own` over responses, how often the pair's preference
(the sign of r+ - r-) differs from its `own` preference (a flip), and the accuracy (a tied pair is wrong,
as in the main table) with the overall score under the main weighting; for `opposite` also how often the
reward moved the way the new verdict points (the sign of Δreward equals the sign of the written-score
change). A reward that ignores its critique shows ~0 movement and ~0 flips.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace

from criticrm.data.rewardbench import EvalExample
from criticrm.errors import ConfigError
from criticrm.evaluation.metrics import ExampleResult, credit, score_table, tally
from criticrm.inference.scorer import SAMPLED_TEMPERATURE, RewardScorer, ScoreItem
from criticrm.prompts.scores import parse_score, with_score

CONDITIONS = ("own", "empty", "swapped", "opposite")
OPPOSITE_SOURCES = ("sampled", "replaced", "none")
DEFAULT_SAMPLES = 4
MIDPOINT = 5.5  # a written score above it is a favourable verdict, below it an unfavourable one
DETAILS_KEY = "faithfulness"  # where each example's record lives in ExampleResult.details


def check_examples(examples: Sequence[EvalExample]) -> None:
    """Faithfulness swaps the critiques of one chosen and one rejected response: pairs only."""
    lists = [e.id for e in examples if not e.is_pair]
    if lists:
        raise ConfigError(f"faithfulness swaps the critiques of one chosen and one rejected response; {len(lists)} "
                          f"example(s) have lists (first: {lists[0]!r}); evaluate them without --eval.faithfulness")


def check_scorer(scorer: RewardScorer) -> None:
    """Only a critic-mode model reads a critique."""
    if scorer.mode != "critic":
        raise ConfigError(f"faithfulness measures how a Critic-RM's reward follows its critique; "
                          f"{scorer.model_path or 'this model'} is a standard-mode reward model and reads no critique")


def opposite_critique(greedy: str, sampled: Sequence[str]) -> tuple[str | None, str]:
    """(critique of the opposite verdict, its source: "sampled", "replaced" or "none"); see the module docstring."""
    score = parse_score(greedy)
    if score is None or score == MIDPOINT:
        return None, "none"
    for text in sampled:
        other = parse_score(text)
        if other is not None and other != MIDPOINT and (other > MIDPOINT) != (score > MIDPOINT):
            return text, "sampled"
    return with_score(greedy, 11 - score), "replaced"


def condition_critiques(greedy: Sequence[str], opposite: Sequence[str | None]) -> dict[str, list[str | None]]:
    """The critique each response is read with under each condition; responses come in pairs (chosen,
    rejected), and None marks a response without one."""
    if len(greedy) % 2 or len(opposite) != len(greedy):
        raise ValueError("one greedy and one opposite critique per response, two responses per pair")
    return {"own": list(greedy), "empty": [""] * len(greedy), "swapped": [greedy[i ^ 1] for i in range(len(greedy))],
            "opposite": list(opposite)}


def measure_faithfulness(examples: Sequence[EvalExample], scorer: RewardScorer, samples: int = DEFAULT_SAMPLES,
                         on_progress: Callable[[int], None] | None = None) -> list[dict]:
    """One record per example (for `ExampleResult.details[DETAILS_KEY]`): the critiques, their written
    scores, the opposite critiques' sources and the rewards under every condition, [chosen, rejected]."""
    check_scorer(scorer)
    if samples < 1:
        raise ConfigError(f"faithfulness samples must be at least 1, got {samples}")
    check_examples(examples)
    items = [ScoreItem(e.prompt, response, e.domain, e.subset) for e in examples for response in (e.chosen[0], e.rejected[0])]
    greedy = [r.critiques[0].critique for r in scorer.score(items, num_critiques=1, temperature=0.0,
                                                             on_progress=on_progress)]
    sampled = scorer.score(items, num_critiques=samples, temperature=SAMPLED_TEMPERATURE, on_progress=on_progress)
    opposite = [opposite_critique(g, [c.critique for c in s.critiques]) for g, s in zip(greedy, sampled, strict=True)]
    critiques = condition_critiques(greedy, [text for text, _ in opposite])
    wanted = [(condition, i) for condition in CONDITIONS for i in range(len(items)) if critiques[condition][i] is not None]
    read = scorer.rewards_of([items[i] for _, i in wanted], [critiques[c][i] for c, i in wanted])
    rewards = {condition: [math.nan] * len(items) for condition in CONDITIONS}
    for (condition, i), reward in zip(wanted, read, strict=True):
        rewards[condition][i] = reward
    records = []
    for index in range(len(examples)):
        pair = slice(2 * index, 2 * index + 2)
        records.append({
            "rewards": {condition: values[pair] for condition, values in rewards.items()},
            "critiques": {"own": greedy[pair], "opposite": critiques["opposite"][pair]},
            "written": {"own": [parse_score(text) for text in greedy[pair]],
                        "opposite": [None if text is None else parse_score(text) for text in critiques["opposite"][pair]]},
            "opposite_source": [source for _, source in opposite[pair]],
        })
    return records


def faithfulness_summary(results: Sequence[ExampleResult]) -> dict | None:
    """The report's numbers (see the module docstring); None when no result has a faithfulness record."""
    measured = [(r, r.details[DETAILS_KEY]) for r in results if r.details.get(DETAILS_KEY)]
    if not measured:
        return None
    own = {r.id: _floats(record["rewards"]["own"]) for r, record in measured}
    conditions = {}
    for condition in CONDITIONS:
        pairs = [(r, _floats(record["rewards"][condition]), record) for r, record in measured]
        pairs = [(r, values, record) for r, values, record in pairs
                 if all(map(math.isfinite, values)) and all(map(math.isfinite, own[r.id]))]
        conditions[condition] = _condition(condition, pairs, own)
    sources = Counter(source for _, record in measured for source in record["opposite_source"])
    return {"n": len(measured), "missing": len(results) - len(measured), "conditions": conditions,
            "opposite_source": {source: sources.get(source, 0) for source in OPPOSITE_SOURCES}}


def _condition(condition: str, pairs: list[tuple[ExampleResult, list[float], dict]], own: dict[str, list[float]]) -> dict:
    if not pairs:
        return {"n": 0}
    deltas = [value - base for r, values, _ in pairs for value, base in zip(values, own[r.id], strict=True)]
    flips = [_sign(values[0] - values[1]) != _sign(own[r.id][0] - own[r.id][1]) for r, values, _ in pairs]
    scored = [replace(r, chosen=values[:1], rejected=values[1:]) for r, values, _ in pairs]
    credits = [credit(r.chosen, r.rejected) for r in scored]
    row = {"n": len(pairs), "mean_abs_delta": math.fsum(map(abs, deltas)) / len(deltas),
           "mean_delta": math.fsum(deltas) / len(deltas), "flips": sum(flips) / len(flips),
           "accuracy": tally(credits)["accuracy"], "overall": score_table(scored, credits).overall}
    if condition == "opposite":
        changes = [_sign(new - old) for _, _, record in pairs
                   for new, old in zip(record["written"]["opposite"], record["written"]["own"], strict=True)]
        row["moved_with_verdict"] = sum(_sign(d) == c for d, c in zip(deltas, changes, strict=True)) / len(deltas)
    return row


def _floats(values: list) -> list[float]:
    """Rewards as stored (a NaN is null once written to JSON)."""
    return [math.nan if v is None else float(v) for v in values]


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)
