"""Checks on config values, declared beside each field and run when a config is built.

A field states its bounds in its metadata, next to its help text:

    temperature: float = field(default=0.8, metadata={"help": "...", "min": 0})

`check_fields(config)`, called by every config's `__post_init__` (through `criticrm.config.Config`),
enforces them, so a value is refused where it is declared — from a flag, a YAML file or Python — before
any data is read or model loaded, with a message that names the field. Keys: "min"/"max" (inclusive),
"above"/"below" (exclusive); the values a text field may take are its `Literal` type's (checked by
`Config` too). Every number must also be finite: NaN passes no comparison and infinity passes some, and
both arrive from flags (`--temperature nan`) and YAML (`.inf`).

Output locations are checked here too (`check_output`), because an unwritable folder is otherwise
found only after hours of work, when the first result is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import operator
import tempfile
from pathlib import Path
from typing import Any

from criticrm.errors import ConfigError

_BOUNDS = {"min": (operator.ge, ">="), "above": (operator.gt, ">"), "max": (operator.le, "<="),
           "below": (operator.lt, "<")}


def check_fields(config: Any) -> None:
    """Raise ConfigError for the first field of a config dataclass whose value breaks its declared checks."""
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{item.name} must be a finite number, got {value}")
        bounds = [(test, symbol, item.metadata[key]) for key, (test, symbol) in _BOUNDS.items() if key in item.metadata]
        if isinstance(value, int | float) and not all(test(value, bound) for test, _, bound in bounds):
            wanted = " and ".join(f"{symbol} {bound}" for _, symbol, bound in bounds)
            raise ConfigError(f"{item.name} must be {wanted}, got {value}")


def check_output(path: str | Path, kind: str = "folder") -> Path:
    """`path` if criticrm can create and write it: a folder (`kind="folder"`) or a file (`kind="file"`).

    Nothing is created: the nearest existing folder on the way must take a file (an anonymous temporary
    file is made and dropped there), and nothing on the way may be a file.
    """
    path = Path(path)
    try:
        if path.exists() and (path.is_dir() if kind == "file" else not path.is_dir()):
            raise ConfigError(f"{path} is a {'folder' if kind == 'file' else 'file'}; expected a {kind}")
        existing = path if path.is_dir() else path.parent
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(f"cannot create {path}: {existing} is a file, not a folder")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:  # not writable, a read-only file system, a name too long...
        raise ConfigError(f"cannot write {path}: {error.strerror or error}") from None
    return path


def output_folder(value: str) -> Path:
    """argparse `type` of an output folder option (`--out`): checked when the command line is read."""
    return _argument(value, "folder")


def output_file(value: str) -> Path:
    """argparse `type` of an output file option."""
    return _argument(value, "file")


def _argument(value: str, kind: str) -> Path:
    try:
        return check_output(value, kind)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
