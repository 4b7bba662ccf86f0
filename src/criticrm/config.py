"""Typed config dataclasses: choices checked in one place, built from YAML sections, written back.

Every config is a dataclass deriving from `Config` whose fields carry their help text in
`metadata["help"]`. The field types say what a value may be, for Python callers, YAML files and
command-line flags alike:

- `Literal["a", "b"]` takes only those values (checked by `Config.__post_init__`, the one place);
- a field typed as another config dataclass groups related options in Python (a stage's
  `GeneratorConfig`); in a YAML section and on the command line its fields sit beside the owner's
  (`critique: {backend: openai}`), so the field names of one section must be unique.

A `Section` is one YAML mapping (`train:`) read by one or more config classes. A key renamed since
the last release still reads for one release (the class lists it in `RENAMED`), with a note on stderr.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from criticrm.config_checks import check_fields
from criticrm.errors import ConfigError


class Config:
    """Base of every config dataclass: checks each value where its field is declared, on construction.

    A `Literal` field takes only its values; a number obeys the bounds in its metadata and is finite
    (`criticrm.config_checks`). A subclass with checks of its own calls `super().__post_init__()` first.
    """

    # Keys renamed since the last release -> their new name; the old key reads for one release.
    RENAMED: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        for leaf in _own_fields(type(self)):
            value = getattr(self, leaf.name)
            if leaf.choices and value not in leaf.choices and not (value is None and leaf.optional):
                raise ConfigError(f"{leaf.name} must be one of {', '.join(map(str, leaf.choices))}, got {value!r}")
        check_fields(self)


@dataclasses.dataclass(frozen=True)
class Field:
    """One option: a leaf field of a config class (nested groups are walked through)."""

    name: str
    path: tuple[str, ...]  # attribute names from the section's class down to the field
    field: dataclasses.Field
    kind: type  # str, int, float, bool or Path; a Literal field is its values' type
    choices: tuple[Any, ...] | None
    optional: bool

    @property
    def help(self) -> str:
        return self.field.metadata.get("help", "")

    @property
    def default(self) -> Any:
        if self.field.default is not dataclasses.MISSING:
            return self.field.default
        return None


def is_config(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


@cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass (they are strings under `from __future__ import annotations`)."""
    return typing.get_type_hints(cls)


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, True); X -> (X, False)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else hint), len(args) < len(typing.get_args(hint))
    return hint, False


@cache
def _own_fields(cls: type) -> tuple[Field, ...]:
    """The fields of `cls` itself that are options (not nested groups)."""
    result = []
    for item in dataclasses.fields(cls):
        hint, optional = _unwrap(_hints(cls)[item.name])
        if is_config(hint):
            continue
        choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else None
        kind = type(choices[0]) if choices else hint
        result.append(Field(item.name, (item.name,), item, kind, choices, optional))
    return tuple(result)


def fields_of(cls: type, prefix: tuple[str, ...] = ()) -> list[Field]:
    """Every option of `cls` in declaration order, nested groups walked through in place."""
    result = []
    for item in dataclasses.fields(cls):
        hint, _ = _unwrap(_hints(cls)[item.name])
        if is_config(hint):
            result += fields_of(hint, (*prefix, item.name))
        else:
            own = next(f for f in _own_fields(cls) if f.name == item.name)
            result.append(dataclasses.replace(own, path=(*prefix, item.name)))
    return result


def flat_dict(config: Any) -> dict[str, Any]:
    """{field name: value} of every option of a config, nested groups included (its YAML section's shape)."""
    values = {}
    for item in fields_of(type(config)):
        value = config
        for name in item.path:
            value = getattr(value, name)
        values[item.name] = value
    return values


def build(cls: type, values: dict[str, Any]) -> Any:
    """A config of class `cls` from {field name: value} (nested groups take their fields from the same mapping)."""
    kwargs = {}
    for item in dataclasses.fields(cls):
        hint, _ = _unwrap(_hints(cls)[item.name])
        if is_config(hint):
            kwargs[item.name] = build(hint, values)
        elif item.name in values:
            kwargs[item.name] = values[item.name]
    return cls(**kwargs)


# Every section a config file may hold: one file drives the pipeline and every stage command, so it may
# hold the sections of commands other than the one reading it, but not a misspelt one.
SECTION_NAMES = ("run", "data", "model", "critique", "filter", "refine", "train", "evaluation", "eval", "scoring",
                 "judge", "server", "correct", "best-of")


@dataclasses.dataclass(frozen=True)
class Section:
    """A YAML section name and the config classes that read their keys from it.

    `also_accepts`: classes whose keys the section may also hold for another command reading the same
    file (a pipeline config drives every stage command); they are accepted and not read.
    """

    name: str
    classes: tuple[type, ...]
    also_accepts: tuple[type, ...] = ()

    def __post_init__(self):
        if self.name not in SECTION_NAMES:
            raise TypeError(f"section {self.name!r} is not in criticrm.config.SECTION_NAMES")

    def fields(self) -> list[Field]:
        """The options of this section (its keys), checked to have unique names."""
        result = [item for cls in self.classes for item in fields_of(cls)]
        seen: set[str] = set()
        for item in result:
            if item.name in seen:
                raise TypeError(f"section {self.name!r}: two options are named {item.name!r}")
            seen.add(item.name)
        return result

    def renamed(self) -> dict[str, str]:
        """Old key -> new key, for every class the section reads or accepts."""
        return {old: new for cls in self.classes + self.also_accepts for old, new in _renamed(cls).items()}


def _renamed(cls: type) -> dict[str, str]:
    """`RENAMED` of a class and of its nested groups."""
    renamed = dict(getattr(cls, "RENAMED", {}))
    for item in dataclasses.fields(cls):
        hint, _ = _unwrap(_hints(cls)[item.name])
        if is_config(hint):
            renamed |= _renamed(hint)
    return renamed


def warn(message: str) -> None:
    """A deprecation note for the person running criticrm (stderr: it must not mix with results)."""
    print(f"criticrm: deprecated: {message}", file=sys.stderr)


def build_sections(document: dict[str, Any], sections: list[Section], source: str = "the config",
                   overrides: dict[tuple[str, str], Any] | None = None) -> dict[type, Any]:
    """Every config class of `sections` from a YAML document, then `overrides` {(section, key): value}.

    Unknown keys and values of the wrong type are errors that name the file, the section and the key.
    """
    overrides = overrides or {}
    built: dict[type, Any] = {}
    for section in sections:
        values = _section_values(document, section, source)
        values |= {key: value for (name, key), value in overrides.items() if name == section.name}
        for cls in section.classes:
            try:
                built[cls] = build(cls, values)
            except (TypeError, ValueError) as error:
                raise ConfigError(f"invalid {section.name} options: {error}") from None
    return built


def _section_values(document: dict[str, Any], section: Section, source: str) -> dict[str, Any]:
    """The checked {key: value} of one section of a YAML document (renamed keys under their new name)."""
    values = document.get(section.name) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: section '{section.name}' must be a mapping")
    options = {item.name: item for item in section.fields()}
    accepted = {item.name for cls in section.also_accepts for item in fields_of(cls)}
    renamed = section.renamed()
    known = set(options) | accepted
    unknown = sorted(map(str, set(values) - known - set(renamed)))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in section '{section.name}': {', '.join(unknown)}"
                          f"{did_you_mean(unknown[0], known)}; known: {', '.join(sorted(known))}")
    checked = {}
    for key, value in values.items():
        if key in renamed:
            warn(f"{source}: key '{section.name}.{key}' is now '{section.name}.{renamed[key]}'; "
                 "the old key is read for one more release")
            key = renamed[key]
        if key in options:
            checked[key] = check_type(value, options[key], f"{source}: '{section.name}.{key}'")
    return checked


def check_type(value: Any, item: Field, where: str) -> Any:
    """`value` as the option's type (an int where a float is expected becomes a float), else ConfigError."""
    if value is None:
        if item.optional:
            return None
        raise ConfigError(f"{where} must be {item.kind.__name__}, got null")
    kind = item.kind
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is Path and isinstance(value, str):
        return Path(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {kind.__name__}, got {value!r}")
    return value


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML config file as {section: mapping}, with clear errors for an unreadable or malformed file."""
    path = Path(path)
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


def as_yaml_sections(configs: dict[str, Any]) -> str:
    """Resolved configs ({section: config or list of them}) as YAML, for the record of a run."""
    document: dict[str, dict[str, Any]] = {}
    for name, objects in configs.items():
        for obj in objects if isinstance(objects, list | tuple) else [objects]:
            document.setdefault(name, {}).update(
                {key: str(value) if isinstance(value, Path) else value for key, value in flat_dict(obj).items()})
    return yaml.safe_dump(document, sort_keys=False)


def sections_of(cls: type) -> list[Section]:
    """The YAML sections of a config made of sections (a dataclass with one config per field).

    A field is read from the section of its name, or from `metadata["section"]` when several share one.
    """
    names: dict[str, list[type]] = {}
    for item in dataclasses.fields(cls):
        names.setdefault(item.metadata.get("section", item.name), []).append(_hints(cls)[item.name])
    return [Section(name, tuple(classes)) for name, classes in names.items()]


def from_sections(cls: type, built: dict[type, Any]) -> Any:
    """A config made of sections (see `sections_of`) from the configs `build_sections` made."""
    return cls(**{item.name: built[_hints(cls)[item.name]] for item in dataclasses.fields(cls)})


def sections_dict(config: Any) -> dict[str, list[Any]]:
    """{section: its configs} of a config made of sections, for `as_yaml_sections`."""
    document: dict[str, list[Any]] = {}
    for item in dataclasses.fields(config):
        document.setdefault(item.metadata.get("section", item.name), []).append(getattr(config, item.name))
    return document

