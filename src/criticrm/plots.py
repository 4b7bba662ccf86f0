"""Plot helpers shared by the data report and the evaluation reports (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on servers and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: Path) -> None:
    """Lay out, write (110 dpi, the size every report uses) and close a figure: an open one holds its memory."""
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    pyplot().close(figure)


def grouped_bars(path: Path, labels: list[str], series: dict[str, list[float | None]], ylabel: str, title: str,
                 chance: float | None = None) -> None:
    """One group of bars per label, one bar per series in each group, on a 0-1 axis; missing values are 0."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(max(5.0, 1.2 * len(labels) * max(1.0, len(series) / 2) + 2), 3.8))
    width = 0.8 / len(series)
    for offset, (name, values) in enumerate(series.items()):
        axis.bar([i + offset * width for i in range(len(labels))], [v or 0.0 for v in values], width=width,
                 label=name)
    if chance is not None:
        axis.axhline(chance, color="grey", linestyle="--", linewidth=1)
    axis.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(labels))])
    axis.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=8)
    save_figure(figure, path)
