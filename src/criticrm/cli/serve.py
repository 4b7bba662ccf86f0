"""`criticrm serve`: serve a trained reward model over HTTP, for RLHF frameworks (OpenRLHF, verl) and scripts.

    criticrm serve --model runs/demo/train-critic/model --port 8000

Endpoints: POST /v1/score (prompt + response or chat items -> rewards and critiques), POST /get_reward
(OpenRLHF's remote reward-model contract), GET /v1/info, GET /health. Concurrent requests are scored
together (dynamic batching). SIGTERM or Ctrl-C stops accepting connections, answers the requests in
flight, then exits.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys

from criticrm.cli.options import add_options, resolve
from criticrm.config import Section
from criticrm.errors import ConfigError
from criticrm.inference.scorer import RewardScorer, ScoringConfig
from criticrm.models.backbone import ModelConfig
from criticrm.serve.config import TOKEN_ENV, ServerConfig, is_loopback

SECTIONS = [Section("model", (ModelConfig,)), Section("scoring", (ScoringConfig,)),
            Section("server", (ServerConfig,))]


def register(subparsers) -> None:
    parser = subparsers.add_parser("serve", help="serve a trained reward model over HTTP (for RLHF)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(parser, SECTIONS)
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    configs = resolve(args, SECTIONS)
    model, scoring, server_config = configs[ModelConfig], configs[ScoringConfig], configs[ServerConfig]
    if not model.model:
        raise ConfigError("pass --model DIR: a trained reward-model folder (the model/ of `criticrm train`)")
    if scoring.num_critiques > server_config.max_num_critiques:
        raise ConfigError(f"--num-critiques {scoring.num_critiques} is above --max-num-critiques "
                          f"{server_config.max_num_critiques}")
    if server_config.token is None and os.environ.get(TOKEN_ENV):
        server_config = dataclasses.replace(server_config, token=os.environ[TOKEN_ENV])
    if not is_loopback(server_config.host) and server_config.token is None:
        print(f"criticrm serve: warning: listening on {server_config.host} without a token: anyone who can "
              f"reach it can use the model; set --token or ${TOKEN_ENV}", file=sys.stderr)

    from criticrm.serve.app import create_app  # fastapi and uvicorn only when serving
    from criticrm.serve.runner import make_server

    scorer = RewardScorer.from_model_config(model, scoring)
    print(f"criticrm serve: {scorer.mode}-mode reward model {model.model} on {scorer.model.device}",
          file=sys.stderr)
    server = make_server(create_app(scorer, server_config), server_config)
    # uvicorn drains on SIGTERM, then re-raises it: as KeyboardInterrupt (like Ctrl-C) it ends cleanly.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    print("criticrm serve: stopped", file=sys.stderr)
    return 0
