"""Evaluate a trained reward model (critic or standard mode) on evaluation examples.

Every response of every example is scored once. For m-scaling the scorer samples `samples` critiques
per response in one run; the reward at m is the mean of the first m of them, so the accuracies at
m = 1, 2, 4, 8, 16 come from the same critiques and differ only in how many are averaged (and the inference-
scaling methods of `scaling.py` only in how they use them).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from criticrm.data.rewardbench import EvalExample
from criticrm.evaluation.metrics import ExampleResult
from criticrm.inference.scorer import RewardScorer, ScoreItem, ScoreResult, bradley_terry


def evaluate_reward_model(examples: list[EvalExample], scorer: RewardScorer, num_critiques: int = 1,
                          samples: int = 0, temperature: float | None = None,
                          on_progress: Callable[[int], None] | None = None) -> list[ExampleResult]:
    """ExampleResults whose scores are rewards averaged over the first `num_critiques` critiques.

    `samples` > num_critiques samples that many critiques per response (for the m-scaling curve).
    """
    generated = max(num_critiques, samples)
    items = [ScoreItem(example.prompt, response, example.domain, example.subset)
             for example in examples for response in (*example.chosen, *example.rejected)]
    scored = iter(scorer.score(items, num_critiques=generated, temperature=temperature, on_progress=on_progress))
    results = []
    for example in examples:
        chosen = [next(scored) for _ in example.chosen]
        rejected = [next(scored) for _ in example.rejected]
        results.append(_result(example, chosen, rejected, num_critiques, critic=scorer.mode == "critic"))
    return results


def _result(example: EvalExample, chosen: list[ScoreResult], rejected: list[ScoreResult], m: int,
            critic: bool) -> ExampleResult:
    chosen_scores = [_reward_at(result, m) for result in chosen]
    rejected_scores = [_reward_at(result, m) for result in rejected]
    probability = bradley_terry(chosen_scores[0], rejected_scores[0]) if example.is_pair else None
    if probability is not None and math.isnan(probability):
        probability = None
    return ExampleResult(
        id=example.id, subset=example.subset, section=example.section,
        chosen=chosen_scores, rejected=rejected_scores,
        chosen_chars=[len(text) for text in example.chosen], rejected_chars=[len(text) for text in example.rejected],
        probability=probability,
        chosen_samples=[[c.reward for c in result.critiques] for result in chosen] if critic else None,
        rejected_samples=[[c.reward for c in result.critiques] for result in rejected] if critic else None,
        details={"chosen": [result.to_dict() for result in chosen], "rejected": [result.to_dict() for result in rejected]},
    )


def _reward_at(result: ScoreResult, m: int) -> float:
    """The mean reward of the first m critiques (the single reward in standard mode)."""
    if not result.critiques:
        return result.reward
    rewards = [c.reward for c in result.critiques[:m] if not math.isnan(c.reward)]
    return sum(rewards) / len(rewards) if rewards else math.nan
