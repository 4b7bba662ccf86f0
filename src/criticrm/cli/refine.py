"""`criticrm refine`: stage 1c on its own — rank or merge the kept critiques, write the training data."""

from __future__ import annotations

from pathlib import Path

from criticrm import rundir
from criticrm.cli.options import add_options, resolve
from criticrm.config import Section
from criticrm.config_checks import output_folder
from criticrm.generation.base import SamplingConfig
from criticrm.models.backbone import ModelConfig
from criticrm.pipeline.critique import CritiqueConfig
from criticrm.pipeline.refine import RefineConfig, format_refine_stats
from criticrm.pipeline.stages import LazyGenerator, refine_stage, stage_report

# The generator options (backend, base_url, batch_size, ...) are the critique section's, so one YAML file
# drives both stages; the critique-only ones (template, few_shot, score) are unused here, and the
# critique stage's sampling keys are accepted in that section but not read (refine samples with its own
# settings).
SECTIONS = [Section("model", (ModelConfig,)), Section("critique", (CritiqueConfig,), also_accepts=(SamplingConfig,)),
            Section("refine", (RefineConfig,))]


def register(subparsers) -> None:
    parser = subparsers.add_parser("refine", help="rank or summarize the kept critiques; write the training dataset",
                                   description=__doc__)
    parser.add_argument("--in", dest="in_dir", type=Path, required=True, help="output folder of `criticrm filter`")
    parser.add_argument("--out", type=output_folder, required=True,
                        help="output folder: train.jsonl, train.parquet, refine_stats.json, report.md (re-running resumes it)")
    add_options(parser, SECTIONS)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    configs = resolve(args, SECTIONS)
    generator = LazyGenerator.of(configs[CritiqueConfig], configs[ModelConfig])
    stats = refine_stage(args.in_dir, configs[RefineConfig], generator, args.out)
    print(format_refine_stats(stats))
    report = stage_report(args.out, args.in_dir, args.out)
    print(f"training data: {args.out / rundir.TRAIN_FILE} (and .parquet); report: {report}")
    return 0
