"""`bench/gpu_check.py` runs end to end in its tiny mode (on CPU in CI), so a lent GPU machine finds it working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_mode_reports_every_measure(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--tiny", "--out", str(out)],
                   check=True, env=env, cwd=tmp_path, timeout=600)
    [result] = json.loads(out.read_text())["shapes"].values()
    assert result["logit_error"] < 1e-4  # the engine computes the model's own logits
    assert result["generation"]["generated_tokens"] == result["generation"]["rows"] * 8  # fixed-length critiques
    assert result["scoring"]["pairs_per_s"] > 0 and result["training"]["trained_tokens_per_s"] > 0
