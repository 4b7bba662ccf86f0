"""`criticrm export`: write a trained reward model in another framework's format.

  criticrm export --format sequence-classification --model runs/demo/train-standard/model --out DIR

`sequence-classification`: a standard-mode model as an `AutoModelForSequenceClassification` folder (the
decoder and a `score` layer, `pad_token_id` set), as TRL, OpenRLHF and RewardBench load scalar reward
models. The folder's README.md says which text a score is read from.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from criticrm.config_checks import output_folder
from criticrm.errors import ConfigError
from criticrm.models.export import FORMATS, export_sequence_classification


def register(subparsers) -> None:
    parser = subparsers.add_parser("export", help="write a trained reward model in another framework's format",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--format", required=True, choices=FORMATS, help="the format to write")
    parser.add_argument("--model", type=Path, required=True, help="a trained reward-model folder (model/ of a run)")
    parser.add_argument("--out", type=output_folder, required=True, help="the folder to write")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default=None,
                        help="weights' dtype (default: the dtype the model was saved in)")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from criticrm.models.critic_rm import is_reward_model_dir

    if not is_reward_model_dir(args.model):
        raise ConfigError(f"{args.model}: not a criticrm reward-model folder; pass the model/ folder of a "
                          "`criticrm train` run")
    out = export_sequence_classification(args.model, args.out, dtype=args.dtype)
    print(f"exported {args.model} as {args.format}: {out} (README.md says how its scores are read)")
    return 0
