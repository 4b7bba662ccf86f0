"""Typed dataclass configs <-> command-line flags <-> YAML files.

Every config is a dataclass whose fields carry their help text in `metadata["help"]`. A command
declares which dataclasses it reads and from which YAML section; this module turns the fields into
flags (`--max-new-tokens`, `--skip-invalid/--no-skip-invalid`), and resolves each value by
precedence: the dataclass default, then the YAML file (`--config`), then an explicit flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from criticrm.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Section:
    """A YAML section name and the config dataclasses that read their keys from it.

    `also_accepts`: dataclasses whose keys the section may also hold for another command reading the
    same file (a pipeline config drives every stage command); they are accepted and not read.
    """

    name: str
    classes: tuple[type, ...]
    also_accepts: tuple[type, ...] = ()

    def __post_init__(self):
        SECTION_NAMES.add(self.name)


# Every section some command reads (the command modules declare theirs when imported): a config file
# may hold sections of other commands (one pipeline file drives every stage), but not a misspelt one.
SECTION_NAMES: set[str] = set()


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(annotation: Any) -> type:
    """`int | None` -> int; `str` -> str. Annotations are strings under `from __future__ import annotations`."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {"typing": typing}, {})  # noqa: S307 - our own annotations only
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def _destinations(sections: list[Section]) -> dict[tuple[str, str], str]:
    """The argparse destination of every (section, field): the field name, or, when an earlier section
    already has a field of that name, `section.field` (its flag is then `--section-field`)."""
    seen: set[str] = set()
    destinations = {}
    for section in sections:
        for cls in section.classes:
            for field in dataclasses.fields(cls):
                name = field.name if field.name not in seen else f"{section.name}.{field.name}"
                seen.add(field.name)
                destinations[(section.name, field.name)] = name
    return destinations


def add_options(parser: argparse.ArgumentParser, sections: list[Section]) -> None:
    """Add one flag per dataclass field (defaults are suppressed so explicit flags can be told apart)."""
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help="YAML file with any of these options (flags given here override it)")
    destinations = _destinations(sections)
    for section in sections:
        group = parser.add_argument_group(f"{section.name} options (YAML section '{section.name}')")
        for cls in section.classes:
            for field in dataclasses.fields(cls):
                dest = destinations[(section.name, field.name)]
                kind = _base_type(field.type)
                help_text = field.metadata.get("help", "")
                default = field.default if field.default is not dataclasses.MISSING else None
                help_text = f"{help_text} (default: {default})" if default is not None else help_text
                if kind is bool:
                    group.add_argument(_flag(dest.replace(".", "_")), dest=dest, action=argparse.BooleanOptionalAction,
                                       default=argparse.SUPPRESS, help=help_text)
                else:
                    group.add_argument(_flag(dest.replace(".", "_")), dest=dest, type=kind, default=argparse.SUPPRESS,
                                       help=help_text, metavar=field.name.upper())


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except OSError as error:
        raise ConfigError(f"config file {path}: cannot read it ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at "
                          f"offset {error.start})") from None
    except (yaml.YAMLError, RecursionError) as error:
        raise ConfigError(f"{path}: invalid YAML ({error})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(document).__name__}")
    unknown = sorted(str(name) for name in document if name not in SECTION_NAMES)
    if unknown:
        raise ConfigError(f"{path}: unknown section {unknown[0]!r}{did_you_mean(unknown[0], SECTION_NAMES)}; "
                          f"sections: {', '.join(sorted(SECTION_NAMES))}")
    return document


def did_you_mean(name: str, known) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve(args: argparse.Namespace, sections: list[Section]) -> dict[type, Any]:
    """Build every config dataclass of `sections` from defaults, the YAML file and the flags."""
    document = load_yaml(args.config) if getattr(args, "config", None) else {}
    source = str(getattr(args, "config", "the config"))
    explicit = vars(args)
    destinations = _destinations(sections)
    built: dict[type, Any] = {}
    for section in sections:
        values = document.get(section.name) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section '{section.name}' must be a mapping")
        known = {f.name for cls in section.classes + section.also_accepts for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(values) - known))
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) in section '{section.name}': {', '.join(unknown)}"
                              f"{did_you_mean(unknown[0], known)}; known: {', '.join(sorted(known))}")
        for cls in section.classes:
            kwargs = {}
            for field in dataclasses.fields(cls):
                dest = destinations[(section.name, field.name)]
                if dest in explicit:
                    kwargs[field.name] = explicit[dest]
                elif field.name in values:
                    kwargs[field.name] = _check_type(values[field.name], field, section.name, source)
            try:
                built[cls] = cls(**kwargs)
            except (TypeError, ValueError) as error:
                raise ConfigError(f"invalid {section.name} options: {error}") from None
    return built


def _check_type(value: Any, field: dataclasses.Field, section: str, source: str) -> Any:
    if value is None:
        return None
    kind = _base_type(field.type)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: '{section}.{field.name}' must be {kind.__name__}, got {value!r}")
    return value


def as_yaml_sections(configs: dict[str, Any]) -> str:
    """Dump resolved configs ({section: dataclass or list of them}) as YAML, for the run record."""
    document: dict[str, dict[str, Any]] = {}
    for name, objects in configs.items():
        for obj in objects if isinstance(objects, list | tuple) else [objects]:
            document.setdefault(name, {}).update(dataclasses.asdict(obj))
    return yaml.safe_dump(document, sort_keys=False)
