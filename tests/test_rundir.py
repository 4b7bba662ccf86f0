"""The run directory's one guard: stage settings recorded, resumes refused under other settings, finished
stages skipped, older folders read, and each stage's wall time over the processes that worked on it."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from criticrm import rundir
from criticrm.errors import ConfigError
from criticrm.pipeline.runner import StageRunner


def test_stage_runner_skips_redoes_and_keeps_old_output(tmp_path):
    calls = []

    def action(out_dir):
        calls.append(out_dir.name)
        (out_dir / "result.txt").write_text(str(len(calls)))
        return {"n": len(calls)}

    logs = []
    assert StageRunner(tmp_path, log=logs.append).run("a", {"x": 1}, action) == {"n": 1}
    assert StageRunner(tmp_path, log=logs.append).run("a", {"x": 1}, action) == {"n": 1}  # skipped
    assert calls == ["a"] and "skipped" in logs[-1]
    runner = StageRunner(tmp_path, log=logs.append)
    assert runner.run("a", {"x": 2}, action) == {"n": 2}  # settings changed: redone
    assert runner.run("b", {}, action) == {"n": 3}
    assert StageRunner(tmp_path, log=logs.append).run("a", {"x": 3}, action) == {"n": 4}
    assert StageRunner(tmp_path, log=logs.append).run("b", {}, action) == {"n": 5}  # upstream changed
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("a.old-"))
    assert kept and (tmp_path / kept[0] / "result.txt").exists()
    assert json.loads((tmp_path / "a" / rundir.SETTINGS_FILE).read_text())["finished"]["result"] == {"n": 4}
    assert StageRunner(tmp_path, force=True, log=logs.append).run("a", {"x": 3}, action) == {"n": 6}


def test_guard_records_then_refuses_other_settings_naming_them(tmp_path):
    rundir.guard(tmp_path, {"model": "m", "seed": 0, "steps": 10}, "records")
    rundir.guard(tmp_path, {"model": "m", "seed": 0, "steps": 10}, "records")  # the same: resumes
    rundir.guard(tmp_path, {"model": "m", "seed": 0, "steps": 20}, "records", ignore={"steps"})
    with pytest.raises(ConfigError, match=r"holds records made with other settings \(model, seed changed\)"):
        rundir.guard(tmp_path, {"model": "n", "seed": 1, "steps": 20}, "records")
    rundir.guard(tmp_path, {"model": "n", "seed": 1}, "records", start_over=True)
    assert rundir.same_settings(tmp_path, {"model": "n", "seed": 1, "added_later": True})  # a new setting


def test_a_folder_of_the_last_release_is_read(tmp_path):
    """Its `stage.json` / `train_settings.json` guard a resume; its `DONE.json` makes the pipeline redo the
    stage (and keep the old output aside), as its fingerprints came from other settings."""
    (tmp_path / "critiques").mkdir()
    (tmp_path / "critiques" / "stage.json").write_text(json.dumps({"model": "m"}))
    with pytest.raises(ConfigError, match="model changed"):
        rundir.guard(tmp_path / "critiques", {"model": "n"}, "critiques")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "train_settings.json").write_text(json.dumps({"config": {"seed": 1}, "data": "d"}))
    assert rundir.same_settings(tmp_path / "train", {"seed": 1, "data": "d"})
    (tmp_path / "critiques" / "DONE.json").write_text(json.dumps({"fingerprint": "old", "result": {}}))
    logs = []
    assert StageRunner(tmp_path, log=logs.append).run("critiques", {"model": "n"}, lambda out: {"n": 1}) == {"n": 1}
    assert "redoing it" in logs[0] and any(p.name.startswith("critiques.old-") for p in tmp_path.iterdir())


def test_working_adds_one_segment_per_process_and_sums_them(tmp_path):
    with rundir.working(tmp_path, heartbeat=0.05):
        time.sleep(1.1)
    with rundir.working(tmp_path):  # work found already done: no segment
        pass
    with rundir.working(tmp_path, heartbeat=0.05):
        time.sleep(1.1)
    segments = json.loads((tmp_path / rundir.SEGMENTS_FILE).read_text())["segments"]
    assert len(segments) == 2 and all(s["seconds"] >= 1.0 and "cores" in s["machine"] for s in segments)
    totals = rundir.segment_totals(tmp_path)
    assert totals["segments"] == 2 and totals["seconds"] == pytest.approx(sum(s["seconds"] for s in segments))
    assert rundir.segment_totals(tmp_path / "none") is None


def test_a_killed_process_leaves_its_segment_up_to_its_last_heartbeat(tmp_path):
    code = ("import sys, time; from pathlib import Path; from criticrm import rundir\n"
            "with rundir.working(Path(sys.argv[1]), heartbeat=0.1):\n    time.sleep(600)\n")
    process = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (rundir.segment_totals(tmp_path) or {}).get("seconds"):
            time.sleep(0.1)
    finally:
        process.kill()
        process.wait()
    totals = rundir.segment_totals(tmp_path)
    assert totals and totals["segments"] == 1 and totals["seconds"] > 0
