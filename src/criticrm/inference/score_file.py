"""Score a data file into JSONL, resumably: one output line per input row.

Rows are either single responses (`prompt` + `response`) or preference pairs (anything the evaluation
reader takes: prompt / chosen / rejected, RewardBench 2 lists). Output lines are appended after every
chunk, so an interrupted run loses at most one chunk and a re-run scores only the rows not yet written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from criticrm.data.jsonl import append_jsonl, read_jsonl_repairing
from criticrm.data.readers import DataConfig, Problem, check_id, iter_rows, load_records, text_field
from criticrm.data.rewardbench import load_eval_examples
from criticrm.inference.scorer import RewardScorer, ScoreItem, bradley_terry

CHUNK_ITEMS = 32  # responses scored between two appends


@dataclass(frozen=True)
class ScoringRow:
    """One input row: the responses to score and the output field each result goes to."""

    id: str
    items: list[ScoreItem]
    fields: list[str]


def read_scoring_rows(config: DataConfig, response_field: str = "response") -> list[ScoringRow]:
    """Single-response rows if the first row has `response_field`, else preference pairs."""
    first = next(iter_rows(config.data, config.split), None) if config.data else None
    if first is not None and isinstance(first[1], dict) and response_field in first[1]:
        return _response_rows(config, response_field)
    rows = []
    for example in load_eval_examples(config):
        responses = (*example.chosen, *example.rejected)
        names = _names("chosen", len(example.chosen)) + _names("rejected", len(example.rejected))
        rows.append(ScoringRow(example.id, [ScoreItem(example.prompt, r, example.domain, example.subset)
                                            for r in responses], names))
    return rows


def _names(side: str, count: int) -> list[str]:
    return [side] if count == 1 else [f"{side}_{i}" for i in range(count)]


def _response_rows(config: DataConfig, response_field: str) -> list[ScoringRow]:
    return load_records(config, lambda row, location: _response_row(row, location, config, response_field)).pairs


def _response_row(row: dict, location: str, config: DataConfig, response_field: str) -> ScoringRow | list[Problem]:
    """One single-response row; without an id it is named by its place in the file ("line 3")."""
    problems: list[Problem] = []
    texts = {}
    for column, part in ((config.prompt_field, "prompt"), (response_field, "response")):
        text = text_field(row, column, location, part)
        if isinstance(text, list):
            problems += text
        texts[part] = text
    raw_id = row.get(config.id_field)
    id_problem = check_id(raw_id, location, config.id_field)
    if id_problem:
        problems.append(id_problem)
    for column in (config.domain_field, config.subset_field):
        if row.get(column) is not None and not isinstance(row[column], str):
            problems.append(Problem(location, column, f"expected a string, got {type(row[column]).__name__}"))
    if problems:
        return problems
    row_id = str(raw_id) if raw_id not in (None, "") else location.rsplit(", ", 1)[-1]
    item = ScoreItem(texts["prompt"], texts["response"], row.get(config.domain_field), row.get(config.subset_field))
    return ScoringRow(row_id, [item], ["response"])


def score_rows(rows: list[ScoringRow], scorer: RewardScorer, out: Path, num_critiques: int | None = None,
               temperature: float | None = None, show_progress: bool = True) -> dict:
    """Append one JSON line per row to `out` (rows already there are kept and skipped)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {line["id"] for line in read_jsonl_repairing(out)} if out.exists() else set()
    pending = [row for row in rows if row.id not in done]
    total = sum(len(row.items) for row in pending)
    bar = tqdm(total=total, unit="response", desc="scoring", disable=not show_progress, dynamic_ncols=True)
    start = 0
    while start < len(pending):
        chunk, size = [], 0
        while start < len(pending) and (not chunk or size + len(pending[start].items) <= CHUNK_ITEMS):
            chunk.append(pending[start])
            size += len(pending[start].items)
            start += 1
        items = [item for row in chunk for item in row.items]
        results = iter(scorer.score(items, num_critiques=num_critiques, temperature=temperature,
                                    on_progress=bar.update))
        lines = []
        for row in chunk:
            line = {"id": row.id} | {name: next(results).to_dict() for name in row.fields}
            if row.fields == ["chosen", "rejected"]:
                line["probability"] = bradley_terry(line["chosen"]["reward"], line["rejected"]["reward"])
            lines.append(line)
        append_jsonl(out, lines)
    bar.close()
    return {"rows": len(rows), "scored_now": len(pending), "already_done": len(rows) - len(pending), "out": str(out)}
