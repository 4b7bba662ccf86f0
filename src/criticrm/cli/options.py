"""Command-line flags for the typed configs: one naming rule, the YAML file, and last release's spellings.

A command declares the YAML sections it reads (`criticrm.config.Section`: a name and the config
classes reading it). Every option of a section gets the flag `--<section>.<field>` (`--train.batch-size`,
underscores written as hyphens), the same in every command that reads that section; where no other
option of the command has that field name, the short `--<field>` works too (`criticrm train
--batch-size`). A bool option also has its negation: `--train.no-lora`, `--no-lora`. The help shows a
field's choices (its `Literal` type); every value is checked when its config is built, the one place.

A value is resolved by precedence: the dataclass default, then the YAML file (`--config`), then a flag.

The spellings of the last release that this rule changed (`--train-batch-size`, `--refine-max-new-tokens`,
a short flag that is no longer unique, like `criticrm pipeline --data`) keep working for one release,
with the same meaning as before and a note on stderr.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Any

from criticrm.config import Field, Section, build_sections, fields_of, load_yaml, warn
from criticrm.inference.scorer import ScoringConfig

# Options that last release's classes did not have: no old spelling can name them.
_ADDED_SINCE_LAST_RELEASE = {ScoringConfig: {"tokenizer", "timeout", "max_retries"}}


def flag(section: str | None, name: str) -> str:
    """`--train.batch-size` (or the short `--batch-size` without a section)."""
    return "--" + (f"{section}." if section else "") + name.replace("_", "-")


def _negation(option: str) -> str:
    """`--train.lora` -> `--train.no-lora`; `--lora` -> `--no-lora`."""
    head, dot, name = option[2:].rpartition(".")
    return f"--{head}{dot}no-{name}"


class _Switch(argparse.Action):
    """A bool option: its flags set it, their `no-` forms clear it."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs):
        self.negations = [_negation(option) for option in option_strings]
        super().__init__([*option_strings, *self.negations], dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, option_string not in self.negations)


class _Deprecated(argparse.Action):
    """Last release's spelling of an option: sets it as before, with a note naming the new flag."""

    def __init__(self, option_strings: list[str], dest: str, replacement: str, **kwargs):
        self.replacement = replacement
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        warn(f"{option_string} is now {self.replacement}; the old spelling works for one more release")
        setattr(namespace, self.dest, values)


def _metavar(item: Field) -> str:
    """`{critic,standard}` for a field with choices (checked with the config, like every value), else `BATCH_SIZE`."""
    return "{" + ",".join(map(str, item.choices)) + "}" if item.choices else item.name.upper()


def _help(item: Field) -> str:
    text = f"{item.help} (default: {item.default})" if item.default is not None else item.help
    return text.replace("%", "%%")  # argparse %-formats help: a literal percent sign must be doubled


def add_options(parser: argparse.ArgumentParser, sections: list[Section]) -> None:
    """One flag per option of every section (defaults suppressed, so explicit flags can be told apart).

    Call it after adding the command's own arguments: the usage line lists those, then the sections.
    """
    own_usage = parser.format_usage().removeprefix("usage: ").strip()
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS, metavar="FILE",
                        help="YAML file with any of these options (flags given here override it)")
    counts = Counter(item.name for section in sections for item in section.fields())
    for section in sections:
        group = parser.add_argument_group(f"{section.name} options (YAML section '{section.name}')")
        for item in section.fields():
            options = [flag(section.name, item.name)]
            short = flag(None, item.name)
            if counts[item.name] == 1 and short not in parser._option_string_actions:
                options.append(short)
            dest = f"{section.name}.{item.name}"
            if item.kind is bool:
                group.add_argument(*options, dest=dest, action=_Switch, default=argparse.SUPPRESS, help=_help(item))
            else:
                group.add_argument(*options, dest=dest, type=item.kind, default=argparse.SUPPRESS,
                                   help=_help(item), metavar=_metavar(item))
    _add_last_release_spellings(parser, sections)
    parser.usage = f"{own_usage} [--config FILE] [--SECTION.OPTION VALUE ...]"


def _add_last_release_spellings(parser: argparse.ArgumentParser, sections: list[Section]) -> None:
    """The flags last release's rule gave this command, where this release spells them otherwise.

    That rule named an option `--<field>` for the first section with that field name and
    `--<section>-<field>` for the others, after the field names of the time.
    """
    seen: set[str] = set()
    for section in sections:
        old_names = {new: old for old, new in section.renamed().items()}
        for cls in section.classes:
            added = _ADDED_SINCE_LAST_RELEASE.get(cls, set())
            for item in fields_of(cls):
                if item.name in added:
                    continue
                old = old_names.get(item.name, item.name)
                spelling = flag(None, old if old not in seen else f"{section.name}-{old}")
                seen.add(old)
                _add_deprecated(parser, spelling, section, item)


def _add_deprecated(parser: argparse.ArgumentParser, spelling: str, section: Section, item: Field) -> None:
    # Every bool option kept its spelling (none shares its name with another option of a command).
    if spelling in parser._option_string_actions or item.kind is bool:
        return  # still a flag of this command
    parser.add_argument(spelling, dest=f"{section.name}.{item.name}", action=_Deprecated,
                        replacement=flag(section.name, item.name), type=item.kind, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)


def resolve(args: argparse.Namespace, sections: list[Section]) -> dict[type, Any]:
    """Build every config class of `sections` from defaults, the YAML file and the flags."""
    config = getattr(args, "config", None)
    document = load_yaml(config) if config else {}
    known = {f"{section.name}.{item.name}": (section.name, item.name) for section in sections
             for item in section.fields()}
    overrides = {known[dest]: value for dest, value in vars(args).items() if dest in known}
    return build_sections(document, sections, str(config or "the config"), overrides)
