"""Scoring with a trained reward model: m critiques per response, a reward for each, their mean.

A critic-mode model first writes m critiques of each (prompt, response) with its own language-model
head (or through an OpenAI-compatible server that serves the saved LM folder), then reads a reward at
the end of each critique with its reward head; the response's reward is the mean over its critiques
and the spread is their standard deviation. A standard-mode model reads one reward per response and
writes no critique.

Greedy critiques (temperature 0, the default for m = 1) give rewards that do not depend on what else is
in the batch. Sampled critiques use one random stream per generation batch, as every batched sampler
does, so the same request can get other critiques inside another batch; fix `seed` and keep batches
equal to reproduce a run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from criticrm.config import Config
from criticrm.errors import ConfigError
from criticrm.generation.base import Generator, SamplingConfig
from criticrm.generation.factory import GeneratorConfig
from criticrm.models.backbone import ModelConfig
from criticrm.models.critic_rm import CriticRewardModel
from criticrm.prompts.templates import infer_domain

SAMPLED_TEMPERATURE = 0.8  # the temperature used for m > 1 when none is given


@dataclass
class ScoringConfig(Config):
    """How rewards are computed at inference."""

    num_critiques: int = field(default=1, metadata={"help": "critiques per response (m); the reward is their mean",
                                                    "min": 1})
    temperature: float | None = field(
        default=None, metadata={"help": "critique sampling temperature (default: greedy for m = 1, 0.8 for m > 1)",
                                "min": 0})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling threshold for sampled critiques",
                                                 "above": 0, "max": 1})
    max_new_tokens: int = field(default=128, metadata={"help": "longest critique, in tokens", "min": 1})
    seed: int = field(default=0, metadata={"help": "random seed of sampled critiques"})
    batch_size: int = field(default=8, metadata={"help": "sequences per reward forward pass", "min": 1})
    generation_batch_size: int = field(default=32, metadata={"help": "critiques generated per batch", "min": 1})
    normalize: bool = field(default=False,
                            metadata={"help": "standardise rewards with the mean/std saved from the validation set"})
    # The critique writer: the model itself (huggingface), or a server serving the model's LM folder (openai).
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)

    def __post_init__(self):
        super().__post_init__()
        self.sampling()  # the settings every call without overrides uses must be valid themselves
        if self.generator.quantize != "none":
            # The reward is read from the decoding pass's own hidden states, which int8 steps would make
            # approximate: a reward must be the trained model's, so scoring has no such setting.
            raise ConfigError(f"quantize: {self.generator.quantize} is a critique-generation setting; scoring "
                              "reads its reward from the decoding pass and stays exact (use quantize: none)")

    def sampling(self, num_critiques: int | None = None, temperature: float | None = None) -> SamplingConfig:
        """The sampling settings of one call (its overrides, else this config)."""
        m = num_critiques or self.num_critiques
        if m < 1:
            raise ConfigError(f"num_critiques must be at least 1, got {m}")
        temperature = self.temperature if temperature is None else temperature
        if temperature is None:
            temperature = 0.0 if m == 1 else SAMPLED_TEMPERATURE
        if m > 1 and temperature == 0:
            raise ConfigError(f"num_critiques={m} with temperature 0 would write {m} identical greedy critiques; "
                              "use a temperature above 0 (e.g. 0.8) or num_critiques 1")
        try:
            return SamplingConfig(num_critiques=m, temperature=temperature, top_p=self.top_p,
                                  max_new_tokens=self.max_new_tokens, seed=self.seed)
        except ValueError as error:
            raise ConfigError(str(error)) from None


@dataclass
class CritiqueReward:
    critique: str
    reward: float
    finish_reason: str  # "stop", or "length" when the critique was cut at max_new_tokens
    tokens: int  # tokens generated for it (its cost, for compute-aware comparisons)


@dataclass
class ScoreResult:
    reward: float  # mean over the critiques (the single reward in standard mode); NaN if unscorable
    spread: float  # standard deviation of the per-critique rewards (0 for one critique)
    critiques: list[CritiqueReward]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ScoreItem:
    """One response to score; `domain`/`subset` choose the judge template the way training did."""

    prompt: str
    response: str
    domain: str | None = None
    subset: str | None = None


class RewardScorer:
    """A loaded reward model (+ its critique generator) that turns responses into rewards."""

    def __init__(self, model: CriticRewardModel, tokenizer, generator: Generator | None, config: ScoringConfig,
                 model_path: str = ""):
        if model.reward_config.mode == "critic" and generator is None:
            raise ConfigError("a critic-mode model needs a critique generator")
        if config.normalize and not model.has_reward_stats():
            raise ConfigError(f"normalize needs the reward mean/std saved with the model at training, and "
                              f"{model_path or 'this model'} has none; drop --normalize")
        self.model, self.tokenizer, self.generator, self.config = model, tokenizer, generator, config
        self.model_path = model_path
        self.builder = model.sequence_builder(tokenizer)

    @classmethod
    def load(cls, path: str | Path, config: ScoringConfig | None = None, *, device: str = "auto",
             dtype: str | None = None) -> RewardScorer:
        """Load a trained folder. Critiques come from the model itself (`huggingface`, sharing its weights)
        or from an OpenAI-compatible server serving the folder's LM (`openai`, `base_url`)."""
        from criticrm.models.backbone import load_tokenizer
        from criticrm.models.critic_rm import is_reward_model_dir

        if not is_reward_model_dir(path):
            raise ConfigError(f"{path}: not a criticrm reward-model folder (no criticrm/criticrm_config.json); "
                              "train one with `criticrm train` or `criticrm pipeline`")
        config = config or ScoringConfig()
        model = CriticRewardModel.load(path, device=device, dtype=dtype)
        tokenizer = load_tokenizer(str(path))
        generator = None
        if model.reward_config.mode == "critic":
            generator = _generator(model, tokenizer, str(path), config)
        return cls(model, tokenizer, generator, config, model_path=str(path))

    @classmethod
    def from_model_config(cls, model: ModelConfig, config: ScoringConfig | None = None) -> RewardScorer:
        """`load` from the `--model/--device/--dtype` options; dtype auto keeps the dtype the model was
        saved in (bit-identical rewards to training's validation)."""
        if not model.model:
            raise ConfigError("model.model must name a trained reward-model folder (the model/ of a training run)")
        return cls.load(model.model, config, device=model.device, dtype=None if model.dtype == "auto" else model.dtype)

    @property
    def mode(self) -> str:
        return self.model.reward_config.mode

    def info(self) -> dict:
        import criticrm

        return {"model": self.model_path, "mode": self.mode, "base_model": self.model.reward_config.base_model,
                "training_margin": self.model.reward_config.training_margin,
                "backend": self.generator.backend if self.generator else None, "criticrm_version": criticrm.__version__,
                "num_critiques": self.config.num_critiques, "normalize": self.config.normalize}

    def score(self, items: Sequence[ScoreItem], num_critiques: int | None = None, temperature: float | None = None,
              on_progress: Callable[[int], None] | None = None) -> list[ScoreResult]:
        """Rewards of many responses, in input order; `on_progress(k)` is called as k more are done."""
        if not items:
            return []
        if self.mode == "standard":
            rewards = self._rewards([(item.prompt, item.response, None) for item in items],
                                    [self._template(item) for item in items])
            if on_progress:
                on_progress(len(items))
            return [ScoreResult(reward, 0.0 if not math.isnan(reward) else math.nan, []) for reward in rewards]
        sampling = self.config.sampling(num_critiques, temperature)
        chunk = max(1, self.config.generation_batch_size // sampling.num_critiques)
        # Batches of one template and similar lengths: the template's few-shot prefix is then read once per
        # batch (the engine's shared level), and short prompts are not padded to a long one's length.
        order = sorted(range(len(items)), key=lambda i: (self._template(items[i]),
                                                         len(items[i].prompt) + len(items[i].response)))
        scored: dict[int, ScoreResult] = {}
        for start in range(0, len(order), chunk):
            batch = order[start:start + chunk]
            scored.update(zip(batch, self._score_critic([items[i] for i in batch], sampling), strict=True))
            if on_progress:
                on_progress(len(batch))
        return [scored[i] for i in range(len(items))]

    def rewards_of(self, items: Sequence[ScoreItem], critiques: Sequence[str]) -> list[float]:
        """r(x, y, c) of critiques given as text (critic mode), read in the training layout: what `score`
        would give had the model written them. For probing the reward (another critique, none at all)."""
        if self.mode != "critic":
            raise ConfigError(f"{self.model_path or 'this model'} is a standard-mode reward model: its reward "
                              "reads no critique")
        triples = [(item.prompt, item.response, critique) for item, critique in zip(items, critiques, strict=True)]
        return self._rewards(triples, [self._template(item) for item in items])

    def compare(self, prompt: str, response_a: str, response_b: str, **kwargs) -> float:
        """P(response_a is preferred over response_b) = sigmoid(r_a - r_b), the Bradley-Terry probability."""
        a, b = self.score([ScoreItem(prompt, response_a), ScoreItem(prompt, response_b)], **kwargs)
        return bradley_terry(a.reward, b.reward)

    def _score_critic(self, items: Sequence[ScoreItem], sampling: SamplingConfig) -> list[ScoreResult]:
        """Critiques, then their rewards: read from the generation pass where the generator could (it ran
        the critique's training-layout tokens after the prompt it had cached), by a forward of the whole
        sequence elsewhere (a server's critiques, truncated sequences)."""
        templates = [self._template(item) for item in items]
        conversations = [self.builder.messages(item.prompt, item.response, template)
                         for item, template in zip(items, templates, strict=True)]

        def read_after(index: int, prompt_ids: list[int], text: str) -> list[int] | None:
            item = items[index]
            return self.builder.completion_ids(item.prompt, item.response, text, templates[index], prompt_ids)

        completions = self.generator.generate(conversations, sampling, read_after=read_after)
        flat = [(item, template, c) for item, template, samples in zip(items, templates, completions, strict=True)
                for c in samples]
        rewards = [math.nan] * len(flat)
        read = [i for i, (_, _, c) in enumerate(flat) if c.hidden is not None]
        if read:
            for i, reward in zip(read, self._head([flat[i][2].hidden for i in read]), strict=True):
                rewards[i] = reward
        rest = [i for i, (_, _, c) in enumerate(flat) if c.hidden is None]
        if rest:
            reread = self._rewards([(flat[i][0].prompt, flat[i][0].response, flat[i][2].text) for i in rest],
                                   [flat[i][1] for i in rest])
            for i, reward in zip(rest, reread, strict=True):
                rewards[i] = reward
        scored = iter(rewards)
        return [_aggregate([CritiqueReward(c.text, next(scored), c.finish_reason, c.completion_tokens)
                            for c in samples])
                for samples in completions]

    def _head(self, hidden: list) -> list[float]:
        """Rewards from final hidden states (the reward head, and the saved normalisation if asked)."""
        import torch

        with torch.no_grad():
            stacked = torch.stack(hidden).to(self.model.reward_head_dtype)
            rewards = self.model.reward_head(stacked).float()
            return (self.model.normalize(rewards) if self.config.normalize else rewards).tolist()

    def _template(self, item: ScoreItem) -> str:
        return self.model.reward_config.template or infer_domain(item.domain, item.subset)

    def _rewards(self, triples: list[tuple[str, str, str | None]], templates: list[str]) -> list[float]:
        """Reward forward passes, batched by template (each template has its own sequence layout)."""
        out = [math.nan] * len(triples)
        for template in dict.fromkeys(templates):
            indices = [i for i, t in enumerate(templates) if t == template]
            rewards = self.model.score_texts(self.tokenizer, [triples[i] for i in indices], template=template,
                                             batch_size=self.config.batch_size, normalize=self.config.normalize)
            for i, reward in zip(indices, rewards, strict=True):
                out[i] = reward
        return out


def bradley_terry(reward_a: float, reward_b: float) -> float:
    """sigmoid(r_a - r_b), computed without overflow; NaN if either reward is NaN."""
    difference = reward_a - reward_b
    if math.isnan(difference):
        return math.nan
    if difference >= 0:
        return 1.0 / (1.0 + math.exp(-difference))
    exp = math.exp(difference)
    return exp / (1.0 + exp)


def _aggregate(critiques: list[CritiqueReward]) -> ScoreResult:
    rewards = [c.reward for c in critiques if not math.isnan(c.reward)]
    if not rewards:
        return ScoreResult(math.nan, math.nan, critiques)
    mean = sum(rewards) / len(rewards)
    spread = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))
    return ScoreResult(mean, spread, critiques)


def _generator(model: CriticRewardModel, tokenizer, path: str, config: ScoringConfig) -> Generator:
    """The critique writer of a critic-mode model: its own LM head, or a server serving its LM folder."""
    if config.generator.backend == "huggingface":
        from criticrm.generation.huggingface import HFGenerator

        return HFGenerator(model.causal_lm, tokenizer, path, batch_size=config.generation_batch_size)
    from criticrm.generation.factory import generator_for

    generator = dataclasses.replace(config.generator, tokenizer=config.generator.tokenizer or path)
    return generator_for(generator, ModelConfig(model=path), config.generation_batch_size)
