"""The decoding loop of the Hugging Face backend: greedy or top-p sampling that drops finished rows.

One loop (`sample_tokens`) serves both forward paths: the cascade engine (`cascade.py`, Llama-layout
models) and the model's own forward over a Hugging Face cache (`HFStepper`, every other architecture).

`generate` keeps every row of a batch until its longest row ends: with critiques of 10 to 128 tokens
a third of the decoded row-steps were rows already finished. This loop removes finished rows from
the batch (and from the KV cache) once an eighth of the rows alive have finished, so a step costs
what the unfinished rows cost. Greedy decoding gives the tokens `generate` gives; sampling draws
from the same distribution (temperature, then `NucleusFilter`) with torch's global generator, so a
seed fixes the result for a given batch.
"""

from __future__ import annotations

import inspect
from typing import Protocol

import torch

from criticrm.generation.nucleus import NucleusFilter

COMPACT_FRACTION = 8  # drop finished rows once 1/8 of the rows alive have finished


class Stepper(Protocol):
    """One batch being decoded: `step` feeds one token per row and returns the next-token logits
    (float32, one row each); `drop_rows` keeps only the rows `keep`."""

    def step(self, tokens: torch.Tensor) -> torch.Tensor: ...

    def drop_rows(self, keep: torch.Tensor) -> None: ...


@torch.inference_mode()
def sample_tokens(first_logits: torch.Tensor, stepper: Stepper, *, max_new_tokens: int, eos_ids: list[int],
                  temperature: float = 0.0, top_p: float = 1.0) -> list[list[int]]:
    """New tokens of every row (its end-of-sequence token included when it has one), starting from the
    logits after each row's prompt. Finished rows leave the batch one by one (in sweeps: see
    COMPACT_FRACTION)."""
    rows = first_logits.shape[0]
    device = first_logits.device
    nucleus = NucleusFilter(top_p) if temperature > 0 and top_p < 1 else None
    eos = torch.tensor(eos_ids, device=device)
    alive = torch.arange(rows, device=device)  # original row of each row still decoding
    generated: list[list[int]] = [[] for _ in range(rows)]
    finished = torch.zeros(rows, dtype=torch.bool, device=device)  # ended, not yet dropped
    logits = first_logits
    for step in range(max_new_tokens):
        tokens = _pick(logits, temperature, nucleus)
        for row, token, ended in zip(alive.tolist(), tokens.tolist(), finished.tolist(), strict=True):
            if not ended:
                generated[row].append(token)
        finished = finished | torch.isin(tokens, eos)
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        if int(finished.sum()) * COMPACT_FRACTION >= len(alive):
            keep = (~finished).nonzero().squeeze(1)
            stepper.drop_rows(keep)
            alive, tokens, finished = alive[keep], tokens[keep], finished[keep]
        logits = stepper.step(tokens)
    return generated


class HFStepper:
    """Decoding through the model's own forward and a Hugging Face cache (any architecture).

    `cache` holds every prompt token but each row's last (`input_ids[:, -1]`), left-padded as `attention`
    says; it is consumed (rows are removed from it as they finish).
    """

    def __init__(self, model, input_ids: torch.Tensor, attention: torch.Tensor, cache):
        self.model, self.cache, self.mask = model, cache, attention
        self.positions = (attention.sum(dim=1, keepdim=True) - 1).clamp(min=0) - 1
        self.cache_argument = {cache_keyword(model): cache}
        self.last_prompt_tokens = input_ids[:, -1]

    def first_logits(self) -> torch.Tensor:
        self.mask = self.mask[:, :-1]  # `step` appends the mask of the token it feeds
        return self.step(self.last_prompt_tokens)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.positions = self.positions + 1
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        return self.model(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=self.positions,
                          **self.cache_argument, use_cache=True, logits_to_keep=1).logits[:, -1].float()

    def drop_rows(self, keep: torch.Tensor) -> None:
        _select_rows(self.cache, keep)
        self.positions, self.mask = self.positions[keep], self.mask[keep]


def cache_keyword(model) -> str:
    """The forward argument that takes the KV cache. transformers 5.24 renamed `past_key_values` to
    `cache` (the old name warns, and goes in 5.40); earlier releases and remote-code models only know
    `past_key_values`. Asking the signature keeps the whole `transformers>=5,<6` range working."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _pick(logits: torch.Tensor, temperature: float, nucleus: NucleusFilter | None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(dim=-1)
    # A tiny temperature (1e-300) is the greedy limit, not NaN: the top logit is shifted to 0 and the
    # temperature kept above 0 in the logits' dtype (1e-300 is 0 in float32), so the others go to -inf.
    temperature = max(temperature, torch.finfo(logits.dtype).tiny)
    scores = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    if nucleus is not None:
        return nucleus.sample(scores)
    return torch.multinomial(scores.softmax(dim=-1), num_samples=1).squeeze(1)


def _select_rows(cache, keep: torch.Tensor) -> None:
    """Keep only rows `keep` of every layer of a StaticCache (or of any cache whose layers can select)."""
    from transformers.cache_utils import StaticLayer

    for layer in cache.layers:
        if type(layer) is StaticLayer:
            layer.keys = layer.keys.index_select(0, keep)
            layer.values = layer.values.index_select(0, keep)
            layer.batch_size = len(keep)
        else:
            layer.batch_select_indices(keep)
