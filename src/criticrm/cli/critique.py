"""`criticrm critique`: stage 1a on its own — sample N critiques of every response of a data file."""

from __future__ import annotations

from criticrm import rundir
from criticrm.cli.options import add_options, resolve
from criticrm.config import Section
from criticrm.config_checks import output_folder
from criticrm.data.readers import DataConfig
from criticrm.errors import ConfigError
from criticrm.generation.base import SamplingConfig
from criticrm.models.backbone import ModelConfig
from criticrm.pipeline.critique import CritiqueConfig, format_summary
from criticrm.pipeline.stages import LazyGenerator, critique_stage, read_pairs

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
    critique, sampling = configs[CritiqueConfig], configs[SamplingConfig]
    summary = critique_stage(read_pairs(data, model).pairs, critique, sampling, LazyGenerator.of(critique, model),
                             args.out)
    print(format_summary(summary))
    print(f"records: {args.out / rundir.RECORDS_FILE} (and .parquet); "
          f"summary: {args.out / rundir.CRITIQUE_SUMMARY_FILE}")
    return 0
