"""Critique-driven correction (`criticrm correct`): does a critique help a model fix a wrong answer?

- `answers`: final answers read from free text, and when two agree;
- `problems`: the evaluation pairs that can be checked (a reference answer, a wrong rejected answer);
- `metrics`: accuracy before/after a revision, Δ↑ (wrong → right) and Δ↓ (right → wrong), best-of-N curves;
- `run`: the run itself (revisions under each condition, critique-guided best-of-N), resumable;
- `report`: report.json and report.md.
"""
