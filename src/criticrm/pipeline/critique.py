"""Stage 1a: sample N critiques of every response with the base model, each ending in a score.

The pairs themselves are written to `pairs.jsonl` (later stages read texts from there).
Records are appended to `critiques.jsonl` batch by batch, so a killed run loses at most the batch
in flight; running the same command again reads what is there and generates only what is missing.
At the end the stage writes `critiques.parquet` and `summary.json` and prints the summary.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean

from tqdm import tqdm

from criticrm.config_checks import check_fields
from criticrm.data.jsonl import append_jsonl, read_jsonl_repairing, write_jsonl, write_parquet
from criticrm.data.schema import SIDES, CritiqueRecord, PreferencePair
from criticrm.formatting import percent, rate
from criticrm.generation.base import Generator, SamplingConfig, check_server_url
from criticrm.pipeline.runner import check_stage_settings
from criticrm.prompts.scores import parse_score
from criticrm.prompts.templates import TemplateSet, load_template

SCORE_CHOICES = ("parsed-or-probability", "parsed", "probability")
RECORDS_FILE = "critiques.jsonl"
PAIRS_FILE = "pairs.jsonl"


@dataclass
class CritiqueConfig:
    """How critiques are generated (the sampling settings live in SamplingConfig)."""

    backend: str = field(default="huggingface", metadata={"help": "huggingface | openai (any OpenAI-compatible server)"})
    base_url: str | None = field(default=None, metadata={"help": "server URL for --backend openai, e.g. http://127.0.0.1:8000"})
    api_key: str | None = field(default=None, metadata={"help": "bearer token for the server (default: $OPENAI_API_KEY)"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer (chat template) for --backend openai; default: --model, else the default model's"})
    concurrency: int = field(default=8, metadata={"help": "parallel requests for --backend openai", "min": 1})
    timeout: float = field(default=120.0, metadata={"help": "seconds per request for --backend openai", "above": 0})
    max_retries: int = field(default=4, metadata={"help": "retries with backoff per request for --backend openai", "min": 0})
    batch_size: int = field(default=32, metadata={"help": "sequences generated together (prompts x N); records are written after each batch", "min": 1})
    template: str | None = field(default=None, metadata={"help": "force one judge template: general, safety, reasoning or a YAML file (default: per pair domain/subset)"})
    few_shot: bool = field(default=True, metadata={"help": "show the template's example critiques (small base models need them)"})
    score: str = field(default="parsed-or-probability", metadata={"help": "score each record (and each pairwise-judge verdict) uses: parsed-or-probability, parsed or probability"})

    def __post_init__(self):
        if self.backend not in ("huggingface", "openai"):
            raise ValueError(f"backend must be huggingface or openai, got {self.backend!r}")
        if self.score not in SCORE_CHOICES:
            raise ValueError(f"score must be one of {', '.join(SCORE_CHOICES)}, got {self.score!r}")
        check_fields(self)
        check_server_url(self.backend, self.base_url)
        if self.template:
            load_template(self.template)  # a missing or malformed template file fails now, not after loading


def choose_score(parsed: float | None, probability: float | None, policy: str) -> tuple[float | None, str | None]:
    """The score a record uses and where it came from; None when the chosen source has nothing."""
    if policy == "parsed" or (policy == "parsed-or-probability" and parsed is not None):
        return (parsed, "parsed") if parsed is not None else (None, None)
    return (probability, "probability") if probability is not None else (None, None)


def _stage_settings(generator: Generator, templates: TemplateSet, config: CritiqueConfig,
                    sampling: SamplingConfig) -> dict:
    return {
        "backend": generator.backend,
        "model": generator.model_name,
        "sampling": asdict(sampling),
        "template": config.template,
        "template_hashes": templates.hashes(),
        "few_shot": config.few_shot,
        "score": config.score,
    }


def run_critique(pairs: list[PreferencePair], generator: Generator, templates: TemplateSet,
                 config: CritiqueConfig, sampling: SamplingConfig, out_dir: Path,
                 show_progress: bool = True) -> dict:
    """Generate the missing critiques of `pairs` into `out_dir`; return (and write) the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    check_stage_settings(out_dir, _stage_settings(generator, templates, config, sampling), "critiques")
    write_jsonl(out_dir / PAIRS_FILE, (pair.to_dict() for pair in pairs))  # later stages need the texts
    records_path = out_dir / RECORDS_FILE
    done = {CritiqueRecord.from_dict(r).key for r in read_jsonl_repairing(records_path)}
    n = sampling.num_critiques

    pending = []  # (pair, side, template, conversation) still missing at least one sample
    for pair in pairs:
        template = templates.for_pair(pair.domain, pair.subset)
        for side in SIDES:
            if any((pair.id, side, i) not in done for i in range(n)):
                messages = template.messages(pair.prompt, pair.response(side), few_shot=config.few_shot)
                pending.append((pair, side, template, messages))
    # One template and similar lengths per batch: the backend shares the template's prefix across the
    # batch, and similar lengths waste less padding.
    pending.sort(key=lambda item: (item[2].name, -sum(len(m["content"]) for m in item[3])))

    started, generated_tokens, generated = time.perf_counter(), 0, 0
    per_write = max(1, config.batch_size // n)
    bar = tqdm(total=len(pending) * n, unit="critique", desc="critiques", disable=not show_progress,
               initial=0, dynamic_ncols=True)
    for start in range(0, len(pending), per_write):
        chunk = pending[start:start + per_write]
        outputs = generate_grouped(generator, chunk, sampling)
        rows = []
        for (pair, side, template, _), completions in zip(chunk, outputs, strict=True):
            for index, completion in enumerate(completions):
                if (pair.id, side, index) in done:
                    continue
                parsed = parse_score(completion.text)
                probability = completion.probability
                score, source = choose_score(parsed, probability.score if probability else None, config.score)
                rows.append(CritiqueRecord(
                    pair_id=pair.id, side=side, sample_index=index, critique=completion.text,
                    parsed_score=parsed, probability_score=probability.score if probability else None,
                    score=score, score_source=source, score_mass=probability.mass if probability else None,
                    prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens,
                    finish_reason=completion.finish_reason, backend=generator.backend, model=generator.model_name,
                    template=template.name, template_hash=template.hash, subset=pair.subset,
                ).to_dict())
                generated_tokens += completion.completion_tokens
        append_jsonl(records_path, rows)
        generated += len(rows)
        elapsed = time.perf_counter() - started
        bar.update(len(chunk) * n)
        bar.set_postfix(tok_s=f"{generated_tokens / elapsed:.0f}", crit_s=f"{generated / elapsed:.2f}")
    bar.close()

    records = [CritiqueRecord.from_dict(r) for r in read_jsonl_repairing(records_path)]
    wanted = {pair.id for pair in pairs}
    records = [r for r in records if r.pair_id in wanted]
    write_parquet(out_dir / "critiques.parquet", [r.to_dict() for r in records])
    elapsed = time.perf_counter() - started
    summary = summarize(pairs, records)
    summary["this_run"] = {
        "critiques_generated": generated, "generated_tokens": generated_tokens, "seconds": round(elapsed, 2),
        "critiques_per_s": round(generated / elapsed, 3) if generated else None,
        "tokens_per_s": round(generated_tokens / elapsed, 1) if generated else None,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def generate_grouped(generator: Generator, chunk, sampling: SamplingConfig):
    """Completions of (pair, side, template, conversation) items, one call per score prefix.

    The built-in templates all share one prefix. The pointwise judge of `criticrm eval` generates with it too.
    """
    results = [None] * len(chunk)
    for prefix in {item[2].score_prefix for item in chunk}:
        indices = [i for i, item in enumerate(chunk) if item[2].score_prefix == prefix]
        outputs = generator.generate([chunk[i][3] for i in indices], sampling, score_prefix=prefix)
        for i, completions in zip(indices, outputs, strict=True):
            results[i] = completions
    return results


def _mean_or_none(values: list[float]) -> float | None:
    return round(mean(values), 3) if values else None


def summarize(pairs: list[PreferencePair], records: list[CritiqueRecord]) -> dict:
    """Counts, parse rate, mean scores per side, and how often the base model agrees with the labels."""
    by_pair: dict[str, dict[str, list[CritiqueRecord]]] = defaultdict(lambda: {"chosen": [], "rejected": []})
    for record in records:
        by_pair[record.pair_id][record.side].append(record)

    def agreement(attribute: str, subset: str | None = None) -> dict:
        agree = disagree = tie = missing = 0
        for pair in pairs:
            if subset is not None and pair.subset != subset:
                continue
            sides = by_pair.get(pair.id)
            chosen = [getattr(r, attribute) for r in (sides or {}).get("chosen", []) if getattr(r, attribute) is not None]
            rejected = [getattr(r, attribute) for r in (sides or {}).get("rejected", []) if getattr(r, attribute) is not None]
            if not chosen or not rejected:
                missing += 1
            elif mean(chosen) > mean(rejected):
                agree += 1
            elif mean(chosen) < mean(rejected):
                disagree += 1
            else:
                tie += 1
        judged = agree + disagree + tie
        return {"agree": agree, "disagree": disagree, "tie": tie, "unscored": missing,
                "agreement": rate(agree, judged)}

    subsets = sorted({p.subset for p in pairs if p.subset})
    total = len(records)
    return {
        "pairs": len(pairs),
        "critiques": total,
        "critiques_per_side": {side: sum(r.side == side for r in records) for side in SIDES},
        "parse_rate": rate(sum(r.parsed_score is not None for r in records), total),
        "probability_rate": rate(sum(r.probability_score is not None for r in records), total),
        "truncated_rate": rate(sum(r.finish_reason == "length" for r in records), total),
        "score_sources": {s: sum(r.score_source == s for r in records) for s in ("parsed", "probability", None)},
        "mean_score": {side: _mean_or_none([r.score for r in records if r.side == side and r.score is not None]) for side in SIDES},
        "mean_parsed_score": {side: _mean_or_none([r.parsed_score for r in records if r.side == side and r.parsed_score is not None]) for side in SIDES},
        "mean_probability_score": {side: _mean_or_none([r.probability_score for r in records if r.side == side and r.probability_score is not None]) for side in SIDES},
        "label_agreement": {
            "score": agreement("score"),
            "parsed": agreement("parsed_score"),
            "probability": agreement("probability_score"),
        },
        "label_agreement_by_subset": {s: agreement("score", s) for s in subsets},
    }


def format_summary(summary: dict) -> str:
    """A short human-readable summary for the terminal."""
    agreement = summary["label_agreement"]

    lines = [
        f"critiques: {summary['critiques']} for {summary['pairs']} pairs "
        f"(chosen {summary['critiques_per_side']['chosen']}, rejected {summary['critiques_per_side']['rejected']})",
        f"written score parsed: {percent(summary['parse_rate'])}; probability score: {percent(summary['probability_rate'])}; "
        f"cut at max-new-tokens: {percent(summary['truncated_rate'])}",
        f"mean score chosen {summary['mean_score']['chosen']} vs rejected {summary['mean_score']['rejected']}",
        "base model agrees with the human label on "
        f"{percent(agreement['score']['agreement'])} of pairs (parsed only: {percent(agreement['parsed']['agreement'])}, "
        f"probability only: {percent(agreement['probability']['agreement'])})",
    ]
    run = summary.get("this_run") or {}
    if run.get("critiques_generated"):
        lines.append(f"this run: {run['critiques_generated']} critiques, {run['generated_tokens']} tokens in "
                     f"{run['seconds']} s ({run['tokens_per_s']} tok/s)")
    return "\n".join(lines)
