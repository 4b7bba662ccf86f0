"""The run directory: what every stage writes where, and the one guard of a stage folder's settings.

A pipeline run directory holds `config.yaml` and `versions.json` (what ran), the stage-1 data report
`report.md`, one folder per stage (`critiques`, `filter`, `refine`, `train-<mode>`, `eval-<name>`) and
the side-by-side `comparison`. A run of several self-training rounds keeps round 1 there and each later
round k in `round-k/`, with the same stage folders (its own data report, Critic-RM and evaluation), and
sums them up in `rounds.json` and a section of the run's `report.md`. The standalone commands write the
same folders wherever `--out` says.

Every stage folder records in `settings.json` the settings its outputs were made with (`guard`): a
stage run again on a folder resumes it only with the same settings and refuses others, never mixing
records made two ways. When the pipeline finishes a stage it adds the stage's result to the same file
(`mark_finished`) under a fingerprint of that stage's settings and every earlier stage's, so a later
run skips the stage while nothing it depends on changed (`finished_result`).

Folders written before this layout (their `stage.json`, `train_settings.json`, `DONE.json`) are read
the same way, so an older run directory resumes, or is redone and kept aside when its settings differ.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from criticrm.data.jsonl import write_text_atomic
from criticrm.errors import ConfigError
from criticrm.machine import cpu_model_name

# ---- a pipeline run directory ---------------------------------------------------------------------
CONFIG_FILE = "config.yaml"  # the resolved configuration of the run
VERSIONS_FILE = "versions.json"  # the software and hardware it ran on
REPORT_FILE = "report.md"  # a Markdown report (the run's data report; an evaluation folder's report)
CRITIQUES_DIR, FILTER_DIR, REFINE_DIR, COMPARISON_DIR = "critiques", "filter", "refine", "comparison"
ROUNDS_FILE = "rounds.json"  # a run of several self-training rounds: each round's numbers
ROUNDS_PLOT = "rounds.png"


def train_dir(mode: str) -> str:
    return f"train-{mode}"


def eval_dir(name: str) -> str:
    return f"eval-{name}"


def round_dir(run_dir: Path, round_number: int) -> Path:
    """Where self-training round `round_number` (from 1) works: the run directory itself for round 1, so a
    one-round run keeps the layout it always had, else its `round-k/` folder."""
    return Path(run_dir) if round_number == 1 else Path(run_dir) / f"round-{round_number}"


# ---- the files of each stage folder ---------------------------------------------------------------
SETTINGS_FILE = "settings.json"  # every stage: the settings its outputs were made with (this module)
SEGMENTS_FILE = "segments.json"  # every stage: the wall time of each process that worked on it (`working`)
# stage 1a, critique
PAIRS_FILE = "pairs.jsonl"  # the input pairs (later stages read their texts from here)
RECORDS_FILE = "critiques.jsonl"  # one critique record per line, appended batch by batch
RECORDS_PARQUET = "critiques.parquet"
CRITIQUE_SUMMARY_FILE = "summary.json"
# stage 1b, filter
FILTERED_FILE = "filtered.jsonl"
FILTER_STATS_FILE = "filter_stats.json"
SOURCE_FILE = "source.json"  # the critique folder it filtered (the data report reads its records)
# stage 1c, refine
REFINED_FILE = "refined.jsonl"  # one refined pair per line with what happened, appended batch by batch
TRAIN_FILE = "train.jsonl"  # the training data: one TrainingPair per line
TRAIN_PARQUET = "train.parquet"
REFINE_STATS_FILE = "refine_stats.json"
# stage 2, train
MODEL_DIR = "model"  # the trained reward model (see criticrm.models.critic_rm for its files)
TRAIN_SUMMARY_FILE = "train_summary.json"
TRAIN_LOG_FILE = "log.jsonl"
# evaluation
PROGRESS_FILE = "progress.jsonl"  # finished examples, appended chunk by chunk
REPORT_JSON = "report.json"  # written last: its presence means the folder is complete
EXAMPLES_FILE = "examples.jsonl"
COMPARE_FILE = "compare.md"

_LEGACY_SETTINGS = ("stage.json", "train_settings.json")  # read, never written
_LEGACY_DONE = "DONE.json"


# ---- the guard ------------------------------------------------------------------------------------
def fingerprint(settings: Any) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_record(folder: Path) -> dict[str, Any]:
    """The folder's record: {"settings": ..., "finished": {...}}, either part absent when not written."""
    path = Path(folder) / SETTINGS_FILE
    if path.is_file():
        return json.loads(path.read_text())
    record: dict[str, Any] = {}
    for name in _LEGACY_SETTINGS:
        legacy = Path(folder) / name
        if legacy.is_file():
            settings = json.loads(legacy.read_text())
            if name == "train_settings.json":  # {"config": {...}, "data", "model"} -> one flat mapping
                settings = {**settings.pop("config", {}), **settings}
            record["settings"] = settings
    done = Path(folder) / _LEGACY_DONE
    if done.is_file():
        record["finished"] = json.loads(done.read_text())
    return record


def changed_settings(recorded: dict[str, Any], settings: dict[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """The keys whose value differs from the record; a key the record lacks (a setting added since
    the folder was made, which then ran as its default) is not compared."""
    ignored = set(ignore)
    return sorted(key for key, value in settings.items()
                  if key not in ignored and key in recorded and recorded[key] != _jsonable(value))


def same_settings(folder: Path, settings: dict[str, Any], ignore: Iterable[str] = ()) -> bool:
    """Whether the folder's outputs were made with these settings (keys in `ignore` aside)."""
    record = read_record(folder)
    return "settings" in record and not changed_settings(record["settings"], settings, ignore)


def guard(folder: Path, settings: dict[str, Any], what: str, *, ignore: Iterable[str] = (), start_over: bool = False,
          hint: str = "use another output folder, or delete this one (the pipeline's run.force moves it aside)",
          write: bool = True) -> None:
    """Record `settings` as those of the folder's outputs, or refuse a folder made with other settings.

    Resuming appends to what is there, so mixing settings would silently mix incompatible records.
    `start_over`: the caller discards what is there, so only the new settings are recorded. `write`
    False checks only (the processes of a distributed run other than the main one).
    """
    folder = Path(folder)
    record = read_record(folder)
    if "settings" in record and not start_over:
        changed = changed_settings(record["settings"], settings, ignore)
        if changed:
            raise ConfigError(f"{folder} holds {what} made with other settings ({', '.join(changed)} changed); {hint}")
    if write:
        record["settings"] = _jsonable(settings)
        record.pop("finished", None)  # outputs about to change: the stage is not finished any more
        _write(folder, record)


def finished_result(folder: Path, key: str) -> dict | None:
    """The result the pipeline recorded for this folder's stage under fingerprint `key`, else None."""
    finished = read_record(folder).get("finished")
    return finished["result"] if finished and finished.get("fingerprint") == key else None


def mark_finished(folder: Path, key: str, result: dict, seconds: float) -> None:
    record = read_record(folder)
    record["finished"] = {"fingerprint": key, "seconds": seconds, "result": result,
                          "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write(Path(folder), record)


# ---- the wall time a stage took, over every process that worked on it ------------------------------------
@contextlib.contextmanager
def working(folder: Path, heartbeat: float = 30.0) -> Iterator[None]:
    """Record in the folder's `segments.json` the wall time of the work done inside this block, as one more
    segment after those of earlier processes.

    A long stage is often cut (a session ends, a machine is lent for a while) and resumed later, maybe on
    another CPU; the stage's own timer sees only the process that finishes it. The segment is rewritten
    every `heartbeat` seconds from a background thread, so a process killed without warning still leaves
    its time, less at most one heartbeat; each segment names the machine it ran on. A block that ends within
    a second (its work was already done) adds no segment. The record is a report, never the work: a
    folder that is gone, or a write that fails, skips the record and leaves the work and its errors alone."""
    folder = Path(folder)
    path = folder / SEGMENTS_FILE
    earlier = _read_segments(path)
    segment = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seconds": 0.0, "machine": ""}
    began = time.perf_counter()
    lock = threading.Lock()
    stop = threading.Event()

    def save() -> None:
        with lock:
            if not folder.is_dir():  # not made yet, or moved away by the work
                return
            segment["seconds"] = round(time.perf_counter() - began, 1)
            segment["machine"] = _machine()
            with contextlib.suppress(OSError):
                write_text_atomic(path, json.dumps({"segments": [*earlier, segment]}, indent=2))

    def beat() -> None:
        while not stop.wait(heartbeat):
            save()

    thread = threading.Thread(target=beat, name="segment-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if time.perf_counter() - began >= 1.0:
            save()


def segment_totals(folder: Path) -> dict[str, Any] | None:
    """{seconds, segments, machines} summed over the folder's `segments.json`, or None without one."""
    segments = _read_segments(Path(folder) / SEGMENTS_FILE)
    if not segments:
        return None
    return {"seconds": round(sum(float(s.get("seconds") or 0) for s in segments), 1), "segments": len(segments),
            "machines": sorted({str(s.get("machine") or "unknown") for s in segments})}


def _read_segments(path: Path) -> list[dict[str, Any]]:
    try:
        segments = json.loads(path.read_text())["segments"]
    except (OSError, ValueError, KeyError, TypeError):
        return []  # none yet (or a file this version does not read: the totals then start again)
    return [s for s in segments if isinstance(s, dict)] if isinstance(segments, list) else []


def _machine() -> str:
    """The CPU model and core count (what decides a CPU-bound stage's speed), and the GPU when the work used one."""
    described = f"{cpu_model_name()}, {os.cpu_count()} cores"
    torch = sys.modules.get("torch")  # never imported here for this, nor CUDA started
    if torch is not None and torch.cuda.is_initialized():
        described += f", {torch.cuda.get_device_name(torch.cuda.current_device())}"
    return described


def _jsonable(value: Any) -> Any:
    """The value as it reads back from JSON (tuples as lists, paths as strings)."""
    return json.loads(json.dumps(value, default=str))


def _write(folder: Path, record: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / SETTINGS_FILE, json.dumps(record, indent=2, default=str))
