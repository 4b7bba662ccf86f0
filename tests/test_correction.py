"""`criticrm correct`: the revise prompts, the metric arithmetic, which problems are kept, resuming, bad input,
and whole runs of the command on a tiny (random) Critic-RM."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from criticrm.cli import main
from criticrm.correction.answers import equivalent, extract_answer
from criticrm.correction.metrics import (
    best_of_stats,
    by_subset,
    k_values,
    majority_pick,
    revision_stats,
    reward_pick,
)
from criticrm.correction.problems import select_problems, subset_prefixes
from criticrm.data.rewardbench import EvalExample
from criticrm.errors import ConfigError
from criticrm.models.backbone import load_tokenizer
from criticrm.prompts.revise import FINAL_ANSWER, revise_messages, solve_messages
from criticrm.testing.tiny import make_tiny_reward_models

ROWS = [
    {"id": "gsm", "subset": "math-gsm8k-ref", "prompt": "Tom has 3 apples and buys 4 more. How many apples has he?",
     "chosen": "3 + 4 = 7.\nThe answer is 7.", "rejected": "3 + 4 = 8, so he has \\boxed{8} apples."},
    {"id": "arc", "subset": "sci-arc-ans",
     "prompt": "Which is a planet?\nAnswer Choices: (A) the Moon (B) Mars (C) the Sun (D) Sirius",
     "chosen": "The answer is (B) Mars.", "rejected": "The Sun is a planet, so \\boxed{C}."},
    {"id": "chat", "subset": "alpacaeval-easy", "prompt": "Say hi.", "chosen": "Hi!", "rejected": "No."},
]



def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def examples(rows: list[dict]) -> list[EvalExample]:
    return [EvalExample(r["id"], r["prompt"], [r["chosen"]], [r["rejected"]], r["subset"]) for r in rows]


# ------------------------------------------------------------------------------------------------ prompts


def test_revise_prompt_with_and_without_a_critique():
    with_critique = revise_messages("What is 2 + 3?", "2 + 3 = 6", "The sum is wrong.\nScore: 2/10")
    without = revise_messages("What is 2 + 3?", "2 + 3 = 6", None)
    for messages in (with_critique, without):
        assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
        assert "[Problem]\nWhat is 2 + 3?" in messages[-1]["content"]
        assert "[Solution]\n2 + 3 = 6" in messages[-1]["content"]
        assert FINAL_ANSWER in messages[-1]["content"]
        assert extract_answer(messages[2]["content"]) == "18"  # the worked example ends with the line read
    assert "[Review]\nThe sum is wrong.\nScore: 2/10" in with_critique[-1]["content"]
    assert "[Review]" in with_critique[1]["content"]  # the example shows a review too
    assert "[Review]" not in without[-1]["content"] and "[Review]" not in without[1]["content"]
    assert "Review your answer and correct it if needed" in without[-1]["content"]
    solve = solve_messages("What is 2 + 3?")
    assert solve[-1]["content"].endswith("[Problem]\nWhat is 2 + 3?") and "[Solution]" not in solve[-1]["content"]
    rendered = load_tokenizer(None).apply_chat_template(with_critique, tokenize=False, add_generation_prompt=True)
    assert rendered.count("<|im_start|>user") == 2 and rendered.endswith("<|im_start|>assistant\n")


# ------------------------------------------------------------------------------------------------ metrics


def revision(subset: str, before: bool, after: bool, answer: str | None = "1") -> dict:
    return {"subset": subset, "before": before, "after": after, "answer": answer}


def test_revision_metrics_on_hand_made_rows():
    rows = [revision("a", False, True), revision("a", False, False), revision("a", False, False, None),
            revision("a", True, True), revision("b", True, False, None), revision("b", False, True)]
    stats = revision_stats(rows)
    assert stats["started_wrong"] == 4 and stats["started_right"] == 2
    assert stats["fixed"] == 2 and stats["delta_up"] == 0.5  # 2 of 4 wrong starts fixed
    assert stats["broken"] == 1 and stats["delta_down"] == 0.5  # 1 of 2 right starts broken
    assert stats["accuracy_before"] == round(2 / 6, 4) and stats["accuracy_after"] == 0.5
    assert stats["no_answer"] == round(2 / 6, 4)
    grouped = by_subset(rows, revision_stats)
    assert grouped["subsets"]["a"]["delta_up"] == round(1 / 3, 4) and grouped["subsets"]["a"]["delta_down"] == 0.0
    assert grouped["subsets"]["b"]["delta_up"] == 1.0 and grouped["subsets"]["b"]["delta_down"] == 1.0
    nothing_wrong = revision_stats([revision("a", True, True)])
    assert nothing_wrong["delta_up"] is None and nothing_wrong["delta_down"] == 0.0


def test_best_of_picks_and_curves():
    assert k_values(8) == [1, 2, 4, 8] and k_values(6) == [1, 2, 4, 6] and k_values(1) == [1]
    assert reward_pick([0.1, 0.5, 0.5]) == 1  # the first of a tie
    assert reward_pick([math.nan, -3.0, math.nan]) == 1 and reward_pick([math.nan, math.nan]) == 0
    assert majority_pick(["1/2", "3", "0.5", "3", None, None]) == 0  # {1/2, 0.5} ties {3, 3}: the earlier group
    assert majority_pick(["3", "1/2", "0.5", "\\frac12"]) == 1 and majority_pick([None, None]) is None
    rows = [  # problem 1: the reward picks the right one only at k = 4; problem 2: never right
        {"answers": ["5", "5", "6", "7"], "correct": [False, False, True, False], "rewards": [0.1, 0.0, 0.9, 0.2]},
        {"answers": [None, "2", "2", "3"], "correct": [False, False, False, False], "rewards": [1.0, 0.0, 0.0, 0.0]},
        {"answers": ["4", "9", "4", "4"], "correct": [True, False, True, True], "rewards": [0.0, 0.5, 0.1, 0.1]},
    ]
    stats = best_of_stats(rows, [1, 2, 4])
    assert stats["problems"] == 3
    assert stats["1"] == {"reward": round(1 / 3, 4), "oracle": round(1 / 3, 4), "majority": round(1 / 3, 4)}
    assert stats["2"] == {"reward": 0.0, "oracle": round(1 / 3, 4), "majority": round(1 / 3, 4)}
    assert stats["4"] == {"reward": round(1 / 3, 4), "oracle": round(2 / 3, 4), "majority": round(1 / 3, 4)}


# ------------------------------------------------------------------------------------------------ problems


def test_problems_keep_checkable_math_and_science_pairs_and_count_the_rest():
    rows = [*ROWS,
            {"id": "noref", "subset": "math-MATH-ref", "prompt": "p", "chosen": "It is obvious.", "rejected": "5"},
            {"id": "same", "subset": "math-MATH-ref", "prompt": "p", "chosen": "\\boxed{1/2}", "rejected": "It is 0.5"}]
    problems, skipped = select_problems(examples(rows), subset_prefixes("math-, sci-"))
    assert [p.id for p in problems] == ["gsm", "arc"]
    assert skipped == {"other_subset": 1, "no_reference_answer": 1, "rejected_states_reference": 1}
    gsm, arc = problems
    assert gsm.reference == "7" and not gsm.is_correct(gsm.answer_of(gsm.rejected))
    assert arc.reference == "B" and arc.choices["B"] == "Mars" and arc.is_correct(arc.answer_of("The answer is Mars."))
    assert subset_prefixes("") == () and len(select_problems(examples(rows), ())[0]) == 2
    with pytest.raises(ConfigError, match="no problem to correct.*alpacaeval-easy"):
        select_problems(examples(ROWS[2:]), ("math-",))


# ------------------------------------------------------------------------------------------------ runs


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny critic-mode and standard-mode reward model (its base: a tiny backbone with the real tokenizer)."""
    return make_tiny_reward_models(tmp_path_factory.mktemp("correct"))


def correct(model: Path, data: Path, out: Path, *flags: str) -> int:
    return main(["correct", "--model", str(model), "--data", str(data), "--out", str(out),
                 "--correct.max-new-tokens", "6", "--scoring.max-new-tokens", "5", *flags])


def progress_rows(out: Path, condition: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"progress-{condition}.jsonl").read_text().splitlines()]


def test_correct_command_end_to_end(models, tmp_path, capsys):
    data = write_rows(tmp_path / "pairs.jsonl", ROWS)
    out = tmp_path / "out"
    assert correct(models["critic"], data, out, "--best-of.k", "2") == 0
    printed = capsys.readouterr().out
    assert "critic: accuracy 0.5 ->" in printed and "2 problems" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["problems"] == 2 and report["meta"]["skipped"] == {"other_subset": 1}
    assert list(report["conditions"]) == ["critic", "base", "none"]
    for condition, stats in report["conditions"].items():
        rows = progress_rows(out, condition)
        assert sorted(row["key"] for row in rows) == ["arc:chosen", "arc:rejected", "gsm:chosen", "gsm:rejected"]
        overall = stats["overall"]
        assert overall["revisions"] == 4 and overall["started_wrong"] == 2 and overall["accuracy_before"] == 0.5
        assert overall["fixed"] == sum(r["after"] for r in rows if r["start"] == "rejected")  # recomputable
        assert list(stats["subsets"]) == ["math-gsm8k-ref", "sci-arc-ans"]
        for row in rows:
            assert (row["critique"] is None) == (condition == "none")
            assert row["after"] == equivalent(row["answer"], row["reference"])
        assert all(isinstance(row["critique_reward"], float) for row in rows) == (condition == "critic")
    best = report["best_of"]["overall"]
    assert best["problems"] == 2 and set(best) == {"problems", "1", "2"}
    best_rows = [json.loads(line) for line in (out / "best-of" / "progress.jsonl").read_text().splitlines()]
    assert all(len(row["solutions"]) == len(row["rewards"]) == 2 for row in best_rows)
    markdown = (out / "report.md").read_text()
    assert "| Critic-RM critique | 4 | 50.0% |" in markdown and "Critique-guided best-of-N" in markdown


def test_an_interrupted_run_continues_and_other_settings_are_refused(models, tmp_path, capsys):
    data = write_rows(tmp_path / "pairs.jsonl", ROWS)
    out = tmp_path / "out"
    assert correct(models["critic"], data, out, "--conditions", "none") == 0
    full = progress_rows(out, "none")
    # as if killed after its first batch of two, in the middle of writing the next line
    path = out / "progress-none.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:25])
    (out / "report.json").unlink()
    capsys.readouterr()
    assert correct(models["critic"], data, out, "--conditions", "none", "--correct.batch-size", "1") == 0
    assert "2 of 4 revisions were done earlier" in capsys.readouterr().out
    resumed = progress_rows(out, "none")
    assert [r["key"] for r in resumed] == [r["key"] for r in full]
    assert [r["revision"] for r in resumed] == [r["revision"] for r in full]  # greedy: the same revisions
    assert json.loads((out / "report.json").read_text())["conditions"]["none"]["overall"]["revisions"] == 4
    assert correct(models["critic"], data, out, "--conditions", "none,critic") == 0  # a condition added: runs it
    assert len(progress_rows(out, "critic")) == 4 and len(progress_rows(out, "none")) == 4
    capsys.readouterr()
    assert main(["correct", "--model", str(models["critic"]), "--data", str(data), "--out", str(out),
                 "--correct.max-new-tokens", "7", "--scoring.max-new-tokens", "5"]) == 2
    assert "max_new_tokens changed" in capsys.readouterr().err


def test_bad_input_gets_a_clear_error(models, tmp_path, capsys):
    out = tmp_path / "out"
    data = write_rows(tmp_path / "pairs.jsonl", ROWS)
    no_chosen = write_rows(tmp_path / "no_chosen.jsonl", [{k: v for k, v in ROWS[0].items() if k != "chosen"}])
    chat_only = write_rows(tmp_path / "chat.jsonl", ROWS[2:])
    cases = [
        (lambda: correct(models["critic"], tmp_path / "missing.jsonl", out), "missing.jsonl: no such file or folder"),
        (lambda: correct(models["critic"], no_chosen, out), "line 1, field 'chosen': missing field"),
        (lambda: correct(models["critic"], chat_only, out), "no problem to correct"),
        (lambda: correct(models["critic"], data, out, "--conditions", "critic,judge"),
         "conditions must be a comma-separated"),
        (lambda: correct(models["standard"], data, out, "--conditions", "critic"), "standard-mode reward model"),
        (lambda: main(["correct", "--data", str(data), "--out", str(out)]), "pass --model DIR"),
    ]
    for command, message in cases:
        status = command()
        err = capsys.readouterr().err
        assert status == 2 and message in err and "Traceback" not in err, (message, err)
