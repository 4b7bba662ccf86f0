"""Faithfulness of the reward to its critique (`criticrm.evaluation.faithfulness`): the summary on hand-made
records, the opposite-verdict rule, and the four conditions end to end through `run_evaluation` on a tiny
model taught to write scored critiques."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from criticrm.cli import main
from criticrm.data.readers import DataConfig
from criticrm.data.rewardbench import load_eval_examples
from criticrm.errors import ConfigError
from criticrm.evaluation.eval_report import load_examples
from criticrm.evaluation.faithfulness import condition_critiques, faithfulness_summary, opposite_critique
from criticrm.evaluation.metrics import ExampleResult
from criticrm.evaluation.run import EvalConfig, run_evaluation
from criticrm.generation.base import SamplingConfig
from criticrm.inference.scorer import RewardScorer, ScoringConfig
from criticrm.models.backbone import ModelConfig, load_tokenizer
from criticrm.models.critic_rm import CriticRewardModel
from criticrm.models.sequences import pad_sequences
from criticrm.pipeline.critique import CritiqueConfig
from criticrm.prompts.scores import parse_score, with_score
from criticrm.prompts.templates import infer_domain
from criticrm.testing.tiny import make_tiny_backbone

PAIRS = [{"id": "p1", "prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "subset": "math-x", "section": "math"},
         {"id": "p2", "prompt": "Say hi.", "chosen": "Hi!", "rejected": "No.", "subset": "chat-x", "section": "chat"}]
# Taught in proportion 2 : 1, so that greedy decoding writes the first and sampling at T = 0.8 sometimes the second.
TAUGHT = ["Bad.\nScore: 3/10", "Bad.\nScore: 3/10", "Good.\nScore: 8/10"]
SCORING = ScoringConfig(max_new_tokens=12, generation_batch_size=8)



def record(own, empty, swapped, opposite, written_own, written_opposite, sources) -> dict:
    return {"rewards": {"own": own, "empty": empty, "swapped": swapped, "opposite": opposite},
            "written": {"own": written_own, "opposite": written_opposite}, "opposite_source": sources,
            "critiques": {"own": ["", ""], "opposite": [None, None]}}


def example(example_id: str, faithfulness: dict | None) -> ExampleResult:
    return ExampleResult(id=example_id, subset="s", section=None, chosen=[0.0], rejected=[0.0], chosen_chars=[1],
                         rejected_chars=[1], details={"faithfulness": faithfulness} if faithfulness else {})


def test_summary_of_hand_made_records():
    first = record(own=[2.0, 1.0], empty=[2.0, 1.0], swapped=[0.5, 2.5], opposite=[1.0, 3.0],
                   written_own=[8, 3], written_opposite=[3, 8], sources=["sampled", "replaced"])
    second = record(own=[0.0, 1.0], empty=[0.0, 1.0], swapped=[0.0, 1.0], opposite=[None, None],
                    written_own=[None, None], written_opposite=[None, None], sources=["none", "none"])
    summary = faithfulness_summary([example("a", first), example("b", second), example("c", None)])
    assert (summary["n"], summary["missing"]) == (2, 1)
    assert summary["opposite_source"] == {"sampled": 1, "replaced": 1, "none": 2}
    own, empty, swapped, opposite = (summary["conditions"][c] for c in ("own", "empty", "swapped", "opposite"))
    assert (own["n"], own["mean_abs_delta"], own["flips"], own["accuracy"]) == (2, 0.0, 0.0, 0.5)
    assert (empty["mean_abs_delta"], empty["flips"], empty["accuracy"]) == (0.0, 0.0, 0.5)  # ignores the critique
    # swapped: deltas -1.5, +1.5, 0, 0; "a" now prefers the rejected response (a flip), "b" does not move
    assert (swapped["n"], swapped["mean_abs_delta"], swapped["mean_delta"]) == (2, 0.75, 0.0)
    assert (swapped["flips"], swapped["accuracy"]) == (0.5, 0.0)
    # opposite: only "a" has one; deltas -1 (8 -> 3) and +2 (3 -> 8): both follow the new verdict
    assert (opposite["n"], opposite["mean_abs_delta"], opposite["mean_delta"]) == (1, 1.5, 0.5)
    assert (opposite["flips"], opposite["accuracy"], opposite["moved_with_verdict"]) == (1.0, 0.0, 1.0)
    assert faithfulness_summary([example("c", None)]) is None


def test_opposite_verdict_critique():
    assert opposite_critique("Fine.\nScore: 8/10", ["Ok.\nScore: 7/10", "No.", "Poor.\nScore: 2/10",
                                                    "Bad.\nScore: 1/10"]) == ("Poor.\nScore: 2/10", "sampled")
    assert opposite_critique("Fine.\nScore: 8/10", ["Ok.\nScore: 6/10"]) == ("Fine.\nScore: 3/10", "replaced")
    assert opposite_critique("Poor. Score: 5", []) == ("Poor. Score: 6", "replaced")  # 5 is below the midpoint
    assert opposite_critique("No score here.", ["Good.\nScore: 9/10"]) == (None, "none")
    assert opposite_critique("Half.\nScore: 5.5/10", ["Good.\nScore: 9/10"]) == (None, "none")
    assert with_score("Score: 2/10 at first.\nThen Score: 4/5 in the end", 3) == "Score: 2/10 at first.\nThen Score: 3/10 in the end"
    assert with_score("none", 3) is None
    assert with_score("Score: 5 \nThanks.", 6) == "Score: 6 \nThanks."  # the text after the number is kept


def test_each_condition_reads_the_right_critique():
    critiques = condition_critiques(["c1+", "c1-", "c2+", "c2-"], ["o1+", None, "o2+", "o2-"])
    assert critiques == {"own": ["c1+", "c1-", "c2+", "c2-"], "empty": ["", "", "", ""],
                         "swapped": ["c1-", "c1+", "c2-", "c2+"], "opposite": ["o1+", None, "o2+", "o2-"]}
    with pytest.raises(ValueError, match="two responses per pair"):
        condition_critiques(["c1+", "c1-", "c2+"], ["o", "o", "o"])


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A critic-mode tiny model taught (a few dozen Adam steps on the LM) to write TAUGHT for PAIRS, its
    random reward head kept; a standard-mode one; and the data file."""
    root = tmp_path_factory.mktemp("faithfulness")
    backbone = make_tiny_backbone(root / "backbone")
    tokenizer = load_tokenizer(str(backbone))
    model = CriticRewardModel.from_backbone(str(backbone), mode="critic")
    with torch.no_grad():
        for parameter in model.reward_head.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(3)))
    builder = model.sequence_builder(tokenizer)
    sequences = [builder.encode(pair["prompt"], pair[side], critique, template=infer_domain(None, pair["subset"]))
                 for pair in PAIRS for side in ("chosen", "rejected") for critique in TAUGHT]
    batch = pad_sequences([s.input_ids for s in sequences], tokenizer.pad_token_id)
    width = batch.input_ids.shape[1]
    positions = torch.tensor([row * width + p - 1 for row, s in enumerate(sequences) for p in range(s.label_start, s.label_end)])
    targets = torch.tensor([s.input_ids[p] for s in sequences for p in range(s.label_start, s.label_end)])
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.causal_lm.parameters(), lr=1e-2)
    for _ in range(60):
        logits = model(batch.input_ids, batch.attention_mask, lm_positions=positions).lm_logits
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(pair) + "\n" for pair in PAIRS))
    standard = CriticRewardModel.from_backbone(str(backbone), mode="standard").save(root / "standard", tokenizer=tokenizer)
    return {"critic": model.save(root / "critic", tokenizer=tokenizer), "standard": standard, "data": data,
            "root": root}


def evaluate(folders, out: Path, limit: int | None = None, **options) -> dict:
    examples = load_eval_examples(DataConfig(data=str(folders["data"]), limit=limit))
    return run_evaluation(examples, EvalConfig(**options), ModelConfig(model=str(folders["critic"])), SCORING,
                          CritiqueConfig(), SamplingConfig(), out)


def test_faithfulness_end_to_end_resumes_and_reads_the_training_layout(folders, tmp_path, capsys):
    out = tmp_path / "eval"
    options = {"samples": 2, "faithfulness": True, "faithfulness_samples": 4}
    evaluate(folders, out, limit=1, **options)
    first = load_examples(out)[0].details
    summary = evaluate(folders, out, **options)  # resumed: only the second pair is evaluated
    assert "1 of 2 examples were evaluated earlier" in capsys.readouterr().out
    assert len((out / "progress.jsonl").read_text().splitlines()) == 2
    results = load_examples(out)
    assert results[0].details == first  # kept from the first run, faithfulness record and token counts included

    model = CriticRewardModel.load(folders["critic"])
    builder = model.sequence_builder(load_tokenizer(str(folders["critic"])))

    def direct(pair: dict, side: str, critique: str) -> float:
        """r(x, y, c) from one unpadded forward pass of the training layout's sequence."""
        encoded = builder.encode(pair["prompt"], pair[side], critique, template=infer_domain(None, pair["subset"]))
        return model.reward(torch.tensor([encoded.input_ids])).item()

    sources = []
    for pair, result in zip(PAIRS, results, strict=True):
        faith = result.details["faithfulness"]
        greedy = faith["critiques"]["own"]
        assert greedy == ["Bad.\nScore: 3/10"] * 2 and faith["written"]["own"] == [3, 3]  # taught: the test can fail
        rewards = faith["rewards"]
        assert rewards["own"] == pytest.approx([direct(pair, "chosen", greedy[0]), direct(pair, "rejected", greedy[1])], abs=1e-4)
        assert rewards["swapped"] == pytest.approx([direct(pair, "chosen", greedy[1]), direct(pair, "rejected", greedy[0])],
                                                   abs=1e-4)
        assert rewards["empty"] == pytest.approx([direct(pair, "chosen", ""), direct(pair, "rejected", "")], abs=1e-4)
        assert rewards["empty"][0] != pytest.approx(rewards["own"][0], abs=1e-4)  # the head reads the critique
        for side, index in (("chosen", 0), ("rejected", 1)):
            opposite, source = faith["critiques"]["opposite"][index], faith["opposite_source"][index]
            sources.append(source)
            assert parse_score(opposite) > 5.5 and faith["written"]["opposite"][index] == parse_score(opposite)
            if source == "replaced":
                assert opposite == with_score(greedy[index], 8)
            assert rewards["opposite"][index] == pytest.approx(direct(pair, side, opposite), abs=1e-4)
        for side in ("chosen", "rejected"):  # per-critique token counts in the dump
            assert all(1 <= c["tokens"] <= SCORING.max_new_tokens for c in result.details[side][0]["critiques"])

    faith = summary["faithfulness"]
    assert faith["n"] == 2 and sum(faith["opposite_source"].values()) == 4
    assert faith["opposite_source"]["sampled"] == sources.count("sampled")
    assert faith["conditions"]["opposite"]["n"] == 2
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["faithfulness"] == json.loads(json.dumps(faith))
    scaling = report["summary"]["inference_scaling"]
    first_tokens = sum(r.details[side][0]["critiques"][0]["tokens"] for r in results for side in ("chosen", "rejected"))
    assert scaling["m_values"] == [1, 2] and scaling["rows"][0]["tokens"] == first_tokens
    assert {row["method"] for row in scaling["rows"]} == {"mean", "vote", "weighted", "adaptive"}
    text = (out / "report.md").read_text()
    assert "## Faithfulness of the reward to its critique" in text and "inference_scaling.png" in text
    assert (out / "inference_scaling.png").is_file()

    with pytest.raises(ConfigError, match="faithfulness changed"):  # no mixing with results made without it
        evaluate(folders, out, samples=2)


def test_faithfulness_refuses_what_it_cannot_measure(folders, tmp_path, capsys):
    with pytest.raises(ConfigError, match="standard-mode reward model and reads no critique"):
        run_evaluation(load_eval_examples(DataConfig(data=str(folders["data"]))), EvalConfig(faithfulness=True),
                       ModelConfig(model=str(folders["standard"])), SCORING, CritiqueConfig(), SamplingConfig(),
                       tmp_path / "standard")
    with pytest.raises(ConfigError, match="standard-mode"):
        RewardScorer.load(folders["standard"]).rewards_of([], [])
    lists = tmp_path / "lists.jsonl"
    lists.write_text(json.dumps({"id": "l", "prompt": "p", "chosen": ["a"], "rejected": ["b", "c"]}) + "\n")
    base = ["eval", "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "out")]
    cases = [(["--data", str(lists), "--eval.faithfulness"], "1 example(s) have lists (first: 'l')"),
             (["--data", str(folders["data"]), "--eval.faithfulness", "--eval.judge", "pairwise"], "has no reward head"),
             (["--data", str(folders["data"]), "--eval.faithfulness-samples", "0"], "faithfulness_samples must be >= 1"),
             (["--data", str(folders["data"]), "--eval.adaptive-spread", "0"], "adaptive_spread must be > 0"),
             (["--data", str(folders["data"]), "--eval.adaptive-spread", "nan"], "adaptive_spread must be a finite")]
    for arguments, message in cases:
        capsys.readouterr()
        assert main([*base, *arguments]) == 2, arguments
        assert message in capsys.readouterr().err
