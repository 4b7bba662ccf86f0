"""Packed training rows: a pair's sequences laid out once as a prefix tree give the rewards, critique logits,
losses and gradients of the same sequences forwarded one per row."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from criticrm.models.backbone import load_tokenizer
from criticrm.models.critic_rm import CriticRewardModel
from criticrm.models.packing import pack_sequences
from criticrm.models.sequences import EncodedSequence, SequenceBuilder
from criticrm.testing.rows import synthetic_rows
from criticrm.testing.tiny import make_tiny_backbone
from criticrm.training import TrainConfig
from criticrm.training.data import PairCollator, PairDataset, encode_pairs

SAMPLE = Path(__file__).parent.parent / "data" / "sample" / "train.jsonl"



@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(make_tiny_backbone(tmp_path_factory.mktemp("tiny"), hidden_size=64, layers=3))


def test_pack_sequences_lays_out_each_shared_prefix_once():
    row = pack_sequences([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 6], [1, 2, 3, 4], [7]])
    assert row.input_ids == [1, 2, 3, 4, 5, 6, 7]
    assert row.position_ids == [0, 1, 2, 3, 3, 2, 0]
    assert row.index == [[0, 1, 2, 3], [0, 1, 2, 4], [0, 1, 5], [0, 1, 2, 3], [6]]
    mask = row.attention_mask(width=9)
    for sequence in row.index:  # each token sees exactly the earlier tokens of its own sequence
        for t, q in enumerate(sequence):
            assert mask[q].nonzero().flatten().tolist() == sorted(sequence[:t + 1])
    assert mask[7].nonzero().flatten().tolist() == [7] and mask[8].nonzero().flatten().tolist() == [8]
    with pytest.raises(ValueError):
        pack_sequences([[1], []])


def batches(tokenizer, mode: str, pairs: int = 6, reward_critiques: str = "refined"):
    """The same items collated one sequence per row and packed (every pair has 2 critiques per response, so
    critic-mode rows share the judge prompt; some pairs are reward-only). Under `reward_critiques: sampled`
    a supervised pair's refined critiques are also among its sampled ones: packed, the two share one path."""
    rows = synthetic_rows(SAMPLE, limit=pairs, multi_every=1, reward_only_every=2)
    examples, _ = encode_pairs(rows, SequenceBuilder(tokenizer, mode=mode, max_length=512),
                               reward_critiques=reward_critiques)
    dataset = PairDataset(examples, pairing="all")
    items = [dataset[i] for i in range(len(dataset))]
    critic = mode == "critic"
    separate = PairCollator(tokenizer.pad_token_id, with_critique_loss=critic)(items)
    packed = PairCollator(tokenizer.pad_token_id, with_critique_loss=critic, share_prefixes=True)(items)
    return separate, packed


def forward(model, batch):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 read_positions=batch["read_positions"], lm_positions=batch["lm_positions"],
                 position_ids=batch.get("position_ids"), read_rows=batch.get("read_rows"))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("mode", ["critic", "standard"])
def test_packed_rows_give_the_rewards_and_logits_of_separate_rows(tiny_dir, attention, mode):
    tokenizer = load_tokenizer(tiny_dir)
    separate, packed = batches(tokenizer, mode)
    assert packed["input_ids"].shape[0] == 6 < separate["input_ids"].shape[0]  # one row per pair
    assert packed["input_ids"].numel() < separate["input_ids"].numel()
    assert packed["num_tokens"] == separate["num_tokens"] == separate["attention_mask"].sum()
    if mode == "critic":
        assert torch.equal(packed["lm_targets"], separate["lm_targets"]) and packed["lm_targets"].numel() > 0
    model = CriticRewardModel.from_backbone(tiny_dir, mode=mode, attn_implementation=attention).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.reward_head.net.weight, std=1.0)  # rewards that differ visibly between inputs
        one, other = forward(model, separate), forward(model, packed)
    assert one.rewards.std() > 1e-3
    torch.testing.assert_close(other.rewards, one.rewards, rtol=1e-4, atol=1e-5)
    if mode == "critic":
        torch.testing.assert_close(other.lm_logits, one.lm_logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reward_critiques", ["refined", "sampled"])
def test_packed_rows_give_the_loss_and_gradient_of_separate_rows(tiny_dir, reward_critiques):
    from transformers import TrainingArguments

    from criticrm.training.schedules import LambdaSchedule
    from criticrm.training.trainer import CriticRMTrainer, _per_pair_statistics

    tokenizer = load_tokenizer(tiny_dir)
    separate, packed = batches(tokenizer, "critic", reward_critiques=reward_critiques)
    model = CriticRewardModel.from_backbone(tiny_dir)
    trainer = CriticRMTrainer(model=model, args=TrainingArguments(output_dir="/tmp/unused", report_to="none",
                                                                  use_cpu=True),
                              train_config=TrainConfig(), lambda_schedule=LambdaSchedule("constant", 0.5))
    trainer.state.max_steps = 10

    def loss_and_gradient(batch):
        model.zero_grad()
        loss = trainer.compute_loss(model, batch)
        loss.backward()
        return loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    loss_separate, gradient_separate = loss_and_gradient(separate)
    loss_packed, gradient_packed = loss_and_gradient(packed)
    assert loss_packed == pytest.approx(loss_separate, rel=1e-5)
    torch.testing.assert_close(gradient_packed, gradient_separate, rtol=1e-3, atol=1e-6)
    with torch.no_grad():  # validation statistics, per pair, critique tokens included
        torch.testing.assert_close(_per_pair_statistics(packed, trainer._forward(model, packed)),
                                   _per_pair_statistics(separate, trainer._forward(model, separate)),
                                   rtol=1e-4, atol=1e-5)


def test_packing_is_off_where_it_would_change_the_result(tiny_dir):
    from criticrm.training.trainer import shares_prefixes

    model = CriticRewardModel.from_backbone(tiny_dir, max_length=1024)
    assert shares_prefixes(TrainConfig(), model) and not shares_prefixes(TrainConfig(share_prefixes=False), model)
    config = model.causal_lm.config
    config.sliding_window, config.layer_types = 4096, ["sliding_attention", "full_attention"] * 2
    assert model.takes_packed_rows  # a window longer than any sequence cuts nothing
    config.sliding_window = 512  # shorter than max_length: a packed row would see past it
    assert not model.takes_packed_rows
    config.sliding_window, config.layer_types = None, None
    config._attn_implementation = "flash_attention_2"  # takes no mask (not installable here: the check reads this)
    assert not model.takes_packed_rows and not shares_prefixes(TrainConfig(), model)


def test_a_pair_whose_packed_row_would_cost_more_gets_one_row_per_sequence():
    def item(*sequences):
        return {"sequences": [EncodedSequence(ids, 1, len(ids)) for ids in sequences], "comparisons": [(0, 1)],
                "chosen_slots": [0], "read_slots": len(sequences), "critique_slots": [0, 1], "margin": 0.0}

    sharing, apart = item([1, 2, 3, 4], [1, 2, 3, 5]), item([1, 2, 3, 4], [5, 6, 7])
    collate = PairCollator(0, share_prefixes=True, token_cost=10)
    batch = collate([sharing, apart])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [1, 2, 3, 4, 0], [5, 6, 7, 0, 0]]
    assert batch["read_rows"].tolist() == [0, 0, 1, 2] and batch["read_positions"].tolist() == [3, 4, 3, 2]
    assert batch["pair_of_row"].tolist() == [0, 1, 1]
    assert PairCollator(0, share_prefixes=True)([apart])["input_ids"].shape[0] == 1  # no cost given: always packed


@pytest.mark.model
def test_packed_rows_match_separate_rows_on_the_default_model():
    tokenizer = load_tokenizer(None)
    separate, packed = batches(tokenizer, "critic", pairs=2)
    model = CriticRewardModel.from_backbone(None).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.reward_head.net.weight, std=0.05)
        one, other = forward(model, separate), forward(model, packed)
    torch.testing.assert_close(other.rewards, one.rewards, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(other.lm_logits, one.lm_logits, rtol=1e-3, atol=1e-3)
