"""The whole pipeline as one function: a `PipelineConfig` in, a run directory out.

    from criticrm.pipeline import PipelineConfig, run_pipeline
    run_dir = run_pipeline(PipelineConfig.from_yaml("configs/demo.yaml"))

Stage 1 (critiques, filtering, refinement), then both reward models on the same refined data (the
Critic-RM and the standard Bradley-Terry RM baseline), then, when `evaluation.data` names a file, the
base model as a pointwise and a pairwise judge and both reward models evaluated on it, side by side.
Every stage writes its folder of the run directory (`criticrm.rundir`); finished stages are skipped.
`criticrm pipeline` and the quality benchmark call this; so can any script.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from criticrm import rundir
from criticrm.config import (
    Config,
    as_yaml_sections,
    build_sections,
    flat_dict,
    from_sections,
    load_yaml,
    sections_dict,
    sections_of,
)
from criticrm.data.readers import DataConfig
from criticrm.errors import ConfigError
from criticrm.evaluation.run import JudgeKind
from criticrm.generation.base import SamplingConfig
from criticrm.models.backbone import ModelConfig
from criticrm.pipeline.critique import CritiqueConfig, format_summary
from criticrm.pipeline.filter import FilterConfig, format_filter_stats
from criticrm.pipeline.refine import RefineConfig, format_refine_stats
from criticrm.pipeline.report import report_from_dirs
from criticrm.pipeline.runner import RunConfig, StageRunner, record_versions
from criticrm.pipeline.stages import LazyGenerator, critique_stage, filter_stage, read_pairs, refine_stage
from criticrm.training.config import TrainConfig, effective_train_config

TRAIN_MODES = ("critic", "standard")  # the Critic-RM and its baseline, on the same refined data
JUDGES: tuple[str, ...] = typing.get_args(JudgeKind)


@dataclass
class PipelineEvalConfig(Config):
    """The evaluation that ends the pipeline: judges, standard RM and Critic-RM on one file."""

    RENAMED = {"judge_num_critiques": "judge_samples"}

    data: str | None = field(default=None, metadata={
        "help": "evaluation file (RewardBench format: prompt/chosen/rejected/subset[/section]); none: no evaluation"})
    limit: int | None = field(default=None, metadata={"help": "evaluate only the first N examples", "min": 1})
    per_subset: int | None = field(default=None, metadata={
        "help": "evaluate only the first N examples of each subset (a stratified sample)", "min": 1})
    judges: str = field(default="pointwise,pairwise", metadata={
        "help": "comma-separated judge baselines of the base model to evaluate too (pointwise, pairwise; empty: none)"})
    num_critiques: int = field(default=1, metadata={"help": "critiques per response (m) for the Critic-RM", "min": 1})
    judge_samples: int = field(default=1, metadata={
        "help": "samples per response (pointwise judge) or per order (pairwise judge)", "min": 1})

    def __post_init__(self):
        super().__post_init__()
        self.judge_kinds()  # a typo fails now, not after hours of training

    def judge_kinds(self) -> list[str]:
        kinds = [kind.strip() for kind in self.judges.split(",") if kind.strip()]
        unknown = [kind for kind in kinds if kind not in JUDGES]
        if unknown:
            raise ConfigError(f"evaluation.judges: unknown judge {unknown[0]!r}; expected pointwise and/or pairwise")
        return kinds


@dataclass
class PipelineConfig:
    """Every setting of a pipeline run: one field per YAML section (the sampling options sit in `critique`)."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    critique: CritiqueConfig = field(default_factory=CritiqueConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig, metadata={"section": "critique"})
    filter: FilterConfig = field(default_factory=FilterConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluation: PipelineEvalConfig = field(default_factory=PipelineEvalConfig)

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineConfig:
        """A pipeline config from a YAML file with any of the sections (the others keep their defaults)."""
        return from_sections(cls, build_sections(load_yaml(Path(path)), sections_of(cls), str(path)))

    def to_yaml(self) -> str:
        return as_yaml_sections(sections_dict(self))


def run_pipeline(config: PipelineConfig, log: Callable[[str], None] = print) -> Path:
    """Run every stage of `config` in its run directory (finished ones are skipped); returns the directory.

    The run directory records the resolved config (`config.yaml`) and the software it ran on. Progress
    and each stage's summary go to `log`.
    """
    if not config.data.data:
        raise ConfigError("no input data: set data.data to a file of preference pairs")
    config = dataclasses.replace(config, train=effective_train_config(config.train, config.model))
    run_dir = Path(config.run.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / rundir.CONFIG_FILE).write_text(config.to_yaml())
    record_versions(run_dir)
    stages = StageRunner(run_dir, force=config.run.force, log=log)
    generator = LazyGenerator.of(config.critique, config.model)
    report = _stage_one(config, run_dir, stages, generator, log)
    refine_dir = run_dir / rundir.REFINE_DIR
    for mode in TRAIN_MODES:
        _train(config, mode, refine_dir, stages, log)
    comparison = _evaluate(config, run_dir, stages, generator, log)
    log(f"run directory: {run_dir}\n  data report: {report}\n  training data: {refine_dir / rundir.TRAIN_FILE}\n"
        + "".join(f"  {mode} reward model: {run_dir / rundir.train_dir(mode) / rundir.MODEL_DIR}\n"
                  for mode in TRAIN_MODES)
        + (f"  evaluation: {comparison}\n" if comparison else ""))
    return run_dir


def _stage_one(config: PipelineConfig, run_dir: Path, stages: StageRunner, generator: LazyGenerator,
               log: Callable[[str], None]) -> Path:
    """Critiques, filtering and refinement into the run directory; returns the data report."""
    pairs = read_pairs(config.data, config.model).pairs
    log(f"{len(pairs)} pairs from {config.data.data}")
    critiques_dir, filter_dir = run_dir / rundir.CRITIQUES_DIR, run_dir / rundir.FILTER_DIR
    refine_dir = run_dir / rundir.REFINE_DIR

    def logged(result: dict, describe: Callable[[dict], str]) -> dict:
        log(describe(result))
        return result

    stages.run(rundir.CRITIQUES_DIR, _settings(config.data, config.model, config.critique, config.sampling),
               lambda out: logged(critique_stage(pairs, config.critique, config.sampling, generator, out),
                                  format_summary))
    stages.run(rundir.FILTER_DIR, _settings(config.filter),
               lambda out: logged(filter_stage(critiques_dir, config.filter, out), format_filter_stats))
    stages.run(rundir.REFINE_DIR, _settings(config.refine),
               lambda out: logged(refine_stage(filter_dir, config.refine, generator, out), format_refine_stats))
    report = report_from_dirs(run_dir, critiques_dir, filter_dir, refine_dir)
    log(f"data report: {report}")
    return report


def _train(config: PipelineConfig, mode: str, refine_dir: Path, stages: StageRunner,
           log: Callable[[str], None]) -> None:
    """One reward model (`mode` critic or standard) on the refined data."""
    from criticrm.training.trainer import format_summary as format_train_summary
    from criticrm.training.trainer import train_reward_model

    train = dataclasses.replace(config.train, mode=mode)

    def train_stage(out_dir: Path) -> dict:
        summary = train_reward_model(train, refine_dir, out_dir, model_name=config.model.model,
                                     use_cpu=config.model.device == "cpu")
        log(format_train_summary(summary))
        return summary

    stages.run(rundir.train_dir(mode), _settings(train, config.model), train_stage)


def _evaluate(config: PipelineConfig, run_dir: Path, stages: StageRunner, generator: LazyGenerator,
              log: Callable[[str], None]) -> Path | None:
    """Judges of the base model, the standard RM and the Critic-RM on one evaluation file, side by side."""
    from criticrm.data.rewardbench import load_eval_examples
    from criticrm.evaluation.eval_report import compare_reports
    from criticrm.evaluation.run import EvalConfig, run_evaluation
    from criticrm.inference.scorer import ScoringConfig

    evaluation, sampling, critique = config.evaluation, config.sampling, config.critique
    if not evaluation.data:
        return None
    eval_data = dataclasses.replace(config.data, data=evaluation.data, limit=evaluation.limit,
                                    per_subset=evaluation.per_subset)
    examples = load_eval_examples(eval_data)
    log(f"evaluation: {len(examples)} examples from {evaluation.data}")
    judge_sampling = dataclasses.replace(sampling, num_critiques=evaluation.judge_samples)
    scoring = ScoringConfig(num_critiques=evaluation.num_critiques, max_new_tokens=sampling.max_new_tokens,
                            seed=sampling.seed, generation_batch_size=critique.batch_size)
    runs = [(rundir.eval_dir(f"judge-{kind}"), EvalConfig(judge=kind), config.model, judge_sampling)
            for kind in evaluation.judge_kinds()]
    names = {"standard": "standard RM", "critic": f"Critic-RM (m={scoring.num_critiques})"}
    runs += [(rundir.eval_dir(mode), EvalConfig(name=names[mode]),
              dataclasses.replace(config.model, model=str(run_dir / rundir.train_dir(mode) / rundir.MODEL_DIR),
                                  dtype="auto"), sampling)
             for mode in ("standard", "critic")]
    for stage, eval_config, stage_model, stage_sampling in runs:
        def eval_stage(out_dir: Path, eval_config=eval_config, stage_model=stage_model,
                       stage_sampling=stage_sampling) -> dict:
            shared = generator.get() if eval_config.judge else None
            return run_evaluation(examples, eval_config, stage_model, scoring, critique, stage_sampling, out_dir,
                                  data_name=evaluation.data, generator=shared)

        stages.run(stage, _settings(evaluation, eval_config, scoring, stage_sampling, stage_model), eval_stage)
    _cards_with_evaluation(run_dir)
    # The standard RM comes first: every other column is then given its difference from it (the paper's
    # comparison), with a paired bootstrap interval.
    standard = rundir.eval_dir("standard")
    order = [standard, *(stage for stage, *_ in runs if stage != standard)]
    comparison = run_dir / rundir.COMPARISON_DIR
    log(compare_reports([run_dir / stage / rundir.REPORT_JSON for stage in order], comparison))
    return comparison


def _cards_with_evaluation(run_dir: Path) -> None:
    """Each reward model's card now tells its evaluation too (beside its training)."""
    from criticrm.evaluation.eval_report import load_report
    from criticrm.models.card import update_model_card

    for mode in TRAIN_MODES:
        train_dir = run_dir / rundir.train_dir(mode)
        update_model_card(train_dir / rundir.MODEL_DIR,
                          training=json.loads((train_dir / rundir.TRAIN_SUMMARY_FILE).read_text()),
                          evaluation=load_report(run_dir / rundir.eval_dir(mode)))


def _settings(*configs) -> dict:
    """A stage's settings for its fingerprint (the API key is left out: it does not change the output)."""
    settings = {}
    for config in configs:
        settings.update({k: v for k, v in flat_dict(config).items() if k != "api_key"})
    return settings
