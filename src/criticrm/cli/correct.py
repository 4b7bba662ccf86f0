"""`criticrm correct`: does a critique help a model correct a wrong answer, or talk it out of a right one?

  criticrm correct --model runs/demo/train-critic/model --data dev_sections.jsonl --out runs/correct [--per-subset 5]
  criticrm correct ... --conditions critic,none --reviser base --best-of.k 8

For every math / science pair (`--subsets`, subset-name prefixes) the reference answer is read from the
chosen response; the rejected (wrong) and the chosen (right) solution are each critiqued (by the Critic-RM,
by the base model as the pointwise judge, or not at all), revised by the reviser, and the revised final
answer is checked. The reviser's engine is section `correct` (`--correct.backend openai --correct.base-url
URL` for a server); the Critic-RM's critiques follow section `scoring`. Re-running resumes.
"""

from __future__ import annotations

from criticrm import rundir
from criticrm.cli.options import add_options, resolve
from criticrm.config import Section
from criticrm.config_checks import output_folder
from criticrm.correction.problems import select_problems, subset_prefixes
from criticrm.correction.run import BestOfConfig, CorrectionConfig, run_correction
from criticrm.data.readers import DataConfig
from criticrm.data.rewardbench import load_eval_examples
from criticrm.errors import ConfigError
from criticrm.inference.scorer import ScoringConfig
from criticrm.models.backbone import ModelConfig

SECTIONS = [Section("data", (DataConfig,)), Section("model", (ModelConfig,)), Section("correct", (CorrectionConfig,)),
            Section("best-of", (BestOfConfig,)), Section("scoring", (ScoringConfig,))]


def register(subparsers) -> None:
    parser = subparsers.add_parser("correct", help="critique-driven correction: revise answers after a critique",
                                   description=__doc__)
    parser.add_argument("--out", type=output_folder, help="report folder (report.md, report.json, progress files)")
    add_options(parser, SECTIONS)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    configs = resolve(args, SECTIONS)
    data, model, config = configs[DataConfig], configs[ModelConfig], configs[CorrectionConfig]
    if not data.data or not args.out or not model.model:
        raise ConfigError("pass --model DIR (a trained reward-model folder), --data FILE and --out DIR")
    problems, skipped = select_problems(load_eval_examples(data), subset_prefixes(config.subsets))
    report = run_correction(problems, config, configs[BestOfConfig], model, configs[ScoringConfig], args.out,
                            skipped=skipped, data_name=data.data)
    for name, stats in report["conditions"].items():
        overall = stats["overall"]
        print(f"{name}: accuracy {overall['accuracy_before']} -> {overall['accuracy_after']}, "
              f"delta up {overall['delta_up']}, delta down {overall['delta_down']}")
    print(f"{len(problems)} problems; report: {args.out / rundir.REPORT_FILE}")
    return 0
