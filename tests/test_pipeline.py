"""The pipeline end to end on a tiny real model: every stage, the evaluation table, and a re-run from Python."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from criticrm import rundir
from criticrm.cli import main
from criticrm.pipeline import PipelineConfig, run_pipeline
from criticrm.testing.tiny import make_tiny_backbone

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
STAGES = ("critiques", "filter", "refine", "train-critic", "train-standard", "eval-judge-pointwise",
          "eval-judge-pairwise", "eval-standard", "eval-critic")



def test_pipeline_runs_every_stage_then_skips_them(tmp_path, capsys):
    backbone = make_tiny_backbone(tmp_path / "backbone")
    config = tmp_path / "run.yaml"
    config.write_text(f"""
run: {{run_dir: {tmp_path / 'run'}}}
data: {{data: {SAMPLE / 'train.jsonl'}, limit: 6}}
model: {{model: {backbone}}}
critique: {{num_critiques: 2, max_new_tokens: 8, batch_size: 8}}
refine: {{strategy: none}}
train: {{epochs: 1, batch_size: 2, max_length: 512, eval_fraction: 0.0, eval_steps: 0, logging_steps: 1}}
evaluation: {{data: {SAMPLE / 'eval_sections.jsonl'}, limit: 3, judges: "pointwise,pairwise"}}
""")
    assert main(["pipeline", "--config", str(config)]) == 0
    first = capsys.readouterr().out
    assert not list((tmp_path / "run").glob("round-*")) and not (tmp_path / "run" / rundir.ROUNDS_FILE).exists()
    assert "Self-training rounds" not in (tmp_path / "run" / rundir.REPORT_FILE).read_text()  # one round: as ever
    for stage in STAGES:
        assert "finished" in rundir.read_record(tmp_path / "run" / stage), stage
    for stage in STAGES[5:]:
        report = json.loads((tmp_path / "run" / stage / "report.json").read_text())
        assert report["summary"]["n"] == 3
    table = (tmp_path / "run" / "comparison" / "compare.md").read_text()
    for name in ("judge-pointwise", "judge-pairwise", "standard RM", "Critic-RM (m=1)"):
        assert name in table and name in first
    assert table.splitlines()[2].startswith("| | standard RM | judge-pointwise |")
    assert "| Δ overall vs standard RM (95% paired bootstrap) | – | " in table
    for mode in ("critic", "standard"):  # each model's card tells its training and its evaluation
        card = (tmp_path / "run" / f"train-{mode}" / "model" / "README.md").read_text()
        assert f"# criticrm {mode}-mode reward model" in card and "## Training" in card
        assert "## Evaluation" in card and "eval_sections.jsonl" in card
    logs = []
    assert run_pipeline(PipelineConfig.from_yaml(config), log=logs.append) == tmp_path / "run"  # the library
    second = "\n".join(logs)
    assert second.count("skipped") >= len(STAGES) and "Critic-RM (m=1)" in second

    # The reward reading the sampled critiques needs rows that carry them: the pipeline redoes the filter and
    # refine stages it finished (the critiques are kept), then the training.
    loaded = PipelineConfig.from_yaml(config)
    logs = []
    run_pipeline(replace(loaded, train=replace(loaded.train, reward_critiques="sampled")), log=logs.append)
    third = "\n".join(logs)
    assert "[critiques] finished earlier" in third and "[filter] redoing" in third and "[train-critic] redoing" in third
    assert "[refine] redoing" in third
    rows = [json.loads(line) for line in (tmp_path / "run" / "refine" / "train.jsonl").read_text().splitlines()]
    assert all(row["sampled_chosen_critiques"] for row in rows if row["critique_supervision"])


def test_no_baseline_trains_and_evaluates_the_critic_rm_alone(tmp_path, capsys):
    """`--no-baseline`: no standard RM is trained or evaluated; the comparison holds the Critic-RM alone."""
    backbone = make_tiny_backbone(tmp_path / "backbone")
    run_dir = tmp_path / "run"
    assert main(["pipeline", "--data", str(SAMPLE / "train.jsonl"), "--limit", "4", "--model", str(backbone),
                 "--run-dir", str(run_dir), "--no-baseline", "--num-critiques", "1", "--max-new-tokens", "4",
                 "--strategy", "none", "--batch-size", "2", "--max-length", "512", "--eval-fraction", "0",
                 "--evaluation.data", str(SAMPLE / "eval_sections.jsonl"), "--evaluation.limit", "2",
                 "--judges", ""]) == 0
    out = capsys.readouterr().out
    assert "finished" in rundir.read_record(run_dir / "train-critic")
    assert "finished" in rundir.read_record(run_dir / "eval-critic")
    assert not (run_dir / "train-standard").exists() and not (run_dir / "eval-standard").exists()
    assert "standard reward model" not in out
    table = (run_dir / "comparison" / "compare.md").read_text()
    assert "Critic-RM (m=1)" in table and "standard RM" not in table
