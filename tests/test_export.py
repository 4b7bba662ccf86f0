"""`criticrm export --format sequence-classification`: the exported folder, loaded as TRL, OpenRLHF and
RewardBench load a scalar RM (`AutoModelForSequenceClassification`), gives criticrm's rewards."""

from __future__ import annotations

import pytest
import torch

from criticrm.cli import main
from criticrm.models.backbone import load_tokenizer
from criticrm.models.critic_rm import CriticRewardModel
from criticrm.testing.tiny import make_tiny_backbone

PAIRS = [("What is 2+2?", "It is 4."), ("Name a prime number larger than 10.", "  11  "),
         ("Say hello.", "Hello! How can I help you today? I am here for you."), ("Why?", "Because.")]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(make_tiny_backbone(tmp_path_factory.mktemp("tiny")))


def _standard_model(tiny_dir: str, lora: bool = False) -> CriticRewardModel:
    model = CriticRewardModel.from_backbone(tiny_dir, mode="standard", head_init_std=1.0).eval()
    if lora:
        model.add_lora(r=4, alpha=8)
        model.eval()
    with torch.no_grad():
        model.reward_head.net.bias.fill_(0.75)  # a score layer has no bias: the export must account for it
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.05)
    model.reward_config.reward_mean, model.reward_config.reward_std = 0.5, 2.0
    return model


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora-adapter"])
def test_exported_classifier_gives_criticrm_rewards(tiny_dir, tmp_path, lora):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = load_tokenizer(tiny_dir)
    folder = _standard_model(tiny_dir, lora).save(tmp_path / "rm", tokenizer=tokenizer)
    reference = CriticRewardModel.load(folder)
    expected = reference.score_texts(tokenizer, [(p, r, None) for p, r in PAIRS])
    normalized = reference.score_texts(tokenizer, [(p, r, None) for p, r in PAIRS], normalize=True)

    out = tmp_path / "exported"
    assert main(["export", "--format", "sequence-classification", "--model", str(folder), "--out", str(out)]) == 0
    classifier = AutoModelForSequenceClassification.from_pretrained(out).eval()
    exported_tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(classifier).__name__ == "LlamaForSequenceClassification" and classifier.score.bias is None
    read_token = tokenizer.convert_ids_to_tokens(tokenizer.eos_token_id)  # <|im_end|> closes the response
    assert classifier.config.pad_token_id == exported_tokenizer.pad_token_id != tokenizer.eos_token_id
    # the text the model card gives, tokenized, is exactly criticrm's sequence
    texts = [exported_tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                    add_generation_prompt=True) + r.strip() + read_token
             for p, r in PAIRS]
    builder = reference.sequence_builder(tokenizer)
    assert [exported_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts] == [
        builder.encode(p, r).input_ids for p, r in PAIRS]
    batch = exported_tokenizer(texts, add_special_tokens=False, padding=True, padding_side="right",
                               return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # a padded batch, as TRL scores completions
    with torch.no_grad():
        scores = classifier(**batch).logits[:, 0]
    bias = classifier.config.criticrm_reward_bias
    assert bias == pytest.approx(0.75)
    assert (scores + bias).tolist() == pytest.approx(expected, abs=1e-5)
    # OpenRLHF's normalize_reward: (score - config.mean) / config.std is criticrm's --normalize reward
    openrlhf = (scores - classifier.config.mean) / classifier.config.std
    assert openrlhf.tolist() == pytest.approx(normalized, abs=1e-5)
    assert "criticrm_reward_bias" in (out / "README.md").read_text()


def test_export_refuses_what_a_sequence_classifier_cannot_be(tiny_dir, tmp_path, capsys):
    tokenizer = load_tokenizer(tiny_dir)
    critic = CriticRewardModel.from_backbone(tiny_dir, mode="critic").save(tmp_path / "critic", tokenizer=tokenizer)
    mlp = CriticRewardModel.from_backbone(tiny_dir, mode="standard", head_hidden_size=8).save(
        tmp_path / "mlp", tokenizer=tokenizer)
    for folder, message in ((critic, "critic-mode model"), (mlp, "MLP reward head"),
                            (tmp_path, "not a criticrm reward-model folder")):
        assert main(["export", "--format", "sequence-classification", "--model", str(folder),
                     "--out", str(tmp_path / "out")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
