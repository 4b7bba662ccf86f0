"""Reading a score out of a critique: the written one, and the probability-weighted one.

The written score ("Score: 7/10") depends on the model following the format. The probability score
does not: after the critique body we force the score prefix and read the model's distribution over
the scores 1..10, then take its mean. Tokenizers either have one token per score ("10" included)
or split numbers into digits ("10" = "1" + "0"); both are handled, the second with a second position
("1" followed by "0" means 10, "1" followed by a non-digit means 1).
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from typing import Literal

SCORES = tuple(range(1, 11))

# Which score a critique (or a pairwise verdict) uses: the written one, falling back to the probability
# score; the written one only; or the probability score only.
ScorePolicy = Literal["parsed-or-probability", "parsed", "probability"]
SCORE_POLICIES: tuple[str, ...] = typing.get_args(ScorePolicy)

_SCORE_PATTERN = re.compile(r"score\s*[:=]\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?", re.IGNORECASE)


def parse_score(text: str) -> float | None:
    """The last "Score: k/10" written in `text`, clamped to 1..10; None when there is none.

    A score written on another scale ("Score: 4/5") is rescaled to 10. Nothing is guessed: text
    without a score gives None, and the probability score is the fallback the caller chooses.
    """
    matches = list(_SCORE_PATTERN.finditer(text))
    if not matches:
        return None
    value, scale = matches[-1].groups()
    score = float(value)
    if scale and float(scale) > 0 and float(scale) != 10:
        score = score * 10 / float(scale)
    return min(10.0, max(1.0, score))


def choose_score(parsed: float | None, probability: float | None, policy: str) -> tuple[float | None, str | None]:
    """The score a record uses under `policy` and where it came from; None when that source has nothing."""
    if policy == "parsed" or (policy == "parsed-or-probability" and parsed is not None):
        return (parsed, "parsed") if parsed is not None else (None, None)
    return (probability, "probability") if probability is not None else (None, None)


def with_score(critique: str, score: float) -> str | None:
    """The critique with its last written score replaced by `score` (on the /10 scale), the rest of the
    text untouched; None when it has no written score."""
    matches = list(_SCORE_PATTERN.finditer(critique))
    if not matches:
        return None
    last = matches[-1]
    scaled = last.group(2) is not None
    value = f"{score:g}" + ("/10" if scaled else "")
    return critique[: last.start(1)] + value + critique[last.end(2 if scaled else 1):]


def strip_score_line(critique: str) -> str:
    """The critique body without its final written score (what the probability score is read after)."""
    matches = list(_SCORE_PATTERN.finditer(critique))
    body = critique[: matches[-1].start()] if matches else critique
    return body.rstrip()


@dataclass(frozen=True)
class ScoreTokens:
    """Token ids of the scores 1..10 right after the score prefix, for one tokenizer.

    `split_ten` is True when "10" is the two tokens of "1" and "0"; then `ten_second_id` is the "0".
    `digit_ids` are all tokens that continue a number (used to tell "1" from "10", "12", ...).
    """

    prefix_ids: tuple[int, ...]
    score_ids: tuple[int, ...]  # first token of each score 1..10
    split_ten: bool
    ten_second_id: int | None
    digit_ids: tuple[int, ...]

    @classmethod
    def from_tokenizer(cls, tokenizer, prefix: str) -> ScoreTokens:
        prefix_ids = tokenizer(prefix, add_special_tokens=False).input_ids
        continuations = []
        for score in SCORES:
            full = tokenizer(prefix + str(score), add_special_tokens=False).input_ids
            if full[: len(prefix_ids)] != prefix_ids:
                raise ValueError(f"score prefix {prefix!r} does not tokenize as a prefix of {prefix + str(score)!r}")
            continuations.append(full[len(prefix_ids):])
        if any(len(ids) != 1 for ids in continuations[:9]):
            raise ValueError("scores 1..9 must each be one token after the score prefix")
        ten = continuations[9]
        split_ten = len(ten) == 2 and ten[0] == continuations[0][0]
        if len(ten) != 1 and not split_ten:
            raise ValueError(f"cannot read the score 10 from tokens {ten}")
        digits = tuple(sorted({tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)} - {None}))
        return cls(
            prefix_ids=tuple(prefix_ids),
            score_ids=tuple(ids[0] for ids in continuations),
            split_ten=split_ten,
            ten_second_id=ten[1] if split_ten else None,
            digit_ids=digits,
        )


def expected_score(first: list[float], after_one_zero: float = 0.0, after_one_digit: float = 0.0) -> tuple[float, float]:
    """Mean score and the probability mass on valid scores, from token probabilities.

    `first[k-1]` is the probability of score k's first token right after the prefix. For split
    tokenizers `first[0]` (the "1") is shared by 1 and 10: `after_one_zero` is P("0" | "1") and
    `after_one_digit` is P(any digit | "1"), so P(10) = p1·P(0|1) and P(1) = p1·(1 − P(digit|1)).
    """
    probs = list(first)
    if after_one_digit or after_one_zero:
        p_one = first[0]
        probs[0] = p_one * max(0.0, 1.0 - after_one_digit)
        probs[9] = p_one * after_one_zero
    mass = sum(probs)
    if mass <= 0:
        raise ValueError("no probability on any score token")
    mean = sum(score * p for score, p in zip(SCORES, probs, strict=True)) / mass
    return min(10.0, max(1.0, mean)), mass
