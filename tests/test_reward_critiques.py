"""`reward_critiques: sampled`: the reward reads every critique sampled for a pair, the critique loss learns
the refined ones. Filtering selects critiques that agree with the human label; a reward trained to read only
those learns to trust a critique's verdict, and at inference its own critiques are not so selected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainingArguments

from criticrm.data.schema import CritiqueRecord, PreferencePair, ScoredCritique, TrainingPair
from criticrm.models.backbone import load_tokenizer
from criticrm.models.critic_rm import CriticRewardModel
from criticrm.models.sequences import SequenceBuilder
from criticrm.pipeline.filter import FilterConfig, filter_critiques
from criticrm.pipeline.refine import RefineConfig, run_refine
from criticrm.testing.tiny import make_tiny_backbone
from criticrm.training import TrainConfig
from criticrm.training.data import (
    PairCollator,
    PairDataset,
    TrainingDataError,
    encode_pairs,
    load_training_pairs,
)
from criticrm.training.schedules import LambdaSchedule
from criticrm.training.trainer import CriticRMTrainer

SAMPLE = Path(__file__).parent.parent / "data" / "sample" / "train.jsonl"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(make_tiny_backbone(tmp_path_factory.mktemp("tiny"), hidden_size=64, layers=2))


def critique_records(pair_id: str, chosen: list[float], rejected: list[float]) -> list[CritiqueRecord]:
    return [CritiqueRecord(pair_id=pair_id, side=side, sample_index=i, critique=f"{side} {i} scores {score:g}",
                           parsed_score=score, probability_score=None, score=score, score_source="parsed",
                           prompt_tokens=10, completion_tokens=5, finish_reason="stop", backend="test", model="test",
                           template="general", template_hash="h")
            for side, scores in (("chosen", chosen), ("rejected", rejected)) for i, score in enumerate(scores)]


def test_filter_and_refine_keep_every_sampled_critique_of_a_supervised_pair(tmp_path):
    pairs = [PreferencePair(id=f"p{i}", prompt=f"question {i}", chosen="right", rejected="wrong") for i in range(2)]
    # p0 passes (mean 6 > 4) and keeps 8 of its chosen (> 4), 2 of its rejected (< 6); p1 fails: reward-only
    records = critique_records("p0", [8, 4], [2, 6]) + critique_records("p1", [3, 3], [7, 5])
    decisions, _ = filter_critiques(pairs, records, FilterConfig())
    passed, failed = decisions
    assert [c.score for c in passed.chosen] == [8] and [c.score for c in passed.sampled_chosen] == [8, 4]
    assert [c.score for c in passed.sampled_rejected] == [2, 6] and not failed.sampled_chosen
    run_refine(decisions, None, RefineConfig(strategy="none"), tmp_path, show_progress=False)
    rows = {row.id: row for row in load_training_pairs(tmp_path, "critic")}
    assert [c.text for c in rows["p0"].chosen_critiques] == ["chosen 0 scores 8"]
    assert [c.text for c in rows["p0"].sampled_chosen_critiques] == ["chosen 0 scores 8", "chosen 1 scores 4"]
    assert rows["p1"].sampled_chosen_critiques is None and len(rows["p1"].chosen_critiques) == 2

    # A refinement cache written before the sampled lists existed still serves: no new refinement, and the
    # lists come from the (redone) filter output.
    refined = tmp_path / "refined.jsonl"
    old_rows = [json.loads(line) for line in refined.read_text().splitlines()]
    for row in old_rows:
        row["row"].pop("sampled_chosen_critiques"), row["row"].pop("sampled_rejected_critiques")
    refined.write_text("".join(json.dumps(row) + "\n" for row in old_rows))
    stats = run_refine(decisions, None, RefineConfig(strategy="none"), tmp_path, show_progress=False)
    assert stats["this_run"]["pairs_refined"] == 0
    assert len(load_training_pairs(tmp_path, "critic")[0].sampled_rejected_critiques) == 2


def pair(pair_id: str, refined: tuple[list[str], list[str]], sampled: tuple[list[str], list[str]] | None = None,
         supervised: bool = True) -> TrainingPair:
    def critiques(texts):
        return [ScoredCritique(text, None) for text in texts]

    return TrainingPair(
        id=pair_id, prompt="Name a prime number.", chosen="7 is prime.", rejected="8 is prime.",
        chosen_critiques=critiques(refined[0]), rejected_critiques=critiques(refined[1]),
        critique_supervision=supervised,
        sampled_chosen_critiques=critiques(sampled[0]) if sampled else None,
        sampled_rejected_critiques=critiques(sampled[1]) if sampled else None)


GOOD, BAD = "Correct: 7 is prime.\nScore: 9/10", "Wrong: 8 = 2 x 4.\nScore: 2/10"
DOUBT, PRAISE = "It may be wrong.\nScore: 4/10", "Looks right.\nScore: 8/10"
REFINED, SAMPLED = ([GOOD], [BAD]), ([GOOD, DOUBT], [BAD, PRAISE])  # sampled: the refined + one disagreeing each


def test_the_reward_reads_the_sampled_critiques_and_the_loss_learns_the_refined_ones(tiny_dir):
    """One supervised pair under `sampled` gives the reward loss of a reward-only pair over its sampled
    critiques plus the critique loss of a supervised pair over its refined ones, with a real model."""
    tokenizer = load_tokenizer(tiny_dir)
    builder = SequenceBuilder(tokenizer, max_length=256)
    [example], report = encode_pairs([pair("p", REFINED, SAMPLED)], builder, reward_critiques="sampled")
    assert len(example.chosen) == len(example.rejected) == 2 and len(example.targets) == 2
    assert report.supervised_pairs == 1 and report.critique_tokens > 0 and report.sequences == 6
    [reward_only], _ = encode_pairs([pair("r", SAMPLED, supervised=False)], builder)
    [supervised], _ = encode_pairs([pair("s", REFINED)], builder)
    assert [s.input_ids for s in example.chosen] == [s.input_ids for s in reward_only.chosen]
    assert [s.input_ids for s in example.targets] == [s.input_ids for s in (*supervised.chosen, *supervised.rejected)]

    model = CriticRewardModel.from_backbone(tiny_dir)
    with torch.no_grad():
        torch.nn.init.normal_(model.reward_head.net.weight, std=1.0)  # rewards that differ visibly
    trainer = CriticRMTrainer(model=model, args=TrainingArguments(output_dir="/tmp/unused", report_to="none",
                                                                  use_cpu=True),
                              train_config=TrainConfig(), lambda_schedule=LambdaSchedule("constant", 0.5))
    trainer.state.max_steps = 10

    def batch_of(found, share_prefixes: bool) -> dict:
        return PairCollator(tokenizer.pad_token_id, share_prefixes=share_prefixes)([PairDataset([found])[0]])

    def loss(batch, lam: float) -> float:
        trainer.lambda_schedule = LambdaSchedule("constant", lam)
        return trainer.compute_loss(model, batch).item()

    with torch.no_grad():
        for share_prefixes in (True, False):  # packed, each refined critique shares its sampled twin's path
            batch = batch_of(example, share_prefixes)
            reward_batch, critique_batch = batch_of(reward_only, share_prefixes), batch_of(supervised, share_prefixes)
            rewards = trainer._forward(model, batch).rewards[batch["sequence_is_read"]]
            assert rewards.tolist() == pytest.approx(trainer._forward(model, reward_batch).rewards.tolist(), abs=1e-5)
            assert rewards.std() > 1e-3 and torch.equal(batch["lm_targets"], critique_batch["lm_targets"])
            assert loss(batch, 0.5) == pytest.approx(0.5 * loss(critique_batch, 1.0) + 0.5 * loss(reward_batch, 0.0),
                                                     rel=1e-4)
            assert loss(batch, 0.0) != pytest.approx(loss(critique_batch, 0.0), rel=1e-3)  # not the refined reward


def test_rows_refined_before_the_sampled_lists_existed_are_a_clear_error(tiny_dir):
    builder = SequenceBuilder(load_tokenizer(tiny_dir), max_length=256)
    old = [pair("old-row", REFINED), pair("reward-only", REFINED, supervised=False)]
    examples, _ = encode_pairs(old, builder)  # the paper's recipe reads them as before
    assert len(examples) == 2
    with pytest.raises(TrainingDataError, match="old-row.*sampled_chosen_critiques.*filter and refine"):
        encode_pairs(old, builder, reward_critiques="sampled")
    [reward_only], _ = encode_pairs(old[1:], builder, reward_critiques="sampled")  # needs no sampled lists
    assert not reward_only.targets and not reward_only.supervised


def test_a_real_training_run_reads_the_sampled_critiques_and_says_so(tiny_dir, tmp_path):
    """A tiny run end to end under `sampled`: it trains both losses, validates through sampled critiques
    (a fair held-out accuracy, not one read through label-selected critiques), and its card says which."""
    from criticrm.testing.rows import synthetic_rows, write_rows
    from criticrm.training import train_reward_model

    data = write_rows(synthetic_rows(SAMPLE, limit=12), tmp_path / "train.jsonl")
    config = TrainConfig(max_length=256, batch_size=2, eval_batch_size=8, learning_rate=1e-3, warmup=0.0,
                         eval_fraction=0.25, max_steps=2, reward_critiques="sampled")
    summary = train_reward_model(config, data, tmp_path / "out", model_name=tiny_dir, show_progress=False)
    rows = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    steps = [row for row in rows if "critique_loss" in row and "eval_loss" not in row]
    assert steps and all(row["critique_loss"] > 0 and row["reward_loss"] > 0 for row in steps)
    assert summary["train_data"]["supervised_pairs"] > 0 and summary["final_metrics"]["eval_pairs"] > 0
    card = (tmp_path / "out" / "model" / "README.md").read_text()
    assert "the reward read every critique sampled for a pair" in card
