"""A tiny random backbone with the default model's tokenizer, for fast tests and smoke runs.

It has the same tokenizer, chat template and special tokens as SmolLM2-135M-Instruct (so every sequence
layout is the real one) but a 2-layer, 32-wide Llama body: a training step takes milliseconds. Its
outputs mean nothing; use it to test code paths, never to measure quality or speed.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def make_tiny_backbone(folder: str | Path, hidden_size: int = 32, layers: int = 2, seed: int = 0,
                       tie_word_embeddings: bool = True) -> Path:
    """Write a tiny random LlamaForCausalLM (+ the default tokenizer) into `folder`; returns the folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from criticrm.models.backbone import load_tokenizer

    folder = Path(folder)
    tokenizer = load_tokenizer(None)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=tie_word_embeddings, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_tiny_reward_models(root: str | Path, head_seed: int = 3) -> dict[str, Path]:
    """A saved critic-mode and standard-mode reward model on a tiny backbone, keyed by mode.

    Their reward heads get random weights of unit scale (seeded), so rewards differ visibly between inputs;
    a freshly initialised head gives rewards near 0 that would hide a wrongly read position.
    """
    import torch

    from criticrm.models.backbone import load_tokenizer
    from criticrm.models.critic_rm import CriticRewardModel

    root = Path(root)
    backbone = make_tiny_backbone(root / "backbone")
    models = {}
    for mode in ("critic", "standard"):
        model = CriticRewardModel.from_backbone(str(backbone), mode=mode)
        with torch.no_grad():
            for parameter in model.reward_head.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(head_seed)))
        models[mode] = model.save(root / mode, tokenizer=load_tokenizer(str(backbone)))
    return models


@contextlib.contextmanager
def one_thread_if_oversubscribed():
    """Use one torch thread while every core is already busy (load average >= cores), for tests.

    Two OpenMP threads on cores that other processes occupy wait on each other at every barrier; on a
    shared 2-core machine that makes small models ~10x slower than one thread.
    """
    import torch

    threads = torch.get_num_threads()
    if os.getloadavg()[0] >= (os.cpu_count() or 1):
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
