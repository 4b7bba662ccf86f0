"""The reward server against real uvicorn servers on loopback, scoring with real tiny reward models.

The tiny models' reward heads are initialised wide (std 1) so different responses get clearly different
rewards: a result handed to the wrong request would not match the reward computed directly.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from criticrm.cli import main
from criticrm.data.readers import render_transcript
from criticrm.inference.scorer import RewardScorer, ScoreItem, ScoringConfig
from criticrm.serve.app import create_app
from criticrm.serve.batcher import DynamicBatcher
from criticrm.serve.client import RewardClient, RewardServerError
from criticrm.serve.config import ServerConfig
from criticrm.serve.runner import make_server, serving_in_thread
from criticrm.testing.llamacpp import free_port

SCORING = ScoringConfig(max_new_tokens=8)
ITEM = {"prompt": "p", "response": "r"}
JSON = "application/json"
MAIN = dict(max_batch_size=32, max_wait_ms=50, max_queue=256, max_items_per_request=32,
            max_chars_per_item=2000, max_body_bytes=64 * 1024)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from criticrm.models.backbone import load_tokenizer
    from criticrm.models.critic_rm import CriticRewardModel
    from criticrm.testing.tiny import make_tiny_backbone

    root = tmp_path_factory.mktemp("serve")
    backbone = make_tiny_backbone(root / "bb")
    tokenizer = load_tokenizer(str(backbone))
    critic = CriticRewardModel.from_backbone(str(backbone), mode="critic", head_init_std=1.0)
    critic.save(root / "critic", tokenizer=tokenizer)
    # standard mode, and over-long inputs are an error: a way to make the scorer reject one request's input
    standard = CriticRewardModel.from_backbone(str(backbone), mode="standard", head_init_std=1.0,
                                               max_length=256, truncation="error")
    standard.save(root / "standard", tokenizer=tokenizer)
    return {"critic": root / "critic", "standard": root / "standard"}


@contextlib.contextmanager
def serving(model: Path, **overrides):
    config = ServerConfig(**{"port": 0, **overrides})
    scorer = RewardScorer.load(model, SCORING, device="cpu")
    with serving_in_thread(make_server(create_app(scorer, config), config, log_level="warning")) as url:
        yield url


@pytest.fixture(scope="module")
def url(models):
    with serving(models["critic"], **MAIN) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def reference(models) -> RewardScorer:
    """The same model scored directly, in this thread (the server's worker owns its own copy)."""
    return RewardScorer.load(models["critic"], SCORING, device="cpu")


def stats(base_url: str, headers: dict | None = None) -> dict:
    return httpx.get(f"{base_url}/v1/info", headers=headers).json()["stats"]


# ---- shapes -----------------------------------------------------------------------------------------------


def test_every_endpoint_answers_in_its_documented_shape(url, reference):
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    info = httpx.get(f"{url}/v1/info").json()
    assert info["mode"] == "critic" and info["model"].endswith("critic") and info["criticrm_version"]
    assert info["server"]["max_items_per_request"] == 32 and info["server"]["auth"] is False
    assert {"requests", "items", "batches", "largest_batch", "queued_items"} <= set(info["stats"])

    conversation = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Capital of France?"}]
    with RewardClient(url) as client:
        results = client.score([("What is 2+2?", "4"),
                                {"messages": [*conversation, {"role": "assistant", "content": "Paris."}]}])
    expected = reference.score([ScoreItem("What is 2+2?", "4"),
                                ScoreItem(render_transcript(conversation), "Paris.")])
    for result, direct in zip(results, expected, strict=True):
        assert set(result) == {"reward", "spread", "critiques"}
        assert result["reward"] == pytest.approx(direct.reward, rel=1e-4, abs=1e-5)
        assert result["spread"] == 0.0
        [critique] = result["critiques"]
        assert set(critique) == {"critique", "reward", "finish_reason"}
        assert critique["finish_reason"] in ("stop", "length")

    body = httpx.post(f"{url}/v1/score", json={"items": [ITEM], "num_critiques": 2, "temperature": 0.8})
    body = body.json()
    assert body["mode"] == "critic" and body["model"] == info["model"]
    [result] = body["results"]
    assert len(result["critiques"]) == 2 and result["spread"] >= 0

    reply = httpx.post(f"{url}/get_reward", json={"query": ["Q1 A1", "Q2 A2"], "prompts": ["Q1", "Q2"],
                                                  "labels": [None, "x"]}).json()
    assert set(reply) == {"rewards", "scores", "extra_logs", "critiques"}
    assert reply["scores"] == reply["rewards"] and len(reply["rewards"]) == 2
    # OpenRLHF turns every extra_logs value into a tensor: numbers only, one per query
    assert set(reply["extra_logs"]) == {"reward_spread", "critique_truncated"}
    assert all(len(v) == 2 and all(isinstance(x, float) for x in v) for v in reply["extra_logs"].values())
    assert all(len(c) == 1 and "critique" in c[0] for c in reply["critiques"])


def test_get_reward_splits_each_query_at_its_prompt(url, reference):
    template_prompt = "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    queries = ["Why is the sky blue? Rayleigh scattering.", template_prompt + "Blue.<|im_end|>"]
    reply = httpx.post(f"{url}/get_reward", json={"query": queries,
                                                  "prompts": ["Why is the sky blue?", template_prompt]})
    assert reply.status_code == 200
    # the response is what follows the prompt; chat-template markup is removed from both
    expected = reference.score([ScoreItem("Why is the sky blue?", "Rayleigh scattering."),
                                ScoreItem("user\nName a colour.\nassistant", "Blue.")])
    assert reply.json()["rewards"] == pytest.approx([r.reward for r in expected], rel=1e-4, abs=1e-5)

    # a query that does not start with its whole prompt is split where it stops repeating it, not refused
    # (OpenRLHF drops a reward it gets a 4xx for); tests/test_integrations.py has the cases
    cut = httpx.post(f"{url}/get_reward", json={"query": ["sky blue? Rayleigh scattering."],
                                                "prompts": ["Why is the sky blue?"]})
    assert cut.json()["rewards"] == pytest.approx([expected[0].reward], rel=1e-4, abs=1e-5)
    missing = httpx.post(f"{url}/get_reward", json={"query": ["Q1 A1"]})
    assert missing.status_code == 422 and "prompts is required" in missing.json()["detail"]
    short = httpx.post(f"{url}/get_reward", json={"query": ["Q1 A1", "Q2"], "prompts": ["Q1"]})
    assert short.status_code == 422 and "prompts has 1 entries but query has 2" in short.json()["detail"]


# ---- batching ---------------------------------------------------------------------------------------------


def test_concurrent_clients_get_their_own_results_batched_together(url, reference):
    clients, per_client = 16, 3
    items = [ScoreItem(f"Question {i}: what is {i} times {i + 1}?", f"It is {i * (i + 1)}: {i} x {i + 1}.")
             for i in range(clients * per_client)]
    expected = [r.reward for r in reference.score(items)]
    assert len(set(expected)) == len(expected)
    before = stats(url)
    barrier = threading.Barrier(clients)
    got: dict[int, list[float]] = {}

    def run(k: int) -> None:
        mine = items[k * per_client:(k + 1) * per_client]
        with RewardClient(url, timeout=120) as client:
            barrier.wait()
            if k % 2:  # OpenRLHF's endpoint and ours share the batches
                queries = [f"{item.prompt} {item.response}" for item in mine]
                got[k] = client.get_reward(queries, [item.prompt for item in mine])["rewards"]
            else:
                got[k] = [r["reward"] for r in client.score([(item.prompt, item.response) for item in mine])]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(got) == list(range(clients))
    for k in range(clients):
        for j, reward in enumerate(got[k]):
            # its own reward (batch composition moves float32 results by ~1e-7), and no other item's
            nearest = min(range(len(expected)), key=lambda i, r=reward: abs(expected[i] - r))
            assert nearest == k * per_client + j
            assert reward == pytest.approx(expected[nearest], rel=1e-5)
    after = stats(url)
    assert after["requests"] - before["requests"] == clients
    assert after["items"] - before["items"] == clients * per_client
    assert after["batches"] - before["batches"] < clients  # requests were merged
    assert after["largest_batch"] > per_client


def test_batcher_groups_by_sampling_settings_and_isolates_a_failing_request():
    calls = []

    def score_fn(items, num_critiques, temperature):
        calls.append(([item.prompt for item in items], num_critiques, temperature))
        if any(item.prompt == "boom" for item in items):
            raise ValueError("cannot score boom")
        return [f"{item.prompt}@{num_critiques}" for item in items]

    batcher = DynamicBatcher(score_fn, max_batch_size=10, max_wait_s=0.0, max_queue=10)
    futures = [batcher.submit([ScoreItem("a", "r"), ScoreItem("b", "r")], 1, 0.0),
               batcher.submit([ScoreItem("c", "r")], 4, 0.8),
               batcher.submit([ScoreItem("boom", "r")], 1, 0.0),
               batcher.submit([ScoreItem("d", "r"), ScoreItem("a", "r")], 1, 0.0)]
    batcher.start()  # all four are queued: one batch, two groups
    assert futures[0].result(5) == ["a@1", "b@1"] and futures[1].result(5) == ["c@4"]
    assert futures[3].result(5) == ["d@1", "a@1"]
    with pytest.raises(ValueError, match="boom"):
        futures[2].result(5)
    # merged (the repeated "a" scored once), then retried request by request
    assert calls[:2] == [(["a", "b", "boom", "d"], 1, 0.0), (["a", "b"], 1, 0.0)]
    assert (["c"], 4, 0.8) in calls
    assert batcher.close(5)
    assert batcher.stats()["batches"] == 1 and batcher.stats()["failed_requests"] == 1


# ---- bad requests -----------------------------------------------------------------------------------------

BAD_REQUESTS = [
    ("/v1/score", b'{"items": [', JSON, 400, "not valid JSON"),
    ("/v1/score", b"", JSON, 422, "a JSON object is required"),
    ("/v1/score", b"[1, 2]", JSON, 422, "valid dictionary"),
    ("/v1/score", b'{"items": []}', JSON, 422, "at least 1 item"),
    ("/v1/score", b'{"items": "pr"}', JSON, 422, "items: Input should be a valid list"),
    ("/v1/score", b'{"items": [{"prompt": 1, "response": "r"}]}', JSON, 422, "items[0].prompt"),
    ("/v1/score", b'{"items": [{"prompt": "p"}]}', JSON, 422, "items[0]: each item needs prompt"),
    ("/v1/score", b'{"items": [{"prompt": "p", "response": "r", "x": 1}]}', JSON, 422, "items[0].x"),
    ("/v1/score", b'{"items": [{"messages": [{"role": "user", "content": "q"}]}]}', JSON, 422,
     "last, the assistant response"),
    ("/v1/score", b'{"items": [{"messages": [{"role": "robot", "content": "q"}, {"role": "assistant", '
                  b'"content": "a"}]}]}', JSON, 422, "role must be one of"),
    ("/v1/score", b'{"items": [{"prompt": "p", "response": "r"}], "num_critiques": "many"}', JSON, 422,
     "num_critiques"),
    ("/v1/score", b'{"items": [{"prompt": "p", "response": "r"}], "num_critiques": 17, "temperature": 0.8}',
     JSON, 422, "above this server's limit of 16"),
    ("/v1/score", b'{"items": [{"prompt": "p", "response": "r"}], "num_critiques": 3, "temperature": 0}',
     JSON, 422, "identical greedy critiques"),
    ("/v1/score", b'{"items": [{"prompt": "p", "response": "r"}]}', "text/plain", 422, "Content-Type"),
    ("/get_reward", b'{"query": "Q A", "prompts": ["Q"]}', JSON, 422, "query"),
    ("/get_reward", b'{"query": [], "prompts": []}', JSON, 422, "at least 1 item"),
    # Python's JSON parser takes NaN, Infinity and unpaired surrogate escapes; none may reach the model
    ("/v1/score", b'{"items": [{"prompt": "p", "response": "r"}], "temperature": NaN}', JSON, 422, "temperature"),
    ("/v1/score", b'{"items": [{"prompt": "p", "response": "r"}], "temperature": 1e999}', JSON, 422,
     "temperature: Input should be a finite number"),
    ("/v1/score", b'{"items": [{"prompt": "\\ud800", "response": "r"}]}', JSON, 422,
     "items[0].prompt: the text holds a lone surrogate (U+D800"),
    ("/v1/score", b'{"items": [{"prompt": "p", "response": "r\\udfff"}]}', JSON, 422, "items[0].response"),
    ("/v1/score", b'{"items": [{"messages": [{"role": "user", "content": "\\udc80"}, {"role": "assistant", '
                  b'"content": "a"}]}]}', JSON, 422, "items[0].messages[0].content"),
    ("/get_reward", b'{"query": ["Q \\ud800"], "prompts": ["Q"]}', JSON, 422, "query[0]: the text holds"),
    ("/get_reward", b'{"query": ["Q A"], "prompts": ["\\udbff"]}', JSON, 422, "prompts[0]"),
    ("/v1/score", b'{"items": [{"prompt": "p", "response": "r"}], "num_critiques": 1' + b"0" * 5000 + b"}",
     JSON, 400, "not valid JSON"),
    ("/v1/score", b'{"items": [' + b"[" * 5000 + b"]" * 5000 + b"]}", JSON, 400, "not valid JSON"),
]


def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(url):
    with httpx.Client(base_url=url) as http:
        for path, body, content_type, status, message in BAD_REQUESTS:
            reply = http.post(path, content=body, headers={"content-type": content_type})
            assert (reply.status_code, path, body) == (status, path, body)
            assert message in reply.json()["detail"], (body, reply.json())

        too_many = http.post("/v1/score", json={"items": [ITEM] * 33})
        assert too_many.status_code == 413 and "at most 32 per request" in too_many.json()["detail"]
        too_long = http.post("/v1/score", json={"items": [ITEM, {"prompt": "p", "response": "x" * 2000}]})
        assert too_long.status_code == 413 and "items[1] has 2001 characters" in too_long.json()["detail"]
        long_query = http.post("/get_reward", json={"query": ["q" * 2001], "prompts": ["q"]})
        assert long_query.status_code == 413 and "query[0]" in long_query.json()["detail"]
        big = http.post("/v1/score", content=b" " * (70 * 1024), headers={"content-type": JSON})
        assert big.status_code == 413 and "max_body_bytes" in big.json()["detail"]
        chunked = http.post("/v1/score", content=iter([b" " * 40_000, b" " * 40_000]),
                            headers={"content-type": JSON})  # no Content-Length
        assert chunked.status_code == 413
        assert http.get("/v1/score").status_code == 405 and http.get("/nowhere").status_code == 404
        assert http.get("/health").status_code == 200
        assert http.post("/v1/score", json={"items": [ITEM]}).status_code == 200
    with RewardClient(url) as client, pytest.raises(RewardServerError, match="at least 1 item") as caught:
        client.score([])
    assert caught.value.status == 422


def test_a_near_zero_temperature_scores_instead_of_failing(url):
    """1e-300 once turned every logit into inf - inf = NaN probabilities and answered 500: it is greedy."""
    reply = httpx.post(f"{url}/v1/score", json={"items": [ITEM], "num_critiques": 2, "temperature": 1e-300})
    assert reply.status_code == 200
    [result] = reply.json()["results"]
    assert result["reward"] is not None and len({c["critique"] for c in result["critiques"]}) == 1


def fuzzed_body(rng: random.Random) -> tuple[str, bytes]:
    """A request built from a valid one with one to three random parts replaced, dropped or added."""
    leaves = [None, True, -1, 0, 2, 10**30, -0.0, 1e-300, 1e308, "", " ", "\x00", "\ud800", "\u200b", "x" * 2500,
              [], {}, [[[[]]]], {"role": "tool"}, [{"role": "assistant", "content": "a"}], "NaN", "Infinity"]
    if rng.random() < 0.5:
        path, body = "/v1/score", {"items": [{"prompt": "p", "response": "r"},
                                             {"messages": [{"role": "user", "content": "q"},
                                                           {"role": "assistant", "content": "a"}]}],
                                   "num_critiques": 2, "temperature": 0.7}
    else:
        path, body = "/get_reward", {"query": ["Q A", "Q2 B"], "prompts": ["Q", "Q2"], "labels": [1, None]}
    for _ in range(rng.randint(1, 3)):
        parent, key = body, None
        while True:  # walk down to a random place
            keys = list(parent) if isinstance(parent, dict) else list(range(len(parent)))
            if not keys:
                break
            key = rng.choice(keys)
            if not isinstance(parent[key], dict | list) or rng.random() < 0.4:
                break
            parent, key = parent[key], None
        action = rng.choice(("replace", "replace", "drop", "add"))
        leaf = copy.deepcopy(rng.choice(leaves))
        if action == "add" or key is None:
            if isinstance(parent, dict):
                parent[rng.choice(("extra", "temperature", "num_critiques", "domain"))] = leaf
            else:
                parent.append(leaf)
        elif action == "drop":
            del parent[key]
        else:
            parent[key] = leaf
    text = json.dumps(body)  # NaN and Infinity as Python writes them; surrogates as \\u escapes
    text = text.replace('"NaN"', "NaN").replace('"Infinity"', "Infinity")
    return path, text.encode()


def test_fuzzed_requests_never_get_a_5xx_and_the_server_keeps_serving(url):
    rng = random.Random("criticrm-serve")
    with httpx.Client(base_url=url, timeout=60) as http:
        for case in range(300):
            path, body = fuzzed_body(rng)
            if case % 10 == 9:  # a tenth: cut, or as another content type
                body = body[:rng.randrange(len(body))] if case % 20 == 9 else body
                headers = {"content-type": "text/plain" if case % 20 == 19 else JSON}
            else:
                headers = {"content-type": JSON}
            reply = http.post(path, content=body, headers=headers)
            assert reply.status_code < 500, (path, body, reply.text)
            if reply.status_code == 200:
                rewards = reply.json().get("rewards") or [r["reward"] for r in reply.json()["results"]]
                assert all(r is None or math.isfinite(r) for r in rewards), (path, body)
            else:
                assert reply.json()["detail"], (path, body)
        assert http.post("/v1/score", json={"items": [ITEM]}).status_code == 200
    assert stats(url)["failed_requests"] == 0


def test_settings_no_request_could_use_stop_the_server_at_start_up(models, capsys):
    """The model has no saved reward statistics, so --normalize could only ever fail."""
    assert main(["serve", "--model", str(models["critic"]), "--normalize", "--device", "cpu"]) == 2
    assert "normalize needs the reward mean/std saved with the model" in capsys.readouterr().err


def test_full_queue_answers_503_with_retry_after(models):
    with serving(models["critic"], max_queue=4, max_items_per_request=4, max_wait_ms=1500,
                 max_batch_size=64) as url:
        replies = []
        waiting = [threading.Thread(target=lambda: replies.append(
            httpx.post(f"{url}/v1/score", json={"items": [ITEM, ITEM]}, timeout=60))) for _ in range(2)]
        for thread in waiting:
            thread.start()
        deadline = time.monotonic() + 10
        while stats(url)["queued_items"] < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        full = httpx.post(f"{url}/v1/score", json={"items": [ITEM]})
        assert full.status_code == 503 and "busy" in full.json()["detail"]
        assert int(full.headers["retry-after"]) >= 1
        for thread in waiting:
            thread.join(60)
        assert [r.status_code for r in replies] == [200, 200]
        assert stats(url)["rejected_queue_full"] == 1


def test_request_not_scored_in_time_gets_504(models):
    with serving(models["critic"], max_wait_ms=2000, max_batch_size=64, request_timeout_s=0.3) as url:
        started = time.monotonic()
        reply = httpx.post(f"{url}/v1/score", json={"items": [ITEM]})
        assert reply.status_code == 504 and "request_timeout_s" in reply.json()["detail"]
        assert time.monotonic() - started < 1.5
        assert httpx.get(f"{url}/health").status_code == 200


def test_token_auth_and_a_bad_input_failing_only_its_own_request(models):
    with serving(models["standard"], token="s3cret", max_wait_ms=300) as url:
        assert httpx.get(f"{url}/health").status_code == 200  # open for liveness probes
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            reply = httpx.post(f"{url}/v1/score", json={"items": [ITEM]}, headers=headers)
            assert reply.status_code == 401 and "bearer token" in reply.json()["detail"]
            assert reply.headers["www-authenticate"] == "Bearer"
        malformed = httpx.post(f"{url}/v1/score", content=b"{", headers={"content-type": JSON})
        assert malformed.status_code == 401  # auth comes before anything is parsed

        replies = {}

        def send(name, response):
            with RewardClient(url, token="s3cret") as client:
                try:
                    replies[name] = client.score([("Say hi.", response)])
                except RewardServerError as error:
                    replies[name] = error

        # merged into one batch: the over-long response makes the scorer raise; only its request fails
        threads = [threading.Thread(target=send, args=("long", "word " * 300)),
                   threading.Thread(target=send, args=("short", "Hi!"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert isinstance(replies["long"], RewardServerError) and replies["long"].status == 422
        assert "max_length=256" in replies["long"].detail
        [result] = replies["short"]
        assert result["spread"] == 0.0 and result["critiques"] == []  # standard mode: no critiques
        with RewardClient(url, token="s3cret") as client:
            info = client.info()
            assert info["mode"] == "standard" and info["server"]["auth"] is True
            assert info["stats"]["failed_requests"] == 1
            assert client.health() == {"status": "ok"}


# ---- the command: startup errors, graceful shutdown -------------------------------------------------------


def test_serve_command_rejects_a_missing_or_wrong_model(tmp_path, capsys):
    assert main(["serve"]) == 2
    assert "pass --model DIR" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path)]) == 2
    assert "not a criticrm reward-model folder" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--max-queue", "8"]) == 2  # below max_items_per_request
    assert "max_items_per_request" in capsys.readouterr().err


def test_sigterm_stops_accepting_finishes_the_request_in_flight_and_exits(models, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "criticrm", "serve", "--model", str(models["critic"]),
               "--port", str(port), "--device", "cpu", "--max-new-tokens", "8", "--max-wait-ms", "3000",
               "--max-batch-size", "64"]
    log = tmp_path / "server.log"
    auth = {"Authorization": "Bearer t0k"}
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stderr=stderr,
                                   env={**os.environ, "OMP_NUM_THREADS": "1", "CRITICRM_SERVER_TOKEN": "t0k"})
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        assert httpx.get(f"{url}/v1/info").status_code == 401  # the token comes from the environment
        replies = []
        in_flight = threading.Thread(target=lambda: replies.append(
            httpx.post(f"{url}/v1/score", json={"items": [ITEM]}, headers=auth, timeout=60)))
        in_flight.start()
        while stats(url, auth)["queued_requests"] < 1:  # it waits up to 3 s for company
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        refused = False
        for _ in range(100):  # the listening socket closes at once, while the request is still waiting
            try:
                httpx.get(f"{url}/health", timeout=1)
            # refused; or, when the kernel had queued the connection just before the socket closed, dropped
            # unanswered (seen once, in a clean-clone run of 2026-11-30): either way no new request is served
            except (httpx.ConnectError, httpx.RemoteProtocolError):
                refused = True
                break
            time.sleep(0.02)
        assert refused
        in_flight.join(60)
        [reply] = replies
        assert reply.status_code == 200 and reply.json()["results"][0]["reward"] is not None
        assert process.wait(60) == 0
        assert "criticrm serve: stopped" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
