"""The HF backend's decoding loop (finished rows dropped as it goes) against plain `generate`, on the
default model: greedy tokens must be the same, row by row, with rows that end at different steps."""

from __future__ import annotations

import warnings

import pytest
import torch

from criticrm.generation.base import SamplingConfig
from criticrm.generation.decoding import cache_keyword
from criticrm.generation.huggingface import HFGenerator
from criticrm.models.backbone import ModelConfig, load_causal_lm
from criticrm.testing.tiny import one_thread_if_oversubscribed

PROMPTS = ["Reply with the single word: yes.", "Write a long poem about the sea, with many verses.",
           "What is 2 + 2? Answer with a number only.", "List ten fruits, one per line, and describe each."]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    with one_thread_if_oversubscribed():
        yield load_causal_lm(ModelConfig(dtype="fp32"))


def test_greedy_tokens_equal_generate_while_rows_finish_at_different_steps(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    generator = HFGenerator(model, tokenizer, "default", batch_size=8)
    conversations = [[{"role": "user", "content": prompt}] for prompt in PROMPTS]
    ours = generator.generate(conversations, SamplingConfig(num_critiques=1, temperature=0.0, max_new_tokens=40))
    lengths = [samples[0].completion_tokens for samples in ours]
    assert min(lengths) < 20 and max(lengths) == 40  # some rows end early, some run to the cap
    for conversation, samples in zip(conversations, ours, strict=True):
        ids = torch.tensor([generator.encode(conversation)])
        with one_thread_if_oversubscribed():
            reference = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=40,
                                       pad_token_id=generator.pad_id, eos_token_id=generator.eos_ids)
        text = tokenizer.decode(reference[0, ids.shape[1]:], skip_special_tokens=True).strip()
        assert samples[0].text == text


def test_sampling_is_fixed_by_the_seed(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    generator = HFGenerator(model, tokenizer, "default", batch_size=8)
    conversations = [[{"role": "user", "content": prompt}] for prompt in PROMPTS[:2]]

    def texts(seed: int) -> list[str]:
        sampling = SamplingConfig(num_critiques=3, temperature=0.8, top_p=0.95, max_new_tokens=16, seed=seed)
        return [c.text for samples in generator.generate(conversations, sampling) for c in samples]

    first = texts(0)
    assert texts(0) == first and texts(1) != first
    assert len(set(first[:3])) > 1  # the N samples of one prompt differ


def test_the_kv_cache_is_passed_under_the_name_the_forward_takes(model_and_tokenizer):
    """transformers 5.24 renamed `past_key_values` to `cache` (the old name warns and goes in 5.40);
    older releases and remote-code models only take `past_key_values`. Generation must use whichever
    the model has, so that neither kind warns or breaks."""

    class OldStyle(torch.nn.Module):
        def forward(self, input_ids, past_key_values=None, use_cache=None): ...

    class NewStyle(torch.nn.Module):
        def forward(self, input_ids, cache=None, use_cache=None): ...

    assert cache_keyword(OldStyle()) == "past_key_values"
    assert cache_keyword(NewStyle()) == "cache"
    model, tokenizer = model_and_tokenizer
    generator = HFGenerator(model, tokenizer, "default", batch_size=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generator.generate([[{"role": "user", "content": PROMPTS[0]}]] * 2,
                           SamplingConfig(num_critiques=2, temperature=0.8, max_new_tokens=4))
    assert not [w for w in caught if "past_key_values" in str(w.message)]
