"""OpenRLHF: a reward function file for `--reward.remote_url`, and how a query splits into prompt and response.

OpenRLHF (v0.11) calls a criticrm reward server in one of two ways (openrlhf/utils/agent.py,
`SingleTurnAgentExecutor`):

- over HTTP, `--reward.remote_url http://HOST:8000/get_reward`: it POSTs `{"query", "prompts", "labels"}`
  (one rollout per request, no token, a 180 s client timeout, 5 tries) and reads `rewards`, `scores` and
  `extra_logs` from the JSON answer; the server's side of that contract is `/get_reward` (serve/app.py);
- through this file, `--reward.remote_url /path/to/criticrm/integrations/openrlhf.py`: it loads the file
  by path and calls `reward_func(queries, prompts, labels)` in a worker thread, one rollout per call,
  and reads the same three keys, as tensors. This file posts to `/get_reward` with $CRITICRM_TOKEN when
  set, so it also reaches a server that requires a token.

Either way `query` is `tokenizer.decode(prompt_ids + response_ids)`, and the prompt tokens are cut from the
left when the prompt is longer than the room the generation leaves: the query then starts with only the end
of its prompt, and a decode need not give back the prompt's exact text either. `response_in_query` finds the
response all the same.
"""

from __future__ import annotations

import os

from criticrm.integrations.remote import CHUNK, RewardServer


def reward_func(queries, prompts, labels=None, **kwargs):
    """OpenRLHF's reward function: `queries[i]` is `prompts[i]` (or its end) followed by the response.

    Returns what OpenRLHF reads (openrlhf/utils/agent.py and trainer/ppo_utils/samples_generator.py): tensors
    `rewards` and `scores` (the same values) and numeric `extra_logs` (reward_spread: spread of the critiques'
    rewards; critique_truncated: share of critiques cut at max_new_tokens), one value per query.
    """
    import torch

    server = RewardServer.from_env()
    labels = list(labels) if labels is not None else [None] * len(queries)
    bodies = [{"query": list(queries[i:i + CHUNK]), "prompts": list(prompts[i:i + CHUNK]),
               "labels": labels[i:i + CHUNK]} for i in range(0, len(queries), CHUNK)]
    replies = server.post_all("/get_reward", bodies)
    rewards = torch.tensor([r for reply in replies for r in reply["rewards"]], dtype=torch.float32)
    logs = {key: torch.tensor([v for reply in replies for v in reply["extra_logs"][key]], dtype=torch.float32)
            for key in replies[0]["extra_logs"]}
    return {"rewards": rewards, "scores": rewards.clone(), "extra_logs": logs}


def response_in_query(query: str, prompt: str) -> str:
    """The response in an OpenRLHF query: what follows the longest part of the prompt the query starts with.

    That part is the whole prompt (the usual case); the end of the prompt (its start was cut to fit the
    context); or the prompt's start up to where a decode changed its text. The longest of these wins, so the
    response never includes prompt text the query repeats exactly.
    """
    if query.startswith(prompt):
        return query[len(prompt):]
    shared_start = len(os.path.commonprefix([query, prompt]))
    return query[max(shared_start, _prompt_end_overlap(query, prompt)):]


def _prompt_end_overlap(query: str, prompt: str) -> int:
    """The largest k such that the query's first k characters are the prompt's last k (linear time).

    Every border of head + prompt (a string that is both its prefix and its suffix) no longer than head,
    where head is the query's first len(prompt) characters, is such a k; the prefix function of head + prompt
    lists the borders from the longest down.
    """
    head = query[:len(prompt)]
    text = head + prompt
    border = [0] * len(text)
    for i in range(1, len(text)):
        k = border[i - 1]
        while k and text[i] != text[k]:
            k = border[k - 1]
        border[i] = k + (text[i] == text[k])
    k = border[-1] if text else 0
    while k > len(head):
        k = border[k - 1]
    return k
