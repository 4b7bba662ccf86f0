"""Stage 1a on the real default model: the Hugging Face backend, the records, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from criticrm.data.readers import DataConfig, load_pairs
from criticrm.generation.base import SamplingConfig
from criticrm.generation.huggingface import HFGenerator
from criticrm.models.backbone import ModelConfig, load_causal_lm
from criticrm.pipeline.critique import CritiqueConfig, run_critique
from criticrm.prompts.templates import TemplateSet

pytestmark = pytest.mark.model
SAMPLE = Path(__file__).parent.parent / "data" / "sample" / "train.jsonl"


@pytest.fixture(scope="module")
def generator():
    model, tokenizer = load_causal_lm(ModelConfig(dtype="fp32"))
    return HFGenerator(model, tokenizer, "SmolLM2-135M-Instruct", batch_size=8)


@pytest.fixture(scope="module")
def pairs():
    return load_pairs(DataConfig(data=str(SAMPLE), limit=2)).pairs


def conversations(pairs):
    template = TemplateSet().for_pair(None, None)
    return [template.messages(p.prompt, p.response(side)) for p in pairs for side in ("chosen", "rejected")]


def test_hf_backend_greedy_is_deterministic_and_batch_independent(generator, pairs):
    greedy = SamplingConfig(num_critiques=1, temperature=0.0, max_new_tokens=24)
    convs = conversations(pairs)
    together = generator.generate(convs, greedy, score_prefix="Score: ")
    alone = generator.generate(convs[:1], greedy, score_prefix="Score: ")
    assert [c.text for c in together[0]] == [c.text for c in alone[0]]
    assert together[0][0].probability.score == pytest.approx(alone[0][0].probability.score, abs=1e-3)
    for completions in together:
        (completion,) = completions
        assert completion.text and completion.completion_tokens > 0 and completion.prompt_tokens > 300
        assert completion.finish_reason in ("stop", "length")
        assert 1.0 <= completion.probability.score <= 10.0 and 0.0 < completion.probability.mass <= 1.0 + 1e-6


def test_shared_prefill_matches_separate_prompts(generator, pairs):
    """Sharing the prompt prefill across N samples must not change what greedy decoding writes."""
    greedy = SamplingConfig(num_critiques=2, temperature=0.0, max_new_tokens=16)
    out = generator.generate(conversations(pairs)[:2], greedy)
    for completions in out:
        assert completions[0].text == completions[1].text


def test_stage_writes_records_summary_and_resumes(generator, pairs, tmp_path):
    sampling = SamplingConfig(num_critiques=2, temperature=0.8, max_new_tokens=24, seed=1)
    config = CritiqueConfig(batch_size=4)
    summary = run_critique(pairs, generator, TemplateSet(), config, sampling, tmp_path, show_progress=False)
    records = [json.loads(line) for line in (tmp_path / "critiques.jsonl").read_text().splitlines()]
    assert len(records) == summary["critiques"] == 2 * 2 * 2
    assert {(r["pair_id"], r["side"], r["sample_index"]) for r in records} == {
        (p.id, side, i) for p in pairs for side in ("chosen", "rejected") for i in range(2)}
    for record in records:
        assert record["backend"] == "huggingface" and record["template"] == "general" and record["template_hash"]
        assert record["probability_score"] is not None
        expected = record["parsed_score"] if record["parsed_score"] is not None else record["probability_score"]
        assert record["score"] == expected
        assert record["score_source"] == ("parsed" if record["parsed_score"] is not None else "probability")
    assert (tmp_path / "critiques.parquet").exists() and (tmp_path / "pairs.jsonl").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["critiques"] == 8
    again = run_critique(pairs, generator, TemplateSet(), config, sampling, tmp_path, show_progress=False)
    assert again["this_run"]["critiques_generated"] == 0  # everything was there already

    from criticrm.errors import ConfigError

    with pytest.raises(ConfigError, match="other settings"):
        run_critique(pairs, generator, TemplateSet(), config, SamplingConfig(num_critiques=3, max_new_tokens=24),
                     tmp_path, show_progress=False)


def test_sigkill_then_resume_loses_nothing_and_duplicates_nothing(tmp_path):
    out = tmp_path / "crit"
    command = [sys.executable, "-m", "criticrm", "critique", "--data", str(SAMPLE), "--limit", "4",
               "--out", str(out), "--num-critiques", "2", "--max-new-tokens", "16", "--batch-size", "2",
               "--dtype", "fp32"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = out / "critiques.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (records.exists() and records.read_text().count("\n") >= 2):
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = records.read_text()
    assert before.count("\n") >= 2, "the run never wrote its first batch"
    with records.open("a") as handle:  # the worst case: killed in the middle of writing a line
        handle.write('{"pair_id": "torn", "side": "cho')
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    lines = records.read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    keys = [(r["pair_id"], r["side"], r["sample_index"]) for r in rows]
    assert len(keys) == len(set(keys)) == 4 * 2 * 2
    assert records.read_text().startswith(before)  # what was written before the kill is untouched
