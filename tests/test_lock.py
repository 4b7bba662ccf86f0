"""The lock: constraints.txt pins the tested version of every package, inside pyproject's open ranges, and the
set-up script (so `make test` and CI) installs through it."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def pins() -> dict[str, Version]:
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    bad = [line for line in lines if not PIN.match(line)]
    assert not bad, f"constraints.txt lines that are not name==version: {bad}"
    return {canonicalize_name(PIN.match(line)[1]): Version(PIN.match(line)[2]) for line in lines}


def declared() -> list[Requirement]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]


def test_every_declared_dependency_is_pinned_inside_its_range():
    locked = pins()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is a dependency but constraints.txt does not pin it"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"constraints.txt pins {name} {locked[name]}, outside pyproject's {requirement}")
    assert "criticrm" not in locked


def test_the_installed_versions_are_the_locked_ones():
    """The suite runs in the environment set-up built from the lock; a package upgraded by hand (or a lock
    not regenerated after an upgrade) shows here. Packages the lock has but this environment lacks (an
    optional server build) are not checked."""
    mismatched = {}
    for name, version in pins().items():
        try:
            installed = Version(importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            continue
        if installed.public != version.public:
            mismatched[name] = f"installed {installed}, locked {version}"
    assert not mismatched, f"run `make setup-dev` (or `make lock` after a tested upgrade): {mismatched}"


def test_setup_installs_every_package_through_the_lock():
    script = (ROOT / "scripts" / "setup.sh").read_text()
    assert 'CONSTRAINTS=$PWD/constraints.txt' in script
    assert 'pip_install() { pip_run install --constraint "$CONSTRAINTS" "$@"; }' in script
    installs = [line for line in script.splitlines() if re.search(r"pip_run install|pip install", line)
                and not line.lstrip().startswith("#")]
    assert installs == ['pip_install() { pip_run install --constraint "$CONSTRAINTS" "$@"; }'], installs
