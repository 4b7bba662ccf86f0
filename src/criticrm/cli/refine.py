"""`criticrm refine`: stage 1c on its own — rank or merge the kept critiques, write the training data."""

from __future__ import annotations

import json
from pathlib import Path

from criticrm.cli.common import generator_for
from criticrm.cli.filter import SOURCE_FILE
from criticrm.cli.options import Section, add_options, resolve
from criticrm.config_checks import output_folder
from criticrm.evaluation.report import report_from_dirs
from criticrm.generation.base import SamplingConfig
from criticrm.models.backbone import ModelConfig
from criticrm.pipeline.critique import CritiqueConfig
from criticrm.pipeline.filter import read_filtered
from criticrm.pipeline.refine import RefineConfig, format_refine_stats, run_refine

# The backend options (--backend, --base-url, --batch-size, ...) are the critique section's, so one
# YAML file drives both stages; the critique-only ones (--template, --few-shot, --score) are unused here,
# and the critique stage's sampling keys are accepted in that section but not read (refine samples
# with its own settings).
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
    model, critique, refine = configs[ModelConfig], configs[CritiqueConfig], configs[RefineConfig]
    decisions = read_filtered(args.in_dir)
    needs_model = refine.strategy != "none" and any(d.supervised for d in decisions)
    generator = generator_for(critique, model) if needs_model else None
    stats = run_refine(decisions, generator, refine, args.out)
    print(format_refine_stats(stats))
    report = report_from_dirs(args.out, _critiques_dir(args.in_dir), args.in_dir, args.out)
    print(f"training data: {args.out / 'train.jsonl'} (and .parquet); report: {report}")
    return 0


def _critiques_dir(filter_dir: Path) -> Path | None:
    """The critique folder a filter folder was made from (recorded by `criticrm filter`), if known."""
    source = filter_dir / SOURCE_FILE
    return Path(json.loads(source.read_text())["critiques"]) if source.is_file() else None
