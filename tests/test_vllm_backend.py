"""`--backend vllm`: vLLM's offline engine in this process.

Where vllm is not installed (this project's CPU machines) the backend is a clear configuration error, and
its log-prob arithmetic is checked against the Hugging Face backend's on the same logits. Where it is
installed (a GPU machine with vllm), its greedy critiques and probability scores are compared with the
Hugging Face backend's on the default model.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from criticrm.generation.base import SamplingConfig
from criticrm.generation.factory import GeneratorConfig, generator_for
from criticrm.generation.huggingface import _score_distributions
from criticrm.generation.vllm_offline import score_from_top
from criticrm.models.backbone import ModelConfig, load_tokenizer
from criticrm.prompts.scores import ScoreTokens

HAS_VLLM = importlib.util.find_spec("vllm") is not None
DATA = "data/sample/train.jsonl"


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_without_vllm_the_backend_is_one_clear_input_error(tmp_path, capsys):
    from criticrm.cli import main
    from criticrm.errors import ConfigError

    with pytest.raises(ConfigError, match="needs the vllm package.*pip install vllm.*backend huggingface"):
        generator_for(GeneratorConfig(backend="vllm"), ModelConfig())
    status = main(["critique", "--data", DATA, "--out", str(tmp_path / "out"), "--backend", "vllm", "--limit", "2"])
    err = capsys.readouterr().err
    assert status == 2 and "needs the vllm package" in err and "Traceback" not in err


def test_scores_from_top_log_probs_match_the_full_distribution():
    """With every token's probability at hand, the sparse reading equals the Hugging Face backend's dense one
    (the default tokenizer splits "10", so both positions are read); without any score token it is None."""
    tokenizer = load_tokenizer(None)
    tokens = ScoreTokens.from_tokenizer(tokenizer, "Score: ")
    assert tokens.split_ten
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, len(tokenizer), generator=generator)
    logits[:, :, list(tokens.score_ids)] += 6.0  # most of the mass on the scores, as after a real score prefix
    logits[:, 1, list(tokens.digit_ids)] += 3.0
    expected = _score_distributions(logits, tokens)
    for row in range(3):
        first, after_one = (dict(enumerate(torch.softmax(logits[row, k], dim=-1).tolist())) for k in (0, 1))
        found = score_from_top(first, after_one, tokens)
        assert found.score == pytest.approx(expected[row].score, rel=1e-5)
        assert found.mass == pytest.approx(expected[row].mass, rel=1e-5)
    assert score_from_top({0: 0.9}, {0: 0.9}, tokens) is None  # no score token in the top log-probs


@pytest.mark.skipif(not HAS_VLLM or not torch.cuda.is_available(), reason="needs vllm and a GPU it supports")
def test_vllm_writes_the_hugging_face_backends_greedy_critiques():
    conversations = [[{"role": "user", "content": f"Rate this answer to 2 + {k}: {2 + k}. End with 'Score: N/10'."}]
                     for k in range(4)]
    sampling = SamplingConfig(num_critiques=2, temperature=0.0, max_new_tokens=24)
    model = ModelConfig(dtype="fp32")
    local = generator_for(GeneratorConfig(), model).generate(conversations, sampling, score_prefix="Score: ")
    engine = generator_for(GeneratorConfig(backend="vllm", gpu_memory_utilization=0.3), model)
    found = engine.generate(conversations, sampling, score_prefix="Score: ")
    for ours, theirs in zip(local, found, strict=True):
        assert [c.text for c in theirs] == [c.text for c in ours]
        for a, b in zip(ours, theirs, strict=True):
            assert (a.probability is None) == (b.probability is None)
            if a.probability is not None:
                assert b.probability.score == pytest.approx(a.probability.score, abs=0.05)
