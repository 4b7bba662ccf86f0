"""Prompts of `criticrm correct`: revise a solution (after a critique, or with none), and solve a problem.

As for every prompt a small model must follow (DESIGN §4), each is a system turn, one worked example as
an earlier user/assistant exchange, and the task as the last user turn; the answer format is spelled
out in the instruction too. Every answer must end in a line "Final answer: X", the marker that
`criticrm.correction.answers.extract_answer` reads first. The worked example's numbers are not those of
any evaluation problem, so a copied example answer is simply wrong, never right by chance.
"""

from __future__ import annotations

import hashlib
import json

FINAL_ANSWER = "Final answer:"
SYSTEM = "You are a careful solver of math and science problems."

_FORMAT = (f'Finish with one line "{FINAL_ANSWER} " followed by the answer only (for a multiple-choice problem, '
           "the letter of the correct option).")
REVISE_WITH_CRITIQUE = ("Below are a problem, a solution to it, and a review of that solution. Using the review, "
                        "check the solution and correct it if needed. Write the corrected solution briefly. " + _FORMAT)
REVISE_WITHOUT_CRITIQUE = ("Below are a problem and your answer to it. Review your answer and correct it if "
                           "needed. Write the corrected solution briefly. " + _FORMAT)
SOLVE = "Solve the problem below step by step, briefly. " + _FORMAT

_EXAMPLE_PROBLEM = "A book costs $24 and is on sale for 25% off. What is the sale price?"
_EXAMPLE_SOLUTION = "25% of 24 is 4, so the discount is $4. The sale price is 24 - 4 = $20."
_EXAMPLE_CRITIQUE = ("The discount is wrong: 25% of 24 is 6, not 4, so the sale price is 24 - 6 = 18. The final "
                     "answer, $20, is incorrect.\nScore: 2/10")
_EXAMPLE_REVISION = f"25% of 24 is 0.25 x 24 = 6, so the discount is $6. The sale price is 24 - 6 = $18.\n{FINAL_ANSWER} 18"


def _task(instruction: str, problem: str, solution: str | None = None, critique: str | None = None) -> str:
    parts = [instruction, f"[Problem]\n{problem}"]
    if solution is not None:
        parts.append(f"[Solution]\n{solution}")
    if critique is not None:
        parts.append(f"[Review]\n{critique}")
    return "\n\n".join(parts)


def revise_messages(problem: str, solution: str, critique: str | None) -> list[dict[str, str]]:
    """Chat messages asking to revise `solution` after `critique`, or, with None, after a self-review only."""
    instruction = REVISE_WITHOUT_CRITIQUE if critique is None else REVISE_WITH_CRITIQUE
    example_critique = None if critique is None else _EXAMPLE_CRITIQUE
    return [{"role": "system", "content": SYSTEM},
            {"role": "user", "content": _task(instruction, _EXAMPLE_PROBLEM, _EXAMPLE_SOLUTION, example_critique)},
            {"role": "assistant", "content": _EXAMPLE_REVISION},
            {"role": "user", "content": _task(instruction, problem, solution, critique)}]


def solve_messages(problem: str) -> list[dict[str, str]]:
    """Chat messages asking for a solution of `problem` that ends in the final-answer line."""
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": _task(SOLVE, _EXAMPLE_PROBLEM)},
            {"role": "assistant", "content": _EXAMPLE_REVISION}, {"role": "user", "content": _task(SOLVE, problem)}]


def prompts_hash() -> str:
    """Content hash of these prompts (recorded with a correction run's settings)."""
    payload = json.dumps([SYSTEM, REVISE_WITH_CRITIQUE, REVISE_WITHOUT_CRITIQUE, SOLVE, _EXAMPLE_PROBLEM,
                          _EXAMPLE_SOLUTION, _EXAMPLE_CRITIQUE, _EXAMPLE_REVISION])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]
