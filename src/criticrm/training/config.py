"""`TrainConfig`: every training option, with its help text (turned into CLI flags and YAML keys)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from criticrm.config import Config
from criticrm.models.backbone import ModelConfig, resolve_precision
from criticrm.prompts.templates import load_template
from criticrm.training.schedules import BUILTIN_SCHEDULES, LambdaSchedule

# Validation metric -> whether greater is better.
BEST_METRICS = {"accuracy": True, "margin": True, "reward_loss": False, "critique_loss": False, "loss": False}


@dataclass
class TrainConfig(Config):
    """How the reward model is trained (YAML section `train`; the backbone comes from section `model`)."""

    mode: Literal["critic", "standard"] = field(default="critic", metadata={"help": "critic (Critic-RM: critique then reward) | standard (Bradley-Terry RM on (x, y) alone)"})
    eval_data: str | None = field(default=None, metadata={"help": "validation file or folder (same format as the training data); default: hold out eval_fraction of the training data"})
    eval_fraction: float = field(default=0.1, metadata={"help": "share of the training data held out for validation when eval_data is not given (split by prompt); 0: none", "min": 0, "below": 1})
    max_length: int = field(default=1024, metadata={"help": "longest sequence in tokens (judge prompt + critique, or prompt + response)", "min": 16})
    truncation: Literal["middle", "drop", "error"] = field(default="middle", metadata={"help": "over-long sequences: middle (cut the middle of the prompt, keep the critique), drop (skip the pair, counted), error"})
    template: str | None = field(default=None, metadata={"help": "force one judge template for every pair (name or YAML file); default: the template each row's critiques were written in"})
    pairing: Literal["matched", "all", "random-k"] = field(default="matched", metadata={"help": "which critiques of y+ and y- are compared: matched (i-th with i-th, the shorter list cycled), all (every combination), random-k (k random combinations per epoch)"})
    pairs_per_example: int = field(default=2, metadata={"help": "k for pairing random-k", "min": 1})
    reward_critiques: Literal["refined", "sampled"] = field(default="refined", metadata={"help": "what the reward reads on pairs with critique supervision: refined (the critiques refinement kept, which filtering selected for agreeing with the label; the paper's recipe) or sampled (every critique sampled for the pair, as unselected as those it reads at inference; the refined ones stay the critique loss's targets)"})
    lambda_schedule: str = field(default="cosine", metadata={"help": f"λ(t) weighting L = λ·L_c + (1-λ)·L_r: {', '.join(BUILTIN_SCHEDULES)}, or 'package.module:function'"})
    lambda_start: float = field(default=0.9, metadata={"help": "λ at the first step (decaying schedules); the constant value for 'constant'", "min": 0, "max": 1})
    lambda_end: float = field(default=0.1, metadata={"help": "λ at the last step (decaying schedules)", "min": 0, "max": 1})
    lambda_rounds: int | None = field(default=None, metadata={"help": "number of constant-λ rounds of the 'step' schedule (default: one per epoch)", "min": 1})
    margin_source: Literal["data", "none", "judge"] = field(default="data", metadata={"help": "the per-pair margin m in -log σ(r+ - r- - m): data (the input's margin column, when it has one, as in TRL), none, or judge (ablation only: the base model's critique-score gap, which leaks the untrained judge into the reward)"})
    margin_scale: float = field(default=1.0, metadata={"help": "multiply every margin by this"})
    center_rewards_coefficient: float = field(default=0.0, metadata={"help": "weight of (r+ + r-)^2 added to L_r to keep rewards centred (e.g. 0.01); 0: off", "min": 0})
    head_hidden_size: int = field(default=0, metadata={"help": "reward head: 0 = linear layer; N = MLP with N hidden units", "min": 0})
    head_init_std: float = field(default=1e-3, metadata={"help": "std of the reward head's output-layer initialisation (small: rewards start near 0)", "above": 0})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training pairs", "min": 0})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (overrides epochs); -1: off", "min": -1})
    batch_size: int = field(default=4, metadata={"help": "pairs per device per micro-batch (each pair is 2+ sequences)", "min": 1})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step", "min": 1})
    eval_batch_size: int = field(default=8, metadata={"help": "pairs per device per evaluation batch", "min": 1})
    learning_rate: float = field(default=1e-5, metadata={"help": "peak learning rate of the backbone (LoRA: of the adapter)", "above": 0})
    head_learning_rate: float | None = field(default=None, metadata={"help": "learning rate of the reward head (default: learning_rate)", "above": 0})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay", "min": 0})
    warmup: float = field(default=0.05, metadata={"help": "linear warm-up: a share of the steps if < 1, else a number of steps", "min": 0})
    lr_scheduler: str = field(default="cosine", metadata={"help": "learning-rate schedule after warm-up (any transformers scheduler name)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm; 0: off", "min": 0})
    precision: Literal["auto", "fp32", "bf16", "fp16"] = field(default="auto", metadata={"help": "auto | fp32 | bf16 | fp16 (auto: bf16 autocast on CUDA and on CPUs with fast bf16, else fp32)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in the backward pass (less memory, ~30% slower)"})
    disable_dropout: bool = field(default=True, metadata={"help": "turn the backbone's dropout off (a reward read through dropout is noisy; TRL does the same)"})
    group_by_length: bool = field(default=True, metadata={"help": "batch pairs of similar length together (little padding)"})
    lora: bool = field(default=False, metadata={"help": "train a LoRA adapter (peft) instead of the full backbone; the head is always fully trained"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank", "min": 1})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha", "min": 1})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout (0 by default: on CPU a 0.05 dropout makes LoRA steps ~1.4x slower, and it adds noise to the reward)", "min": 0, "below": 1})
    lora_target_modules: str = field(default="all-linear", metadata={"help": "LoRA target modules: all-linear or comma-separated names (q_proj,v_proj)"})
    merge_lora: bool = field(default=True, metadata={"help": "save the final LoRA model merged into full weights (servable by vLLM / llama.cpp); else as an adapter"})
    eval_steps: int = field(default=50, metadata={"help": "evaluate (and save a checkpoint) every N optimizer steps; 0: only at the end", "min": 0})
    save_steps: int | None = field(default=None, metadata={"help": "save a resumable checkpoint every N optimizer steps (default: eval_steps, or 100 when that is 0)", "min": 1})
    save_total_limit: int = field(default=2, metadata={"help": "checkpoints kept while training (the best one is always kept)", "min": 1})
    checkpoints_after_finish: Literal["last", "all", "none"] = field(default="last", metadata={"help": "the resumable checkpoints a finished run keeps: last (the newest and the best: enough to extend the run with more epochs or steps), all, or none (extending the run then starts over); each holds the optimizer state, about 3x the model's size, and the final model is in model/ either way"})
    best_metric: Literal["accuracy", "margin", "reward_loss", "critique_loss", "loss"] = field(default="accuracy", metadata={"help": f"validation metric that picks the best checkpoint: {', '.join(BEST_METRICS)}"})
    logging_steps: int = field(default=1, metadata={"help": "log λ, both losses, accuracy every N optimizer steps", "min": 1})
    report_to: str = field(default="none", metadata={"help": "none, tensorboard, wandb, ... (comma-separated)"})
    resume: bool = field(default=True, metadata={"help": "resume from the newest checkpoint in the output folder when there is one"})
    seed: int = field(default=42, metadata={"help": "random seed (data order, held-out split, random-k pairing, head init)"})
    share_prefixes: bool = field(default=True, metadata={"help": "forward the judge prompt that a pair's sequences share once (each pair one packed row with a tree attention mask) rather than once per critique: the same rewards and losses up to float rounding, for fewer tokens; used with sdpa or eager attention (off with other kernels)"})
    attn_implementation: str | None = field(default=None, metadata={"help": "attention kernel: sdpa, eager, flash_attention_2 (default: the model's)"})
    deepspeed: str | None = field(default=None, metadata={"help": "DeepSpeed JSON config (alternatively launch with `accelerate launch --config_file ...`)"})
    dataloader_workers: int = field(default=0, metadata={"help": "data-loading worker processes", "min": 0})

    def __post_init__(self):
        super().__post_init__()
        if self.epochs <= 0 and self.max_steps <= 0:
            raise ValueError("set epochs > 0 or max_steps > 0")
        if self.mode == "standard" and self.best_metric == "critique_loss":
            raise ValueError("best_metric critique_loss needs mode critic (standard mode writes no critiques)")
        LambdaSchedule(self.lambda_schedule, self.lambda_start, self.lambda_end, self.lambda_rounds,
                       num_epochs=self.epochs).check()
        _check_lr_scheduler(self.lr_scheduler)
        _check_report_to(self.report_to)
        if self.deepspeed and not Path(self.deepspeed).is_file():
            raise ValueError(f"deepspeed: no such file {self.deepspeed!r} (a DeepSpeed JSON config)")
        if self.template:
            load_template(self.template)


def _check_lr_scheduler(name: str) -> None:
    from transformers.trainer_utils import SchedulerType

    names = [kind.value for kind in SchedulerType]
    if name not in names:
        raise ValueError(f"lr_scheduler must be one of {', '.join(names)}, got {name!r}")


def _check_report_to(report_to: str) -> None:
    """Each name must be a transformers logging integration that is installed here (else Trainer fails later)."""
    names = {name.strip() for name in report_to.split(",") if name.strip()} - {"none", "all"}
    if not names:
        return
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    for name in sorted(names):
        if name not in INTEGRATION_TO_CALLBACK:
            raise ValueError(f"report_to: unknown integration {name!r}; expected none, all or "
                             f"{', '.join(sorted(INTEGRATION_TO_CALLBACK))}")
        if name not in get_available_reporting_integrations():
            raise ValueError(f"report_to {name}: its package is not installed (pip install {name})")


def effective_train_config(train: TrainConfig, model: ModelConfig) -> TrainConfig:
    """`model.dtype` doubles as the training precision when `train.precision` is left at auto."""
    if train.precision == "auto" and model.dtype != "auto":
        return dataclasses.replace(train, precision=resolve_precision(model.dtype))
    return train
