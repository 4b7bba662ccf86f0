"""Crash-safe JSON Lines: append whole batches, and repair a torn last line on the next open.

A job killed with SIGKILL can leave at most one partial line at the end of the file (each batch is
written with one `write`, then flushed and fsynced). `read_jsonl_repairing` drops that partial line
by truncating the file to its last complete record, so a resumed job appends after valid data and
never duplicates or corrupts a record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
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


def append_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows as one write, flushed and fsynced, so a crash loses at most this batch."""
    payload = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if not payload:
        return
    with path.open("a", encoding="utf-8") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write a whole file atomically (temporary file, then rename)."""
    staging = path.with_suffix(path.suffix + ".tmp")
    with staging.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    staging.replace(path)


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as Parquet (atomically); nested lists and dicts become Arrow lists and structs."""
    staging = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows), staging)
    staging.replace(path)
