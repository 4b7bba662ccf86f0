"""The trainer end to end: parameters change, logs, best checkpoint, resume, accumulation, CLI, real model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from criticrm.cli import main
from criticrm.errors import CriticRMError
from criticrm.models.critic_rm import CriticRewardModel
from criticrm.testing.rows import synthetic_rows, write_rows
from criticrm.testing.tiny import make_tiny_backbone
from criticrm.training import TrainConfig, train_reward_model

SAMPLE = Path(__file__).parent.parent / "data" / "sample" / "train.jsonl"
FAST = TrainConfig(max_length=256, batch_size=2, eval_batch_size=8, learning_rate=1e-3, warmup=0.0,
                   lr_scheduler="constant", eval_fraction=0.2, eval_steps=2, max_steps=4)



@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return str(make_tiny_backbone(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_rows(synthetic_rows(SAMPLE, limit=20), tmp_path_factory.mktemp("data") / "train.jsonl")


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def train_steps(out: Path) -> dict[int, dict]:
    return {r["step"]: r for r in read_log(out) if "loss" in r and "eval_loss" not in r}


def test_critic_training_changes_parameters_and_logs_every_step(tiny_dir, data_file, tmp_path):
    out = tmp_path / "critic"
    summary = train_reward_model(FAST, data_file, out, model_name=tiny_dir, show_progress=False)
    assert summary["steps"] == 4 and summary["train_data"]["reward_only_pairs"] > 0
    steps = train_steps(out)
    assert sorted(steps) == [1, 2, 3, 4]
    for record in steps.values():
        for key in ("lambda", "critique_loss", "reward_loss", "accuracy", "margin", "learning_rate"):
            assert key in record and torch.isfinite(torch.tensor(record[key]))
    assert steps[1]["lambda"] == FAST.lambda_start and steps[4]["lambda"] == FAST.lambda_end
    assert [r["eval_step"] if "eval_step" in r else r["step"] for r in read_log(out) if "eval_accuracy" in r]
    # the saved model is the best checkpoint's, with its validation reward statistics
    assert summary["best_checkpoint"] and summary["reward_stats"]["source"] == "validation"
    model = CriticRewardModel.load(out / "model")
    assert model.reward_config.reward_std is not None and model.reward_config.mode == "critic"
    before = load_file(str(Path(tiny_dir) / "model.safetensors"))
    after = load_file(str(out / "model" / "model.safetensors"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before)  # every backbone tensor was trained
    assert not (out / "model" / "training_args.bin").exists()


def test_resume_continues_the_same_loss_trajectory(tiny_dir, data_file, tmp_path):
    data = write_rows(synthetic_rows(SAMPLE, limit=8), tmp_path / "train.jsonl")  # 4 steps per epoch
    config = replace(FAST, eval_fraction=0.0, save_steps=3, save_total_limit=5, pairing="random-k",
                     pairs_per_example=1, epochs=2, max_steps=-1, lambda_schedule="linear",
                     checkpoints_after_finish="all")
    full = tmp_path / "full"
    train_reward_model(config, data, full, model_name=tiny_dir, show_progress=False)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")  # as if killed after step 3 (mid-epoch)
    summary = train_reward_model(config, data, resumed, model_name=tiny_dir, show_progress=False)
    assert summary["resumed_from"].endswith("checkpoint-3")
    first, second = train_steps(full), train_steps(resumed)
    assert sorted(first) == list(range(1, 9)) and sorted(second) == list(range(4, 9))
    for step in range(4, 9):
        for key in ("loss", "critique_loss", "reward_loss", "lambda"):
            assert second[step][key] == pytest.approx(first[step][key], rel=1e-5, abs=1e-6), (step, key)


# `criticrm train` in a real process that SIGKILLs itself half-way through writing checkpoint-4's optimizer
# state: the state a crash, an OOM kill or a pre-empted node leaves.
KILLED_WHILE_SAVING = """
import io, os, signal, sys, torch
from criticrm.cli import main

real_save = torch.save

def save(obj, target, *args, **kwargs):
    if str(target).endswith(os.path.join("checkpoint-4", "optimizer.pt")):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        with open(target, "wb") as handle:
            handle.write(buffer.getvalue()[:buffer.tell() // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, target, *args, **kwargs)

torch.save = save
sys.exit(main(sys.argv[1:]))
"""


def test_a_run_killed_while_writing_a_checkpoint_resumes_from_the_last_complete_one(tiny_dir, data_file, tmp_path,
                                                                                   capsys):
    from criticrm.training.checkpoints import COMPLETE_MARKER

    out = tmp_path / "run"
    argv = ["train", "--data", str(data_file), "--out", str(out), "--model", tiny_dir, "--device", "cpu",
            "--max-length", "256", "--batch-size", "2", "--learning-rate", "1e-3", "--warmup", "0",
            "--lr-scheduler", "constant", "--eval-fraction", "0", "--save-steps", "2", "--max-steps", "6",
            "--save-total-limit", "5", "--checkpoints-after-finish", "all"]
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_SAVING, *argv], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    cut = out / "checkpoint-4"
    assert (cut / "optimizer.pt").is_file() and not (cut / "trainer_state.json").exists()
    assert (out / "checkpoint-2" / COMPLETE_MARKER).is_file() and not (cut / COMPLETE_MARKER).exists()
    assert [r["step"] for r in read_log(out) if "loss" in r] == [1, 2, 3, 4]

    assert main(argv) == 0  # the same command again
    assert "checkpoint-4 in" in capsys.readouterr().err  # "... was not completely written; set aside"
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["steps"] == 6
    assert (out / "incomplete-checkpoint-4" / "optimizer.pt").is_file()
    assert all((out / f"checkpoint-{step}" / COMPLETE_MARKER).is_file() for step in (2, 4, 6))
    assert [r["step"] for r in read_log(out) if "loss" in r] == [1, 2, 3, 4, 5, 6]  # none twice
    assert main(argv) == 0  # and once more: the finished run is returned


def test_a_finished_run_keeps_only_the_checkpoint_that_can_extend_it(tiny_dir, data_file, tmp_path):
    """Each checkpoint holds the optimizer state (~3x the model): a finished run keeps the newest by default,
    which is enough to train it further, and none when asked."""
    config = replace(FAST, eval_fraction=0.0, save_steps=2, save_total_limit=5, max_steps=4)
    out = tmp_path / "run"
    train_reward_model(config, data_file, out, model_name=tiny_dir, show_progress=False)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]
    longer = train_reward_model(replace(config, max_steps=6), data_file, out, model_name=tiny_dir, show_progress=False)
    assert longer["resumed_from"].endswith("checkpoint-4") and longer["steps"] == 6
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6"]

    validated = tmp_path / "validated"  # with a validation set the best checkpoint is kept beside the newest
    summary = train_reward_model(replace(FAST, save_total_limit=5), data_file, validated, model_name=tiny_dir,
                                 show_progress=False)
    kept = {p.name for p in validated.glob("checkpoint-*")}
    assert "checkpoint-4" in kept and Path(summary["best_checkpoint"]).name in kept and len(kept) <= 2

    bare = tmp_path / "bare"
    train_reward_model(replace(config, checkpoints_after_finish="none"), data_file, bare, model_name=tiny_dir,
                       show_progress=False)
    assert not list(bare.glob("checkpoint-*")) and CriticRewardModel.load(bare / "model").reward_config.mode == "critic"


def test_pruning_keeps_the_newest_and_the_best_checkpoint(tmp_path):
    from criticrm.training.checkpoints import COMPLETE_MARKER, prune_after_finish

    for step in (2, 4, 6, 8):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if step != 8:  # checkpoint-8 was cut short: never touched
            (tmp_path / f"checkpoint-{step}" / COMPLETE_MARKER).write_text("{}")
    prune_after_finish(tmp_path, "last", best=tmp_path / "checkpoint-2")
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-6", "checkpoint-8"]
    prune_after_finish(tmp_path, "none")
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-8"]


def test_resume_refuses_other_settings(tiny_dir, data_file, tmp_path):
    config = replace(FAST, eval_fraction=0.0, max_steps=2)
    train_reward_model(config, data_file, tmp_path, model_name=tiny_dir, show_progress=False)
    with pytest.raises(CriticRMError, match="other settings"):
        train_reward_model(replace(config, lambda_schedule="linear"), data_file, tmp_path, model_name=tiny_dir,
                           show_progress=False)


def test_a_finished_run_counts_as_finished_under_other_runtime_settings(tiny_dir, data_file, tmp_path, monkeypatch):
    config = replace(FAST, eval_fraction=0.0, max_steps=1)
    first = train_reward_model(config, Path(data_file).resolve(), tmp_path, model_name=tiny_dir, show_progress=False)
    monkeypatch.chdir(Path(data_file).resolve().parent)  # the same data, named by a relative path
    again = train_reward_model(replace(config, gradient_checkpointing=True, logging_steps=7), Path(data_file).name,
                               tmp_path, model_name=tiny_dir, show_progress=False)
    assert again["seconds"] == first["seconds"]  # returned, not retrained


def test_gradient_accumulation_gives_the_loss_and_gradient_of_one_big_batch(tiny_dir, data_file):
    from transformers import TrainingArguments

    from criticrm.models.backbone import load_tokenizer
    from criticrm.models.sequences import SequenceBuilder
    from criticrm.training.data import PairCollator, PairDataset, encode_pairs, load_training_pairs
    from criticrm.training.schedules import LambdaSchedule
    from criticrm.training.trainer import CriticRMTrainer

    tokenizer = load_tokenizer(tiny_dir)
    examples, _ = encode_pairs(load_training_pairs(data_file, "critic")[:4], SequenceBuilder(tokenizer, max_length=256))
    dataset = PairDataset(examples, pairing="matched")
    collate = PairCollator(tokenizer.pad_token_id)
    model = CriticRewardModel.from_backbone(tiny_dir)
    trainer = CriticRMTrainer(model=model, args=TrainingArguments(output_dir="/tmp/unused", report_to="none",
                                                                  use_cpu=True),
                              train_config=TrainConfig(), lambda_schedule=LambdaSchedule("constant", 0.5))
    trainer.state.max_steps = 10
    whole = collate([dataset[i] for i in range(4)])
    halves = [collate([dataset[0], dataset[1]]), collate([dataset[2], dataset[3]])]
    counts = trainer._get_num_items_in_batch(halves, torch.device("cpu"))
    assert counts.tolist() == [whole["lm_targets"].numel(), 4]

    def gradient(batches):
        model.zero_grad()
        total = 0.0
        for batch in batches:
            loss = trainer.compute_loss(model, batch, num_items_in_batch=counts)
            loss.backward()
            total += loss.item()
        return total, model.reward_head.net.weight.grad.clone()

    loss_whole, grad_whole = gradient([whole])
    loss_split, grad_split = gradient(halves)
    assert loss_split == pytest.approx(loss_whole, rel=1e-5)
    torch.testing.assert_close(grad_split, grad_whole, rtol=1e-4, atol=1e-7)


def test_cli_trains_the_standard_baseline_on_plain_pairs(tiny_dir, tmp_path, capsys):
    out = tmp_path / "standard"
    code = main(["train", "--data", str(SAMPLE), "--out", str(out), "--mode", "standard", "--model", tiny_dir,
                 "--max-steps", "2", "--batch-size", "4", "--eval-fraction", "0.1", "--eval-steps", "0",
                 "--max-length", "256", "--device", "cpu"])
    assert code == 0
    assert "standard reward model" in capsys.readouterr().out
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["processes"] == 1 and summary["final_metrics"]["eval_pairs"] > 0
    assert "critique_loss" not in train_steps(out)[1]
    assert CriticRewardModel.load(out / "model").reward_config.read_at == "end_of_response"


def test_lora_training_saves_a_merged_model_with_its_head(tiny_dir, data_file, tmp_path):
    config = replace(FAST, lora=True, lora_r=4, eval_fraction=0.0, max_steps=2, head_learning_rate=1e-2)
    out = tmp_path / "lora"
    train_reward_model(config, data_file, out, model_name=tiny_dir, show_progress=False)
    assert (out / "checkpoint-2" / "adapter_model.safetensors").is_file()  # checkpoints: adapter + head
    model = CriticRewardModel.load(out / "model")
    assert not model.is_lora and (out / "model" / "model.safetensors").is_file()
    head = load_file(str(out / "model" / "criticrm" / "reward_head.safetensors"))
    assert head["net.weight"].abs().max() > 1e-2  # trained with the head's own learning rate
    card = (out / "model" / "README.md").read_text()  # the model card tells how it was trained
    assert "## Training" in card and "2 optimizer steps" in card and f"`{data_file}`" in card
    assert "the reward read the refined critiques, which filtering selected" in card


@pytest.mark.model
def test_real_model_losses_are_finite_and_fall_on_a_small_batch(tmp_path):
    rows = [r for r in synthetic_rows(SAMPLE, limit=12, multi_every=0, reward_only_every=0)
            if len(r.prompt) + len(r.chosen) + len(r.rejected) < 300][:1]
    data = write_rows(rows, tmp_path / "train.jsonl")
    config = TrainConfig(max_length=192, batch_size=1, epochs=3, learning_rate=5e-5, head_learning_rate=1e-2,
                         warmup=0.0, lr_scheduler="constant", eval_fraction=0.0, lambda_schedule="constant",
                         lambda_start=0.5, eval_steps=0, precision="fp32")
    summary = train_reward_model(config, data, tmp_path / "out", show_progress=False)
    assert summary["lambda_schedule"]["first_step"] == summary["lambda_schedule"]["last_step"] == 0.5
    steps = train_steps(tmp_path / "out")
    assert len(steps) == 3
    for key in ("critique_loss", "reward_loss"):
        series = [steps[s][key] for s in sorted(steps)]
        assert all(torch.isfinite(torch.tensor(series)))
        assert series[-1] < series[0], (key, series)


@pytest.mark.parametrize("name", ["train_cpu_demo", "train_cpu_full", "train_gpu_8b_lora", "train_multigpu_zero3"])
def test_shipped_train_configs_resolve(name):
    import argparse

    from criticrm.cli.options import resolve
    from criticrm.cli.train import SECTIONS

    path = Path(__file__).parent.parent / "configs" / f"{name}.yaml"
    # what a recipe asks of the machine (a GPU, tensorboard) is set to what every machine has
    configs = resolve(argparse.Namespace(config=path, **{"model.device": "cpu", "train.report_to": "none"}), SECTIONS)
    train = configs[TrainConfig]
    assert train.mode == "critic" and 0 < train.learning_rate < 1e-3


def test_rerunning_a_finished_run_returns_it_without_training(tiny_dir, data_file, tmp_path):
    config = replace(FAST, eval_fraction=0.0, max_steps=1)
    first = train_reward_model(config, data_file, tmp_path, model_name=tiny_dir, show_progress=False)
    again = train_reward_model(config, data_file, tmp_path, model_name=tiny_dir, show_progress=False)
    assert again["seconds"] == first["seconds"] and again["steps"] == 1
