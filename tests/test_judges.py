"""LLM-judge baselines: verdicts, both orders of the pairwise judge, position consistency, pointwise means."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from criticrm.data.readers import DataConfig
from criticrm.data.rewardbench import load_eval_examples
from criticrm.data.schema import PreferencePair
from criticrm.evaluation.eval_report import load_examples, write_eval_report
from criticrm.evaluation.judges import (
    ORDERS,
    judge_order,
    judge_pairwise,
    judge_pointwise,
    position_summary,
    revote_pairwise,
    verdict_choices,
    verdict_continuation,
)
from criticrm.evaluation.metrics import ExampleResult, credit, summarize
from criticrm.evaluation.run import EvalConfig, run_evaluation
from criticrm.generation.base import Completion, ProbabilityScore, SamplingConfig
from criticrm.inference.scorer import ScoringConfig
from criticrm.models.backbone import ModelConfig
from criticrm.pipeline.critique import CritiqueConfig
from criticrm.prompts.pairwise import load_pairwise_template, parse_verdict, strip_verdict
from criticrm.prompts.templates import TemplateError, TemplateSet

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE = Path(__file__).parent.parent / "data" / "sample" / "eval_sections.jsonl"
OBSERVED = json.loads((FIXTURES / "pairwise_verdicts.json").read_text())


# ------------------------------------------------------------------------------------------- verdicts

@pytest.mark.parametrize("output", OBSERVED["outputs"] + OBSERVED["first_prompt"],
                         ids=lambda output: output["text"][:24])
def test_parse_verdict_on_real_model_outputs(output):
    """Answers the default model (SmolLM2-135M-Instruct) gave to the pairwise prompt, kept as fixtures."""
    assert parse_verdict(output["text"]) == output["verdict"]


@pytest.mark.parametrize(("text", "expected"), [
    ("Both are fine, but A is shorter.\nVerdict: A", "A"),
    ("Verdict: B.", "B"),
    ("Verdict: [[A]]", "A"),
    ("**Verdict:** Response B", "B"),
    ("**Verdict**: **A**", "A"),
    ("The verdict is A", "A"),
    ("Final verdict: (b)", "B"),
    ("Verdict:\nB", "B"),
    ("Verdict: A is better", "A"),
    ("Verdict: A\nOn second thought, Verdict: B", "B"),  # the last verdict counts
    ("Response A is better.\nVerdict: B", "B"),  # the verdict line outranks the reasoning
    ("[[B]] looked better at first.\nVerdict: A", "A"),  # and a bracketed letter
    ("Verdict: Tie", None),
    ("Verdict: A tie.", None),  # the article, not a position
    ("Response B is better.\nVerdict: neither", None),
    ("Verdict: A or B", None),
    ('Reason, then write "Verdict: A" or "Verdict: B".', None),  # an echo of the instruction
    ("Verdict: a", None),  # a lower-case letter counts only in brackets
    ("Assistant B is more helpful. [[B]]", "B"),
    ("[[A]] if assistant A is better, [[B]] if assistant B is better", None),
    ("[[C]]", None),
    ("Output (a) is better.", "A"),
    ("I prefer Response B.", "B"),
    ("Response A wins.", "A"),
    ("Assistant A's answer is better.", "A"),
    ("Response A is worse.", "B"),
    ("Response A is better, and Response B is correct.", "A"),  # a comparison outranks an assessment
    ("Response B is correct and Response A is wrong.", "B"),
    ("Response A is better. Response B is more helpful.", None),
    ("Response A is not better.", None),
    ("The answer is (B).", None),  # a multiple-choice option, not a response
    ("Answer B is correct.", None),
    ("", None),
])
def test_parse_verdict_forms(text, expected):
    assert parse_verdict(text) == expected


def test_strip_verdict_and_the_continuation_the_probability_is_read_after():
    assert strip_verdict("B is right.\nVerdict: B") == "B is right."
    assert strip_verdict("B is better and Verdict: A.\nVerdict: A") == "B is better and Verdict: A."
    assert strip_verdict("Good. [[A]]") == "Good."
    assert strip_verdict("No verdict here.  ") == "No verdict here."
    assert verdict_continuation("B is right.\nVerdict: B", "Verdict:") == "B is right.\nVerdict:"
    assert verdict_continuation("Verdict: B", "Verdict:") == "Verdict:"
    assert verdict_choices("Verdict:") == (" A", " B") and verdict_choices("Verdict: ") == ("A", "B")


def test_each_position_is_one_token_after_the_prefix_for_the_default_tokenizer():
    """What a probability verdict reads: " A" and " B" must each be one token right after "Verdict:"."""
    from criticrm.models.backbone import load_tokenizer

    tokenizer = load_tokenizer(None)
    prefix = load_pairwise_template().verdict_prefix
    base = tokenizer(prefix, add_special_tokens=False).input_ids
    for choice in verdict_choices(prefix):
        full = tokenizer(prefix + choice, add_special_tokens=False).input_ids
        assert full[: len(base)] == base and len(full) == len(base) + 1


def test_pairwise_template_shows_the_format_in_both_positions(tmp_path):
    template = load_pairwise_template()
    messages = template.messages("Q?", "first answer", "second answer")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert {parse_verdict(m["content"]) for m in messages if m["role"] == "assistant"} == {"A", "B"}
    task = messages[-1]["content"]
    assert task.index("[Response A]\nfirst answer") < task.index("[Response B]\nsecond answer")
    assert task.rstrip().endswith('write "Verdict: A" or "Verdict: B".')
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nsystem: s\ninstruction: i\nuser_format: '{prompt} {response_a}'\n")
    with pytest.raises(TemplateError, match="response_b"):
        load_pairwise_template(broken)


# ------------------------------------------------------------------------------------- pairwise judge

class ScriptedJudge:
    """Answers an A/B conversation with `respond(text of A, text of B)`; records what it was asked."""

    backend, model_name = "scripted", "scripted"

    def __init__(self, respond):
        self.respond = respond
        self.conversations = []

    def generate(self, conversations, sampling, score_prefix=None):
        self.conversations.extend(conversations)
        return [[Completion(self.respond(*_shown(c)), 1, 1, "stop") for _ in range(sampling.num_critiques)]
                for c in conversations]

    def choice_probabilities(self, conversations, continuations, choices):
        """No probability mass on either letter: only the written verdict can be read."""
        return [[0.0, 0.0] for _ in conversations]


class ScriptedScorer(ScriptedJudge):
    """A scripted judge that also gives choice probabilities: `probabilities(text of A, text of B)`."""

    def __init__(self, respond, probabilities):
        super().__init__(respond)
        self.probabilities = probabilities
        self.continuations = []

    def choice_probabilities(self, conversations, continuations, choices):
        assert tuple(choices) == (" A", " B")
        self.continuations.extend(continuations)
        return [self.probabilities(*_shown(c)) for c in conversations]


def _shown(conversation) -> tuple[str, str]:
    task = conversation[-1]["content"]
    a = task.split("[Response A]\n")[1].split("\n\n[Response B]")[0]
    b = task.split("[Response B]\n")[1].split("\n\n")[0]
    return a, b


PAIRS = [PreferencePair(id=f"p{i}", prompt=f"question {i}", chosen=f"good {i}", rejected=f"bad {i}!",
                        subset="s" if i else None, section="chat" if i else None) for i in range(3)]
ONE = SamplingConfig(num_critiques=1, temperature=0.0, max_new_tokens=8)


def test_a_judge_that_reads_the_responses_is_consistent_and_right():
    judge = ScriptedJudge(lambda a, b: "A is good.\nVerdict: A" if a.startswith("good") else "Verdict: B")
    results, summary = judge_pairwise(PAIRS, judge, ONE, progress=False)
    assert len(judge.conversations) == 2 * len(PAIRS)
    assert [r.id for r in results] == ["p0", "p1", "p2"]
    first = results[0]
    assert first.chosen == [1.0] and first.rejected == [0.0] and first.probability == 1.0
    assert first.subset == "all" and first.section is None and results[1].subset == "s"
    assert first.chosen_chars == [len("good 0")] and first.rejected_chars == [len("bad 0!")]
    assert first.chosen_samples is None
    assert first.details["chosen_as_a"]["samples"][0]["text"] == "A is good.\nVerdict: A"
    assert first.details["chosen_as_b"]["samples"][0]["verdict"] == "B"
    assert all(credit(r.chosen, r.rejected).value == 1.0 for r in results)
    assert summary == {"template": "pairwise", "template_hash": load_pairwise_template().hash, "pairs": 3,
                       "consistency": 1.0, "a_share": 0.5, "undecided_orders": 0, "verdict_parse_rate": 1.0,
                       "probability_rate": 0.0}


def test_a_judge_that_always_says_a_ties_every_pair_and_counts_wrong():
    results, summary = judge_pairwise(PAIRS, ScriptedJudge(lambda a, b: "Verdict: A"), ONE, progress=False)
    for result in results:
        assert result.chosen == result.rejected == [0.5] and result.probability == 0.5
        assert credit(result.chosen, result.rejected).value == 0.0
        assert [result.details[o]["vote"] for o in ORDERS] == [1.0, 0.0]
    assert summary["consistency"] == 0.0 and summary["a_share"] == 1.0


def test_a_consistently_wrong_judge_is_consistent_and_wrong():
    judge = ScriptedJudge(lambda a, b: "Verdict: B" if a.startswith("good") else "Verdict: A")
    results, summary = judge_pairwise(PAIRS, judge, ONE, progress=False)
    assert all(r.chosen == [0.0] and r.rejected == [1.0] for r in results)
    assert summary["consistency"] == 1.0 and summary["a_share"] == 0.5


def test_unreadable_orders_abstain():
    judge = ScriptedJudge(lambda a, b: "Verdict: A" if a.startswith("good") else "I cannot tell.")
    results, summary = judge_pairwise(PAIRS[:1], judge, ONE, progress=False)
    [result] = results
    assert [result.details[o]["vote"] for o in ORDERS] == [1.0, 0.5]
    assert result.chosen == [0.75]
    assert {k: v for k, v in summary.items() if not k.startswith("template")} == {
        "pairs": 1, "consistency": 0.0, "a_share": 1.0, "undecided_orders": 1, "verdict_parse_rate": 0.5,
        "probability_rate": 0.0}


def test_samples_of_an_order_are_averaged():
    answers = iter(["Verdict: A", "Verdict: B", "nothing", "Verdict: A"] * 2)
    judge = ScriptedJudge(lambda a, b: next(answers))
    four = SamplingConfig(num_critiques=4, temperature=0.7)
    results, _ = judge_pairwise(PAIRS[:1], judge, four, progress=False)
    [result] = results
    order_of = {ORDERS[0]: "A", ORDERS[1]: "B"}
    for order in ORDERS:
        samples = result.details[order]["samples"]
        assert len(samples) == 4 and samples[2]["vote"] is None  # the unreadable sample is skipped
        expected = sum(s["verdict"] == order_of[order] for s in samples) / 3
        assert result.details[order]["vote"] == pytest.approx(expected)


def test_probability_verdict_fills_in_or_replaces_the_written_one():
    # P(A)=0.6, P(B)=0.2 whatever is shown: P(chosen) is 0.75 when chosen is A and 0.25 when it is B.
    def make():
        return ScriptedScorer(lambda a, b: "Hmm." if a.startswith("good") else "B is good.\nVerdict: B",
                              lambda a, b: [0.6, 0.2])

    scorer = make()
    results, summary = judge_pairwise(PAIRS[:1], scorer, ONE, progress=False)
    [result] = results
    a, b = (result.details[o]["samples"][0] for o in ORDERS)
    assert (a["source"], a["vote"]) == ("probability", pytest.approx(0.75))  # unreadable: the probability
    assert (b["source"], b["vote"]) == ("parsed", 1.0)  # readable: the written verdict
    assert result.chosen == [pytest.approx(0.875)]
    assert sorted(scorer.continuations) == ["B is good.\nVerdict:", "Hmm.\nVerdict:"]
    assert summary["probability_rate"] == 1.0 and summary["verdict_parse_rate"] == 0.5

    results, _ = judge_pairwise(PAIRS[:1], make(), ONE, progress=False, verdict_source="probability")
    assert results[0].chosen == [pytest.approx(0.5)]  # (0.75 + 0.25) / 2: the probabilities alone
    parsed_only = make()
    results, _ = judge_pairwise(PAIRS[:1], parsed_only, ONE, progress=False, verdict_source="parsed")
    assert results[0].chosen == [0.75] and parsed_only.continuations == []


def test_a_stored_run_re_read_under_each_verdict_source_is_that_run_judged_again(tmp_path):
    """`revote_pairwise` over a written and reloaded report equals judging again with the other source."""
    def make():  # a position-biased writer (A wins unless the answer is "bad 2!") with content-aware probabilities
        return ScriptedScorer(lambda a, b: "Verdict: B" if a == "bad 2!" else "Hmm, A.\nVerdict: A" if a != "good 1"
                              else "no verdict", lambda a, b: [0.7, 0.3] if a.startswith("good") else [0.45, 0.55])

    results, _ = judge_pairwise(PAIRS, make(), ONE, progress=False)
    write_eval_report("pairwise", results, tmp_path, {})
    stored = load_examples(tmp_path)
    assert summarize(stored) == summarize(results)
    for source in ("parsed-or-probability", "parsed", "probability"):
        judged, _ = judge_pairwise(PAIRS, make(), ONE, progress=False, verdict_source=source)
        revoted = revote_pairwise(stored, source)
        # votes, verdicts and sources alike (a "parsed" judge never asks for probabilities; the stored run has them)
        assert [_without_probabilities(r) for r in revoted] == [_without_probabilities(r) for r in judged]
        positions = [{key: position_summary(rs)[key] for key in ("consistency", "a_share", "undecided_orders")}
                     for rs in (revoted, judged)]
        assert positions[0] == positions[1]
    assert [r.chosen for r in revote_pairwise(stored, "probability")] == [[pytest.approx(0.625)]] * 3  # (0.7 + 0.55) / 2
    with pytest.raises(ValueError, match="verdict_source"):
        revote_pairwise(stored, "votes")
    parsed_run, _ = judge_pairwise(PAIRS[:1], make(), ONE, progress=False, verdict_source="parsed")
    assert revote_pairwise(parsed_run, "parsed")[0].chosen == parsed_run[0].chosen
    with pytest.raises(ValueError, match="p0: judged with score policy parsed"):
        revote_pairwise(parsed_run, "probability")
    with pytest.raises(ValueError, match="p9: not a pairwise-judge result"):
        revote_pairwise([ExampleResult("p9", "s", None, [1.0], [0.0], [1], [1])], "parsed")


def test_eval_judges_pairwise_with_the_score_flag(tmp_path):
    """`criticrm eval --judge pairwise --score probability` votes with probabilities, and the report says so."""
    examples = load_eval_examples(DataConfig(data=str(SAMPLE), limit=2))
    summary = run_evaluation(examples, EvalConfig(judge="pairwise"), ModelConfig(), ScoringConfig(),
                             CritiqueConfig(score="probability"), ONE, tmp_path,
                             generator=ScriptedScorer(lambda a, b: "Verdict: A", lambda a, b: [0.3, 0.7]))
    rows = [json.loads(line) for line in (tmp_path / "examples.jsonl").read_text().splitlines()]
    assert {sample["source"] for row in rows for order in ORDERS for sample in row["details"][order]["samples"]} \
        == {"probability"}
    assert [row["probability"] for row in rows] == [pytest.approx(0.5)] * 2  # (0.3 + 0.7) / 2: no written "A"
    assert json.loads((tmp_path / "report.json").read_text())["meta"]["score"] == "probability"
    assert summary["ties"] == 2


def _without_probabilities(result: ExampleResult) -> tuple:
    orders = {order: [{k: v for k, v in row.items() if k != "choice_probabilities"}
                      for row in result.details[order]["samples"]] for order in ORDERS}
    return result.id, result.chosen, result.rejected, result.probability, orders


def test_judge_order_reads_positions_relative_to_the_chosen_response():
    assert judge_order("chosen_as_a", [("Verdict: A", None)], "parsed")["vote"] == 1.0
    assert judge_order("chosen_as_b", [("Verdict: A", None)], "parsed")["vote"] == 0.0
    assert judge_order("chosen_as_b", [("x", [0.1, 0.3])], "probability")["vote"] == pytest.approx(0.75)
    assert judge_order("chosen_as_a", [("x", [0.0, 0.0])], "parsed-or-probability")["vote"] == 0.5


def _result(pair_id: str, votes: tuple[float, float], verdicts=("A", "A")) -> ExampleResult:
    details = {order: {"samples": [{"verdict": v, "choice_probabilities": None}], "vote": vote}
               for order, vote, v in zip(ORDERS, votes, verdicts, strict=True)}
    mean = sum(votes) / 2
    return ExampleResult(pair_id, "s", None, [mean], [1 - mean], [1], [1], probability=mean, details=details)


def test_position_summary_arithmetic():
    results = [
        _result("both-chosen", (1.0, 1.0), ("A", "B")),  # consistent, named A then B
        _result("both-rejected", (0.0, 0.2), ("B", "A")),  # consistent (on the rejected response): B, A
        _result("always-a", (1.0, 0.0), ("A", "A")),  # inconsistent: A, A
        _result("one-abstains", (0.5, 0.9), (None, "B")),  # undecided order: inconsistent; B
        _result("both-abstain", (0.5, 0.5), (None, None)),  # naming nothing twice is not consistency
    ]
    assert position_summary(results) == {
        "pairs": 5, "consistency": 0.4, "a_share": round(4 / 7, 4), "undecided_orders": 3,
        "verdict_parse_rate": 0.7, "probability_rate": 0.0,
    }


# ------------------------------------------------------------------------------------ pointwise judge

class ScriptedCritic:
    """Critiques written by `respond(user turn, sample index)`; probability score 5.0 if a prefix is asked."""

    backend, model_name = "scripted", "scripted"

    def __init__(self, respond):
        self.respond = respond
        self.prefixes = []

    def generate(self, conversations, sampling, score_prefix=None):
        self.prefixes.append(score_prefix)
        probability = ProbabilityScore(5.0, 0.9) if score_prefix else None
        return [[Completion(self.respond(c[-1]["content"], i), 1, 1, "stop", probability)
                 for i in range(sampling.num_critiques)] for c in conversations]


def _critique(turn: str, index: int) -> str:
    if "good 0" in turn:
        return ["Fine.\nScore: 8/10", "Hmm.", "Fine.\nScore: 6/10"][index]
    return "Unreadable." if "bad 0!" in turn else f"Ok.\nScore: {index + 1}/10"


def test_pointwise_means_samples_and_details():
    critic = ScriptedCritic(_critique)
    three = SamplingConfig(num_critiques=3, temperature=0.8)
    results = judge_pointwise(PAIRS[:2], critic, TemplateSet(), three, progress=False)
    assert critic.prefixes and set(critic.prefixes) == {"Score: "}
    first = results[0]
    assert first.chosen_samples == [[8.0, 5.0, 6.0]]  # the probability score where none is written
    assert first.chosen == [pytest.approx(19 / 3)] and first.rejected == [5.0]
    assert first.probability is None and first.details["template"] == "general"
    assert [c["source"] for c in first.details["chosen"]] == ["parsed", "probability", "parsed"]
    assert first.details["chosen"][1] == {"critique": "Hmm.", "score": 5.0, "source": "probability"}
    assert results[1].chosen_samples == [[1.0, 2.0, 3.0]] and results[1].chosen == [2.0]

    [parsed] = judge_pointwise(PAIRS[:1], ScriptedCritic(_critique), TemplateSet(), three,
                               score_source="parsed", progress=False)
    assert parsed.chosen == [7.0]  # the unreadable critique is skipped
    assert parsed.chosen_samples[0][:1] == [8.0] and math.isnan(parsed.chosen_samples[0][1])
    assert math.isnan(parsed.rejected[0]) and credit(parsed.chosen, parsed.rejected).invalid
    with pytest.raises(ValueError, match="score_source"):
        judge_pointwise(PAIRS, critic, TemplateSet(), three, score_source="written")


def test_pointwise_uses_the_template_of_each_pair():
    pair = PreferencePair(id="m", prompt="2+2?", chosen="4", rejected="5", subset="math-prm")
    critic = ScriptedCritic(lambda turn, index: "Score: 9/10")
    [result] = judge_pointwise([pair], critic, TemplateSet(), ONE, progress=False)
    assert result.details["template"] == "reasoning" and result.subset == "math-prm"


# ------------------------------------------------------------------------------------ the real model

@pytest.mark.model
def test_real_model_judges_two_pairs():
    from criticrm.data.readers import DataConfig, load_pairs
    from criticrm.generation.huggingface import HFGenerator
    from criticrm.models.backbone import ModelConfig, load_causal_lm

    model, tokenizer = load_causal_lm(ModelConfig(dtype="fp32"))
    generator = HFGenerator(model, tokenizer, "SmolLM2-135M-Instruct", batch_size=8)
    pairs = load_pairs(DataConfig(data=str(SAMPLE), limit=2)).pairs
    sampling = SamplingConfig(num_critiques=2, temperature=0.8, max_new_tokens=32)

    pointwise = judge_pointwise(pairs, generator, TemplateSet(), sampling, progress=False)
    for pair, result in zip(pairs, pointwise, strict=True):
        assert (result.id, result.subset, result.section) == (pair.id, pair.subset, pair.section)
        assert len(result.chosen_samples[0]) == len(result.rejected_samples[0]) == 2
        for side in ("chosen", "rejected"):
            assert all(1.0 <= c["score"] <= 10.0 for c in result.details[side])  # parsed or probability
        assert result.chosen[0] == pytest.approx(sum(result.chosen_samples[0]) / 2)

    results, summary = judge_pairwise(pairs, generator, SamplingConfig(num_critiques=1, temperature=0.0,
                                                                       max_new_tokens=48), progress=False)
    for result in results:
        assert 0.0 <= result.probability <= 1.0
        assert result.chosen[0] + result.rejected[0] == pytest.approx(1.0)
        assert all(result.details[order]["samples"][0]["text"] for order in ORDERS)
    assert summary["pairs"] == 2 and summary["verdict_parse_rate"] is not None
    assert summary["probability_rate"] == 1.0
    print(json.dumps(summary), [[r.details[o]["samples"][0]["text"] for o in ORDERS] for r in results])
