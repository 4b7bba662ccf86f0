"""Joint training of the two heads on the transformers `Trainer` (so `accelerate launch` runs it unchanged).

`CriticRMTrainer` changes only what a reward model needs:

- `compute_loss`: one forward pass over every sequence of the batch (each pair one packed row, its shared
  prefixes computed once, unless `share_prefixes` is off); L = λ(t)·L_c + (1 − λ(t))·L_r, where L_c is the mean
  cross-entropy over every critique token of the optimizer step (logits at those positions only) and L_r
  the mean Bradley-Terry loss over every pair of the step, whatever the gradient accumulation or the
  number of processes;
- logging: λ, both losses, the centering term, training accuracy and margin at every logged step;
- `evaluate`: pairwise accuracy and mean margin on per-response mean rewards (the inference rule), both
  losses, and the reward mean/std stored with the model for optional normalisation;
- saving and loading: the criticrm model folder (see `criticrm.models.critic_rm`), never a pickle of the
  weights; `training_args.json` instead of the pickled `training_args.bin`.

`train_reward_model` builds everything from a `TrainConfig` and runs it; the CLI is a thin layer on it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from criticrm import rundir
from criticrm.data.jsonl import write_text_atomic
from criticrm.errors import CriticRMError
from criticrm.models.backbone import resolve_precision
from criticrm.models.card import update_model_card
from criticrm.models.critic_rm import (
    CriticRewardModel,
    is_reward_model_dir,
    load_reward_head,
    load_weights_into,
)
from criticrm.training.checkpoints import (
    last_complete_checkpoint,
    mark_complete,
    prepare_resume,
    prune_after_finish,
)
from criticrm.training.config import BEST_METRICS, TrainConfig
from criticrm.training.data import (
    LengthGroupedSampler,
    PairCollator,
    PairDataset,
    encode_pairs,
    load_training_pairs,
    split_by_prompt,
)
from criticrm.training.losses import bradley_terry_losses, critique_loss_sum, reward_loss_sums
from criticrm.training.schedules import LambdaSchedule

_COMPONENTS = ("critique_loss", "reward_loss", "center_loss", "accuracy", "margin")


class CriticRMTrainer(Trainer):
    """A `Trainer` for the two-head reward model (see the module docstring)."""

    def __init__(self, *args, train_config: TrainConfig, lambda_schedule: LambdaSchedule, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_config = train_config
        self.lambda_schedule = lambda_schedule
        self.loss_is_scaled_for_ga = True  # compute_loss normalises over the whole accumulated step
        self._sums: dict[str, torch.Tensor] = defaultdict(lambda: torch.zeros((), device=self.args.device))
        self._first_unlogged_step: int | None = None  # the optimizer step the summed components start at
        self.merge_lora_on_save = False
        self.computed_tokens = 0  # positions forwarded in training: trained tokens + padding - shared prefixes

    # ---- λ ------------------------------------------------------------------------------------------------
    @property
    def critic(self) -> bool:
        return self.train_config.mode == "critic"

    def lambda_at(self, step: int) -> float:
        if not self.critic:
            return 0.0
        return self.lambda_schedule(step, max(1, self.state.max_steps))

    # ---- data ---------------------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return LengthGroupedSampler(dataset.lengths, self.args.per_device_train_batch_size, seed=self.args.seed,
                                    group=self.train_config.group_by_length)

    def _get_eval_sampler(self, eval_dataset):
        """Validation in length order: little padding, and the metrics do not depend on the order."""
        lengths = eval_dataset.lengths
        return sorted(range(len(lengths)), key=lambda i: -lengths[i])

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor:
        """[critique tokens, pairs] in the whole optimizer step, over every process."""
        counts = torch.tensor([[sum(b["lm_targets"].numel() for b in batch_samples),
                                sum(int(b["num_pairs"]) for b in batch_samples)]], dtype=torch.float32, device=device)
        if self.args.world_size > 1:
            counts = self.accelerator.gather(counts)
        return counts.sum(0)

    def _track_num_input_tokens(self, inputs: dict[str, torch.Tensor]) -> None:
        """Tokens seen: those of the batch's sequences (`num_tokens`), however they were laid out. The
        Trainer's own count sums the attention mask, which a packed batch gives in 4-D."""
        if self.args.include_num_input_tokens_seen == "no":
            return
        tokens = torch.as_tensor(inputs["num_tokens"], device=self.args.device, dtype=torch.int64)
        self.state.num_input_tokens_seen += self.accelerator.gather(tokens).sum().item()

    # ---- loss ---------------------------------------------------------------------------------------------
    def _forward(self, model, batch: dict[str, torch.Tensor]):
        """Rewards (and critique logits in critic mode) of a collated batch, separate or packed rows."""
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     read_positions=batch["read_positions"], lm_positions=batch["lm_positions"] if self.critic else None,
                     position_ids=batch.get("position_ids"), read_rows=batch.get("read_rows"))

    def compute_loss(self, model, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | None = None):
        outputs = self._forward(model, inputs)
        sums = reward_loss_sums(outputs.rewards, inputs["chosen_index"], inputs["rejected_index"],
                                inputs["comparison_weights"], inputs["margins"])
        sums["critique_loss"] = critique_loss_sum(outputs.lm_logits, inputs["lm_targets"])
        if num_items_in_batch is None:  # called outside the training loop: this batch alone
            tokens, pairs, scale = inputs["lm_targets"].numel(), float(inputs["num_pairs"]), 1.0
        else:
            tokens, pairs = num_items_in_batch[0], num_items_in_batch[1]
            scale = float(self.accelerator.num_processes)  # data-parallel gradients are averaged over processes
        parts = {
            "critique_loss": sums["critique_loss"] * scale / max(float(tokens), 1.0),
            **{name: sums[name] * scale / max(float(pairs), 1.0) for name in ("reward_loss", "center_loss", "accuracy", "margin")},
        }
        lam = self.lambda_at(self.state.global_step)
        reward_part = parts["reward_loss"] + self.train_config.center_rewards_coefficient * parts["center_loss"]
        loss = lam * parts["critique_loss"] + (1.0 - lam) * reward_part if self.critic else reward_part
        if model.training:
            self.computed_tokens += inputs["input_ids"].numel()
            if self._first_unlogged_step is None:
                self._first_unlogged_step = self.state.global_step
            for name in _COMPONENTS:
                self._sums[name] = self._sums[name] + parts[name].detach()
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model=None):
        """AdamW with the reward head in its own group when it has its own learning rate."""
        head_lr = self.train_config.head_learning_rate
        if head_lr is None or self.optimizer is not None:
            return super().create_optimizer(model)
        unwrapped = self.accelerator.unwrap_model(self.model)
        decay = set(self.get_decay_parameter_names(unwrapped))
        groups: dict[tuple[bool, bool], list] = defaultdict(list)
        for name, parameter in unwrapped.named_parameters():
            if parameter.requires_grad:
                groups[(name.startswith("reward_head."), name in decay)].append(parameter)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, unwrapped)
        param_groups = [{"params": params, "weight_decay": self.args.weight_decay if with_decay else 0.0,
                         **({"lr": head_lr} if is_head else {})}
                        for (is_head, with_decay), params in groups.items()]
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    # ---- logging ------------------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and not any(key.startswith("eval_") for key in logs):
            first = self._first_unlogged_step
            steps = self.state.global_step - first if first is not None else 0
            if steps > 0:
                for name in _COMPONENTS:
                    value = self._sums.pop(name, torch.zeros((), device=self.args.device))
                    if self.args.world_size > 1:
                        value = self.accelerator.gather(value.reshape(1)).mean()
                    logs[name] = float(value) / steps
                self._first_unlogged_step = None
            logs["lambda"] = self.lambda_at(max(0, self.state.global_step - 1))
            if not self.critic:
                logs.pop("critique_loss", None)
        super().log(logs, start_time)

    # ---- evaluation ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Validation metrics over every pair (every critique forwarded once)."""
        dataloader = self.get_eval_dataloader(eval_dataset)
        model = self._wrap_model(self.model, training=False, dataloader=dataloader)
        was_training = model.training
        model.eval()
        started = time.perf_counter()
        rows = []
        for batch in dataloader:
            batch = self._prepare_inputs(batch)
            outputs = self._forward(model, batch)
            rows.append(self.accelerator.gather_for_metrics(_per_pair_statistics(batch, outputs)))
            self.control = self.callback_handler.on_prediction_step(self.args, self.state, self.control)
        model.train(was_training)
        metrics = _metrics_from_rows(torch.cat(rows).double().cpu(), self.critic,
                                     self.lambda_at(max(0, self.state.global_step - 1)))
        metrics["runtime"] = round(time.perf_counter() - started, 3)
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in metrics.items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ---- saving and loading -------------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        if not self.args.should_save:
            return
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        model.save(output_dir, tokenizer=self.processing_class, state_dict=state_dict,
                   merge_lora=self.merge_lora_on_save)
        Path(output_dir, "training_args.json").write_text(self.args.to_json_string())
        Path(output_dir, "train_config.json").write_text(json.dumps(asdict(self.train_config), indent=2))

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, then its completion marker once every process has written its part,
        then the rotation of old checkpoints (which must never leave only an incomplete one)."""
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            run_dir = self._get_output_dir(trial=trial)
            mark_complete(Path(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"), Path(run_dir, rundir.TRAIN_LOG_FILE))
            rotate_checkpoints(run_dir, limit, self.state.best_model_checkpoint, use_mtime=True)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        load_weights_into(self.accelerator.unwrap_model(model or self.model), resume_from_checkpoint)

    def _load_best_model(self) -> None:
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return super()._load_best_model()
        load_weights_into(self.accelerator.unwrap_model(self.model), self.state.best_model_checkpoint)


def _per_pair_statistics(batch: dict[str, torch.Tensor], outputs) -> torch.Tensor:
    """One row per pair: mean r of y+, mean r of y-, BT loss, critique CE sum and tokens, Σr, Σr², #sequences."""
    rewards = outputs.rewards.float()
    pairs = int(batch["num_pairs"])
    pair_of = batch["pair_of_sequence"]
    is_chosen = batch["sequence_is_chosen"]
    is_rejected = batch["sequence_is_read"] & ~is_chosen  # (critique targets the reward never reads are neither)
    device = rewards.device

    def per_pair(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return torch.zeros(pairs, device=device, dtype=torch.float32).index_add_(0, index, values.float())

    ones = torch.ones_like(rewards)
    mean_chosen = per_pair(rewards[is_chosen], pair_of[is_chosen]) / per_pair(ones[is_chosen], pair_of[is_chosen])
    mean_rejected = per_pair(rewards[is_rejected], pair_of[is_rejected]) / per_pair(ones[is_rejected], pair_of[is_rejected])
    losses = bradley_terry_losses(rewards[batch["chosen_index"]], rewards[batch["rejected_index"]], batch["margins"])
    reward_loss = per_pair(losses * batch["comparison_weights"], pair_of[batch["chosen_index"]])
    ce_sum = torch.zeros(pairs, device=device)
    tokens = torch.zeros(pairs, device=device)
    if outputs.lm_logits is not None and batch["lm_targets"].numel():
        token_ce = F.cross_entropy(outputs.lm_logits.float(), batch["lm_targets"], reduction="none")
        token_pair = batch["pair_of_row"][batch["lm_positions"] // batch["input_ids"].shape[1]]
        ce_sum = per_pair(token_ce, token_pair)
        tokens = per_pair(torch.ones_like(token_ce), token_pair)
    read = is_chosen | is_rejected
    read_rewards, read_pairs = rewards[read], pair_of[read]
    return torch.stack([mean_chosen, mean_rejected, reward_loss, ce_sum, tokens, per_pair(read_rewards, read_pairs),
                        per_pair(read_rewards ** 2, read_pairs), per_pair(ones[read], read_pairs)], dim=1)


def _metrics_from_rows(rows: torch.Tensor, critic: bool, lam: float) -> dict[str, float]:
    difference = rows[:, 0] - rows[:, 1]
    tokens = rows[:, 4].sum()
    count = rows[:, 7].sum()
    mean = rows[:, 5].sum() / count
    variance = (rows[:, 6].sum() / count - mean ** 2).clamp(min=0.0)
    reward_loss = float(rows[:, 2].mean())
    metrics = {
        "pairs": int(rows.shape[0]),
        "accuracy": float(((difference > 0).double() + 0.5 * (difference == 0).double()).mean()),
        "margin": float(difference.mean()),
        "reward_loss": reward_loss,
        "reward_mean": float(mean),
        "reward_std": float(variance.sqrt() * math.sqrt(count / max(count - 1, 1))),
    }
    metrics["loss"] = reward_loss
    if critic and tokens > 0:  # (no critique tokens when every validation pair is reward-only)
        metrics["critique_loss"] = float(rows[:, 3].sum() / tokens)
        metrics["loss"] = lam * metrics["critique_loss"] + (1 - lam) * reward_loss
    return metrics


# ---- callbacks ----------------------------------------------------------------------------------------------
class RewardProgressCallback(ProgressCallback):
    """One progress bar with the latest λ, losses and accuracy; evaluation results printed as lines."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        if any(key.startswith("eval_") for key in logs):
            shown = {k.removeprefix("eval_"): v for k, v in logs.items()
                     if k in ("eval_accuracy", "eval_margin", "eval_reward_loss", "eval_critique_loss")}
            self.training_bar.write(f"step {state.global_step}: validation "
                                    + " ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        elif "loss" in logs:
            shown = {"loss": logs.get("loss"), "λ": logs.get("lambda"), "L_c": logs.get("critique_loss"),
                     "L_r": logs.get("reward_loss"), "acc": logs.get("accuracy")}
            self.training_bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items() if v is not None}, refresh=False)


class JsonlLogCallback(TrainerCallback):
    """Appends every log record (training and validation) to a JSON Lines file, for reports and plots."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class ThroughputCallback(TrainerCallback):
    """Seconds spent in optimizer steps (evaluation and saving excluded) and the tokens they trained."""

    def __init__(self):
        self.seconds, self.tokens, self._began, self._tokens_at = 0.0, 0, None, 0

    def on_step_begin(self, args, state, control, **kwargs):
        self._began, self._tokens_at = time.perf_counter(), state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self._began is not None:
            self.seconds += time.perf_counter() - self._began
            self.tokens += state.num_input_tokens_seen - self._tokens_at
            self._began = None

    @property
    def tokens_per_s(self) -> float | None:
        return round(self.tokens / self.seconds, 2) if self.seconds else None


class EpochCallback(TrainerCallback):
    """Tells the dataset which epoch it is in (random-k pairing draws new comparisons every epoch)."""

    def __init__(self, dataset: PairDataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch or 0))


# ---- building and running -------------------------------------------------------------------------------------
def training_arguments(config: TrainConfig, out_dir: Path, has_eval: bool, use_cpu: bool = False,
                       show_progress: bool = True) -> TrainingArguments:
    """The transformers arguments for a TrainConfig (created before the model: DeepSpeed ZeRO-3 needs that)."""
    precision = resolve_precision(config.precision)
    if not _has_accelerator():
        # Say so explicitly: bf16 autocast on CPU and several CPU processes (accelerate launch / torchrun
        # without GPUs: gloo data parallel) both need it.
        use_cpu = True
    eval_every = config.eval_steps if has_eval and config.eval_steps > 0 else None
    if eval_every and config.save_steps and config.save_steps != eval_every:
        raise CriticRMError("with a validation set, checkpoints are saved at every evaluation (to keep the best one): "
                            "leave save_steps unset or equal to eval_steps")
    return TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup,
        lr_scheduler_type=config.lr_scheduler,
        max_grad_norm=config.max_grad_norm,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if eval_every else "no",
        eval_steps=eval_every,
        save_strategy="steps",
        save_steps=eval_every or config.save_steps or config.eval_steps or 100,
        save_total_limit=config.save_total_limit,
        load_best_model_at_end=bool(eval_every),
        metric_for_best_model=f"eval_{config.best_metric}" if eval_every else None,
        greater_is_better=BEST_METRICS[config.best_metric] if eval_every else None,
        report_to=[r.strip() for r in config.report_to.split(",") if r.strip()] or "none",
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=config.dataloader_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        ddp_find_unused_parameters=False,
        deepspeed=config.deepspeed,
        use_cpu=use_cpu,
        disable_tqdm=not show_progress,
    )


def _has_accelerator() -> bool:
    xpu = getattr(torch, "xpu", None)
    return (torch.cuda.is_available() or bool(xpu and xpu.is_available())
            or torch.backends.mps.is_available())


def build_model(config: TrainConfig, model_name: str | None, args: TrainingArguments,
                head_from: str | Path | None = None) -> CriticRewardModel:
    """The two-head model on `model_name`: fp32 master weights for full fine-tuning; for LoRA the frozen base
    may be bf16. The reward head is fresh, or that of the saved reward model `head_from`."""
    base_dtype = torch.float32
    if config.lora and (args.bf16 or args.fp16) and torch.cuda.is_available():
        base_dtype = torch.bfloat16 if args.bf16 else torch.float16
    model = CriticRewardModel.from_backbone(
        model_name, mode=config.mode, dtype=base_dtype, attn_implementation=config.attn_implementation,
        template=config.template, max_length=config.max_length, truncation=config.truncation,
        head_hidden_size=config.head_hidden_size, head_init_std=config.head_init_std)
    if head_from is not None:
        load_reward_head(model, head_from)
    model.causal_lm.config.use_cache = False
    if config.disable_dropout:
        disable_dropout(model.causal_lm)
    if config.lora:
        targets = config.lora_target_modules
        model.add_lora(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                       target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")])
    if config.gradient_checkpointing:
        model.activation_checkpointing_enable()
    return model


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout of a backbone to 0: its modules and the rates its config passes to attention kernels."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    config = model.config.get_text_config()
    for name, value in list(vars(config).items()):
        if "dropout" in name and isinstance(value, float):
            setattr(config, name, 0.0)


def train_reward_model(config: TrainConfig, data: str | Path, out_dir: str | Path, model_name: str | None = None,
                       use_cpu: bool = False, show_progress: bool = True,
                       callbacks: list[TrainerCallback] | None = None,
                       head_from: str | Path | None = None) -> dict[str, Any]:
    """Train a reward model on `data` into `out_dir`; returns (and writes) the training summary.

    `head_from`: a saved reward model folder whose reward head training starts from instead of a fresh one;
    with `model_name` that same folder (its top level is the causal LM), training continues that model.

    `out_dir` receives `checkpoint-*/` (resumable; once the run finishes, those `checkpoints_after_finish`
    keeps), `log.jsonl` (every logged step), `model/` (the final model: the best checkpoint when there is a
    validation set), `train_summary.json` and `settings.json`.
    A folder that already holds this finished run (same settings) is returned as it is.
    """
    from transformers import set_seed

    from criticrm.models.backbone import load_tokenizer
    from criticrm.models.sequences import SequenceBuilder

    out_dir = Path(out_dir)
    started = time.perf_counter()
    identity = _run_identity(config, data, model_name, head_from)
    finished = _finished_run(out_dir, identity)
    if finished is not None and config.resume:
        print(f"{out_dir} already holds this finished run ({out_dir / rundir.MODEL_DIR}); resume false trains again")
        return finished
    # The tokenizer is used before the data loader may fork workers: without this, each of them warns.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    train_pairs, eval_pairs = _training_and_validation_pairs(config, data)
    args = training_arguments(config, out_dir, bool(eval_pairs), use_cpu=use_cpu, show_progress=show_progress)
    _ = args.device  # set up the distributed state now, before any model is loaded (DeepSpeed ZeRO-3 needs this)
    set_seed(config.seed)
    tokenizer = load_tokenizer(model_name)
    builder = SequenceBuilder(tokenizer, mode=config.mode, template=config.template or "general",
                              max_length=config.max_length, truncation=config.truncation)
    train_examples, train_report = encode_pairs(train_pairs, builder, config.template, config.margin_source,
                                                config.reward_critiques)
    eval_examples, eval_report = encode_pairs(eval_pairs, builder, config.template, config.margin_source,
                                              config.reward_critiques)
    if not train_examples:
        raise CriticRMError(f"no usable training pair in {data}: {train_report.to_dict()}")
    if config.mode == "critic" and train_report.supervised_pairs == 0:
        print("warning: no pair carries critique supervision; critic mode then trains on the reward loss alone "
              "(weighted by 1 - lambda): nothing teaches it to write critiques")

    model = build_model(config, model_name, args, head_from)
    model.reward_config.templates = {name: builder.judge_template(name).hash for name in train_report.templates}
    model.reward_config.training_margin = config.margin_source if train_report.pairs_with_margin else "none"
    trainer, throughput = _trainer(config, model, args, tokenizer, train_examples, eval_examples, out_dir,
                                   show_progress, callbacks)
    checkpoint = last_complete_checkpoint(out_dir) if config.resume else None
    rundir.guard(out_dir, identity, "checkpoints of a training run", ignore=_HARMLESS_SETTINGS,
                 start_over=checkpoint is None, write=trainer.is_world_process_zero(),
                 hint="use another output folder, or set resume false to start over there")
    if trainer.is_world_process_zero():
        prepare_resume(out_dir, out_dir / rundir.TRAIN_LOG_FILE, checkpoint)
        if checkpoint:
            print(f"resuming from {checkpoint}")
    trainer.accelerator.wait_for_everyone()
    train_started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    train_seconds = time.perf_counter() - train_started

    final_metrics = _save_final_model(trainer, config, model_name, train_examples, out_dir)
    summary = {
        **_run_summary(trainer, config, model_name, data, out_dir),
        "train_data": train_report.to_dict(),
        "eval_data": eval_report.to_dict() if eval_pairs else None,
        **_throughput(trainer, throughput, train_seconds),
        "train_loss": result.training_loss,
        "final_metrics": final_metrics,
        "margin": {"source": model.reward_config.training_margin, "scale": config.margin_scale,
                   "pairs_with_margin": train_report.pairs_with_margin},
        "resumed_from": str(checkpoint) if checkpoint else None,
        **({"head_from": identity["head_from"]} if head_from else {}),
        "seconds": round(time.perf_counter() - started, 2),
        "config": asdict(config),
    }
    if trainer.is_world_process_zero():
        write_text_atomic(out_dir / rundir.TRAIN_SUMMARY_FILE, json.dumps(summary, indent=2, default=str))
        update_model_card(out_dir / rundir.MODEL_DIR, training=summary)
        prune_after_finish(out_dir, config.checkpoints_after_finish, trainer.state.best_model_checkpoint)
    return summary


def _training_and_validation_pairs(config: TrainConfig, data: str | Path) -> tuple[list, list]:
    """The training pairs, and the validation pairs: `eval_data`, else `eval_fraction` of the prompts held out."""
    pairs = load_training_pairs(data, config.mode)
    if config.eval_data:
        return pairs, load_training_pairs(config.eval_data, config.mode)
    return split_by_prompt(pairs, config.eval_fraction, config.seed)


def shares_prefixes(config: TrainConfig, model: CriticRewardModel) -> bool:
    """Whether each pair is forwarded as one packed row (`train.share_prefixes`): asked for, and the model's
    attention kernel takes a packed row's mask."""
    return config.share_prefixes and model.takes_packed_rows


def _trainer(config: TrainConfig, model: CriticRewardModel, args: TrainingArguments, tokenizer, train_examples: list,
             eval_examples: list, out_dir: Path, show_progress: bool, callbacks: list[TrainerCallback] | None
             ) -> tuple[CriticRMTrainer, ThroughputCallback]:
    """The trainer over the encoded pairs, with our logging callbacks instead of transformers' printers."""
    schedule = LambdaSchedule(config.lambda_schedule, config.lambda_start, config.lambda_end, config.lambda_rounds,
                              num_epochs=config.epochs)
    train_dataset = PairDataset(train_examples, config.pairing, config.pairs_per_example, config.seed,
                                config.margin_scale)
    eval_dataset = PairDataset(eval_examples, "all", margin_scale=config.margin_scale) if eval_examples else None
    throughput = ThroughputCallback()
    trainer = CriticRMTrainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        data_collator=PairCollator(tokenizer.pad_token_id, with_critique_loss=config.mode == "critic",
                                   share_prefixes=shares_prefixes(config, model), token_cost=6 * model.hidden_size),
        processing_class=tokenizer, train_config=config, lambda_schedule=schedule,
        callbacks=[EpochCallback(train_dataset), JsonlLogCallback(out_dir / rundir.TRAIN_LOG_FILE), throughput,
                   *(callbacks or [])],
    )
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    if show_progress:
        trainer.add_callback(RewardProgressCallback())
    return trainer, throughput


def _save_final_model(trainer: CriticRMTrainer, config: TrainConfig, model_name: str | None, train_examples: list,
                      out_dir: Path) -> dict[str, float]:
    """Store the reward statistics (validation set, else a training sample) in the model and save it to
    `out_dir/model`; returns the final validation metrics (empty without a validation set)."""
    final_metrics: dict[str, float] = {}
    if trainer.eval_dataset is not None:
        final_metrics = trainer.evaluate()
        stats_source, mean, std = "validation", final_metrics["eval_reward_mean"], final_metrics["eval_reward_std"]
    else:
        sample = PairDataset(train_examples[:64], "all")
        stats = trainer.evaluate(sample, metric_key_prefix="train_sample")
        stats_source, mean, std = "train", stats["train_sample_reward_mean"], stats["train_sample_reward_std"]
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    unwrapped.reward_config.reward_mean, unwrapped.reward_config.reward_std = mean, std
    unwrapped.reward_config.reward_stats_source = stats_source
    unwrapped.reward_config.base_model = model_name
    trainer.merge_lora_on_save = config.lora and config.merge_lora
    trainer.save_model(str(out_dir / rundir.MODEL_DIR))
    return final_metrics


def _run_summary(trainer: CriticRMTrainer, config: TrainConfig, model_name: str | None, data: str | Path,
                 out_dir: Path) -> dict[str, Any]:
    """What was trained where: mode, model, data, steps, precision, the best checkpoint, reward stats, λ."""
    from criticrm.models.backbone import display_name

    reward_config = trainer.accelerator.unwrap_model(trainer.model).reward_config
    return {
        "mode": config.mode,
        "model": display_name(model_name),
        "data": str(data),
        "model_dir": str(out_dir / rundir.MODEL_DIR),
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "precision": resolve_precision(config.precision),
        "packed_rows": shares_prefixes(config, trainer.accelerator.unwrap_model(trainer.model)),
        "processes": trainer.accelerator.num_processes,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": trainer.state.best_metric,
        "reward_stats": {"mean": reward_config.reward_mean, "std": reward_config.reward_std,
                         "source": reward_config.reward_stats_source},
        # the λ applied at the first and last step: start/end alone misread schedules that ignore them (constant)
        "lambda_schedule": {"name": config.lambda_schedule, "start": config.lambda_start, "end": config.lambda_end,
                            "first_step": trainer.lambda_at(0),
                            "last_step": trainer.lambda_at(max(0, trainer.state.max_steps - 1))},
    }


def _throughput(trainer: CriticRMTrainer, throughput: ThroughputCallback, train_seconds: float) -> dict[str, Any]:
    """Tokens trained by this session (all processes), per second in optimizer steps and overall, and padding."""
    trained_tokens = trainer.state.num_input_tokens_seen
    computed = torch.tensor([float(trainer.computed_tokens)], device=trainer.args.device)
    computed_tokens = int(trainer.accelerator.gather(computed).sum()) if trainer.args.world_size > 1 else int(computed)
    session_tokens = trained_tokens - getattr(trainer, "_initial_num_input_tokens_seen", 0)
    return {
        "train_seconds": round(train_seconds, 2),
        "trained_tokens": session_tokens,  # non-padding tokens trained by this session (all processes)
        "trained_tokens_per_s": throughput.tokens_per_s,  # during optimizer steps only
        "wall_tokens_per_s": round(session_tokens / train_seconds, 2) if train_seconds else None,  # incl. eval, saving
        "computed_tokens": computed_tokens,
        "computed_per_trained": round(computed_tokens / session_tokens, 3) if session_tokens else None,
    }


def _describe_margin(margin: dict[str, Any]) -> str:
    if margin["source"] == "none":
        return "none (the human label alone)"
    what = "the data's margin column" if margin["source"] == "data" else "the base judge's critique-score gap (ablation)"
    return f"{what} on {margin['pairs_with_margin']} pairs, scaled by {margin['scale']}"


# Settings that change how a run executes, not what it computes: a run may resume, or count as
# finished, under other values. Gradient checkpointing is one: a run killed for memory resumes with it;
# packed rows another (the same sums up to float rounding).
_RUNTIME_SETTINGS = {"resume", "report_to", "logging_steps", "dataloader_workers", "save_total_limit",
                     "checkpoints_after_finish", "eval_batch_size", "gradient_checkpointing", "share_prefixes"}
# ... and, for resuming only, the length of the run (epochs / max_steps may grow).
_HARMLESS_SETTINGS = _RUNTIME_SETTINGS | {"max_steps", "epochs"}


def _run_identity(config: TrainConfig, data: str | Path, model_name: str | None,
                  head_from: str | Path | None = None) -> dict[str, Any]:
    """What makes two runs the same run: settings, data, model and starting head, with local paths made
    absolute so that `runs/x` and `/home/me/project/runs/x` name the same run. (A folder trained before
    `head_from` existed lacks that key, which is then not compared: it was trained with a fresh head.)"""
    def absolute(value: str | Path | None) -> str | None:
        if value is None:
            return None
        return str(Path(value).resolve()) if Path(value).exists() else str(value)  # a hub id stays as given

    return {**asdict(config), "data": absolute(data), "model": absolute(model_name), "head_from": absolute(head_from)}


def _finished_run(out_dir: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of a finished run in `out_dir` with these settings (runtime ones aside), else None."""
    summary_path = out_dir / rundir.TRAIN_SUMMARY_FILE
    if not (summary_path.is_file() and is_reward_model_dir(out_dir / rundir.MODEL_DIR)
            and rundir.same_settings(out_dir, settings, ignore=_RUNTIME_SETTINGS)):
        return None
    return json.loads(summary_path.read_text())


def format_summary(summary: dict[str, Any]) -> str:
    data = summary["train_data"]
    lines = [
        f"{summary['mode']} reward model on {summary['model']}: {summary['steps']} steps, "
        f"{summary['trained_tokens']} tokens trained in {summary['train_seconds']} s "
        f"({summary['trained_tokens_per_s']} tok/s in steps, {summary['precision']}, {summary['processes']} process(es))",
        f"training pairs: {data['pairs']} ({data['supervised_pairs']} with critique supervision, "
        f"{data['reward_only_pairs']} reward-only); sequences {data['sequences']}, "
        f"truncated {data['truncated_sequences']}, pairs dropped: too long {data['dropped_too_long']}, "
        f"without critiques {data['dropped_no_critique']}",
        f"Bradley-Terry margin: {_describe_margin(summary['margin'])}",
    ]
    metrics = summary.get("final_metrics") or {}
    if metrics:
        shown = " ".join(f"{k.removeprefix('eval_')} {v:.4g}" for k, v in metrics.items()
                         if k in ("eval_accuracy", "eval_margin", "eval_reward_loss", "eval_critique_loss"))
        lines.append(f"validation ({metrics.get('eval_pairs')} pairs): {shown}")
    lines.append(f"model: {summary['model_dir']}")
    return "\n".join(lines)

