#!/usr/bin/env bash
# Write constraints.txt, the lock: the exact version of every package in the environment the tests
# passed in (`pip freeze` of $VENV, default .venv). scripts/setup.sh installs through it, so `make demo`,
# `make test` and CI get those versions; pyproject.toml keeps open ranges for people who install criticrm
# as a library. After upgrading a dependency and passing the tests: `make lock`, and commit the file.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
{
  echo "# The tested versions: written by scripts/lock.sh (pip freeze of the test environment), read by"
  echo "# scripts/setup.sh as pip constraints. Regenerate with \`make lock\`; do not edit by hand."
  # criticrm itself is not pinned (editable); a local version label (torch's +cpu) is dropped, so the same
  # release can be installed as a CPU or a CUDA build (PEP 440 ignores local labels in == without one).
  "$VENV/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check \
    | grep -v '^#' | grep -iv '^criticrm==' | sed -E 's/\+[A-Za-z0-9.]+$//' | LC_ALL=C sort -f
} > constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"
