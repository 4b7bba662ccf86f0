"""Crash-safe JSONL: a torn last line is repaired, never duplicated or kept corrupt."""

from __future__ import annotations

import json

from criticrm.data.jsonl import append_jsonl, read_jsonl_repairing, write_parquet


def test_append_then_read(tmp_path):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, [{"a": 1}, {"a": 2}])
    append_jsonl(path, [])
    append_jsonl(path, [{"a": 3}])
    assert read_jsonl_repairing(path) == [{"a": 1}, {"a": 2}, {"a": 3}]


def test_torn_tail_is_cut_and_appending_continues(tmp_path):
    path = tmp_path / "r.jsonl"
    append_jsonl(path, [{"a": 1}])
    with path.open("a") as handle:
        handle.write('{"a": 2, "b": "tor')  # a process killed mid-write
    assert read_jsonl_repairing(path) == [{"a": 1}]
    assert path.read_text() == '{"a": 1}\n'
    append_jsonl(path, [{"a": 2}])
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"a": 1}, {"a": 2}]


def test_missing_file_reads_empty(tmp_path):
    assert read_jsonl_repairing(tmp_path / "none.jsonl") == []


def test_parquet_round_trip(tmp_path):
    import pyarrow.parquet as pq

    rows = [{"id": "x", "scores": [1.0, 2.0], "text": None}, {"id": "y", "scores": [], "text": "t"}]
    write_parquet(tmp_path / "r.parquet", rows)
    assert pq.read_table(tmp_path / "r.parquet").to_pylist() == rows
