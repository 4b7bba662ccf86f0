"""The evaluation report of `criticrm eval`, and the side-by-side comparison of several of them.

`write_eval_report` writes into one folder: `report.json` (the summary of `metrics.summarize` plus the
run's metadata: what a comparison reads), `report.md` (the same for people), `examples.jsonl` (one row
per example: scores, credit, tie, critiques, so every number can be recomputed or inspected), and PNG
plots. `report.json` is written last, so its presence means the folder is complete.
`compare_reports` puts several `report.json` files side by side and, where their `examples.jsonl` are
there, says how sure each difference from the first report is (`paired.py`).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from criticrm import rundir
from criticrm.data.jsonl import write_jsonl
from criticrm.errors import CriticRMError
from criticrm.evaluation.faithfulness import faithfulness_summary
from criticrm.evaluation.inference_report import faithfulness_markdown, plot_scaling, scaling_markdown
from criticrm.evaluation.metrics import CALIBRATION_BINS, ExampleResult, credit, summarize
from criticrm.evaluation.paired import PairedDifference, paired_bootstrap
from criticrm.evaluation.scaling import DEFAULT_ADAPTIVE_SPREAD, inference_scaling
from criticrm.formatting import percent
from criticrm.plots import grouped_bars, pyplot, save_figure

REPORT_KIND = "criticrm-eval-report"
FORMAT_VERSION = 1
MISSING = "–"
WEIGHTING_NOTE = {
    "rewardbench-v1": "RewardBench v1 weighting: subsets weighted by RewardBench's example counts within a "
                      "section, Prior Sets weighted 0.5 against the other sections",
    "mean": "a section is the unweighted mean of its subsets, the overall score the mean of the sections",
}


class EvalReportError(CriticRMError):
    """A file given for comparison is missing or is not a `report.json` written by `criticrm eval`."""


def write_eval_report(name: str, results: list[ExampleResult], out_dir: Path, meta: dict,
                      adaptive_spread: float = DEFAULT_ADAPTIVE_SPREAD) -> dict:
    """Write report.json, report.md, examples.jsonl and the plots into `out_dir`; return the summary.

    The summary is `metrics.summarize` with inference scaling (adaptive m stopping below `adaptive_spread`)
    and faithfulness added, each None where the results hold nothing to compute it from."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(results) | {"inference_scaling": inference_scaling(results, adaptive_spread),
                                    "faithfulness": faithfulness_summary(results)}
    write_jsonl(out_dir / rundir.EXAMPLES_FILE, (_json_safe(_example_row(r)) for r in results))
    plots = {"sections": _plot_sections(summary, out_dir / "sections.png"),
             "calibration": _plot_calibration(summary["calibration"], out_dir / "calibration.png"),
             "m_scaling": _plot_m_scaling(summary["m_scaling"], out_dir / "m_scaling.png"),
             "inference_scaling": plot_scaling(summary["inference_scaling"], out_dir / "inference_scaling.png")}
    report = {"kind": REPORT_KIND, "format_version": FORMAT_VERSION, "name": name,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "meta": meta, "summary": summary}
    report = _json_safe(report)
    (out_dir / rundir.REPORT_FILE).write_text(_markdown(report, plots), encoding="utf-8")
    (out_dir / rundir.REPORT_JSON).write_text(json.dumps(report, indent=2, default=str, ensure_ascii=False),
                                         encoding="utf-8")
    return summary


def report_path(path: Path) -> Path:
    """`path` itself, or the `report.json` inside it when it is a folder."""
    path = Path(path)
    return path / rundir.REPORT_JSON if path.is_dir() else path


def load_report(path: Path) -> dict:
    """A `report.json` (or a folder holding one), checked to be a criticrm eval report."""
    path = report_path(path)
    if not path.is_file():
        raise EvalReportError(f"{path}: no such file (expected a report.json written by `criticrm eval`)")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EvalReportError(f"{path}: not a criticrm eval report (not JSON: {error})") from error
    if (not isinstance(report, dict) or report.get("kind") != REPORT_KIND
            or not isinstance(report.get("summary"), dict) or "sections" not in report["summary"]):
        raise EvalReportError(f'{path}: not a criticrm eval report (no "kind": "{REPORT_KIND}" with a summary)')
    return report


def load_examples(path: Path) -> list[ExampleResult] | None:
    """The per-example results beside a `report.json` (its `examples.jsonl`); None if that file is gone.

    Everything `summarize` reads comes back (scores, lengths, probability, per-critique samples) with
    the details, so a stored run can be re-summarized or re-read (`judges.revote_pairwise`).
    """
    rows_file = report_path(path).parent / rundir.EXAMPLES_FILE
    if not rows_file.is_file():
        return None

    def scores(values: list) -> list[float]:
        return [math.nan if value is None else float(value) for value in values]

    def samples(values: list | None) -> list[list[float]] | None:
        return None if values is None else [scores(response) for response in values]

    results = []
    for line_number, line in enumerate(rows_file.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
            results.append(ExampleResult(id=str(row["id"]), subset=row["subset"], section=row.get("section"),
                                         chosen=scores(row["chosen"]), rejected=scores(row["rejected"]),
                                         chosen_chars=row["chosen_chars"], rejected_chars=row["rejected_chars"],
                                         probability=row.get("probability"),
                                         chosen_samples=samples(row.get("chosen_samples")),
                                         rejected_samples=samples(row.get("rejected_samples")),
                                         details=row.get("details") or {}))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise EvalReportError(f"{rows_file}:{line_number}: not an example row of `criticrm eval` "
                                  f"({type(error).__name__}: {error})") from None
    return results


def compare_reports(paths: list[Path], out: Path | None = None) -> str:
    """A Markdown table of several reports side by side: rows overall, sections, subsets; columns models.

    A cell a report lacks shows "–". Every report after the first also gets its overall difference from
    the first with a 95% paired bootstrap interval, when both folders still hold their `examples.jsonl`
    and share example ids. With `out` (a folder), also writes `compare.md` and a grouped bar chart of the
    section scores, `sections_compare.png`.
    """
    if not paths:
        raise EvalReportError("no reports to compare")
    files = [report_path(p) for p in paths]
    reports = [load_report(f) for f in files]
    names = [str(r["name"]) for r in reports]
    columns = [f"{n} ({f.resolve().parent.name})" if names.count(n) > 1 else n
               for n, f in zip(names, files, strict=True)]
    summaries = [r["summary"] for r in reports]
    sections = _union(list(s.get("sections", {})) for s in summaries)
    subsets = _union(list(s.get("subsets", {})) for s in summaries)

    def row(label: str, cells: list) -> str:
        return f"| {label} | " + " | ".join(MISSING if c is None else str(c) for c in cells) + " |"

    lines = ["| | " + " | ".join(_cell(c) for c in columns) + " |", "|---|" + "---|" * len(columns),
             row("**overall**", [_percent(s.get("overall")) for s in summaries]),
             row("length-controlled accuracy", [_percent(s.get("length_controlled_accuracy")) for s in summaries]),
             row("n", [s.get("n") for s in summaries]),
             row("weighting", [s.get("weighting") for s in summaries])]
    differences = _differences_from_first(files)
    if any(differences):
        lines += [row(f"Δ overall vs {_cell(columns[0])} (95% paired bootstrap)", [_difference(d) for d in differences]),
                  row(f"resamples ahead of {_cell(columns[0])}", [_ahead(d) for d in differences])]
    lines += [row(f"**{_cell(name)}**", [_percent(s.get("sections", {}).get(name, {}).get("score")) for s in summaries])
              for name in sections]
    lines += [row(_cell(name), [_percent(s.get("subsets", {}).get(name, {}).get("accuracy")) for s in summaries])
              for name in subsets]
    table = "\n".join(lines) + "\n"
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        text = "# Evaluation comparison\n\n" + table
        if _plot_compare(columns, sections, summaries, out / "sections_compare.png"):
            text += "\n![section scores per model](sections_compare.png)\n"
        (out / rundir.COMPARE_FILE).write_text(text, encoding="utf-8")
    return table


def _differences_from_first(files: list[Path]) -> list[PairedDifference | None]:
    """None for the first report and for any report whose examples cannot be paired with the first's."""
    base = load_examples(files[0]) if len(files) > 1 else None
    differences: list[PairedDifference | None] = [None]
    for file in files[1:]:
        other = load_examples(file) if base else None
        try:
            differences.append(paired_bootstrap(base, other) if other else None)
        except ValueError:  # no common example ids: not the same evaluation data
            differences.append(None)
    return differences


def _difference(paired: PairedDifference | None) -> str | None:
    if paired is None:
        return None
    return f"{100 * paired.difference:+.1f} [{100 * paired.low:+.1f}, {100 * paired.high:+.1f}] on {paired.n}"


def _ahead(paired: PairedDifference | None) -> str | None:
    return None if paired is None else f"{100 * paired.ahead:.0f}%"


def _example_row(result: ExampleResult) -> dict:
    item = credit(result.chosen, result.rejected)
    return {"id": result.id, "subset": result.subset, "section": result.section,
            "chosen": result.chosen, "rejected": result.rejected, "credit": item.value, "tie": item.tie,
            "invalid": item.invalid, "probability": result.probability, "chosen_chars": result.chosen_chars,
            "rejected_chars": result.rejected_chars, "chosen_samples": result.chosen_samples,
            "rejected_samples": result.rejected_samples, "details": result.details}


def _json_safe(value):
    """NaN and infinities become null: strict JSON readers (and `jq`) reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


MARGIN_NOTES = {  # by the reward model's `training_margin`; "none" (the human label alone) needs no note
    "data": "Trained with the data's own per-pair margins (its margin column).",
    "judge": "**Trained with judge-derived margins** (the base model's critique-score gap offset the Bradley-Terry "
             "loss): an ablation, not the method.",
    None: "**Trained before margins were recorded**: such models used the base judge's critique-score gap as a "
          "Bradley-Terry margin.",
}


def _margin_note(meta: dict) -> list[str]:
    """Say it when a reward model's loss was offset by a margin; judges' reports have no `training_margin`."""
    if "training_margin" not in meta or meta["training_margin"] not in MARGIN_NOTES:
        return []
    return ["", MARGIN_NOTES[meta["training_margin"]]]


def _markdown(report: dict, plots: dict[str, bool]) -> str:
    summary = report["summary"]
    lines = [f"# Evaluation report: {report['name']}", "", "| | |", "|---|---|",
             f"| created | {report['created']} |"]
    lines += [f"| {_cell(key)} | {_cell(json.dumps(value, default=str) if isinstance(value, dict | list) else value)} |"
              for key, value in report["meta"].items()]
    lines += _margin_note(report["meta"])
    lines += ["", f"**Overall: {percent(summary['overall'])}** on {summary['n']} examples "
                  f"({WEIGHTING_NOTE[summary['weighting']]}). Accuracy over all examples alike: "
                  f"{percent(summary['accuracy'])}. Ties: {summary['ties']} (a tied pair counts as wrong, a k-way "
                  f"tie for the top of a list gets 1/k per chosen response in it). Invalid (a NaN score, counted "
                  f"wrong): {summary['invalid']}.", ""]

    lines += ["## Sections", "", "| section | subsets | n | score |", "|---|---|---|---|"]
    lines += [f"| {_cell(name)} | {len(row['subsets'])} | {row['n']} | {percent(row['score'])} |"
              for name, row in summary["sections"].items()]
    lines.append("")
    if plots["sections"]:
        lines += ["![section scores](sections.png)", ""]

    lines += ["## Subsets", "", "| subset | section | n | accuracy | ties | invalid |", "|---|---|---|---|---|---|"]
    lines += [f"| {_cell(name)} | {_cell(', '.join(row['sections']))} | {row['n']} | {percent(row['accuracy'])} | "
              f"{row['ties']} | {row['invalid']} |" for name, row in summary["subsets"].items()]
    lines.append("")

    lines += ["## Calibration", ""]
    calib = summary["calibration"]
    if calib:
        lines += [f"Expected calibration error **{calib['ece']:.4f}** over {calib['n']} examples with a probability "
                  f"({calib['skipped']} without); accuracy of p > 0.5: {percent(calib['accuracy'])}, mean confidence "
                  f"{percent(calib['mean_confidence'])}. {CALIBRATION_BINS} equal bins of confidence max(p, 1 − p).", "",
                  "| confidence | n | mean confidence | accuracy |", "|---|---|---|---|"]
        lines += [f"| {b['lower']:.2f}–{b['upper']:.2f} | {b['n']} | {percent(b['confidence'])} | {percent(b['accuracy'])} |"
                  for b in calib["bins"]]
        lines.append("")
        if plots["calibration"]:
            lines += ["![reliability diagram](calibration.png)", ""]
    else:
        lines += ["No example has a preference probability.", ""]

    lines += ["## Length bias", "", "Accuracy by the length in characters of the (first) chosen response against "
              "the (first) rejected one; a judge that rewards length does much better when the chosen one is longer.",
              "", "| chosen response | n | accuracy |", "|---|---|---|"]
    labels = {"chosen_shorter": "shorter", "chosen_longer": "longer", "equal": "same length"}
    lines += [f"| {labels[key]} | {row['n']} | {percent(row['accuracy'])} |" for key, row in summary["length_bias"].items()]
    lines += ["", f"Length-controlled accuracy (the mean of the shorter and longer rows; any length rule scores 50%): "
                  f"**{percent(summary.get('length_controlled_accuracy'))}**.", ""]

    lines += ["## Accuracy against the number of critiques (m)", ""]
    if summary["m_scaling"]:
        lines += ["Each response scored by the mean of its first m critiques.", "",
                  "| m | accuracy | overall | ties | invalid |", "|---|---|---|---|---|"]
        lines += [f"| {r['m']} | {percent(r['accuracy'])} | {percent(r['overall'])} | {r['ties']} | {r['invalid']} |"
                  for r in summary["m_scaling"]]
        lines.append("")
        if plots["m_scaling"]:
            lines += ["![accuracy against m](m_scaling.png)", ""]
    else:
        lines += ["No per-critique scores were recorded.", ""]
    lines += scaling_markdown(summary.get("inference_scaling"), plots["inference_scaling"])
    lines += faithfulness_markdown(summary.get("faithfulness"))
    return "\n".join(lines)


def _cell(value) -> str:
    """Text safe inside a Markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _percent(value: float | None) -> str | None:
    return None if value is None else percent(value)


def _union(groups) -> list[str]:
    """Names in order of first appearance across the reports."""
    return list(dict.fromkeys(name for group in groups for name in group))


def _plot_sections(summary: dict, path: Path) -> bool:
    plt = pyplot()
    names = list(summary["sections"])
    figure, axis = plt.subplots(figsize=(max(4.5, 1.1 * len(names) + 2), 3.6))
    axis.bar(names, [summary["sections"][n]["score"] for n in names], color="tab:blue")
    axis.axhline(summary["overall"], color="black", linestyle="--", linewidth=1,
                 label=f"overall {percent(summary['overall'])}")
    axis.set_ylim(0, 1)
    axis.set_ylabel("score")
    axis.set_title("section scores")
    axis.tick_params(axis="x", labelrotation=20, labelsize=8)
    axis.legend(fontsize=8)
    save_figure(figure, path)
    return True


def _plot_calibration(calib: dict | None, path: Path) -> bool:
    if not calib:
        return False
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(4.6, 4.2))
    width = calib["bins"][0]["upper"] - calib["bins"][0]["lower"]
    filled = [b for b in calib["bins"] if b["n"]]
    axis.bar([b["lower"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
             edgecolor="black", color="tab:blue", label="accuracy")
    axis.plot([0.5, 1], [0.5, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    axis.set_xlim(0.5, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("confidence max(p, 1 − p)")
    axis.set_ylabel("accuracy")
    axis.set_title(f"reliability (ECE {calib['ece']:.3f}, n={calib['n']})")
    axis.legend(fontsize=8, loc="lower right")
    save_figure(figure, path)
    return True


def _plot_m_scaling(rows: list[dict] | None, path: Path) -> bool:
    if not rows:
        return False
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(4.6, 3.6))
    ms = [r["m"] for r in rows]
    axis.plot(ms, [r["accuracy"] for r in rows], marker="o", label="accuracy")
    axis.plot(ms, [r["overall"] for r in rows], marker="s", label="overall")
    axis.set_xscale("log", base=2)
    axis.set_xticks(ms, [str(m) for m in ms])
    axis.set_ylim(0, 1)
    axis.set_xlabel("critiques averaged per response (m)")
    axis.set_ylabel("score")
    axis.legend(fontsize=8)
    save_figure(figure, path)
    return True


def _plot_compare(columns: list[str], sections: list[str], summaries: list[dict], path: Path) -> bool:
    if not sections:
        return False
    labels = ["overall", *sections]
    series = {column: [summary.get("overall")] + [summary.get("sections", {}).get(s, {}).get("score") for s in sections]
              for column, summary in zip(columns, summaries, strict=True)}
    grouped_bars(path, labels, series, "score", "section scores per model")
    return True
