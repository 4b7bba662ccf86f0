"""One correction run: revise solutions after a critique (or none) and check the revised answers; best-of-N.

For every checkable problem (`problems.select_problems`) and both starting solutions (the wrong rejected
one: Δ↑; the right chosen one: Δ↓), under each condition:
- `critic`: the Critic-RM writes its critique of the solution (`RewardScorer`, as `criticrm score` does);
- `base`: the base model writes one, as the pointwise LLM judge does (the same judge template);
- `none`: no critique, only "review your answer and correct it if needed";
then the reviser (the Critic-RM's own LM, its base model, or any model, locally or on an OpenAI-compatible
server) revises the solution, and its final answer is checked against the reference.

Critique-guided best-of-N (`BestOfConfig.k` > 0): the reviser samples k solutions per problem, the reward
model scores them, and accuracy at k = 1, 2, 4, ... is reported for the reward's pick beside the oracle
and the majority vote.

Resumable like `criticrm eval`: each condition appends finished revisions to `progress-<condition>.jsonl`
(best-of-N to `best-of/progress.jsonl`) and a run started again does only the rest; a folder made with
other settings is refused, never mixed.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from tqdm import tqdm

from criticrm import rundir
from criticrm.config import Config
from criticrm.correction.metrics import best_of_stats, by_subset, k_values, revision_stats
from criticrm.correction.problems import STARTS, Problem
from criticrm.data.jsonl import append_jsonl, read_jsonl_repairing
from criticrm.errors import ConfigError
from criticrm.evaluation.run import public_settings, weights_signature
from criticrm.generation.base import Generator, SamplingConfig
from criticrm.generation.factory import GeneratorConfig
from criticrm.inference.scorer import ScoreItem, ScoringConfig
from criticrm.models.backbone import ModelConfig, display_name
from criticrm.prompts import revise
from criticrm.prompts.templates import TemplateSet

CONDITIONS = ("critic", "base", "none")
BEST_OF_DIR = "best-of"


@dataclass
class CorrectionConfig(Config):
    """What is revised, by which model, and how."""

    conditions: str = field(default="critic,base,none", metadata={
        "help": "comma-separated: critic (the Critic-RM's critique), base (the base model's critique, as the "
                "pointwise judge writes it), none (no critique: review and correct)"})
    subsets: str = field(default="math-,sci-", metadata={
        "help": "comma-separated prefixes of the subsets to evaluate (empty: every subset)"})
    reviser: str = field(default="model", metadata={
        "help": "who revises: model (the Critic-RM's own LM), base (its base model), or a Hugging Face id / folder "
                "(with backend openai: the model name the server serves)"})
    max_new_tokens: int = field(default=256, metadata={"help": "longest revision (and best-of-N solution), in tokens",
                                                       "min": 1})
    temperature: float = field(default=0.0, metadata={"help": "revision sampling temperature (0 = greedy)", "min": 0})
    top_p: float = field(default=0.95, metadata={"help": "nucleus threshold of sampled revisions", "above": 0, "max": 1})
    seed: int = field(default=0, metadata={"help": "random seed of sampled revisions"})
    batch_size: int = field(default=32, metadata={
        "help": "solutions critiqued and revised together; progress is saved after each batch", "min": 1})
    # The reviser's engine: the model in this process (huggingface) or an OpenAI-compatible server (openai).
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)

    def __post_init__(self):
        super().__post_init__()
        unknown = [name for name in self.condition_list if name not in CONDITIONS]
        if unknown or not self.condition_list:
            raise ConfigError(f"conditions must be a comma-separated list of {', '.join(CONDITIONS)}, "
                              f"got {self.conditions!r}")
        if self.generator.quantize != "none":  # the local revisers share the scorer's (exact) model
            raise ConfigError(f"quantize: {self.generator.quantize} is a setting of the critique, refine and "
                              "judge stages; correct revises with the model as it is (use quantize: none)")
        if not self.reviser.strip():
            raise ConfigError("reviser must be model, base, or a model name")

    @property
    def condition_list(self) -> list[str]:
        return list(dict.fromkeys(part.strip() for part in self.conditions.split(",") if part.strip()))

    def sampling(self, samples: int = 1, temperature: float | None = None) -> SamplingConfig:
        return SamplingConfig(num_critiques=samples, temperature=self.temperature if temperature is None else temperature,
                              top_p=self.top_p, max_new_tokens=self.max_new_tokens, seed=self.seed)


@dataclass
class BestOfConfig(Config):
    """Critique-guided best-of-N: k solutions per problem from the reviser, picked by the reward model."""

    k: int = field(default=0, metadata={"help": "solutions sampled per problem (e.g. 8); 0 skips best-of-N", "min": 0})
    temperature: float = field(default=0.8, metadata={"help": "solution sampling temperature", "above": 0})

    def __post_init__(self):
        super().__post_init__()


class Models:
    """The models of a run, each loaded on first use: the reward model, the base model, the reviser."""

    def __init__(self, model: ModelConfig, scoring: ScoringConfig, config: CorrectionConfig):
        self.model_config, self.scoring, self.config = model, scoring, config

    @cached_property
    def scorer(self):
        from criticrm.inference.scorer import RewardScorer

        if not self.model_config.model:
            raise ConfigError("pass --model DIR: a trained reward-model folder (the model/ of `criticrm train`)")
        return RewardScorer.from_model_config(self.model_config, self.scoring)

    @property
    def path(self) -> str:
        return str(self.model_config.model)

    @cached_property
    def base_model(self) -> ModelConfig:
        return dataclasses.replace(self.model_config, model=self.scorer.model.reward_config.base_model)

    @cached_property
    def base(self) -> Generator:
        from criticrm.generation.factory import generator_for

        return generator_for(GeneratorConfig(), self.base_model, self.config.batch_size)

    @cached_property
    def reviser(self) -> Generator:
        from criticrm.generation.factory import generator_for
        from criticrm.generation.huggingface import HFGenerator

        local = self.config.generator.backend == "huggingface"
        if self.config.reviser == "model":
            if local:  # the scorer's own critique writer where it has one: the weights are loaded once
                scorer = self.scorer
                if isinstance(scorer.generator, HFGenerator):
                    return scorer.generator
                return HFGenerator(scorer.model.causal_lm, scorer.tokenizer, self.path, batch_size=self.config.batch_size)
            server = dataclasses.replace(self.config.generator, tokenizer=self.config.generator.tokenizer or self.path)
            return generator_for(server, ModelConfig(model=self.path), self.config.batch_size)
        if self.config.reviser == "base":
            return self.base if local else generator_for(self.config.generator, self.base_model, self.config.batch_size)
        reviser = dataclasses.replace(self.model_config, model=self.config.reviser)
        return generator_for(self.config.generator, reviser, self.config.batch_size)


def run_correction(problems: list[Problem], config: CorrectionConfig, best_of: BestOfConfig, model: ModelConfig,
                   scoring: ScoringConfig, out_dir: Path, *, skipped: dict[str, int] | None = None,
                   data_name: str = "") -> dict:
    """Revise under every condition, run best-of-N if asked, and write report.json / report.md into `out_dir`.

    Returns the report (see `criticrm.correction.report`).
    """
    from criticrm.correction.report import write_report

    out_dir = Path(out_dir)
    settings = _settings(config, model, scoring)
    rundir.guard(out_dir, settings, "correction results")
    models = Models(model, scoring, config)
    conditions, seconds = {}, {}
    for condition in config.condition_list:
        rows, seconds[condition] = _revise_all(condition, problems, config, models, out_dir)
        conditions[condition] = by_subset(rows, revision_stats)
    best = None
    if best_of.k:
        folder = out_dir / BEST_OF_DIR
        rundir.guard(folder, {**settings, **public_settings("best_of", best_of)}, "best-of-N results")
        rows, seconds["best-of"] = _best_of_all(problems, config, best_of, models, folder)
        best = by_subset(rows, lambda group: best_of_stats(group, k_values(best_of.k)))
    uses_base = "base" in config.condition_list or config.reviser == "base"
    meta = {"model": str(model.model), "reviser": config.reviser, "reviser_backend": config.generator.backend,
            "base_model": display_name(models.base_model.model) if uses_base else None, "data": data_name, "subsets": config.subsets, "problems": len(problems), "skipped": skipped or {},
            "max_new_tokens": config.max_new_tokens, "critique_max_new_tokens": scoring.max_new_tokens,
            "temperature": config.temperature, "best_of_k": best_of.k, "seconds": seconds}
    return write_report(out_dir, meta, conditions, best)


def _settings(config: CorrectionConfig, model: ModelConfig, scoring: ScoringConfig) -> dict:
    """What decides a revision's result. The list of conditions is not part of it (adding one later only adds its
    file), nor is the batch size (greedy outputs do not depend on what else is in the batch)."""
    own = {key: value for key, value in public_settings("correct", config).items()
           if key not in ("correct.conditions", "correct.batch_size")}
    return {"model": str(model.model), "weights": weights_signature(model.model), "dtype": model.dtype,
            **public_settings("scoring", scoring), **own, "prompts": revise.prompts_hash(),
            "templates": TemplateSet().hashes()}


class Progress:
    """Finished rows of one condition (or of best-of-N), appended batch by batch (crash-safe JSONL)."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: dict[str, dict] = {}
        self.seconds = 0.0
        for row in read_jsonl_repairing(path):
            self.seconds += row.pop("batch_seconds", 0.0)
            self.rows[row["key"]] = row

    def add(self, rows: list[dict], seconds: float) -> None:
        share = seconds / max(1, len(rows))
        append_jsonl(self.path, ({**row, "batch_seconds": share} for row in rows))
        self.rows.update((row["key"], row) for row in rows)
        self.seconds += seconds


def _revise_all(condition: str, problems: list[Problem], config: CorrectionConfig, models: Models,
                out_dir: Path) -> tuple[list[dict], float]:
    """Every (problem, start) revised under `condition`: the progress file's rows plus the missing ones."""
    progress = Progress(out_dir / f"progress-{condition}.jsonl")
    wanted = [(problem, start) for problem in problems for start in STARTS]
    todo = [(problem, start) for problem, start in wanted if f"{problem.id}:{start}" not in progress.rows]
    if len(todo) < len(wanted) and todo:
        print(f"resuming condition {condition} in {out_dir}: {len(wanted) - len(todo)} of {len(wanted)} "
              "revisions were done earlier")
    with tqdm(total=len(todo), unit="revision", desc=f"correct ({condition})", dynamic_ncols=True) as bar:
        for begin in range(0, len(todo), config.batch_size):
            started = time.time()
            batch = todo[begin:begin + config.batch_size]
            critiques = _critiques(condition, batch, models)
            conversations = [revise.revise_messages(problem.prompt, problem.solution(start), critique["text"])
                             for (problem, start), critique in zip(batch, critiques, strict=True)]
            outputs = models.reviser.generate(conversations, config.sampling())
            rows = [_revision_row(problem, start, critique, samples[0])
                    for (problem, start), critique, samples in zip(batch, critiques, outputs, strict=True)]
            progress.add(rows, time.time() - started)
            bar.update(len(batch))
    return [progress.rows[f"{problem.id}:{start}"] for problem, start in wanted], progress.seconds


def _critiques(condition: str, batch: list[tuple[Problem, str]], models: Models) -> list[dict]:
    """The critique each solution is revised after: {"text", "reward"} (text None under `none`)."""
    if condition == "none":
        return [{"text": None, "reward": None} for _ in batch]
    if condition == "critic":
        if models.scorer.mode != "critic":
            raise ConfigError(f"{models.path} is a standard-mode reward model: it writes no critique; "
                              "drop the critic condition (--conditions base,none)")
        results = models.scorer.score([ScoreItem(problem.prompt, problem.solution(start), problem.domain,
                                                 problem.subset) for problem, start in batch])
        return [{"text": result.critiques[0].critique, "reward": result.reward} for result in results]
    templates = TemplateSet()
    conversations = [templates.for_pair(problem.domain, problem.subset).messages(problem.prompt,
                                                                                 problem.solution(start))
                     for problem, start in batch]
    sampling = models.scoring.sampling(num_critiques=1, temperature=0.0)  # greedy, as long as the Critic-RM's
    return [{"text": samples[0].text, "reward": None} for samples in models.base.generate(conversations, sampling)]


def _revision_row(problem: Problem, start: str, critique: dict, completion) -> dict:
    answer = problem.answer_of(completion.text)
    return {"key": f"{problem.id}:{start}", "id": problem.id, "subset": problem.subset, "start": start,
            "reference": problem.reference, "before": problem.is_correct(problem.answer_of(problem.solution(start))),
            "critique": critique["text"], "critique_reward": critique["reward"], "revision": completion.text,
            "finish_reason": completion.finish_reason, "answer": answer, "after": problem.is_correct(answer)}


def _best_of_all(problems: list[Problem], config: CorrectionConfig, best_of: BestOfConfig, models: Models,
                 folder: Path) -> tuple[list[dict], float]:
    """k sampled solutions per problem, each with its answer, correctness and reward."""
    progress = Progress(folder / rundir.PROGRESS_FILE)
    todo = [problem for problem in problems if problem.id not in progress.rows]
    per_batch = max(1, config.batch_size // best_of.k)
    sampling = config.sampling(best_of.k, best_of.temperature)
    with tqdm(total=len(todo) * best_of.k, unit="solution", desc="best-of-N", dynamic_ncols=True) as bar:
        for begin in range(0, len(todo), per_batch):
            started = time.time()
            batch = todo[begin:begin + per_batch]
            outputs = models.reviser.generate([revise.solve_messages(problem.prompt) for problem in batch], sampling)
            items = [ScoreItem(problem.prompt, completion.text, problem.domain, problem.subset)
                     for problem, samples in zip(batch, outputs, strict=True) for completion in samples]
            rewards = iter(result.reward for result in models.scorer.score(items))
            rows = []
            for problem, samples in zip(batch, outputs, strict=True):
                answers = [problem.answer_of(completion.text) for completion in samples]
                rows.append({"key": problem.id, "id": problem.id, "subset": problem.subset,
                             "reference": problem.reference, "solutions": [c.text for c in samples],
                             "answers": answers, "correct": [problem.is_correct(a) for a in answers],
                             "rewards": [next(rewards) for _ in samples]})
            progress.add(rows, time.time() - started)
            bar.update(len(batch) * best_of.k)
    return [progress.rows[problem.id] for problem in problems], progress.seconds
