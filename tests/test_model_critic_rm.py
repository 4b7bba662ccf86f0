"""The two-head model: padding invariance, LM logits at selected positions, save/load, LoRA with its head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from criticrm.models.backbone import load_tokenizer
from criticrm.models.critic_rm import (
    CONFIG_FILE,
    CRITICRM_SUBDIR,
    HEAD_FILE,
    CriticRewardModel,
    is_reward_model_dir,
    load_weights_into,
)
from criticrm.models.sequences import pad_sequences
from criticrm.testing.tiny import make_tiny_backbone

ITEMS = [
    ("What is 2+2?", "It is 4.", "Correct and brief.\nScore: 9/10"),
    ("Name a prime number larger than 10.", "9", "Wrong: 9 is not prime and not larger than 10.\nScore: 1/10"),
    ("Say hello.", "Hello! How can I help you today?", "Polite and does what was asked.\nScore: 8/10"),
]



@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(None)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(make_tiny_backbone(tmp_path_factory.mktemp("tiny")))


def _sequences(model, tokenizer):
    return [s.input_ids for s in model.sequence_builder(tokenizer).encode_many(ITEMS)]


def _perturb(model: CriticRewardModel, seed: int = 1) -> None:
    """Give the head (and LoRA B matrices, zero at init) non-trivial values, so that a lost weight shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith("reward_head.") or "lora_B" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)


def _rewards(model, tokenizer, side="right"):
    batch = pad_sequences(_sequences(model, tokenizer), tokenizer.pad_token_id, side)
    return model.reward(batch.input_ids, batch.attention_mask, batch.read_positions)


@pytest.mark.model
def test_reward_alone_equals_reward_in_a_padded_batch_real_model(tokenizer):
    model = CriticRewardModel.from_backbone(None, mode="critic").eval()
    _perturb(model)
    sequences = _sequences(model, tokenizer)
    alone = torch.stack([model.reward(torch.tensor([ids]))[0] for ids in sequences])
    for side in ("left", "right"):
        batch = pad_sequences(sequences, tokenizer.pad_token_id, side)
        assert batch.input_ids.shape[1] > min(len(s) for s in sequences)  # there is padding
        together = model.reward(batch.input_ids, batch.attention_mask)  # read position from the mask
        torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4, msg=f"{side} padding")
        explicit = model.reward(batch.input_ids, batch.attention_mask, batch.read_positions)
        torch.testing.assert_close(explicit, together, atol=0, rtol=0)


def test_lm_logits_only_at_requested_positions_match_the_full_logits(tiny_dir, tokenizer):
    model = CriticRewardModel.from_backbone(tiny_dir, mode="critic").eval()
    batch = pad_sequences(_sequences(model, tokenizer), tokenizer.pad_token_id, "right")
    width = batch.input_ids.shape[1]
    positions = torch.tensor([0 * width + 3, 1 * width + 5, 2 * width + 7])
    with torch.no_grad():
        output = model(batch.input_ids, batch.attention_mask, batch.read_positions, positions)
        full = model.causal_lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    expected = full.reshape(-1, full.shape[-1])[positions]
    assert output.lm_logits.shape == (3, full.shape[-1])
    torch.testing.assert_close(output.lm_logits, expected, atol=1e-5, rtol=1e-5)


def test_save_then_load_gives_identical_rewards(tiny_dir, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    model = CriticRewardModel.from_backbone(tiny_dir, mode="critic", head_hidden_size=16).eval()
    _perturb(model)
    model.reward_config.reward_mean, model.reward_config.reward_std = 0.5, 2.0
    before = _rewards(model, tokenizer)
    folder = model.save(tmp_path / "rm", tokenizer=tokenizer)
    assert is_reward_model_dir(folder)
    assert not [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]  # no pickle
    loaded = CriticRewardModel.load(folder, device="cpu")
    assert loaded.reward_config.mode == "critic" and loaded.reward_config.read_at == "end_of_critique"
    assert torch.equal(_rewards(loaded, tokenizer), before)  # bit-identical
    batch = pad_sequences(_sequences(loaded, tokenizer), tokenizer.pad_token_id)
    torch.testing.assert_close(loaded.reward(batch.input_ids, batch.attention_mask, normalize=True),
                               (before - 0.5) / 2.0)
    texts = loaded.score_texts(tokenizer, ITEMS)
    assert texts == pytest.approx(before.tolist(), abs=1e-6)
    # the folder is an ordinary causal LM for generation engines
    lm = AutoModelForCausalLM.from_pretrained(folder)
    assert torch.equal(lm.get_input_embeddings().weight, model.causal_lm.get_input_embeddings().weight)
    # and its weights load into an existing model (resume, best checkpoint)
    fresh = CriticRewardModel.from_backbone(tiny_dir, mode="critic", head_hidden_size=16).eval()
    load_weights_into(fresh, folder)
    assert torch.equal(_rewards(fresh, tokenizer), before)


def vllm_weight_files(folder: Path) -> list[Path]:
    """The files vLLM's default loader reads from a local folder (load format auto/hf): every top-level
    `*.safetensors` (or, when there is none, the shards an index names), filtered by the index when there
    is one; failing safetensors, `*.bin`, then `*.pt`. From `DefaultModelLoader._prepare_weights` and
    `filter_duplicate_safetensors_files` (vllm-project/vllm, vllm/model_executor/model_loader/
    default_loader.py and weight_utils.py)."""
    index = folder / "model.safetensors.index.json"
    indexed = sorted({folder / n for n in json.loads(index.read_text())["weight_map"].values()}) if index.is_file() else []
    files = sorted(folder.glob("*.safetensors")) or [f for f in indexed if f.is_file()]
    if files:
        return [f for f in files if f in indexed] if index.is_file() else files
    return sorted(folder.glob("*.bin")) or sorted(folder.glob("*.pt"))


@pytest.mark.parametrize("head_hidden_size", [0, 16])
def test_the_folder_top_level_is_exactly_a_causal_lm_for_vllm_and_transformers(tiny_dir, tokenizer, tmp_path,
                                                                               head_hidden_size):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    model = CriticRewardModel.from_backbone(tiny_dir, mode="critic", head_hidden_size=head_hidden_size)
    folder = model.save(tmp_path / "rm", tokenizer=tokenizer)
    lm, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    read_by_vllm = set()
    for file in vllm_weight_files(folder):
        with safe_open(str(file), framework="pt") as handle:
            read_by_vllm |= set(handle.keys())
    assert read_by_vllm and read_by_vllm <= set(lm.state_dict())  # the LM's tensors, nothing else
    assert {"criticrm/reward_head.safetensors", f"criticrm/{CONFIG_FILE}"} <= {
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n") and "critic-mode reward model" in card
    assert "criticrm score --model" in card


def test_a_folder_saved_by_an_earlier_version_still_loads(tiny_dir, tokenizer, tmp_path):
    model = CriticRewardModel.from_backbone(tiny_dir, mode="critic").eval()
    _perturb(model)
    before = _rewards(model, tokenizer)
    folder = model.save(tmp_path / "old", tokenizer=tokenizer)
    for name in (HEAD_FILE, CONFIG_FILE):  # the layout before 0.2: head and config beside the LM
        (folder / CRITICRM_SUBDIR / name).rename(folder / name)
    (folder / CRITICRM_SUBDIR).rmdir()
    assert is_reward_model_dir(folder)
    assert torch.equal(_rewards(CriticRewardModel.load(folder), tokenizer), before)
    fresh = CriticRewardModel.from_backbone(tiny_dir, mode="critic").eval()
    load_weights_into(fresh, folder)  # an old checkpoint resumes
    assert torch.equal(_rewards(fresh, tokenizer), before)
    CriticRewardModel.load(folder).save(folder, tokenizer=tokenizer)  # saved over: the new layout only
    assert not (folder / HEAD_FILE).exists() and not (folder / CONFIG_FILE).exists()
    assert torch.equal(_rewards(CriticRewardModel.load(folder), tokenizer), before)


def test_standard_mode_reads_the_end_of_the_response(tiny_dir, tokenizer, tmp_path):
    model = CriticRewardModel.from_backbone(tiny_dir, mode="standard").eval()
    sequence = model.sequence_builder(tokenizer).encode("What is 2+2?", "It is 4.")
    assert tokenizer.decode(sequence.input_ids).endswith("It is 4.<|im_end|>")
    folder = model.save(tmp_path / "standard", tokenizer=tokenizer)
    assert CriticRewardModel.load(folder).reward_config.read_at == "end_of_response"


def test_lora_model_saves_and_reloads_its_head(tiny_dir, tokenizer, tmp_path):
    model = CriticRewardModel.from_backbone(tiny_dir, mode="critic")
    model.add_lora(r=4, alpha=8, dropout=0.0)
    model.eval()
    _perturb(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("reward_head.") for n in trainable)
    assert any(n.startswith("reward_head.") for n in trainable)
    before = _rewards(model, tokenizer)

    adapter = model.save(tmp_path / "adapter", tokenizer=tokenizer)
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / CRITICRM_SUBDIR / HEAD_FILE).is_file()
    assert not (adapter / "model.safetensors").exists()
    reloaded = CriticRewardModel.load(adapter)
    assert reloaded.is_lora and reloaded.reward_config.adapter
    assert reloaded.reward_config.base_model == tiny_dir
    assert torch.equal(_rewards(reloaded, tokenizer), before)

    merged = model.save(tmp_path / "merged", tokenizer=tokenizer, merge_lora=True)
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    merged_model = CriticRewardModel.load(merged)
    assert not merged_model.is_lora
    torch.testing.assert_close(_rewards(merged_model, tokenizer), before, atol=1e-5, rtol=1e-4)
    assert model.is_lora  # merging for the save did not change the training model


def test_load_refuses_a_plain_causal_lm(tiny_dir):
    from criticrm.models.critic_rm import RewardModelError

    with pytest.raises(RewardModelError, match="not a criticrm reward model"):
        CriticRewardModel.load(Path(tiny_dir))
