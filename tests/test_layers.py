"""The package's layers: every import goes to the same layer or one below, never above (read from the source,
function-level imports included). A module that needs something of a higher layer needs it moved down."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "criticrm"

# Low to high. Stage 1 (critique, filter, refine and their folders) sits below training; the recipe that
# runs every stage in order sits above evaluation; the command line on top of everything.
LAYERS = [
    ("criticrm", "criticrm.errors", "criticrm.formatting", "criticrm.config", "criticrm.config_checks",
     "criticrm.plots"),
    ("criticrm.data", "criticrm.rundir"),
    ("criticrm.prompts",),
    ("criticrm.models",),
    ("criticrm.generation",),
    ("criticrm.pipeline.critique", "criticrm.pipeline.filter", "criticrm.pipeline.refine", "criticrm.pipeline.report",
     "criticrm.pipeline.runner", "criticrm.pipeline.stages"),
    ("criticrm.training",),
    ("criticrm.inference",),
    ("criticrm.evaluation",),
    ("criticrm.correction",),  # critique-driven correction: scores and revises, reads evaluation's settings helpers
    ("criticrm.integrations",),  # RLHF adapters; below serve, whose /get_reward splits queries as OpenRLHF sends them
    ("criticrm.serve",),
    ("criticrm.pipeline",),  # the recipe (and the package's lazy exports of it)
    ("criticrm.testing",),  # helpers of the tests and benchmarks: nothing in the library imports them
    ("criticrm.cli", "criticrm.__main__"),
]


def layer(module: str) -> int:
    """The layer of the longest listed prefix of `module`."""
    matches = [(len(prefix), index) for index, prefixes in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1]


def modules() -> list[tuple[str, Path]]:
    result = []
    for path in sorted(SOURCE.rglob("*.py")):
        parts = path.relative_to(SOURCE.parent).with_suffix("").parts
        result.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return result


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "criticrm":
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from criticrm import rundir`
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "criticrm"}
    return found


@pytest.mark.parametrize(("module", "path"), modules(), ids=lambda value: str(value))
def test_no_module_imports_a_layer_above_its_own(module, path):
    own = layer(module)
    above = sorted(name for name in imports(path) if layer(name) > own)
    assert not above, f"{module} (layer {own}) imports {above}"


def test_only_the_command_line_imports_it_and_nothing_imports_the_test_helpers():
    for module, path in modules():
        for name in imports(path):
            if name.startswith("criticrm.cli"):
                assert module.startswith(("criticrm.cli", "criticrm.__main__")), (module, name)
            if name.startswith("criticrm.testing"):
                assert module.startswith("criticrm.testing"), (module, name)
