"""Inference scaling and faithfulness of a Critic-RM on a stratified sample of the dev set (issue 20).

One `criticrm eval` run (library: `run_evaluation`) with `--eval.samples 16 --eval.faithfulness` on the first
K pairs of every subset of ../shared/data/dev_sections.jsonl (else the shipped sample), into
OUT/eval-<settings>/ (resumable: run it again after an interruption). Then, from that run's per-example
dump and without generating again, adaptive m is re-read at a sweep of spreads (multiples of the median
standard deviation of a response's sampled rewards, since the right threshold depends on the model's
reward scale). Writes OUT/inference.json (settings, machine, time, both summaries, the sweep) and
OUT/inference.md (the Markdown tables), and prints the tables.

    python bench/bench_inference.py --per-subset 4                         # the real run (demo Critic-RM)
    python bench/bench_inference.py --per-subset 1 --max-new-tokens 8 --out /tmp/inference   # a smoke check
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from criticrm import rundir
from criticrm.data.readers import DataConfig
from criticrm.data.rewardbench import load_eval_examples
from criticrm.evaluation.eval_report import load_examples
from criticrm.evaluation.inference_report import faithfulness_markdown, scaling_markdown
from criticrm.evaluation.run import EvalConfig, run_evaluation
from criticrm.evaluation.scaling import critiques_of, inference_scaling
from criticrm.generation.base import SamplingConfig
from criticrm.inference.scorer import ScoringConfig
from criticrm.models.backbone import ModelConfig
from criticrm.pipeline.critique import CritiqueConfig
from machine import describe

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "dev_sections.jsonl"
SAMPLE = ROOT / "data" / "sample" / "eval_sections.jsonl"
SWEEP = (0.25, 0.5, 1.0, 2.0)  # adaptive spreads, as multiples of the median per-response reward std


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "runs" / "demo" / "train-critic" / "model"),
                        help="a trained critic-mode model/ folder (default: the demo's)")
    parser.add_argument("--data", default=str(SHARED if SHARED.exists() else SAMPLE))
    parser.add_argument("--per-subset", type=int, default=4, help="the first K pairs of every subset")
    parser.add_argument("--samples", type=int, default=16, help="critiques sampled per response (largest m)")
    parser.add_argument("--faithfulness-samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--adaptive-spread", type=float, default=EvalConfig.adaptive_spread,
                        help="the report's own adaptive-m threshold (the sweep is added beside it)")
    parser.add_argument("--dtype", default="auto", help="fp32 | bf16 | auto (the dtype the model was saved in)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "inference")
    args = parser.parse_args()

    examples = load_eval_examples(DataConfig(data=args.data, per_subset=args.per_subset))
    config = EvalConfig(samples=args.samples, faithfulness=True, faithfulness_samples=args.faithfulness_samples,
                        adaptive_spread=args.adaptive_spread)
    scoring = ScoringConfig(max_new_tokens=args.max_new_tokens)
    eval_dir = args.out / f"eval-k{args.per_subset}-m{args.samples}-t{args.max_new_tokens}"
    started = time.time()
    summary = run_evaluation(examples, config, ModelConfig(model=args.model, dtype=args.dtype), scoring,
                             CritiqueConfig(), SamplingConfig(), eval_dir, data_name=args.data)
    report = json.loads((eval_dir / rundir.REPORT_JSON).read_text())
    sweep = adaptive_sweep(load_examples(eval_dir))
    record = {"date": time.strftime("%Y-%m-%d"), "machine": describe(), "model": args.model, "data": args.data,
              "per_subset": args.per_subset, "pairs": len(examples), "samples": args.samples,
              "faithfulness_samples": args.faithfulness_samples, "max_new_tokens": args.max_new_tokens,
              "dtype": args.dtype, "seconds_this_call": round(time.time() - started, 1),
              "seconds_evaluation": report["meta"]["seconds"], "eval_dir": str(eval_dir),
              "overall": summary["overall"], "inference_scaling": summary["inference_scaling"],
              "faithfulness": summary["faithfulness"], "adaptive_sweep": sweep}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "inference.json").write_text(json.dumps(record, indent=2) + "\n")
    text = markdown(record)
    (args.out / "inference.md").write_text(text)
    print(text)


def adaptive_sweep(results) -> list[dict]:
    """Adaptive-m rows at spreads scaled to this model's rewards: SWEEP x the median (over responses) of
    the standard deviation of a response's sampled rewards."""
    spreads = [statistics.pstdev([c.reward for c in response]) for result in results
               for response in critiques_of(result) if len(response) > 1]
    median = statistics.median(spreads)
    if not median > 0:
        return []
    return [inference_scaling(results, factor * median)["rows"][-1] | {"factor": factor} for factor in SWEEP]


def markdown(record: dict) -> str:
    lines = [f"# Inference scaling and faithfulness ({record['date']})", "",
             f"{record['model']} on {record['pairs']} pairs of {record['data']} (the first {record['per_subset']} of "
             f"every subset), {record['samples']} critiques sampled per response (≤ {record['max_new_tokens']} "
             f"tokens), {record['faithfulness_samples']} more per response to find an opposite verdict; "
             f"{record['seconds_evaluation']:.0f} s of evaluation on {record['machine']['cpu']}.", ""]
    lines += scaling_markdown(record["inference_scaling"], plotted=False)
    if record["adaptive_sweep"]:
        lines += ["Adaptive m at spreads scaled to this model's rewards (× the median per-response reward std):", "",
                  "| × median | spread | critiques / response | tokens / response | overall | accuracy |",
                  "|---|---|---|---|---|---|"]
        for row in record["adaptive_sweep"]:
            tokens = "–" if row["tokens_per_response"] is None else f"{row['tokens_per_response']:.1f}"
            lines.append(f"| {row['factor']:g} | {row['spread']:.4g} | {row['critiques_per_response']:.2f} | {tokens} | "
                         f"{100 * row['overall']:.1f}% | {100 * row['accuracy']:.1f}% |")
        lines.append("")
    lines += faithfulness_markdown(record["faithfulness"])
    return "\n".join(lines)


if __name__ == "__main__":
    main()
