"""NucleusFilter keeps exactly the tokens transformers' TopPLogitsWarper keeps."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TopPLogitsWarper

from criticrm.generation.nucleus import NucleusFilter


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95])
def test_same_kept_tokens_as_transformers_including_flat_rows(top_p):
    generator = torch.Generator().manual_seed(0)
    peaked = torch.randn(6, 5000, generator=generator) * 6  # nucleus well inside the candidates
    flat = torch.randn(3, 5000, generator=generator) * 0.01  # nucleus far past them: the full-sort fallback
    scores = torch.cat([peaked, flat])
    ours = NucleusFilter(top_p, candidates=64)(None, scores.clone())
    reference = TopPLogitsWarper(top_p)(None, scores.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(reference))
    kept = ~torch.isinf(ours)
    assert torch.equal(ours[kept], scores[kept])  # kept tokens keep their logits
    assert kept[:6].sum(dim=1).max() < 64 and kept[6:].sum(dim=1).min() > 64  # both paths were exercised


def test_one_token_is_always_kept_and_top_p_one_keeps_all():
    scores = torch.tensor([[10.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    assert (~torch.isinf(NucleusFilter(0.01)(None, scores))).sum(dim=1).tolist() == [1, 1]
    assert torch.equal(NucleusFilter(1.0)(None, scores), scores)
    with pytest.raises(ValueError, match="top_p"):
        NucleusFilter(0.0)


@pytest.mark.parametrize("flat", [False, True])
def test_sample_draws_from_the_filtered_distribution(flat):
    """`sample` (among the candidates, or the full-sort fallback for a flat row) draws exactly the
    distribution of softmax over the filtered logits."""
    generator = torch.Generator().manual_seed(1)
    row = torch.randn(40, generator=generator) * (0.05 if flat else 2.0)
    nucleus = NucleusFilter(0.8, candidates=8)
    expected = nucleus(None, row[None].clone()).softmax(dim=-1)[0]
    torch.manual_seed(0)
    draws = nucleus.sample(row.expand(20000, -1).clone())
    frequencies = torch.bincount(draws, minlength=40).float() / 20000
    assert torch.all(frequencies[expected == 0] == 0)  # never a token outside the nucleus
    assert torch.allclose(frequencies, expected, atol=0.015)
    assert (expected > 0).sum() > (8 if flat else 1)
