"""Stage 1a: sample N critiques of every response with the base model (or, in a later self-training round,
the Critic-RM of the round before), each ending in a score.

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

from criticrm import rundir
from criticrm.config import Config
from criticrm.data.jsonl import append_jsonl, read_jsonl_repairing, write_jsonl, write_parquet
from criticrm.data.schema import SIDES, CritiqueRecord, PreferencePair
from criticrm.formatting import percent, rate
from criticrm.generation.base import Generator, SamplingConfig, generate_grouped
from criticrm.generation.factory import GeneratorConfig
from criticrm.prompts.scores import ScorePolicy, choose_score, parse_score
from criticrm.prompts.templates import TemplateSet, load_template


@dataclass
class CritiqueConfig(Config):
    """How critiques are generated (the sampling settings live in SamplingConfig)."""

    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    # 64: 162 generated tok/s against 138 at 32, and 128 no faster (2-core Intel Xeon with AMX, one run; BENCHMARKS.md)
    batch_size: int = field(default=64, metadata={"help": "sequences generated together (prompts x N); records are written after each batch", "min": 1})
    template: str | None = field(default=None, metadata={"help": "force one judge template: general, safety, reasoning or a YAML file (default: per pair domain/subset)"})
    few_shot: bool = field(default=True, metadata={"help": "show the template's example critiques (small base models need them)"})
    score: ScorePolicy = field(default="parsed-or-probability", metadata={"help": "score each record (and each pairwise-judge verdict) uses: parsed-or-probability, parsed or probability"})

    def __post_init__(self):
        super().__post_init__()
        if self.template:
            load_template(self.template)  # a missing or malformed template file fails now, not after loading


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
    rundir.guard(out_dir, _stage_settings(generator, templates, config, sampling), "critiques")
    write_jsonl(out_dir / rundir.PAIRS_FILE, (pair.to_dict() for pair in pairs))  # later stages need the texts
    records_path = out_dir / rundir.RECORDS_FILE
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
        outputs = generate_grouped(generator, [item[3] for item in chunk], [item[2].score_prefix for item in chunk],
                                   sampling)
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
    write_parquet(out_dir / rundir.RECORDS_PARQUET, [r.to_dict() for r in records])
    elapsed = time.perf_counter() - started
    summary = summarize(pairs, records)
    summary["this_run"] = {
        "critiques_generated": generated, "generated_tokens": generated_tokens, "seconds": round(elapsed, 2),
        "critiques_per_s": round(generated / elapsed, 3) if generated else None,
        "tokens_per_s": round(generated_tokens / elapsed, 1) if generated else None,
    }
    (out_dir / rundir.CRITIQUE_SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def _mean_or_none(values: list[float]) -> float | None:
    return round(mean(values), 3) if values else None


def label_agreement(records: list[CritiqueRecord], attribute: str,
                    pairs: list[PreferencePair] | None = None) -> dict[str, dict]:
    """How often the critiques' model agrees with the human labels, per subset and over "all" pairs.

    The one rule: a pair agrees when the mean `attribute` score of its chosen-response critiques is above
    that of its rejected-response critiques; equal means are a tie, and a pair without a score on a side
    is unscored. Ties and unscored pairs are not agreement; `agreement` is over the scored pairs. The pairs
    are `pairs` (those without records count as unscored), else every pair that has records.
    """
    scores: dict[str, dict[str, list[float]]] = defaultdict(lambda: {side: [] for side in SIDES})
    subset_of = {pair.id: pair.subset for pair in pairs} if pairs is not None else {}
    for record in records:
        if pairs is None:
            subset_of.setdefault(record.pair_id, record.subset)
        value = getattr(record, attribute)
        if value is not None:
            scores[record.pair_id][record.side].append(value)

    def counts() -> dict[str, int]:
        return {"pairs": 0, "agree": 0, "disagree": 0, "tie": 0, "unscored": 0}

    table = {"all": counts()}
    for pair_id, subset in subset_of.items():
        chosen, rejected = (scores[pair_id][side] if pair_id in scores else [] for side in SIDES)
        if not chosen or not rejected:
            verdict = "unscored"
        else:
            verdict = "agree" if mean(chosen) > mean(rejected) else "disagree" if mean(chosen) < mean(rejected) else "tie"
        for key in (subset or "(none)", "all"):
            row = table.setdefault(key, counts())
            row["pairs"] += 1
            row[verdict] += 1
    for row in table.values():
        row["agreement"] = rate(row["agree"], row["pairs"] - row["unscored"])
    return dict(sorted(table.items(), key=lambda item: (item[0] == "all", item[0])))


def summarize(pairs: list[PreferencePair], records: list[CritiqueRecord]) -> dict:
    """Counts, parse rate, mean scores per side, and how often the critiques agree with the labels."""
    total = len(records)
    agreement = {label: label_agreement(records, attribute, pairs) for label, attribute in
                 (("score", "score"), ("parsed", "parsed_score"), ("probability", "probability_score"))}
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
        "label_agreement": {label: table["all"] for label, table in agreement.items()},
        "label_agreement_by_subset": {name: row for name, row in agreement["score"].items() if name != "all"},
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
        "the critiques agree with the human label on "
        f"{percent(agreement['score']['agreement'])} of pairs (parsed only: {percent(agreement['parsed']['agreement'])}, "
        f"probability only: {percent(agreement['probability']['agreement'])})",
    ]
    run = summary.get("this_run") or {}
    if run.get("critiques_generated"):
        lines.append(f"this run: {run['critiques_generated']} critiques, {run['generated_tokens']} tokens in "
                     f"{run['seconds']} s ({run['tokens_per_s']} tok/s)")
    return "\n".join(lines)
