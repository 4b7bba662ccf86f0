"""The reward server's client that the RLHF adapters share: the standard library only.

OpenRLHF and verl load a reward function by file path inside their own workers, whose environment has
their versions of transformers and torch; criticrm's own dependencies may not fit there. So this module,
`openrlhf.py` and `verl.py` import nothing outside the standard library (and OpenRLHF's torch), and
`pip install --no-deps criticrm` is all such an environment needs. The server is at $CRITICRM_URL
(default http://127.0.0.1:8000), with bearer token $CRITICRM_TOKEN when set.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV, TOKEN_ENV = "CRITICRM_URL", "CRITICRM_TOKEN"
CHUNK = 64  # items per request: below the server's default max_items_per_request
TIMEOUT_S = 600.0
ATTEMPTS = 5  # a busy (503) or unreachable server is retried this many times in all


@dataclass(frozen=True)
class RewardServer:
    """Where `criticrm serve` listens. Plain strings only: a reward function holding it can be pickled."""

    url: str = DEFAULT_URL
    token: str | None = None
    timeout_s: float = TIMEOUT_S

    @classmethod
    def from_env(cls) -> RewardServer:
        return cls(os.environ.get(URL_ENV, DEFAULT_URL), os.environ.get(TOKEN_ENV) or None)

    def score(self, items: list[dict]) -> list[dict]:
        """`/v1/score` results of `items` ({prompt, response[, subset, domain]} or {messages, ...}), in
        order; more than CHUNK items go as concurrent requests, which the server batches together again."""
        bodies = [{"items": items[i:i + CHUNK]} for i in range(0, len(items), CHUNK)]
        return [result for reply in self.post_all("/v1/score", bodies) for result in reply["results"]]

    async def score_async(self, items: list[dict]) -> list[dict]:
        """`score` off the event loop (in a worker thread), for frameworks that await reward functions."""
        return await asyncio.to_thread(self.score, items)

    def post_all(self, path: str, bodies: list[dict]) -> list[dict]:
        if len(bodies) == 1:
            return [self.post(path, bodies[0])]
        with ThreadPoolExecutor(max_workers=min(8, len(bodies))) as pool:
            return list(pool.map(lambda body: self.post(path, body), bodies))

    def post(self, path: str, body: dict) -> dict:
        url = self.url.rstrip("/") + path
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode()
        attempt = 1
        while True:
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                if error.code != 503 or attempt == ATTEMPTS:
                    raise RuntimeError(f"{url}: HTTP {error.code}: {_detail(error)}") from None
                wait = float(error.headers.get("Retry-After", 1))
            except urllib.error.URLError as error:  # not reachable (yet): the server may be (re)starting
                if attempt == ATTEMPTS:
                    raise RuntimeError(f"{url}: cannot reach the criticrm reward server ({error.reason}); start "
                                       f"it with `criticrm serve --model DIR` or set ${URL_ENV}") from None
                wait = 2.0 ** attempt
            time.sleep(wait)
            attempt += 1


def _detail(error: urllib.error.HTTPError) -> str:
    text = error.read().decode(errors="replace")
    try:
        return json.loads(text)["detail"]
    except (ValueError, KeyError, TypeError):
        return text
