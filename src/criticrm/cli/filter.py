"""`criticrm filter`: stage 1b on its own — keep the critiques that agree with the human labels."""

from __future__ import annotations

from pathlib import Path

from criticrm import rundir
from criticrm.cli.options import add_options, resolve
from criticrm.config import Section
from criticrm.config_checks import output_folder
from criticrm.pipeline.filter import FilterConfig, format_filter_stats
from criticrm.pipeline.stages import filter_stage, stage_report

SECTIONS = [Section("filter", (FilterConfig,))]


def register(subparsers) -> None:
    parser = subparsers.add_parser("filter", help="keep critiques consistent with the preference labels",
                                   description=__doc__)
    parser.add_argument("--critiques", type=Path, required=True, help="output folder of `criticrm critique`")
    parser.add_argument("--out", type=output_folder, required=True, help="output folder (filtered.jsonl, filter_stats.json, report.md)")
    add_options(parser, SECTIONS)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    stats = filter_stage(args.critiques, resolve(args, SECTIONS)[FilterConfig], args.out)
    report = stage_report(args.out, args.out)
    print(format_filter_stats(stats))
    print(f"filtered pairs: {args.out / rundir.FILTERED_FILE}; report: {report}")
    return 0
