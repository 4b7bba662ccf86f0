"""Self-training rounds side by side: what each round's critiques, filters, refinement, training and evaluation
gave, as `rounds.json`, a section of the run's `report.md` and a plot (`rounds.png`).

Everything is read back from the stage folders each round left (`criticrm.rundir.round_dir`), so a resumed
run reports exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
from pathlib import Path

from criticrm import rundir
from criticrm.data.schema import SIDES
from criticrm.formatting import percent
from criticrm.plots import grouped_bars


def _read(folder: Path, name: str) -> dict:
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else {}


def round_numbers(round_dir: Path, round_number: int) -> dict:
    """One round's numbers, from the stage folders in `round_dir` (`criticrm.rundir.round_dir`)."""
    critiques = _read(round_dir / rundir.CRITIQUES_DIR, rundir.CRITIQUE_SUMMARY_FILE)
    kept = _read(round_dir / rundir.FILTER_DIR, rundir.FILTER_STATS_FILE)
    refined = _read(round_dir / rundir.REFINE_DIR, rundir.REFINE_STATS_FILE)
    training = _read(round_dir / rundir.train_dir("critic"), rundir.TRAIN_SUMMARY_FILE)
    evaluation = _read(round_dir / rundir.eval_dir("critic"), rundir.REPORT_JSON).get("summary")
    agreement = critiques.get("label_agreement", {})
    metrics = training.get("final_metrics") or {}
    return {
        "round": round_number,
        "folder": str(round_dir),
        "critiques_by": rundir.read_record(round_dir / rundir.CRITIQUES_DIR).get("settings", {}).get("model"),
        "critiques": {
            "count": critiques.get("critiques"),
            "label_agreement": {kind: agreement.get(kind, {}).get("agreement") for kind in ("score", "parsed", "probability")},
            "parse_rate": critiques.get("parse_rate"),
            "truncated_rate": critiques.get("truncated_rate"),
        },
        "filter": {
            "pairs": kept.get("pairs"),
            "instance_keep_rate": kept.get("instance_keep_rate"),
            "critique_keep_rate": {side: kept.get("critiques", {}).get(side, {}).get("keep_rate") for side in SIDES},
        },
        "refine": {"model": rundir.read_record(round_dir / rundir.REFINE_DIR).get("settings", {}).get("model"),
                   **{key: refined.get(key) for key in ("strategy", "supervised_pairs", "model_calls", "successes",
                                                        "fallbacks", "fallback_rate", "parse_failure_rate",
                                                        "critiques_out")}},
        "training": {
            "model": training.get("model"),
            "head_from": training.get("head_from"),
            "steps": training.get("steps"),
            "held_out_pairs": metrics.get("eval_pairs"),
            "held_out_accuracy": metrics.get("eval_accuracy"),
            "model_dir": training.get("model_dir"),
        },
        "evaluation": None if evaluation is None else {
            "n": evaluation.get("n"),
            "overall": evaluation.get("overall"),
            "length_controlled_accuracy": evaluation.get("length_controlled_accuracy"),
            "sections": {name: row.get("score") for name, row in evaluation.get("sections", {}).items()},
        },
    }


def write_rounds_report(run_dir: Path, rounds: list[dict], round_init: str) -> Path:
    """Write `rounds.json` and `rounds.png`, and append the rounds section to the run's `report.md` (which the
    pipeline writes afresh on every run, so the section is never there twice); returns `rounds.json`."""
    run_dir = Path(run_dir)
    path = run_dir / rundir.ROUNDS_FILE
    path.write_text(json.dumps({"round_init": round_init, "rounds": rounds}, indent=2))
    lines = _section(rounds, round_init)
    if _plot(rounds, run_dir / rundir.ROUNDS_PLOT):
        lines += [f"![each round]({rundir.ROUNDS_PLOT})", ""]
    report = run_dir / rundir.REPORT_FILE
    before = report.read_text() if report.is_file() else ""
    report.write_text(before.rstrip("\n") + "\n\n" + "\n".join(lines))
    return path


def _rows(rounds: list[dict]) -> list[tuple[str, list[str]]]:
    """(label, one cell per round) for the table of the report."""
    def cells(get) -> list[str]:
        return [get(r) for r in rounds]

    def share(get) -> list[str]:
        return cells(lambda r: percent(get(r)))

    rows = [
        ("critiques written by", cells(lambda r: str(r["critiques_by"]))),
        ("critiques", cells(lambda r: str(r["critiques"]["count"]))),
        ("label agreement (score used)", share(lambda r: r["critiques"]["label_agreement"]["score"])),
        ("label agreement (written scores)", share(lambda r: r["critiques"]["label_agreement"]["parsed"])),
        ("written score parsed", share(lambda r: r["critiques"]["parse_rate"])),
        ("instance keep rate", share(lambda r: r["filter"]["instance_keep_rate"])),
        *((f"critique keep rate, {side}", share(lambda r, side=side: r["filter"]["critique_keep_rate"][side]))
          for side in SIDES),
        ("refinement: successes / fallbacks", cells(lambda r: f"{r['refine']['successes']} / {r['refine']['fallbacks']}")),
        ("refinement: unparseable answers", share(lambda r: r["refine"]["parse_failure_rate"])),
        ("Critic-RM trained from", cells(lambda r: str(r["training"]["model"])
                                         + (" and its reward head" if r["training"]["head_from"] else ""))),
        ("held-out accuracy (pairs)", cells(lambda r: f"{percent(r['training']['held_out_accuracy'])} "
                                                      f"({r['training']['held_out_pairs'] or 0})")),
    ]
    if any(r["evaluation"] for r in rounds):
        def evaluated(key: str):
            return share(lambda r: (r["evaluation"] or {}).get(key))

        rows += [("evaluation: **overall**", evaluated("overall")),
                 ("evaluation: length-controlled accuracy", evaluated("length_controlled_accuracy"))]
        sections = sorted({name for r in rounds for name in (r["evaluation"] or {}).get("sections", {})})
        rows += [(f"evaluation: {name}", share(lambda r, name=name: (r["evaluation"] or {}).get("sections", {}).get(name)))
                 for name in sections]
    return rows


def _section(rounds: list[dict], round_init: str) -> list[str]:
    trained_from = ("the base backbone with a fresh reward head" if round_init == "base" else
                    "the Critic-RM of the round before (reward head included)")
    lines = ["## Self-training rounds", "",
             f"{len(rounds)} rounds. Round 1 is the run above; each later round k (folder `round-k/`, with its own "
             "data report) sampled its critiques with round k-1's Critic-RM, used as a causal LM, and refined them "
             f"with it too, then trained a Critic-RM from {trained_from} (`run.round_init: {round_init}`). The "
             "standard RM (when the run trains one) is trained once, in round 1: its data has no critiques, so a "
             "round changes nothing for it.",
             "", "| | " + " | ".join(f"round {r['round']}" for r in rounds) + " |",
             "|---|" + "---|" * len(rounds)]
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in _rows(rounds)]
    return lines + [""]


def _plot(rounds: list[dict], path: Path) -> bool:
    """One group of bars per number that changes with the rounds, one bar per round."""
    numbers = {
        "label agreement": lambda r: r["critiques"]["label_agreement"]["score"],
        "instance keep rate": lambda r: r["filter"]["instance_keep_rate"],
        "held-out accuracy": lambda r: r["training"]["held_out_accuracy"],
        "eval overall": lambda r: (r["evaluation"] or {}).get("overall"),
        "eval length-controlled": lambda r: (r["evaluation"] or {}).get("length_controlled_accuracy"),
    }
    shown = {label: get for label, get in numbers.items() if any(get(r) is not None for r in rounds)}
    if not shown:
        return False
    grouped_bars(path, list(shown), {f"round {r['round']}": [get(r) for get in shown.values()] for r in rounds},
                 "share", "each self-training round (dashed: chance)", chance=0.5)
    return True
