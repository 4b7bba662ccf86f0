"""The records that flow between stages: preference pairs in, critique records out."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

SIDES = ("chosen", "rejected")


@dataclass(frozen=True)
class PreferencePair:
    """One human preference: `chosen` was preferred over `rejected` as an answer to `prompt`.

    Conversational inputs are already rendered to text here; `domain` picks the judge template
    (general / safety / reasoning) and `subset` is kept for per-subset reports.
    """

    id: str
    prompt: str
    chosen: str
    rejected: str
    subset: str | None = None
    domain: str | None = None
    source: str | None = None
    section: str | None = None
    margin: float | None = None  # the user's own Bradley-Terry margin column (TRL's `margin`), never derived

    def response(self, side: str) -> str:
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        return self.chosen if side == "chosen" else self.rejected

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def content_id(prompt: str, chosen: str, rejected: str) -> str:
    """A stable id from the pair's content, for inputs that carry none (any `str`: a lone surrogate too)."""
    payload = json.dumps([prompt, chosen, rejected], ensure_ascii=False)
    return "sha-" + hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()[:16]


@dataclass
class CritiqueRecord:
    """One sampled critique of one response of one pair (stage 1a output, one JSONL line each).

    `score` is the score the later stages use; `score_source` says whether it is the score the
    model wrote (`parsed`) or the probability-weighted score over "1".."10" (`probability`).
    It is never a substituted default: when nothing could be read it is None.
    """

    pair_id: str
    side: str
    sample_index: int
    critique: str
    parsed_score: int | None
    probability_score: float | None
    score: float | None
    score_source: str | None
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    backend: str
    model: str
    template: str
    template_hash: str
    score_mass: float | None = None
    subset: str | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.pair_id, self.side, self.sample_index)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> CritiqueRecord:
        return cls(**row)


@dataclass
class ScoredCritique:
    text: str
    score: float | None


@dataclass
class TrainingPair:
    """One row of the refined, training-ready dataset (stage 1c output, stage 2 input).

    `critique_supervision` False marks a reward-only pair (its critiques failed the instance-level
    filter): its critiques still condition the reward, but they are not targets of the LM loss.
    `template` names the judge template whose layout the critiques were written in.

    `margin` is the user's margin column carried from the input pairs (TRL's convention); `judge_margin`
    is the base model's mean chosen minus mean rejected critique score, kept only for the explicit
    `margin_source: judge` ablation: by default the reward learns from the human label alone.

    `sampled_chosen_critiques` / `sampled_rejected_critiques` (supervised pairs written by the refine stage)
    hold every critique sampled for each response, before filtering selected those that agree with the label:
    under `reward_critiques: sampled` the reward reads these and the refined critiques are LM targets only.
    """

    id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_critiques: list[ScoredCritique]
    rejected_critiques: list[ScoredCritique]
    critique_supervision: bool
    template: str = "general"
    subset: str | None = None
    domain: str | None = None
    source: str | None = None
    margin: float | None = None
    judge_margin: float | None = None
    sampled_chosen_critiques: list[ScoredCritique] | None = None
    sampled_rejected_critiques: list[ScoredCritique] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> TrainingPair:
        row = dict(row)
        if "judge_margin" not in row:  # written before user margins existed: `margin` was the judge's
            row["judge_margin"], row["margin"] = row.get("margin"), None
        for side in ("chosen_critiques", "rejected_critiques", "sampled_chosen_critiques", "sampled_rejected_critiques"):
            if row.get(side) is not None:
                row[side] = [c if isinstance(c, ScoredCritique) else ScoredCritique(**c) for c in row[side]]
        return cls(**row)
