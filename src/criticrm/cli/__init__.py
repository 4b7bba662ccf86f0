"""The `criticrm` command: one entry point, one module per sub-command.

Each sub-command module defines `register(subparsers)`, which adds its parser and sets `handler`.
Handlers stay thin: they resolve the typed configs, call the library, and print. Errors that come
from the user's input (CriticRMError) are printed as one clear message with exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from criticrm import __version__
from criticrm.errors import CriticRMError

COMMAND_MODULES = ("critique", "filter", "refine", "train", "score", "eval", "correct", "pipeline", "serve",
                   "export")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(prog="criticrm", description="Train and serve critique-based reward models (Critic-RM).")
    parser.add_argument("--version", action="version", version=f"criticrm {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"criticrm.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except CriticRMError as error:
        print(f"criticrm {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"criticrm {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
