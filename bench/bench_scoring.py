"""Scoring throughput of a trained reward model: pairs/s at m = 1 and m = 4 critiques per response.

Workload: the first `--pairs` pairs of an evaluation file (default ../shared/data/dev_sections.jsonl, else
the shipped sample), both responses of each pair scored through `RewardScorer.score` exactly as
`criticrm eval` and `criticrm serve` do (critique generation + reward forward passes), after one untimed
warm-up call. Writes JSON after each variant.

    python bench/bench_scoring.py --model runs/demo/train-critic/model --out bench/results/scoring.json
    python bench/bench_scoring.py --model runs/demo/train-standard/model --m 1 --out bench/results/scoring_standard.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from criticrm.data.readers import DataConfig
from criticrm.data.rewardbench import load_eval_examples
from criticrm.inference.scorer import RewardScorer, ScoreItem, ScoringConfig
from machine import describe

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "dev_sections.jsonl"
SAMPLE = ROOT / "data" / "sample" / "eval_sections.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained model/ folder")
    parser.add_argument("--data", default=str(SHARED if SHARED.exists() else SAMPLE))
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--m", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--dtype", default=None, help="fp32 | bf16 | auto (default: the dtype the model was saved in)")
    parser.add_argument("--batch-size", type=int, default=32, help="critiques generated per batch")
    parser.add_argument("--no-cascade", action="store_true",
                        help="the model's own forward and a re-read of every reward (the path before the cascade engine)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    examples = [e for e in load_eval_examples(DataConfig(data=args.data, limit=args.pairs)) if e.is_pair]
    items = [ScoreItem(e.prompt, r, e.domain, e.subset) for e in examples for r in (e.chosen[0], e.rejected[0])]
    scorer = RewardScorer.load(args.model, ScoringConfig(max_new_tokens=args.max_new_tokens,
                                                         generation_batch_size=args.batch_size), dtype=args.dtype)
    if args.no_cascade and scorer.generator is not None:
        scorer.generator.engine = None
    scorer.score(items[:2])  # warm-up: first-call allocations and kernel selection
    report = {"model": args.model, "mode": scorer.mode, "data": args.data, "pairs": len(examples),
              "max_new_tokens": args.max_new_tokens, "machine": describe(),
              "dtype": str(next(scorer.model.parameters()).dtype), "generation_batch_size": args.batch_size,
              "engine": "cascade" if getattr(scorer.generator, "engine", None) is not None else "model forward",
              "date": time.strftime("%Y-%m-%d"), "runs": []}
    for m in args.m if scorer.mode == "critic" else [1]:
        started = time.perf_counter()
        results = scorer.score(items, num_critiques=m)
        seconds = time.perf_counter() - started
        critique_tokens = sum(len(scorer.tokenizer(c.critique).input_ids) for r in results for c in r.critiques)
        report["runs"].append({"m": m, "seconds": round(seconds, 1), "pairs_per_s": round(len(examples) / seconds, 3),
                               "critique_tokens_per_s": round(critique_tokens / seconds, 1),
                               "truncated": sum(c.finish_reason == "length" for r in results for c in r.critiques)})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report["runs"][-1]))


if __name__ == "__main__":
    main()
