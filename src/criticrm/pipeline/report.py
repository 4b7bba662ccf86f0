"""The data report of stage 1: how good the critiquing model is as a judge, and what the filters kept.

`write_data_report` writes `report.md` and its PNG plots into a folder. Every input is optional,
so the same function reports after filtering alone or after the whole of stage 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean

from criticrm import rundir
from criticrm.data.jsonl import read_jsonl_repairing
from criticrm.data.schema import SIDES, CritiqueRecord
from criticrm.formatting import percent, rate
from criticrm.pipeline.critique import label_agreement
from criticrm.plots import grouped_bars, pyplot, save_figure

SCORE_KINDS = (("score", "used"), ("parsed_score", "parsed"), ("probability_score", "probability"))


def _plot_scores(records: list[CritiqueRecord], path: Path) -> bool:
    plt = pyplot()
    if not records:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    bins = [x + 0.5 for x in range(0, 11)]
    for axis, (attribute, title) in zip(axes, SCORE_KINDS[1:], strict=True):
        values = [[getattr(r, attribute) for r in records if r.side == side and getattr(r, attribute) is not None]
                  for side in SIDES]
        axis.hist(values, bins=bins, color=["tab:green", "tab:red"],
                  label=[f"{side} (n={len(v)})" for side, v in zip(SIDES, values, strict=True)])
        axis.set_title(f"{title} scores")
        axis.set_xlabel("score")
        axis.set_xticks(range(1, 11))
        axis.legend(fontsize=8)
    axes[0].set_ylabel("critiques")
    save_figure(figure, path)
    return True


def _plot_agreement(tables: dict[str, dict[str, dict]], path: Path, judge: str) -> bool:
    subsets = list(next(iter(tables.values())).keys()) if tables else []
    if not subsets:
        return False
    series = {label: [table.get(s, {}).get("agreement") for s in subsets] for label, table in tables.items()}
    grouped_bars(path, subsets, series, "label agreement", f"{judge} vs human label (dashed: chance)", chance=0.5)
    return True


def _plot_filter(filter_stats: dict, path: Path) -> bool:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    labels = ["passed", "reward-only", "dropped"]
    values = [filter_stats["passed"], filter_stats["reward_only"], filter_stats["dropped"]]
    left.bar(labels, values, color=["tab:green", "tab:orange", "tab:grey"])
    left.set_title(f"pairs ({filter_stats['pairs']} in)")
    crit = filter_stats["critiques"]
    right.bar(list(SIDES), [crit[s]["keep_rate"] or 0.0 for s in SIDES], color=["tab:green", "tab:red"])
    right.set_ylim(0, 1)
    right.set_title("critique keep rate on passing pairs")
    save_figure(figure, path)
    return True


def report_from_dirs(out_dir: Path, critiques_dir: Path | None = None, filter_dir: Path | None = None,
                     refine_dir: Path | None = None, judge: str = "base model") -> Path:
    """`write_data_report` from stage folders on disk (any may be None or not exist yet)."""
    def stats(folder: Path | None, name: str) -> dict | None:
        path = folder / name if folder else None
        return json.loads(path.read_text()) if path and path.is_file() else None

    records = None
    if critiques_dir and (critiques_dir / rundir.RECORDS_FILE).is_file():
        records = [CritiqueRecord.from_dict(row) for row in read_jsonl_repairing(critiques_dir / rundir.RECORDS_FILE)]
    return write_data_report(out_dir, stats(critiques_dir, rundir.CRITIQUE_SUMMARY_FILE),
                             stats(filter_dir, rundir.FILTER_STATS_FILE), stats(refine_dir, rundir.REFINE_STATS_FILE),
                             records, judge)


def write_data_report(out_dir: Path, critique_summary: dict | None, filter_stats: dict | None,
                      refine_stats: dict | None, records: list[CritiqueRecord] | None, judge: str = "base model") -> Path:
    """Write `report.md` (+ `scores.png`, `agreement.png`, `filter.png`) into `out_dir`; return its path.

    `judge` names the model that wrote the critiques (a later self-training round's is a trained Critic-RM)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = records or []
    pairs_in = (filter_stats or {}).get("pairs") or (critique_summary or {}).get("pairs")
    lines = ["# Stage 1 data report", "",
             f"Pairs in: **{pairs_in if pairs_in is not None else 'n/a'}**; critiques: "
             f"**{len(records) or (critique_summary or {}).get('critiques', 'n/a')}**.", ""]
    lines += _judge_section(out_dir, records, critique_summary, judge)
    lines += _filter_section(out_dir, filter_stats)
    lines += _refine_section(refine_stats)
    path = out_dir / rundir.REPORT_FILE
    path.write_text("\n".join(lines))
    return path


def _judge_section(out_dir: Path, records: list[CritiqueRecord], critique_summary: dict | None,
                   judge: str) -> list[str]:
    """The critiquing model as a judge: score availability, mean scores per side, label agreement per subset."""
    lines = [f"## The {judge} as a judge", ""]
    if not records:
        if critique_summary:
            agreement = critique_summary.get("label_agreement", {})
            return lines + [f"Written score parsed: {percent(critique_summary.get('parse_rate'))}; "
                            f"probability score: {percent(critique_summary.get('probability_rate'))}.",
                            f"Label agreement: {percent(agreement.get('score', {}).get('agreement'))}.", ""]
        return lines + ["No critique records were given.", ""]
    n = len(records)
    per_side = {s: [r for r in records if r.side == s] for s in SIDES}
    lines += ["| | all | chosen | rejected |", "|---|---|---|---|"]
    for label, test in (("score written and parsed", lambda r: r.parsed_score is not None),
                        ("probability score available", lambda r: r.probability_score is not None),
                        ("no usable score", lambda r: r.score is None),
                        ("cut at max-new-tokens", lambda r: r.finish_reason == "length")):
        cells = [percent(rate(sum(map(test, rs)), len(rs))) for rs in (records, per_side["chosen"], per_side["rejected"])]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for attribute, label in SCORE_KINDS:
        cells = []
        for rs in (records, per_side["chosen"], per_side["rejected"]):
            values = [getattr(r, attribute) for r in rs if getattr(r, attribute) is not None]
            cells.append(f"{mean(values):.2f}" if values else "n/a")
        lines.append(f"| mean {label} score | " + " | ".join(cells) + " |")
    lines += ["", f"Parse-failure rate of written scores: **{percent(1 - sum(r.parsed_score is not None for r in records) / n)}**.", ""]
    tables = {label: label_agreement(records, attribute) for attribute, label in SCORE_KINDS}
    lines += ["Label agreement (pairs whose mean chosen score is above the mean rejected score; ties and "
              "unscored pairs are not agreement; 50% is chance):", "",
              "| subset | pairs | " + " | ".join(label for _, label in SCORE_KINDS) + " | ties (used score) |",
              "|---|---|" + "---|" * len(SCORE_KINDS) + "---|"]
    for subset, row in tables["used"].items():
        cells = [percent(tables[label][subset]["agreement"]) for _, label in SCORE_KINDS]
        name = f"**{subset}**" if subset == "all" else subset
        lines.append(f"| {name} | {row['pairs']} | " + " | ".join(cells) + f" | {row['tie']} |")
    lines.append("")
    if _plot_scores(records, out_dir / "scores.png"):
        lines += ["![score histograms](scores.png)", ""]
    if _plot_agreement(tables, out_dir / "agreement.png", judge):
        lines += ["![label agreement per subset](agreement.png)", ""]
    return lines


def _filter_section(out_dir: Path, filter_stats: dict | None) -> list[str]:
    """What consistency filtering kept: pairs by outcome, critiques by side, subsets."""
    lines = ["## Consistency filtering", ""]
    if not filter_stats:
        return lines + ["Not run yet.", ""]
    settings = filter_stats.get("settings", {})
    crit = filter_stats["critiques"]
    lines += [
        f"Settings: instance margin {settings.get('instance_margin')}, critique margin {settings.get('critique_margin')}, "
        f"failing pairs: {settings.get('failed_pairs')}, score: {settings.get('score_source')}.", "",
        "| pairs | count | share |", "|---|---|---|",
    ]
    total = filter_stats["pairs"]
    for label, key in (("passed the instance level (critique supervision)", "passed"),
                       ("failed the instance level", "failed_instance"), ("of which ties", "ties"),
                       ("passed, but no critique kept on a side", "no_kept_critique"),
                       ("missing a scored critique on a side", "missing"),
                       ("kept for the reward only", "reward_only"), ("dropped", "dropped"),
                       ("rows in the dataset", "rows_out")):
        lines.append(f"| {label} | {filter_stats[key]} | {percent(rate(filter_stats[key], total))} |")
    lines += ["", f"Instance keep rate: **{percent(filter_stats['instance_keep_rate'])}**.", "",
              "| critiques | records | unscored | on passing pairs | kept | keep rate |", "|---|---|---|---|---|---|"]
    for side in SIDES:
        c = crit[side]
        lines.append(f"| {side} | {c['records']} | {c['unscored']} | {c['on_passing_pairs']} | {c['kept']} | "
                     f"{percent(c['keep_rate'])} |")
    lines.append("")
    if filter_stats.get("by_subset"):
        lines += ["| subset | pairs | instance keep rate | agreement |", "|---|---|---|---|"]
        for subset, row in filter_stats["by_subset"].items():
            lines.append(f"| {subset} | {row['pairs']} | {percent(row['instance_keep_rate'])} | {percent(row['agreement'])} |")
        lines.append("")
    if _plot_filter(filter_stats, out_dir / "filter.png"):
        lines += ["![filtering](filter.png)", ""]
    return lines


def _refine_section(refine_stats: dict | None) -> list[str]:
    """What refinement did: the model's successes and fallbacks, outcome counts per side."""
    lines = ["## Refinement", ""]
    if not refine_stats:
        return lines + ["Not run yet.", ""]
    asked = refine_stats["responses_refined_by_model"]
    lines += [
        f"Strategy **{refine_stats['strategy']}**"
        + (f" (top {refine_stats['top_k']})" if refine_stats.get("top_k") else "")
        + f"; {refine_stats['supervised_pairs']} pairs with critique supervision, "
          f"{refine_stats['reward_only_pairs']} reward-only.", "",
        f"Responses refined by the model: chosen {asked['chosen']}, rejected {asked['rejected']} "
        f"({refine_stats['model_calls']} model calls). Successes: **{refine_stats['successes']}**; fallbacks to "
        f"score order / best kept critique: **{refine_stats['fallbacks']}** ({percent(refine_stats['fallback_rate'])}); "
        f"unparseable answers: {refine_stats['parse_failures']} ({percent(refine_stats['parse_failure_rate'])}).", "",
    ]
    if refine_stats.get("reordered_by_model") is not None:
        lines += [f"The model's ranking differed from the score order on {refine_stats['reordered_by_model']} "
                  f"response(s); on {refine_stats.get('echoed_example_ranking', 0)} of them it began with the worked "
                  "example's order (2, 3, 1), which a weak model may simply copy.", ""]
    if refine_stats.get("summary_score_from"):
        sources = refine_stats["summary_score_from"]
        lines += [f"Score of the merged critiques: written and parsed {sources.get('parsed', 0)}, probability score "
                  f"(no score line written) {sources.get('probability', 0)}, none {sources.get('None', 0)}.", ""]
    outcomes = sorted({o for side in SIDES for o in refine_stats["outcomes"][side]})
    lines += ["| outcome | chosen | rejected |", "|---|---|---|"]
    for outcome in outcomes:
        lines.append(f"| {outcome} | {refine_stats['outcomes']['chosen'].get(outcome, 0)} | "
                     f"{refine_stats['outcomes']['rejected'].get(outcome, 0)} |")
    out = refine_stats["critiques_out"]
    return lines + ["", f"Critiques in the dataset (supervised pairs): chosen {out['chosen']}, rejected {out['rejected']}.", ""]
