"""The same training under `accelerate launch` with two processes on CPU (gloo data parallel), ~30 s."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from criticrm.models.critic_rm import CriticRewardModel
from criticrm.testing.rows import synthetic_rows, write_rows
from criticrm.testing.tiny import make_tiny_backbone

SAMPLE = Path(__file__).parent.parent / "data" / "sample" / "train.jsonl"


def _free_port() -> int:
    with socket.socket() as probe:  # not the default 29500, which another job on the machine may hold
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_under_accelerate_launch(tmp_path):
    tiny = make_tiny_backbone(tmp_path / "tiny")
    data = write_rows(synthetic_rows(SAMPLE, limit=24), tmp_path / "refine" / "train.jsonl")
    out = tmp_path / "out"
    # Without GPUs, `--multi_gpu` starts N CPU processes with the gloo backend (`--cpu` would start only one).
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()),
               "-m", "criticrm.cli.train", "--data", str(data.parent), "--out", str(out), "--model", str(tiny),
               "--max-steps", "3", "--batch-size", "2", "--eval-steps", "2", "--eval-fraction", "0.2",
               "--max-length", "256"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 3
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert sum("eval_accuracy" in r for r in log) >= 2  # every process evaluated its shard, one record each
    assert len([r for r in log if "reward_loss" in r and "eval_reward_loss" not in r]) == 3  # written once
    assert result.stdout.count("critic reward model on") == 1  # printed by the main process only
    assert CriticRewardModel.load(out / "model").reward_config.mode == "critic"
