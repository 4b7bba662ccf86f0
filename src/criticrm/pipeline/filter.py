"""Stage 1b: keep the critiques that agree with the human label (consistency filtering).

Two levels, as in Critic-RM (DESIGN §1):
- instance level: a pair passes when the mean score of its chosen-response critiques is above the
  mean of its rejected-response critiques plus `instance_margin` (equal means fail: the model did
  not separate the pair). Failing pairs are kept for the reward loss only (`reward-only`: every
  scored critique still conditions the reward, none is an LM target) or dropped (`drop`).
- critique level, on passing pairs: a chosen critique is kept when its score is above the mean
  score of the rejected critiques plus `critique_margin`; a rejected critique when its score is
  below the mean score of the chosen critiques minus `critique_margin`.

A critique without a usable score (under the `score_source` policy) takes part in nothing and is
counted. A pair with no scored critique on one side ("missing") cannot be judged: it fails the
instance level and, having nothing to condition that side's reward on, is always dropped. A pair
that passes but loses every critique of one side at the critique level (possible only when
`critique_margin` exceeds `instance_margin`) is treated like a failing pair.

`filter_critiques` is pure; `run_filter` reads and writes a stage folder.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any, Literal

from criticrm import rundir
from criticrm.config import Config
from criticrm.data.jsonl import read_jsonl_repairing, write_jsonl
from criticrm.data.schema import SIDES, CritiqueRecord, PreferencePair, ScoredCritique
from criticrm.errors import CriticRMError
from criticrm.formatting import percent, rate
from criticrm.prompts.scores import ScorePolicy, choose_score

# What happened to a pair (FilterDecision.status).
PASSED, FAILED, TIE, NO_KEPT, MISSING = "passed", "failed", "tie", "no-kept-critique", "missing"


@dataclass
class FilterConfig(Config):
    """How critiques are filtered against the human labels."""

    instance_margin: float = field(default=0.0, metadata={"help": "a pair passes when mean chosen score > mean rejected score + this"})
    critique_margin: float = field(default=0.0, metadata={"help": "keep a chosen critique scoring > mean rejected + this, a rejected one scoring < mean chosen - this"})
    failed_pairs: Literal["reward-only", "drop"] = field(default="reward-only", metadata={"help": "pairs failing the instance level: reward-only (kept for the reward loss, no critique supervision) or drop"})
    score_source: ScorePolicy = field(default="parsed-or-probability", metadata={"help": "score of each critique to filter on: parsed-or-probability, parsed or probability"})
    keep_all: bool = field(default=False, metadata={"help": "no filtering: every scored critique of every pair is kept as an LM target (the ablation)"})


@dataclass
class FilterDecision:
    """One pair after filtering (one line of `filtered.jsonl`, the input of stage 1c).

    `supervised` pairs carry their kept critiques (LM targets and reward conditioning) and, in
    `sampled_chosen` / `sampled_rejected`, every scored critique as it was sampled (what the reward reads
    under the training option `reward_critiques: sampled`); reward-only pairs carry every scored critique
    in `chosen` / `rejected` and no sampled lists. `mean_chosen` / `mean_rejected` are the means over all
    scored critiques of each side: refinement checks a summarized critique against them.
    """

    pair: PreferencePair
    status: str
    supervised: bool
    template: str
    chosen: list[ScoredCritique]
    rejected: list[ScoredCritique]
    mean_chosen: float | None
    mean_rejected: float | None
    critique_margin: float = 0.0
    sampled_chosen: list[ScoredCritique] = field(default_factory=list)
    sampled_rejected: list[ScoredCritique] = field(default_factory=list)

    def critiques(self, side: str) -> list[ScoredCritique]:
        return self.chosen if side == "chosen" else self.rejected

    def sampled(self, side: str) -> list[ScoredCritique]:
        return self.sampled_chosen if side == "chosen" else self.sampled_rejected

    def mean(self, side: str) -> float | None:
        return self.mean_chosen if side == "chosen" else self.mean_rejected

    def agrees(self, side: str, score: float) -> bool:
        """The critique-level rule: does a critique of `side` with this score agree with the label?"""
        if side == "chosen":
            return self.mean_rejected is not None and score > self.mean_rejected + self.critique_margin
        return self.mean_chosen is not None and score < self.mean_chosen - self.critique_margin

    @property
    def judge_margin(self) -> float | None:
        """The base model's own verdict gap; it reaches the reward loss only under `margin_source: judge`."""
        if self.mean_chosen is None or self.mean_rejected is None:
            return None
        return round(self.mean_chosen - self.mean_rejected, 4)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pair": self.pair.to_dict(), "status": self.status, "supervised": self.supervised,
            "template": self.template, "mean_chosen": self.mean_chosen, "mean_rejected": self.mean_rejected,
            "critique_margin": self.critique_margin,
            "chosen": [vars(c) for c in self.chosen], "rejected": [vars(c) for c in self.rejected],
            "sampled_chosen": [vars(c) for c in self.sampled_chosen],
            "sampled_rejected": [vars(c) for c in self.sampled_rejected],
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> FilterDecision:
        row = dict(row)
        row["pair"] = PreferencePair(**row["pair"])
        for side in (*SIDES, "sampled_chosen", "sampled_rejected"):  # (older rows lack the sampled lists)
            row[side] = [ScoredCritique(**c) for c in row.get(side, [])]
        return cls(**row)


def filter_critiques(pairs: list[PreferencePair], records: list[CritiqueRecord],
                     config: FilterConfig) -> tuple[list[FilterDecision], dict]:
    """Apply the instance- and critique-level rules; return the kept pairs (input order) and stats.

    `keep_all` makes both margins -inf: every pair with critiques on both sides passes with all of them.
    """
    by_pair, orphans = _records_by_pair(pairs, records)
    tally = _Tally()
    decisions = []
    for pair in pairs:
        scored = {side: tally.scored(by_pair[pair.id][side] if pair.id in by_pair else {}, side, config.score_source)
                  for side in SIDES}
        decision = _decide(pair, scored, _template(by_pair.get(pair.id)), config, tally)
        if decision is not None:
            decisions.append(decision)
    return decisions, tally.stats(len(pairs), len(decisions), orphans, config)


def _records_by_pair(pairs: list[PreferencePair], records: list[CritiqueRecord]
                     ) -> tuple[dict[str, dict[str, dict[int, CritiqueRecord]]], int]:
    """{pair id: {side: {sample index: record}}} of the wanted pairs (duplicates: the first wins), and
    the number of records of other pairs."""
    wanted = {pair.id for pair in pairs}
    by_pair: dict[str, dict[str, dict[int, CritiqueRecord]]] = defaultdict(lambda: {s: {} for s in SIDES})
    orphans = 0
    for record in records:
        if record.pair_id not in wanted:
            orphans += 1
            continue
        by_pair[record.pair_id][record.side].setdefault(record.sample_index, record)
    return by_pair, orphans


def _template(sides: dict[str, dict[int, CritiqueRecord]] | None) -> str:
    """The judge template a pair's critiques were written in."""
    return next((r.template for s in SIDES for r in (sides or {}).get(s, {}).values()), "general")


def _decide(pair: PreferencePair, scored: dict[str, list[ScoredCritique]], template: str, config: FilterConfig,
            tally: _Tally) -> FilterDecision | None:
    """The instance- and critique-level rules for one pair; None when the pair is dropped."""
    instance_margin = -math.inf if config.keep_all else config.instance_margin
    critique_margin = -math.inf if config.keep_all else config.critique_margin
    subset = tally.subsets[pair.subset or "(none)"]
    subset["pairs"] += 1
    means = {side: mean(c.score for c in scored[side]) if scored[side] else None for side in SIDES}
    decision = FilterDecision(pair=pair, status=PASSED, supervised=True, template=template,
                              chosen=scored["chosen"], rejected=scored["rejected"],
                              mean_chosen=means["chosen"], mean_rejected=means["rejected"],
                              critique_margin=critique_margin)
    if means["chosen"] is None or means["rejected"] is None:
        tally.counts[MISSING] += 1
        subset[MISSING] += 1
        return None  # nothing to condition one side's reward on: dropped whatever the policy
    if means["chosen"] > means["rejected"]:
        subset["agree"] += 1
    elif means["chosen"] == means["rejected"]:
        subset["tie"] += 1
    if means["chosen"] > means["rejected"] + instance_margin:
        kept = {side: [c for c in scored[side] if decision.agrees(side, c.score)] for side in SIDES}
        for side in SIDES:
            tally.sides[side]["considered"] += len(scored[side])
            tally.sides[side]["kept"] += len(kept[side])
        if all(kept[side] for side in SIDES):
            decision.chosen, decision.rejected = kept["chosen"], kept["rejected"]
            decision.sampled_chosen, decision.sampled_rejected = scored["chosen"], scored["rejected"]
            tally.counts[PASSED] += 1
            subset[PASSED] += 1
            return decision
        decision.status = NO_KEPT
    else:
        decision.status = TIE if means["chosen"] == means["rejected"] else FAILED
    tally.counts[decision.status] += 1
    if config.failed_pairs != "reward-only":
        return None
    decision.supervised = False  # every scored critique stays, as reward conditioning only
    tally.counts["reward_only"] += 1
    return decision


class _Tally:
    """What happened to the pairs and critiques of one filtering run, turned into its stats."""

    def __init__(self):
        self.counts: dict[str, int] = defaultdict(int)
        self.sides = {side: defaultdict(int) for side in SIDES}
        self.subsets: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def scored(self, records: dict[int, CritiqueRecord], side: str, policy: str) -> list[ScoredCritique]:
        """The critiques of one side with a score under `policy`, in sample order (the others counted)."""
        result = []
        for _, record in sorted(records.items()):
            score, _source = choose_score(record.parsed_score, record.probability_score, policy)
            self.sides[side]["records"] += 1
            if score is None:
                self.sides[side]["unscored"] += 1
            else:
                result.append(ScoredCritique(text=record.critique, score=float(score)))
        return result

    def stats(self, n: int, rows_out: int, orphans: int, config: FilterConfig) -> dict:
        counts, sides = self.counts, self.sides
        failing = counts[FAILED] + counts[TIE] + counts[NO_KEPT]
        return {
            "pairs": n,
            "passed": counts[PASSED],
            "failed_instance": counts[FAILED] + counts[TIE],
            "ties": counts[TIE],
            "no_kept_critique": counts[NO_KEPT],
            "missing": counts[MISSING],
            "reward_only": counts["reward_only"],
            "dropped": counts[MISSING] + (failing if config.failed_pairs == "drop" else 0),
            "rows_out": rows_out,
            "instance_keep_rate": rate(counts[PASSED], n),
            "instance_pass_rate_of_judged": rate(counts[PASSED], n - counts[MISSING]),
            "orphan_records": orphans,
            "critiques": {
                side: {
                    "records": sides[side]["records"],
                    "unscored": sides[side]["unscored"],
                    "on_passing_pairs": sides[side]["considered"],
                    "kept": sides[side]["kept"],
                    "keep_rate": rate(sides[side]["kept"], sides[side]["considered"]),
                    "keep_rate_of_all": rate(sides[side]["kept"], sides[side]["records"]),
                }
                for side in SIDES
            },
            "by_subset": {
                name: {
                    "pairs": s["pairs"], "passed": s[PASSED], "agree": s["agree"], "tie": s["tie"],
                    "missing": s[MISSING], "agreement": rate(s["agree"], s["pairs"] - s[MISSING]),
                    "instance_keep_rate": rate(s[PASSED], s["pairs"]),
                }
                for name, s in sorted(self.subsets.items())
            },
            "settings": {"instance_margin": config.instance_margin, "critique_margin": config.critique_margin,
                         "failed_pairs": config.failed_pairs, "score_source": config.score_source,
                         "keep_all": config.keep_all},
        }


def load_critique_dir(critiques_dir: Path) -> tuple[list[PreferencePair], list[CritiqueRecord], dict | None]:
    """Pairs, records and summary of a stage-1a folder, with a clear error when it is not one."""
    pairs_path, records_path = critiques_dir / rundir.PAIRS_FILE, critiques_dir / rundir.RECORDS_FILE
    for path in (pairs_path, records_path):
        if not path.is_file():
            raise CriticRMError(f"{critiques_dir} is not a critique folder: {path.name} is missing "
                                "(write one with the critique stage first)")
    pairs = [PreferencePair(**row) for row in read_jsonl_repairing(pairs_path)]
    records = [CritiqueRecord.from_dict(row) for row in read_jsonl_repairing(records_path)]
    summary_path = critiques_dir / rundir.CRITIQUE_SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return pairs, records, summary


def run_filter(pairs: list[PreferencePair], records: list[CritiqueRecord], config: FilterConfig,
               out_dir: Path) -> tuple[list[FilterDecision], dict]:
    """Filter and write `filtered.jsonl` + `filter_stats.json` (fast and deterministic: simply redone)."""
    rundir.guard(out_dir, asdict(config), "filtered pairs", start_over=True)
    decisions, stats = filter_critiques(pairs, records, config)
    write_jsonl(out_dir / rundir.FILTERED_FILE, (d.to_dict() for d in decisions))
    (out_dir / rundir.FILTER_STATS_FILE).write_text(json.dumps(stats, indent=2))
    return decisions, stats


def read_filtered(in_dir: Path) -> list[FilterDecision]:
    path = in_dir / rundir.FILTERED_FILE
    if not path.is_file():
        raise CriticRMError(f"{in_dir} is not a filter folder: {rundir.FILTERED_FILE} is missing "
                            "(write one with the filter stage first)")
    return [FilterDecision.from_dict(row) for row in read_jsonl_repairing(path)]


def format_filter_stats(stats: dict) -> str:
    crit = stats["critiques"]
    lines = [
        f"pairs: {stats['pairs']}; passed the instance level: {stats['passed']} ({percent(stats['instance_keep_rate'])}); "
        f"failed: {stats['failed_instance']} (ties {stats['ties']}); no critique kept on a side: "
        f"{stats['no_kept_critique']}; missing scores: {stats['missing']}",
        f"kept for the reward only: {stats['reward_only']}; dropped: {stats['dropped']}; rows out: {stats['rows_out']}",
        "critique keep rate on passing pairs: "
        + ", ".join(f"{side} {crit[side]['kept']}/{crit[side]['on_passing_pairs']} ({percent(crit[side]['keep_rate'])})"
                    for side in SIDES)
        + f"; unscored critiques: {sum(crit[s]['unscored'] for s in SIDES)}",
    ]
    return "\n".join(lines)
