"""verl: `compute_score` functions for `reward.custom_reward_function.path=/path/to/criticrm/integrations/verl.py`.

verl loads the function named by `reward.custom_reward_function.name` from this file and, in its reward loop,
calls it once per response with keyword arguments only: `data_source`, `solution_str` (the decoded
response), `ground_truth`, `extra_info` (the row's `extra_info` plus verl's `num_turns` and
`rollout_reward_scores`) and the config's `reward_kwargs`. A plain function runs in the loop's thread pool;
an `async def` one is awaited on its event loop, many at once (volcengine/verl,
verl/experimental/reward_loop/reward_manager/naive.py `NaiveRewardManager.run_single`, and
verl/trainer/ppo/reward.py `get_custom_reward_fn`, which keeps an async function async). verl reads `score`
from a returned dict and logs every other key, so each value is a number.

    compute_score         one response, one request
    compute_score_async   `async def`: concurrent responses go as concurrent requests, which the server
                          batches together (the better choice under verl's reward loop)
    compute_score_batch   a list of responses in one call (verl releases that still have the `batch`
                          reward manager; current ones answer "Unknown reward manager: batch")

verl passes the response alone, so each row must carry its prompt in `extra_info["prompt"]` (a string or
chat messages) or `extra_info["question"]`; `data_source` picks the judge template, as a subset name does.
The server is at $CRITICRM_URL (token $CRITICRM_TOKEN); this file imports only the standard library.
"""

from __future__ import annotations

from criticrm.integrations.remote import RewardServer


def compute_score(data_source=None, solution_str=None, ground_truth=None, extra_info=None, **kwargs):
    """One response: {"score": reward, "spread": spread of the critiques' rewards}."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info])[0]


async def compute_score_async(data_source=None, solution_str=None, ground_truth=None, extra_info=None, **kwargs):
    """`compute_score` for verl's event loop: the request waits in a worker thread, not on the loop."""
    item = _item(data_source, solution_str, extra_info, 0)
    return _scores(await RewardServer.from_env().score_async([item]))[0]


def compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos, **kwargs):
    """Many responses: one result dict per response, as `compute_score` returns."""
    rows = zip(data_sources, solution_strs, extra_infos, strict=True)
    items = [_item(source, response, info, index) for index, (source, response, info) in enumerate(rows)]
    return _scores(RewardServer.from_env().score(items))


def _scores(results: list[dict]) -> list[dict]:
    unscored = [index for index, result in enumerate(results) if result["reward"] is None]
    if unscored:
        raise ValueError(f"criticrm could not score response(s) {unscored[:10]}: longer than the model's "
                         "max_length")
    return [{"score": result["reward"], "spread": result["spread"]} for result in results]


def _item(data_source, response, extra_info, index: int) -> dict:
    extra_info = extra_info or {}
    prompt = extra_info.get("prompt", extra_info.get("question"))
    if prompt is None:
        raise ValueError(f"response {index}: verl passes no prompt to reward functions; add it to each row's "
                         "extra_info as 'prompt' (a string or chat messages) when preparing the data")
    if not isinstance(response, str):
        raise ValueError(f"response {index}: expected the decoded response text (solution_str), got "
                         f"{type(response).__name__}")
    subset = str(data_source) if data_source is not None else None  # picks the judge template, like a subset
    if isinstance(prompt, str):
        return {"prompt": prompt, "response": response, "subset": subset}
    messages = [{"role": m["role"], "content": m["content"]} for m in prompt]  # a list, or parquet's array
    return {"messages": [*messages, {"role": "assistant", "content": response}], "subset": subset}
