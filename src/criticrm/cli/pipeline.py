"""`criticrm pipeline`: every stage in order inside one run directory, configured from one YAML file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from criticrm.cli.common import generator_for, read_pairs
from criticrm.cli.options import Section, add_options, as_yaml_sections, resolve
from criticrm.data.readers import DataConfig
from criticrm.errors import ConfigError
from criticrm.generation.base import SamplingConfig
from criticrm.models.backbone import ModelConfig
from criticrm.pipeline.critique import CritiqueConfig, format_summary, run_critique
from criticrm.pipeline.runner import RunConfig, StageRunner, record_versions
from criticrm.prompts.templates import TemplateSet

SECTIONS = [Section("run", (RunConfig,)), Section("data", (DataConfig,)), Section("model", (ModelConfig,)),
            Section("critique", (CritiqueConfig, SamplingConfig))]


def register(subparsers) -> None:
    parser = subparsers.add_parser("pipeline", help="run every stage in a run directory (finished stages are skipped)",
                                   description=__doc__)
    add_options(parser, SECTIONS)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    configs = resolve(args, SECTIONS)
    run, data, model = configs[RunConfig], configs[DataConfig], configs[ModelConfig]
    critique, sampling = configs[CritiqueConfig], configs[SamplingConfig]
    if not data.data:
        raise ConfigError("no input data: set data.data in the config (or pass --data FILE)")
    run_dir = Path(run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(as_yaml_sections(
        {"run": run, "data": data, "model": model, "critique": [critique, sampling]}))
    record_versions(run_dir)
    stages = StageRunner(run_dir, force=run.force)
    pairs = read_pairs(data, model).pairs
    print(f"{len(pairs)} pairs from {data.data}")

    def critique_stage(out_dir: Path) -> dict:
        summary = run_critique(pairs, generator_for(critique, model), TemplateSet(critique.template), critique,
                               sampling, out_dir)
        print(format_summary(summary))
        return summary

    stages.run("critiques", _settings(data, model, critique, sampling), critique_stage)
    print(f"run directory: {run_dir} (critiques: {run_dir / 'critiques'})")
    return 0


def _settings(*configs) -> dict:
    """Stage settings for the fingerprint (the API key is left out: it does not change the output)."""
    settings = {}
    for config in configs:
        settings.update({k: v for k, v in dataclasses.asdict(config).items() if k != "api_key"})
    return settings
