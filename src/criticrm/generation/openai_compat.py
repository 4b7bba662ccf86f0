"""Critique generation through any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, TGI).

Design decisions, and why:
- **Prompts are rendered here**, with the local tokenizer's chat template, and sent as a plain string
  to the legacy `POST {base_url}/v1/completions` endpoint. The server therefore sees exactly the
  prompt the Hugging Face backend would (same template, same few-shot turns), whatever chat template
  the server itself was configured with, and every common server implements this endpoint.
  `base_url` may be given with or without its trailing `/v1`.
- **N samples are N requests**, each with its own seed (derived from the configured seed, the sample
  number and the prompt text, so a sample does not depend on batching, order or resumption). Some
  servers ignore `n` (llama-cpp-python does). With temperature 0 (greedy) all N samples would be the
  same, so one request is sent and its completion repeated N times.
- Generation **stops at the model's end of turn**: servers stop at their EOS themselves; the
  tokenizer's EOS string is also passed as `stop` for those that do not.
- **Concurrency**: a thread pool over one `httpx.Client` (keep-alive connections). Each request has
  a timeout (note: on a single-slot server such as llama-cpp-python's, time spent queued behind
  other requests counts too) and is retried with exponential backoff and jitter on connection
  errors, timeouts, 429 and 5xx (a `Retry-After` header is honoured). Any other 4xx fails at once:
  the request itself is wrong and retrying cannot help. Failures raise `GenerationError` naming the
  URL, the HTTP status and the server's own message.
- **Token counts** come from the response's `usage`; when absent they are counted with the local
  tokenizer (the end-of-turn token counted as one, as the Hugging Face backend does).
- **Probability score**: the prompt + critique body + score prefix is sent with `max_tokens=1`,
  `temperature=0`, `logprobs=20`, and the top-20 next-token log-probabilities are mapped to the
  scores "1".."10". When the tokenizer splits "10" into "1" + "0" (SmolLM2 does), a second request
  with a "1" appended gives P("0" | "1") and P(digit | "1"), as the Hugging Face backend reads them.
  Tokens outside the top 20 count as probability 0 (so `mass` is a slight underestimate); when no
  score token at all is in the top 20 the score is None — a number is never invented.
  Both log-prob formats are read: the legacy one (`logprobs.top_logprobs[0]` = {token: logprob}),
  returned by llama-cpp-python and vLLM, and the newer list form
  (`logprobs.content[0].top_logprobs` = [{token, logprob}, ...]) of llama.cpp's own server.
  llama-cpp-python's server returns log-probs only when started with `--logits_all true`
  (`llamacpp_server` does so); without it the score request fails with that server's message.
"""

from __future__ import annotations

import email.utils
import math
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import httpx

from criticrm.errors import CriticRMError
from criticrm.generation.base import (
    Completion,
    Messages,
    ProbabilityScore,
    SamplingConfig,
    batch_seed,
    score_continuation,
)
from criticrm.prompts.scores import ScoreTokens, expected_score

TOP_LOGPROBS = 20  # the most that OpenAI-style servers commonly allow for legacy completions
_RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
_MAX_BACKOFF = 60.0
_SCORE_STRINGS = frozenset(str(score) for score in range(1, 11))


class GenerationError(CriticRMError):
    """A request to the generation server failed (after retries, where retrying made sense)."""

    def __init__(self, message: str, url: str, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.url = url
        self.status = status
        self.attempts = attempts


class OpenAIGenerator:
    backend = "openai"

    def __init__(self, base_url: str, model: str, tokenizer, api_key: str | None = None, concurrency: int = 8,
                 timeout: float = 120.0, max_retries: int = 4):
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("concurrency must be >= 1, max_retries >= 0 and timeout > 0")
        self.base_url = normalize_base_url(base_url)
        self.url = f"{self.base_url}/v1/completions"
        self.model = model
        self.model_name = model
        self.tokenizer = tokenizer
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = 0.5  # seconds before the first retry; doubled each time, with jitter
        self.stop = [tokenizer.eos_token] if getattr(tokenizer, "eos_token", None) else []
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout,
                                   limits=httpx.Limits(max_connections=concurrency,
                                                       max_keepalive_connections=concurrency))
        self._score_tokens: dict[str, ScoreTokens] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> OpenAIGenerator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check_reachable(self) -> None:
        """Fail at once, with a clear message, when nothing answers at the server's address (instead of after
        every retry of the first batch). Any HTTP answer will do: servers differ in what else they serve."""
        try:
            self.client.get(f"{self.base_url}/v1/models", timeout=min(self.timeout, 10.0))
        except httpx.TransportError as error:
            raise GenerationError(f"cannot reach the generation server at {self.base_url} ({type(error).__name__}: "
                                  f"{str(error) or 'no detail'}); start it, or fix --base-url", self.url) from None

    def render(self, conversation: Messages) -> str:
        return self.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def generate(self, conversations: Sequence[Messages], sampling: SamplingConfig,
                 score_prefix: str | None = None, read_after=None) -> list[list[Completion]]:
        # `read_after` is ignored: a server returns no hidden states, the caller reads rewards itself
        prompts = [self.render(conversation) for conversation in conversations]
        if score_prefix is not None:
            self._score_tokens_for(score_prefix)  # fail early, in this thread, on a prefix that cannot work
        greedy = sampling.temperature == 0
        requests = 1 if greedy else sampling.num_critiques
        n = sampling.num_critiques
        results: list[list[Completion | None]] = [[None] * requests for _ in prompts]
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="criticrm-openai") as pool:
            futures = {
                pool.submit(self._one, prompt, sample, sampling, score_prefix): (index, sample)
                for index, prompt in enumerate(prompts) for sample in range(requests)
            }
            pending = set(futures)
            try:
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in finished:
                        index, sample = futures[future]
                        results[index][sample] = future.result()  # re-raises a request's error
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
        return [list(row) * (n if greedy else 1) for row in results]

    def _one(self, prompt: str, sample: int, sampling: SamplingConfig, score_prefix: str | None) -> Completion:
        greedy = sampling.temperature == 0
        body: dict[str, Any] = {
            "prompt": prompt,
            "max_tokens": sampling.max_new_tokens,
            "temperature": 0.0 if greedy else sampling.temperature,
            "top_p": 1.0 if greedy else sampling.top_p,
            "seed": batch_seed(sampling.seed, f"{sample}:{prompt}"),
        }
        if self.stop:
            body["stop"] = self.stop
        response = self._post(body)
        choice = _first_choice(response, self.url)
        text = choice.get("text") or ""
        if self.stop and self.stop[0] in text:  # a server that kept special tokens in the text
            text = text[: text.index(self.stop[0])]
        text = text.strip()
        finish_reason = "length" if choice.get("finish_reason") in ("length", "max_tokens") else "stop"
        usage = response.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        if prompt_tokens is None:
            prompt_tokens = self._count_tokens(prompt)
        if completion_tokens is None:
            completion_tokens = self._count_tokens(text) + (finish_reason == "stop")
        probability = self._probability_score(prompt, text, score_prefix) if score_prefix is not None else None
        return Completion(text=text, prompt_tokens=int(prompt_tokens), completion_tokens=int(completion_tokens),
                          finish_reason=finish_reason, probability=probability)

    def _probability_score(self, prompt: str, text: str, score_prefix: str) -> ProbabilityScore | None:
        """The score distribution after the critique body and the prefix, from the top-20 log-probs."""
        tokens = self._score_tokens_for(score_prefix)
        context = prompt + score_continuation(text, score_prefix)
        first_probs = _next_token_probs(self._post(self._score_body(context)), self.url)
        first = [0.0] * 10
        for token, p in first_probs.items():
            score = _as_score(token)
            if score is not None:
                first[score - 1] += p
        zero = digit = 0.0
        if tokens.split_ten:
            first[9] = 0.0  # "10" starts with the "1" token: it is read from the next position
            if first[0] > 0:
                after_one = _next_token_probs(self._post(self._score_body(context + "1")), self.url)
                for token, p in after_one.items():
                    d = _as_digit(token)
                    if d is not None:
                        digit += p
                        zero += p if d == 0 else 0.0
        if sum(first) <= 0:
            return None
        score, mass = expected_score(first, min(zero, 1.0), min(digit, 1.0))
        if mass <= 0:
            return None
        return ProbabilityScore(score=score, mass=min(mass, 1.0))

    def choice_probabilities(self, conversations: Sequence[Messages], continuations: Sequence[str],
                             choices: Sequence[str]) -> list[list[float]]:
        """P(each choice) after each conversation and its continuation, from the top-20 next-token log-probs.

        A token counts for a choice when it is the choice without its spaces (" A" and "A" both are "A");
        a choice outside the top 20 counts as 0, as a score token does for the probability score.
        """
        wanted = [choice.strip() for choice in choices]
        contexts = [self.render(conversation) + continuation
                    for conversation, continuation in zip(conversations, continuations, strict=True)]
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="criticrm-openai") as pool:
            responses = list(pool.map(lambda context: self._post(self._score_body(context)), contexts))
        results = []
        for response in responses:
            probabilities = [0.0] * len(wanted)
            for token, p in _next_token_probs(response, self.url).items():
                if _clean(token) in wanted:
                    probabilities[wanted.index(_clean(token))] += p
            results.append(probabilities)
        return results

    def _count_tokens(self, text: str) -> int:
        with self._lock:  # a fast tokenizer shared between threads can fail with "Already borrowed"
            return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def _score_body(self, prompt: str) -> dict[str, Any]:
        return {"prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": TOP_LOGPROBS}

    def _score_tokens_for(self, prefix: str) -> ScoreTokens:
        with self._lock:
            if prefix not in self._score_tokens:
                self._score_tokens[prefix] = ScoreTokens.from_tokenizer(self.tokenizer, prefix)
            return self._score_tokens[prefix]

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the completions endpoint, retrying what a retry can fix."""
        if self.model:
            body = {"model": self.model, **body}
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            try:
                response = self.client.post(self.url, json=body, timeout=self.timeout)
            except httpx.TransportError as error:  # connection refused/reset, timeouts, protocol errors
                problem, status = f"{type(error).__name__}: {str(error) or 'no detail'}", None
            else:
                if response.status_code < 400:
                    try:
                        return response.json()
                    except ValueError:
                        raise GenerationError(f"POST {self.url}: HTTP {response.status_code} but the body is not "
                                              f"JSON: {response.text[:300]!r}", self.url,
                                              response.status_code, attempt) from None
                status = response.status_code
                problem = f"HTTP {status}: {_server_message(response)}"
                if status not in _RETRY_STATUSES:
                    raise GenerationError(f"POST {self.url} failed with {problem} (not retried: the server "
                                          f"rejected the request itself)", self.url, status, attempt)
                retry_after = _retry_after(response)
            if attempt > self.max_retries:
                raise GenerationError(f"POST {self.url} failed after {attempt} attempt(s): {problem}",
                                      self.url, status, attempt)
            delay = min(_MAX_BACKOFF, self.backoff * 2 ** (attempt - 1))
            delay = delay * (0.5 + random.random())  # jitter: retries of many threads do not arrive together
            if retry_after is not None:
                delay = max(delay, min(retry_after, _MAX_BACKOFF))
            time.sleep(delay)


def normalize_base_url(base_url: str) -> str:
    """`http://host:8000`, `http://host:8000/` and `http://host:8000/v1` all name the same server."""
    url = base_url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    return url


def _first_choice(response: dict[str, Any], url: str) -> dict[str, Any]:
    choices = response.get("choices") if isinstance(response, dict) else None
    if not choices:
        raise GenerationError(f"POST {url}: the response has no choices: {str(response)[:300]}", url)
    return choices[0]


def _next_token_probs(response: dict[str, Any], url: str) -> dict[str, float]:
    """Token string -> probability for the first generated position, in either log-prob format."""
    logprobs = _first_choice(response, url).get("logprobs")
    if not logprobs:
        raise GenerationError(f"POST {url}: the server returned no logprobs (llama-cpp-python needs "
                              f"--logits_all true)", url)
    entries: list[tuple[str, float]] = []
    if logprobs.get("top_logprobs"):  # legacy completions: [{token: logprob, ...}, ...]
        top = logprobs["top_logprobs"][0] or {}
        entries = [(token, value) for token, value in top.items()]
    elif logprobs.get("content"):  # newer list form: content[0].top_logprobs = [{token, logprob}, ...]
        entries = [(item.get("token", ""), item.get("logprob")) for item in logprobs["content"][0].get("top_logprobs") or []]
    else:
        raise GenerationError(f"POST {url}: unreadable logprobs: {str(logprobs)[:300]}", url)
    probs: dict[str, float] = {}
    for token, value in entries:
        if value is None or not math.isfinite(value):
            continue
        probs[token] = max(probs.get(token, 0.0), math.exp(value))  # same string twice = same token listed twice
    return probs


def _clean(token: str) -> str:
    """A token string without surrounding whitespace or byte-level BPE / SentencePiece space markers."""
    return token.replace("Ġ", " ").replace("▁", " ").strip()


def _as_score(token: str) -> int | None:
    cleaned = _clean(token)
    return int(cleaned) if cleaned in _SCORE_STRINGS else None


def _as_digit(token: str) -> int | None:
    cleaned = _clean(token)
    return int(cleaned) if len(cleaned) == 1 and cleaned.isascii() and cleaned.isdigit() else None


def _server_message(response: httpx.Response) -> str:
    """The error text a server put in its body (OpenAI `error.message`, FastAPI `detail`, or raw text)."""
    try:
        payload = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        for key in ("detail", "message", "error"):
            if payload.get(key):
                return str(payload[key])[:500]
    return str(payload)[:500]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())
