"""`criticrm filter`: stage 1b on its own — keep the critiques that agree with the human labels."""

from __future__ import annotations

import json
from pathlib import Path

from criticrm.cli.options import Section, add_options, resolve
from criticrm.config_checks import output_folder
from criticrm.evaluation.report import write_data_report
from criticrm.pipeline.filter import FilterConfig, format_filter_stats, load_critique_dir, run_filter

SECTIONS = [Section("filter", (FilterConfig,))]
SOURCE_FILE = "source.json"  # where the critiques came from (the report of a later stage reads them)


def register(subparsers) -> None:
    parser = subparsers.add_parser("filter", help="keep critiques consistent with the preference labels",
                                   description=__doc__)
    parser.add_argument("--critiques", type=Path, required=True, help="output folder of `criticrm critique`")
    parser.add_argument("--out", type=output_folder, required=True, help="output folder (filtered.jsonl, filter_stats.json, report.md)")
    add_options(parser, SECTIONS)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    config = resolve(args, SECTIONS)[FilterConfig]
    pairs, records, summary = load_critique_dir(args.critiques)
    _, stats = run_filter(pairs, records, config, args.out)
    (args.out / SOURCE_FILE).write_text(json.dumps({"critiques": str(args.critiques.resolve())}, indent=2))
    report = write_data_report(args.out, summary, stats, None, records)
    print(format_filter_stats(stats))
    print(f"filtered pairs: {args.out / 'filtered.jsonl'}; report: {report}")
    return 0
