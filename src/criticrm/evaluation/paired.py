"""Is one model really ahead of another on the same examples? A paired, stratified bootstrap of the overall score.

Two reports on one evaluation set differ by overall_B - overall_A, and on a few hundred pairs that
difference carries several points of sampling error. Resampling the examples with replacement and
recomputing *both* overall scores on the same resample keeps the pairing: examples both models find easy
or hard cancel out, so when the models agree on what is hard the interval is much tighter than two
separate error bars would suggest (and about as wide when their errors are unrelated).
Resampling is done within each subset, keeping every subset's size: that is how `--per-subset` draws the
evaluation set, and the overall score is a mean over subsets and sections, not over examples.

The result is the observed difference, a percentile interval, and the share of resamples in which the
second model is strictly ahead (a rough one-sided confidence, not a p-value).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from criticrm.evaluation.metrics import ExampleResult, credit, score_table


@dataclass(frozen=True)
class PairedDifference:
    n: int  # examples both reports scored (matched by id)
    difference: float  # overall score of `other` minus that of `base`, on those examples
    low: float  # the interval's bounds (fractions, like the scores)
    high: float
    ahead: float  # share of resamples in which `other`'s overall score is strictly higher
    level: float
    resamples: int


def paired_bootstrap(base: Sequence[ExampleResult], other: Sequence[ExampleResult], resamples: int = 2000,
                     level: float = 0.95, seed: int = 0) -> PairedDifference:
    """The overall-score difference other - base on the examples both have, with its bootstrap interval."""
    if resamples < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need resamples >= 1 and 0 < level < 1, got {resamples} and {level}")
    others = {result.id: result for result in other}
    pairs = [(result, others[result.id]) for result in base if result.id in others]
    if not pairs:
        raise ValueError("the two reports have no example id in common: they were not run on the same data")
    for a, b in pairs:
        if a.subset != b.subset:
            raise ValueError(f"example {a.id} is in subset {a.subset!r} in one report and {b.subset!r} in the "
                             "other: they were not run on the same data")
    results = [a for a, _ in pairs]
    credits_a = [credit(a.chosen, a.rejected) for a, _ in pairs]
    credits_b = [credit(b.chosen, b.rejected) for _, b in pairs]
    by_subset: dict[str, list[int]] = defaultdict(list)
    for index, result in enumerate(results):
        by_subset[result.subset].append(index)

    def difference(indices: list[int]) -> float:
        chosen = [results[i] for i in indices]
        return (score_table(chosen, [credits_b[i] for i in indices]).overall
                - score_table(chosen, [credits_a[i] for i in indices]).overall)

    rng = random.Random(seed)
    draws = sorted(difference([i for members in by_subset.values() for i in rng.choices(members, k=len(members))])
                   for _ in range(resamples))
    tail = (1.0 - level) / 2
    return PairedDifference(n=len(pairs), difference=difference(list(range(len(pairs)))),
                            low=draws[math.floor(tail * (resamples - 1))],
                            high=draws[math.ceil((1 - tail) * (resamples - 1))],
                            ahead=sum(d > 0 for d in draws) / resamples, level=level, resamples=resamples)
