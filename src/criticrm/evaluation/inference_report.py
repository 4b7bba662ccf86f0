"""The report sections of inference scaling and faithfulness (`scaling.py`, `faithfulness.py`): Markdown and
the accuracy-against-tokens plot. `eval_report` places them in report.md."""

from __future__ import annotations

from pathlib import Path

from criticrm.evaluation.faithfulness import CONDITIONS
from criticrm.formatting import percent
from criticrm.plots import pyplot, save_figure

METHOD_NOTES = {
    "mean": "mean reward of the first m critiques (the paper)",
    "vote": "mean written score of the first m critiques (a tie counts 1/2)",
    "weighted": "written scores weighted by softmax(reward) (a tie counts 1/2)",
    "adaptive": "critiques read one by one until their rewards agree; mean reward of those read",
}
CONDITION_NOTES = {
    "own": "the model's own greedy critiques",
    "empty": "an empty critique",
    "swapped": "the other response's critique",
    "opposite": "a critique of the opposite verdict",
}


def scaling_markdown(scaling: dict | None, plotted: bool) -> list[str]:
    lines = ["## Inference scaling: accuracy against critique tokens", ""]
    if not scaling:
        return lines + ["No sampled reward-model critiques were recorded (`--eval.samples M` records them).", ""]
    sections = list(scaling["rows"][0]["sections"])
    lines += [f"Every method reads the same sampled critiques (m of them, or as many as adaptive m needs: it stops "
              f"once the rewards read have a standard deviation below {scaling['adaptive_spread']:g}, reading at least "
              f"{scaling['adaptive_min']}). Tokens: generated critique tokens read, per response. Invalid: a NaN reward "
              "(mean, adaptive) or a response without any written score (votes, counted at chance).", ""]
    lines += [f"- {method}: {note}" for method, note in METHOD_NOTES.items()]
    lines += ["", "| method | m | critiques / response | tokens / response | overall | accuracy | "
              + " | ".join(sections) + " | ties | invalid |", "|---|---|---|---|---|---|" + "---|" * len(sections) + "---|---|"]
    for row in scaling["rows"]:
        tokens = "–" if row["tokens_per_response"] is None else f"{row['tokens_per_response']:.1f}"
        lines.append(f"| {row['method']} | {row['m']} | {row['critiques_per_response']:.2f} | {tokens} | "
                     f"{percent(row['overall'])} | {percent(row['accuracy'])} | "
                     + " | ".join(percent(row["sections"][s]) for s in sections) + f" | {row['ties']} | {row['invalid']} |")
    lines.append("")
    if plotted:
        lines += ["![accuracy against critique tokens](inference_scaling.png)", ""]
    return lines


def plot_scaling(scaling: dict | None, path: Path) -> bool:
    """Overall score against critique tokens per response (critiques per response when tokens are unknown),
    one line per method, adaptive m as one point."""
    if not scaling:
        return False
    rows = scaling["rows"]
    by_tokens = all(row["tokens_per_response"] is not None for row in rows)
    x_of = (lambda row: row["tokens_per_response"]) if by_tokens else (lambda row: row["critiques_per_response"])
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    figure, axis = plt.subplots(figsize=(5.6, 3.9))
    for method, style in (("mean", "-"), ("vote", "--"), ("weighted", ":")):
        points = [row for row in rows if row["method"] == method]
        axis.plot([x_of(r) for r in points], [r["overall"] for r in points], marker="o", linestyle=style, label=method)
        if method == "mean":
            for row in points:
                axis.annotate(f"m={row['m']}", (x_of(row), row["overall"]), fontsize=7, xytext=(3, 3),
                              textcoords="offset points")
    for row in (r for r in rows if r["method"] == "adaptive"):
        axis.plot([x_of(row)], [row["overall"]], marker="*", markersize=12, linestyle="none",
                  label=f"adaptive (spread < {row['spread']:g})")
    if len({x_of(r) for r in rows}) > 1:
        axis.set_xscale("log", base=2)
        axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_ylim(0, 1)
    axis.set_xlabel("critique tokens per response" if by_tokens else "critiques per response")
    axis.set_ylabel("overall score")
    axis.set_title("accuracy against inference compute")
    axis.legend(fontsize=8)
    save_figure(figure, path)
    return True


def faithfulness_markdown(faithfulness: dict | None) -> list[str]:
    if not faithfulness:
        return []
    sources = faithfulness["opposite_source"]
    lines = ["## Faithfulness of the reward to its critique", "",
             f"{faithfulness['n']} pairs scored again with another critique in place of the model's own greedy one "
             f"({faithfulness['missing']} without a record). Δ: the reward's change from the own critique's, per "
             "response; a flip: the pair's preference differs from the own critiques' one. A reward that ignores its "
             "critique moves ~0 and never flips.", "",
             "| condition | critique | n | mean \\|Δreward\\| | mean Δreward | flips | accuracy | overall |",
             "|---|---|---|---|---|---|---|---|"]
    for condition in CONDITIONS:
        row = faithfulness["conditions"][condition]
        if not row["n"]:
            lines.append(f"| {condition} | {CONDITION_NOTES[condition]} | 0 | – | – | – | – | – |")
            continue
        lines.append(f"| {condition} | {CONDITION_NOTES[condition]} | {row['n']} | {row['mean_abs_delta']:.4f} | "
                     f"{row['mean_delta']:+.4f} | {percent(row['flips'])} | {percent(row['accuracy'])} | "
                     f"{percent(row['overall'])} |")
    opposite = faithfulness["conditions"]["opposite"]
    lines += ["", f"Opposite-verdict critiques, per response: {sources['sampled']} sampled (T = 0.8) with a written "
                  f"score across the midpoint 5.5 from the greedy one's, {sources['replaced']} the greedy critique with "
                  f"its score k replaced by 11 − k (no sample disagreed), {sources['none']} none (the greedy critique "
                  "wrote no score)."]
    if opposite["n"]:
        lines.append(f"The reward moved the way the new verdict points for {percent(opposite['moved_with_verdict'])} "
                     "of those responses.")
    return lines + [""]
