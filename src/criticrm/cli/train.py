"""`criticrm train`: stage 2 on its own — train a Critic-RM (or the standard-RM baseline) on refined pairs.

Runs unchanged under `accelerate launch` (several processes, DeepSpeed ZeRO, FSDP):
    accelerate launch --num_processes 2 --cpu -m criticrm.cli.train --data runs/demo/refine --out runs/demo/train
Re-running the same command resumes from the newest checkpoint in --out.
"""

from __future__ import annotations

import argparse
import os
import sys

from criticrm import rundir
from criticrm.cli.options import add_options, resolve
from criticrm.config import Section, as_yaml_sections
from criticrm.config_checks import output_folder
from criticrm.models.backbone import ModelConfig
from criticrm.training.config import TrainConfig, effective_train_config

SECTIONS = [Section("model", (ModelConfig,)), Section("train", (TrainConfig,))]


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train a critique-based (or standard) reward model",
                                   description=__doc__, formatter_class=_RawDescription)
    parser.add_argument("--data", required=True,
                        help="refined training data: the refine stage's folder (its train.jsonl) or a JSONL file; "
                             "--mode standard also reads plain preference files (prompt/chosen/rejected)")
    parser.add_argument("--out", type=output_folder, required=True, help="output folder (re-running resumes it)")
    add_options(parser, SECTIONS)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from criticrm.training.trainer import format_summary, train_reward_model

    configs = resolve(args, SECTIONS)
    model, train = configs[ModelConfig], configs[TrainConfig]
    train = effective_train_config(train, model)
    main_process = os.environ.get("RANK", "0") == "0"
    if main_process:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / rundir.CONFIG_FILE).write_text(as_yaml_sections({"model": model, "train": train}))
    summary = train_reward_model(train, args.data, args.out, model_name=model.model, use_cpu=model.device == "cpu")
    if main_process:
        print(format_summary(summary))
        print(f"summary: {args.out / rundir.TRAIN_SUMMARY_FILE}; step log: {args.out / rundir.TRAIN_LOG_FILE}")
    _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """After a successful run under `accelerate launch`, wait for every process, then leave the group.

    Without it, a process that finishes first exits while the main one is still writing the summary, and
    gloo's worker threads are torn down during interpreter finalization: that process aborts ("terminate
    called without an active exception", SIGABRT) and the launcher reports a finished run as failed. Only
    on success: after an error the other processes may be inside a collective, and the barrier would hang.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class _RawDescription(argparse.RawDescriptionHelpFormatter):
    pass


if __name__ == "__main__":  # `accelerate launch -m criticrm.cli.train --data ... --out ...`
    from criticrm.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
