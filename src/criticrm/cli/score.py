"""`criticrm score`: rewards (and their critiques) for every response of a data file, as JSONL.

Input rows are single responses (`prompt` + `response`) or preference pairs; one output line per row.
Re-running the same command resumes: rows already in the output file are not scored again.
"""

from __future__ import annotations

import json

from criticrm.cli.options import add_options, resolve
from criticrm.config import Section
from criticrm.config_checks import output_file
from criticrm.data.readers import DataConfig
from criticrm.errors import ConfigError
from criticrm.inference.score_file import read_scoring_rows, score_rows
from criticrm.inference.scorer import RewardScorer, ScoringConfig
from criticrm.models.backbone import ModelConfig

SECTIONS = [Section("data", (DataConfig,)), Section("model", (ModelConfig,)), Section("scoring", (ScoringConfig,))]


def register(subparsers) -> None:
    parser = subparsers.add_parser("score", help="score responses with a trained reward model", description=__doc__)
    parser.add_argument("--out", type=output_file, required=True, help="output JSONL file (re-running resumes it)")
    parser.add_argument("--response-field", default="response",
                        help="column of single-response rows (rows without it are read as preference pairs)")
    add_options(parser, SECTIONS)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    configs = resolve(args, SECTIONS)
    data, model, scoring = configs[DataConfig], configs[ModelConfig], configs[ScoringConfig]
    if not model.model:
        raise ConfigError("pass --model DIR: a trained reward-model folder (the model/ of `criticrm train`)")
    if not data.data:
        raise ConfigError("no input data: pass --data FILE")
    rows = read_scoring_rows(data, args.response_field)
    scorer = RewardScorer.from_model_config(model, scoring)
    summary = score_rows(rows, scorer, args.out)
    print(json.dumps(summary))
    return 0
