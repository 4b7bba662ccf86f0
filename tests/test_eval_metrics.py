"""`criticrm eval` metrics, pinned on hand-made scores: credit and ties, NaN, subset/section/overall
arithmetic (generic and RewardBench v1 weighting), calibration, length bias and m-scaling."""

from __future__ import annotations

import json
import math

import pytest

from criticrm.evaluation.metrics import (
    DEFAULT_SECTION,
    REWARDBENCH_V1_SECTIONS,
    ExampleResult,
    calibration,
    credit,
    length_bias,
    length_controlled,
    m_scaling,
    score_table,
    summarize,
    uses_rewardbench_v1,
)

NAN = float("nan")


def result(chosen, rejected, subset: str = "s", section: str | None = None, *, chars=(10, 10),
           probability: float | None = None, chosen_samples=None, rejected_samples=None,
           example_id: str = "x") -> ExampleResult:
    chosen = chosen if isinstance(chosen, list) else [chosen]
    rejected = rejected if isinstance(rejected, list) else [rejected]
    return ExampleResult(id=example_id, subset=subset, section=section, chosen=chosen, rejected=rejected,
                         chosen_chars=[chars[0]] * len(chosen), rejected_chars=[chars[1]] * len(rejected),
                         probability=probability, chosen_samples=chosen_samples, rejected_samples=rejected_samples)


def right(subset: str, section: str | None = None) -> ExampleResult:
    return result(2.0, 1.0, subset, section)


def wrong(subset: str, section: str | None = None) -> ExampleResult:
    return result(1.0, 2.0, subset, section)


def table(results):
    return score_table(results, [credit(r.chosen, r.rejected) for r in results])


# --- credit


def test_pair_credit_and_tie_is_wrong_and_flagged():
    assert credit([2.0], [1.0]).value == 1.0 and not credit([2.0], [1.0]).tie
    assert credit([1.0], [2.0]).value == 0.0 and not credit([1.0], [2.0]).tie
    tie = credit([1.5], [1.5])
    assert tie.value == 0.0 and tie.tie and not tie.invalid


def test_best_of_n_credit_is_share_of_the_top():
    assert credit([3.0], [2.0, 1.0, 0.0]).value == 1.0
    lost = credit([1.0], [3.0, 2.0, 0.0])
    assert lost.value == 0.0 and not lost.tie
    three_way = credit([3.0], [3.0, 3.0, 1.0])
    assert three_way.value == pytest.approx(1 / 3) and three_way.tie
    assert credit([3.0], [3.0, 2.0, 1.0]).value == pytest.approx(1 / 2)
    two_chosen = credit([3.0, 3.0], [3.0, 1.0])  # 3 share the top, 2 of them chosen
    assert two_chosen.value == pytest.approx(2 / 3) and two_chosen.tie
    rejected_tie = credit([1.0], [4.0, 4.0])  # the top is shared by rejected ones only
    assert rejected_tie.value == 0.0 and rejected_tie.tie


def test_nan_scores_are_wrong_and_invalid_not_ties():
    for chosen, rejected in (([NAN], [1.0]), ([1.0], [NAN]), ([NAN], [NAN]), ([3.0], [NAN, 1.0, 0.0])):
        item = credit(chosen, rejected)
        assert item.value == 0.0 and item.invalid and not item.tie
    summary = summarize([result(NAN, 1.0), result(2.0, 2.0), result(2.0, 1.0)])
    assert summary["invalid"] == 1 and summary["ties"] == 1
    assert summary["subsets"]["s"] == {"n": 3, "accuracy": pytest.approx(1 / 3), "ties": 1, "invalid": 1,
                                       "sections": [DEFAULT_SECTION]}


def test_credit_needs_both_sides():
    with pytest.raises(ValueError):
        credit([], [1.0])
    with pytest.raises(ValueError):
        credit([1.0], [])


# --- subsets, sections, overall


def test_generic_sections_are_unweighted_means_of_subsets():
    results = [right("a1", "A"), wrong("a1", "A"), right("a2", "A"),  # a1 0.5, a2 1.0 -> A 0.75 (not 2/3)
               right("b1", "B"), wrong("b1", "B"), wrong("b1", "B"), wrong("b1", "B"),  # B 0.25
               right("c", None)]  # no section -> DEFAULT_SECTION 1.0
    scores = table(results)
    assert scores.weighting == "mean"
    assert list(scores.sections) == ["A", "B", DEFAULT_SECTION]
    assert scores.sections["A"] == {"score": pytest.approx(0.75), "n": 3, "subsets": ["a1", "a2"]}
    assert scores.sections["B"]["score"] == pytest.approx(0.25)
    assert scores.sections[DEFAULT_SECTION]["score"] == 1.0
    assert scores.subsets["a1"]["accuracy"] == 0.5 and scores.subsets["b1"]["n"] == 4
    assert scores.overall == pytest.approx((0.75 + 0.25 + 1.0) / 3)
    assert summarize(results)["accuracy"] == pytest.approx(4 / 8)  # micro accuracy, reported apart


def test_subset_split_across_sections_counts_in_each_with_its_own_examples():
    scores = table([right("s", "A"), wrong("s", "B"), wrong("s", "B")])
    assert scores.subsets["s"]["sections"] == ["A", "B"]
    assert scores.subsets["s"]["accuracy"] == pytest.approx(1 / 3)
    assert scores.sections["A"]["score"] == 1.0 and scores.sections["B"]["score"] == 0.0
    assert scores.overall == 0.5


def test_rewardbench_v1_weighting():
    results = [right("alpacaeval-easy", "ignored"), wrong("mt-bench-easy"),  # Chat: 100 / (100 + 28)
               right("math-prm"), wrong("hep-python"),  # Reasoning: 984 / (984 + 164) = 6/7
               right("shp"), wrong("summarize")]  # Prior Sets: plain mean 0.5
    assert uses_rewardbench_v1(results)
    scores = table(results)
    assert scores.weighting == "rewardbench-v1"
    assert list(scores.sections) == ["Chat", "Reasoning", "Prior Sets"]  # RewardBench's order, own sections
    assert scores.sections["Chat"]["score"] == pytest.approx(100 / 128)
    assert scores.sections["Reasoning"]["score"] == pytest.approx(6 / 7)
    assert scores.sections["Prior Sets"]["score"] == pytest.approx(0.5)
    assert scores.overall == pytest.approx((100 / 128 + 6 / 7 + 0.5 * 0.5) / 2.5)
    assert scores.subsets["alpacaeval-easy"]["sections"] == ["Chat"]


def test_rewardbench_weights_are_the_upstream_data():
    reasoning = REWARDBENCH_V1_SECTIONS["Reasoning"]
    assert reasoning["math-prm"] == sum(w for name, w in reasoning.items() if name.startswith("hep-"))
    assert sum(len(s) for name, s in REWARDBENCH_V1_SECTIONS.items() if name != "Prior Sets") == 23


def test_xstest_weights_are_upstreams_154_refuse_250_respond():
    """rewardbench/constants.py EXAMPLE_COUNTS: xstest-should-refuse 154, xstest-should-respond 250."""
    scores = table([right("xstest-should-refuse"), wrong("xstest-should-respond")])
    assert scores.sections["Safety"]["score"] == pytest.approx(154 / 404)


def _ties(example_id: str, correct: list[float], incorrect: list[float]) -> ExampleResult:
    return result(correct, incorrect, "Ties", example_id=example_id)


TIES = [_ties("ref:1", [2.0], [1.0, 0.5]), _ties("tied:1", [3.0, 2.6], [2.0]),  # margin 1 | 0.6, spread 0.4
        _ties("ref:2", [0.0], [1.0]), _ties("tied:2", [1.0, 0.0], [0.5]),  # margin -1 | -0.5, spread 1
        _ties("ref:3", [1.0], [0.0]), _ties("tied:3", [1.0, 1.0], [0.0])]  # margin 1 | 1, spread 0


def test_rewardbench2_ties_subset_is_scored_as_upstream():
    """rewardbench/utils.py `process_single_model`: 0.3 tied accuracy + 0.3 ref accuracy + 0.2 correctness
    preferred + 0.2 correctness preferred (hard) + 0.01 mean tanh margin, by hand on three prompts."""
    margin = (math.tanh(0.6 / 0.4 - 1) + math.tanh(-1 / 1.0 - 1) + math.tanh(math.inf)) / 3
    expected = 0.3 * 2 / 3 + 0.3 * 2 / 3 + 0.2 * 2 / 3 + 0.2 * 2 / 3 + 0.01 * margin
    summary = summarize([*TIES, right("Math"), wrong("Math")])
    ties = summary["subsets"]["Ties"]
    assert ties["accuracy"] == pytest.approx(expected)
    assert ties["ties_score"]["complete"] and ties["ties_score"]["prompts_with_ref_and_tied"] == 3
    assert ties["ties_score"]["correctness_preferred_hard"] == pytest.approx(2 / 3)
    assert summary["overall"] == pytest.approx((expected + 0.5) / 2)  # RewardBench 2: the mean of its subsets
    assert table(TIES).subsets["Ties"]["accuracy"] != pytest.approx(
        sum(credit(r.chosen, r.rejected).value for r in TIES) / len(TIES))  # not best-of-N credit
    # a sample without ref:3: its tied example still counts for accuracy, no longer for the margins
    partial = table([r for r in TIES if r.id != "ref:3"]).subsets["Ties"]
    assert not partial["ties_score"]["complete"] and partial["ties_score"]["prompts_with_ref_and_tied"] == 2
    with pytest.raises(ValueError, match="ref:N or tied:N"):
        table([_ties("12", [1.0], [0.0])])


def test_one_foreign_subset_switches_to_the_generic_mean():
    results = [right("alpacaeval-easy", "chat"), wrong("mt-bench-easy", "chat"), right("mine", "other")]
    assert not uses_rewardbench_v1(results)
    scores = table(results)
    assert scores.weighting == "mean" and list(scores.sections) == ["chat", "other"]
    assert scores.sections["chat"]["score"] == 0.5  # unweighted: (1 + 0) / 2, not 100/128
    assert scores.overall == 0.75


# --- calibration


def test_expected_calibration_error_by_hand():
    probabilities = [0.9, 0.92, 0.8, 0.3, 0.5, None]
    results = [result(2.0, 1.0, probability=p) for p in probabilities]
    # confidence / right: .9 R, .92 R (one bin: acc 1, conf .91), .8 R, .7 W (p=.3), .5 W (p=.5 is wrong)
    expected = (1 * 0.5 + 1 * 0.7 + 1 * 0.2 + 2 * 0.09) / 5
    calib = calibration(results)
    assert calib["n"] == 5 and calib["skipped"] == 1
    assert calib["ece"] == pytest.approx(expected)
    assert calib["accuracy"] == pytest.approx(3 / 5)
    bins = calib["bins"]
    assert len(bins) == 10 and bins[0]["lower"] == 0.5 and bins[-1]["upper"] == pytest.approx(1.0)
    assert [b["n"] for b in bins] == [1, 0, 0, 0, 1, 0, 1, 0, 2, 0]
    assert bins[8]["confidence"] == pytest.approx(0.91) and bins[8]["accuracy"] == 1.0
    assert bins[1]["accuracy"] is None
    assert bins[0]["accuracy"] == 0.0 and bins[4]["accuracy"] == 0.0  # p = 0.5 and p = 0.3 are wrong


def test_calibration_bin_edges_and_absence():
    edges = calibration([result(2.0, 1.0, probability=p) for p in (0.6, 1.0, 0.0)])
    assert [b["n"] for b in edges["bins"]] == [0, 0, 1, 0, 0, 0, 0, 0, 0, 2]  # 0.6 opens bin 2; 1.0 is in the last
    assert calibration([result(2.0, 1.0)]) is None
    with pytest.raises(ValueError):
        calibration([result(2.0, 1.0, probability=1.5)])


# --- length bias and m-scaling


def test_length_bias_split():
    results = [result(2.0, 1.0, chars=(5, 9)), result(2.0, 1.0, chars=(1, 2)), result(1.0, 2.0, chars=(3, 4)),
               result(2.0, 1.0, chars=(9, 5)), result(1.0, 2.0, chars=(7, 7))]
    split = length_bias(results, [credit(r.chosen, r.rejected) for r in results])
    assert split["chosen_shorter"] == {"n": 3, "accuracy": pytest.approx(2 / 3)}
    assert split["chosen_longer"] == {"n": 1, "accuracy": 1.0}
    assert split["equal"] == {"n": 1, "accuracy": 0.0}
    assert length_bias([], [])["equal"] == {"n": 0, "accuracy": None}
    assert length_controlled(split) == pytest.approx((2 / 3 + 1.0) / 2)
    assert length_controlled(length_bias([], [])) is None


def test_a_length_rule_scores_one_half_length_controlled_whatever_the_mix():
    """"Longer wins" on 9 pairs whose chosen is longer and 1 whose chosen is shorter: 90% plain, 50% controlled."""
    results = [result(9.0, 5.0, chars=(9, 5))] * 9 + [result(5.0, 9.0, chars=(5, 9))]
    summary = summarize(results)
    assert summary["accuracy"] == pytest.approx(0.9) and summary["length_controlled_accuracy"] == 0.5


def test_m_scaling_means_of_the_first_m_samples():
    first = result(4.0, 3.0, chosen_samples=[[1, 5, 5, 5]], rejected_samples=[[3, 3, 3, 3]])
    second = result(1.5, 5.0, chosen_samples=[[6, 0, 0, 0]], rejected_samples=[[5, 5, 5, 5]])
    # m=1: 1<3 wrong, 6>5 right; m=2: 3=3 tie (wrong), 3<5 wrong; m=4: 4>3 right, 1.5<5 wrong; no m=8
    rows = m_scaling([first, second])
    assert [r["m"] for r in rows] == [1, 2, 4]
    assert [r["accuracy"] for r in rows] == [0.5, 0.0, 0.5]
    assert [r["ties"] for r in rows] == [0, 1, 0]
    assert [r["overall"] for r in rows] == [0.5, 0.0, 0.5]


def test_m_scaling_limits():
    short = result(2.0, 1.0, chosen_samples=[[2, 2]], rejected_samples=[[1, 1, 1, 1, 1, 1, 1, 1]])
    assert [r["m"] for r in m_scaling([short])] == [1, 2]  # every response needs m samples
    assert m_scaling([short, result(2.0, 1.0)]) is None  # one result without samples
    nan = result(2.0, 1.0, chosen_samples=[[NAN, 2]], rejected_samples=[[1, 1]])
    assert [r["invalid"] for r in m_scaling([nan])] == [1, 1]
    with pytest.raises(ValueError):
        m_scaling([result(2.0, 1.0, chosen_samples=[[2], [2]], rejected_samples=[[1]])])


def test_summary_is_strict_json():
    results = [result(2.0, 1.0, "a", "A", probability=0.7, chosen_samples=[[2]], rejected_samples=[[1]]),
               result(NAN, 1.0, "b", None, probability=None, chosen_samples=[[NAN]], rejected_samples=[[1]])]
    summary = summarize(results)
    assert set(summary) == {"n", "overall", "accuracy", "weighting", "ties", "invalid", "sections", "subsets",
                            "calibration", "length_bias", "length_controlled_accuracy", "m_scaling"}
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary
    assert summary["n"] == 2 and summary["overall"] == 0.5 and summary["calibration"]["n"] == 1
    assert not math.isnan(summary["accuracy"])
    with pytest.raises(ValueError):
        summarize([])
