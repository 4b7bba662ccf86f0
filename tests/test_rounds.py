"""Self-training rounds of `criticrm pipeline` on a tiny real model: round 2's critiques come from round 1's
Critic-RM, an interrupted round 2 resumes without redoing round 1, each round is reported, `continue` starts
from round 1's weights (reward head included), and bad settings are clear errors.

The tests share one two-round run (made once, interrupted in round 2 and run again); the last one changes
`run.round_init` on it, so it comes last.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from criticrm import rundir
from criticrm.cli import main
from criticrm.data.jsonl import read_jsonl_repairing as read_jsonl
from criticrm.errors import ConfigError
from criticrm.models.critic_rm import CRITICRM_SUBDIR, HEAD_FILE
from criticrm.pipeline import PipelineConfig, run_pipeline
from criticrm.pipeline.stages import LazyGenerator, critique_stage, read_pairs
from criticrm.testing.tiny import make_tiny_backbone, one_thread_if_oversubscribed
from criticrm.training.config import TrainConfig
from criticrm.training.trainer import train_reward_model

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
ROUND_ONE = ("critiques", "filter", "refine", "train-critic", "train-standard", "eval-standard", "eval-critic")
ROUND_TWO = ("critiques", "filter", "refine", "train-critic", "eval-critic")


class Interrupted(Exception):
    """Stands for a kill: raised by the log as a stage starts, before it has written anything."""


def _config_text(tmp: Path, backbone: Path, extra: str = "") -> str:
    # lr 0.01: round 1's LM changes enough for its samples to differ from the base model's
    return f"""
run: {{run_dir: {tmp / 'run'}, rounds: 2{extra}}}
data: {{data: {SAMPLE / 'train.jsonl'}, limit: 6}}
model: {{model: {backbone}}}
critique: {{num_critiques: 2, max_new_tokens: 8, batch_size: 8}}
filter: {{keep_all: true}}
refine: {{strategy: rank, top_k: 1, max_new_tokens: 4}}
train: {{epochs: 1, batch_size: 2, max_length: 512, eval_fraction: 0.34, eval_steps: 0, learning_rate: 0.01,
         head_learning_rate: 0.01, warmup: 0}}
evaluation: {{data: {SAMPLE / 'eval_sections.jsonl'}, limit: 3, judges: ""}}
"""


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory):
    """A two-round run, interrupted as round 2's filter stage starts, then run again to the end."""
    tmp = tmp_path_factory.mktemp("rounds")
    with one_thread_if_oversubscribed():
        backbone = make_tiny_backbone(tmp / "backbone")
        config_file = tmp / "run.yaml"
        config_file.write_text(_config_text(tmp, backbone))
        config = PipelineConfig.from_yaml(config_file)
        first: list[str] = []

        def interrupting(line: str) -> None:
            first.append(line)
            if line == "[round-2/filter] running":
                raise Interrupted

        with pytest.raises(Interrupted):
            run_pipeline(config, log=interrupting)
        run = tmp / "run"
        finished_before = {stage: rundir.read_record(run / stage).get("finished") for stage in ROUND_ONE}
        round_two_before = {stage: "finished" in rundir.read_record(run / "round-2" / stage) for stage in ROUND_TWO}
        second: list[str] = []
        run_pipeline(config, log=second.append)
    return {"tmp": tmp, "run": run, "backbone": backbone, "config": config, "config_file": config_file,
            "first": first, "second": second, "finished_before": finished_before,
            "round_two_before": round_two_before}


def _critique_texts(folder: Path) -> dict[tuple, str]:
    return {(r["pair_id"], r["side"], r["sample_index"]): r["critique"]
            for r in read_jsonl(folder / rundir.RECORDS_FILE)}


def test_round_two_critiques_and_refinement_come_from_round_one_critic_rm(two_rounds, tmp_path):
    run, config = two_rounds["run"], two_rounds["config"]
    round_one_model = str(run / "train-critic" / "model")
    critiques = run / "round-2" / "critiques"
    assert rundir.read_record(critiques)["settings"]["model"] == round_one_model
    assert {r["model"] for r in read_jsonl(critiques / rundir.RECORDS_FILE)} == {round_one_model}
    assert rundir.read_record(run / "round-2" / "refine")["settings"]["model"] == round_one_model  # the meta-judge
    assert rundir.read_record(run / "refine")["settings"]["model"] == str(two_rounds["backbone"])
    # Round 1 is what round 2 would have been on the base model (same pairs, seed and settings): the texts differ.
    round_two = _critique_texts(critiques)
    round_one = _critique_texts(run / "critiques")
    assert round_two.keys() == round_one.keys() and round_two != round_one
    # ... and round 1's Critic-RM, loaded as a causal LM, writes exactly round 2's critiques.
    with one_thread_if_oversubscribed():
        model = dataclasses.replace(config.model, model=round_one_model)
        critique_stage(read_pairs(config.data, config.model).pairs, config.critique, config.sampling,
                       LazyGenerator.of(config.critique, model), tmp_path / "again")
    assert _critique_texts(tmp_path / "again") == round_two


def test_an_interrupted_round_two_resumes_without_redoing_round_one(two_rounds):
    run, first, second = two_rounds["run"], two_rounds["first"], two_rounds["second"]
    assert "[round-2/critiques] running" in first and first[-1] == "[round-2/filter] running"
    assert two_rounds["round_two_before"] == {"critiques": True, "filter": False, "refine": False,
                                              "train-critic": False, "eval-critic": False}
    for stage in ROUND_ONE:
        assert f"[{stage}] finished earlier with the same settings: skipped (run.force redoes it)" in second
        assert rundir.read_record(run / stage)["finished"] == two_rounds["finished_before"][stage]  # not redone
    assert any(line.startswith("[round-2/critiques] finished earlier") for line in second)
    for stage in ROUND_TWO[1:]:
        assert f"[round-2/{stage}] running" in second
        assert "finished" in rundir.read_record(run / "round-2" / stage)


def test_each_round_is_reported_and_compared(two_rounds):
    run = two_rounds["run"]
    assert not (run / "round-2" / "train-standard").exists()  # trained once, in round 1
    rounds = json.loads((run / rundir.ROUNDS_FILE).read_text())
    assert rounds["round_init"] == "base" and [r["round"] for r in rounds["rounds"]] == [1, 2]
    one, two = rounds["rounds"]
    assert one["critiques_by"] == str(two_rounds["backbone"])
    assert two["critiques_by"] == two["refine"]["model"] == str(run / "train-critic" / "model")
    assert two["folder"] == str(run / "round-2")
    for entry in (one, two):
        assert entry["critiques"]["count"] == 24 and entry["critiques"]["parse_rate"] is not None
        assert entry["critiques"]["label_agreement"]["score"] is not None
        assert entry["filter"]["instance_keep_rate"] is not None and entry["refine"]["model_calls"] > 0
        assert entry["training"]["held_out_pairs"] == 2 and entry["training"]["held_out_accuracy"] is not None
        assert entry["training"]["model"] == str(two_rounds["backbone"]) and entry["training"]["head_from"] is None
        assert entry["evaluation"]["n"] == 3 and set(entry["evaluation"]["sections"])
    assert two["evaluation"] == _summary(run / "round-2" / "eval-critic")
    report = (run / rundir.REPORT_FILE).read_text()
    assert report.startswith("# Stage 1 data report") and report.count("## Self-training rounds") == 1
    assert "| | round 1 | round 2 |" in report and (run / rundir.ROUNDS_PLOT).is_file()
    assert "## The round-1 Critic-RM as a judge" in (run / "round-2" / rundir.REPORT_FILE).read_text()
    table = (run / "comparison" / "compare.md").read_text()
    assert "| | standard RM | Critic-RM (m=1) | Critic-RM round 2 (m=1) |" in table
    card = (run / "round-2" / "train-critic" / "model" / "README.md").read_text()
    assert "## Evaluation" in card


def _summary(eval_dir: Path) -> dict:
    summary = json.loads((eval_dir / rundir.REPORT_JSON).read_text())["summary"]
    return {"n": summary["n"], "overall": summary["overall"],
            "length_controlled_accuracy": summary.get("length_controlled_accuracy"),
            "sections": {name: row["score"] for name, row in summary["sections"].items()}}


def _weights(model_dir: Path) -> tuple[dict, dict]:
    return load_file(model_dir / "model.safetensors"), load_file(model_dir / CRITICRM_SUBDIR / HEAD_FILE)


def _close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_continued_training_starts_from_the_saved_model_reward_head_included(two_rounds, tmp_path):
    """One step at a learning rate of 1e-12 leaves a model where it started: round 1's with `head_from`."""
    run, backbone = two_rounds["run"], two_rounds["backbone"]
    previous = run / "train-critic" / "model"
    config = TrainConfig(max_steps=1, batch_size=2, max_length=512, eval_fraction=0.0, eval_steps=0, warmup=0,
                         learning_rate=1e-12, head_learning_rate=1e-12)
    with one_thread_if_oversubscribed():
        continued = train_reward_model(config, run / "refine", tmp_path / "continued", model_name=str(previous),
                                       use_cpu=True, show_progress=False, head_from=previous)
        fresh = train_reward_model(config, run / "refine", tmp_path / "fresh", model_name=str(backbone),
                                   use_cpu=True, show_progress=False)
    assert continued["head_from"] == str(previous.resolve()) and "head_from" not in fresh
    lm, head = _weights(previous)
    continued_lm, continued_head = _weights(tmp_path / "continued" / "model")
    fresh_lm, fresh_head = _weights(tmp_path / "fresh" / "model")
    assert _close(continued_lm, lm) and _close(continued_head, head)
    assert not _close(fresh_lm, lm) and not _close(fresh_head, head)


def test_round_init_continue_redoes_only_round_two_training_and_after(two_rounds):
    run = two_rounds["run"]
    config = dataclasses.replace(two_rounds["config"],
                                 run=dataclasses.replace(two_rounds["config"].run, round_init="continue"))
    logs: list[str] = []
    with one_thread_if_oversubscribed():
        run_pipeline(config, log=logs.append)
    skipped = [line.split("]")[0][1:] for line in logs if "finished earlier with the same settings" in line]
    assert skipped == [*ROUND_ONE, "round-2/critiques", "round-2/filter", "round-2/refine"]
    assert any(line.startswith("[round-2/train-critic] redoing it") for line in logs)
    previous = run / "train-critic" / "model"
    summary = json.loads((run / "round-2" / "train-critic" / rundir.TRAIN_SUMMARY_FILE).read_text())
    assert summary["head_from"] == str(previous.resolve()) and summary["model"] == str(previous)
    rounds = json.loads((run / rundir.ROUNDS_FILE).read_text())
    assert rounds["round_init"] == "continue" and rounds["rounds"][1]["training"]["head_from"] == summary["head_from"]
    assert "reward head included" in (run / rundir.REPORT_FILE).read_text()


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        status = main(argv)
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err


@pytest.mark.parametrize(("flags", "message"), [
    (["--rounds", "0"], "rounds must be >= 1, got 0"),
    (["--run.rounds", "-2"], "rounds must be >= 1, got -2"),
    (["--round-init", "restart"], "round_init must be one of base, continue, got 'restart'"),
    (["--run.rounds", "2", "--critique.backend", "openai", "--base-url", "http://127.0.0.1:9"],
     "run.rounds 2: round 2 writes its critiques with round 1's Critic-RM, which critique.backend openai cannot load"),
    (["--run.rounds", "3", "--train.lora", "--train.no-merge-lora"], "set train.merge_lora true"),
])
def test_bad_round_settings_are_clear_errors(tmp_path, capsys, flags, message):
    status, err = run_cli(["pipeline", "--run.run-dir", str(tmp_path / "run"), "--data.data",
                           str(SAMPLE / "train.jsonl"), *flags], capsys)
    assert status == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before anything ran


def test_rounds_in_yaml_and_help(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("run: {rounds: 3, round_init: continue}\n")
    loaded = PipelineConfig.from_yaml(config)
    assert loaded.run.rounds == 3 and loaded.run.round_init == "continue"
    config.write_text("run: {rounds: 2, round_int: base}\n")
    with pytest.raises(ConfigError, match="round_int \\(did you mean 'round_init'\\?\\)"):
        PipelineConfig.from_yaml(config)
    with pytest.raises(SystemExit):
        main(["pipeline", "--help"])
    text = capsys.readouterr().out
    assert "--run.rounds ROUNDS, --rounds ROUNDS" in text and "--run.round-init {base,continue}" in text
