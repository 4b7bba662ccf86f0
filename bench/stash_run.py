"""Keep a pipeline run's data stages across machines: pack them into one archive, unpack them later.

The benchmark machines are fresh in every session and `runs/` (git-ignored) does not survive, while one
seed of the quality protocol (issue 16) needs more CPU than a session has: its critiques alone take about
an hour. This packs what the run has made so far *except* the training stages (their model folders are
hundreds of MB; a training stage is redone whole in one session) into a compressed tar under
`bench/results`, to be committed, and unpacks it into a run directory on the next machine, where the
pipeline resumes every stage from its records (`criticrm.rundir`: settings, finished markers, appended
records) exactly as it would have on the first machine.

    python bench/stash_run.py save runs/protocol-seed1 bench/results/protocol/stash/seed1.tar.xz
    python bench/stash_run.py restore bench/results/protocol/stash/seed1.tar.xz runs/protocol-seed1

Keep archives out of any folder named `runs/` (git ignores every such folder). `restore` refuses to write
over a run directory that already holds the stages, so it never loses work.
"""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

from criticrm import rundir

# What a session can redo cheaply or must redo: a model and its training checkpoints.
LEFT_OUT_PREFIX = "train-"


def packed_members(run_dir: Path) -> list[Path]:
    """The run's files to keep, relative to it: everything but the training stages (of every round)."""
    kept = []
    for path in sorted(run_dir.rglob("*")):
        relative = path.relative_to(run_dir)
        if path.is_file() and not any(part.startswith(LEFT_OUT_PREFIX) for part in relative.parts):
            kept.append(relative)
    return kept


def save(run_dir: Path, archive: Path) -> list[Path]:
    if not (run_dir / rundir.CRITIQUES_DIR).is_dir():
        raise SystemExit(f"{run_dir}: no {rundir.CRITIQUES_DIR}/ stage to keep")
    members = packed_members(run_dir)
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:xz") as tar:
        for relative in members:
            tar.add(run_dir / relative, arcname=str(relative))
    partial.replace(archive)  # an interrupted save leaves the previous archive whole
    return members


def restore(archive: Path, run_dir: Path) -> list[str]:
    if (run_dir / rundir.CRITIQUES_DIR).exists():
        raise SystemExit(f"{run_dir}/{rundir.CRITIQUES_DIR} exists: it may hold newer work than {archive}; "
                         "move it away first")
    with tarfile.open(archive, "r:xz") as tar:
        names = tar.getnames()
        tar.extractall(run_dir, filter="data")  # "data": no absolute paths, links out or device files
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    saving = commands.add_parser("save", help="pack RUN_DIR's data stages into ARCHIVE (.tar.xz)")
    saving.add_argument("run_dir", type=Path)
    saving.add_argument("archive", type=Path)
    restoring = commands.add_parser("restore", help="unpack ARCHIVE into RUN_DIR")
    restoring.add_argument("archive", type=Path)
    restoring.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    if args.command == "save":
        members = save(args.run_dir, args.archive)
        print(f"{args.archive}: {len(members)} files, {args.archive.stat().st_size / 1e6:.1f} MB")
    else:
        names = restore(args.archive, args.run_dir)
        print(f"{args.run_dir}: {len(names)} files restored from {args.archive}")


if __name__ == "__main__":
    main()
