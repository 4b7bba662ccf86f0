"""Stage 1c: ranking / summarizing the kept critiques, parsing the meta-judge, resume, dataset output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from criticrm.data.schema import PreferencePair, ScoredCritique, TrainingPair
from criticrm.errors import ConfigError
from criticrm.generation.base import Completion, ProbabilityScore
from criticrm.pipeline.filter import FilterDecision
from criticrm.pipeline.refine import (
    RefineConfig,
    clean_summary,
    complete_order,
    parse_ranking,
    refine_batch,
    refine_stats,
    run_refine,
    strength_order,
)
from criticrm.prompts.refine import (
    SUMMARIZE_EXAMPLE_ANSWER,
    copies_example,
    rank_messages,
    summarize_messages,
)
from criticrm.prompts.scores import parse_score
from criticrm.training.data import load_training_pairs

FIXTURES = Path(__file__).parent / "fixtures"


class ScriptedGenerator:
    """A generator whose answer to a conversation is `respond(messages)`; it records every call."""

    backend, model_name = "scripted", "scripted"

    def __init__(self, respond, probability: float | None = None):
        self.respond = respond
        self.probability = probability
        self.conversations = []

    def generate(self, conversations, sampling, score_prefix=None):
        self.conversations.extend(conversations)
        probability = ProbabilityScore(self.probability, 0.9) if self.probability and score_prefix else None
        return [[Completion(text=self.respond(c), prompt_tokens=1, completion_tokens=1, finish_reason="stop",
                            probability=probability)] for c in conversations]


def decision(pair_id: str, chosen: list[float], rejected: list[float], supervised: bool = True,
             critique_margin: float = 0.0) -> FilterDecision:
    """A filter decision whose critique texts name their side and score ("chosen 8")."""
    all_chosen, all_rejected = chosen + ([1.0] if supervised else []), rejected + ([10.0] if supervised else [])
    return FilterDecision(
        pair=PreferencePair(id=pair_id, prompt=f"prompt {pair_id}", chosen="yes", rejected="no", subset="s"),
        status="passed" if supervised else "failed", supervised=supervised, template="general",
        chosen=[ScoredCritique(f"chosen {s:g}", s) for s in chosen],
        rejected=[ScoredCritique(f"rejected {s:g}", s) for s in rejected],
        mean_chosen=sum(all_chosen) / len(all_chosen), mean_rejected=sum(all_rejected) / len(all_rejected),
        critique_margin=critique_margin)


def texts(row: dict, side: str) -> list[str]:
    return [c["text"] for c in row["row"][f"{side}_critiques"]]


# ----------------------------------------------------------------------------------------------- parsers

@pytest.mark.parametrize(("answer", "count", "expected"), [
    ("Ranking: 2, 3, 1", 3, [1, 2, 0]),
    ("ranking:3,1", 3, [2, 0]),  # partial
    ("2 > 3 > 1", 3, [1, 2, 0]),
    ("Critique 2 is best, then Critique 3.", 3, [1, 2]),
    ("Ranking: 2, 2, 5, 1\nCritique 3 says Score: 3/10", 3, [1, 0]),  # duplicates, out of range, other lines
    ("The best is 4. Score: 3/10", 4, [3]),  # a score is not a critique number
    ("Ranking: best first", 3, []),
    ("Ranking: 10, 1", 10, [9, 0]),
    ("", 2, []),
])
def test_parse_ranking(answer, count, expected):
    assert parse_ranking(answer, count) == expected


def test_complete_order_and_strength_order():
    assert complete_order([2], 4) == [2, 0, 1, 3]
    critiques = [ScoredCritique("a", 6), ScoredCritique("b", 9), ScoredCritique("c", 6), ScoredCritique("d", 2)]
    assert [c.text for c in strength_order("chosen", critiques)] == ["b", "a", "c", "d"]  # higher agrees more
    assert [c.text for c in strength_order("rejected", critiques)] == ["d", "a", "c", "b"]  # lower agrees more


def test_clean_summary():
    assert clean_summary("Merged critique:\nIt is wrong.\nScore: 2/10") == "It is wrong.\nScore: 2/10"
    assert clean_summary("  The answer is fine.  ") == "The answer is fine."


def test_parsers_on_real_model_outputs():
    """Answers the default model (SmolLM2-135M-Instruct) gave to the refinement prompts, kept as fixtures."""
    observed = json.loads((FIXTURES / "refine_outputs.json").read_text())
    for case in observed["rank"]:
        assert parse_ranking(case["answer"], case["count"]) == case["parsed"], case["answer"]
    assert all(case["answer"].startswith("Ranking: ") for case in observed["rank"])  # the format is followed
    for case in observed["summarize"]:
        assert parse_score(clean_summary(case["answer"])) == case["parsed_score"], case["answer"]
        cleaned = clean_summary(case["answer"], truncated=True)
        paragraphs = [p for p in cleaned.split("\n\n") if p]
        assert cleaned and "[Critique" not in cleaned and len(paragraphs) == len(set(paragraphs)), case["answer"]
        assert cleaned[-1] in ".!?\"" or parse_score(cleaned), cleaned  # the sentence cut by the token limit is gone
        assert copies_example(cleaned) == case["copied_example"], cleaned
    # echo and repetition loops, as the model wrote them
    looped = next(c["answer"] for c in observed["summarize"] if c["answer"].count("The text is elegant") > 3)
    assert clean_summary(looped, truncated=True) == "The response is correct. The text is elegant and the food is exquisite."


def test_prompts_show_the_format():
    messages = rank_messages("Q?", "A.", "chosen", ["one", "two\nScore: 7/10", "three"])
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"].startswith("Ranking: ")
    assert "[Critique 3]\nthree" in messages[-1]["content"] and "better of two" in messages[-1]["content"]
    # shown a score, the default model answers with it ("Ranking: 7, 8, 9") instead of critique numbers
    assert "Score:" not in messages[-1]["content"] and "Score:" not in messages[1]["content"]
    summary = summarize_messages("Q?", "A.", ["one", "two"])
    assert parse_score(summary[2]["content"]) is not None and "[Critique 2]\ntwo" in summary[-1]["content"]
    assert "worse" not in summary[-1]["content"]  # the label never reaches a training target


# ------------------------------------------------------------------------------------------ refine rules

def test_rank_keeps_the_models_top_k():
    generator = ScriptedGenerator(lambda m: "Ranking: 3, 1, 2")
    [row] = refine_batch([decision("p", [9, 7, 8], [2, 3, 1])], generator, RefineConfig(top_k=2))
    # presented best-by-score first: chosen 9, 8, 7 -> the model picks 7 then 9; rejected 1, 2, 3 -> 3, 1
    assert texts(row, "chosen") == ["chosen 7", "chosen 9"]
    assert texts(row, "rejected") == ["rejected 3", "rejected 1"]
    assert row["meta"]["chosen"]["outcome"] == "ranked" and row["meta"]["chosen"]["reordered"]
    assert row["row"]["critique_supervision"] and len(generator.conversations) == 2


def test_rank_fallbacks_to_score_order():
    config = RefineConfig(top_k=2)
    [row] = refine_batch([decision("p", [5, 9, 7], [4, 2, 3])], ScriptedGenerator(lambda m: "I cannot rank."), config)
    assert texts(row, "chosen") == ["chosen 9", "chosen 7"] and texts(row, "rejected") == ["rejected 2", "rejected 3"]
    assert row["meta"]["chosen"]["outcome"] == "ranking-unparsed"
    [row] = refine_batch([decision("p", [5, 9, 7, 6], [4])], ScriptedGenerator(lambda m: "Ranking: 4"), config)
    assert texts(row, "chosen") == ["chosen 5", "chosen 9"]  # 4th presented (5) first, then score order
    assert row["meta"]["chosen"]["outcome"] == "partial-ranking"
    assert row["meta"]["rejected"]["outcome"] == "no-call"


def test_rank_pairwise_needs_the_same_verdict_in_both_orders():
    config = RefineConfig(top_k=1)
    # presented [9, 6]: the model prefers 6 in the order (9, 6) ("2") and in the order (6, 9) ("1")
    consistent = ScriptedGenerator(lambda m: "Ranking: 2" if m[-1]["content"].index("chosen 9") <
                                   m[-1]["content"].index("chosen 6") else "Ranking: 1")
    [row] = refine_batch([decision("p", [9, 6], [2])], consistent, config)
    assert texts(row, "chosen") == ["chosen 6"] and row["meta"]["chosen"]["outcome"] == "pairwise-consistent"
    assert len(consistent.conversations) == 2
    position = ScriptedGenerator(lambda m: "Ranking: 1, 2")  # always the first one shown: no verdict
    [row] = refine_batch([decision("p", [6, 9], [2])], position, config)
    assert texts(row, "chosen") == ["chosen 9"] and row["meta"]["chosen"]["outcome"] == "pairwise-inconsistent"


def test_summarize_passes_or_falls_back():
    config = RefineConfig(strategy="summarize")
    good = ScriptedGenerator(lambda m: "Critique: merged view.\nScore: 8/10" if "chosen" in m[-1]["content"]
                             else "Merged: poor.\nScore: 2/10")
    [row] = refine_batch([decision("p", [9, 7], [2, 3])], good, config)
    assert row["row"]["chosen_critiques"] == [{"text": "merged view.\nScore: 8/10", "score": 8.0}]
    assert row["row"]["rejected_critiques"][0]["score"] == 2.0
    assert row["meta"]["chosen"]["outcome"] == "summarized"
    # the summary scores the chosen response 2/10: below the rejected mean, so it fails the critique rule
    bad = ScriptedGenerator(lambda m: "It is poor.\nScore: 2/10")
    [row] = refine_batch([decision("p", [9, 7], [2, 3])], bad, config)
    assert texts(row, "chosen") == ["chosen 9"] and row["meta"]["chosen"]["outcome"] == "summary-failed-rule"
    assert row["meta"]["rejected"]["outcome"] == "summarized"


def test_a_summary_that_copies_the_worked_example_is_a_counted_fallback():
    config = RefineConfig(strategy="summarize")
    copier = ScriptedGenerator(lambda m: SUMMARIZE_EXAMPLE_ANSWER)
    [row] = refine_batch([decision("p", [9, 7], [2, 3])], copier, config)
    assert row["meta"]["chosen"]["outcome"] == "summary-copied-example" and texts(row, "chosen") == ["chosen 9"]
    stats = refine_stats([row], config)
    assert stats["fallbacks"] == 2 and stats["successes"] == 0 and stats["fallback_rate"] == 1.0


def test_summarize_uses_the_probability_score_when_none_is_written():
    config = RefineConfig(strategy="summarize")
    generator = ScriptedGenerator(lambda m: "Good and accurate.", probability=7.6)
    [row] = refine_batch([decision("p", [9, 7], [2])], generator, config)
    assert row["row"]["chosen_critiques"] == [{"text": "Good and accurate.\nScore: 8/10", "score": 7.6}]
    assert row["meta"]["chosen"]["score_from"] == "probability"
    [row] = refine_batch([decision("p", [9, 7], [2])], ScriptedGenerator(lambda m: "Good."), config)
    assert row["meta"]["chosen"]["outcome"] == "summary-no-score" and texts(row, "chosen") == ["chosen 9"]


def test_no_model_call_for_single_critiques_none_and_reward_only():
    generator = ScriptedGenerator(lambda m: pytest.fail("no call expected"))
    rows = refine_batch([decision("one", [8], [2]), decision("ro", [3, 2, 1], [9, 8], supervised=False)],
                        generator, RefineConfig(strategy="summarize"))
    assert texts(rows[0], "chosen") == ["chosen 8"] and rows[0]["meta"]["chosen"]["outcome"] == "no-call"
    assert texts(rows[1], "chosen") == ["chosen 3", "chosen 2", "chosen 1"]
    assert not rows[1]["row"]["critique_supervision"] and rows[1]["meta"]["chosen"]["outcome"] == "reward-only"
    [row] = refine_batch([decision("p", [9, 7, 8], [1, 2])], None, RefineConfig(strategy="none"))
    assert texts(row, "chosen") == ["chosen 9", "chosen 7", "chosen 8"]  # all, in sampled order
    with pytest.raises(ConfigError):
        refine_batch([decision("p", [9, 7, 8], [1])], None, RefineConfig(strategy="rank"))


# ----------------------------------------------------------------------------------- the stage on disk

def _decisions(count: int) -> list[FilterDecision]:
    return [decision(f"p{i}", [9, 7, 8], [1, 2, 3]) for i in range(count)] + [decision("ro", [2], [8], False)]


def test_resume_after_a_torn_write(tmp_path):
    decisions = _decisions(4)
    config = RefineConfig(top_k=1, batch_size=1)
    first = ScriptedGenerator(lambda m: "Ranking: 2, 1, 3")
    run_refine(decisions, first, config, tmp_path, show_progress=False)
    assert len(first.conversations) == 8
    refined = tmp_path / "refined.jsonl"
    lines = refined.read_text().splitlines(keepends=True)
    assert len(lines) == 5
    # the run "died" while writing the fourth row: two complete rows after the quick one, then half a line
    refined.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])
    second = ScriptedGenerator(lambda m: "Ranking: 2, 1, 3")
    stats = run_refine(decisions, second, config, tmp_path, show_progress=False)
    assert len(second.conversations) == 4  # only the two lost pairs were asked again
    rows = [json.loads(line) for line in refined.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(d.pair.id for d in decisions)  # no loss, no duplicate
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert [r["id"] for r in train] == [d.pair.id for d in decisions]  # input order
    assert all(r["chosen_critiques"] == [{"text": "chosen 8", "score": 8.0}] for r in train[:4])
    assert stats["pairs"] == 5 and stats["successes"] == 8 and stats["this_run"]["pairs_refined"] == 2
    assert stats["outcomes"]["chosen"] == {"ranked": 4, "reward-only": 1}
    with pytest.raises(ConfigError, match="strategy"):  # other settings never mix into one folder
        run_refine(decisions, second, RefineConfig(strategy="summarize"), tmp_path, show_progress=False)


def test_dataset_loads_with_datasets(tmp_path):
    run_refine(_decisions(2), None, RefineConfig(strategy="none"), tmp_path, show_progress=False)
    from datasets import load_dataset

    for kind, name in (("json", "train.jsonl"), ("parquet", "train.parquet")):
        dataset = load_dataset(kind, data_files=str(tmp_path / name), split="train")
        assert dataset.num_rows == 3
        assert dataset[0]["chosen_critiques"][0] == {"text": "chosen 9", "score": 9.0}
        assert [r["critique_supervision"] for r in dataset] == [True, True, False]
        assert TrainingPair.from_dict(dataset[2]).rejected_critiques == [ScoredCritique("rejected 8", 8.0)]
    stats = json.loads((tmp_path / "refine_stats.json").read_text())
    assert stats["critiques_out"] == {"chosen": 6, "rejected": 6} and stats["model_calls"] == 0


# ------------------------------------------------------------------------------------ the real model

@pytest.fixture(scope="module")
def real_generator():
    from criticrm.generation.huggingface import HFGenerator
    from criticrm.models.backbone import ModelConfig, display_name, load_causal_lm

    config = ModelConfig()
    model, tokenizer = load_causal_lm(config)
    return HFGenerator(model, tokenizer, display_name(config.model), batch_size=8)


@pytest.mark.model
def test_real_model_end_to_end(real_generator, tmp_path):
    """The default model ranks (listwise and pairwise) and summarizes real kept critiques of two short pairs."""
    pair = PreferencePair(id="capital", prompt="What is the capital of France?", chosen="Paris.", rejected="Lyon.")
    critiques = {
        "chosen": ["The response is correct: Paris is the capital.\nScore: 9/10", "Correct but very short.\nScore: 7/10",
                   "The answer is right.\nScore: 8/10"],
        "rejected": ["Wrong: the capital is Paris, not Lyon.\nScore: 1/10", "The response is wrong.\nScore: 2/10"],
    }
    sides = {side: [ScoredCritique(t, parse_score(t)) for t in texts_] for side, texts_ in critiques.items()}
    decision_ = FilterDecision(pair=pair, status="passed", supervised=True, template="general",
                               chosen=sides["chosen"], rejected=sides["rejected"], mean_chosen=8.0, mean_rejected=1.5)
    stats = run_refine([decision_], real_generator, RefineConfig(top_k=1), tmp_path / "rank", show_progress=False)
    # chosen: listwise (3 critiques, top 1); rejected: pairwise, asked in both orders
    assert stats["model_calls"] == 3 and stats["responses_refined_by_model"] == {"chosen": 1, "rejected": 1}
    [row] = load_training_pairs(tmp_path / "rank" / "train.jsonl", "critic")
    assert len(row.chosen_critiques) == 1 and row.chosen_critiques[0].text in critiques["chosen"]
    assert len(row.rejected_critiques) == 1 and row.rejected_critiques[0].text in critiques["rejected"]
    print(json.dumps(stats["outcomes"]))

    decision_.chosen, decision_.rejected = decision_.chosen[:2], decision_.rejected[:1]  # one call, one single
    stats = run_refine([decision_], real_generator, RefineConfig(strategy="summarize", max_new_tokens=32),
                       tmp_path / "summarize", show_progress=False)
    assert stats["model_calls"] == 1 and stats["successes"] + stats["fallbacks"] == 1
    [row] = load_training_pairs(tmp_path / "summarize" / "train.jsonl", "critic")
    for side, critiques_ in (("chosen", row.chosen_critiques), ("rejected", row.rejected_critiques)):
        [critique] = critiques_
        assert parse_score(critique.text) is not None  # every training target ends in a score line
        assert decision_.agrees(side, critique.score)  # summary or fallback: it passes the critique rule
    print(json.dumps(stats["outcomes"]), row.chosen_critiques, row.rejected_critiques)
