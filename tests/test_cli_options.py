"""Config precedence (defaults < YAML < flags), one flag rule, last release's spellings, clear config errors."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

from criticrm.cli import build_parser, main
from criticrm.cli.critique import SECTIONS
from criticrm.cli.options import resolve
from criticrm.config import from_sections
from criticrm.data.readers import DataConfig
from criticrm.errors import ConfigError
from criticrm.generation.base import SamplingConfig
from criticrm.pipeline.critique import CritiqueConfig
from criticrm.pipeline.recipe import PipelineConfig
from criticrm.pipeline.refine import RefineConfig
from criticrm.training.config import TrainConfig


def parse(argv):
    return resolve(build_parser().parse_args(["critique", "--out", "o", *argv]), SECTIONS)


def pipeline(argv) -> PipelineConfig:
    command = importlib.import_module("criticrm.cli.pipeline")
    return from_sections(PipelineConfig, resolve(build_parser().parse_args(["pipeline", *argv]), command.SECTIONS))


def test_defaults_yaml_then_flags(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: {data: a.jsonl, limit: 5}\n"
                      "critique: {num_critiques: 2, temperature: 1, few_shot: false, concurrency: 3}\n")
    built = parse(["--config", str(config), "--num-critiques", "3", "--skip-invalid", "--critique.backend", "openai",
                   "--base-url", "http://127.0.0.1:9"])
    assert built[DataConfig].data == "a.jsonl" and built[DataConfig].limit == 5 and built[DataConfig].skip_invalid
    assert built[SamplingConfig].num_critiques == 3  # the flag wins
    assert built[SamplingConfig].temperature == 1.0 and built[SamplingConfig].top_p == 0.95  # YAML, then default
    critique = built[CritiqueConfig]
    assert critique.few_shot is False
    assert critique.generator.backend == "openai" and critique.generator.concurrency == 3  # the nested generator


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("critique: {num_critques: 2}", "unknown key(s) in section 'critique': num_critques"),
    ("critique: {num_critiques: two}", "'critique.num_critiques' must be int"),
    ("critique: {backend: tgi}", "backend must be one of huggingface, openai, vllm, got 'tgi'"),
    ("critique: {score: written}", "score must be one of parsed-or-probability, parsed, probability"),
    ("critique: {num_critiques: 0}", "num_critiques must be >= 1, got 0"),
    ("critque: {num_critiques: 2}", "unknown section 'critque' (did you mean 'critique'?)"),
    ("critique: {temprature: 2}", "temprature (did you mean 'temperature'?)"),
    ("critique: {temperature: .nan}", "temperature must be a finite number, got nan"),
    ("critique: {batch_size: null}", "'critique.batch_size' must be int, got null"),
    ("- a list", "expected a mapping of sections"),
    ("data: [1, 2]", "section 'data' must be a mapping"),
])
def test_config_errors_are_clear(tmp_path, yaml_text, message):
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse(["--config", str(config)])


def test_a_flag_outside_its_choices_is_refused_with_the_choices(tmp_path, capsys):
    status, err = run_cli(["train", "--data", DATA, "--out", str(tmp_path / "out"), "--train.mode", "other"], capsys)
    assert status == 2 and "mode must be one of critic, standard, got 'other'" in err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--train.mode {critic,standard}" in capsys.readouterr().out  # the choices, in the help


def test_section_flags_everywhere_and_short_flags_where_unique():
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--batch-size", "3", "--train.seed", "5"])
    built = resolve(args, importlib.import_module("criticrm.cli.train").SECTIONS)
    assert built[TrainConfig].batch_size == 3 and built[TrainConfig].seed == 5
    config = pipeline(["--train.batch-size", "2", "--critique.batch-size", "8", "--refine.batch-size", "4",
                       "--refine.max-new-tokens", "20", "--data.data", "x.jsonl", "--run-dir", "r"])
    assert (config.train.batch_size, config.critique.batch_size, config.refine.batch_size) == (2, 8, 4)
    assert config.refine.max_new_tokens == 20 and config.data.data == "x.jsonl" and config.run.run_dir == "r"
    assert config.sampling.max_new_tokens == SamplingConfig().max_new_tokens


def test_last_release_spellings_work_with_a_note(capsys):
    config = pipeline(["--batch-size", "8", "--train-batch-size", "2", "--refine-max-new-tokens", "20",
                       "--data", "x.jsonl", "--judge-num-critiques", "3"])
    assert config.critique.batch_size == 8 and config.train.batch_size == 2  # as last release read them
    assert config.refine.max_new_tokens == 20 and config.data.data == "x.jsonl"
    assert config.evaluation.judge_samples == 3
    notes = capsys.readouterr().err
    for old, new in (("--batch-size", "--critique.batch-size"), ("--train-batch-size", "--train.batch-size"),
                     ("--refine-max-new-tokens", "--refine.max-new-tokens"), ("--data", "--data.data"),
                     ("--judge-num-critiques", "--evaluation.judge-samples")):
        assert f"deprecated: {old} is now {new};" in notes
    args = build_parser().parse_args(["eval", "--data", "d", "--out", "o", "--judge-temperature", "0",
                                      "--num-critiques", "4", "--tokenizer", "t"])
    built = resolve(args, importlib.import_module("criticrm.cli.eval").SECTIONS)
    from criticrm.inference.scorer import ScoringConfig

    assert built[SamplingConfig].temperature == 0.0 and built[ScoringConfig].num_critiques == 4
    assert built[CritiqueConfig].generator.tokenizer == "t" and built[ScoringConfig].generator.tokenizer is None


def test_renamed_yaml_keys_read_for_one_release(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("refine: {refine_max_new_tokens: 32, refine_batch_size: 2}\nevaluation: {judge_num_critiques: 2}\n")
    loaded = PipelineConfig.from_yaml(config)
    assert loaded.refine == RefineConfig(max_new_tokens=32, batch_size=2) and loaded.evaluation.judge_samples == 2
    assert "key 'refine.refine_max_new_tokens' is now 'refine.max_new_tokens'" in capsys.readouterr().err


def _options(help_text: str, prefix: str) -> set[str]:
    return set(re.findall(rf"(?<![\w-])--(?:no-)?{prefix}\.[\w.-]+|--{prefix}\.no-[\w-]+", help_text))


@pytest.mark.parametrize("section", ["train", "model"])
def test_training_flags_are_spelled_the_same_in_train_and_pipeline(capsys, section):
    texts = {}
    for command in ("train", "pipeline"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        texts[command] = capsys.readouterr().out
    flags = _options(texts["train"], section)
    assert len(flags) > (40 if section == "train" else 2)
    assert flags == _options(texts["pipeline"], section)


# accelerate's own config files (train_accelerate_*.yaml) sit beside ours
CONFIGS = sorted(p for p in (Path(__file__).parent.parent / "configs").glob("*.yaml")
                 if not p.name.startswith("train_accelerate"))
# What a shipped GPU recipe asks of the machine (a GPU, tensorboard) is set to what every machine has.
ON_ANY_MACHINE = {"model.device": "cpu", "train.report_to": "none"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.name)
@pytest.mark.parametrize("command", ["critique", "filter", "refine", "train", "pipeline", "score", "serve", "correct"])
def test_every_shipped_config_is_read_by_every_stage_command(config, command, capsys):
    """One pipeline config drives each stage command too (the benchmarks' ablations run them one by one)."""
    sections = importlib.import_module(f"criticrm.cli.{command}").SECTIONS
    resolve(argparse.Namespace(config=config, **ON_ANY_MACHINE), sections)
    assert "deprecated" not in capsys.readouterr().err  # the shipped configs use this release's keys


def test_non_utf8_or_unreadable_config_files_are_clear_errors(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_bytes(b"critique:\n  template: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"c.yaml: not UTF-8 text \(byte 0xe9"):
        parse(["--config", str(config)])
    with pytest.raises(ConfigError, match="cannot read it"):
        parse(["--config", str(tmp_path)])


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """The real `criticrm` command in this process: its exit status and stderr (argparse exits itself)."""
    from criticrm.cli import main

    try:
        status = main(argv)
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err


DATA = str(Path(__file__).parent.parent / "data" / "sample" / "train.jsonl")
NO_GPU = not __import__("torch").cuda.is_available()
BAD_VALUES = [  # (command and its required arguments, bad flags, message)
    ("critique", ["--temperature", "nan"], "temperature must be a finite number, got nan"),
    ("critique", ["--temperature", "inf"], "temperature must be a finite number, got inf"),
    ("critique", ["--temperature", "-1"], "temperature must be >= 0"),
    ("critique", ["--top-p", "0"], "top_p must be > 0 and <= 1, got 0.0"),
    ("critique", ["--concurrency", "0"], "concurrency must be >= 1"),
    ("critique", ["--timeout", "0"], "timeout must be > 0"),
    ("critique", ["--max-retries", "-1"], "max_retries must be >= 0"),
    ("critique", ["--batch-size", "0"], "batch_size must be >= 1"),
    ("critique", ["--limit", "0"], "limit must be >= 1"),
    ("critique", ["--backend", "openai"], "backend openai needs base_url"),
    ("critique", ["--backend", "openai", "--base-url", "localhost:8000"], "must start with http://"),
    ("critique", ["--device", "foo"], "device must be auto, cpu, cuda, cuda:N or mps, got 'foo'"),
    *([("critique", ["--device", "cuda"], "no CUDA GPU is available here")] if NO_GPU else []),
    ("critique", ["--dtype", "int8"], "dtype must be one of auto, bf16"),
    ("critique", ["--template", "no/such/template.yaml"], "not a built-in"),
    ("train", ["--max-length", "8"], "max_length must be >= 16, got 8"),
    ("train", ["--max-length", "-5"], "max_length must be >= 16, got -5"),
    ("train", ["--learning-rate", "-1"], "learning_rate must be > 0"),
    ("train", ["--learning-rate", "nan"], "learning_rate must be a finite number"),
    ("train", ["--warmup", "-1"], "warmup must be >= 0"),
    ("train", ["--lora-r", "0"], "lora_r must be >= 1"),
    ("train", ["--logging-steps", "0"], "logging_steps must be >= 1"),
    ("train", ["--head-hidden-size", "-1"], "head_hidden_size must be >= 0"),
    ("train", ["--dataloader-workers", "-1"], "dataloader_workers must be >= 0"),
    ("train", ["--report-to", "foo"], "report_to: unknown integration 'foo'"),
    ("train", ["--deepspeed", "missing.json"], "deepspeed: no such file 'missing.json'"),
    ("train", ["--lambda-schedule", "no_such_module:f"], "cannot import 'no_such_module'"),
    ("train", ["--lambda-schedule", "math:no_such_function"], "math has no function 'no_such_function'"),
    ("train", ["--lambda-schedule", "math:sqrt"], "failed at step 0 of 2: TypeError"),
    ("train", ["--lr-scheduler", "sideways"], "lr_scheduler must be one of"),
    ("score", ["--batch-size", "0"], "batch_size must be >= 1"),
    ("score", ["--num-critiques", "2", "--temperature", "0"], "identical greedy critiques"),
    ("serve", ["--batch-size", "0"], "batch_size must be >= 1"),
    ("serve", ["--num-critiques", "0"], "num_critiques must be >= 1"),
    ("serve", ["--temperature", "-1"], "temperature must be >= 0"),
    ("serve", ["--max-new-tokens", "0"], "max_new_tokens must be >= 1"),
    ("serve", ["--top-p", "2"], "top_p must be > 0 and <= 1, got 2.0"),
    ("serve", ["--port", "70000"], "port must be >= 0 and <= 65535"),
    ("serve", ["--max-wait-ms", "nan"], "max_wait_ms must be a finite number"),
    ("eval", ["--samples", "-1"], "samples must be >= 0"),
    ("correct", ["--conditions", "critic,judge"], "conditions must be a comma-separated list of critic, base, none"),
    ("correct", ["--best-of.k", "-1"], "k must be >= 0"),
    ("correct", ["--correct.max-new-tokens", "0"], "max_new_tokens must be >= 1"),
    ("correct", ["--correct.backend", "openai"], "backend openai needs base_url"),
]
REQUIRED = {"critique": ["--data", DATA, "--out", "{tmp}/out"], "train": ["--data", DATA, "--out", "{tmp}/out"],
            "score": ["--model", "{tmp}", "--data", DATA, "--out", "{tmp}/s.jsonl"], "serve": ["--model", "{tmp}"],
            "eval": ["--data", DATA, "--out", "{tmp}/out"],
            "correct": ["--model", "{tmp}", "--data", DATA, "--out", "{tmp}/out"]}


@pytest.mark.parametrize(("command", "flags", "message"), BAD_VALUES, ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_bad_values_stop_every_command_before_anything_loads(tmp_path, capsys, command, flags, message):
    required = [arg.format(tmp=tmp_path) for arg in REQUIRED[command]]
    status, err = run_cli([command, *required, *flags], capsys)
    assert status == 2 and message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_outputs_that_cannot_be_written_stop_the_command(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for command, out, message in [("critique", a_file, "is a file; expected a folder"),
                                  ("critique", a_file / "below", "is a file, not a folder"),
                                  ("critique", "/proc/criticrm-out", "cannot write /proc/criticrm-out"),
                                  ("score", tmp_path, "is a folder; expected a file"),
                                  ("pipeline", a_file, "is a file; expected a folder")]:
        flag = "--run-dir" if command == "pipeline" else "--out"
        extra = ["--model", str(tmp_path)] if command == "score" else []
        status, err = run_cli([command, "--data", DATA, *extra, flag, str(out)], capsys)
        assert status == 2 and message in err and "Traceback" not in err, (command, err)


def test_a_percent_sign_in_an_option_help_renders_in_help():
    """argparse %-formats every help string: a '%' written in a field's help must still print as itself."""
    from dataclasses import dataclass, field

    from criticrm.cli.options import add_options
    from criticrm.config import Config, Section

    @dataclass
    class Shares(Config):
        keep: float = field(default=0.5, metadata={"help": "share kept (50% by default)"})

    parser = argparse.ArgumentParser(prog="x")
    add_options(parser, [Section("filter", (Shares,))])
    assert "share kept (50% by default) (default: 0.5)" in " ".join(parser.format_help().split())
