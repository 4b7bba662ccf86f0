"""Training throughput: trained (non-padding) tokens/s of criticrm and of TRL's RewardTrainer, same data.

Workload (issue 4): the first `--pairs` pairs (default 64) of ../shared/data/train.jsonl on the default
backbone (SmolLM2-135M-Instruct), `--batch-size` pairs per step, max_length 1024. Critic mode trains on
the refine stage's rows when `--critic-data` names them, else on the same pairs with canned critiques
(`criticrm.testing.rows`, ~25 tokens each: shorter than real critiques). Standard mode and TRL train
on the plain pairs, as chat (user = prompt, assistant = response).

Metric: the tokens of the training sequences (padding aside, a shared prefix counted once per sequence that
holds it) trained per second of optimizer steps, after `--warmup` untimed steps; evaluation and saving are
not timed. `computed/trained` is the number of positions actually computed per trained token: above 1 is
padding, below 1 what packed rows saved. Each variant runs in a
fresh subprocess (clean peak memory, no shared state).

    python bench/bench_training.py --steps 8 --out bench/results/training.json      # the full run (~1 h on 2 cores)
    python bench/bench_training.py --steps 1 --warmup 1 --pairs 8 --variants critic-full-fp32 trl-fp32
                                                                                      # a quick check of the script

Variants: `{critic,standard}-{full,lora}-{fp32,bf16}` (criticrm, each pair one packed row: its shared prefixes
forwarded once; `-gc` adds gradient checkpointing, `-separate` forwards one row per sequence, as before packing) and
`trl-{fp32,bf16}[-gc]` (TRL 1.16 RewardTrainer; `-gc` is its default gradient checkpointing). bf16 variants
run only where bf16 is fast (CUDA, or a CPU with AVX-512 BF16 / AMX); elsewhere they are reported skipped.
TRL is an optional extra (`pip install -e .[bench]`), never a runtime dependency.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = ["critic-full-fp32", "critic-lora-fp32", "standard-full-fp32", "standard-lora-fp32",
            "critic-full-fp32-gc", "critic-full-bf16", "critic-lora-bf16", "standard-full-bf16",
            "trl-fp32-gc", "trl-fp32", "trl-bf16-gc", "trl-bf16", "critic-full-bf16-separate",
            "standard-full-bf16-separate", "critic-full-fp32-separate"]
DEFAULT_VARIANTS = [v for v in VARIANTS if v != "critic-full-fp32-gc" and not v.endswith("-separate")]


class StepTimer:
    """Times optimizer steps after the warm-up and counts the non-padding tokens they trained."""

    def __init__(self, warmup: int):
        from transformers import TrainerCallback

        timer = self

        class _Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step == warmup:
                    timer.start, timer.tokens_at_start = time.perf_counter(), state.num_input_tokens_seen

            def on_step_end(self, args, state, control, **kwargs):
                timer.end, timer.tokens_at_end, timer.steps = time.perf_counter(), state.num_input_tokens_seen, \
                    state.global_step - warmup

        self.callback = _Callback()
        self.start = self.end = None
        self.tokens_at_start = self.tokens_at_end = 0
        self.steps = 0

    def result(self) -> dict:
        seconds = self.end - self.start
        tokens = self.tokens_at_end - self.tokens_at_start
        return {"timed_steps": self.steps, "trained_tokens": tokens, "seconds": round(seconds, 2),
                "tokens_per_s": round(tokens / seconds, 1), "seconds_per_step": round(seconds / self.steps, 2)}


def fast_bf16() -> bool:
    from criticrm.models.backbone import cpu_has_fast_bf16

    return torch.cuda.is_available() or cpu_has_fast_bf16()


def load_plain_pairs(path: str, count: int) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            rows.append(json.loads(line))
            if len(rows) == count:
                break
    return rows


def run_criticrm(variant: str, args) -> dict:
    mode, method, precision = variant.split("-")[:3]
    with tempfile.TemporaryDirectory(prefix="bench-train-") as folder:  # a trained model is ~2 GB: never leave it
        return _train_criticrm(variant, mode, method, precision, Path(folder), args)


def _train_criticrm(variant: str, mode: str, method: str, precision: str, work: Path, args) -> dict:
    from criticrm.testing.rows import synthetic_rows, write_rows
    from criticrm.training import TrainConfig, train_reward_model

    if mode == "critic" and args.critic_data:
        data = args.critic_data
    elif mode == "critic":
        data = write_rows(synthetic_rows(args.data, limit=args.pairs), work / "train.jsonl")
    else:
        data = write_rows(synthetic_rows(args.data, limit=args.pairs, margin_every=0), work / "train.jsonl")
    timer = StepTimer(args.warmup)
    config = TrainConfig(mode=mode, max_length=args.max_length, batch_size=args.batch_size, eval_fraction=0.0,
                         eval_steps=0, save_steps=10 ** 6, max_steps=args.warmup + args.steps, epochs=100,
                         learning_rate=1e-4 if method == "lora" else 1e-5, lora=method == "lora", precision=precision,
                         gradient_checkpointing=variant.endswith("-gc"), share_prefixes=not variant.endswith("-separate"),
                         resume=False, logging_steps=1)
    summary = train_reward_model(config, data, work / "out", show_progress=False, callbacks=[timer.callback])
    return {**timer.result(), "computed_per_trained": summary["computed_per_trained"],
            "pairs_used": summary["train_data"]["pairs"], "pairs_dropped": summary["train_data"]["dropped_too_long"],
            "truncated_sequences": summary["train_data"]["truncated_sequences"]}


def run_trl(variant: str, args) -> dict:
    try:
        importlib.import_module("trl")
    except ImportError:
        return {"skipped": "trl is not installed (pip install -e .[bench])"}
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification

    from criticrm.models.backbone import load_tokenizer, resolve_model_path

    precision = variant.split("-")[1]
    pairs = load_plain_pairs(args.data, args.pairs)
    dataset = Dataset.from_list([{
        "chosen": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["chosen"]}],
        "rejected": [{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["rejected"]}],
    } for p in pairs])
    tokenizer = load_tokenizer(None)
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(None), num_labels=1,
                                                               dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    with tempfile.TemporaryDirectory(prefix="bench-trl-") as work:
        return _train_trl(model, tokenizer, dataset, work, args, variant, precision)


def _train_trl(model, tokenizer, dataset, work: str, args, variant: str, precision: str) -> dict:
    import trl
    from trl import RewardConfig, RewardTrainer

    config = RewardConfig(output_dir=work, per_device_train_batch_size=args.batch_size, max_length=args.max_length,
                          max_steps=args.warmup + args.steps, learning_rate=1e-5, bf16=precision == "bf16",
                          gradient_checkpointing=variant.endswith("-gc"), logging_steps=1, save_strategy="no",
                          report_to="none", include_num_input_tokens_seen="non_padding", disable_tqdm=True)
    timer = StepTimer(args.warmup)
    trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                            callbacks=[timer.callback])
    computed = {"positions": 0, "tokens": 0}
    collate = trainer.data_collator

    def counting_collator(features):
        batch = collate(features)
        computed["positions"] += batch["input_ids"].numel()
        computed["tokens"] += int(batch["attention_mask"].sum())
        return batch

    trainer.data_collator = counting_collator
    trainer.train()
    return {**timer.result(), "computed_per_trained": round(computed["positions"] / max(computed["tokens"], 1), 3),
            "pairs_used": len(trainer.train_dataset), "pairs_dropped": len(dataset) - len(trainer.train_dataset),
            "trl": trl.__version__}


def child(variant: str, args) -> dict:
    started = time.perf_counter()
    result = run_trl(variant, args) if variant.startswith("trl") else run_criticrm(variant, args)
    result["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 2)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "train.jsonl"),
                        help="plain preference pairs (JSONL)")
    parser.add_argument("--critic-data", default=None, help="refined rows (the refine stage's train.jsonl) for critic mode")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per optimizer step")
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=VARIANTS)
    parser.add_argument("--force-bf16", action="store_true", help="run bf16 variants even where bf16 is slow")
    parser.add_argument("--out", type=Path, default=Path("bench/results/training.json"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not Path(args.data).is_file():
        args.data = str(Path(__file__).resolve().parents[1] / "data" / "sample" / "train.jsonl")
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args)), flush=True)
        return

    results, load_before = {}, os.getloadavg()
    for variant in args.variants:
        if "bf16" in variant and not fast_bf16() and not args.force_bf16:
            results[variant] = {"skipped": "no fast bf16 here (no CUDA, no AVX-512 BF16 / AMX): bf16 matmuls run "
                                           "hundreds of times slower than fp32 on this CPU"}
        else:
            command = [sys.executable, __file__, "--child", variant, *_forwarded(args)]
            run = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
            results[variant] = json.loads(lines[-1][7:]) if lines else {"error": run.stderr[-2000:]}
        print(variant, results[variant], flush=True)
    report = {
        "benchmark": "training throughput (trained non-padding tokens/s)",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
                    "fast_bf16": fast_bf16(), "load_average_before": load_before,
                    "load_average_after": os.getloadavg(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "workload": {"data": args.data, "critic_data": args.critic_data or "canned critiques (fixtures)",
                     "pairs": args.pairs, "batch_size": args.batch_size, "max_length": args.max_length,
                     "timed_steps": args.steps, "warmup_steps": args.warmup, "backbone": "SmolLM2-135M-Instruct"},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print("| variant | trained tok/s | s/step | computed/trained | peak RSS GB | pairs dropped |\n|---|---|---|---|---|---|")
    for variant, r in results.items():
        if "tokens_per_s" in r:
            print(f"| {variant} | {r['tokens_per_s']} | {r['seconds_per_step']} | {r['computed_per_trained']} | "
                  f"{r['peak_rss_gb']} | {r['pairs_dropped']} |")
        else:
            print(f"| {variant} | – | – | – | – | {r.get('skipped') or 'error'} |")


def _forwarded(args) -> list[str]:
    out = ["--data", args.data, "--pairs", str(args.pairs), "--batch-size", str(args.batch_size),
           "--max-length", str(args.max_length), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    return out + (["--critic-data", args.critic_data] if args.critic_data else [])


if __name__ == "__main__":
    main()
