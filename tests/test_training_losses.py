"""Losses, critique pairing, sampling and splitting (no model: fast)."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
import torch

from criticrm.models.sequences import EncodedSequence
from criticrm.testing.rows import synthetic_rows, write_rows
from criticrm.training.data import (
    LengthGroupedSampler,
    PairCollator,
    PairDataset,
    PairExample,
    TrainingDataError,
    choose_comparisons,
    load_training_pairs,
    split_by_prompt,
)
from criticrm.training.losses import bradley_terry_losses, critique_loss_sum, reward_loss_sums

SAMPLE = Path(__file__).parent.parent / "data" / "sample" / "train.jsonl"


def test_bradley_terry_values_margin_and_centering():
    chosen, rejected = torch.tensor([0.0, 2.0]), torch.tensor([0.0, 1.0])
    losses = bradley_terry_losses(chosen, rejected)
    assert losses[0].item() == pytest.approx(math.log(2))
    assert losses[1].item() == pytest.approx(math.log(1 + math.exp(-1)))
    with_margin = bradley_terry_losses(chosen, rejected, torch.tensor([0.0, 1.0]))
    assert with_margin[1].item() == pytest.approx(math.log(2))  # a margin of 1 cancels a lead of 1
    sums = reward_loss_sums(torch.tensor([2.0, 1.0, 0.5, 0.5]), torch.tensor([0, 2]), torch.tensor([1, 3]),
                            torch.tensor([1.0, 1.0]))
    assert sums["accuracy"].item() == 1.5  # one win, one tie
    assert sums["center_loss"].item() == pytest.approx(9.0 + 1.0)
    assert sums["margin"].item() == pytest.approx(1.0)


def test_critique_loss_sum_is_a_summed_cross_entropy_and_zero_without_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]))
    assert critique_loss_sum(logits, torch.tensor([0, 1])).item() == pytest.approx(-math.log(0.5) - math.log(0.8))
    empty = critique_loss_sum(logits[:0].requires_grad_(), torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0.0 and empty.requires_grad  # the LM head stays in the graph


def test_pairing_policies():
    assert choose_comparisons(1, 1, "matched") == [(0, 0)]
    assert choose_comparisons(3, 1, "matched") == [(0, 0), (1, 0), (2, 0)]
    assert choose_comparisons(2, 2, "all") == [(0, 0), (0, 1), (1, 0), (1, 1)]
    picked = choose_comparisons(3, 3, "random-k", k=2, rng=random.Random(1))
    assert len(picked) == 2 and len(set(picked)) == 2
    assert choose_comparisons(1, 2, "random-k", k=5) == [(0, 0), (0, 1)]


def _example(n_chosen: int, n_rejected: int, length: int = 5) -> PairExample:
    def seq(i):
        return EncodedSequence(list(range(10 + i, 10 + i + length)), 2, length)

    return PairExample([seq(i) for i in range(n_chosen)], [seq(10 + i) for i in range(n_rejected)], True)


def test_random_k_draws_new_comparisons_each_epoch_and_replays_them():
    dataset = PairDataset([_example(4, 4)], pairing="random-k", k=2, seed=3)
    draws = []
    for epoch in range(6):
        dataset.set_epoch(epoch)
        draws.append(tuple(dataset[0]["comparisons"]))
    assert len(set(draws)) > 1
    dataset.set_epoch(2)
    assert tuple(dataset[0]["comparisons"]) == draws[2]


def test_collator_weights_every_pair_equally_and_forwards_each_critique_once():
    dataset = PairDataset([_example(2, 2), _example(1, 1)], pairing="all")
    batch = PairCollator(pad_token_id=0)([dataset[0], dataset[1]])
    assert batch["input_ids"].shape[0] == 6  # 4 + 2 sequences, none duplicated
    assert batch["chosen_index"].numel() == 5  # 4 comparisons + 1
    assert batch["comparison_weights"].tolist() == [0.25] * 4 + [1.0]
    assert batch["num_pairs"].item() == 2


def test_length_grouped_sampler_is_a_permutation_fixed_by_seed_and_epoch():
    lengths = [random.Random(i).randint(5, 500) for i in range(103)]
    sampler = LengthGroupedSampler(lengths, batch_size=4, seed=7, mega_batch_multiplier=5)
    first = list(sampler)
    assert sorted(first) == list(range(103))
    assert lengths[first[0]] == max(lengths)  # the longest batch comes first
    assert list(sampler) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    # batches are of similar length: far less padding than random batches
    def padding(order):
        return sum(max(lengths[i] for i in order[s:s + 4]) * len(order[s:s + 4]) - sum(lengths[i] for i in order[s:s + 4])
                   for s in range(0, len(order), 4))
    assert padding(first) < 0.5 * padding(list(range(103)))


def test_split_by_prompt_never_shares_a_prompt(tmp_path):
    rows = synthetic_rows(SAMPLE)
    rows += [type(rows[0])(**{**rows[0].__dict__, "id": "dup"})]  # a second pair with the same prompt
    train, held = split_by_prompt(rows, 0.2, seed=0)
    assert len(train) + len(held) == len(rows) and held
    assert not {r.prompt for r in train} & {r.prompt for r in held}
    assert split_by_prompt(rows, 0.2, seed=0) == (train, held)


def test_loading_refined_rows_and_plain_pairs(tmp_path):
    path = write_rows(synthetic_rows(SAMPLE, limit=4), tmp_path / "refine" / "train.jsonl")
    assert len(load_training_pairs(path.parent, "critic")) == 4  # a folder means its train.jsonl
    plain = load_training_pairs(SAMPLE, "standard")
    assert len(plain) == 64 and plain[0].chosen_critiques == []
    with pytest.raises(TrainingDataError, match="without critiques"):
        load_training_pairs(SAMPLE, "critic")
    with pytest.raises(TrainingDataError, match="has no train.jsonl"):
        load_training_pairs(tmp_path, "critic")
