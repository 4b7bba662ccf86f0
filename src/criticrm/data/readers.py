"""Read preference pairs from files and Hugging Face datasets, validating every row.

Accepted inputs: JSONL, JSON (a list of objects, or an object holding one such list), CSV, Parquet,
a `datasets.save_to_disk` folder, or a hub dataset name when online. Accepted row formats are TRL's:
standard (`prompt`/`chosen`/`rejected` strings), conversational (lists of `{"role", "content"}`
messages) and implicit prompt (no prompt column; the prompt is the shared prefix of chosen and
rejected). Every problem is reported with its file, line or row, and field; nothing is dropped silently.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from criticrm.data.schema import PreferencePair, content_id
from criticrm.errors import CriticRMError

MAX_LISTED_PROBLEMS = 20
ROLES = ("system", "user", "assistant", "tool")

Messages = list[dict[str, str]]
MessageRenderer = Callable[[Messages], str]


@dataclass
class DataConfig:
    """Where the preference pairs are and how their columns are named."""

    data: str | None = field(default=None, metadata={"help": "JSONL/JSON/CSV/Parquet file, save_to_disk folder, or hub dataset name"})
    split: str = field(default="train", metadata={"help": "split to read from a dataset folder or hub dataset"})
    prompt_field: str = field(default="prompt", metadata={"help": "column holding the prompt (absent: implicit-prompt format)"})
    chosen_field: str = field(default="chosen", metadata={"help": "column holding the preferred response"})
    rejected_field: str = field(default="rejected", metadata={"help": "column holding the rejected response"})
    id_field: str = field(default="id", metadata={"help": "column holding a stable pair id (absent: a content hash)"})
    subset_field: str = field(default="subset", metadata={"help": "column naming the subset (reports, template choice)"})
    domain_field: str = field(default="domain", metadata={"help": "column naming the domain: general, safety or reasoning"})
    margin_field: str = field(default="margin", metadata={
        "help": "column holding a per-pair Bradley-Terry margin (TRL's convention; used only when the data has it, "
                "then every row needs a finite number)"})
    limit: int | None = field(default=None, metadata={"help": "read only the first N valid pairs"})
    per_subset: int | None = field(default=None, metadata={
        "help": "read only the first N valid pairs of each subset: a stratified sample that covers every subset"})
    skip_invalid: bool = field(default=False, metadata={"help": "skip invalid rows (and report how many) instead of stopping"})
    chat_format: str = field(
        default="transcript",
        metadata={"help": "how conversational prompts become text: transcript (User:/Assistant: lines) or template (the model's chat template)"},
    )


@dataclass(frozen=True)
class Problem:
    location: str
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.location}, field '{self.field}'" if self.field else self.location
        return f"{where}: {self.message}"


class DataValidationError(CriticRMError):
    """Invalid input rows; the message lists the first problems with file, line and field."""

    def __init__(self, source: str, problems: list[Problem], rows_seen: int):
        self.source = source
        self.problems = problems
        listed = "\n".join(f"  {p}" for p in problems[:MAX_LISTED_PROBLEMS])
        more = len(problems) - MAX_LISTED_PROBLEMS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{source}: {len(problems)} problem(s) among {rows_seen} row(s) read:\n{listed}{tail}\n"
            "Fix them, or pass --skip-invalid to skip invalid rows (their count is reported)."
        )


@dataclass
class LoadResult:
    pairs: list[PreferencePair]  # the valid records (of another type when `load_records` is given another normaliser)
    problems: list[Problem]
    invalid_rows: int
    rows_read: int
    source: str


# ---------------------------------------------------------------------------------------------- rows


def iter_rows(source: str, split: str = "train") -> Iterator[tuple[str, dict[str, Any] | Problem]]:
    """Yield (location, row) for every row of `source`, or (location, Problem) for an unreadable one."""
    path = Path(source)
    if path.is_dir():
        yield from _iter_dataset_rows(_load_disk_dataset(path, split), f"{source}, row")
    elif path.is_file():
        suffix = path.suffix.lower()
        readers = {".jsonl": _iter_jsonl, ".ndjson": _iter_jsonl, ".json": _iter_json,
                   ".csv": _iter_csv, ".parquet": _iter_parquet, ".pq": _iter_parquet}
        if suffix not in readers:
            raise DataValidationError(source, [Problem(source, None,
                f"unsupported file type {suffix!r}; expected .jsonl, .json, .csv, .parquet or a dataset folder")], 0)
        yield from readers[suffix](path)
    elif _looks_like_hub_name(source):
        yield from _iter_dataset_rows(_load_hub_dataset(source, split), f"{source}[{split}], row")
    else:
        raise DataValidationError(source, [Problem(source, None, "no such file or folder")], 0)


def _iter_jsonl(path: Path):
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            location = f"{path}, line {number}"
            try:
                row = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as error:
                yield location, Problem(location, None, f"invalid JSON ({error.msg} at column {error.colno})")
                continue
            yield location, row if isinstance(row, dict) else Problem(
                location, None, f"expected a JSON object, got {type(row).__name__}")


def _iter_json(path: Path):
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        location = f"{path}, line {error.lineno}"
        yield location, Problem(location, None, f"invalid JSON ({error.msg} at column {error.colno})")
        return
    if isinstance(document, dict):
        lists = [value for value in document.values() if isinstance(value, list)]
        if len(lists) != 1:
            yield str(path), Problem(str(path), None, "expected a list of objects, or an object holding exactly one list")
            return
        document = lists[0]
    if not isinstance(document, list):
        yield str(path), Problem(str(path), None, f"expected a list of objects, got {type(document).__name__}")
        return
    for index, row in enumerate(document):
        location = f"{path}, item {index}"
        yield location, row if isinstance(row, dict) else Problem(
            location, None, f"expected a JSON object, got {type(row).__name__}")


def _iter_csv(path: Path):
    with path.open("r", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        line = reader.line_num
        for row in reader:
            yield f"{path}, line {line + 1}", {k: _maybe_json_messages(v) for k, v in row.items() if k is not None}
            line = reader.line_num


def _maybe_json_messages(value: str | None):
    """CSV cells hold strings; a cell that is a JSON list of messages is decoded (conversational CSV)."""
    if value and value.lstrip().startswith("[{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _iter_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a corrupt file
        yield str(path), Problem(str(path), None, f"cannot read Parquet: {error}")
        return
    for index, row in enumerate(table.to_pylist()):
        yield f"{path}, row {index}", row


def _iter_dataset_rows(dataset, prefix: str):
    for index, row in enumerate(dataset):
        yield f"{prefix} {index}", row


def _load_disk_dataset(path: Path, split: str):
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except FileNotFoundError as error:
        raise DataValidationError(str(path), [Problem(str(path), None,
            f"not a `datasets.save_to_disk` folder ({error})")], 0) from None
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise DataValidationError(str(path), [Problem(str(path), None,
                f"split {split!r} not found; available: {sorted(dataset)}")], 0)
        dataset = dataset[split]
    return dataset


def _looks_like_hub_name(source: str) -> bool:
    parts = source.split("/")
    return len(parts) <= 2 and all(parts) and not Path(source).suffix


def _load_hub_dataset(name: str, split: str):
    from datasets import load_dataset

    try:
        return load_dataset(name, split=split)
    except Exception as error:  # network, missing dataset, missing split: all one message to the user
        raise DataValidationError(name, [Problem(name, None,
            f"not a local file or folder, and loading it as a Hugging Face hub dataset failed: {error}")], 0) from None


# ----------------------------------------------------------------------------------------- normalise


def render_transcript(messages: Messages) -> str:
    """Render messages as plain text: a lone user turn is its content, else `Role: content` blocks.

    This is the default for conversational prompts because the judge prompt embeds the conversation
    inside its own user turn, where a second layer of chat-template special tokens confuses the model.
    """
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def _check_messages(value: list, location: str, name: str) -> list[Problem]:
    problems = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            problems.append(Problem(location, f"{name}[{index}]", f"expected a {{role, content}} object, got {type(message).__name__}"))
            continue
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            problems.append(Problem(location, f"{name}[{index}].role", f"expected one of {', '.join(ROLES)}, got {role!r}"))
        if not isinstance(content, str):
            problems.append(Problem(location, f"{name}[{index}].content", f"expected a string, got {type(content).__name__}"))
    if not value:
        problems.append(Problem(location, name, "expected a non-empty list of messages, got []"))
    return problems


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "messages"
    return "invalid"


def _common_prefix_messages(a: Messages, b: Messages) -> int:
    count = 0
    for left, right in zip(a, b, strict=False):
        if left != right:
            break
        count += 1
    return count


def _split_implicit_text(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two strings at their shared prefix, backed up to a whitespace boundary."""
    cut = len(os.path.commonprefix([chosen, rejected]))
    if cut < min(len(chosen), len(rejected)):  # they diverge mid-text: do not split a word
        cut = max(chosen.rfind(c, 0, cut) for c in " \n\t") + 1
    return chosen[:cut], chosen[cut:], rejected[cut:]


def normalise_row(row: dict[str, Any], location: str, config: DataConfig,
                  render_messages: MessageRenderer = render_transcript) -> PreferencePair | list[Problem]:
    """Turn one raw row into a PreferencePair, or return every problem found in it."""
    problems: list[Problem] = []
    fields = {"chosen": config.chosen_field, "rejected": config.rejected_field}
    values = {}
    for name, column in fields.items():
        if column not in row or row[column] is None:
            problems.append(Problem(location, column, "missing field (expected a string or a list of messages)"))
            continue
        value = row[column]
        if _kind(value) == "invalid":
            problems.append(Problem(location, column, f"expected a string or a list of {{role, content}} messages, got {type(value).__name__}"))
        elif isinstance(value, list):
            problems.extend(_check_messages(value, location, column))
        values[name] = value
    prompt_value = row.get(config.prompt_field)
    if prompt_value is not None:
        if _kind(prompt_value) == "invalid":
            problems.append(Problem(location, config.prompt_field, f"expected a string or a list of messages, got {type(prompt_value).__name__}"))
        elif isinstance(prompt_value, list):
            problems.extend(_check_messages(prompt_value, location, config.prompt_field))
    if problems:
        return problems
    chosen, rejected = values["chosen"], values["rejected"]
    if _kind(chosen) != _kind(rejected):
        return [Problem(location, config.rejected_field, f"chosen is {_kind(chosen)} but rejected is {_kind(rejected)}; both must be the same kind")]

    if prompt_value is None:  # implicit-prompt format
        if isinstance(chosen, list):
            shared = _common_prefix_messages(chosen, rejected)
            prompt_text = render_messages(chosen[:shared]) if shared else ""
            chosen_text, rejected_text = _render_response(chosen[shared:]), _render_response(rejected[shared:])
        else:
            prompt_text, chosen_text, rejected_text = _split_implicit_text(chosen, rejected)
        if not prompt_text.strip():
            return [Problem(location, config.prompt_field,
                "missing field, and chosen/rejected share no prefix to use as the prompt (implicit-prompt format)")]
    else:
        prompt_text = render_messages(prompt_value) if isinstance(prompt_value, list) else prompt_value
        chosen_text = _render_response(chosen) if isinstance(chosen, list) else chosen
        rejected_text = _render_response(rejected) if isinstance(rejected, list) else rejected

    for column, text in ((config.prompt_field, prompt_text), (config.chosen_field, chosen_text), (config.rejected_field, rejected_text)):
        if not text.strip():
            problems.append(Problem(location, column, "expected non-empty text, got an empty value"))
    if not problems and chosen_text.strip() == rejected_text.strip():
        problems.append(Problem(location, config.rejected_field, "identical to chosen; a preference needs two different responses"))
    extras = {}
    for name, column in (("subset", config.subset_field), ("domain", config.domain_field), ("source", "source"), ("section", "section")):
        value = row.get(column)
        if value is not None and not isinstance(value, str):
            problems.append(Problem(location, column, f"expected a string, got {type(value).__name__}"))
        extras[name] = value or None
    raw_id = row.get(config.id_field)
    if raw_id is not None and not isinstance(raw_id, str | int):
        problems.append(Problem(location, config.id_field, f"expected a string or integer id, got {type(raw_id).__name__}"))
    margin = _read_margin(row, location, config.margin_field)
    if isinstance(margin, Problem):
        problems.append(margin)
    if problems:
        return problems
    pair_id = str(raw_id) if raw_id not in (None, "") else content_id(prompt_text, chosen_text, rejected_text)
    return PreferencePair(id=pair_id, prompt=prompt_text, chosen=chosen_text, rejected=rejected_text,
                          margin=margin, **extras)


def _read_margin(row: dict[str, Any], location: str, column: str) -> float | None | Problem:
    """The row's margin: absent -> None; a finite number (or its text, as CSV holds it) -> float; else a Problem.

    A present but empty value is a problem, not "no margin": a margin column with holes would train some
    pairs with a margin and others without, silently.
    """
    if column not in row:
        return None
    value = row[column]
    if isinstance(value, str):
        try:
            value = float(value) if value.strip() else None
        except ValueError:
            return Problem(location, column, f"expected a number (the pair's margin), got {row[column]!r}")
    if value is None:
        return Problem(location, column, "missing margin (the data has a margin column, so every pair needs a number)")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return Problem(location, column, f"expected a finite number (the pair's margin), got {value!r}")
    return float(value)


def _render_response(value: str | Messages) -> str:
    """A response given as messages is the text of its turns (normally one assistant message)."""
    if isinstance(value, str):
        return value
    if len(value) == 1:
        return value[0]["content"]
    return render_transcript(value)


def load_records(config: DataConfig, normalise: Callable[[dict[str, Any], str], Any]) -> LoadResult:
    """Read and validate rows with `normalise(row, location)` -> a record with an `id`, or its problems.

    Duplicate ids are problems too. Raises DataValidationError unless `config.skip_invalid` is set.
    """
    if not config.data:
        raise DataValidationError("<none>", [Problem("configuration", "data", "no input data given (use --data FILE)")], 0)
    records: list = []
    problems: list[Problem] = []
    invalid_rows = 0
    first_seen: dict[str, str] = {}
    per_subset: Counter[str | None] = Counter()
    rows_read = 0
    for location, row in iter_rows(config.data, config.split):
        if config.limit is not None and len(records) >= config.limit:
            break
        rows_read += 1
        result = [row] if isinstance(row, Problem) else normalise(row, location)
        if not isinstance(result, list) and result.id in first_seen:
            result = [Problem(location, config.id_field, f"duplicate id {result.id!r} (first seen at {first_seen[result.id]})")]
        if isinstance(result, list):
            invalid_rows += 1
            problems.extend(result)
        elif config.per_subset is None or per_subset[getattr(result, "subset", None)] < config.per_subset:
            per_subset[getattr(result, "subset", None)] += 1
            first_seen[result.id] = location
            records.append(result)
    holes = _margin_holes(records, first_seen, config)
    problems += holes
    invalid_rows += len(holes)
    if problems and not config.skip_invalid:
        raise DataValidationError(config.data, problems, rows_read)
    if not records:
        raise DataValidationError(config.data, problems or [Problem(config.data, None, "no rows found")], rows_read)
    return LoadResult(pairs=records, problems=problems, invalid_rows=invalid_rows, rows_read=rows_read, source=config.data)


def _margin_holes(records: list, locations: dict[str, str], config: DataConfig) -> list[Problem]:
    """Rows without a margin when others have one (a column missing from some JSON rows); under
    `skip_invalid` they are removed from `records` in place."""
    with_margin = [getattr(r, "margin", None) is not None for r in records]
    if not any(with_margin) or all(with_margin):
        return []
    holes = [r for r, has in zip(records, with_margin, strict=True) if not has]
    records[:] = [r for r, has in zip(records, with_margin, strict=True) if has]
    return [Problem(locations[r.id], config.margin_field,
                    "missing margin (other rows have one, so every pair needs a number)") for r in holes]


def load_pairs(config: DataConfig, render_messages: MessageRenderer = render_transcript) -> LoadResult:
    """Read and validate preference pairs (see `load_records`)."""
    return load_records(config, lambda row, location: normalise_row(row, location, config, render_messages))
