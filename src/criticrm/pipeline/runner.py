"""Running stages in order inside a run directory: finished stages skipped, a record of what ran.

A stage is finished when its folder's record (`criticrm.rundir`) holds its result under a fingerprint
of the settings it ran with (its own and those of every stage before it). Running the pipeline again
skips a finished stage whose fingerprint matches; a stage whose settings changed is redone, and so is
every stage after it, with the old output moved aside, never deleted. `force` redoes every stage.
An unfinished stage folder is resumed by the stage itself.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from criticrm import rundir
from criticrm.config import Config
from criticrm.config_checks import check_output


@dataclass
class RunConfig(Config):
    """Where the pipeline works."""

    run_dir: str = field(default="runs/demo", metadata={"help": "run directory: every stage writes its outputs here"})
    force: bool = field(default=False, metadata={"help": "redo every stage, even finished ones (old outputs are kept aside)"})
    rounds: int = field(default=1, metadata={"help": "self-training rounds: round k+1 samples, filters and refines its critiques with round k's Critic-RM and trains again (round k >= 2 in round-k/)", "min": 1})
    baseline: bool = field(default=True, metadata={"help": "also train (and evaluate) the standard Bradley-Terry RM on the same pairs, the baseline the Critic-RM is compared with; turn off when the baseline comes from elsewhere (it costs about a third of the training time)"})
    round_init: Literal["base", "continue"] = field(default="base", metadata={"help": "what round k+1 trains from: base (the base backbone and a fresh head, on round k+1's data) or continue (round k's Critic-RM, reward head included)"})

    def __post_init__(self):
        super().__post_init__()
        check_output(self.run_dir)


def record_versions(run_dir: Path) -> dict:
    """Write versions.json: the software and hardware a run used."""
    packages = {}
    for name in ("criticrm", "torch", "transformers", "datasets", "accelerate", "peft", "llama-cpp-python"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    try:
        import torch

        accelerator = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        accelerator = None
    versions = {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
                "accelerator": accelerator, "packages": packages, "recorded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / rundir.VERSIONS_FILE).write_text(json.dumps(versions, indent=2))
    return versions


class StageRunner:
    """Runs stages in order inside `run_dir`, skipping the finished ones.

    `upstream` starts the fingerprint chain: what the stages depend on beyond their own settings (a
    self-training round's number and the chain of the round before it); empty for a run's first stages.
    `label` prefixes the stage names in the log (`round-2/`).
    """

    def __init__(self, run_dir: Path, force: bool = False, log: Callable[[str], None] = print,
                 upstream: str = "", label: str = ""):
        self.run_dir = run_dir
        self.force = force
        self.log = log
        self.label = label
        self._upstream = upstream  # fingerprint chain: a changed stage invalidates all later ones
        self.keys: dict[str, str] = {}  # stage name -> the fingerprint it ran (or was skipped) under

    def run(self, name: str, settings: Any, action: Callable[[Path], dict]) -> dict:
        """Run `action(out_dir)` unless the stage already finished with the same settings; return its result."""
        out_dir = self.run_dir / name
        key = rundir.fingerprint({"upstream": self._upstream, "settings": settings})
        self._upstream = self.keys[name] = key
        name = self.label + name
        finished = rundir.read_record(out_dir).get("finished")
        if finished and finished.get("fingerprint") == key and not self.force:
            self.log(f"[{name}] finished earlier with the same settings: skipped (run.force redoes it)")
            return finished["result"]
        if finished:
            reason = "run.force" if self.force else "its settings (or an earlier stage's) changed"
            self.log(f"[{name}] redoing it ({reason}); the previous output is kept in {_move_aside(out_dir)}")
        elif self.force and out_dir.exists():
            _move_aside(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.log(f"[{name}] running")
        started = time.perf_counter()
        with rundir.working(out_dir):
            result = action(out_dir)
        seconds = round(time.perf_counter() - started, 1)
        rundir.mark_finished(out_dir, key, result, seconds)
        totals = rundir.segment_totals(out_dir)
        resumed = f" (over {totals['segments']} segments: {totals['seconds']} s)" if totals and totals["segments"] > 1 else ""
        self.log(f"[{name}] done in {seconds} s{resumed}")
        return result


def _move_aside(out_dir: Path) -> Path:
    """Rename a stage folder to `<name>.old-<time>[-k]` so that redoing a stage never deletes work."""
    base = out_dir.with_name(f"{out_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    target, counter = base, 0
    while target.exists():
        counter += 1
        target = base.with_name(f"{base.name}-{counter}")
    out_dir.rename(target)
    return target
