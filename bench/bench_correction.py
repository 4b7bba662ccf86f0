"""Critique-driven correction on the math and science subsets of ../shared/data/dev_sections.jsonl (issue 20).

Runs the library function of `criticrm correct` (`criticrm.correction.run.run_correction`) with a trained
Critic-RM: each problem's wrong (rejected) and right (chosen) solution is revised after the Critic-RM's
critique, after the base model's own critique, and with none; then critique-guided best-of-N. The run
folder (progress files: every critique and revision) is OUT/run and resumes where it stopped; the result
is OUT/correction.json (the report, the machine, the settings and the wall time) and OUT/correction.md.

    python bench/bench_correction.py --per-subset 5 --best-of-k 8                     # the real run
    python bench/bench_correction.py --per-subset 1 --max-new-tokens 32 --critique-tokens 24 --best-of-k 2 \\
        --out /tmp/correction-check                                                 # a quick check

`--per-subset K` takes the first K pairs of every math-*/sci-* subset (8 subsets: ~8K problems before the
pairs whose reference cannot be read or whose rejected answer is right are skipped).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from criticrm.correction.problems import select_problems, subset_prefixes
from criticrm.correction.report import CONDITION_NAMES
from criticrm.correction.run import BestOfConfig, CorrectionConfig, run_correction
from criticrm.data.readers import DataConfig
from criticrm.data.rewardbench import load_eval_examples
from criticrm.formatting import percent
from criticrm.inference.scorer import ScoringConfig
from criticrm.models.backbone import ModelConfig
from machine import describe

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "dev_sections.jsonl"
DEMO = Path("runs") / "demo" / "train-critic" / "model"  # `make demo`'s Critic-RM: this checkout's, else main's
MODEL = ROOT / DEMO if (ROOT / DEMO).is_dir() else ROOT.parent / "main" / DEMO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(MODEL), help="a trained Critic-RM model/ folder")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--per-subset", type=int, default=5)
    parser.add_argument("--subsets", default="math-,sci-")
    parser.add_argument("--conditions", default="critic,base,none")
    parser.add_argument("--reviser", default="model", help="model | base | a model id or folder")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest revision / best-of-N solution")
    parser.add_argument("--critique-tokens", type=int, default=128, help="longest critique")
    parser.add_argument("--best-of-k", type=int, default=8, help="solutions per problem (0: no best-of-N)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "correction")
    args = parser.parse_args()

    examples = load_eval_examples(DataConfig(data=args.data, per_subset=args.per_subset))
    problems, skipped = select_problems(examples, subset_prefixes(args.subsets))
    config = CorrectionConfig(conditions=args.conditions, subsets=args.subsets, reviser=args.reviser,
                              max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    scoring = ScoringConfig(max_new_tokens=args.critique_tokens, generation_batch_size=args.batch_size)
    started = time.time()
    report = run_correction(problems, config, BestOfConfig(k=args.best_of_k), ModelConfig(model=args.model,
                            dtype=args.dtype), scoring, args.out / "run", skipped=skipped, data_name=args.data)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": describe(), "per_subset": args.per_subset,
              "wall_seconds": round(time.time() - started, 1), "report": report}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "correction.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    table = markdown(result)
    (args.out / "correction.md").write_text(table)
    print(table)


def markdown(result: dict) -> str:
    report = result["report"]
    meta = report["meta"]
    lines = [f"Critique-driven correction, {meta['problems']} problems (first {result['per_subset']} pairs of each "
             f"math-*/sci-* subset; skipped: {meta['skipped']}), reward model `{meta['model']}`, reviser "
             f"{meta['reviser']}; {result['date']}, {result['machine']['cpu']}, {result['wall_seconds']:.0f} s.", "",
             "| condition | accuracy before | accuracy after | Δ↑ wrong→right | Δ↓ right→wrong | no answer |",
             "|---|---|---|---|---|---|"]
    for name, stats in report["conditions"].items():
        row = stats["overall"]
        lines.append(f"| {CONDITION_NAMES[name]} | {percent(row['accuracy_before'])} | {percent(row['accuracy_after'])} "
                     f"| {percent(row['delta_up'])} ({row['fixed']}/{row['started_wrong']}) | "
                     f"{percent(row['delta_down'])} ({row['broken']}/{row['started_right']}) | "
                     f"{percent(row['no_answer'])} |")
    if report["best_of"]:
        overall = report["best_of"]["overall"]
        lines += ["", "| k | reward pick | oracle | majority |", "|---|---|---|---|"]
        lines += [f"| {k} | {percent(v['reward'])} | {percent(v['oracle'])} | {percent(v['majority'])} |"
                  for k, v in overall.items() if k != "problems"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
