"""The report of a correction run: report.json (for programs) and report.md (for people), in the run folder.

report.json is written last, so its presence means the run is complete. The per-revision rows (each
critique, revision and answer read from it) stay in the progress files beside it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from criticrm import rundir
from criticrm.data.jsonl import write_text_atomic
from criticrm.formatting import percent

REPORT_KIND = "criticrm-correction-report"
CONDITION_NAMES = {"critic": "Critic-RM critique", "base": "base-model critique", "none": "no critique"}


def write_report(out_dir: Path, meta: dict, conditions: dict[str, dict], best_of: dict | None) -> dict:
    report = {"kind": REPORT_KIND, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "meta": meta, "conditions": conditions, "best_of": best_of}
    write_text_atomic(Path(out_dir) / rundir.REPORT_FILE, markdown(report))
    write_text_atomic(Path(out_dir) / rundir.REPORT_JSON, json.dumps(report, indent=2, ensure_ascii=False))
    return report


def _revision_line(label: str, stats: dict) -> str:
    return (f"| {label} | {stats['revisions']} | {percent(stats['accuracy_before'])} | "
            f"{percent(stats['accuracy_after'])} | {percent(stats['delta_up'])} ({stats['fixed']}/"
            f"{stats['started_wrong']}) | {percent(stats['delta_down'])} ({stats['broken']}/{stats['started_right']}) | "
            f"{percent(stats['no_answer'])} |")


def markdown(report: dict) -> str:
    meta = report["meta"]
    skipped = ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in sorted(meta["skipped"].items()))
    lines = [
        "# Critique-driven correction", "",
        f"Reward model `{meta['model']}`; reviser: {meta['reviser']} ({meta['reviser_backend']}); data "
        f"`{meta['data']}`, subsets {meta['subsets'] or 'all'}: {meta['problems']} problems"
        f"{f' (skipped: {skipped})' if skipped else ''}.",
        "",
        "Each problem is revised twice per condition: from its wrong (rejected) solution and from its right "
        "(chosen) one. Δ↑ = wrong → right among the wrong starts, Δ↓ = right → wrong among the right starts; "
        "a revision whose final answer cannot be read counts as wrong (column *no answer*).", "",
        "| condition | revisions | accuracy before | accuracy after | Δ↑ (fixed) | Δ↓ (broken) | no answer |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_revision_line(CONDITION_NAMES[name], stats["overall"]) for name, stats in report["conditions"].items()]
    for name, stats in report["conditions"].items():
        lines += ["", f"## {CONDITION_NAMES[name]}, per subset", "",
                  "| subset | revisions | accuracy before | accuracy after | Δ↑ (fixed) | Δ↓ (broken) | no answer |",
                  "|---|---|---|---|---|---|---|"]
        lines += [_revision_line(subset, row) for subset, row in stats["subsets"].items()]
    if report["best_of"]:
        lines += ["", "## Critique-guided best-of-N", "",
                  f"{meta['best_of_k']} solutions per problem sampled from the reviser; at each k the first k are "
                  "considered: the reward model's pick, any of them right (oracle), the majority answer.", ""]
        lines += _best_of_table("all", report["best_of"]["overall"])
        for subset, stats in report["best_of"]["subsets"].items():
            lines += _best_of_table(subset, stats)
    seconds = ", ".join(f"{name} {value:.0f} s" for name, value in meta["seconds"].items())
    lines += ["", f"Time spent (all runs of this folder): {seconds}.", ""]
    return "\n".join(lines)


def _best_of_table(label: str, stats: dict) -> list[str]:
    ks = [key for key in stats if key != "problems"]
    return [f"**{label}** ({stats['problems']} problems)", "",
            "| k | reward pick | oracle | majority |", "|---|---|---|---|",
            *(f"| {k} | {percent(stats[k]['reward'])} | {percent(stats[k]['oracle'])} | "
              f"{percent(stats[k]['majority'])} |" for k in ks), ""]
