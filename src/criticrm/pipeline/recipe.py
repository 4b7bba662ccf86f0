"""The whole pipeline as one function: a `PipelineConfig` in, a run directory out.

    from criticrm.pipeline import PipelineConfig, run_pipeline
    run_dir = run_pipeline(PipelineConfig.from_yaml("configs/demo.yaml"))

Stage 1 (critiques, filtering, refinement), then both reward models on the same refined data (the
Critic-RM and, unless `run.baseline` is off, the standard Bradley-Terry RM baseline), then, when `evaluation.data` names a file, the
base model as a pointwise and a pairwise judge and both reward models evaluated on it, side by side.
Every stage writes its folder of the run directory (`criticrm.rundir`); finished stages are skipped.
With `run.rounds` K > 1 the Critic-RM then writes the critiques of a new round of self-training, K - 1
times (`_next_round`), each round in its own `round-k/` folder.
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
from criticrm.data.schema import PreferencePair
from criticrm.errors import ConfigError
from criticrm.evaluation.run import JudgeKind
from criticrm.generation.base import SamplingConfig
from criticrm.models.backbone import ModelConfig
from criticrm.pipeline.critique import CritiqueConfig, format_summary
from criticrm.pipeline.filter import FilterConfig, format_filter_stats
from criticrm.pipeline.refine import RefineConfig, format_refine_stats
from criticrm.pipeline.report import report_from_dirs
from criticrm.pipeline.rounds import round_numbers, write_rounds_report
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

    def __post_init__(self):
        """Settings that are fine alone but not together: refused before any data or model loads."""
        if self.run.rounds > 1 and self.critique.generator.backend != "huggingface":
            raise ConfigError(f"run.rounds {self.run.rounds}: round 2 writes its critiques with round 1's Critic-RM, "
                              f"which critique.backend {self.critique.generator.backend} cannot load (a server serves "
                              "the model it was started with); use critique.backend huggingface, or run.rounds 1")
        if self.run.rounds > 1 and self.train.lora and not self.train.merge_lora:
            raise ConfigError(f"run.rounds {self.run.rounds}: a later round loads the Critic-RM as a causal LM, but "
                              "train.no-merge-lora saves a LoRA adapter; set train.merge_lora true")

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineConfig:
        """A pipeline config from a YAML file with any of the sections (the others keep their defaults)."""
        return from_sections(cls, build_sections(load_yaml(Path(path)), sections_of(cls), str(path)))

    def to_yaml(self) -> str:
        return as_yaml_sections(sections_dict(self))


def run_pipeline(config: PipelineConfig, log: Callable[[str], None] = print) -> Path:
    """Run every stage of `config` in its run directory (finished ones are skipped); returns the directory.

    The run directory records the resolved config (`config.yaml`) and the software it ran on. Progress
    and each stage's summary go to `log`. With `run.rounds` K > 1, self-training rounds 2..K follow round 1
    (`_next_round`), and the comparison and the run's report show every round's Critic-RM.
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
    pairs = read_pairs(config.data, config.model).pairs
    log(f"{len(pairs)} pairs from {config.data.data}")
    report = _stage_one(config, pairs, run_dir, stages, generator, log)
    refine_dir = run_dir / rundir.REFINE_DIR
    for mode in _train_modes(config):
        _train(config, mode, refine_dir, stages, log)
    examples = _evaluation_examples(config, log)
    evaluated = _evaluate(config, 1, run_dir, stages, generator, examples)
    generator.release()  # the base model's last use: the judges
    for round_number in range(2, config.run.rounds + 1):
        stages, folders = _next_round(config, round_number, pairs, stages, examples, log)
        evaluated += folders
    comparison = _compare(run_dir, evaluated, log) if evaluated else None
    if config.run.rounds > 1:
        rounds = [round_numbers(rundir.round_dir(run_dir, k), k) for k in range(1, config.run.rounds + 1)]
        log(f"rounds: {write_rounds_report(run_dir, rounds, config.run.round_init)} (and a section of {report})")
    log(f"run directory: {run_dir}\n  data report: {report}\n  training data: {refine_dir / rundir.TRAIN_FILE}\n"
        + "".join(f"  {mode} reward model: {run_dir / rundir.train_dir(mode) / rundir.MODEL_DIR}\n"
                  for mode in _train_modes(config))
        + "".join(f"  critic reward model of round {k}: {_critic_of(run_dir, k)}\n"
                  for k in range(2, config.run.rounds + 1))
        + (f"  evaluation: {comparison}\n" if comparison else ""))
    return run_dir


def _train_modes(config: PipelineConfig) -> tuple[str, ...]:
    """The reward models round 1 trains: the Critic-RM, and the standard RM unless `run.baseline` is off."""
    return TRAIN_MODES if config.run.baseline else ("critic",)


def _critic_of(run_dir: Path, round_number: int) -> Path:
    """The Critic-RM a round trains (the standard RM is round 1's only)."""
    return rundir.round_dir(run_dir, round_number) / rundir.train_dir("critic") / rundir.MODEL_DIR


def _next_round(config: PipelineConfig, round_number: int, pairs: list[PreferencePair], previous: StageRunner,
                examples: list | None, log: Callable[[str], None]) -> tuple[StageRunner, list[Path]]:
    """Self-training round k >= 2 in `round-k/`: round k-1's Critic-RM writes, and refines, the critiques of the
    same pairs; they are filtered as in round 1; a Critic-RM is trained on them and evaluated.

    The Critic-RM's saved folder is, at its top level, an ordinary causal LM (its LM head, the critique
    writer); the generator loads it like any backbone. It is also refinement's meta-judge, as the base model
    is in round 1: the model that wrote the critiques ranks or merges them (the paper's self-refinement), the
    base model would bring back the judgement the round is meant to move away from, and a round loads one
    model, once.

    `run.round_init` says what training starts from. `base` (the default): the base backbone with a fresh
    reward head, as in round 1, so a round differs from the one before only in its data, and no model is
    trained for K epochs on the same pairs (on a small data set continued training overfits, and a
    held-out accuracy would mix both effects), as STaR restarts from the base model at every iteration.
    `continue`: round k-1's Critic-RM, reward head included, the iterative scheme of self-rewarding models.

    The round's fingerprint chain starts from round k-1's Critic-RM stage: any change before it redoes this
    round; a change of its evaluation alone does not. The standard RM is not trained again: its data holds
    no critiques, so it would be the same model.
    """
    run_dir = Path(config.run.run_dir)
    round_dir = rundir.round_dir(run_dir, round_number)
    critic = dataclasses.replace(config.model, model=str(_critic_of(run_dir, round_number - 1)))
    upstream = rundir.fingerprint({"round": round_number, "previous": previous.keys[rundir.train_dir("critic")]})
    stages = StageRunner(round_dir, force=config.run.force, log=log, upstream=upstream, label=f"{round_dir.name}/")
    log(f"self-training round {round_number}: critiques by {critic.model}")
    generator = LazyGenerator.of(config.critique, critic)
    _stage_one(config, pairs, round_dir, stages, generator, log, critic, judge=f"round-{round_number - 1} Critic-RM")
    generator.release()  # training needs the memory
    continuing = config.run.round_init == "continue"
    _train(config, "critic", round_dir / rundir.REFINE_DIR, stages, log, start=critic if continuing else config.model,
           head_from=Path(critic.model) if continuing else None)
    return stages, _evaluate(config, round_number, round_dir, stages, None, examples)


def _stage_one(config: PipelineConfig, pairs: list[PreferencePair], run_dir: Path, stages: StageRunner,
               generator: LazyGenerator, log: Callable[[str], None], model: ModelConfig | None = None,
               judge: str = "base model") -> Path:
    """Critiques (written by `model`, default the base model), filtering and refinement into `run_dir`; returns
    the data report."""
    critiques_dir, filter_dir = run_dir / rundir.CRITIQUES_DIR, run_dir / rundir.FILTER_DIR
    refine_dir = run_dir / rundir.REFINE_DIR

    def logged(result: dict, describe: Callable[[dict], str]) -> dict:
        log(describe(result))
        return result

    stages.run(rundir.CRITIQUES_DIR, _settings(config.data, model or config.model, config.critique, config.sampling),
               lambda out: logged(critique_stage(pairs, config.critique, config.sampling, generator, out),
                                  format_summary))
    # The training rows carry the sampled critiques only since `reward_critiques: sampled` exists: a run that
    # reads them redoes the filter and refine stages it finished before (its critiques are kept).
    reads_sampled = {"sampled_critiques_kept": True} if config.train.reward_critiques == "sampled" else {}
    stages.run(rundir.FILTER_DIR, _settings(config.filter) | reads_sampled,
               lambda out: logged(filter_stage(critiques_dir, config.filter, out), format_filter_stats))
    stages.run(rundir.REFINE_DIR, _settings(config.refine),
               lambda out: logged(refine_stage(filter_dir, config.refine, generator, out), format_refine_stats))
    report = report_from_dirs(run_dir, critiques_dir, filter_dir, refine_dir, judge)
    log(f"data report: {report}")
    return report


def _train(config: PipelineConfig, mode: str, refine_dir: Path, stages: StageRunner, log: Callable[[str], None],
           start: ModelConfig | None = None, head_from: Path | None = None) -> None:
    """One reward model (`mode` critic or standard) on the refined data, from `start` (default: the base
    model) and a fresh reward head, or that of the saved reward model `head_from`."""
    from criticrm.training.trainer import format_summary as format_train_summary
    from criticrm.training.trainer import train_reward_model

    train, start = dataclasses.replace(config.train, mode=mode), start or config.model

    def train_stage(out_dir: Path) -> dict:
        summary = train_reward_model(train, refine_dir, out_dir, model_name=start.model,
                                     use_cpu=config.model.device == "cpu", head_from=head_from)
        log(format_train_summary(summary))
        return summary

    settings = _settings(train, start) | ({"head_from": str(head_from)} if head_from else {})
    stages.run(rundir.train_dir(mode), settings, train_stage)


def _evaluation_examples(config: PipelineConfig, log: Callable[[str], None]) -> list | None:
    """The evaluation file's examples, or None when the config names none."""
    from criticrm.data.rewardbench import load_eval_examples

    evaluation = config.evaluation
    if not evaluation.data:
        return None
    eval_data = dataclasses.replace(config.data, data=evaluation.data, limit=evaluation.limit,
                                    per_subset=evaluation.per_subset)
    examples = load_eval_examples(eval_data)
    log(f"evaluation: {len(examples)} examples from {evaluation.data}")
    return examples


def _evaluate(config: PipelineConfig, round_number: int, round_dir: Path, stages: StageRunner,
              generator: LazyGenerator | None, examples: list | None) -> list[Path]:
    """Round 1: the judges of the base model (on `generator`), the standard RM (unless `run.baseline` is off)
    and the Critic-RM; a later round: its Critic-RM. Returns the evaluation folders (none without `examples`)."""
    from criticrm.evaluation.run import EvalConfig, run_evaluation
    from criticrm.inference.scorer import ScoringConfig

    evaluation, sampling, critique = config.evaluation, config.sampling, config.critique
    if examples is None:
        return []
    judge_sampling = dataclasses.replace(sampling, num_critiques=evaluation.judge_samples)
    scoring = ScoringConfig(num_critiques=evaluation.num_critiques, max_new_tokens=sampling.max_new_tokens,
                            seed=sampling.seed, generation_batch_size=critique.batch_size)
    first = round_number == 1
    runs = [(rundir.eval_dir(f"judge-{kind}"), EvalConfig(judge=kind), config.model, judge_sampling)
            for kind in (evaluation.judge_kinds() if first else [])]
    critic = f"Critic-RM (m={scoring.num_critiques})" if first else \
        f"Critic-RM round {round_number} (m={scoring.num_critiques})"
    names = {"standard": "standard RM", "critic": critic}
    modes = ("standard", "critic") if first and config.run.baseline else ("critic",)
    runs += [(rundir.eval_dir(mode), EvalConfig(name=names[mode]),
              dataclasses.replace(config.model, model=str(round_dir / rundir.train_dir(mode) / rundir.MODEL_DIR),
                                  dtype="auto"), sampling)
             for mode in modes]
    for stage, eval_config, stage_model, stage_sampling in runs:
        def eval_stage(out_dir: Path, eval_config=eval_config, stage_model=stage_model,
                       stage_sampling=stage_sampling) -> dict:
            shared = generator.get() if eval_config.judge else None
            return run_evaluation(examples, eval_config, stage_model, scoring, critique, stage_sampling, out_dir,
                                  data_name=evaluation.data, generator=shared)

        stages.run(stage, _settings(evaluation, eval_config, scoring, stage_sampling, stage_model), eval_stage)
    _cards_with_evaluation(round_dir, modes)
    return [round_dir / stage for stage, *_ in runs]


def _compare(run_dir: Path, evaluated: list[Path], log: Callable[[str], None]) -> Path:
    """Every evaluation side by side. The standard RM (when the run trained one) comes first: every other
    column is then given its difference from it (the paper's comparison), with a paired bootstrap interval."""
    from criticrm.evaluation.eval_report import compare_reports

    standard = run_dir / rundir.eval_dir("standard")
    order = sorted(evaluated, key=lambda folder: folder != standard)
    comparison = run_dir / rundir.COMPARISON_DIR
    log(compare_reports([folder / rundir.REPORT_JSON for folder in order], comparison))
    return comparison


def _cards_with_evaluation(round_dir: Path, modes: tuple[str, ...]) -> None:
    """Each reward model's card now tells its evaluation too (beside its training)."""
    from criticrm.evaluation.eval_report import load_report
    from criticrm.models.card import update_model_card

    for mode in modes:
        train_dir = round_dir / rundir.train_dir(mode)
        update_model_card(train_dir / rundir.MODEL_DIR,
                          training=json.loads((train_dir / rundir.TRAIN_SUMMARY_FILE).read_text()),
                          evaluation=load_report(round_dir / rundir.eval_dir(mode)))


# Settings that do not change a stage's output: the API key, the packing of training rows (the same
# sums up to float rounding) and which checkpoints a finished run keeps. Changing them does not redo a
# finished stage. (Training's older runtime settings, `_RUNTIME_SETTINGS` of criticrm.training.trainer, do
# stay in the fingerprint: taking them out now would change the fingerprint of every finished train
# stage, and redo it. A new runtime setting belongs here.)
_NOT_FINGERPRINTED = ("api_key", "share_prefixes", "checkpoints_after_finish")
# Settings added after stages were first recorded, with the value under which those stages ran: at that value
# a setting stays out of the fingerprint, so a finished stage stays finished; any other value redoes it.
_ADDED_SETTINGS = {"reward_critiques": "refined"}


def _settings(*configs) -> dict:
    """A stage's settings for its fingerprint (without those in `_NOT_FINGERPRINTED`, nor an added setting
    at its former behaviour's value)."""
    settings = {}
    for config in configs:
        settings.update({k: v for k, v in flat_dict(config).items()
                         if k not in _NOT_FINGERPRINTED and not (k in _ADDED_SETTINGS and v == _ADDED_SETTINGS[k])})
    return settings
