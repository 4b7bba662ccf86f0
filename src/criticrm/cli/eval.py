"""`criticrm eval`: RewardBench-style evaluation of a trained reward model or of an LLM-judge baseline.

  criticrm eval --data FILE --out DIR --model runs/demo/train-critic/model [--scoring.num-critiques 4] [--samples 8]
  criticrm eval --data FILE --out DIR --model CRITIC_RM --eval.samples 16 --eval.faithfulness
  criticrm eval --data FILE --out DIR --judge pointwise|pairwise [--model BASE_MODEL]
  criticrm eval --compare A/report.json B/report.json ... [--out DIR]

With --judge, --model names the base LM that judges (default: the embedded backbone); the judge's own
options are those of section `judge` (`--judge.num-critiques`, `--judge.temperature`, ...), the
trained model's those of section `scoring` (`--scoring.num-critiques`, ...).
"""

from __future__ import annotations

from pathlib import Path

from criticrm import rundir
from criticrm.cli.options import add_options, resolve
from criticrm.config import Section
from criticrm.config_checks import output_folder
from criticrm.data.readers import DataConfig
from criticrm.data.rewardbench import load_eval_examples
from criticrm.errors import ConfigError
from criticrm.evaluation.run import EvalConfig, run_evaluation
from criticrm.generation.base import SamplingConfig
from criticrm.inference.scorer import ScoringConfig
from criticrm.models.backbone import ModelConfig
from criticrm.pipeline.critique import CritiqueConfig

SECTIONS = [Section("data", (DataConfig,)), Section("model", (ModelConfig,)), Section("eval", (EvalConfig,)),
            Section("scoring", (ScoringConfig,)), Section("judge", (CritiqueConfig, SamplingConfig))]


def register(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a reward model or an LLM judge (RewardBench metrics)",
                                   description=__doc__)
    parser.add_argument("--out", type=output_folder, help="report folder (report.md, report.json, examples.jsonl, plots)")
    parser.add_argument("--compare", type=Path, nargs="+", metavar="REPORT_JSON",
                        help="print a side-by-side table of finished reports instead of evaluating; every "
                             "report after the first gets its overall difference from the first, with a 95%% "
                             "paired bootstrap interval")
    add_options(parser, SECTIONS)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from criticrm.evaluation.eval_report import compare_reports

    if args.compare:
        print(compare_reports(args.compare, args.out))
        return 0
    configs = resolve(args, SECTIONS)
    data = configs[DataConfig]
    if not data.data or not args.out:
        raise ConfigError("pass --data FILE and --out DIR (or --compare REPORT_JSON ...)")
    examples = load_eval_examples(data)
    summary = run_evaluation(examples, configs[EvalConfig], configs[ModelConfig], configs[ScoringConfig],
                             configs[CritiqueConfig], configs[SamplingConfig], args.out, data_name=data.data)
    print(compare_reports([args.out / rundir.REPORT_JSON], None))
    print(f"overall {summary['overall']:.3f} on {len(examples)} examples; report: {args.out / rundir.REPORT_FILE}")
    return 0
