"""Checkpoints a killed run can always resume from, and a training log without repeated steps.

The transformers `Trainer` writes `checkpoint-N/` file by file; a run killed meanwhile leaves a folder
without `trainer_state.json` or with a cut `optimizer.pt`, and `get_last_checkpoint` would pick it
and fail on every re-run. So a checkpoint counts only once it holds `COMPLETE_MARKER`, written last
(atomically) when every file of it is on disk. On resume, a folder without the marker is moved aside
to `incomplete-checkpoint-N` (kept, in case it is wanted; no `checkpoint-*` pattern matches it) with
a warning, and the newest complete checkpoint is used.

The marker also records how long `log.jsonl` was when the checkpoint was saved: a resumed run cuts
the log back to that length, so the steps it trains again are not logged twice (a fresh start
empties the log).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from criticrm.data.jsonl import write_text_atomic

COMPLETE_MARKER = "criticrm-complete.json"
INCOMPLETE_PREFIX = "incomplete-"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def mark_complete(checkpoint: Path, log_file: Path) -> None:
    """Declare `checkpoint` whole (call it after every file of it is written)."""
    log_bytes = log_file.stat().st_size if log_file.is_file() else 0
    write_text_atomic(checkpoint / COMPLETE_MARKER, json.dumps({"log_bytes": log_bytes}) + "\n")


def _checkpoints(out_dir: Path) -> list[Path]:
    """Every `checkpoint-N` folder, oldest step first."""
    found = [p for p in out_dir.iterdir() if _CHECKPOINT.match(p.name) and p.is_dir()] if out_dir.is_dir() else []
    return sorted(found, key=lambda p: int(_CHECKPOINT.match(p.name).group(1)))


def last_complete_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint whose marker says it was written whole; None when there is none."""
    complete = [p for p in _checkpoints(out_dir) if (p / COMPLETE_MARKER).is_file()]
    return complete[-1] if complete else None


def prune_after_finish(out_dir: Path, keep: str, best: str | Path | None = None) -> None:
    """Delete the checkpoints a finished run no longer needs (the final model is in `model/`): with `keep`
    "last", all but the newest and the `best` one (a run extended from the newest still names the best in
    its state, and loads it at the end when nothing beats it); "none", all; "all", none. Only complete
    checkpoints are touched."""
    if keep == "all":
        return
    complete = [p for p in _checkpoints(out_dir) if (p / COMPLETE_MARKER).is_file()]
    kept = {complete[-1].resolve()} if keep == "last" and complete else set()
    if keep == "last" and best is not None:
        kept.add(Path(best).resolve())
    for folder in complete:
        if folder.resolve() not in kept:
            shutil.rmtree(folder)


def prepare_resume(out_dir: Path, log_file: Path, checkpoint: Path | None) -> None:
    """Before training resumes from `checkpoint` (None: starts afresh), on the main process: set incomplete
    checkpoints aside and cut the log back to where `checkpoint` left it."""
    for folder in _checkpoints(out_dir):
        if not (folder / COMPLETE_MARKER).is_file():
            aside = folder.with_name(INCOMPLETE_PREFIX + folder.name)
            shutil.rmtree(aside, ignore_errors=True)
            folder.rename(aside)
            print(f"warning: {folder.name} in {out_dir} was not completely written (the run stopped while saving "
                  f"it); set aside as {aside.name}", file=sys.stderr)
    log_bytes = json.loads((checkpoint / COMPLETE_MARKER).read_text())["log_bytes"] if checkpoint else 0
    if log_file.is_file() and log_file.stat().st_size > log_bytes:
        with log_file.open("r+b") as handle:
            handle.truncate(log_bytes)
