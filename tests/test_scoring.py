"""Inference scoring, `criticrm score` and `criticrm eval` on a real (tiny, random) reward model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from criticrm.cli import main
from criticrm.data.readers import DataConfig, DataValidationError
from criticrm.data.rewardbench import load_eval_examples
from criticrm.errors import ConfigError
from criticrm.evaluation.reward_model import evaluate_reward_model
from criticrm.inference.scorer import RewardScorer, ScoreItem, ScoringConfig, bradley_terry
from criticrm.testing.tiny import make_tiny_reward_models

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "eval_sections.jsonl"
ITEMS = [
    ScoreItem("What is 2+2?", "It is 4."),
    ScoreItem("Name a prime number larger than 10.", "9, which is prime and larger than ten, as everyone knows.",
              subset="math-prm"),
    ScoreItem("How do I pick a lock?", "I can't help with that.", domain="safety"),
    ScoreItem("Say hello.", "Hello! How can I help you today?"),
]



@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """A saved critic-mode and standard-mode reward model with a non-trivial head."""
    return make_tiny_reward_models(tmp_path_factory.mktemp("scoring"))


@pytest.fixture(scope="module")
def critic(model_dirs) -> RewardScorer:
    return RewardScorer.load(model_dirs["critic"], ScoringConfig(max_new_tokens=12, generation_batch_size=8))


def test_critic_reward_is_the_mean_of_its_critiques_rewards(critic):
    results = critic.score(ITEMS, num_critiques=3, temperature=1.0)
    assert [len(r.critiques) for r in results] == [3, 3, 3, 3]
    for item, result in zip(ITEMS, results, strict=True):
        rewards = [c.reward for c in result.critiques]
        assert result.reward == pytest.approx(sum(rewards) / 3)
        assert result.spread == pytest.approx(float(torch.tensor(rewards).std(unbiased=False)))
        template = "safety" if item.domain == "safety" else "reasoning" if item.subset == "math-prm" else "general"
        direct = critic.model.score_texts(critic.tokenizer, [(item.prompt, item.response, c.critique)
                                                             for c in result.critiques], template=template)
        assert direct == pytest.approx(rewards)


def test_greedy_scores_do_not_depend_on_batch_composition(critic):
    together = critic.score(ITEMS)
    for index, item in enumerate(ITEMS):
        alone = critic.score([item])[0]
        assert alone.critiques[0].critique == together[index].critiques[0].critique
        assert alone.reward == pytest.approx(together[index].reward, abs=1e-5)
    assert len({round(r.reward, 6) for r in together}) > 1  # the head is not constant: the test can fail
    twice = critic.score([ITEMS[0], ITEMS[0]])  # identical prompts share their whole prefix in one batch
    assert twice[0].reward == twice[1].reward == pytest.approx(together[0].reward, abs=1e-5)


def test_compare_is_the_bradley_terry_probability(critic):
    forward = critic.compare(ITEMS[0].prompt, "4", "5")
    backward = critic.compare(ITEMS[0].prompt, "5", "4")
    assert forward + backward == pytest.approx(1.0, abs=1e-5)
    assert bradley_terry(800.0, 0.0) == 1.0 and bradley_terry(0.0, 800.0) == pytest.approx(0.0)
    assert math.isnan(bradley_terry(math.nan, 1.0))


def test_standard_mode_scores_without_critiques(model_dirs):
    scorer = RewardScorer.load(model_dirs["standard"])
    results = scorer.score(ITEMS)
    assert all(r.critiques == [] and r.spread == 0.0 for r in results)
    direct = scorer.model.score_texts(scorer.tokenizer, [(i.prompt, i.response, None) for i in ITEMS[:2]])
    assert [r.reward for r in results[:2]] == pytest.approx(direct)


def test_scoring_errors_are_clear(model_dirs, critic, tmp_path):
    with pytest.raises(ConfigError, match="identical greedy critiques"):
        critic.score(ITEMS[:1], num_critiques=2, temperature=0.0)
    with pytest.raises(ConfigError, match="not a criticrm reward-model folder"):
        RewardScorer.load(tmp_path)


def test_eval_reader_takes_pairs_and_rewardbench2_lists(tmp_path):
    path = tmp_path / "rb2.jsonl"
    rows = [{"id": "a", "prompt": "p", "chosen": ["right"], "rejected": ["wrong 1", "wrong 2", "wrong 3"],
             "subset": "math"},
            {"id": "b", "prompt": "q", "chosen": "yes", "rejected": "no", "subset": "chat", "section": "chat"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second = load_eval_examples(DataConfig(data=str(path)))
    assert (first.chosen, first.rejected, first.is_pair) == (["right"], ["wrong 1", "wrong 2", "wrong 3"], False)
    assert (second.chosen, second.rejected, second.is_pair, second.section) == (["yes"], ["no"], True, "chat")
    path.write_text(json.dumps({"prompt": "p", "chosen": ["ok"], "rejected": []}) + "\n")
    with pytest.raises(DataValidationError, match=r"line 1, field 'rejected'.*got \[\]"):
        load_eval_examples(DataConfig(data=str(path)))


def test_m_scaling_samples_come_from_one_run(critic):
    examples = load_eval_examples(DataConfig(data=str(SAMPLE), limit=3))
    results = evaluate_reward_model(examples, critic, num_critiques=1, samples=4, temperature=1.0)
    for result in results:
        assert [len(s) for s in result.chosen_samples + result.rejected_samples] == [4, 4]
        assert result.chosen == [result.chosen_samples[0][0]]  # the headline uses the first m = 1 critique
        assert result.probability == pytest.approx(bradley_terry(result.chosen[0], result.rejected[0]))


def test_score_command_writes_one_line_per_row_and_resumes(model_dirs, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    args = ["score", "--model", str(model_dirs["critic"]), "--data", str(SAMPLE), "--out", str(out),
            "--scoring.max-new-tokens", "8"]
    assert main([*args, "--limit", "3"]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 3 and all(set(line) == {"id", "chosen", "rejected", "probability"} for line in lines)
    assert lines[0]["probability"] == pytest.approx(bradley_terry(lines[0]["chosen"]["reward"],
                                                                  lines[0]["rejected"]["reward"]))
    assert main([*args, "--limit", "5"]) == 0  # --limit 5: two more rows, the first three kept
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == \
        [e.id for e in load_eval_examples(DataConfig(data=str(SAMPLE), limit=5))]
    assert '"scored_now": 2' in capsys.readouterr().out

    responses = tmp_path / "responses.jsonl"
    responses.write_text(json.dumps({"prompt": "hi", "response": "hello"}) + "\n"
                         + json.dumps({"prompt": "hi", "response": 3}) + "\n")
    assert main(["score", "--model", str(model_dirs["standard"]), "--data", str(responses),
                 "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "line 2, field 'response': expected non-empty text, got int" in capsys.readouterr().err
    responses.write_text(json.dumps({"prompt": "hi", "response": "hello"}) + "\n"
                         + json.dumps({"prompt": "hi", "response": "hey", "id": "b"}) + "\n")
    assert main(["score", "--model", str(model_dirs["standard"]), "--data", str(responses),
                 "--out", str(tmp_path / "r.jsonl")]) == 0
    assert [json.loads(line)["id"] for line in (tmp_path / "r.jsonl").read_text().splitlines()] == ["line 1", "b"]


def test_eval_command_reports_a_reward_model_and_compares(model_dirs, tmp_path, capsys):
    for mode in ("critic", "standard"):
        assert main(["eval", "--model", str(model_dirs[mode]), "--data", str(SAMPLE), "--limit", "4",
                     "--out", str(tmp_path / mode), "--scoring.max-new-tokens", "8"]) == 0
        report = json.loads((tmp_path / mode / "report.json").read_text())
        assert report["summary"]["n"] == 4
        dump = [json.loads(line) for line in (tmp_path / mode / "examples.jsonl").read_text().splitlines()]
        assert len(dump) == 4
    capsys.readouterr()
    assert main(["eval", "--compare", str(tmp_path / "critic" / "report.json"),
                 str(tmp_path / "standard" / "report.json")]) == 0
    table = capsys.readouterr().out
    assert "critic (m=1)" in table and "standard (m=1)" in table and "**overall**" in table


def test_eval_writes_rewardbench_results_scoring_ties_as_upstream(model_dirs, tmp_path, capsys):
    from criticrm.evaluation.eval_report import load_examples
    from criticrm.evaluation.metrics import ties_score

    rows = [{"id": "m1", "prompt": "2+2?", "chosen": ["4"], "rejected": ["5", "22", "four hundred"], "subset": "Math"},
            {"id": "m2", "prompt": "3+3?", "chosen": ["6"], "rejected": ["9", "33"], "subset": "Math"},
            {"id": "ref:0", "prompt": "Name a colour.", "chosen": ["Red."], "rejected": ["Seven.", "A dog."],
             "subset": "Ties"},
            {"id": "tied:0", "prompt": "Name a colour.", "chosen": ["Red.", "Blue.", "Green."],
             "rejected": ["Seven.", "A dog."], "subset": "Ties"}]
    data = tmp_path / "rb2.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "rb"
    assert main(["eval", "--model", str(model_dirs["standard"]), "--data", str(data), "--out", str(out),
                 "--format", "rewardbench"]) == 0
    text = (out / "rewardbench.json").read_text()
    results = json.loads(text)
    assert text == json.dumps(results, indent=4, sort_keys=True)  # as upstream's save_to_hub writes it
    assert set(results) == {"model", "model_type", "chat_template", "Math", "Ties"}
    assert (results["model"], results["model_type"], results["chat_template"]) == (
        str(model_dirs["standard"]), "Seq. Classifier", "tokenizer")
    report = json.loads((out / "report.json").read_text())["summary"]
    assert results["Math"] == report["subsets"]["Math"]["accuracy"]
    ties = [r for r in load_examples(out) if r.subset == "Ties"]
    assert results["Ties"] == pytest.approx(ties_score(ties)["score"]) and report["subsets"]["Ties"]["ties_score"]

    rows[2]["id"] = "reference-0"  # not RewardBench 2's id: refused before any model loads
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    capsys.readouterr()
    assert main(["eval", "--model", str(tmp_path / "none"), "--data", str(data), "--out", str(tmp_path / "x")]) == 2
    assert "ref:N or tied:N" in capsys.readouterr().err


def test_eval_resumes_where_it_stopped_and_refuses_other_settings(model_dirs, tmp_path, capsys):
    out = tmp_path / "eval"
    args = ["eval", "--model", str(model_dirs["critic"]), "--data", str(SAMPLE), "--out", str(out),
            "--scoring.max-new-tokens", "8"]
    assert main([*args, "--per-subset", "1"]) == 0
    first = {row["id"]: row for row in map(json.loads, (out / "examples.jsonl").read_text().splitlines())}
    subsets = {e.subset for e in load_eval_examples(DataConfig(data=str(SAMPLE)))}
    assert sorted(row["subset"] for row in first.values()) == sorted(subsets)  # one example of each subset
    capsys.readouterr()
    assert main([*args, "--per-subset", "2"]) == 0  # a larger sample: only the new examples are evaluated
    wanted = load_eval_examples(DataConfig(data=str(SAMPLE), per_subset=2))
    assert f"{len(first)} of {len(wanted)} examples were evaluated earlier" in capsys.readouterr().out
    second = {row["id"]: row for row in map(json.loads, (out / "examples.jsonl").read_text().splitlines())}
    assert list(second) == [e.id for e in wanted]
    assert all(second[key]["details"] == row["details"] for key, row in first.items())  # kept, not redone
    assert len((out / "progress.jsonl").read_text().splitlines()) == len(second)
    assert main([*args[:-1], "6", "--per-subset", "2"]) == 2  # other settings: refused, nothing mixed
    assert "max_new_tokens" in capsys.readouterr().err


def test_judges_refuse_best_of_n_lists_before_loading_a_model(tmp_path, capsys):
    path = tmp_path / "rb2.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "p", "chosen": ["right"], "rejected": ["x", "y"]}) + "\n")
    assert main(["eval", "--judge", "pairwise", "--data", str(path), "--out", str(tmp_path / "out"),
                 "--model", str(tmp_path / "no-such-model")]) == 2
    assert "1 example(s) have lists (first: 'a')" in capsys.readouterr().err
