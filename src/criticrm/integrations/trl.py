"""TRL: reward functions for `GRPOTrainer(reward_funcs=...)` that score with a criticrm server or a local model.

    from criticrm.integrations.trl import reward_function
    trainer = GRPOTrainer(model=..., reward_funcs=reward_function("http://127.0.0.1:8000"), ...)
    trainer = GRPOTrainer(model=..., reward_funcs=reward_function(model="runs/x/train-critic/model"), ...)

How TRL calls a reward function (huggingface/trl, trl/trainer/grpo_trainer.py `_calculate_rewards`): with
keyword arguments only, `prompts`, `completions`, `completion_ids`, every other dataset column (one value
per completion) and `trainer_state`, `log_extra`, `log_metric`; it wants one float per completion back, or
None where a function has no reward (it becomes NaN and is left out). A function that
`inspect.iscoroutinefunction` says is async is awaited on TRL's own event loop, concurrently with the other
async reward functions. Prompts and completions are both strings (standard format) or both lists of
`{"role", "content"}` messages (conversational). TRL names a function in its logs by `__name__`, looking
through a `functools.partial` (trl/trainer/utils.py `get_callable_name`): these log as `criticrm_reward`.

A conversational prompt is rendered as the data layer renders chat prompts (`User: ...` lines, or the
lone user turn's text), so the reward model reads it as it read its training data. A `subset` or `domain`
column, when the dataset has one, picks the judge template per row. The first critique of each completion
goes to TRL's completions table (`log_extra`), the mean spread of the critiques' rewards to its metrics.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
from pathlib import Path
from typing import Any

from criticrm.data.readers import render_response, render_transcript
from criticrm.errors import ConfigError
from criticrm.inference.scorer import RewardScorer, ScoreItem, ScoringConfig
from criticrm.integrations.remote import RewardServer


class LocalScorer:
    """A trained reward-model folder scoring in this process (one call at a time: the model is not shared)."""

    def __init__(self, model: str | Path, scoring: ScoringConfig | None = None, device: str = "auto"):
        self.scorer = RewardScorer.load(model, scoring, device=device)
        self._lock = threading.Lock()

    def score(self, items: list[dict]) -> list[dict]:
        score_items = [ScoreItem(i["prompt"], i["response"], i.get("domain"), i.get("subset")) for i in items]
        with self._lock:
            return [result.to_dict() for result in self.scorer.score(score_items)]

    async def score_async(self, items: list[dict]) -> list[dict]:
        return await asyncio.to_thread(self.score, items)


def reward_function(url: str | None = None, *, model: str | Path | None = None, token: str | None = None,
                    scoring: ScoringConfig | None = None, device: str = "auto", asynchronous: bool = False):
    """A TRL reward function scoring with the server at `url` (`criticrm serve`, bearer `token`) or with the
    trained folder `model` loaded here (`scoring` options, `device`). `asynchronous` gives an `async def`
    function, which TRL runs concurrently with its other async reward functions."""
    if (url is None) == (model is None):
        raise ConfigError("reward_function needs url= (a running `criticrm serve`) or model= (a trained "
                          "reward-model folder), one of the two")
    source = RewardServer(url, token) if url is not None else LocalScorer(model, scoring, device)
    return functools.partial(criticrm_reward_async if asynchronous else criticrm_reward, source=source)


def criticrm_reward(prompts: list, completions: list, source: RewardServer | LocalScorer,
                    **kwargs: Any) -> list[float | None]:
    """One reward per completion (None where the model could not score it); see the module docstring."""
    return _rewards(source.score(_items(prompts, completions, kwargs)), kwargs)


async def criticrm_reward_async(prompts: list, completions: list, source: RewardServer | LocalScorer,
                                **kwargs: Any) -> list[float | None]:
    """`criticrm_reward` as a coroutine function: the scoring waits off the event loop."""
    return _rewards(await source.score_async(_items(prompts, completions, kwargs)), kwargs)


def _items(prompts: list, completions: list, columns: dict[str, Any]) -> list[dict]:
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    items = []
    for index, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        if isinstance(prompt, str) and isinstance(completion, str):
            item = {"prompt": prompt, "response": completion}
        elif isinstance(prompt, list) and isinstance(completion, list):
            item = {"prompt": render_transcript(_messages(prompt, index, "prompt")),
                    "response": render_response(_messages(completion, index, "completion"))}
        else:
            raise ValueError(f"completion {index}: the prompt is {type(prompt).__name__} and the completion "
                             f"{type(completion).__name__}; TRL's formats have both strings (standard) or both "
                             "lists of messages (conversational)")
        for column in ("subset", "domain"):
            values = columns.get(column)
            if isinstance(values, list | tuple) and len(values) == len(prompts) and isinstance(values[index], str):
                item[column] = values[index]
        items.append(item)
    return items


def _messages(value: list, index: int, name: str) -> list[dict[str, str]]:
    """Messages with text content only: a reward model of text reads no image or tool-call part."""
    for message in value:
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise ValueError(f"completion {index}: every {name} message needs a role and a text content, got "
                             f"{message!r:.80}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _rewards(results: list[dict], columns: dict[str, Any]) -> list[float | None]:
    rewards = [r["reward"] if r["reward"] is not None and math.isfinite(r["reward"]) else None for r in results]
    log_metric, log_extra = columns.get("log_metric"), columns.get("log_extra")
    spreads = [r["spread"] for r in results if r["spread"] is not None and math.isfinite(r["spread"])]
    if callable(log_metric) and spreads:
        log_metric("criticrm/reward_spread", sum(spreads) / len(spreads))
    if callable(log_extra) and any(r["critiques"] for r in results):
        log_extra("criticrm_critique", [r["critiques"][0]["critique"] if r["critiques"] else "" for r in results])
    return rewards
