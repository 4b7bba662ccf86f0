"""The paired bootstrap that says how sure a difference between two reports on the same examples is."""

from __future__ import annotations

from pathlib import Path

import pytest

from criticrm.evaluation.eval_report import EvalReportError, compare_reports, load_examples, write_eval_report
from criticrm.evaluation.metrics import ExampleResult
from criticrm.evaluation.paired import paired_bootstrap


def results(rights: list[bool], subsets: list[str]) -> list[ExampleResult]:
    """One pair per entry, scored right (chosen above rejected) or wrong, with ids shared across calls."""
    return [ExampleResult(id=f"e{i}", subset=subset, section=None, chosen=[1.0 if right else 0.0],
                          rejected=[0.0 if right else 1.0], chosen_chars=[5], rejected_chars=[5])
            for i, (right, subset) in enumerate(zip(rights, subsets, strict=True))]


SUBSETS = ["a"] * 10 + ["b"] * 10


def test_a_model_right_everywhere_against_one_wrong_everywhere():
    paired = paired_bootstrap(results([False] * 20, SUBSETS), results([True] * 20, SUBSETS), resamples=200)
    assert (paired.n, paired.difference, paired.low, paired.high, paired.ahead) == (20, 1.0, 1.0, 1.0, 1.0)


def test_identical_reports_differ_by_exactly_nothing():
    same = results([True, False] * 10, SUBSETS)
    paired = paired_bootstrap(same, same, resamples=200)
    assert (paired.difference, paired.low, paired.high, paired.ahead) == (0.0, 0.0, 0.0, 0.0)


def test_the_interval_holds_the_difference_and_is_reproducible():
    base = results([i % 2 == 0 for i in range(20)], SUBSETS)  # 50% in both subsets
    other = results([i % 4 != 3 for i in range(20)], SUBSETS)  # 80% in a, 70% in b
    paired = paired_bootstrap(base, other, resamples=500, seed=3)
    assert paired.difference == pytest.approx(0.25)  # mean of the subsets: (0.3 + 0.2) / 2
    assert paired.low < paired.difference < paired.high and paired.low >= -1.0 and paired.high <= 1.0
    assert 0.5 < paired.ahead <= 1.0
    assert paired_bootstrap(base, other, resamples=500, seed=3) == paired


def test_stratified_resampling_keeps_a_constant_subset_constant():
    # Subset b is right in both models and subset a differs by 100% on every example, so any resample that kept
    # each subset's size gives a difference of exactly 0.5 (the mean of a's 1.0 and b's 0.0).
    base = results([False] * 10 + [True] * 10, SUBSETS)
    other = results([True] * 20, SUBSETS)
    paired = paired_bootstrap(base, other, resamples=300)
    assert (paired.low, paired.high) == (0.5, 0.5)


def test_only_common_examples_are_paired_and_foreign_data_is_refused():
    base = results([True] * 20, SUBSETS)
    paired = paired_bootstrap(base, results([True] * 20, SUBSETS)[:12], resamples=50)
    assert paired.n == 12
    stranger = [ExampleResult(id="zzz", subset="a", section=None, chosen=[1.0], rejected=[0.0],
                              chosen_chars=[1], rejected_chars=[1])]
    with pytest.raises(ValueError, match="no example id in common"):
        paired_bootstrap(base, stranger)
    moved = results([True] * 20, ["c"] * 20)
    with pytest.raises(ValueError, match="example e0 is in subset 'a' in one report and 'c'"):
        paired_bootstrap(base, moved)


def test_compare_adds_the_paired_difference_from_the_first_report(tmp_path: Path):
    write_eval_report("base", results([False] * 20, SUBSETS), tmp_path / "base", {})
    write_eval_report("better", results([True] * 20, SUBSETS), tmp_path / "better", {})
    assert [r.id for r in load_examples(tmp_path / "better")] == [f"e{i}" for i in range(20)]
    lines = compare_reports([tmp_path / "base", tmp_path / "better"], None).splitlines()
    assert "| Δ overall vs base (95% paired bootstrap) | – | +100.0 [+100.0, +100.0] on 20 |" in lines
    assert "| resamples ahead of base | – | 100% |" in lines
    (tmp_path / "better" / "examples.jsonl").unlink()  # without its examples a report is only shown side by side
    assert not any(line.startswith("| Δ overall") for line in compare_reports(
        [tmp_path / "base", tmp_path / "better"], None).splitlines())


def test_a_damaged_example_row_is_named_by_file_and_line(tmp_path: Path):
    write_eval_report("base", results([True] * 3, ["a"] * 3), tmp_path / "base", {})
    rows = tmp_path / "base" / "examples.jsonl"
    lines = rows.read_text().splitlines()
    rows.write_text("\n".join([lines[0], '{"id": "x"}', lines[2]]) + "\n")
    with pytest.raises(EvalReportError, match=r"examples\.jsonl:2: not an example row .*KeyError"):
        load_examples(tmp_path / "base")
