"""Inference scaling (`criticrm.evaluation.scaling`) on hand-made results: known rewards, written scores and
token counts give known accuracies, votes, ties, adaptive stopping points and token totals."""

from __future__ import annotations

import math

import pytest

from criticrm.evaluation.metrics import Credit, ExampleResult, m_scaling
from criticrm.evaluation.scaling import (
    Critique,
    adaptive_count,
    critiques_of,
    inference_scaling,
    vote,
    vote_credit,
    weighted_vote,
)


def critique_text(score: float | None) -> str:
    return "Some words." if score is None else f"Some words.\nScore: {score:g}/10"


def result(example_id: str, section: str, chosen: list[tuple[float, float | None, int]],
           rejected: list[tuple[float, float | None, int]], tokens: bool = True) -> ExampleResult:
    """A pair as `evaluate_reward_model` records it; each critique is (reward, written score, tokens)."""
    def response(critiques):
        return {"reward": sum(c[0] for c in critiques[:1]), "spread": 0.0,
                "critiques": [{"critique": critique_text(score), "reward": reward, "finish_reason": "stop",
                               **({"tokens": count} if tokens else {})} for reward, score, count in critiques]}

    return ExampleResult(id=example_id, subset=f"{section}-subset", section=section, chosen=[chosen[0][0]],
                         rejected=[rejected[0][0]], chosen_chars=[10], rejected_chars=[10],
                         chosen_samples=[[c[0] for c in chosen]], rejected_samples=[[c[0] for c in rejected]],
                         details={"chosen": [response(chosen)], "rejected": [response(rejected)]})


# Example "a": the mean reward ties from m = 2 on, the written scores keep the chosen response ahead.
A = result("a", "chat", chosen=[(2.0, 8, 10), (0.0, 3, 20), (1.0, None, 30), (1.0, 6, 40)],
           rejected=[(1.0, 5, 1), (1.0, 5, 2), (1.0, 5, 3), (1.0, 7, 4)])
# Example "b": the rewards prefer the chosen response, every written score is 5: the votes tie.
B = result("b", "safety", chosen=[(3.0, 5, 5), (3.0, 5, 5), (3.0, 5, 5), (3.0, 5, 5)],
           rejected=[(0.0, 5, 5), (0.0, 5, 5), (0.0, 5, 5), (0.0, 5, 5)])


def rows_of(summary: dict, method: str) -> dict[int, dict]:
    return {row["m"]: row for row in summary["rows"] if row["method"] == method}


def test_mean_rows_are_the_m_scaling_rows_with_tokens_and_sections():
    summary = inference_scaling([A, B])
    assert summary["m_values"] == [1, 2, 4]
    mean = rows_of(summary, "mean")
    for old in m_scaling([A, B]):  # the paper's method is the existing m-scaling curve
        assert {key: mean[old["m"]][key] for key in old} == old
    assert [mean[m]["accuracy"] for m in (1, 2, 4)] == [1.0, 0.5, 0.5]  # "a" ties from m = 2: wrong
    assert [mean[m]["ties"] for m in (1, 2, 4)] == [0, 1, 1]
    assert mean[2]["sections"] == {"chat": 0.0, "safety": 1.0}
    assert mean[1]["tokens"] == 10 + 1 + 5 + 5 and mean[1]["tokens_per_response"] == pytest.approx(21 / 4)
    assert mean[4]["tokens"] == 100 + 10 + 20 + 20 and mean[4]["critiques_per_response"] == 4.0


def test_votes_use_the_written_scores_and_count_a_tie_as_half():
    summary = inference_scaling([A, B])
    votes, weighted = rows_of(summary, "vote"), rows_of(summary, "weighted")
    # "a": 8 > 5; (8 + 3) / 2 = 5.5 > 5; (8 + 3 + 6) / 3 > (5 + 5 + 5 + 7) / 4 (the unparsed one abstains).
    # "b": 5 = 5 at every m: half credit, a tie.
    for m in (1, 2, 4):
        assert (votes[m]["accuracy"], votes[m]["ties"], votes[m]["invalid"]) == (0.75, 1, 0)
        assert votes[m]["sections"] == {"chat": 1.0, "safety": 0.5}
    assert weighted[2]["accuracy"] == 0.75
    chosen = critiques_of(A)[0]
    assert vote(chosen) == pytest.approx(17 / 3)
    # softmax(2, 0) weights on the scores 8 and 3; the third critique wrote no score and is left out.
    w = math.exp(2) / (math.exp(2) + 1)
    assert weighted_vote(chosen[:3]) == pytest.approx(8 * w + 3 * (1 - w))
    assert math.isnan(weighted_vote([Critique(1.0, None, 3)])) and math.isnan(vote([Critique(1.0, None, 3)]))


def test_vote_credit_ties_and_abstentions():
    assert vote_credit([5.0], [5.0]) == Credit(0.5, tie=True, invalid=False)
    assert vote_credit([6.0], [5.0]) == Credit(1.0, tie=False, invalid=False)
    assert vote_credit([7.0], [7.0, 3.0]) == Credit(0.5, tie=True, invalid=False)  # a list: j/k as ever
    assert vote_credit([7.0], [math.nan]) == Credit(0.5, tie=False, invalid=True)  # no vote: chance
    assert vote_credit([7.0], [1.0, 2.0, math.nan]) == Credit(0.25, tie=False, invalid=True)
    no_scores = result("c", "chat", chosen=[(1.0, None, 4)], rejected=[(0.0, 3, 4)])
    row = rows_of(inference_scaling([no_scores]), "vote")[1]
    assert (row["accuracy"], row["invalid"]) == (0.5, 1)


def test_adaptive_m_stops_once_the_rewards_agree():
    assert adaptive_count([2.0, 0.0, 1.0, 1.0], spread=0.5) == 4  # std 1, 0.82, 0.71: never below 0.5
    assert adaptive_count([2.0, 0.0, 1.0, 1.0], spread=0.9) == 3  # std(2, 0, 1) = 0.82
    assert adaptive_count([1.0, 1.0, 5.0], spread=0.5) == 2  # at least two, and two that agree suffice
    assert adaptive_count([math.nan, 1.0, 1.0], spread=0.5) == 3  # a NaN reward is no evidence of agreement
    assert adaptive_count([4.0], spread=0.5) == 1  # fewer than the minimum: all there is

    adaptive = rows_of(inference_scaling([A, B], adaptive_spread=0.9), "adaptive")[4]
    # "a": chosen reads 3 (mean 1 = the rejected response's 1 after 2: a tie, wrong); "b": 2 and 2.
    assert adaptive["critiques_per_response"] == pytest.approx((3 + 2 + 2 + 2) / 4)
    assert adaptive["tokens"] == (10 + 20 + 30) + (1 + 2) + 10 + 10
    assert (adaptive["accuracy"], adaptive["ties"], adaptive["spread"]) == (0.5, 1, 0.9)
    tight = rows_of(inference_scaling([A, B], adaptive_spread=0.5), "adaptive")[4]
    assert tight["critiques_per_response"] == pytest.approx((4 + 2 + 2 + 2) / 4)


def test_without_token_counts_or_critiques():
    old = result("a", "chat", chosen=[(1.0, 6, 0), (1.0, 6, 0)], rejected=[(0.0, 2, 0), (0.0, 2, 0)], tokens=False)
    rows = inference_scaling([old])["rows"]
    assert all(row["tokens"] is None and row["tokens_per_response"] is None for row in rows)
    assert all(row["accuracy"] == 1.0 for row in rows)
    judge = ExampleResult(id="j", subset="s", section=None, chosen=[6.0], rejected=[2.0], chosen_chars=[1],
                          rejected_chars=[1], chosen_samples=[[6.0]], rejected_samples=[[2.0]],
                          details={"chosen": [{"critique": "x", "score": 6.0}], "rejected": [{"critique": "y"}]})
    assert inference_scaling([judge]) is None and inference_scaling([]) is None
    assert inference_scaling([A, judge]) is None
    with pytest.raises(ValueError, match="adaptive_spread must be above 0"):
        inference_scaling([A], adaptive_spread=0.0)
    broken = result("x", "chat", chosen=[(1.0, 6, 1)], rejected=[(0.0, 2, 1)])
    broken.chosen_samples = [[1.0, 2.0]]
    with pytest.raises(ValueError, match="example x: 2 sampled rewards but 1 critiques"):
        critiques_of(broken)
