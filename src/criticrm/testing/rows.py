"""Hand-made training rows (fixed critique texts) for tests, benchmarks and smoke runs without stage 1.

The critiques are canned sentences with a score, not model output: enough to exercise every code path
(several critiques per response, reward-only rows, margins) and to time training on realistic lengths.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from criticrm.data.schema import ScoredCritique, TrainingPair

GOOD = (
    "The response addresses the request directly and is accurate. It is clear, complete and well organised.\nScore: 8/10",
    "The answer is correct and follows the instructions; a little more detail would make it better.\nScore: 7/10",
    "Helpful and precise: it answers every part of the request and nothing important is missing.\nScore: 9/10",
)
BAD = (
    "The response does not answer what was asked and contains factual mistakes that would mislead a reader.\nScore: 3/10",
    "The answer is vague and partly wrong; it ignores part of the request.\nScore: 2/10",
    "Unhelpful: it misses the point of the request and adds nothing useful.\nScore: 4/10",
)


def synthetic_rows(pairs_file: str | Path, limit: int | None = None, seed: int = 0, multi_every: int = 3,
                   reward_only_every: int = 5, margin_every: int = 7) -> list[TrainingPair]:
    """Training rows from a preference file (prompt/chosen/rejected JSONL) with canned critiques.

    Every `multi_every`-th pair gets two critiques per response, every `reward_only_every`-th is a
    reward-only row (no critique supervision), every `margin_every`-th carries a margin of 0.5. A supervised
    row's sampled critiques are its critiques plus one that disagrees with the label (as filtering leaves out).
    """
    rng = random.Random(seed)
    rows = []
    with Path(pairs_file).open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if limit is not None and index >= limit:
                break
            raw = json.loads(line)
            count = 2 if multi_every and index % multi_every == 0 else 1
            chosen = [ScoredCritique(rng.choice(GOOD), 8.0) for _ in range(count)]
            rejected = [ScoredCritique(rng.choice(BAD), 3.0) for _ in range(count)]
            supervised = not (reward_only_every and index % reward_only_every == reward_only_every - 1)
            rows.append(TrainingPair(
                id=raw.get("id", f"pair-{index}"), prompt=raw["prompt"], chosen=raw["chosen"], rejected=raw["rejected"],
                chosen_critiques=chosen, rejected_critiques=rejected, critique_supervision=supervised,
                template="general", subset=raw.get("subset"), source=raw.get("source"),
                margin=0.5 if margin_every and index % margin_every == margin_every - 1 else None,
                sampled_chosen_critiques=[*chosen, ScoredCritique(rng.choice(BAD), 4.0)] if supervised else None,
                sampled_rejected_critiques=[*rejected, ScoredCritique(rng.choice(GOOD), 7.0)] if supervised else None,
            ))
    return rows


def write_rows(rows: list[TrainingPair], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row.to_dict(), ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path
