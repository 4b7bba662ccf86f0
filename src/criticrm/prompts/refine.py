"""Meta-judge prompts of stage 1c: rank the kept critiques of a response, or merge them into one.

Small models follow a format only when shown it (DESIGN §4), so each prompt is a system turn, one
worked example as an earlier user/assistant exchange, and the real task as the last user turn; the
answer format is spelled out in the instruction too. The ranking prompt tells the model how people
judged the response (the label is known while the training data is built, exactly as in filtering):
a better critique is one that is accurate *and* agrees with that judgement. The summary prompt
does not, so that the label's wording never leaks into a critique that becomes a training target.
"""

from __future__ import annotations

import hashlib
import json

from criticrm.prompts.scores import strip_score_line

SCORE_PREFIX = "Score: "
RANKING_PREFIX = "Ranking:"

SYSTEM = "You are a careful judge of critiques written about AI assistant responses."

RANK_INSTRUCTION = (
    "Below are a request, a response to it, and {count} critiques of that response. {verdict}\n"
    "Rank the critiques from best to worst. A better critique is accurate, specific, and agrees with how "
    "people judged the response.\n"
    'Answer with one line: "Ranking: " followed by all {count} critique numbers, best first, separated by commas.'
)

VERDICTS = {
    "chosen": "People judged this response to be the better of two answers to the request.",
    "rejected": "People judged this response to be the worse of two answers to the request.",
}

SUMMARIZE_INSTRUCTION = (
    "Below are a request, a response to it, and {count} critiques of that response. Write one short critique "
    "of the response that combines the correct points of these critiques. Do not mention the critiques. "
    'Finish with one line "Score: " followed by a whole number from 1 (very poor) to 10 (excellent) and "/10".'
)

TASK_FORMAT = "{instruction}\n\n[Request]\n{prompt}\n\n[Response]\n{response}\n\n{critiques}"

# One worked example per prompt. The example ranking is deliberately not "1, 2, 3": a model that
# only echoes the listed order would otherwise look like it agrees with the presented order.
_EXAMPLE_PROMPT = "What is the capital of Australia?"
_EXAMPLE_RESPONSE = "The capital of Australia is Sydney, its largest and best-known city."
_EXAMPLE_CRITIQUES = (
    "The response is short and clear.\nScore: 6/10",
    "The response is wrong: the capital of Australia is Canberra, not Sydney. A reader would be misled.\nScore: 2/10",
    "The answer names a city, but Sydney is not the capital.\nScore: 3/10",
)  # the ranking prompt shows them without their score lines
RANK_EXAMPLE_ANSWER = "Ranking: 2, 3, 1"
RANK_EXAMPLE_ORDER = (1, 2, 0)  # the example answer, 0-based: an answer starting so may be a copy of it
SUMMARIZE_EXAMPLE_ANSWER = (
    "The response is wrong: the capital of Australia is Canberra, not Sydney. It is short and clear, but a "
    "reader would be misled.\nScore: 2/10"
)


def copies_example(text: str) -> bool:
    """Whether an answer reproduces a worked example's answer (small models do): it is no summary."""
    return any(answer.split(".")[0] in text for answer in (SUMMARIZE_EXAMPLE_ANSWER, _EXAMPLE_CRITIQUES[1]))


def format_critiques(critiques: list[str]) -> str:
    return "\n\n".join(f"[Critique {number}]\n{text.strip()}" for number, text in enumerate(critiques, start=1))


def _task(instruction: str, prompt: str, response: str, critiques: list[str]) -> str:
    return TASK_FORMAT.format(instruction=instruction, prompt=prompt, response=response,
                              critiques=format_critiques(critiques))


def rank_messages(prompt: str, response: str, side: str, critiques: list[str]) -> list[dict[str, str]]:
    """Chat messages asking for a best-first ranking of `critiques` ("Ranking: 2, 3, 1").

    The critiques are shown without their "Score: k/10" lines: the ranking should judge what a
    critique says (the scores already set the presented order and break ties), and the default
    model, shown the scores, answered with them ("Ranking: 7, 8, 9") instead of critique numbers.
    """
    example = _task(RANK_INSTRUCTION.format(count=len(_EXAMPLE_CRITIQUES), verdict=VERDICTS["rejected"]),
                    _EXAMPLE_PROMPT, _EXAMPLE_RESPONSE, [strip_score_line(c) for c in _EXAMPLE_CRITIQUES])
    task = _task(RANK_INSTRUCTION.format(count=len(critiques), verdict=VERDICTS[side]), prompt, response,
                 [strip_score_line(c) or c for c in critiques])
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": example},
            {"role": "assistant", "content": RANK_EXAMPLE_ANSWER}, {"role": "user", "content": task}]


def summarize_messages(prompt: str, response: str, critiques: list[str]) -> list[dict[str, str]]:
    """Chat messages asking for one merged critique that ends in "Score: k/10"."""
    example = _task(SUMMARIZE_INSTRUCTION.format(count=2), _EXAMPLE_PROMPT, _EXAMPLE_RESPONSE,
                    [_EXAMPLE_CRITIQUES[1], _EXAMPLE_CRITIQUES[0]])
    task = _task(SUMMARIZE_INSTRUCTION.format(count=len(critiques)), prompt, response, critiques)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": example},
            {"role": "assistant", "content": SUMMARIZE_EXAMPLE_ANSWER}, {"role": "user", "content": task}]


def prompts_hash() -> str:
    """Content hash of every refinement prompt (stored with the stage settings)."""
    payload = json.dumps(["rank critiques without score lines", SYSTEM, RANK_INSTRUCTION, VERDICTS, SUMMARIZE_INSTRUCTION, TASK_FORMAT, _EXAMPLE_PROMPT,
                          _EXAMPLE_RESPONSE, _EXAMPLE_CRITIQUES, RANK_EXAMPLE_ANSWER, SUMMARIZE_EXAMPLE_ANSWER])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]
