"""Crash-safe files: JSON Lines appended in whole batches (a torn last line is repaired on the next open),
and whole files written atomically.

A job killed with SIGKILL can leave at most one partial line at the end of the file (each batch is
written with one `write`, then flushed and fsynced). `read_jsonl_repairing` drops that partial line
by truncating the file to its last complete record, so a resumed job appends after valid data and
never duplicates or corrupts a record. A whole file is written to `NAME.tmp` and renamed onto NAME,
so NAME is always either the old file or the new one; a failed write removes `NAME.tmp`.

Lines are UTF-8 whatever a text holds: a lone surrogate (valid in a Python `str`, not in UTF-8) is
written as its JSON escape `\\udXXX`, which reads back as the same string.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def read_jsonl_repairing(path: Path) -> list[dict[str, Any]]:
    """All complete records of `path` (none if it does not exist); a torn tail is cut off the file."""
    if not path.exists():
        return []
    records: list[dict[str, Any]] = []
    valid_bytes = 0
    with path.open("rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # torn write: the process died inside this line
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
            valid_bytes += len(line)
    if valid_bytes != path.stat().st_size:
        with path.open("r+b") as handle:
            handle.truncate(valid_bytes)
    return records


def _line(row: dict[str, Any]) -> bytes:
    # Inside a JSON string `backslashreplace` turns a lone surrogate into its own JSON escape.
    return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")


def append_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows as one write, flushed and fsynced, so a crash loses at most this batch."""
    payload = b"".join(_line(row) for row in rows)
    if not payload:
        return
    with path.open("ab") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def _staged(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`: renamed onto it when the block succeeds, removed when it fails."""
    staging = path.with_suffix(path.suffix + ".tmp")
    try:
        yield staging
        staging.replace(path)
    finally:
        staging.unlink(missing_ok=True)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write a whole file atomically (temporary file, then rename)."""
    with _staged(path) as staging, staging.open("wb") as handle:
        for row in rows:
            handle.write(_line(row))


def write_text_atomic(path: Path, text: str) -> None:
    """Write a whole text file atomically: a crash leaves the old file or the new one, never half of one."""
    with _staged(path) as staging:
        staging.write_text(text, encoding="utf-8")


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as Parquet (atomically); nested lists and dicts become Arrow lists and structs."""
    with _staged(path) as staging:
        pq.write_table(pa.Table.from_pylist(rows), staging)
