"""The data stages of a finished `criticrm pipeline` run, as BENCHMARKS.md reports them (issue 3).

Reads what the stages recorded (each stage's result and wall time, in its `settings.json`; `DONE.json` in
runs made before that file) and writes one JSON file plus Markdown tables: pairs in, label agreement of
the base model's critique scores (overall and per subset), instance and critique keep rates, refine
successes and fallbacks, and each stage's time.

    python bench/report_run.py runs/train300 --out bench/results/train300_data.json

A stage's seconds are those of the process that finished it and, for folders that record their segments
(`rundir.working`), also the sum over every process that worked on it (a resumed stage, as `critiques`
often is, runs in several); the critique throughput is the one measured in the last process.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from criticrm import rundir

STAGES = (rundir.CRITIQUES_DIR, rundir.FILTER_DIR, rundir.REFINE_DIR, rundir.train_dir("critic"),
          rundir.train_dir("standard"))


def load(run_dir: Path) -> dict:
    done = {}
    for stage in STAGES:
        finished = rundir.read_record(run_dir / stage).get("finished")
        if finished:
            done[stage] = finished | {"all_segments": rundir.segment_totals(run_dir / stage)}
    if "filter" not in done:
        raise SystemExit(f"{run_dir}: the filter stage has not finished yet")
    return done


def summarize(done: dict) -> dict:
    critiques, filtered = done["critiques"]["result"], done["filter"]["result"]
    refine = done.get("refine", {}).get("result", {})
    return {
        "pairs": filtered["pairs"],
        "critiques": critiques["critiques"],
        "parse_rate": critiques["parse_rate"],
        "truncated_rate": critiques["truncated_rate"],
        "label_agreement": critiques["label_agreement"]["score"]["agreement"],
        "label_agreement_by_subset": {name: row["agreement"] for name, row in filtered["by_subset"].items()},
        "instance_keep_rate": filtered["instance_keep_rate"],
        "passed": filtered["passed"], "reward_only": filtered["reward_only"], "dropped": filtered["dropped"],
        "critique_keep_rate": {side: row["keep_rate"] for side, row in filtered["critiques"].items()},
        "critique_keep_rate_of_all": {side: row["keep_rate_of_all"] for side, row in filtered["critiques"].items()},
        "refine": {key: refine.get(key) for key in ("strategy", "top_k", "model_calls", "successes", "fallbacks",
                                                     "fallback_rate", "parse_failures", "parse_failure_rate")},
        "stage_seconds": {stage: marker["seconds"] for stage, marker in done.items()},
        "stage_seconds_all_segments": {stage: (marker["all_segments"] or {}).get("seconds")
                                       for stage, marker in done.items()},
        "critique_throughput_last_process": critiques.get("this_run"),
    }


def markdown(summary: dict) -> str:
    pct = lambda value: "–" if value is None else f"{100 * value:.1f}%"  # noqa: E731
    keep, keep_all = summary["critique_keep_rate"], summary["critique_keep_rate_of_all"]
    refine = summary["refine"]
    lines = [
        "| pairs | critiques | base-model label agreement | instance keep rate | critique keep rate chosen / rejected "
        "(of passing pairs) | kept of all | refine calls | refine fallbacks | parse failures |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {summary['pairs']} | {summary['critiques']} | {pct(summary['label_agreement'])} | "
        f"{pct(summary['instance_keep_rate'])} | {pct(keep['chosen'])} / {pct(keep['rejected'])} | "
        f"{pct(keep_all['chosen'])} / {pct(keep_all['rejected'])} | {refine['model_calls']} | "
        f"{refine['fallbacks']} ({pct(refine['fallback_rate'])}) | {pct(refine['parse_failure_rate'])} |",
        "",
        "| subset | label agreement |",
        "|---|---|",
        *(f"| {name} | {pct(value)} |" for name, value in summary["label_agreement_by_subset"].items()),
        "",
        "| stage | " + " | ".join(summary["stage_seconds"]) + " |",
        "|---|" + "---|" * len(summary["stage_seconds"]),
        "| seconds (last process) | " + " | ".join(f"{s:,.0f}" for s in summary["stage_seconds"].values()) + " |",
        "| seconds (every process) | " + " | ".join("–" if s is None else f"{s:,.0f}"
                                                    for s in summary["stage_seconds_all_segments"].values()) + " |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="write the summary as JSON here")
    args = parser.parse_args()
    summary = summarize(load(args.run_dir))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))
    print(markdown(summary))


if __name__ == "__main__":
    main()
