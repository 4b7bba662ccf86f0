"""Read preference pairs from files and Hugging Face datasets, validating every row.

Accepted inputs: JSONL, JSON (a list of objects, or an object holding one such list), CSV, Parquet,
a `datasets.save_to_disk` folder, or a hub dataset name when online. Accepted row formats are TRL's:
standard (`prompt`/`chosen`/`rejected` strings), conversational (lists of `{"role", "content"}`
messages) and implicit prompt (no prompt column; the prompt is the shared prefix of chosen and
rejected); a string prompt beside whole conversations is their shared turns, as TRL takes it. Every problem is reported with its file, line or row, and field; nothing is dropped silently.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from criticrm.config import Config
from criticrm.data.schema import PreferencePair, content_id
from criticrm.data.text import find_invalid_text, is_blank
from criticrm.errors import CriticRMError

MAX_LISTED_PROBLEMS = 20
ROLES = ("system", "user", "assistant", "tool")

Messages = list[dict[str, str]]
MessageRenderer = Callable[[Messages], str]


@dataclass
class DataConfig(Config):
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
    limit: int | None = field(default=None, metadata={"help": "read only the first N valid pairs", "min": 1})
    per_subset: int | None = field(default=None, metadata={
        "help": "read only the first N valid pairs of each subset: a stratified sample that covers every subset",
        "min": 1})
    skip_invalid: bool = field(default=False, metadata={"help": "skip invalid rows (and report how many) instead of stopping"})
    chat_format: Literal["transcript", "template"] = field(
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
        super().__init__(self.describe(rows_seen))

    def describe(self, rows_seen: int) -> str:
        listed = "\n".join(f"  {p}" for p in self.problems[:MAX_LISTED_PROBLEMS])
        more = len(self.problems) - MAX_LISTED_PROBLEMS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        return (f"{self.source}: {len(self.problems)} problem(s) among {rows_seen} row(s) read:\n{listed}{tail}\n"
                "Fix them, or set skip_invalid to skip invalid rows (their count is reported).")


class UnreadableDataError(DataValidationError):
    """The input as a whole cannot be read (missing, unreadable, not UTF-8, corrupt): no row can be kept,
    so skip_invalid does not apply and the message is the one problem."""

    def __init__(self, source: str | Path, message: str, location: str | None = None, field: str | None = None):
        super().__init__(str(source), [Problem(location or str(source), field, message)], 0)

    def describe(self, rows_seen: int) -> str:
        return str(self.problems[0])


@dataclass
class LoadResult:
    pairs: list[PreferencePair]  # the valid records (of another type when `load_records` is given another normaliser)
    problems: list[Problem]
    invalid_rows: int
    rows_read: int
    source: str


# ---------------------------------------------------------------------------------------------- rows

_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # (UTF-32's begin with them too)
_BOM = "\ufeff"
# Python's csv module refuses cells over 131,072 characters by default; a long response is a valid cell.
_CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)


def iter_rows(source: str, split: str = "train") -> Iterator[tuple[str, dict[str, Any] | Problem]]:
    """Yield (location, row) for every row of `source`, or (location, Problem) for an unreadable one.

    Whatever the format, column names lose a leading UTF-8 BOM and a row holding text that is not valid
    Unicode (an invalid UTF-8 byte, a lone surrogate) is a Problem naming its field. A file that cannot
    be read at all (missing, unreadable, not UTF-8 text, a corrupt Parquet file or dataset folder)
    raises DataValidationError: no row of it can be trusted, whatever skip_invalid says.
    """
    rows = 0
    try:
        for location, row in _raw_rows(source, split):
            rows += 1
            yield location, row if isinstance(row, Problem) else _checked_row(row, location)
    except OSError as error:  # permission denied, EIO, file name too long...
        after = f" (after {rows} row(s))" if rows else ""
        raise UnreadableDataError(source, f"cannot read it{after}: {error.strerror or error}") from None


def _raw_rows(source: str, split: str) -> Iterator[tuple[str, dict[str, Any] | Problem]]:
    path = Path(source)
    if path.is_dir():
        yield from _iter_dataset_rows(_load_disk_dataset(path, split), source, f"{source}, row")
    elif path.is_file():
        suffix = path.suffix.lower()
        readers = {".jsonl": _iter_jsonl, ".ndjson": _iter_jsonl, ".json": _iter_json,
                   ".csv": _iter_csv, ".parquet": _iter_parquet, ".pq": _iter_parquet}
        if suffix not in readers:
            raise UnreadableDataError(source, f"unsupported file type {suffix!r}; expected .jsonl, .json, .csv, "
                                              ".parquet or a dataset folder")
        yield from readers[suffix](path)
    elif _looks_like_hub_name(source):
        yield from _iter_dataset_rows(_load_hub_dataset(source, split), source, f"{source}[{split}], row")
    else:
        raise UnreadableDataError(source, "no such file or folder")


def _checked_row(row: Any, location: str) -> dict[str, Any] | Problem:
    """A row as a dict whose column names have no BOM and whose texts are all valid Unicode."""
    if not isinstance(row, dict):
        return Problem(location, None, f"expected a JSON object, got {type(row).__name__}")
    row = {key.removeprefix(_BOM) if isinstance(key, str) else key: value for key, value in row.items()}
    invalid = find_invalid_text(row)
    return Problem(location, *invalid) if invalid else row


def _decode(raw: bytes, path: Path, first: bool) -> str:
    """UTF-8 text; an undecodable byte is kept as a surrogate (`_checked_row` names the field holding it).

    A UTF-8 BOM is dropped; a UTF-16/32 file (by its BOM) is refused as a whole.
    """
    if first:
        _refuse_utf16(raw, path)
    text = raw.decode("utf-8", "surrogateescape")
    return text.removeprefix(_BOM) if first else text


def _refuse_utf16(head: bytes, path: Path) -> None:
    if head.startswith(_UTF16_BOMS):
        raise UnreadableDataError(path, "the file is UTF-16 or UTF-32 encoded (by its byte-order mark); save it as UTF-8")


def _parse_json(text: str, location: str) -> Any:
    """The JSON value of `text`, or a Problem: syntax, nesting too deep, a number too long, a repeated key."""
    try:
        return json.loads(text, object_pairs_hook=_object_without_repeated_keys)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}" if error.lineno > 1 else f"column {error.colno}"
        return Problem(location, None, f"invalid JSON ({error.msg} at {where})")
    except RecursionError:
        return Problem(location, None, "invalid JSON: nested too deeply")
    except ValueError as error:  # an integer of more than 4,300 digits, a repeated key
        return Problem(location, None, f"invalid JSON: {str(error).split(';')[0]}")


def _object_without_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a key given twice is an error (json would silently keep the last value)."""
    row = dict(pairs)
    if len(row) != len(pairs):
        repeated = next(key for key, count in Counter(key for key, _ in pairs).items() if count > 1)
        raise ValueError(f"the key {repeated!r} appears more than once in an object")
    return row


def _iter_jsonl(path: Path):
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = _decode(raw, path, first=number == 1)
            if not line.strip():
                continue
            location = f"{path}, line {number}"
            yield location, _parse_json(line.rstrip("\r\n"), location)


def _iter_json(path: Path):
    document = _parse_json(_decode(path.read_bytes(), path, first=True), str(path))
    if isinstance(document, Problem):
        raise UnreadableDataError(path, document.message)
    if isinstance(document, dict):
        lists = [value for value in document.values() if isinstance(value, list)]
        if len(lists) != 1:
            raise UnreadableDataError(path, "expected a list of objects, or an object holding exactly one list")
        document = lists[0]
    if not isinstance(document, list):
        raise UnreadableDataError(path, f"expected a list of objects, got {type(document).__name__}")
    for index, row in enumerate(document):
        yield f"{path}, item {index}", row


def _iter_csv(path: Path):
    csv.field_size_limit(_CSV_FIELD_LIMIT)
    with path.open("rb") as handle:
        _refuse_utf16(handle.read(4), path)
    with path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle)
        header = _csv_header(reader, path)
        line = reader.line_num
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                yield f"{path}, line {line + 1}", Problem(f"{path}, line {line + 1}", None, f"invalid CSV ({error})")
                line = reader.line_num
                continue
            location = f"{path}, line {line + 1}"
            line = reader.line_num
            if not cells:  # a blank line
                continue
            if len(cells) > len(header):
                yield location, Problem(location, None, f"{len(cells)} cells, but the header names only "
                                                        f"{len(header)} columns")
                continue
            yield location, {name: _maybe_json_messages(cell) for name, cell in zip(header, cells, strict=False)}


def _csv_header(reader, path: Path) -> list[str]:
    """The column names; a name given twice is refused (a dict of the row would keep the last one)."""
    try:
        header = next(reader, [])
    except csv.Error as error:
        raise UnreadableDataError(path, f"invalid CSV header ({error})", f"{path}, line 1") from None
    repeated = [name for name, count in Counter(header).items() if count > 1]
    if repeated:
        raise UnreadableDataError(path, f"the header names this column {header.count(repeated[0])} times; column "
                                        "names must be unique", f"{path}, line 1", repeated[0])
    return header


def _maybe_json_messages(value: str):
    """CSV cells hold strings; a cell that is a JSON list of messages is decoded (conversational CSV)."""
    if value.lstrip().startswith("[{"):
        decoded = _parse_json(value, "")
        return value if isinstance(decoded, Problem) else decoded
    return value


def _iter_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as error:  # pyarrow raises several types (OSError too) for a corrupt or unreadable file
        raise UnreadableDataError(path, f"cannot read Parquet: {error}") from None
    for index, row in enumerate(rows):
        yield f"{path}, row {index}", row


def _iter_dataset_rows(dataset, source: str, prefix: str):
    try:
        for index, row in enumerate(dataset):
            yield f"{prefix} {index}", row
    except Exception as error:  # a damaged .arrow file fails while it is read
        raise UnreadableDataError(source, f"cannot read the dataset: {type(error).__name__}: {error}") from None


def _load_disk_dataset(path: Path, split: str):
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except Exception as error:  # a missing or junk dataset_info.json, state.json or .arrow file: many types
        raise UnreadableDataError(path, f"not a readable `datasets.save_to_disk` folder ({type(error).__name__}: "
                                        f"{error})") from None
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise UnreadableDataError(path, f"split {split!r} not found; available: {sorted(dataset)}")
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
        raise UnreadableDataError(name, "not a local file or folder, and loading it as a Hugging Face hub dataset "
                                        f"failed: {error}") from None


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

    # A string prompt beside whole conversations (UltraFeedback's layout: the prompt is also the conversations'
    # shared first turns): the prompt is those turns, as TRL's `maybe_extract_prompt` takes it
    # (trl/data_utils.py: a prompt whose format differs from chosen's is replaced by the shared prefix).
    prompt_in_conversations = (isinstance(prompt_value, str) and isinstance(chosen, list)
                               and _common_prefix_messages(chosen, rejected) > 0)
    if prompt_value is None or prompt_in_conversations:  # implicit-prompt format
        if isinstance(chosen, list):
            shared = _common_prefix_messages(chosen, rejected)
            prompt_text = render_messages(chosen[:shared]) if shared else ""
            chosen_text, rejected_text = render_response(chosen[shared:]), render_response(rejected[shared:])
            if shared and not _has_user_turn(chosen[:shared]):
                problems.append(Problem(location, config.prompt_field, "the turns chosen and rejected share "
                                        "(the prompt) hold no user turn"))
            problems += _response_role_problems(chosen, shared, location, config.chosen_field)
            problems += _response_role_problems(rejected, shared, location, config.rejected_field)
        else:
            prompt_text, chosen_text, rejected_text = _split_implicit_text(chosen, rejected)
        if is_blank(prompt_text):
            return [Problem(location, config.prompt_field,
                "missing field, and chosen/rejected share no prefix to use as the prompt (implicit-prompt format)")]
    else:
        prompt_text = render_messages(prompt_value) if isinstance(prompt_value, list) else prompt_value
        if isinstance(prompt_value, list) and not _has_user_turn(prompt_value):
            problems.append(Problem(location, config.prompt_field, "a conversational prompt needs a user turn, got "
                                    f"roles {', '.join(m['role'] for m in prompt_value)}"))
        chosen_text, rejected_text = render_response(chosen), render_response(rejected)
        problems += _response_role_problems(chosen, 0, location, config.chosen_field)
        problems += _response_role_problems(rejected, 0, location, config.rejected_field)

    for column, text in ((config.prompt_field, prompt_text), (config.chosen_field, chosen_text), (config.rejected_field, rejected_text)):
        if is_blank(text):
            problems.append(Problem(location, column, "expected non-empty text, got an empty value or only "
                                                      "invisible characters"))
    if not problems and chosen_text.strip() == rejected_text.strip():
        problems.append(Problem(location, config.rejected_field, "identical to chosen; a preference needs two different responses"))
    extras = {}
    for name, column in (("subset", config.subset_field), ("domain", config.domain_field), ("source", "source"), ("section", "section")):
        value = row.get(column)
        if value is not None and not isinstance(value, str):
            problems.append(Problem(location, column, f"expected a string, got {type(value).__name__}"))
        extras[name] = value or None
    raw_id = row.get(config.id_field)
    id_problem = check_id(raw_id, location, config.id_field)
    if id_problem:
        problems.append(id_problem)
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


def check_id(raw_id: Any, location: str, column: str) -> Problem | None:
    """An id is a string or an integer (not a bool, float or object: `True` or `1.0` would be renamed)."""
    if raw_id is None or (isinstance(raw_id, str | int) and not isinstance(raw_id, bool)):
        return None
    return Problem(location, column, f"expected a string or integer id, got {type(raw_id).__name__} {raw_id!r}")


def text_field(row: dict[str, Any], column: str, location: str, part: str,
               render_messages: MessageRenderer = render_transcript) -> str | list[Problem]:
    """One prompt (`part="prompt"`) or response (`part="response"`) column as text: a string, or messages
    (checked like a pair's) rendered to text; else its problems."""
    value = row.get(column)
    if isinstance(value, list):
        problems = _check_messages(value, location, column)
        if problems:
            return problems
        if part == "response":
            problems = _response_role_problems(value, 0, location, column)
        elif not _has_user_turn(value):
            problems = [Problem(location, column, "a conversational prompt needs a user turn")]
        if problems:
            return problems
        value = render_response(value) if part == "response" else render_messages(value)
    if not isinstance(value, str) or is_blank(value):
        return [Problem(location, column, f"expected non-empty text, got {type(value).__name__}")]
    return value


def _has_user_turn(messages: Messages) -> bool:
    return any(message["role"] == "user" for message in messages)


def _response_role_problems(value: str | Messages, start: int, location: str, column: str) -> list[Problem]:
    """A response given as messages (from index `start` on) must be the assistant's turns."""
    if isinstance(value, str):
        return []
    return [Problem(location, f"{column}[{index}].role", f"a response is the assistant's turn, got {message['role']!r}")
            for index, message in enumerate(value[start:], start=start) if message["role"] != "assistant"]


def render_response(value: str | Messages) -> str:
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
        raise DataValidationError("<none>", [Problem("configuration", "data", "no input data given (set data.data to a file)")], 0)
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
