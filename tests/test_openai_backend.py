"""The OpenAI-compatible backend, against a real llama.cpp server on loopback (and a few mocked replies)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time

import httpx
import pytest

from criticrm.generation.base import SamplingConfig
from criticrm.generation.openai_compat import GenerationError, OpenAIGenerator, normalize_base_url
from criticrm.prompts.templates import TemplateSet
from criticrm.testing.llamacpp import free_port, llamacpp_available, llamacpp_server

pytestmark = pytest.mark.server

PAIRS = [("What is 2+2?", "4"), ("Name a primary colour.", "Green is a primary colour of light.")]


@pytest.fixture(scope="module")
def tokenizer():
    from criticrm.models.backbone import load_tokenizer

    return load_tokenizer(None)


@pytest.fixture(scope="module")
def template():
    return TemplateSet().for_pair(None, None)


@pytest.fixture(scope="module")
def conversations(template):
    return [template.messages(prompt, response) for prompt, response in PAIRS]


@pytest.fixture(scope="module")
def server_url():
    reason = llamacpp_available()
    if reason:
        pytest.skip(reason)
    from criticrm.models.backbone import default_gguf_path

    try:
        model_path = default_gguf_path()
    except Exception as error:  # the embedded model is not installed
        pytest.skip(f"default GGUF model unavailable: {error}")
    # One thread: on a busy 2-core machine llama.cpp's spinning thread barrier makes 2 threads many times slower.
    with llamacpp_server(model_path, n_ctx=2048, threads=1) as url:
        yield url


@pytest.fixture
def generator(server_url, tokenizer):
    with OpenAIGenerator(server_url + "/v1", "smollm2", tokenizer, concurrency=2, timeout=120) as gen:
        yield gen


def test_sampled_completions_in_input_order(generator, conversations, tokenizer):
    sampling = SamplingConfig(num_critiques=2, temperature=0.8, max_new_tokens=24, seed=1)
    results = generator.generate(conversations, sampling)
    assert len(results) == len(conversations)
    for conversation, completions in zip(conversations, results, strict=True):
        expected_prompt = len(tokenizer(generator.render(conversation), add_special_tokens=False).input_ids)
        assert len(completions) == 2
        for completion in completions:
            assert completion.text.strip()
            assert completion.prompt_tokens == expected_prompt  # the server tokenized our rendered prompt
            assert 1 <= completion.completion_tokens <= 24
            assert completion.finish_reason in ("stop", "length")
            assert completion.probability is None


def test_greedy_is_repeatable_and_scored(generator, conversations, template):
    sampling = SamplingConfig(num_critiques=2, temperature=0.0, max_new_tokens=32, seed=5)
    first = generator.generate(conversations[:1], sampling, score_prefix=template.score_prefix)[0]
    second = generator.generate(conversations[:1], sampling, score_prefix=template.score_prefix)[0]
    assert first[0].text and first[0].text == first[1].text == second[0].text
    for completion in first + second:
        assert completion.probability is not None
        assert 1.0 <= completion.probability.score <= 10.0
        assert 0.0 < completion.probability.mass <= 1.0
    assert math.isclose(first[0].probability.score, second[0].probability.score, abs_tol=1e-3)


def test_a_server_killed_by_an_illegal_instruction_is_explained(tmp_path):
    from criticrm.testing.llamacpp import _exit_message

    process = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGILL)"])
    process.wait()
    with open(tmp_path / "log", "w+b") as log:
        log.write(b"llama_model_load: loaded")
        message = _exit_message(process, "on its first completion", log)
    assert "illegal instruction" in message and "setup.sh --dev" in message
    assert message.endswith("llama_model_load: loaded")


def test_native_server_names_a_missing_binary_or_model(tmp_path):
    from criticrm.testing.llamacpp import native_llama_server

    model = tmp_path / "model.gguf"
    with pytest.raises(FileNotFoundError, match="llama-server binary not found"), \
            native_llama_server(tmp_path / "llama-server", model, slots=2):
        pass
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    with pytest.raises(FileNotFoundError, match="model file not found"), native_llama_server(binary, model, slots=2):
        pass


def test_unreachable_server_fails_after_retries(tokenizer, conversations):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with OpenAIGenerator(url, "none", tokenizer, timeout=2, max_retries=2) as gen:
        gen.backoff = 0.01
        with pytest.raises(GenerationError) as caught:
            gen.generate(conversations[:1], SamplingConfig(num_critiques=1, max_new_tokens=8))
    assert caught.value.attempts == 3
    assert caught.value.status is None
    assert url in str(caught.value) and "Connect" in str(caught.value)


def test_critique_command_with_an_unreachable_server_is_one_clear_error(tmp_path, capsys):
    from criticrm.cli import main

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    data = "data/sample/train.jsonl"
    status = main(["critique", "--data", data, "--out", str(tmp_path / "out"), "--backend", "openai",
                   "--base-url", url, "--limit", "2"])
    err = capsys.readouterr().err
    assert status == 2 and f"cannot reach the generation server at {url}" in err and "Traceback" not in err


def test_client_error_is_not_retried(server_url, tokenizer, conversations):
    with OpenAIGenerator(server_url + "/no-such-route", "smollm2", tokenizer, max_retries=4) as gen:
        gen.backoff = 0.01
        with pytest.raises(GenerationError) as caught:
            gen.generate(conversations[:1], SamplingConfig(num_critiques=1, max_new_tokens=8))
    error = caught.value
    assert error.status == 404 and error.attempts == 1
    message = str(error)
    assert "/no-such-route/v1/completions" in message and "404" in message and "Not Found" in message


# --- mocked replies: formats and retry policy, without a server -------------------------------------------


def _mocked(tokenizer, handler, **kwargs) -> OpenAIGenerator:
    gen = OpenAIGenerator("http://mock.invalid", "mock", tokenizer, **kwargs)
    gen.client.close()
    gen.client = httpx.Client(transport=httpx.MockTransport(handler))
    gen.backoff = 0.01
    return gen


def test_content_logprobs_format_and_local_token_counts(tokenizer, conversations, template):
    """The newer list form of logprobs (llama.cpp's own server) and a reply without `usage`."""
    first = {"7": math.log(0.5), " 8": math.log(0.2), "1": math.log(0.1), "\n": math.log(0.1)}
    after_one = {"0": math.log(0.6), "/": math.log(0.3), "2": math.log(0.05)}

    def content(table):
        return {"content": [{"token": "x", "logprob": -1.0,
                             "top_logprobs": [{"token": t, "logprob": v} for t, v in table.items()]}]}

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "logprobs" not in body:
            choice = {"text": " Correct and clear.\nScore: 9/10", "finish_reason": "stop"}
        elif body["prompt"].endswith(template.score_prefix):
            choice = {"text": "7", "finish_reason": "length", "logprobs": content(first)}
        else:
            assert body["prompt"].endswith(template.score_prefix + "1")
            choice = {"text": "0", "finish_reason": "length", "logprobs": content(after_one)}
        return httpx.Response(200, json={"choices": [choice]})

    with _mocked(tokenizer, handler) as gen:
        [[completion]] = gen.generate(conversations[:1], SamplingConfig(num_critiques=1, temperature=0.7),
                                      score_prefix=template.score_prefix)
    assert completion.text == "Correct and clear.\nScore: 9/10"
    assert completion.finish_reason == "stop"
    assert completion.prompt_tokens == len(tokenizer(gen.render(conversations[0]), add_special_tokens=False).input_ids)
    assert completion.completion_tokens == len(tokenizer(completion.text, add_special_tokens=False).input_ids) + 1
    p1, p10 = 0.1 * (1 - 0.65), 0.1 * 0.6  # "1" then a digit (0.6 + 0.05) is not the score 1; "1" then "0" is 10
    probs = {1: p1, 7: 0.5, 8: 0.2, 10: p10}
    mass = sum(probs.values())
    assert completion.probability.mass == pytest.approx(mass)
    assert completion.probability.score == pytest.approx(sum(k * p for k, p in probs.items()) / mass)


def test_no_score_token_in_top_k_gives_none(tokenizer, conversations, template):
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if "logprobs" not in body:
            return httpx.Response(200, json={"choices": [{"text": "Fine.", "finish_reason": "stop"}],
                                             "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
        legacy = {"tokens": ["\n"], "top_logprobs": [{"\n": -0.1, "The": -2.5}]}
        return httpx.Response(200, json={"choices": [{"text": "\n", "logprobs": legacy}]})

    with _mocked(tokenizer, handler) as gen:
        [[completion]] = gen.generate(conversations[:1], SamplingConfig(num_critiques=1),
                                      score_prefix=template.score_prefix)
    assert (completion.prompt_tokens, completion.completion_tokens) == (3, 2)
    assert completion.probability is None


def test_retries_429_and_5xx_honouring_retry_after(tokenizer, conversations):
    replies = [httpx.Response(429, headers={"Retry-After": "0.3"}, json={"error": {"message": "slow down"}}),
               httpx.Response(503, text="overloaded"),
               httpx.Response(200, json={"choices": [{"text": "ok", "finish_reason": "length"}],
                                         "usage": {"prompt_tokens": 5, "completion_tokens": 8}})]
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        return replies[len(calls) - 1]

    with _mocked(tokenizer, handler, max_retries=2) as gen:
        [[completion]] = gen.generate(conversations[:1], SamplingConfig(num_critiques=1, max_new_tokens=8))
    assert len(calls) == 3 and completion.text == "ok" and completion.finish_reason == "length"
    assert calls[1] - calls[0] >= 0.3  # Retry-After honoured

    calls.clear()
    replies[:] = [httpx.Response(500, json={"error": {"message": "boom"}})] * 3
    with _mocked(tokenizer, handler, max_retries=2) as gen, pytest.raises(GenerationError, match="3 attempt.*boom"):
        gen.generate(conversations[:1], SamplingConfig(num_critiques=1, max_new_tokens=8))


@pytest.mark.parametrize("url", ["http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/"])
def test_base_url_with_or_without_v1(url):
    assert normalize_base_url(url) == "http://h:8000"
