"""Hostile input through the loading API: every malformed file, row, encoding or size is the project's
own error naming the file, the row and the field, `skip_invalid` drops exactly the bad rows, and a
bounded fuzz of a few hundred generated inputs raises nothing else and loses no valid row."""

from __future__ import annotations

import csv
import io
import json
import os
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from criticrm.data.jsonl import write_jsonl
from criticrm.data.readers import DataConfig, DataValidationError, UnreadableDataError, load_pairs
from criticrm.data.rewardbench import load_eval_examples
from criticrm.data.schema import content_id
from criticrm.data.text import is_blank
from criticrm.inference.score_file import read_scoring_rows
from criticrm.training.data import load_training_pairs

# Ids no one- to three-byte mutation of the fuzz can turn into one another.
VALID = [{"id": f"row-{i}-{word}", "prompt": f"Question number {i}?", "chosen": f"A good answer, {word}.",
          "rejected": f"A poor answer, {word}."} for i, word in enumerate(("alpha", "bravo", "charlie", "delta"))]
COLUMNS = ["id", "prompt", "chosen", "rejected"]
RAW = "@@RAW@@"  # replaced, in the file's bytes, by raw bytes (inside a string, or a whole JSON value with quotes)


def encode(fmt: str, rows: list[dict]) -> bytes:
    """The rows as a file of format `fmt` (CSV cells that are lists are JSON text, as a user would write them)."""
    if fmt == "jsonl":
        return "".join(json.dumps(row) + "\n" for row in rows).encode()
    if fmt == "json":
        return json.dumps(rows, indent=1).encode()
    if fmt == "csv":
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(COLUMNS)
        writer.writerows([json.dumps(row[c]) if isinstance(row[c], list) else row[c] for c in COLUMNS] for row in rows)
        return text.getvalue().encode()
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def write(tmp_path: Path, fmt: str, data: bytes, name: str = "data") -> Path:
    path = tmp_path / f"{name}.{fmt}"
    path.write_bytes(data)
    return path


def load(path: Path, **options):
    return load_pairs(DataConfig(data=str(path), **options))


def location_of(fmt: str, index: int) -> str:
    """Where the reader says row `index` is."""
    return {"jsonl": f"line {index + 1}", "json": f"item {index}", "csv": f"line {index + 2}",
            "parquet": f"row {index}"}[fmt]


def ids(result) -> list[str]:
    return [pair.id for pair in result.pairs]


# ---- every family, one case each ---------------------------------------------------------------------

def bad(**overrides) -> dict:
    return {"id": "bad", "prompt": "Which is right?", "chosen": "This one.", "rejected": "That one."} | overrides


USER, SYSTEM = {"role": "user", "content": "Hi?"}, {"role": "system", "content": "Be kind."}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


# (name, bad row, field the problem names, words of the message, formats that can hold the row)
ROW_CASES = [
    ("invisible chosen", bad(chosen="\u200b\u200d\ufeff"), "chosen", "non-empty text", "jsonl json csv parquet"),
    ("NUL prompt", bad(prompt="\x00\x00"), "prompt", "non-empty text", "jsonl json parquet"),
    ("whitespace rejected", bad(rejected=" \t\u3000"), "rejected", "non-empty text", "jsonl json csv parquet"),
    ("lone surrogate", bad(chosen="ok \ud800 ok"), "chosen", "lone surrogate", "jsonl json"),
    ("surrogate in id", bad(id="x\udfffy"), "id", "lone surrogate", "jsonl json"),
    ("invalid UTF-8 byte", bad(prompt=f"caf{RAW}"), "prompt", "not valid UTF-8", "jsonl json csv"),
    ("bool id", bad(id=True), "id", "got bool True", "jsonl json"),
    ("float id", bad(id=1.5), "id", "got float", "jsonl json"),
    ("object id", bad(id={"a": 1}), "id", "got dict", "jsonl json"),
    ("int prompt", bad(prompt=7), "prompt", "got int", "jsonl json"),
    ("response as a user turn", bad(prompt=[USER], chosen=[{"role": "user", "content": "x"}],
                                    rejected=[assistant("y")]), "chosen[0].role", "assistant's turn", "jsonl json csv"),
    ("response as a system turn", bad(prompt=[USER], chosen=[assistant("x")], rejected=[SYSTEM]),
     "rejected[0].role", "assistant's turn", "jsonl json csv"),
    ("prompt without a user turn", bad(prompt=[SYSTEM], chosen=[assistant("x")], rejected=[assistant("y")]),
     "prompt", "needs a user turn", "jsonl json csv"),
    ("message without content", bad(prompt=[USER], chosen=[{"role": "assistant"}], rejected=[assistant("y")]),
     "chosen[0].content", "expected a string", "jsonl json csv"),
]


@pytest.mark.parametrize(("name", "row", "field", "message", "formats"), ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_each_bad_row_is_named_and_skipping_it_keeps_every_other_row(tmp_path, name, row, field, message, formats):
    for fmt in formats.split():
        rows = [*VALID[:2], row, *VALID[2:]]
        data = encode(fmt, rows).replace(RAW.encode(), b"\xe9")  # a Latin-1 byte: not UTF-8
        path = write(tmp_path, fmt, data)
        with pytest.raises(DataValidationError) as caught:
            load(path)
        problems = [str(p) for p in caught.value.problems]
        assert len(problems) == 1 and problems[0].startswith(f"{path}, {location_of(fmt, 2)}, field '{field}'"), \
            (fmt, problems)
        assert message in problems[0], (fmt, problems)
        result = load(path, skip_invalid=True)
        assert ids(result) == [r["id"] for r in VALID] and result.invalid_rows == 1, fmt


# (name, raw bytes standing for a whole JSON value, whether a JSON document holding it still parses)
VALUE_CASES = [
    ("nested 1,000 deep", b"[" * 1000 + b"]" * 1000, False, "nested too deeply"),
    ("integer of 5,000 digits", b"9" * 5000, False, "digits"),
    ("NaN", b"NaN", True, "got float"),
    ("syntax error", b"tru", False, "invalid JSON"),
]


@pytest.mark.parametrize(("name", "raw", "parses", "message"), VALUE_CASES, ids=[c[0] for c in VALUE_CASES])
def test_json_values_no_parser_takes_are_that_rows_problem(tmp_path, name, raw, parses, message):
    rows = [*VALID[:2], bad(chosen=RAW), *VALID[2:]]
    path = write(tmp_path, "jsonl", encode("jsonl", rows).replace(f'"{RAW}"'.encode(), raw))
    result = load(path, skip_invalid=True)
    assert ids(result) == [r["id"] for r in VALID] and message in str(result.problems[0])
    assert str(result.problems[0]).startswith(f"{path}, line 3")
    document = write(tmp_path, "json", encode("json", rows).replace(f'"{RAW}"'.encode(), raw))
    if parses:
        assert ids(load(document, skip_invalid=True)) == [r["id"] for r in VALID]
    else:  # a JSON document that does not parse has no rows to keep
        with pytest.raises(UnreadableDataError, match=message):
            load(document, skip_invalid=True)


def test_a_key_given_twice_is_an_error_not_the_last_value(tmp_path):
    line = b'{"id": "x", "prompt": "Q?", "chosen": "A", "chosen": "B", "rejected": "C"}\n'
    path = write(tmp_path, "jsonl", encode("jsonl", VALID[:1]) + line)
    [problem] = load(path, skip_invalid=True).problems
    assert "line 2" in str(problem) and "'chosen' appears more than once" in str(problem)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_a_utf8_bom_is_read_the_same_in_every_format(tmp_path, fmt):
    if fmt == "parquet":  # a BOM reaches Parquet through its first column's name (a CSV converted by pandas)
        rows = [{("\ufeff" + k if k == "id" else k): v for k, v in row.items()} for row in VALID]
        data = encode(fmt, rows)
    else:
        data = b"\xef\xbb\xbf" + encode(fmt, VALID)
    assert load(write(tmp_path, fmt, data)).pairs == load(write(tmp_path, fmt, encode(fmt, VALID), "plain")).pairs


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_a_utf16_file_is_refused_as_a_whole(tmp_path, fmt):
    path = write(tmp_path, fmt, encode(fmt, VALID).decode().encode("utf-16"))
    with pytest.raises(UnreadableDataError, match="UTF-16 or UTF-32 encoded.*save it as UTF-8"):
        load(path, skip_invalid=True)


def test_csv_cells_beyond_python_s_default_limit_are_read(tmp_path):
    long = "word " * 40_000  # 200,000 characters (csv refuses fields over 131,072 by default)
    path = write(tmp_path, "csv", encode("csv", [bad(chosen=long), *VALID]))
    assert load(path).pairs[0].chosen == long


def test_csv_repeated_header_and_extra_cells_are_errors(tmp_path):
    repeated = write(tmp_path, "csv", b"prompt,chosen,rejected,prompt\nQ,A,B,Q2\n")
    with pytest.raises(UnreadableDataError, match="line 1, field 'prompt': the header names this column 2 times"):
        load(repeated)
    extra = write(tmp_path, "csv", encode("csv", VALID) + b"row-x,Q?,A,B,surplus\n")
    result = load(extra, skip_invalid=True)
    assert len(result.pairs) == 4 and "line 6: 5 cells, but the header names only 4 columns" in str(result.problems[0])


def test_unreadable_files_are_clear_errors(tmp_path):
    too_long = tmp_path / ("x" * 300 + ".jsonl")
    with pytest.raises(UnreadableDataError, match="cannot read it: File name too long"):
        load(too_long)
    eio = tmp_path / "eio.jsonl"
    eio.symlink_to("/proc/self/mem")  # reading a process's memory at offset 0 fails with EIO
    with pytest.raises(UnreadableDataError, match="cannot read it: Input/output error"):
        load(eio)
    if os.geteuid() != 0:  # root reads anything
        locked = write(tmp_path, "jsonl", encode("jsonl", VALID), "locked")
        locked.chmod(0)
        with pytest.raises(UnreadableDataError, match="Permission denied"):
            load(locked)


@pytest.mark.parametrize("junk", ["dataset_info.json", "state.json", "data-00000-of-00001.arrow"])
def test_a_damaged_dataset_folder_is_a_clear_error(tmp_path, junk):
    from datasets import Dataset

    Dataset.from_list(VALID).save_to_disk(str(tmp_path / "ds"))
    (tmp_path / "ds" / junk).write_bytes(b"\x00junk{")
    with pytest.raises(UnreadableDataError, match="ds"):
        load(tmp_path / "ds")


def test_lone_surrogates_never_crash_hashing_or_writing(tmp_path):
    assert content_id("\ud800", "a", "b").startswith("sha-")
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, [{"text": "a\ud800b"}])
    assert json.loads(path.read_bytes()) == {"text": "a\ud800b"} and not list(tmp_path.glob("*.tmp"))


def test_training_rows_are_checked_field_by_field(tmp_path):
    good = {"id": "t1", "prompt": "Q?", "chosen": "A", "rejected": "B", "critique_supervision": True,
            "chosen_critiques": [{"text": "Fine.", "score": 8}], "rejected_critiques": [{"text": "Bad.", "score": None}]}
    rows = [good, good | {"id": True}, good | {"id": "t3", "chosen_critiques": [{"text": 5}]},
            good | {"id": "t4", "critique_supervision": "yes", "margin": float("inf")},
            good | {"id": "t5", "sampled_chosen_critiques": "all of them"}]
    path = write(tmp_path, "jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    with pytest.raises(DataValidationError) as caught:
        load_training_pairs(path, "critic")
    assert [(p.location.rsplit(", ", 1)[1], p.field) for p in caught.value.problems] == [
        ("line 2", "id"), ("line 3", "chosen_critiques[0]"), ("line 4", "critique_supervision"), ("line 4", "margin"),
        ("line 5", "sampled_chosen_critiques")]


# ---- fuzz --------------------------------------------------------------------------------------------

PALETTE = [b"\xff", b"\x00", b'"', b"{", b"[", b"}", b",", b"\\", b"\n", b"\xed\xa0\x80", b"\xef\xbb\xbf",
           b"\xe2\x80\x8b", b"\\ud800", b"1e999", b"NaN", b"\r"]  # no letters: ids cannot collide


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, list[int]]:
    """1-3 random replacements, insertions or deletions from the palette; returns the positions touched
    (in the original's offsets)."""
    touched = []
    for _ in range(rng.randint(1, 3)):
        position = rng.randrange(len(data))
        touched.append(position)
        kind = rng.choice(("replace", "insert", "delete"))
        patch = b"" if kind == "delete" else rng.choice(PALETTE)
        data = data[:position] + patch + data[position + (kind != "insert"):]
    return data, touched


def untouched_ids(original: bytes, touched: list[int]) -> list[str]:
    """Ids of the JSONL rows wholly before the first mutation (their bytes are the same in the mutated file)."""
    kept, end = [], 0
    for line in original.splitlines(keepends=True):
        end += len(line)
        if end > min(touched):
            break
        kept.append(json.loads(line)["id"])
    return kept


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_fuzzed_files_raise_only_our_error_and_lose_no_valid_row(tmp_path, fmt):
    rng = random.Random(f"criticrm-{fmt}")
    original = encode(fmt, [*VALID, *(bad(id=f"extra-{i}", prompt=f"Extra {i}?") for i in range(4))])
    for case in range(60):
        data, touched = mutate(original, rng)
        path = write(tmp_path, fmt, data, f"case{case}")
        for loader in (load_pairs, load_eval_examples, read_scoring_rows):
            for skip in (False, True):
                try:
                    result = loader(DataConfig(data=str(path), skip_invalid=skip))
                except DataValidationError:
                    continue
                records = result.pairs if hasattr(result, "pairs") else result
                assert records, (case, data)
                if loader is load_pairs:
                    assert all(not is_blank(p.prompt) and not is_blank(p.chosen) for p in result.pairs)
                    if skip and fmt == "jsonl":  # rows before the first mutation are all kept
                        assert set(untouched_ids(original, touched)) <= set(ids(result)), (case, data)
