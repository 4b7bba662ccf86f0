"""Adapters for RLHF frameworks, one module per framework, each called exactly as that framework calls it.

    openrlhf   reward_func(queries, prompts, labels) for `--reward.remote_url FILE.py` (and the query split
               the server's /get_reward uses)
    verl       compute_score / async compute_score_async for `reward.custom_reward_function.*`
    trl        reward_function(url | model=...) -> a GRPOTrainer reward function

`openrlhf`, `verl` and their shared `remote` client import only the standard library (and OpenRLHF's torch):
a trainer's environment needs `pip install --no-deps criticrm`, not criticrm's dependencies.
"""
