"""Compute-aware inference scaling: accuracy against the critique tokens spent, for four ways of turning a
response's sampled critiques into its score.

An evaluation with `--eval.samples M` samples M critiques per response once (in order, at one temperature);
every method below reads the first m of those same critiques, so the methods differ only in how they use
them, and each row says what it spent: the generated tokens of the critiques it read.

- `mean` (the paper): the mean reward r(x, y, c_j) of the first m critiques. Credit as in the main table
  (`metrics.credit`: a tied pair is wrong).
- `vote`: the mean of the scores the first m critiques *wrote* ("Score: k/10", `prompts.scores.parse_score`),
  each critique one vote of k points: DeepSeek-GRM's voting, which sums the pointwise scores of k samples.
  Critiques with no written score abstain. The response with the higher vote wins; written scores are
  whole numbers, so ties are common and a tied pair counts 1/2 (a k-way tie for the top of a list j/k),
  the expected accuracy of breaking it at random. An example where some response got no written score at
  all counts at chance (the share of chosen responses) and is flagged invalid.
- `weighted`: the written scores again, averaged with weights softmax(r_j) over the response's critiques
  (those with a written score and a finite reward). The reward is a Bradley-Terry logit, so exp(r_j) is the
  strength the reward head gives (y, c_j): each critique's verdict counts in proportion to how much the
  head trusts the response under that critique, as reward-weighted voting weights each sample's answer by
  its reward. Ties and abstentions as for `vote`.
- `adaptive`: critiques are read one at a time, in sampling order, and reading stops once the rewards read
  so far agree: their standard deviation (population, as the scorer's spread) is below `spread`, with at
  least `ADAPTIVE_MIN` read, and at most all M. The score is the mean reward of those read; credit as for
  `mean`. Its row reports the mean number of critiques read per response and their tokens.

Each row: method, m (critiques available to it), critiques_per_response and tokens_per_response actually
read, tokens (all responses together), n / accuracy / ties / invalid, the overall score with the main
table's weighting, and each section's score. Tokens are None for dumps written before critiques recorded
their token counts.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from criticrm.evaluation.metrics import (
    M_VALUES,
    Credit,
    ExampleResult,
    credit,
    samples_available,
    score_table,
    tally,
)
from criticrm.prompts.scores import parse_score

DEFAULT_ADAPTIVE_SPREAD = 0.5  # reward units (Bradley-Terry logits): two critiques within 1 logit agree
ADAPTIVE_MIN = 2
METHODS = ("mean", "vote", "weighted", "adaptive")


@dataclass(frozen=True)
class Critique:
    """One sampled critique of one response, as the scaling methods read it."""

    reward: float
    written: float | None  # the score it ends with, None when it wrote none
    tokens: int | None  # tokens generated for it; None in dumps from before they were recorded


def critiques_of(result: ExampleResult) -> list[list[Critique]] | None:
    """Each response's critiques in sampling order (chosen responses first), from the result's samples
    (rewards) and details (texts, tokens); None when it holds no reward-model critiques (a judge, a
    standard-mode model)."""
    if result.chosen_samples is None or result.rejected_samples is None:
        return None
    responses = [*result.details.get("chosen", []), *result.details.get("rejected", [])]
    samples = [*result.chosen_samples, *result.rejected_samples]
    if len(responses) != len(samples) or not all(isinstance(r, dict) and "critiques" in r for r in responses):
        return None
    out = []
    for response, rewards in zip(responses, samples, strict=True):
        texts = response["critiques"]
        if len(texts) != len(rewards):
            raise ValueError(f"example {result.id}: {len(rewards)} sampled rewards but {len(texts)} critiques")
        out.append([Critique(reward, parse_score(item["critique"]), item.get("tokens"))
                    for reward, item in zip(rewards, texts, strict=True)])
    return out


def mean_reward(critiques: Sequence[Critique]) -> float:
    """The mean reward (NaN if any is NaN, as `metrics.m_scaling` averages)."""
    return math.fsum(c.reward for c in critiques) / len(critiques)


def vote(critiques: Sequence[Critique]) -> float:
    """The mean written score; NaN when no critique wrote one."""
    written = [c.written for c in critiques if c.written is not None]
    return math.fsum(written) / len(written) if written else math.nan


def weighted_vote(critiques: Sequence[Critique]) -> float:
    """The written scores averaged with weights softmax(reward); NaN when no critique has both."""
    usable = [c for c in critiques if c.written is not None and math.isfinite(c.reward)]
    if not usable:
        return math.nan
    top = max(c.reward for c in usable)
    weights = [math.exp(c.reward - top) for c in usable]
    return math.fsum(w * c.written for w, c in zip(weights, usable, strict=True)) / math.fsum(weights)


def adaptive_count(rewards: Sequence[float], spread: float, minimum: int = ADAPTIVE_MIN) -> int:
    """How many critiques adaptive m reads: the first k >= minimum whose finite rewards (at least two)
    have a standard deviation below `spread`, else all of them."""
    for k in range(minimum, len(rewards) + 1):
        finite = [r for r in rewards[:k] if math.isfinite(r)]
        if len(finite) >= 2 and statistics.pstdev(finite) < spread:
            return k
    return len(rewards)


def vote_credit(chosen: Sequence[float], rejected: Sequence[float]) -> Credit:
    """`metrics.credit`, except that a tied pair counts 1/2 and an example with a NaN score (a response
    without any written score) counts at chance: the share of chosen responses, flagged invalid."""
    item = credit(chosen, rejected)
    if item.invalid:
        return Credit(len(chosen) / (len(chosen) + len(rejected)), tie=False, invalid=True)
    if item.tie and len(chosen) == 1 and len(rejected) == 1:
        return Credit(0.5, tie=True, invalid=False)
    return item


_SCORERS: dict[str, tuple[Callable[[Sequence[Critique]], float], Callable[..., Credit]]] = {
    "mean": (mean_reward, credit), "vote": (vote, vote_credit), "weighted": (weighted_vote, vote_credit),
    "adaptive": (mean_reward, credit)}


def inference_scaling(results: Sequence[ExampleResult], adaptive_spread: float = DEFAULT_ADAPTIVE_SPREAD) -> dict | None:
    """The scaling table (see the module docstring); None when some result has no sampled critiques."""
    if not adaptive_spread > 0:
        raise ValueError(f"adaptive_spread must be above 0, got {adaptive_spread}")
    critiques = [critiques_of(r) for r in results]
    if not results or any(c is None for c in critiques):
        return None
    available = samples_available(results)
    m_values = [m for m in M_VALUES if m <= available]
    rows = [_row(method, m, results, critiques, [[m] * len(responses) for responses in critiques])
            for method in ("mean", "vote", "weighted") for m in m_values]
    read = [[adaptive_count([c.reward for c in response[:available]], adaptive_spread) for response in responses]
            for responses in critiques]
    rows.append(_row("adaptive", available, results, critiques, read) | {"spread": adaptive_spread})
    return {"m_values": m_values, "adaptive_spread": adaptive_spread, "adaptive_min": ADAPTIVE_MIN, "rows": rows}


def _row(method: str, m: int, results: Sequence[ExampleResult], critiques: list[list[list[Critique]]],
         read: list[list[int]]) -> dict:
    """One method's row, each response scored from its first `read[i][j]` critiques."""
    score, credit_of = _SCORERS[method]
    scored, used = [], []
    for result, responses, counts in zip(results, critiques, read, strict=True):
        values = [score(response[:k]) for response, k in zip(responses, counts, strict=True)]
        scored.append(replace(result, chosen=values[:len(result.chosen)], rejected=values[len(result.chosen):]))
        used += [response[:k] for response, k in zip(responses, counts, strict=True)]
    credits = [credit_of(r.chosen, r.rejected) for r in scored]
    table = score_table(scored, credits)
    tokens = [c.tokens for response in used for c in response]
    total = None if any(t is None for t in tokens) else sum(tokens)
    return {"method": method, "m": m, "critiques_per_response": sum(map(len, used)) / len(used),
            "tokens": total, "tokens_per_response": None if total is None else total / len(used),
            **tally(credits), "overall": table.overall,
            "sections": {name: row["score"] for name, row in table.sections.items()}}
