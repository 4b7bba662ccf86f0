"""One evaluation: a trained reward model or an LLM-judge baseline on evaluation examples -> a report.

The same examples, the same metrics and the same report for every kind of model, so their reports
can be put side by side (`criticrm eval --compare`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from criticrm import rundir
from criticrm.config import Config, flat_dict
from criticrm.data.rewardbench import EvalExample
from criticrm.errors import ConfigError
from criticrm.evaluation.faithfulness import DEFAULT_SAMPLES as FAITHFULNESS_SAMPLES
from criticrm.evaluation.faithfulness import DETAILS_KEY as FAITHFULNESS_KEY
from criticrm.evaluation.faithfulness import check_examples, check_scorer, measure_faithfulness
from criticrm.evaluation.metrics import ExampleResult
from criticrm.evaluation.rewardbench import chat_template_name, write_rewardbench_results
from criticrm.evaluation.scaling import DEFAULT_ADAPTIVE_SPREAD
from criticrm.generation.base import SamplingConfig
from criticrm.inference.scorer import ScoringConfig
from criticrm.models.backbone import ModelConfig, display_name
from criticrm.pipeline.critique import CritiqueConfig

JudgeKind = Literal["pointwise", "pairwise"]


@dataclass
class EvalConfig(Config):
    """What is evaluated and how it is reported."""

    judge: JudgeKind | None = field(default=None, metadata={
        "help": "evaluate the base model as an LLM judge instead of a trained reward model: pointwise or pairwise"})
    name: str | None = field(default=None, metadata={"help": "name of this model in reports (default: from the model)"})
    samples: int = field(default=0, metadata={
        "help": "inference scaling: sample this many critiques per response once (e.g. 16) and report accuracy "
                "against critique tokens at m = 1, 2, 4, 8, 16 (mean reward, written-score vote, reward-weighted "
                "vote) and with adaptive m",
        "min": 0})
    adaptive_spread: float = field(default=DEFAULT_ADAPTIVE_SPREAD, metadata={
        "help": "adaptive m (with samples): stop reading a response's critiques once their rewards' standard "
                "deviation is below this (reward units; at least 2 critiques)", "above": 0})
    faithfulness: bool = field(default=False, metadata={
        "help": "also score each pair with its greedy critiques replaced (empty, swapped between the two "
                "responses, of the opposite verdict) and report how much the reward follows its critique"})
    faithfulness_samples: int = field(default=FAITHFULNESS_SAMPLES, metadata={
        "help": "faithfulness: critiques sampled (T = 0.8) per response to find one of the opposite verdict",
        "min": 1})
    format: Literal["criticrm", "rewardbench"] = field(default="criticrm", metadata={
        "help": "criticrm (the report only) or rewardbench: also write RewardBench's results file beside it "
                "(rewardbench.json: model, model_type, chat_template and each subset's score)"})

    def __post_init__(self):
        super().__post_init__()
        if self.faithfulness and self.judge:
            raise ConfigError("faithfulness measures how a trained Critic-RM's reward follows its critique; an LLM "
                              f"judge ({self.judge}) has no reward head: drop --eval.faithfulness or --eval.judge")


def default_name(config: EvalConfig, model: ModelConfig, scoring: ScoringConfig) -> str:
    if config.name:
        return config.name
    if config.judge:
        return f"judge-{config.judge}"
    path = Path(model.model or "model")
    label = path.parent.name if path.name == "model" else path.name  # runs/x/train-critic/model -> train-critic
    return f"{label} (m={scoring.num_critiques})"


def run_evaluation(examples: list[EvalExample], config: EvalConfig, model: ModelConfig, scoring: ScoringConfig,
                   critique: CritiqueConfig, sampling: SamplingConfig, out_dir: Path, data_name: str = "",
                   generator=None) -> dict:
    """Evaluate and write the report into `out_dir`; returns the report summary.

    Resumable: each chunk of finished examples is appended to `out_dir/progress.jsonl`, and a run
    started again with the same settings evaluates only the examples not there yet (a folder made
    with other settings is refused, never mixed). `generator` lets a caller share an already loaded
    judge model (the pipeline does).
    """
    from criticrm.evaluation.eval_report import write_eval_report

    out_dir = Path(out_dir)
    name = default_name(config, model, scoring)
    not_pairs = [e.id for e in examples if not e.is_pair]
    if config.judge and not_pairs:
        raise ConfigError(f"the {config.judge} judge compares one chosen with one rejected response; "
                          f"{len(not_pairs)} example(s) have lists (first: {not_pairs[0]!r}); "
                          "evaluate best-of-N data with a trained reward model")
    if config.faithfulness:
        check_examples(examples)
    rundir.guard(out_dir, _result_settings(config, model, scoring, critique, sampling), "evaluation results")
    progress = EvalProgress(out_dir)
    todo = [example for example in examples if example.id not in progress.results]
    if len(todo) < len(examples):
        print(f"resuming the evaluation in {out_dir}: {len(examples) - len(todo)} of {len(examples)} "
              "examples were evaluated earlier")
    evaluate, meta = (_judge(config.judge, model, critique, sampling, generator) if config.judge
                      else _reward_model(config, model, scoring))
    passes = 3 if config.faithfulness else 1  # faithfulness writes a greedy and a sampled critique set more
    responses = [passes * (len(e.chosen) + len(e.rejected)) for e in todo]
    with tqdm(total=sum(responses), unit="response", desc=name, dynamic_ncols=True) as bar:
        for start in range(0, len(todo), CHUNK_EXAMPLES):
            started = time.time()
            chunk = todo[start:start + CHUNK_EXAMPLES]
            results = evaluate(chunk, bar.update)
            progress.add(results, time.time() - started)
    results = [progress.results[example.id] for example in examples]
    if config.judge == "pairwise":
        from criticrm.evaluation.judges import position_summary

        meta["position"] = position_summary(results)
    meta |= {"name": name, "data": data_name, "examples": len(examples), "seconds": round(progress.seconds, 1)}
    summary = write_eval_report(name, results, out_dir, meta, adaptive_spread=config.adaptive_spread)
    if config.format == "rewardbench":
        write_rewardbench_results(out_dir, meta, summary)
    return summary


CHUNK_EXAMPLES = 32  # examples evaluated between two saves of progress.jsonl


class EvalProgress:
    """The finished examples of one evaluation folder, appended chunk by chunk (crash-safe JSONL).

    Each row carries the seconds its chunk took, so a resumed run reports the time of all its parts.
    """

    def __init__(self, out_dir: Path):
        from criticrm.data.jsonl import read_jsonl_repairing

        self.path = out_dir / rundir.PROGRESS_FILE
        self.results: dict[str, ExampleResult] = {}
        self.seconds = 0.0
        for row in read_jsonl_repairing(self.path):
            self.seconds += row.pop("chunk_seconds", 0.0)
            result = ExampleResult(**row)
            self.results[result.id] = result

    def add(self, results: list[ExampleResult], seconds: float) -> None:
        from criticrm.data.jsonl import append_jsonl

        share = seconds / max(1, len(results))
        append_jsonl(self.path, ({**asdict(result), "chunk_seconds": share} for result in results))
        self.results.update((result.id, result) for result in results)
        self.seconds += seconds


def _result_settings(config: EvalConfig, model: ModelConfig, scoring: ScoringConfig, critique: CritiqueConfig,
                     sampling: SamplingConfig) -> dict:
    """What decides an example's result, flat so that a refusal can name the setting that changed."""
    if config.judge:
        return {"judge": config.judge, "model": display_name(model.model), **public_settings("critique", critique),
                **public_settings("sampling", sampling)}
    return {"model": str(model.model), "weights": weights_signature(model.model), "dtype": model.dtype,
            "samples": config.samples, **public_settings("scoring", scoring),
            "faithfulness": config.faithfulness_samples if config.faithfulness else 0}


def public_settings(prefix: str, config) -> dict:
    return {f"{prefix}.{key}": value for key, value in flat_dict(config).items() if key != "api_key"}


def weights_signature(path: str | None) -> list:
    """Size and modification time of a model folder's files (its `criticrm/` subfolder's too): a retrained
    folder is another model. The model card is left out: the pipeline adds this evaluation to it."""
    from criticrm.models.card import CARD_FILE

    folder = Path(path or "")
    if not folder.is_dir():
        return []
    return [[item.relative_to(folder).as_posix(), item.stat().st_size, int(item.stat().st_mtime)]
            for item in sorted(folder.rglob("*")) if item.is_file() and item.name != CARD_FILE]


def _judge(judge: str, model: ModelConfig, critique: CritiqueConfig, sampling: SamplingConfig, generator):
    """(evaluate(examples, on_progress) -> results, report metadata) for an LLM-judge baseline."""
    from criticrm.evaluation import judges
    from criticrm.generation.factory import generator_for
    from criticrm.prompts.templates import TemplateSet

    generator = generator or generator_for(critique.generator, model, critique.batch_size)
    templates = TemplateSet(critique.template)
    meta = {"kind": f"judge-{judge}", "model": display_name(model.model), "sampling": asdict(sampling),
            "score": critique.score, "chat_template": "tokenizer"}  # judge prompts: the model's own template
    if judge == "pairwise":
        template = judges.load_pairwise_template()
        meta |= {"template": template.name, "template_hash": template.hash}

    def evaluate(examples: list[EvalExample], on_progress) -> list[ExampleResult]:
        pairs = [example.as_pair() for example in examples]
        if judge == "pointwise":
            results = judges.judge_pointwise(pairs, generator, templates, sampling, critique.score, progress=False)
        else:
            results, _ = judges.judge_pairwise(pairs, generator, sampling, progress=False,
                                               verdict_source=critique.score)
        on_progress(2 * len(pairs))
        return results

    return evaluate, meta


def _reward_model(config: EvalConfig, model: ModelConfig, scoring: ScoringConfig):
    """(evaluate(examples, on_progress) -> results, report metadata) for a trained reward model."""
    from criticrm.evaluation.reward_model import evaluate_reward_model
    from criticrm.inference.scorer import RewardScorer

    if not model.model:
        raise ConfigError("nothing to evaluate: set model.model to a trained reward-model folder (e.g. "
                          "runs/demo/train-critic/model), or eval.judge to pointwise or pairwise")
    scorer = RewardScorer.from_model_config(model, scoring)
    if config.faithfulness:
        check_scorer(scorer)

    def evaluate(examples: list[EvalExample], on_progress) -> list[ExampleResult]:
        results = evaluate_reward_model(examples, scorer, scoring.num_critiques, config.samples, scoring.temperature,
                                        on_progress=on_progress)
        if config.faithfulness:
            records = measure_faithfulness(examples, scorer, config.faithfulness_samples, on_progress)
            for result, record in zip(results, records, strict=True):
                result.details[FAITHFULNESS_KEY] = record
        return results

    meta = {"kind": f"reward-model-{scorer.mode}", **scorer.info(), "samples": config.samples,
            "temperature": scoring.temperature, "chat_template": chat_template_name(scorer.tokenizer)}
    if config.samples:
        meta["adaptive_spread"] = config.adaptive_spread
    if config.faithfulness:
        meta["faithfulness_samples"] = config.faithfulness_samples
    return evaluate, meta
