"""Config precedence (defaults < YAML < flags), clear config errors, and the stage runner."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import pytest

from criticrm.cli import build_parser
from criticrm.cli.critique import SECTIONS
from criticrm.cli.options import resolve
from criticrm.data.readers import DataConfig
from criticrm.errors import ConfigError
from criticrm.generation.base import SamplingConfig
from criticrm.pipeline.critique import CritiqueConfig
from criticrm.pipeline.runner import StageRunner


def parse(argv):
    return resolve(build_parser().parse_args(["critique", "--out", "o", *argv]), SECTIONS)


def test_defaults_yaml_then_flags(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: {data: a.jsonl, limit: 5}\ncritique: {num_critiques: 2, temperature: 1, few_shot: false}\n")
    built = parse(["--config", str(config), "--num-critiques", "3", "--skip-invalid"])
    assert built[DataConfig].data == "a.jsonl" and built[DataConfig].limit == 5 and built[DataConfig].skip_invalid
    assert built[SamplingConfig].num_critiques == 3  # the flag wins
    assert built[SamplingConfig].temperature == 1.0 and built[SamplingConfig].top_p == 0.95  # YAML, then default
    assert built[CritiqueConfig].few_shot is False


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("critique: {num_critques: 2}", "unknown key(s) in section 'critique': num_critques"),
    ("critique: {num_critiques: two}", "'critique.num_critiques' must be int"),
    ("critique: {backend: tgi}", "backend must be huggingface or openai"),
    ("critique: {num_critiques: 0}", "num_critiques must be at least 1"),
    ("- a list", "expected a mapping of sections"),
    ("data: [1, 2]", "section 'data' must be a mapping"),
])
def test_config_errors_are_clear(tmp_path, yaml_text, message):
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(["--config", str(config)])


def test_stage_runner_skips_redoes_and_keeps_old_output(tmp_path):
    calls = []

    def action(out_dir):
        calls.append(out_dir.name)
        (out_dir / "result.txt").write_text(str(len(calls)))
        return {"n": len(calls)}

    logs = []
    assert StageRunner(tmp_path, log=logs.append).run("a", {"x": 1}, action) == {"n": 1}
    assert StageRunner(tmp_path, log=logs.append).run("a", {"x": 1}, action) == {"n": 1}  # skipped
    assert calls == ["a"] and "skipped" in logs[-1]
    runner = StageRunner(tmp_path, log=logs.append)
    assert runner.run("a", {"x": 2}, action) == {"n": 2}  # settings changed: redone
    assert runner.run("b", {}, action) == {"n": 3}
    assert StageRunner(tmp_path, log=logs.append).run("a", {"x": 3}, action) == {"n": 4}
    assert StageRunner(tmp_path, log=logs.append).run("b", {}, action) == {"n": 5}  # upstream changed
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("a.old-"))
    assert kept and (tmp_path / kept[0] / "result.txt").exists()
    assert json.loads((tmp_path / "a" / "DONE.json").read_text())["result"] == {"n": 4}
    assert StageRunner(tmp_path, force=True, log=logs.append).run("a", {"x": 3}, action) == {"n": 6}


def test_colliding_field_names_get_their_section_as_prefix():
    from criticrm.cli.pipeline import SECTIONS as PIPELINE
    from criticrm.training.config import TrainConfig

    args = build_parser().parse_args(["pipeline", "--batch-size", "8", "--train-batch-size", "2"])
    built = resolve(args, PIPELINE)
    assert built[CritiqueConfig].batch_size == 8 and built[TrainConfig].batch_size == 2


CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
@pytest.mark.parametrize("command", ["critique", "filter", "refine", "train", "pipeline", "score", "serve"])
def test_every_shipped_config_is_read_by_every_stage_command(config, command):
    """One pipeline config drives each stage command too (the benchmarks' ablations run them one by one)."""
    sections = importlib.import_module(f"criticrm.cli.{command}").SECTIONS
    resolve(argparse.Namespace(config=config), sections)
