"""The numbers of a correction run, from its per-revision and per-problem rows.

A revision row says whether the solution it started from was right (`before`) and whether the revised
final answer is (`after`). Over a set of rows:
- accuracy before / after: the share of right solutions before and after revising;
- Δ↑ = wrong → right, over the rows that started wrong (can a critique fix an error?);
- Δ↓ = right → wrong, over the rows that started right (does a critique talk a model out of a right answer?);
- no answer: the share of revisions in which no final answer could be read (counted as wrong).

A best-of-N row holds k sampled solutions of one problem, each with its reward and correctness.
Accuracy at k (the first k samples): the reward-model pick (highest reward, the first on a tie, a NaN
reward never picked over a number), the oracle (any of them right) and the majority vote over the
answers read (the largest group of agreeing answers, the earliest group on a tie; no answer never wins).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from criticrm.correction.answers import equivalent
from criticrm.formatting import rate


def revision_stats(rows: Sequence[dict]) -> dict:
    """Counts and rates of revision rows (each with booleans `before`, `after` and its `answer`)."""
    wrong = [row for row in rows if not row["before"]]
    right = [row for row in rows if row["before"]]
    fixed = sum(row["after"] for row in wrong)
    broken = sum(not row["after"] for row in right)
    return {"revisions": len(rows), "started_wrong": len(wrong), "started_right": len(right),
            "accuracy_before": rate(len(right), len(rows)),
            "accuracy_after": rate(sum(row["after"] for row in rows), len(rows)),
            "fixed": fixed, "broken": broken,
            "delta_up": rate(fixed, len(wrong)), "delta_down": rate(broken, len(right)),
            "no_answer": rate(sum(row["answer"] is None for row in rows), len(rows))}


def by_subset(rows: Sequence[dict], summarize) -> dict:
    """{"overall": summarize(rows), "subsets": {subset: summarize(its rows)}}, subsets in name order."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["subset"]].append(row)
    return {"overall": summarize(rows), "subsets": {name: summarize(groups[name]) for name in sorted(groups)}}


def k_values(k: int) -> list[int]:
    """1, 2, 4, ... up to k, and k itself."""
    values = [2 ** power for power in range(k.bit_length()) if 2 ** power <= k]
    return values + ([k] if values[-1] != k else [])


def reward_pick(rewards: Sequence[float]) -> int:
    """The index of the highest reward (the first on a tie; NaN only when every reward is NaN)."""
    best = 0
    for index, reward in enumerate(rewards):
        if not math.isnan(reward) and (math.isnan(rewards[best]) or reward > rewards[best]):
            best = index
    return best


def majority_pick(answers: Sequence[str | None]) -> int | None:
    """The index of the first member of the largest group of agreeing answers (earliest group on a tie)."""
    groups: list[list[int]] = []
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        group = next((g for g in groups if equivalent(answers[g[0]], answer)), None)
        if group is None:
            groups.append([index])
        else:
            group.append(index)
    if not groups:
        return None
    return max(groups, key=len)[0]  # max keeps the first of equal lengths


def best_of_stats(rows: Sequence[dict], ks: Sequence[int]) -> dict:
    """Accuracy at each k of the reward pick, the oracle and the majority vote over best-of-N rows."""
    stats = {"problems": len(rows)}
    for k in ks:
        reward = oracle = majority = 0
        for row in rows:
            correct = row["correct"][:k]
            reward += correct[reward_pick(row["rewards"][:k])]
            oracle += any(correct)
            vote = majority_pick(row["answers"][:k])
            majority += vote is not None and correct[vote]
        stats[str(k)] = {"reward": rate(reward, len(rows)), "oracle": rate(oracle, len(rows)),
                         "majority": rate(majority, len(rows))}
    return stats
