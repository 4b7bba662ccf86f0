"""RewardBench's results file beside criticrm's report, so a criticrm number can go beside the leaderboard's.

Upstream's runners (allenai/reward-bench, scripts/run_rm.py and scripts/run_v2.py) save `results_grouped`:
`{"model", "model_type", "chat_template", <subset>: score}`, one score per subset present (the share of
examples whose chosen response won; best-of-N credit for RewardBench 2's lists; the Ties score for its Ties
subset), written by `save_to_hub` (rewardbench/utils.py) as JSON with indent 4 and sorted keys. Section and
overall scores are not in it: the leaderboard computes them from the subsets.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS_FILE = "rewardbench.json"
# criticrm's kinds of model as RewardBench's model types (rewardbench/models/__init__.py, and
# scripts/run_generative.py for LLM judges): a critic-mode model reads a classifier head after its own
# generated critique, inference code of its own
MODEL_TYPES = {"reward-model-standard": "Seq. Classifier", "reward-model-critic": "Custom Classifier",
               "judge-pointwise": "Generative RM", "judge-pairwise": "Generative RM"}


def chat_template_name(tokenizer) -> str:
    """Upstream's `chat_template` entry: "tokenizer" when the tokenizer's own template renders the prompts
    (as criticrm does whenever it has one), else the template used instead (criticrm's plain ChatML)."""
    return "tokenizer" if getattr(tokenizer, "chat_template", None) else "chatml"


def write_rewardbench_results(out_dir: Path, meta: dict, summary: dict) -> Path:
    """Write `rewardbench.json` from an evaluation's metadata and summary (`metrics.summarize`)."""
    results = {"model": meta["model"], "model_type": MODEL_TYPES[meta["kind"]],
               "chat_template": meta["chat_template"],
               **{name: row["accuracy"] for name, row in summary["subsets"].items()}}
    path = Path(out_dir) / RESULTS_FILE
    path.write_text(json.dumps(results, indent=4, sort_keys=True), encoding="utf-8")
    return path
