"""Stage 1b: the consistency-filtering rules, pinned on hand-built critique records."""

from __future__ import annotations

import json

import pytest

from criticrm.cli import main
from criticrm.data.jsonl import write_jsonl
from criticrm.data.schema import CritiqueRecord, PreferencePair
from criticrm.pipeline.filter import FilterConfig, FilterDecision, filter_critiques


def pair(pair_id: str, subset: str = "s") -> PreferencePair:
    return PreferencePair(id=pair_id, prompt=f"prompt {pair_id}", chosen="good answer", rejected="bad answer",
                          subset=subset)


def record(pair_id: str, side: str, index: int, parsed: float | None, probability: float | None = None,
           subset: str = "s") -> CritiqueRecord:
    score = parsed if parsed is not None else probability
    return CritiqueRecord(
        pair_id=pair_id, side=side, sample_index=index, critique=f"{side} critique {index} of {pair_id}",
        parsed_score=parsed, probability_score=probability, score=score,
        score_source="parsed" if parsed is not None else ("probability" if probability is not None else None),
        prompt_tokens=10, completion_tokens=5, finish_reason="stop", backend="test", model="test",
        template="general", template_hash="h", subset=subset)


def records_for(pair_id: str, chosen: list, rejected: list, subset: str = "s") -> list[CritiqueRecord]:
    """Records from score lists; an entry is a parsed score, or a (parsed, probability) tuple."""
    out = []
    for side, scores in (("chosen", chosen), ("rejected", rejected)):
        for index, value in enumerate(scores):
            parsed, probability = value if isinstance(value, tuple) else (value, None)
            out.append(record(pair_id, side, index, parsed, probability, subset))
    return out


def run(pairs, records, **settings):
    decisions, stats = filter_critiques(pairs, records, FilterConfig(**settings))
    return {d.pair.id: d for d in decisions}, stats


def scores(decision: FilterDecision, side: str) -> list[float]:
    return [c.score for c in decision.critiques(side)]


def test_instance_and_critique_level_rules():
    # chosen mean 7 > rejected mean 4: passes. Critique level: chosen kept when > 4; rejected kept when < 7.
    decisions, stats = run([pair("p")], records_for("p", [9, 8, 4, 7], [2, 7, 3, 4]))
    kept = decisions["p"]
    assert kept.supervised and kept.status == "passed"
    assert scores(kept, "chosen") == [9, 8, 7]  # 4 is not above the rejected mean 4
    assert scores(kept, "rejected") == [2, 3, 4]  # 7 is not below the chosen mean 7
    assert kept.mean_chosen == 7 and kept.mean_rejected == 4 and kept.judge_margin == 3
    assert stats["critiques"]["chosen"]["kept"] == 3 and stats["critiques"]["chosen"]["keep_rate"] == 0.75
    assert stats["critiques"]["rejected"]["kept"] == 3
    assert stats["passed"] == 1 and stats["rows_out"] == 1 and stats["instance_keep_rate"] == 1.0


def test_tie_fails_and_reversed_pair_fails():
    pairs = [pair("tie"), pair("reversed")]
    records = records_for("tie", [5, 7], [6, 6]) + records_for("reversed", [3, 3], [8, 9])
    decisions, stats = run(pairs, records)
    assert decisions["tie"].status == "tie" and not decisions["tie"].supervised
    assert decisions["reversed"].status == "failed" and not decisions["reversed"].supervised
    # reward-only rows keep every scored critique, as reward conditioning
    assert scores(decisions["reversed"], "rejected") == [8, 9]
    assert stats["failed_instance"] == 2 and stats["ties"] == 1 and stats["reward_only"] == 2
    assert stats["passed"] == 0 and stats["dropped"] == 0
    assert stats["critiques"]["chosen"]["on_passing_pairs"] == 0


def test_keep_all_supervises_every_judged_pair_with_every_scored_critique():
    pairs = [pair("agrees"), pair("reversed"), pair("missing")]
    records = (records_for("agrees", [9, 4], [2, 7]) + records_for("reversed", [3, 3], [8, 9])
               + records_for("missing", [5], [None]))
    decisions, stats = run(pairs, records, keep_all=True)
    assert set(decisions) == {"agrees", "reversed"}  # a side without a scored critique still cannot be used
    for decision in decisions.values():
        assert decision.supervised and decision.status == "passed"
    assert scores(decisions["agrees"], "chosen") == [9, 4] and scores(decisions["reversed"], "rejected") == [8, 9]
    assert stats["passed"] == 2 and stats["missing"] == 1 and stats["settings"]["keep_all"] is True
    assert FilterDecision.from_dict(json.loads(json.dumps(decisions["reversed"].to_dict()))).agrees("chosen", -1e9)


def test_drop_policy_drops_failing_pairs():
    pairs = [pair("good"), pair("bad")]
    records = records_for("good", [8], [2]) + records_for("bad", [2], [8])
    decisions, stats = run(pairs, records, failed_pairs="drop")
    assert set(decisions) == {"good"}
    assert stats["dropped"] == 1 and stats["reward_only"] == 0 and stats["rows_out"] == 1


def test_one_critique_per_response():
    decisions, _ = run([pair("p")], records_for("p", [6], [5]))
    assert scores(decisions["p"], "chosen") == [6] and scores(decisions["p"], "rejected") == [5]


def test_instance_margin():
    records = records_for("p", [6, 6], [5, 5])
    assert run([pair("p")], records, instance_margin=0.5)[0]["p"].supervised
    assert not run([pair("p")], records, instance_margin=1.0)[0]["p"].supervised  # 6 > 5 + 1 is false


def test_critique_margin_can_empty_a_side():
    # Passes the instance level (6.5 > 4.5), but with critique margin 3 no chosen critique is above 4.5 + 3.
    records = records_for("p", [7, 6], [4, 5])
    decisions, stats = run([pair("p")], records, critique_margin=3.0)
    assert decisions["p"].status == "no-kept-critique" and not decisions["p"].supervised
    assert stats["no_kept_critique"] == 1 and stats["passed"] == 0 and stats["reward_only"] == 1
    decisions, stats = run([pair("p")], records, critique_margin=1.5)  # chosen > 6, rejected < 5
    assert scores(decisions["p"], "chosen") == [7] and scores(decisions["p"], "rejected") == [4]


def test_missing_side_is_dropped_whatever_the_policy():
    records = records_for("p", [8, 9], [])
    decisions, stats = run([pair("p"), pair("absent")], records)
    assert decisions == {}
    assert stats["missing"] == 2 and stats["dropped"] == 2 and stats["rows_out"] == 0
    assert stats["by_subset"]["s"]["missing"] == 2 and stats["by_subset"]["s"]["agreement"] is None


def test_unscored_critiques_are_excluded_and_counted():
    # parsed None with a probability: usable under the default policy, not under "parsed".
    records = records_for("p", [(None, 7.5), 8, (None, None)], [3, (None, 2.0)])
    decisions, stats = run([pair("p")], records)
    assert scores(decisions["p"], "chosen") == [7.5, 8] and scores(decisions["p"], "rejected") == [3, 2.0]
    assert stats["critiques"]["chosen"]["unscored"] == 1
    decisions, stats = run([pair("p")], records, score_source="parsed")
    assert scores(decisions["p"], "chosen") == [8] and scores(decisions["p"], "rejected") == [3]
    assert stats["critiques"]["chosen"]["unscored"] == 2 and stats["critiques"]["rejected"]["unscored"] == 1
    decisions, _ = run([pair("p")], records, score_source="probability")  # only the (None, prob) ones have one
    assert scores(decisions["p"], "chosen") == [7.5] and scores(decisions["p"], "rejected") == [2.0]


def test_all_critiques_unscored_counts_as_missing():
    records = records_for("p", [(None, None)], [(None, None)])
    decisions, stats = run([pair("p")], records)
    assert decisions == {} and stats["missing"] == 1
    assert stats["critiques"]["chosen"]["unscored"] == 1


def test_per_subset_agreement_orphans_and_duplicates():
    pairs = [pair("a1", "A"), pair("a2", "A"), pair("b1", "B")]
    records = (records_for("a1", [8], [2], "A") + records_for("a2", [2], [8], "A") + records_for("b1", [5], [5], "B")
               + records_for("stranger", [1], [1]))
    records.append(record("a1", "chosen", 0, 1.0, subset="A"))  # duplicate key: the first one counts
    decisions, stats = run(pairs, records)
    assert scores(decisions["a1"], "chosen") == [8]
    assert stats["orphan_records"] == 2
    assert stats["by_subset"]["A"] == {"pairs": 2, "passed": 1, "agree": 1, "tie": 0, "missing": 0,
                                       "agreement": 0.5, "instance_keep_rate": 0.5}
    assert stats["by_subset"]["B"]["tie"] == 1 and stats["by_subset"]["B"]["agreement"] == 0.0


def test_decisions_round_trip_and_keep_input_order():
    pairs = [pair("z"), pair("a")]
    records = records_for("z", [8], [2]) + records_for("a", [2], [8])
    decisions, _ = filter_critiques(pairs, records, FilterConfig())
    assert [d.pair.id for d in decisions] == ["z", "a"]
    assert [FilterDecision.from_dict(json.loads(json.dumps(d.to_dict()))) for d in decisions] == decisions


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError):
        FilterConfig(failed_pairs="keep")
    with pytest.raises(ValueError):
        FilterConfig(score_source="best")


def test_filter_and_refine_commands_write_outputs_and_report(tmp_path, capsys):
    critiques = tmp_path / "critiques"
    critiques.mkdir()
    pairs = [pair("a", "A"), pair("b", "B"), pair("c", "B")]
    records = (records_for("a", [8, (None, 6.5)], [2, 3], "A") + records_for("b", [2, 3], [8, 9], "B")
               + records_for("c", [7], [], "B"))
    write_jsonl(critiques / "pairs.jsonl", [p.to_dict() for p in pairs])
    write_jsonl(critiques / "critiques.jsonl", [r.to_dict() for r in records])
    out = tmp_path / "filtered"
    assert main(["filter", "--critiques", str(critiques), "--out", str(out), "--failed-pairs", "drop"]) == 0
    stats = json.loads((out / "filter_stats.json").read_text())
    assert (stats["passed"], stats["dropped"], stats["missing"]) == (1, 2, 1)
    rows = [json.loads(line) for line in (out / "filtered.jsonl").read_text().splitlines()]
    assert [r["pair"]["id"] for r in rows] == ["a"]
    report = (out / "report.md").read_text()
    assert "Instance keep rate: **33.3%**" in report and (out / "scores.png").is_file()
    assert "Not run yet." in report  # refinement section
    assert "passed the instance level: 1" in capsys.readouterr().out
    # a folder that is not a critique folder: one clear error, exit status 2
    assert main(["filter", "--critiques", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    # then refine (no model needed for --strategy none): the dataset and the full report
    refined = tmp_path / "refined"
    assert main(["refine", "--in", str(out), "--out", str(refined), "--strategy", "none"]) == 0
    rows = [json.loads(line) for line in (refined / "train.jsonl").read_text().splitlines()]
    assert [(r["id"], r["critique_supervision"], len(r["chosen_critiques"])) for r in rows] == [("a", True, 2)]
    report = (refined / "report.md").read_text()
    assert "Strategy **none**" in report and "Instance keep rate" in report and "| **all** | 3 |" in report
    assert main(["refine", "--in", str(tmp_path / "nowhere"), "--out", str(refined)]) == 2
