"""Stage 1c: refine the kept critiques of every pair with the model as meta-judge; write the dataset.

Strategies (DESIGN §1):
- `rank` (default; the paper's best row, "Critic-RM-Rank"): the model ranks the kept critiques of a
  response, best first, and the top `top_k` are kept. With more than two critiques one listwise
  prompt is asked; with exactly two (and `top_k` 1) the pair is compared in both orders, and only a
  verdict that survives the swap counts (small models mostly pick a position, not a critique).
- `summarize`: the model merges the kept critiques of a response into one critique ending in a
  score; the merged critique must itself pass the critique-level rule, else the best kept
  critique is used instead (a counted fallback).
- `none`: every kept critique.

"Better" by score means agreeing more strongly with the human label: a higher score for a critique
of the chosen response, a lower one for the rejected response. Critiques are shown to the model in
that order, and that order decides whatever the model leaves open (unparseable answers, missing
numbers, inconsistent pairwise verdicts), so a model that only echoes the listed order degrades to
score ranking; `refine_stats.json` counts how often the model actually reordered.

Reward-only pairs are not refined: all their scored critiques condition the reward. Results are
appended to `refined.jsonl` per batch, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from criticrm import rundir
from criticrm.config import Config
from criticrm.data.jsonl import append_jsonl, read_jsonl_repairing, write_jsonl, write_parquet
from criticrm.data.schema import SIDES, ScoredCritique, TrainingPair
from criticrm.errors import ConfigError
from criticrm.formatting import percent
from criticrm.generation.base import Completion, Generator, SamplingConfig
from criticrm.pipeline.filter import FilterDecision
from criticrm.prompts import refine as prompts
from criticrm.prompts.scores import parse_score, strip_score_line

DEFAULT_MAX_NEW_TOKENS = {"rank": 16, "summarize": 128}

# Per-side outcomes (refine_stats.json).
SUCCESS_OUTCOMES = ("ranked", "partial-ranking", "pairwise-consistent", "summarized")
FALLBACK_OUTCOMES = ("ranking-unparsed", "pairwise-inconsistent", "pairwise-unparsed", "summary-no-score",
                     "summary-failed-rule", "summary-empty", "summary-copied-example")


@dataclass
class RefineConfig(Config):
    """How the kept critiques are refined (the model and backend come from the model/critique options)."""

    RENAMED = {"refine_max_new_tokens": "max_new_tokens", "refine_batch_size": "batch_size"}

    strategy: Literal["rank", "summarize", "none"] = field(default="rank", metadata={"help": "rank (keep the model's top-k), summarize (merge into one) or none (keep all)"})
    top_k: int = field(default=2, metadata={"help": "critiques kept per response by strategy rank", "min": 1})
    max_new_tokens: int | None = field(default=None, metadata={"help": "longest meta-judge answer, in tokens (default: 16 for rank, 128 for summarize)", "min": 1})
    batch_size: int = field(default=8, metadata={"help": "pairs refined per generation call; results are written after each", "min": 1})

    @property
    def answer_tokens(self) -> int:
        """The longest answer asked of the model: `max_new_tokens`, else the strategy's default."""
        return self.max_new_tokens or DEFAULT_MAX_NEW_TOKENS.get(self.strategy, 16)


# ----------------------------------------------------------------------------------------------- parsing

_NUMBER = re.compile(r"(?<![\d/])(?<!\d\.)(\d+)(?!\d|\.\d|\s*/\s*\d)")  # whole numbers, not "3/10" nor "2.5"


def parse_ranking(text: str, count: int) -> list[int]:
    """Critique numbers (0-based) in the order the answer gives them; invalid and repeated ones dropped.

    Reads the line after "Ranking:" when it holds a valid number, else the whole answer, so
    "Ranking: 2, 3, 1", "2 > 3 > 1" and "Critique 2 is best, then 3" all give [1, 2, 0]. Numbers
    written as scores ("8/10") are ignored. Returns [] when no valid number is found.
    """
    regions = []
    match = re.search(re.escape(prompts.RANKING_PREFIX.rstrip(":")) + r"\s*:?", text, re.IGNORECASE)
    if match:
        regions.append(text[match.end():].split("\n", 1)[0])
    regions.append(text)
    for region in regions:
        order: list[int] = []
        for number in _NUMBER.findall(region):
            index = int(number) - 1
            if 0 <= index < count and index not in order:
                order.append(index)
        if order:
            return order
    return []


def complete_order(partial: list[int], count: int) -> list[int]:
    """`partial` followed by the missing positions in presented order (= score order)."""
    return partial + [i for i in range(count) if i not in partial]


def strength_order(side: str, critiques: list[ScoredCritique]) -> list[ScoredCritique]:
    """Best first by score: the critique that agrees most with the label (stable for equal scores)."""
    sign = -1.0 if side == "chosen" else 1.0
    return sorted(critiques, key=lambda c: sign * c.score)


_ECHO = re.compile(r"^\s*(\[(critique|request|response)\b|below are a request|now write)", re.IGNORECASE | re.MULTILINE)
_HEADING = re.compile(r"^\s*\[?(merged |combined |final |short )?critique\]?\s*:\s*\n?", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?][\"')\]]?(?=\s|$)")


def clean_summary(text: str, truncated: bool = False) -> str:
    """The merged critique without what small models add around it.

    Observed on the default model: a "Critique:" heading, a continuation that echoes the prompt
    ("[Critique 5] ...", the instruction), and greedy repetition loops (the same paragraph or
    sentence again and again, the last copy cut at max-new-tokens). The text is cut at the first
    echoed section marker, repeated sentences are kept once, and an answer that hit the token limit
    loses its unfinished last sentence.
    """
    text = _HEADING.sub("", text.strip(), count=1)
    echo = _ECHO.search(text)
    if echo:
        text = text[: echo.start()]
    seen: list[str] = []  # normalised sentences already kept
    blocks = []
    for block in re.split(r"\n\s*\n", text):
        lines = []
        for line in block.splitlines():
            kept = []
            for sentence in re.split(r"(?<=[.!?])\s+", line.strip()):
                key = " ".join(sentence.split()).lower()
                if key and not any(k.startswith(key) for k in seen):  # not a repeat, nor a cut-off repeat
                    seen.append(key)
                    kept.append(sentence)
            if kept:
                lines.append(" ".join(kept))
        if lines:
            blocks.append("\n".join(lines))
    text = "\n\n".join(blocks)
    if truncated and parse_score(text) is None:
        ends = list(_SENTENCE_END.finditer(text))
        if ends and ends[-1].end() < len(text):
            text = text[: ends[-1].end()]
    return text.strip()


# ------------------------------------------------------------------------------------------- one response

@dataclass
class _SideJob:
    """The refinement of one response: the calls it needs and how to turn their answers into critiques."""

    decision: FilterDecision
    side: str
    candidates: list[ScoredCritique]  # strength order = presented order
    conversations: list[list[dict[str, str]]]
    kind: str  # "listwise" | "pairwise" | "summarize" | "" (no call)


def _plan_side(decision: FilterDecision, side: str, config: RefineConfig) -> _SideJob:
    candidates = strength_order(side, decision.critiques(side))
    pair = decision.pair
    response = pair.response(side)
    texts = [c.text for c in candidates]
    if config.strategy == "rank" and len(candidates) > config.top_k:
        if len(candidates) == 2:  # top_k is 1: compare the two in both orders
            conversations = [prompts.rank_messages(pair.prompt, response, side, texts),
                             prompts.rank_messages(pair.prompt, response, side, texts[::-1])]
            return _SideJob(decision, side, candidates, conversations, "pairwise")
        return _SideJob(decision, side, candidates, [prompts.rank_messages(pair.prompt, response, side, texts)],
                        "listwise")
    if config.strategy == "summarize" and len(candidates) > 1:
        return _SideJob(decision, side, candidates, [prompts.summarize_messages(pair.prompt, response, texts)],
                        "summarize")
    return _SideJob(decision, side, candidates, [], "")


def _resolve_side(job: _SideJob, answers: list[Completion], config: RefineConfig) -> tuple[list[ScoredCritique], dict]:
    """The refined critiques of one response and a small record of what happened."""
    candidates, count = job.candidates, len(job.candidates)
    if job.kind == "":  # none: all, in sampled order; rank: at most top_k; summarize: the single one
        if config.strategy == "none":
            return job.decision.critiques(job.side), {"outcome": "no-call"}
        return candidates[: config.top_k] if config.strategy == "rank" else candidates, {"outcome": "no-call"}
    texts = [answer.text for answer in answers]
    if job.kind == "listwise":
        parsed = parse_ranking(texts[0], count)
        order = complete_order(parsed, count)
        outcome = ("ranking-unparsed" if not parsed else "ranked" if len(parsed) >= count - 1 else "partial-ranking")
        echoed = count >= len(prompts.RANK_EXAMPLE_ORDER) and tuple(parsed[:3]) == prompts.RANK_EXAMPLE_ORDER
        return [candidates[i] for i in order[: config.top_k]], {
            "outcome": outcome, "answers": texts, "order": order, "reordered": order != list(range(count)),
            "echoed_example": echoed}
    if job.kind == "pairwise":
        first = parse_ranking(texts[0], 2)
        second = parse_ranking(texts[1], 2)
        winners = [first[0] if first else None, (1 - second[0]) if second else None]
        if None in winners:
            outcome, winner = "pairwise-unparsed", 0
        elif winners[0] != winners[1]:
            outcome, winner = "pairwise-inconsistent", 0
        else:
            outcome, winner = "pairwise-consistent", winners[0]
        order = [winner, 1 - winner]
        return [candidates[i] for i in order[: config.top_k]], {
            "outcome": outcome, "answers": texts, "order": order, "reordered": winner != 0}
    # summarize
    answer = answers[0]
    text = clean_summary(answer.text, truncated=answer.finish_reason == "length")
    parsed = parse_score(text)
    score, source = (parsed, "parsed") if parsed is not None else (
        (answer.probability.score, "probability") if answer.probability else (None, None))
    info = {"answers": texts, "score": score, "score_from": source}
    if not strip_score_line(text):
        return candidates[:1], {**info, "outcome": "summary-empty"}
    if prompts.copies_example(text):
        return candidates[:1], {**info, "outcome": "summary-copied-example"}
    if score is None:
        return candidates[:1], {**info, "outcome": "summary-no-score"}
    if not job.decision.agrees(job.side, score):
        return candidates[:1], {**info, "outcome": "summary-failed-rule"}
    if parsed is None:  # the training target must end in a score line like every other critique
        text = f"{text.rstrip()}\n{prompts.SCORE_PREFIX}{round(score)}/10"
    return [ScoredCritique(text=text, score=round(float(score), 4))], {**info, "outcome": "summarized"}


def _training_pair(decision: FilterDecision, critiques: dict[str, list[ScoredCritique]]) -> TrainingPair:
    pair = decision.pair
    return TrainingPair(
        id=pair.id, prompt=pair.prompt, chosen=pair.chosen, rejected=pair.rejected,
        chosen_critiques=critiques["chosen"], rejected_critiques=critiques["rejected"],
        critique_supervision=decision.supervised, template=decision.template, subset=pair.subset,
        domain=pair.domain, source=pair.source, margin=pair.margin, judge_margin=decision.judge_margin,
    )


def refine_batch(decisions: list[FilterDecision], generator: Generator | None, config: RefineConfig) -> list[dict]:
    """Refine a batch of pairs with one generation call; one `refined.jsonl` row per pair."""
    jobs: dict[tuple[int, str], _SideJob] = {}
    for index, decision in enumerate(decisions):
        for side in SIDES:
            if decision.supervised:
                jobs[(index, side)] = _plan_side(decision, side, config)
    conversations = [c for job in jobs.values() for c in job.conversations]
    answers: list[Completion] = []
    if conversations:
        if generator is None:
            raise ConfigError(f"refine strategy {config.strategy} needs a model to generate with")
        sampling = SamplingConfig(num_critiques=1, temperature=0.0, max_new_tokens=config.answer_tokens)
        score_prefix = prompts.SCORE_PREFIX if config.strategy == "summarize" else None
        answers = [c[0] for c in generator.generate(conversations, sampling, score_prefix=score_prefix)]
    rows, cursor = [], 0
    for index, decision in enumerate(decisions):
        critiques, meta = {}, {}
        for side in SIDES:
            job = jobs.get((index, side))
            if job is None:  # reward-only: every scored critique conditions the reward
                critiques[side], meta[side] = decision.critiques(side), {"outcome": "reward-only"}
                continue
            taken = answers[cursor: cursor + len(job.conversations)]
            cursor += len(job.conversations)
            critiques[side], meta[side] = _resolve_side(job, taken, config)
            meta[side]["candidates"] = len(job.candidates)
        rows.append({"id": decision.pair.id, "row": _training_pair(decision, critiques).to_dict(), "meta": meta})
    return rows


# --------------------------------------------------------------------------------------------- the stage

def _with_sampled(row: dict, decision: FilterDecision) -> dict:
    """A supervised pair's training row, with every critique sampled for it beside the refined ones (what the
    reward reads under `reward_critiques: sampled`). Attached when `train.jsonl` is written, not stored in
    `refined.jsonl`, so a refinement cache made before the lists existed still serves."""
    if not decision.supervised or not (decision.sampled_chosen and decision.sampled_rejected):
        return row
    return row | {f"sampled_{side}_critiques": [vars(c) for c in decision.sampled(side)] for side in SIDES}


def _input_hash(decisions: list[FilterDecision]) -> str:
    """What refinement depends on: the sampled lists are left out (they only ride along to `train.jsonl`)."""
    rows = [{k: v for k, v in d.to_dict().items() if k not in ("sampled_chosen", "sampled_rejected")}
            for d in decisions]
    payload = json.dumps(rows, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def run_refine(decisions: list[FilterDecision], generator: Generator | None, config: RefineConfig, out_dir: Path,
               show_progress: bool = True) -> dict:
    """Refine the pairs not yet in `out_dir`, then write `train.jsonl`, `train.parquet` and the stats."""
    out_dir.mkdir(parents=True, exist_ok=True)
    needs_model = config.strategy != "none"
    settings = {"strategy": config.strategy, "top_k": config.top_k if config.strategy == "rank" else None,
                "max_new_tokens": config.answer_tokens if needs_model else None,
                "backend": generator.backend if generator and needs_model else None,
                "model": generator.model_name if generator and needs_model else None,
                "prompts": prompts.prompts_hash() if needs_model else None,
                "input": _input_hash(decisions)}
    rundir.guard(out_dir, settings, "refined pairs")
    refined_path = out_dir / rundir.REFINED_FILE
    done = {row["id"]: row for row in read_jsonl_repairing(refined_path)}
    pending = [d for d in decisions if d.pair.id not in done]
    # Pairs that need no model call go first, all at once; the rest in batches of similar size.
    quick = [d for d in pending if not d.supervised or all(not _plan_side(d, s, config).conversations for s in SIDES)]
    quick_ids = {d.pair.id for d in quick}
    slow = [d for d in pending if d.pair.id not in quick_ids]

    started, calls = time.perf_counter(), 0
    bar = tqdm(total=len(decisions), initial=len(decisions) - len(pending), unit="pair", desc="refine",
               disable=not show_progress, dynamic_ncols=True)
    if quick:
        rows = refine_batch(quick, generator, config)
        append_jsonl(refined_path, rows)
        done.update((row["id"], row) for row in rows)
        bar.update(len(quick))
        bar.refresh()
    for start in range(0, len(slow), config.batch_size):
        chunk = slow[start:start + config.batch_size]
        rows = refine_batch(chunk, generator, config)
        calls += sum(len(m.get("answers", [])) for row in rows for m in row["meta"].values())
        append_jsonl(refined_path, rows)
        done.update((row["id"], row) for row in rows)
        bar.update(len(chunk))
        bar.set_postfix(calls_s=f"{calls / (time.perf_counter() - started):.2f}")
    bar.close()

    ordered = [done[d.pair.id] for d in decisions]
    train_rows = [_with_sampled(row["row"], d) for row, d in zip(ordered, decisions, strict=True)]
    write_jsonl(out_dir / rundir.TRAIN_FILE, train_rows)
    write_parquet(out_dir / rundir.TRAIN_PARQUET, train_rows)
    stats = refine_stats(ordered, config)
    seconds = time.perf_counter() - started
    stats["this_run"] = {"pairs_refined": len(pending), "model_calls": calls, "seconds": round(seconds, 2),
                         "calls_per_s": round(calls / seconds, 3) if calls else None}
    (out_dir / rundir.REFINE_STATS_FILE).write_text(json.dumps(stats, indent=2))
    return stats


def refine_stats(rows: list[dict], config: RefineConfig) -> dict:
    """Outcome counts per side, successes, fallbacks and the output size, from `refined.jsonl` rows."""
    outcomes = {side: Counter(row["meta"][side]["outcome"] for row in rows) for side in SIDES}
    asked = {side: sum(n for o, n in outcomes[side].items() if o not in ("no-call", "reward-only")) for side in SIDES}
    successes = sum(outcomes[s][o] for s in SIDES for o in SUCCESS_OUTCOMES)
    fallbacks = sum(outcomes[s][o] for s in SIDES for o in FALLBACK_OUTCOMES)
    unparsed = sum(outcomes[s][o] for s in SIDES
                   for o in ("ranking-unparsed", "pairwise-unparsed", "summary-no-score"))
    reordered = sum(bool(row["meta"][s].get("reordered")) for row in rows for s in SIDES)
    echoed = sum(bool(row["meta"][s].get("echoed_example")) for row in rows for s in SIDES)
    calls = sum(len(row["meta"][s].get("answers", [])) for row in rows for s in SIDES)
    supervised = [row for row in rows if row["row"]["critique_supervision"]]
    total_asked = sum(asked.values())
    stats = {
        "strategy": config.strategy,
        "top_k": config.top_k if config.strategy == "rank" else None,
        "pairs": len(rows),
        "supervised_pairs": len(supervised),
        "reward_only_pairs": len(rows) - len(supervised),
        "responses_refined_by_model": asked,
        "model_calls": calls,
        "successes": successes,
        "fallbacks": fallbacks,
        "fallback_rate": round(fallbacks / total_asked, 4) if total_asked else None,
        "parse_failures": unparsed,
        "parse_failure_rate": round(unparsed / total_asked, 4) if total_asked else None,
        "reordered_by_model": reordered if config.strategy == "rank" else None,
        "echoed_example_ranking": echoed if config.strategy == "rank" else None,
        "outcomes": {side: dict(sorted(outcomes[side].items())) for side in SIDES},
        "critiques_out": {side: sum(len(row["row"][f"{side}_critiques"]) for row in supervised) for side in SIDES},
        "critiques_out_reward_only": {side: sum(len(row["row"][f"{side}_critiques"]) for row in rows
                                                if not row["row"]["critique_supervision"]) for side in SIDES},
        "settings": asdict(config),
    }
    if config.strategy == "summarize":
        sources = Counter(row["meta"][s].get("score_from") for row in rows for s in SIDES
                          if row["meta"][s]["outcome"] not in ("no-call", "reward-only"))
        stats["summary_score_from"] = {str(k): v for k, v in sources.items()}
    return stats


def format_refine_stats(stats: dict) -> str:
    asked = stats["responses_refined_by_model"]
    lines = [
        f"refine ({stats['strategy']}): {stats['pairs']} pairs ({stats['supervised_pairs']} with critique supervision, "
        f"{stats['reward_only_pairs']} reward-only)",
        f"responses refined by the model: chosen {asked['chosen']}, rejected {asked['rejected']} "
        f"({stats['model_calls']} calls); successes {stats['successes']}, fallbacks {stats['fallbacks']} "
        f"({percent(stats['fallback_rate'])}), unparseable answers {stats['parse_failures']} ({percent(stats['parse_failure_rate'])})",
        f"critiques in the dataset: chosen {stats['critiques_out']['chosen']}, rejected {stats['critiques_out']['rejected']} "
        "(supervised pairs)",
    ]
    if stats.get("reordered_by_model") is not None:
        lines.append(f"model changed the score order on {stats['reordered_by_model']} response(s) "
                     f"(answered the worked example's order \"2, 3, 1\" on {stats['echoed_example_ranking']})")
    return "\n".join(lines)

