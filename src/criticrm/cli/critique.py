"""`criticrm critique`: stage 1a on its own — sample critiques of every response of a data file."""

from __future__ import annotations

from criticrm.cli.common import generator_for, read_pairs
from criticrm.cli.options import Section, add_options, resolve
from criticrm.config_checks import output_folder
from criticrm.data.readers import DataConfig
from criticrm.errors import ConfigError
from criticrm.generation.base import SamplingConfig
from criticrm.models.backbone import ModelConfig
from criticrm.pipeline.critique import CritiqueConfig, format_summary, run_critique
from criticrm.prompts.templates import TemplateSet

SECTIONS = [Section("data", (DataConfig,)), Section("model", (ModelConfig,)),
            Section("critique", (CritiqueConfig, SamplingConfig))]


def register(subparsers) -> None:
    parser = subparsers.add_parser("critique", help="sample N critiques (with scores) of every response",
                                   description=__doc__)
    parser.add_argument("--out", type=output_folder, required=True, help="output folder (re-running resumes it)")
    add_options(parser, SECTIONS)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    configs = resolve(args, SECTIONS)
    data, model = configs[DataConfig], configs[ModelConfig]
    if not data.data:
        raise ConfigError("no input data: pass --data FILE (or set data.data in --config)")
    pairs = read_pairs(data, model).pairs
    critique, sampling = configs[CritiqueConfig], configs[SamplingConfig]
    summary = run_critique(pairs, generator_for(critique, model), TemplateSet(critique.template), critique, sampling,
                           args.out)
    print(format_summary(summary))
    print(f"records: {args.out / 'critiques.jsonl'} (and .parquet); summary: {args.out / 'summary.json'}")
    return 0
