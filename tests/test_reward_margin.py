"""The reward learns from the human label alone: the base judge's scores never offset the Bradley-Terry loss
unless the `margin_source: judge` ablation is asked for; a margin comes only from the user's own column."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from criticrm.data.readers import DataConfig, DataValidationError, load_pairs
from criticrm.data.schema import CritiqueRecord, PreferencePair, TrainingPair
from criticrm.pipeline.filter import FilterConfig, filter_critiques
from criticrm.pipeline.refine import RefineConfig, run_refine
from criticrm.testing.tiny import make_tiny_backbone
from criticrm.training import TrainConfig, train_reward_model

SAMPLE = Path(__file__).parent.parent / "data" / "sample" / "train.jsonl"
# one optimizer step over every pair at once: the logged step-1 reward loss is that of the initial model,
# whose rewards are ~0 (head_init_std 1e-3), so with no margin it is log 2 for every pair
ONE_STEP = TrainConfig(max_length=256, batch_size=8, eval_fraction=0.0, max_steps=1, warmup=0.0,
                       learning_rate=1e-3, lr_scheduler="constant")



def critique(pair_id: str, side: str, index: int, score: int) -> CritiqueRecord:
    return CritiqueRecord(pair_id=pair_id, side=side, sample_index=index, critique=f"A critique.\nScore: {score}/10",
                          parsed_score=score, probability_score=None, score=float(score), score_source="parsed",
                          prompt_tokens=1, completion_tokens=1, finish_reason="stop", backend="test", model="test",
                          template="general", template_hash="x")


def contradicted_training_data(out_dir: Path, user_margins: dict[int, float] | None = None) -> Path:
    """Real sample pairs run through the real filter and refine stages, with base-judge scores that
    contradict every human label (chosen 2-3/10, rejected 8-9/10): every pair fails the instance level
    and is kept reward-only, carrying a judge margin of -6."""
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines()[:8]]
    pairs = [PreferencePair(id=f"p{i}", prompt=r["prompt"], chosen=r["chosen"], rejected=r["rejected"],
                            margin=(user_margins or {}).get(i)) for i, r in enumerate(rows)]
    records = [critique(p.id, side, k, score) for p in pairs
               for side, scores in (("chosen", (2, 3)), ("rejected", (8, 9))) for k, score in enumerate(scores)]
    decisions, _ = filter_critiques(pairs, records, FilterConfig(failed_pairs="reward-only"))
    assert len(decisions) == len(pairs) and not any(d.supervised for d in decisions)
    run_refine(decisions, None, RefineConfig(strategy="none"), out_dir, show_progress=False)
    return out_dir / "train.jsonl"


def step_one(log_dir: Path) -> dict:
    rows = [json.loads(line) for line in (log_dir / "log.jsonl").read_text().splitlines()]
    return next(r for r in rows if r.get("step") == 1 and "reward_loss" in r)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(make_tiny_backbone(tmp_path_factory.mktemp("tiny")))


def test_refined_rows_keep_the_judge_margin_apart(tmp_path):
    data = contradicted_training_data(tmp_path / "refine", user_margins={0: 0.25})
    rows = [TrainingPair.from_dict(json.loads(line)) for line in data.read_text().splitlines()]
    assert len(rows) == 8 and not any(r.critique_supervision for r in rows)
    assert all(r.judge_margin == -6.0 for r in rows)
    assert [r.margin for r in rows] == [0.25] + [None] * 7  # only what the user supplied


def test_legacy_refined_rows_read_their_margin_as_the_judges():
    legacy = {"id": "a", "prompt": "p", "chosen": "c", "rejected": "r", "chosen_critiques": [],
              "rejected_critiques": [], "critique_supervision": False, "margin": -3.0}
    row = TrainingPair.from_dict(legacy)
    assert row.margin is None and row.judge_margin == -3.0


@pytest.mark.parametrize("mode", ["critic", "standard"])
def test_contradicting_judge_scores_leave_the_full_bradley_terry_loss(tiny_dir, tmp_path, mode):
    data = contradicted_training_data(tmp_path / "refine")
    losses = {}
    for source in ("data", "none", "judge"):
        out = tmp_path / f"{mode}-{source}"
        summary = train_reward_model(replace(ONE_STEP, mode=mode, margin_source=source), data, out,
                                     model_name=tiny_dir, show_progress=False)
        losses[source] = step_one(out)["reward_loss"]
        expected_source = "judge" if source == "judge" else "none"
        assert summary["margin"]["source"] == expected_source
        assert json.loads((out / "model" / "criticrm" / "criticrm_config.json").read_text())["training_margin"] == expected_source
    # by default the pipeline's own critique scores do not touch the loss: full -log σ(0) = log 2 per pair
    assert losses["data"] == losses["none"]
    assert losses["data"] == pytest.approx(math.log(2), abs=0.01)
    # the opt-in ablation offsets it by the judge's gap of -6: -log σ(6) ≈ 0.0025, almost no gradient
    assert losses["judge"] == pytest.approx(-math.log(1 / (1 + math.exp(-6))), abs=0.01)


def test_a_user_margin_column_is_used(tiny_dir, tmp_path):
    data = contradicted_training_data(tmp_path / "refine", user_margins={i: 2.0 for i in range(8)})
    out = tmp_path / "out"
    summary = train_reward_model(replace(ONE_STEP, mode="standard"), data, out, model_name=tiny_dir,
                                 show_progress=False)
    assert summary["margin"] == {"source": "data", "scale": 1.0, "pairs_with_margin": 8}
    assert step_one(out)["reward_loss"] == pytest.approx(-math.log(1 / (1 + math.exp(2))), abs=0.01)


# ---- reading the user's margin column ---------------------------------------------------------------------
def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def pair_row(i: int, **extra) -> dict:
    return {"prompt": f"question {i}", "chosen": f"good answer {i}", "rejected": f"bad answer {i}", **extra}


def test_margin_column_read_from_jsonl_and_csv(tmp_path):
    pairs = load_pairs(DataConfig(data=write(tmp_path / "a.jsonl", jsonl([pair_row(0, margin=1.5), pair_row(1, margin=-2)])))).pairs
    assert [p.margin for p in pairs] == [1.5, -2.0]
    csv_text = "prompt,chosen,rejected,gap\nq,good,bad,0.75\n"
    pairs = load_pairs(DataConfig(data=write(tmp_path / "a.csv", csv_text), margin_field="gap")).pairs
    assert pairs[0].margin == 0.75
    pairs = load_pairs(DataConfig(data=write(tmp_path / "b.jsonl", jsonl([pair_row(0)])))).pairs
    assert pairs[0].margin is None


@pytest.mark.parametrize(("rows", "message"), [
    ([pair_row(0, margin="wide"), pair_row(1, margin=1)], "expected a number"),
    ([pair_row(0, margin=True), pair_row(1, margin=1)], "expected a finite number"),
    ([pair_row(0, margin=float("nan")), pair_row(1, margin=1)], "expected a finite number"),
    ([pair_row(0, margin=None), pair_row(1, margin=1)], "missing margin"),
    ([pair_row(0, margin=1), pair_row(1)], "missing margin (other rows have one"),
])
def test_bad_or_missing_margins_are_input_errors_naming_the_row(tmp_path, rows, message):
    path = write(tmp_path / "bad.jsonl", jsonl(rows))
    with pytest.raises(DataValidationError) as error:
        load_pairs(DataConfig(data=path))
    [problem] = error.value.problems
    assert message in problem.message and problem.field == "margin" and "line" in problem.location
    kept = load_pairs(DataConfig(data=path, skip_invalid=True))
    assert kept.invalid_rows == 1 and [p.margin for p in kept.pairs] == [1.0]
