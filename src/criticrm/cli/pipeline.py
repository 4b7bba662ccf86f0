"""`criticrm pipeline`: every stage in order inside one run directory, configured from one YAML file.

The recipe itself is a library function (`criticrm.pipeline.run_pipeline`); this command only reads
the configuration from `--config` and the flags.
"""

from __future__ import annotations

from criticrm.cli.options import add_options, resolve
from criticrm.config import from_sections, sections_of
from criticrm.pipeline.recipe import PipelineConfig, run_pipeline

SECTIONS = sections_of(PipelineConfig)


def register(subparsers) -> None:
    parser = subparsers.add_parser("pipeline", help="run every stage in a run directory (finished stages are skipped)",
                                   description=__doc__)
    add_options(parser, SECTIONS)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    run_pipeline(from_sections(PipelineConfig, resolve(args, SECTIONS)))
    return 0
