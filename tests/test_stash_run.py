"""`bench/stash_run.py` carries a run's data stages to the next machine: everything but the training stages
comes back byte for byte, and a restore never writes over a run that already has its critiques."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stash(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(ROOT / "bench" / "stash_run.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_save_then_restore_keeps_the_data_stages_and_leaves_out_training(tmp_path):
    run = tmp_path / "run"
    kept = {"critiques/critiques.jsonl": '{"pair": 0}\n', "critiques/settings.json": "{}",
            "refine/train.jsonl": '{"row": 1}\n', "round-1/critiques/critiques.jsonl": "{}\n"}
    for relative, text in {**kept, "train-critic/model.safetensors": "weights",
                           "round-1/train-standard/adapter.bin": "weights"}.items():
        (run / relative).parent.mkdir(parents=True, exist_ok=True)
        (run / relative).write_text(text)
    saved = stash("save", str(run), "stash/seed.tar.xz", cwd=tmp_path)
    assert saved.returncode == 0, saved.stderr
    assert "4 files" in saved.stdout and not (tmp_path / "stash" / "seed.tar.xz.partial").exists()
    restored_run = tmp_path / "restored"
    assert stash("restore", "stash/seed.tar.xz", str(restored_run), cwd=tmp_path).returncode == 0
    files = {str(p.relative_to(restored_run)): p.read_text() for p in restored_run.rglob("*") if p.is_file()}
    assert files == kept
    refused = stash("restore", "stash/seed.tar.xz", str(restored_run), cwd=tmp_path)
    assert refused.returncode != 0 and "move it away first" in refused.stderr
    assert stash("save", str(tmp_path / "empty"), "x.tar.xz", cwd=tmp_path).returncode != 0  # no critiques yet
