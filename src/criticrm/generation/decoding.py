"""The decoding loop of the Hugging Face backend: greedy or top-p sampling that drops finished rows.

`generate` keeps every row of a batch until its longest row ends: with critiques of 10 to 128 tokens
a third of the decoded row-steps were rows already finished. This loop removes finished rows from
the batch (and from the KV cache) once an eighth of the rows alive have finished, so a step costs
what the unfinished rows cost. Greedy decoding gives the tokens `generate` gives; sampling draws
from the same distribution (temperature, then `NucleusFilter`) with torch's global generator, so a
seed fixes the result for a given batch.
"""

from __future__ import annotations

import inspect

import torch

from criticrm.generation.nucleus import NucleusFilter

COMPACT_FRACTION = 8  # drop finished rows once 1/8 of the rows alive have finished


@torch.inference_mode()
def decode(model, input_ids: torch.Tensor, attention: torch.Tensor, cache, *, max_new_tokens: int,
           eos_ids: list[int], temperature: float = 0.0, top_p: float = 1.0) -> list[list[int]]:
    """New tokens of every row (its end-of-sequence token included when it has one).

    `cache` holds every prompt token but each row's last (`input_ids[:, -1]`), left-padded as
    `attention` says; it is consumed (rows are removed from it as they finish).
    """
    rows = input_ids.shape[0]
    nucleus = NucleusFilter(top_p) if temperature > 0 and top_p < 1 else None
    eos = torch.tensor(eos_ids, device=input_ids.device)
    alive = torch.arange(rows, device=input_ids.device)  # original row of each row still decoding
    generated: list[list[int]] = [[] for _ in range(rows)]
    next_ids = input_ids[:, -1:]
    positions = (attention.sum(dim=1, keepdim=True) - 1).clamp(min=0)
    mask = attention
    finished = torch.zeros(rows, dtype=torch.bool, device=input_ids.device)  # ended, not yet dropped
    cache_argument = {cache_keyword(model): cache}
    for _ in range(max_new_tokens):
        logits = model(input_ids=next_ids, attention_mask=mask, position_ids=positions, **cache_argument,
                       use_cache=True, logits_to_keep=1).logits[:, -1].float()
        tokens = _pick(logits, temperature, nucleus)
        for row, token, ended in zip(alive.tolist(), tokens.tolist(), finished.tolist(), strict=True):
            if not ended:
                generated[row].append(token)
        finished = finished | torch.isin(tokens, eos)
        if bool(finished.all()):
            break
        next_ids, positions = tokens[:, None], positions + 1
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        if int(finished.sum()) * COMPACT_FRACTION >= len(alive):
            keep = (~finished).nonzero().squeeze(1)
            _select_rows(cache, keep)
            alive, next_ids, positions, mask = alive[keep], next_ids[keep], positions[keep], mask[keep]
            finished = finished[keep]
    return generated


def cache_keyword(model) -> str:
    """The forward argument that takes the KV cache. transformers 5.24 renamed `past_key_values` to
    `cache` (the old name warns, and goes in 5.40); earlier releases and remote-code models only know
    `past_key_values`. Asking the signature keeps the whole `transformers>=5,<6` range working."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _pick(logits: torch.Tensor, temperature: float, nucleus: NucleusFilter | None) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(dim=-1)
    scores = logits / temperature
    if nucleus is not None:
        scores = nucleus(None, scores)
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
