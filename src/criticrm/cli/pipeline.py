"""`criticrm pipeline`: every stage in order inside one run directory, configured from one YAML file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from criticrm.cli.common import generator_for, read_pairs
from criticrm.cli.options import Section, add_options, as_yaml_sections, resolve
from criticrm.cli.train import effective_train_config
from criticrm.data.readers import DataConfig
from criticrm.errors import ConfigError
from criticrm.evaluation.data import load_eval_examples
from criticrm.evaluation.eval_report import compare_reports
from criticrm.evaluation.report import report_from_dirs
from criticrm.evaluation.run import EvalConfig, PipelineEvalConfig, run_evaluation
from criticrm.generation.base import SamplingConfig
from criticrm.inference.scorer import ScoringConfig
from criticrm.models.backbone import ModelConfig
from criticrm.pipeline.critique import CritiqueConfig, format_summary, run_critique
from criticrm.pipeline.filter import (
    FilterConfig,
    format_filter_stats,
    load_critique_dir,
    read_filtered,
    run_filter,
)
from criticrm.pipeline.refine import RefineConfig, format_refine_stats, run_refine
from criticrm.pipeline.runner import RunConfig, StageRunner, record_versions
from criticrm.prompts.templates import TemplateSet
from criticrm.training.config import TrainConfig
from criticrm.training.trainer import format_summary as format_train_summary
from criticrm.training.trainer import train_reward_model

TRAIN_MODES = ("critic", "standard")  # the Critic-RM and its baseline, on the same refined data

SECTIONS = [Section("run", (RunConfig,)), Section("data", (DataConfig,)), Section("model", (ModelConfig,)),
            Section("critique", (CritiqueConfig, SamplingConfig)), Section("filter", (FilterConfig,)),
            Section("refine", (RefineConfig,)), Section("train", (TrainConfig,)),
            Section("evaluation", (PipelineEvalConfig,))]


def register(subparsers) -> None:
    parser = subparsers.add_parser("pipeline", help="run every stage in a run directory (finished stages are skipped)",
                                   description=__doc__)
    add_options(parser, SECTIONS)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    configs = resolve(args, SECTIONS)
    run, data, model = configs[RunConfig], configs[DataConfig], configs[ModelConfig]
    critique, sampling = configs[CritiqueConfig], configs[SamplingConfig]
    filtering, refine = configs[FilterConfig], configs[RefineConfig]
    train = effective_train_config(configs[TrainConfig], model)
    evaluation = configs[PipelineEvalConfig]
    judges = evaluation.judge_kinds()
    if not data.data:
        raise ConfigError("no input data: set data.data in the config (or pass --data FILE)")
    run_dir = Path(run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(as_yaml_sections(
        {"run": run, "data": data, "model": model, "critique": [critique, sampling], "filter": filtering,
         "refine": refine, "train": train, "evaluation": evaluation}))
    record_versions(run_dir)
    stages = StageRunner(run_dir, force=run.force)
    pairs = read_pairs(data, model).pairs
    print(f"{len(pairs)} pairs from {data.data}")
    generator = _SharedGenerator(critique, model)
    critiques_dir, filter_dir, refine_dir = run_dir / "critiques", run_dir / "filter", run_dir / "refine"

    def critique_stage(out_dir: Path) -> dict:
        summary = run_critique(pairs, generator.get(), TemplateSet(critique.template), critique, sampling, out_dir)
        print(format_summary(summary))
        return summary

    def filter_stage(out_dir: Path) -> dict:
        stage_pairs, records, _ = load_critique_dir(critiques_dir)
        _, stats = run_filter(stage_pairs, records, filtering, out_dir)
        print(format_filter_stats(stats))
        return stats

    def refine_stage(out_dir: Path) -> dict:
        decisions = read_filtered(filter_dir)
        needs_model = refine.strategy != "none" and any(d.supervised for d in decisions)
        stats = run_refine(decisions, generator.get() if needs_model else None, refine, out_dir)
        print(format_refine_stats(stats))
        return stats

    stages.run("critiques", _settings(data, model, critique, sampling), critique_stage)
    stages.run("filter", _settings(filtering), filter_stage)
    stages.run("refine", _settings(refine), refine_stage)
    report = report_from_dirs(run_dir, critiques_dir, filter_dir, refine_dir)
    print(f"data report: {report}")
    for mode in TRAIN_MODES:
        mode_config = dataclasses.replace(train, mode=mode)

        def train_stage(out_dir: Path, config: TrainConfig = mode_config) -> dict:
            summary = train_reward_model(config, refine_dir, out_dir, model_name=model.model,
                                         use_cpu=model.device == "cpu")
            print(format_train_summary(summary))
            return summary

        stages.run(f"train-{mode}", _settings(mode_config, model), train_stage)
    comparison = _evaluate(run_dir, stages, evaluation, judges, data, model, critique, sampling, generator)
    print(f"run directory: {run_dir}\n  data report: {report}\n  training data: {refine_dir / 'train.jsonl'}\n"
          + "".join(f"  {mode} reward model: {run_dir / f'train-{mode}' / 'model'}\n" for mode in TRAIN_MODES)
          + (f"  evaluation: {comparison}\n" if comparison else ""))
    return 0


def _evaluate(run_dir: Path, stages: StageRunner, evaluation: PipelineEvalConfig, judges: list[str],
              data: DataConfig, model: ModelConfig, critique: CritiqueConfig, sampling: SamplingConfig,
              generator: _SharedGenerator) -> Path | None:
    """Judges of the base model, the standard RM and the Critic-RM on one evaluation file, side by side."""
    if not evaluation.data:
        return None
    eval_data = dataclasses.replace(data, data=evaluation.data, limit=evaluation.limit,
                                    per_subset=evaluation.per_subset)
    examples = load_eval_examples(eval_data)
    print(f"evaluation: {len(examples)} examples from {evaluation.data}")
    judge_sampling = dataclasses.replace(sampling, num_critiques=evaluation.judge_num_critiques)
    scoring = ScoringConfig(num_critiques=evaluation.num_critiques, max_new_tokens=sampling.max_new_tokens,
                            seed=sampling.seed, generation_batch_size=critique.batch_size)
    runs = [(f"eval-judge-{kind}", EvalConfig(judge=kind), model, judge_sampling) for kind in judges]
    names = {"standard": "standard RM", "critic": f"Critic-RM (m={scoring.num_critiques})"}
    runs += [(f"eval-{mode}", EvalConfig(name=names[mode]),
              dataclasses.replace(model, model=str(run_dir / f"train-{mode}" / "model"), dtype="auto"), sampling)
             for mode in ("standard", "critic")]
    for stage, config, stage_model, stage_sampling in runs:
        def eval_stage(out_dir: Path, config=config, stage_model=stage_model, stage_sampling=stage_sampling) -> dict:
            shared = generator.get() if config.judge else None
            return run_evaluation(examples, config, stage_model, scoring, critique, stage_sampling, out_dir,
                                  data_name=evaluation.data, generator=shared)

        stages.run(stage, _settings(evaluation, config, scoring, stage_sampling, stage_model), eval_stage)
    # The standard RM comes first: every other column is then given its difference from it (the paper's
    # comparison), with a paired bootstrap interval.
    order = ["eval-standard", *(stage for stage, *_ in runs if stage != "eval-standard")]
    table = compare_reports([run_dir / stage / "report.json" for stage in order], run_dir / "comparison")
    print(table)
    return run_dir / "comparison"


class _SharedGenerator:
    """Loads the model on first use only, so a run whose model stages are all finished loads nothing."""

    def __init__(self, critique: CritiqueConfig, model: ModelConfig):
        self.critique, self.model, self._generator = critique, model, None

    def get(self):
        if self._generator is None:
            self._generator = generator_for(self.critique, self.model)
        return self._generator


def _settings(*configs) -> dict:
    """Stage settings for the fingerprint (the API key is left out: it does not change the output)."""
    settings = {}
    for config in configs:
        settings.update({k: v for k, v in dataclasses.asdict(config).items() if k != "api_key"})
    return settings
