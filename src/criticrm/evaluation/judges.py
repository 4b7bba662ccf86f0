"""The LLM-judge baselines of `criticrm eval`: the base model judging pairs without any training.

- **Pointwise**: each response gets N critiques from the judge template of the critique stage (the
  same few-shot prompt, score parsing and `--score` policy), and its score is the mean of their
  scores. This is what the Critic-RM starts from, so it is the baseline its training must beat.
- **Pairwise**: an A/B prompt (`prompts/builtin/pairwise.yaml`) asked in both orders, chosen as A
  and chosen as B. Small judges mostly pick a position, not a response; averaging the two orders
  turns a position-only judge into ties, which count as wrong. The summary reports how often the two
  orders agree (position consistency) and how often "A" is picked (position bias).

Critique scores are not probabilities, so the pointwise results carry none; the pairwise judge's
mean vote for the chosen response is its probability (the metrics report how calibrated it is).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tqdm import tqdm

from criticrm.data.schema import SIDES, PreferencePair
from criticrm.evaluation.metrics import ExampleResult
from criticrm.formatting import rate
from criticrm.generation.base import Generator, SamplingConfig, generate_grouped
from criticrm.prompts.pairwise import (
    POSITIONS,
    PairwiseTemplate,
    load_pairwise_template,
    parse_verdict,
    strip_verdict,
)
from criticrm.prompts.scores import SCORE_POLICIES, choose_score, parse_score
from criticrm.prompts.templates import TemplateSet

VERDICT_SOURCES = SCORE_POLICIES  # parsed-or-probability, parsed, probability: as for critique scores
ORDERS = ("chosen_as_a", "chosen_as_b")  # details keys; first the chosen response is shown as A, then as B
ABSTAIN = 0.5  # the vote of an order in which no verdict could be read


def judge_pointwise(pairs: list[PreferencePair], generator: Generator, templates: TemplateSet,
                    sampling: SamplingConfig, score_source: str = "parsed-or-probability",
                    progress: bool = True, *, batch_size: int = 32) -> list[ExampleResult]:
    """Score both responses of every pair with N critiques each; a response's score is their mean.

    Unreadable critique scores (none written under `score_source="parsed"`) are skipped; a response
    with none readable scores NaN, which the metrics count as invalid. `chosen_samples` keep every
    critique's score in sampling order (NaN where unreadable) for the accuracy-against-m curve.
    """
    if score_source not in SCORE_POLICIES:
        raise ValueError(f"score_source must be one of {', '.join(SCORE_POLICIES)}, got {score_source!r}")
    items = []  # (pair, side, template, conversation)
    for pair in pairs:
        template = templates.for_pair(pair.domain, pair.subset)
        items.extend((pair, side, template, template.messages(pair.prompt, pair.response(side)))
                     for side in SIDES)
    # One template and similar lengths per call, as in the critique stage: the template's prefix is shared.
    items.sort(key=lambda item: (item[2].name, -sum(len(m["content"]) for m in item[3])))
    critiques: dict[tuple[str, str], list[dict]] = {}
    for chunk, completions in _generate(items, sampling, batch_size, progress, "pointwise judge",
                                        lambda chunk: generate_grouped(generator, [item[3] for item in chunk],
                                                                       [item[2].score_prefix for item in chunk],
                                                                       sampling)):
        for (pair, side, _, _), samples in zip(chunk, completions, strict=True):
            rows = []
            for completion in samples:
                parsed = parse_score(completion.text)
                probability = completion.probability.score if completion.probability else None
                score, source = choose_score(parsed, probability, score_source)
                rows.append({"critique": completion.text, "score": score, "source": source})
            critiques[pair.id, side] = rows

    results = []
    for pair in pairs:
        samples = {side: [math.nan if c["score"] is None else c["score"] for c in critiques[pair.id, side]]
                   for side in SIDES}
        results.append(ExampleResult(
            id=pair.id, subset=pair.subset or "all", section=pair.section,
            chosen=[_nanmean(samples["chosen"])], rejected=[_nanmean(samples["rejected"])],
            chosen_chars=[len(pair.chosen)], rejected_chars=[len(pair.rejected)], probability=None,
            chosen_samples=[samples["chosen"]], rejected_samples=[samples["rejected"]],
            details={"template": templates.for_pair(pair.domain, pair.subset).name,
                     **{side: critiques[pair.id, side] for side in SIDES}},
        ))
    return results


def judge_pairwise(pairs: list[PreferencePair], generator: Generator, sampling: SamplingConfig,
                   progress: bool = True, *, template: PairwiseTemplate | None = None,
                   verdict_source: str = "parsed-or-probability", batch_size: int = 32,
                   ) -> tuple[list[ExampleResult], dict]:
    """Ask which response is better, in both orders; returns the results and `position_summary` of them.

    Each of the N samples per order votes for the chosen response: 1 or 0 from its written verdict,
    or P(chosen's letter) / (P("A") + P("B")) right after the reasoning and a forced verdict prefix
    (`verdict_source` picks, as `--score` does for critiques). An order's vote is the mean of
    its samples' readable votes, or 0.5 when none is readable (it abstains, as RewardBench counts a
    judge error). The result's score for chosen is the mean vote of the two orders and for rejected
    one minus it, so orders that disagree make a tie, which counts as wrong.
    """
    if verdict_source not in VERDICT_SOURCES:
        raise ValueError(f"verdict_source must be one of {', '.join(VERDICT_SOURCES)}, "
                         f"got {verdict_source!r}")
    scorer = None if verdict_source == "parsed" else generator
    template = template or load_pairwise_template()
    choices = verdict_choices(template.verdict_prefix)
    items = []  # (pair, order, conversation)
    for pair in pairs:
        items.append((pair, ORDERS[0], template.messages(pair.prompt, pair.chosen, pair.rejected)))
        items.append((pair, ORDERS[1], template.messages(pair.prompt, pair.rejected, pair.chosen)))
    items.sort(key=lambda item: -sum(len(m["content"]) for m in item[2]))

    def generate(chunk):
        outputs = generator.generate([conversation for _, _, conversation in chunk], sampling)
        if scorer is None:
            return [[(completion.text, None) for completion in samples] for samples in outputs]
        flat = [(conversation, completion.text)
                for (_, _, conversation), samples in zip(chunk, outputs, strict=True)
                for completion in samples]
        continuations = [verdict_continuation(text, template.verdict_prefix) for _, text in flat]
        probabilities = iter(scorer.choice_probabilities([c for c, _ in flat], continuations, choices))
        return [[(completion.text, next(probabilities)) for completion in samples] for samples in outputs]

    orders: dict[tuple[str, str], dict] = {}
    for chunk, outputs in _generate(items, sampling, batch_size, progress, "pairwise judge", generate):
        for (pair, order, _), samples in zip(chunk, outputs, strict=True):
            orders[pair.id, order] = judge_order(order, samples, verdict_source)

    results = [_pairwise_result({order: orders[pair.id, order] for order in ORDERS}, id=pair.id,
                                subset=pair.subset or "all", section=pair.section,
                                chosen_chars=[len(pair.chosen)], rejected_chars=[len(pair.rejected)])
               for pair in pairs]
    return results, {"template": template.name, "template_hash": template.hash, **position_summary(results)}


def revote_pairwise(results: Sequence[ExampleResult], verdict_source: str) -> list[ExampleResult]:
    """Pairwise-judge results as another `verdict_source` would have voted, from what their details keep.

    Every sample keeps its verdict text and its [P(A), P(B)], so this is exactly the result of judging
    again with that source (same greedy texts, same probabilities) without generating anything: a
    long judge run can be read under every policy. Results judged with `parsed` kept no probabilities,
    so they can be re-read only under `parsed` (anything else raises ValueError).
    """
    if verdict_source not in VERDICT_SOURCES:
        raise ValueError(f"verdict_source must be one of {', '.join(VERDICT_SOURCES)}, "
                         f"got {verdict_source!r}")
    revoted = []
    for result in results:
        if any(order not in result.details for order in ORDERS):
            raise ValueError(f"example {result.id}: not a pairwise-judge result (no {' / '.join(ORDERS)} details)")
        samples = {order: [(row["text"], row["choice_probabilities"]) for row in result.details[order]["samples"]]
                   for order in ORDERS}
        if verdict_source != "parsed" and any(p is None for rows in samples.values() for _, p in rows):
            raise ValueError(f"example {result.id}: judged with score policy parsed, so it kept no verdict "
                             f"probabilities to re-read under {verdict_source!r}")
        orders = {order: judge_order(order, rows, verdict_source) for order, rows in samples.items()}
        revoted.append(_pairwise_result(orders, id=result.id, subset=result.subset, section=result.section,
                                        chosen_chars=result.chosen_chars, rejected_chars=result.rejected_chars))
    return revoted


def _pairwise_result(orders: dict[str, dict], **example) -> ExampleResult:
    """The pair's result from its two orders' votes: chosen scores their mean, rejected one minus it;
    `example` names the pair (id, subset, section, chosen_chars, rejected_chars)."""
    vote = sum(orders[order]["vote"] for order in ORDERS) / len(ORDERS)
    return ExampleResult(chosen=[vote], rejected=[1.0 - vote], probability=vote, details=orders, **example)


def verdict_choices(prefix: str) -> tuple[str, ...]:
    """Each position as written right after the verdict prefix: " A" after "Verdict:", "A" after "Verdict: ".

    The first is how BPE tokenizers write it (one token, the space included), and what is read.
    """
    space = "" if prefix.endswith((" ", "\n")) else " "
    return tuple(space + position for position in POSITIONS)


def verdict_continuation(text: str, prefix: str) -> str:
    """The assistant text after which the verdict probability is read: the reasoning, then the prefix."""
    body = strip_verdict(text)
    return f"{body}\n{prefix}" if body else prefix


def judge_order(order: str, samples: list[tuple[str, list[float] | None]], verdict_source: str) -> dict:
    """One order's vote for the chosen response, from its samples' (text, [P(A), P(B)] or None).

    The returned dict is what the details keep: the verdict texts, what was read from each, and the vote.
    """
    chosen_position = POSITIONS[ORDERS.index(order)]
    rows = []
    for text, probabilities in samples:
        verdict = parse_verdict(text)
        parsed = None if verdict is None else float(verdict == chosen_position)
        probability = None
        if probabilities is not None and sum(probabilities) > 0:
            probability = probabilities[POSITIONS.index(chosen_position)] / sum(probabilities)
        vote, source = choose_score(parsed, probability, verdict_source)
        rows.append({"text": text, "verdict": verdict, "choice_probabilities": probabilities,
                     "vote": vote, "source": source})
    readable = [row["vote"] for row in rows if row["vote"] is not None]
    return {"samples": rows, "vote": sum(readable) / len(readable) if readable else ABSTAIN}


def position_summary(results: Sequence[ExampleResult]) -> dict:
    """Position consistency and bias of pairwise-judge results (from their details).

    An order names the response its vote favours (none at exactly 0.5). `consistency` is the share of
    pairs whose two orders name the same response, over all pairs (an undecided order is inconsistent);
    `a_share` is the share of deciding orders that named position A (0.5 = no position bias).
    """
    consistent = decided = named_a = 0
    samples = written = probabilities = 0
    for result in results:
        favoured = []
        for order in ORDERS:
            details = result.details[order]
            vote = details["vote"]
            side = None if vote == ABSTAIN else "chosen" if vote > ABSTAIN else "rejected"
            favoured.append(side)
            if side is not None:
                decided += 1
                named_a += (side == "chosen") == (order == "chosen_as_a")
            samples += len(details["samples"])
            written += sum(row["verdict"] is not None for row in details["samples"])
            probabilities += sum(sum(row["choice_probabilities"] or ()) > 0 for row in details["samples"])
        consistent += favoured[0] is not None and favoured[0] == favoured[1]
    return {
        "pairs": len(results),
        "consistency": rate(consistent, len(results)),
        "a_share": rate(named_a, decided),
        "undecided_orders": 2 * len(results) - decided,
        "verdict_parse_rate": rate(written, samples),
        "probability_rate": rate(probabilities, samples),
    }


def _generate(items: list, sampling: SamplingConfig, batch_size: int, progress: bool, description: str,
              generate):
    """(chunk, generate(chunk)) over `items`, batch_size // N conversations at a time, with a progress bar."""
    per_call = max(1, batch_size // sampling.num_critiques)
    with tqdm(total=len(items) * sampling.num_critiques, unit="sample", desc=description,
              disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, len(items), per_call):
            chunk = items[start:start + per_call]
            yield chunk, generate(chunk)
            bar.update(len(chunk) * sampling.num_critiques)


def _nanmean(values: list[float]) -> float:
    readable = [v for v in values if not math.isnan(v)]
    return math.fsum(readable) / len(readable) if readable else math.nan
