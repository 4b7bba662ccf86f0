"""The reward server: a FastAPI app over one RewardScorer, with dynamic batching, request limits and auth.

    GET  /health      liveness, always open (no token)
    GET  /v1/info     model, mode, version, the server's limits and batching counters
    POST /v1/score    our API: prompt + response (or chat messages) items -> rewards with their critiques
    POST /get_reward  OpenRLHF's remote reward-model contract: {query, prompts, labels} -> {rewards, ...}

Every problem with a request is answered with a 4xx and a one-line `detail` that says what to fix; the
server never answers 500 for bad input and keeps serving. Scoring runs in the batcher's worker thread,
so the event loop only parses, validates and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
from collections.abc import Iterable

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import criticrm
from criticrm.errors import ConfigError, CriticRMError
from criticrm.generation.openai_compat import GenerationError
from criticrm.inference.scorer import RewardScorer, ScoreItem, ScoreResult
from criticrm.integrations.openrlhf import response_in_query
from criticrm.serve.batcher import DynamicBatcher, QueueFullError, ShuttingDownError
from criticrm.serve.config import ServerConfig
from criticrm.serve.schemas import (
    CritiqueOut,
    GetRewardRequest,
    GetRewardResponse,
    ResultOut,
    ScoreRequest,
    ScoreResponse,
)

logger = logging.getLogger("criticrm.serve")

OPEN_PATHS = ("/health",)


def create_app(scorer: RewardScorer, config: ServerConfig) -> FastAPI:
    """The ASGI app; its lifespan starts the scoring worker and, at shutdown, drains it."""
    service = RewardService(scorer, config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.batcher.start()
        try:
            yield
        finally:  # uvicorn has already let the requests in flight finish; score anything still queued
            await asyncio.to_thread(service.batcher.close, config.request_timeout_s)

    app = FastAPI(title="criticrm reward server", version=criticrm.__version__, lifespan=lifespan)
    app.add_middleware(RequestGuard, token=config.token, max_body_bytes=config.max_body_bytes)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/info")
    async def info() -> dict:
        return {**service.model_info, "server": config.limits(), "stats": service.batcher.stats()}

    @app.post("/v1/score", response_model=ScoreResponse)
    async def score_items(request: ScoreRequest) -> ScoreResponse:
        return await service.score_items(request)

    @app.post("/get_reward", response_model=GetRewardResponse)
    async def get_reward(request: GetRewardRequest) -> GetRewardResponse:
        return await service.get_reward(request)

    return app


class RewardService:
    """What the endpoints do: check a request against the server's limits, queue its items for the
    batcher, and turn failures into HTTP answers that say what to fix."""

    def __init__(self, scorer: RewardScorer, config: ServerConfig):
        self.scorer, self.config = scorer, config
        self.batcher = DynamicBatcher(scorer.score, config.max_batch_size, config.max_wait_ms / 1000,
                                      config.max_queue)
        self.model_info = scorer.info()
        self.special_tokens = _special_token_pattern(scorer.tokenizer) if config.strip_special_tokens else None

    def sampling_key(self, num_critiques: int | None, temperature: float | None) -> tuple:
        """The effective (num_critiques, temperature): requests that resolve alike share a score call."""
        if self.scorer.mode == "standard":
            return None, None  # no critiques: sampling settings do not apply
        if num_critiques is not None and num_critiques > self.config.max_num_critiques:
            raise HTTPException(422, f"num_critiques={num_critiques} is above this server's limit of "
                                     f"{self.config.max_num_critiques} (max_num_critiques)")
        try:
            sampling = self.scorer.config.sampling(num_critiques, temperature)
        except ConfigError as error:
            raise HTTPException(422, str(error)) from None
        return sampling.num_critiques, sampling.temperature

    def check_sizes(self, name: str, chars: Iterable[int]) -> None:
        chars = list(chars)
        if len(chars) > self.config.max_items_per_request:
            raise HTTPException(413, f"{len(chars)} entries in {name}; this server takes at most "
                                     f"{self.config.max_items_per_request} per request (max_items_per_request): "
                                     "split the request")
        for index, count in enumerate(chars):
            if count > self.config.max_chars_per_item:
                raise HTTPException(413, f"{name}[{index}] has {count} characters; this server takes at "
                                         f"most {self.config.max_chars_per_item} (max_chars_per_item)")

    async def score(self, items: list[ScoreItem], key: tuple) -> list[ScoreResult]:
        try:
            future = self.batcher.submit(items, *key)
        except QueueFullError as error:
            raise HTTPException(503, str(error), headers={"Retry-After": str(error.retry_after)}) from None
        except ShuttingDownError as error:
            raise HTTPException(503, str(error)) from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.config.request_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"not scored within {self.config.request_timeout_s:g} s "
                                     "(request_timeout_s): the server is overloaded; retry later or send "
                                     "fewer items") from None
        except GenerationError as error:  # (a CriticRMError too: it comes first)
            raise HTTPException(502, f"critique generation failed: {error}") from None
        except CriticRMError as error:
            raise HTTPException(422, str(error)) from None
        except Exception as error:
            logger.exception("scoring failed")
            raise HTTPException(500, f"scoring failed: {type(error).__name__}: {error}") from None

    async def score_items(self, request: ScoreRequest) -> ScoreResponse:
        self.check_sizes("items", (item.chars() for item in request.items))
        key = self.sampling_key(request.num_critiques, request.temperature)
        results = await self.score([item.to_score_item() for item in request.items], key)
        return ScoreResponse(results=[ResultOut.of(r) for r in results], model=self.model_info["model"],
                             mode=self.model_info["mode"])

    async def get_reward(self, request: GetRewardRequest) -> GetRewardResponse:
        queries, prompts = request.query, request.prompts
        if prompts is None:
            raise HTTPException(422, "prompts is required: each query is split into its prompt and the "
                                     "response to score")
        for name, values in (("prompts", prompts), ("labels", request.labels)):
            if values is not None and len(values) != len(queries):
                raise HTTPException(422, f"{name} has {len(values)} entries but query has {len(queries)}")
        self.check_sizes("query", (len(q) for q in queries))
        # the prompt as OpenRLHF had it; the query may start with only its end (cut to fit the context)
        items = [ScoreItem(_clean(p, self.special_tokens), _clean(response_in_query(q, p), self.special_tokens))
                 for q, p in zip(queries, prompts, strict=True)]
        results = await self.score(items, self.sampling_key(None, None))
        unscored = [i for i, r in enumerate(results) if math.isnan(r.reward)]
        if unscored:  # only with the model's truncation policy `drop`
            raise HTTPException(422, f"query[{unscored[0]}] could not be scored: it is longer than the "
                                     f"reward model's max_length ({len(unscored)} such: {unscored[:10]})")
        rewards = [r.reward for r in results]
        return GetRewardResponse(
            rewards=rewards, scores=rewards,
            extra_logs={"reward_spread": [r.spread for r in results],
                        "critique_truncated": [_share_truncated(r) for r in results]},
            critiques=[[CritiqueOut.of(c) for c in r.critiques] for r in results])


class RequestGuard:
    """ASGI middleware that runs before any parsing: the bearer token, then the body size.

    The body is read here, bounded, and replayed to the app, so an oversize body (with or without a
    Content-Length) is refused without being buffered whole.
    """

    def __init__(self, app, token: str | None, max_body_bytes: int):
        self.app, self.token, self.max_body_bytes = app, token, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.token is not None and not _authorized(headers.get("authorization", ""), self.token):
            await _reply(scope, receive, send, 401, "missing or wrong bearer token: send "
                         "'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})
            return
        too_large = (f"request body larger than this server's limit of {self.max_body_bytes} bytes "
                     "(max_body_bytes): split the request")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await _reply(scope, receive, send, 413, too_large)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await _reply(scope, receive, send, 413, too_large)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def _authorized(header: str, token: str) -> bool:
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(value.strip().encode(), token.encode())


async def _reply(scope, receive, send, status: int, detail: str, headers: dict | None = None) -> None:
    await JSONResponse({"detail": detail}, status_code=status, headers=headers)(scope, receive, send)


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's validation errors as one readable line: `items[2].response: Field required`."""
    errors = error.errors()
    for problem in errors:
        if problem["type"] == "json_invalid":
            reason = problem.get("ctx", {}).get("error", "JSON decode error")
            return JSONResponse({"detail": f"request body is not valid JSON: {reason} at character "
                                           f"{problem['loc'][-1]}"}, status_code=400)
    detail = "; ".join(_describe(problem) for problem in errors[:5])
    if len(errors) > 5:
        detail += f"; and {len(errors) - 5} more problems"
    content_type = request.headers.get("content-type", "")
    if "json" not in content_type:
        detail += (" (send the body as JSON with Content-Type: application/json, "
                   f"not {content_type or 'none'!r})")
    return JSONResponse({"detail": detail}, status_code=422)


async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    """FastAPI's answer, except that a body its JSON parser chokes on (a number of 4,300+ digits, nesting
    deeper than Python recurses) says why instead of "There was an error parsing the body"."""
    cause = error.__cause__
    if error.status_code == 400 and isinstance(cause, ValueError | RecursionError):
        reason = "nested too deeply" if isinstance(cause, RecursionError) else str(cause).split(";")[0]
        return JSONResponse({"detail": f"request body is not valid JSON: {reason}"}, status_code=400)
    return await http_exception_handler(request, error)


def _describe(problem: dict) -> str:
    location = ""
    for part in problem["loc"][1:] if problem["loc"][:1] == ("body",) else problem["loc"]:
        location += f"[{part}]" if isinstance(part, int) else f".{part}" if location else str(part)
    message = problem["msg"].removeprefix("Value error, ")
    if not location:
        return f"request body: {'a JSON object is required' if problem['type'] == 'missing' else message}"
    return f"{location}: {message}"


def _special_token_pattern(tokenizer) -> re.Pattern | None:
    tokens = sorted({t for t in tokenizer.all_special_tokens if t}, key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in tokens)) if tokens else None


def _clean(text: str, special_tokens: re.Pattern | None) -> str:
    """Without chat-template markup (`<|im_end|>`...): inside the judge prompt it would read as structure."""
    return special_tokens.sub("", text).strip() if special_tokens else text


def _share_truncated(result: ScoreResult) -> float:
    """Share of the response's critiques cut at max_new_tokens (0 without critiques)."""
    if not result.critiques:
        return 0.0
    return sum(c.finish_reason == "length" for c in result.critiques) / len(result.critiques)
