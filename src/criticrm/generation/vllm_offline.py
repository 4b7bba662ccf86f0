"""Critique generation in this process with vLLM's offline engine (`vllm.LLM`), where vLLM runs (a GPU).

Why: on a GPU, vLLM is the engine the RLHF frameworks generate with (TRL's GRPO in colocate mode, OpenRLHF,
verl): paged KV cache, continuous batching, and automatic prefix caching, which computes the judge
template's few-shot prefix and each prompt once for all their samples (what `cascade.py` does on a CPU).
`--backend vllm` selects it; where vllm is not installed it is a clear configuration error, never a fallback.

Decisions, and why:
- **Token ids in, token ids out.** Prompts are rendered with the chat template and tokenized here exactly as
  the Hugging Face backend does, and passed as `{"prompt_token_ids": ...}` (vLLM's `TokensPrompt`), so the
  engine sees the same tokens (no second BOS from its own tokenizer); completions are decoded here from
  their token ids, as the Hugging Face backend decodes them.
- **N samples are one request** with `n = N` and a seed derived from the configured seed and the prompt
  (`batch_seed`), so a sample does not depend on what else is in the call. Greedy (temperature 0) asks one
  sample and repeats it N times, as the server backend does.
- **Probability score**: one more request per completion (prompt + critique body + score prefix), one token,
  temperature 0, with the top-20 log-probs (vLLM's default `max_logprobs`), read by token id as scores 1..10;
  for tokenizers that split "10" a request with the "1" appended gives P("0" | "1") and P(digit | "1"). A
  score token outside the top 20 counts as 0 (`mass` is then a slight underestimate); with none in the top 20
  the score is None — never invented. Prefix caching makes these requests re-read nothing but the critique.
- **No hidden states**: `read_after` is ignored, so a reward model reads each reward with a forward of its
  own, as with a server.
- **GPU memory**: vLLM reserves `gpu_memory_utilization` of the GPU up front. The default here is 0.5, not
  vLLM's 0.9, because the reward model scored with it lives on the same GPU (TRL's colocate mode defaults to
  0.3: trl/trainer/grpo_config.py, `vllm_gpu_memory_utilization`).

The engine calls follow vLLM's offline API (vllm/entrypoints/llm.py `LLM.__init__` / `LLM.generate`,
vllm/sampling_params.py `SamplingParams`, vllm/outputs.py `RequestOutput` / `CompletionOutput`). This module
has not run on this project's CPU machines, which cannot run vLLM: its tests there cover the configuration
error and the log-prob arithmetic; `tests/test_vllm_backend.py` compares it with the Hugging Face backend
wherever vllm is installed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from criticrm.errors import ConfigError, CriticRMError
from criticrm.generation.base import (
    Completion,
    Messages,
    ProbabilityScore,
    SamplingConfig,
    batch_seed,
    choice_token,
    prompt_ids,
    score_continuation,
)
from criticrm.prompts.scores import ScoreTokens, expected_score

TOP_LOGPROBS = 20  # vLLM's default max_logprobs: more needs the engine started with a larger one
_DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


class VLLMStartError(CriticRMError):
    """vLLM is installed but could not start on this machine or model (no supported GPU, out of memory...)."""


def import_vllm():
    """The vllm module, or a configuration error that says what to do instead."""
    try:
        import vllm
    except ImportError as error:
        raise ConfigError(
            f"backend vllm needs the vllm package, which is not importable here ({error}); install it on a machine "
            "with a GPU it supports (pip install vllm), or use backend huggingface (this process, any machine) or "
            "backend openai with a server (`vllm serve MODEL`)") from None
    return vllm


class VLLMGenerator:
    backend = "vllm"

    def __init__(self, llm, tokenizer, model_name: str, eos_ids: Sequence[int] = ()):
        self.vllm = import_vllm()
        self.llm = llm
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.eos_ids = [i for i in dict.fromkeys([*eos_ids, tokenizer.eos_token_id]) if i is not None]
        self._score_tokens: dict[str, ScoreTokens] = {}

    @classmethod
    def start(cls, model_path: str, tokenizer, model_name: str, *, dtype: str = "auto", seed: int = 0,
              gpu_memory_utilization: float = 0.5) -> VLLMGenerator:
        """Start an engine on `model_path` (a local folder or a hub id) with prefix caching on."""
        vllm = import_vllm()
        try:
            llm = vllm.LLM(model=model_path, dtype=_DTYPES.get(dtype, dtype), seed=seed, enable_prefix_caching=True,
                           gpu_memory_utilization=gpu_memory_utilization)
        except Exception as error:  # noqa: BLE001 - any engine failure becomes one clear message
            raise VLLMStartError(f"vLLM could not start on {model_name}: {type(error).__name__}: {error}") from None
        return cls(llm, tokenizer, model_name, _generation_eos_ids(model_path))

    def generate(self, conversations: Sequence[Messages], sampling: SamplingConfig,
                 score_prefix: str | None = None, read_after=None) -> list[list[Completion]]:
        # `read_after` is ignored: vLLM returns no hidden states, the caller reads rewards itself
        prompts = [prompt_ids(self.tokenizer, conversation) for conversation in conversations]
        greedy = sampling.temperature == 0
        params = [self.vllm.SamplingParams(
            n=1 if greedy else sampling.num_critiques, temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p, max_tokens=sampling.max_new_tokens,
            seed=batch_seed(sampling.seed, repr(ids[-64:])), stop_token_ids=self.eos_ids) for ids in prompts]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
        rows = [[self._completion(len(ids), sample) for sample in output.outputs]
                for ids, output in zip(prompts, outputs, strict=True)]
        if score_prefix is not None:
            tokens = self._score_tokens_for(score_prefix)
            contexts = [ids + self.tokenizer(score_continuation(c.text, score_prefix), add_special_tokens=False).input_ids
                        for ids, row in zip(prompts, rows, strict=True) for c in row]
            scores = iter(self._probability_scores(contexts, tokens))
            rows = [[dataclasses.replace(c, probability=next(scores)) for c in row] for row in rows]
        return [row * sampling.num_critiques if greedy else row for row in rows]

    def choice_probabilities(self, conversations: Sequence[Messages], continuations: Sequence[str],
                             choices: Sequence[str]) -> list[list[float]]:
        """P(first token of each choice) after each conversation and its continuation, from the top-20 log-probs
        (a choice outside them counts as 0, as a score token does)."""
        contexts, wanted = [], []
        for conversation, continuation in zip(conversations, continuations, strict=True):
            ids = self.tokenizer(continuation, add_special_tokens=False).input_ids
            contexts.append(prompt_ids(self.tokenizer, conversation) + ids)
            wanted.append([choice_token(self.tokenizer, continuation, ids, choice) for choice in choices])
        return [[top.get(token, 0.0) for token in tokens]
                for top, tokens in zip(self._top_probabilities(contexts), wanted, strict=True)]

    def _completion(self, prompt_tokens: int, sample: Any) -> Completion:
        token_ids = list(sample.token_ids)
        ended = bool(token_ids) and token_ids[-1] in self.eos_ids
        text = self.tokenizer.decode(token_ids[:-1] if ended else token_ids, skip_special_tokens=True).strip()
        return Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=len(token_ids),
                          finish_reason="length" if sample.finish_reason == "length" else "stop")

    def _probability_scores(self, contexts: list[list[int]], tokens: ScoreTokens) -> list[ProbabilityScore | None]:
        first = self._top_probabilities(contexts)
        after_one = (self._top_probabilities([c + [tokens.score_ids[0]] for c in contexts]) if tokens.split_ten
                     else [None] * len(contexts))
        return [score_from_top(f, a, tokens) for f, a in zip(first, after_one, strict=True)]

    def _top_probabilities(self, contexts: list[list[int]]) -> list[dict[int, float]]:
        """Token id -> probability of the top-20 next tokens after each context (one engine call)."""
        params = self.vllm.SamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        outputs = self.llm.generate([{"prompt_token_ids": c} for c in contexts], params, use_tqdm=False)
        result = []
        for output in outputs:
            top = (output.outputs[0].logprobs or [{}])[0] or {}
            result.append({int(token): math.exp(entry.logprob) for token, entry in top.items()
                           if math.isfinite(entry.logprob)})
        return result

    def _score_tokens_for(self, prefix: str) -> ScoreTokens:
        if prefix not in self._score_tokens:
            self._score_tokens[prefix] = ScoreTokens.from_tokenizer(self.tokenizer, prefix)
        return self._score_tokens[prefix]


def score_from_top(first: dict[int, float], after_one: dict[int, float] | None,
                   tokens: ScoreTokens) -> ProbabilityScore | None:
    """The probability score from the top next-token probabilities after the score prefix (`first`) and, for
    tokenizers that split "10", after the "1" (`after_one`); None when no score token is among them."""
    probs = [first.get(token, 0.0) for token in tokens.score_ids]
    zero = digit = 0.0
    if tokens.split_ten:
        probs[9] = 0.0  # "10" starts with the "1" token: it is read after the "1"
        if after_one:
            zero = after_one.get(tokens.ten_second_id, 0.0)
            digit = sum(after_one.get(token, 0.0) for token in tokens.digit_ids)
    if sum(probs) <= 0:
        return None
    score, mass = expected_score(probs, min(zero, 1.0), min(digit, 1.0))
    return ProbabilityScore(score=score, mass=min(mass, 1.0))


def _generation_eos_ids(model_path: str) -> list[int]:
    """The end-of-turn ids of the model's generation config (a chat model may end turns with another token)."""
    from transformers import GenerationConfig

    try:
        ids = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:  # no generation_config.json: the tokenizer's EOS alone
        return []
    return [ids] if isinstance(ids, int) else list(ids or [])
