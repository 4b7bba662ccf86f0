"""The field's standard reward model on our pairs: TRL's `RewardTrainer`, an external reference row.

Is criticrm's standard RM as good as the one practitioners already train? This trains TRL's
`RewardTrainer` (trl/trainer/reward_trainer.py: an `AutoModelForSequenceClassification` with one label,
loss -log σ(r+ - r-), the reward read at the last non-padding token) on exactly the pairs our standard
RM trains on — the same file, the same held-out split (`split_by_prompt` with the same seed) — and with
the same budget (epochs, pairs per optimizer step, peak learning rate, warm-up, schedule, sequence
length, precision, seed). What cannot be the same is said here: TRL trains the score layer with the
backbone's learning rate (ours gives the head its own, `head_learning_rate`), and it applies the chat
template itself, which for a plain prompt string is the same user/assistant layout as our standard mode;
and it drops a pair longer than `max_length` where ours cuts the middle of its prompt (the count of pairs
TRL trained on is recorded).

Scoring uses the trained model exactly as TRL's own evaluation reads it (the chat template, the logit of
the one label) and writes a criticrm evaluation report, so the row sits in the same tables and paired
intervals as every other. Needs `pip install trl` (not a dependency of criticrm; the benchmark only).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from criticrm.data.rewardbench import EvalExample
from criticrm.evaluation.metrics import ExampleResult
from criticrm.inference.scorer import bradley_terry
from criticrm.models.backbone import resolve_model_path, resolve_precision
from criticrm.training.config import TrainConfig
from criticrm.training.data import load_training_pairs, split_by_prompt

DONE_FILE = "trl_done.json"


def _conversation(prompt: str, response: str | None = None) -> list[dict]:
    messages = [{"role": "user", "content": prompt}]
    return messages + [{"role": "assistant", "content": response}] if response is not None else messages


def train_trl(pairs_file: Path, out: Path, settings: TrainConfig, model: str | None = None) -> Path:
    """Train TRL's RewardTrainer on the training part of `pairs_file` into `out/model`; skip when done."""
    out = Path(out)
    if (out / DONE_FILE).is_file():
        return out / "model"
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    pairs = load_training_pairs(pairs_file, "standard")
    train, held_out = split_by_prompt(pairs, settings.eval_fraction, settings.seed)
    rows = [{"prompt": _conversation(p.prompt), "chosen": [{"role": "assistant", "content": p.chosen}],
             "rejected": [{"role": "assistant", "content": p.rejected}]} for p in train]
    path = resolve_model_path(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    bf16 = resolve_precision(settings.precision, "cpu") == "bf16"  # our trainer's rule: bf16 autocast where fast
    reward_model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    config = RewardConfig(
        output_dir=str(out / "checkpoints"), num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        learning_rate=settings.learning_rate, warmup_steps=_warmup_steps(settings, len(rows)),
        lr_scheduler_type=settings.lr_scheduler, max_grad_norm=settings.max_grad_norm or 1e9,
        weight_decay=settings.weight_decay, max_length=settings.max_length, bf16=bf16, use_cpu=True,
        seed=settings.seed, data_seed=settings.seed, logging_steps=settings.logging_steps, save_strategy="no",
        report_to="none", disable_dropout=settings.disable_dropout, dataloader_num_workers=0,
        gradient_checkpointing=settings.gradient_checkpointing)
    trainer = RewardTrainer(model=reward_model, args=config, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer)
    started = time.perf_counter()
    result = trainer.train()
    trainer.save_model(str(out / "model"))
    tokenizer.save_pretrained(str(out / "model"))
    record = {"train_pairs": len(rows), "pairs_within_max_length": len(trainer.train_dataset),
              "held_out_pairs": len(held_out), "steps": result.global_step,
              "train_seconds": round(time.perf_counter() - started, 1), "train_loss": result.training_loss,
              "precision": "bf16" if bf16 else "fp32", "learning_rate": settings.learning_rate,
              "epochs": settings.epochs, "seed": settings.seed, "trl": _trl_version()}
    (out / DONE_FILE).write_text(json.dumps(record, indent=2))
    return out / "model"


def _warmup_steps(settings: TrainConfig, rows: int) -> int:
    """Our `warmup` (a share of the steps when < 1, else a number of steps) as TRL's integer warm-up steps."""
    if settings.warmup >= 1:
        return int(settings.warmup)
    steps = math.ceil(rows / (settings.batch_size * settings.gradient_accumulation_steps)) * settings.epochs
    return round(settings.warmup * steps)


def _trl_version() -> str:
    from importlib import metadata

    return metadata.version("trl")


def score_trl(model_dir: Path, examples: list[EvalExample], batch_size: int = 8) -> list[ExampleResult]:
    """Each response's reward from a TRL reward model, read as TRL reads it; ExampleResults like ours."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # fp32: a bf16 logit has 8 bits of mantissa, and two close rewards then tie (31 ties on 897 pairs)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    texts = [tokenizer.apply_chat_template(_conversation(e.prompt, response), tokenize=False)
             for e in examples for response in (*e.chosen, *e.rejected)]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batched: little padding
    rewards = [math.nan] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            encoded = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, truncation=True,
                                max_length=4096)
            for i, value in zip(batch, model(**encoded).logits[:, 0].float().tolist(), strict=True):
                rewards[i] = value
    scores = iter(rewards)
    results = []
    for example in examples:
        chosen = [next(scores) for _ in example.chosen]
        rejected = [next(scores) for _ in example.rejected]
        results.append(ExampleResult(
            id=example.id, subset=example.subset, section=example.section, chosen=chosen, rejected=rejected,
            chosen_chars=[len(t) for t in example.chosen], rejected_chars=[len(t) for t in example.rejected],
            probability=bradley_terry(chosen[0], rejected[0]) if example.is_pair else None))
    return results
