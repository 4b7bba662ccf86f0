"""The RLHF adapters, each called exactly as its framework calls it, against real reward servers on loopback.

Each test replays the framework's own calling code (cited), with a real tiny reward model behind a real
uvicorn server (or loaded in process), and checks the rewards against the same model scored directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import importlib.util
import inspect
import json
import random
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

import criticrm.integrations.openrlhf as openrlhf_module
import criticrm.integrations.verl as verl_module
from criticrm.inference.scorer import RewardScorer, ScoreItem, ScoringConfig
from criticrm.integrations.openrlhf import _prompt_end_overlap, response_in_query
from criticrm.integrations.trl import reward_function
from criticrm.serve.app import create_app
from criticrm.serve.config import ServerConfig
from criticrm.serve.runner import make_server, serving_in_thread

SCORING = ScoringConfig(max_new_tokens=8)
TOKEN = "s3cret"
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from criticrm.models.backbone import load_tokenizer
    from criticrm.models.critic_rm import CriticRewardModel
    from criticrm.testing.tiny import make_tiny_backbone

    root = tmp_path_factory.mktemp("adapters")
    backbone = make_tiny_backbone(root / "bb")
    model = CriticRewardModel.from_backbone(str(backbone), mode="critic", head_init_std=1.0)  # wide rewards
    return model.save(root / "critic", tokenizer=load_tokenizer(str(backbone)))


@contextlib.contextmanager
def _server(model_dir: Path, token: str | None):
    config = ServerConfig(port=0, token=token, max_wait_ms=20)
    scorer = RewardScorer.load(model_dir, SCORING, device="cpu")
    with serving_in_thread(make_server(create_app(scorer, config), config, log_level="warning")) as url:
        yield url


@pytest.fixture(scope="module")
def open_url(model_dir):
    """No token: OpenRLHF's HTTP client sends none."""
    with _server(model_dir, None) as url:
        yield url


@pytest.fixture(scope="module")
def locked_url(model_dir):
    with _server(model_dir, TOKEN) as url:
        yield url


@pytest.fixture(scope="module")
def reference(model_dir) -> RewardScorer:
    return RewardScorer.load(model_dir, SCORING, device="cpu")


def _direct(reference: RewardScorer, items: list[ScoreItem]) -> list[float]:
    return [result.reward for result in reference.score(items)]


def _load_by_path(path: str, name: str):
    """As OpenRLHF (`SingleTurnAgentExecutor.__init__`, module name "reward_func") and verl
    (verl/utils/import_utils.py `load_extern_object`) load a reward function file."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- OpenRLHF ------------------------------------------------------------------------------------------------

CHAT_PROMPT = ("<|im_start|>user\nName a colour that the sky can have at noon on a clear day, in one "
               "word.<|im_end|>\n<|im_start|>assistant\n")
CLEAN_CHAT_PROMPT = ("user\nName a colour that the sky can have at noon on a clear day, in one word.\n"
                     "assistant")
# (prompt, query, the prompt and response the reward must be of)
ROLLOUTS = [
    ("Why is the sky blue?", "Why is the sky blue? Rayleigh scattering.", ("Why is the sky blue?", "Rayleigh scattering.")),
    (CHAT_PROMPT, CHAT_PROMPT + "Blue.<|im_end|>", (CLEAN_CHAT_PROMPT, "Blue.")),
    # the prompt was cut from the left to fit the context: the query starts with its last 40 characters
    (CHAT_PROMPT, CHAT_PROMPT[-40:] + "Azure.<|im_end|>", (CLEAN_CHAT_PROMPT, "Azure.")),
    # a decode that did not give the prompt back exactly (a doubled space became one)
    ("What is 2+2?  ", "What is 2+2? 4", ("What is 2+2?", "4")),
]


def test_openrlhf_http_contract_as_openrlhf_calls_it(open_url, reference):
    """OpenRLHF v0.11 `SingleTurnAgentExecutor._fetch_rewards_via_http` (openrlhf/utils/agent.py): one POST
    per rollout, {query, prompts, labels}, no token, a 180 s timeout, raise_for_status, then the JSON's
    rewards/scores/extra_logs become tensors (trainer/ppo_utils/samples_generator.py)."""

    async def fetch(query: str, prompt: str) -> dict:
        async with httpx.AsyncClient(timeout=180) as session:
            response = await session.post(f"{open_url}/get_reward",
                                          json={"query": [query], "prompts": [prompt], "labels": ["label"]})
            response.raise_for_status()
            return response.json()

    async def rollouts():
        return await asyncio.gather(*(fetch(query, prompt) for prompt, query, _ in ROLLOUTS))

    replies = asyncio.run(rollouts())
    expected = _direct(reference, [ScoreItem(*pair) for *_, pair in ROLLOUTS])
    for reply, reward in zip(replies, expected, strict=True):
        rewards_info = reply  # rewards_info_list[0]
        score_value = rewards_info.get("scores")
        info_reward = torch.tensor([rewards_info.get("rewards")])
        assert info_reward.shape == (1, 1) and info_reward.item() == pytest.approx(reward, rel=1e-4, abs=1e-5)
        assert torch.tensor([score_value]).item() == pytest.approx(reward, rel=1e-4, abs=1e-5)
        logs = {key: torch.tensor([value]) for key, value in (rewards_info.get("extra_logs") or {}).items()}
        assert set(logs) == {"reward_spread", "critique_truncated"}


def test_openrlhf_reward_func_file_as_openrlhf_calls_it(locked_url, reference, monkeypatch):
    """`--reward.remote_url FILE.py`: OpenRLHF loads the file by path and calls `reward_func(queries, prompts,
    labels)` in a thread per rollout (`_fetch_rewards_via_func`), then reads rewards/scores/extra_logs and
    turns each extra_logs value into a number with `value.flatten()[0].item()`."""
    monkeypatch.setenv("CRITICRM_URL", locked_url)
    monkeypatch.setenv("CRITICRM_TOKEN", TOKEN)  # the file sends it; OpenRLHF's own HTTP client cannot
    module = _load_by_path(openrlhf_module.__file__, "reward_func")

    async def rollouts():
        return await asyncio.gather(*(asyncio.to_thread(module.reward_func, [query], [prompt], ["label"])
                                      for prompt, query, _ in ROLLOUTS))

    infos = asyncio.run(rollouts())
    expected = _direct(reference, [ScoreItem(*pair) for *_, pair in ROLLOUTS])
    for info, reward in zip(infos, expected, strict=True):
        reward_val, score_val = info.get("rewards"), info.get("scores")
        assert isinstance(reward_val, torch.Tensor) and isinstance(score_val, torch.Tensor)
        assert torch.tensor([reward_val]).item() == pytest.approx(reward, rel=1e-4, abs=1e-5)
        assert torch.equal(score_val, reward_val)
        logs = {key: value.flatten()[0].item() for key, value in info["extra_logs"].items()}
        assert set(logs) == {"reward_spread", "critique_truncated"} and 0.0 <= logs["critique_truncated"] <= 1.0
    # a batch in one call (several chunks when larger than CHUNK), in order
    monkeypatch.setattr(module, "CHUNK", 2)
    batch = module.reward_func([q for _, q, _ in ROLLOUTS], [p for p, _, _ in ROLLOUTS], None)
    assert batch["rewards"].tolist() == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_response_in_query_finds_the_response_however_the_prompt_came_back():
    prompt = "System: be brief.\nUser: What is the capital of France?\nAssistant:"
    assert response_in_query(prompt + " Paris.", prompt) == " Paris."
    assert response_in_query(prompt[25:] + " Paris.", prompt) == " Paris."  # cut from the left
    # a decode changed the prompt's middle: the query is cut where it stops repeating the prompt
    assert response_in_query(prompt.replace("brief", "BRIEF") + " Paris.", prompt).startswith("BRIEF.\nUser")
    assert response_in_query("Completely different text", prompt) == "Completely different text"
    assert response_in_query("", prompt) == "" and response_in_query("x", "") == "x"
    # the overlap of the query's start with the prompt's end, against the quadratic definition
    rng = random.Random(0)
    for _ in range(2000):
        a = "".join(rng.choice("ab") for _ in range(rng.randint(0, 12)))
        b = "".join(rng.choice("ab") for _ in range(rng.randint(0, 12)))
        brute = max(k for k in range(min(len(a), len(b)) + 1) if a[:k] == b[len(b) - k:])
        assert _prompt_end_overlap(a, b) == brute, (a, b)


def test_recipe_server_timeout_is_below_openrlhf_client_timeout():
    """OpenRLHF gives up on a reward request after 180 s (aiohttp.ClientTimeout(total=180) in agent.py): the
    README's recipe must make the server answer (504) before that, and use OpenRLHF's current flag."""
    from criticrm.cli import build_parser
    from criticrm.cli.options import resolve
    from criticrm.cli.serve import SECTIONS

    text = README.read_text()
    code = "\n".join(block.split("\n", 1)[1] for block in text.split("```")[1::2])  # the commands shown
    assert "--reward.remote_url" in code and "--remote_rm_url" not in code  # renamed in OpenRLHF v0.10.2
    [line] = [line for line in code.splitlines() if line.startswith("criticrm serve") and "--request-timeout-s" in line]
    args = build_parser().parse_args(line.split("#")[0].split()[1:])
    assert resolve(args, SECTIONS)[ServerConfig].request_timeout_s < 180


# ---- verl ------------------------------------------------------------------------------------------------------


def _verl_reward_fn(name: str, reward_kwargs: dict):
    """verl/trainer/ppo/reward.py `get_custom_reward_fn`: the function, loaded by path, wrapped in a partial
    that merges `reward_kwargs` (async functions in an async wrapper)."""
    raw_fn = getattr(_load_by_path(verl_module.__file__, "custom_module"), name)

    def call(raw, extra, *args, **kwargs):
        return raw(*args, **{**kwargs, **extra})

    async def call_async(raw, extra, *args, **kwargs):
        return await raw(*args, **{**kwargs, **extra})

    return functools.partial(call_async if inspect.iscoroutinefunction(raw_fn) else call, raw_fn, reward_kwargs)


ROWS = [("gsm8k", "4", "4", {"prompt": "What is 2+2?"}),
        ("hh", "Apple.", None, {"prompt": [{"role": "user", "content": "Name a fruit."}]}),
        ("hh", "Pear.", None, {"question": "Name a pear."})]


@pytest.mark.parametrize("name", ["compute_score", "compute_score_async"])
def test_verl_compute_score_as_the_reward_loop_calls_it(locked_url, reference, monkeypatch, name):
    """verl/experimental/reward_loop/reward_manager/naive.py `run_single`: keyword arguments only, extra_info
    with num_turns and rollout_reward_scores added; a plain function in the loop's executor, an async one
    awaited, many rows at once; `score` read from a dict, every key logged."""
    monkeypatch.setenv("CRITICRM_URL", locked_url)
    monkeypatch.setenv("CRITICRM_TOKEN", TOKEN)
    compute_score = _verl_reward_fn(name, reward_kwargs={})
    assert inspect.iscoroutinefunction(compute_score) == (name == "compute_score_async")

    async def run_single(data_source, solution_str, ground_truth, extra_info):
        kwargs = dict(data_source=data_source, solution_str=solution_str, ground_truth=ground_truth,
                      extra_info={**extra_info, "num_turns": None, "rollout_reward_scores": {}})
        if inspect.iscoroutinefunction(compute_score):
            result = await compute_score(**kwargs)
        else:
            result = await asyncio.get_running_loop().run_in_executor(None, lambda: compute_score(**kwargs))
        assert isinstance(result, dict)
        return result["score"], {key: value for key, value in result.items()}

    async def reward_loop():
        return await asyncio.gather(*(run_single(*row) for row in ROWS))

    outputs = asyncio.run(reward_loop())
    # the data source picks the judge template, as a subset name does (gsm8k: the reasoning template)
    expected = _direct(reference, [ScoreItem("What is 2+2?", "4", subset="gsm8k"),
                                   ScoreItem("Name a fruit.", "Apple.", subset="hh"),
                                   ScoreItem("Name a pear.", "Pear.", subset="hh")])
    assert [score for score, _ in outputs] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert all(isinstance(value, float) for _, info in outputs for value in info.values())
    assert expected[0] != pytest.approx(_direct(reference, [ScoreItem("What is 2+2?", "4")])[0])
    with pytest.raises(ValueError, match="extra_info"):
        asyncio.run(run_single("x", "response", None, {}))


def test_verl_batch_function_and_a_wrong_server(locked_url, reference, monkeypatch):
    monkeypatch.setenv("CRITICRM_URL", locked_url)
    monkeypatch.setenv("CRITICRM_TOKEN", TOKEN)
    module = _load_by_path(verl_module.__file__, "custom_module")
    batch = module.compute_score_batch(*zip(*ROWS, strict=True))
    expected = _direct(reference, [ScoreItem("What is 2+2?", "4", subset="gsm8k"),
                                   ScoreItem("Name a fruit.", "Apple.", subset="hh"),
                                   ScoreItem("Name a pear.", "Pear.", subset="hh")])
    assert [b["score"] for b in batch] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    monkeypatch.delenv("CRITICRM_TOKEN")
    with pytest.raises(RuntimeError, match="HTTP 401"):
        module.compute_score("x", "r", None, extra_info={"prompt": "p"})


# ---- TRL ---------------------------------------------------------------------------------------------------------

STANDARD = (["What is 2+2?", "Name a fruit."], ["4", "Apple."])
CONVERSATIONAL = ([[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
                   [{"role": "user", "content": "Name a fruit."}]],
                  [[{"role": "assistant", "content": "4"}], [{"role": "assistant", "content": "Apple."}]])
EXPECTED_ITEMS = [ScoreItem("System: Be brief.\n\nUser: What is 2+2?", "4", subset="gsm8k"),
                  ScoreItem("Name a fruit.", "Apple.", subset="hh")]


def _calculate_rewards(reward_func, prompts, completions, columns: dict) -> tuple[torch.Tensor, dict]:
    """trl/trainer/grpo_trainer.py `_calculate_rewards` for one custom reward function: every dataset column
    but prompt/completion, trainer_state, log_extra, log_metric as keyword arguments; None -> NaN; a
    coroutine function awaited (on TRL's own loop; here asyncio.run)."""
    logged = {"extra": {}, "metrics": {}}
    reward_kwargs = {**columns, "trainer_state": object(),
                     "log_extra": lambda column, values: logged["extra"].__setitem__(column, values),
                     "log_metric": lambda name, value: logged["metrics"].__setitem__(name, value)}
    completion_ids = [[1, 2, 3] for _ in completions]
    if inspect.iscoroutinefunction(reward_func):
        output = asyncio.run(reward_func(prompts=prompts, completions=completions, completion_ids=completion_ids,
                                         **reward_kwargs))
    else:
        output = reward_func(prompts=prompts, completions=completions, completion_ids=completion_ids,
                             **reward_kwargs)
    output = [reward if reward is not None else torch.nan for reward in output]
    return torch.tensor(output, dtype=torch.float32), logged


def _callable_name(func) -> str:
    """trl/trainer/utils.py `get_callable_name`: the name TRL logs a reward function under."""
    while isinstance(func, functools.partial):
        func = func.func
    return getattr(func, "__name__", type(func).__name__)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("source", ["server", "local"])
@pytest.mark.parametrize("data", [STANDARD, CONVERSATIONAL], ids=["standard", "conversational"])
def test_trl_reward_function_as_grpo_calls_it(locked_url, model_dir, reference, source, asynchronous, data):
    func = (reward_function(locked_url, token=TOKEN, asynchronous=asynchronous) if source == "server"
            else reward_function(model=model_dir, scoring=SCORING, device="cpu", asynchronous=asynchronous))
    assert inspect.iscoroutinefunction(func) == asynchronous and _callable_name(func).startswith("criticrm_reward")
    prompts, completions = data
    columns = {"subset": ["gsm8k", "hh"], "ground_truth": ["4", None]}
    rewards, logged = _calculate_rewards(func, prompts, completions, columns)
    items = EXPECTED_ITEMS if data is CONVERSATIONAL else [ScoreItem(p, c, subset=s) for p, c, s in
                                                         zip(*STANDARD, columns["subset"], strict=True)]
    assert rewards.tolist() == pytest.approx(_direct(reference, items), rel=1e-4, abs=1e-5)
    assert len(logged["extra"]["criticrm_critique"]) == 2 and "criticrm/reward_spread" in logged["metrics"]


def test_trl_reward_function_refuses_mixed_formats_and_bad_arguments(locked_url):
    func = reward_function(locked_url, token=TOKEN)
    with pytest.raises(ValueError, match="both strings"):
        func(prompts=["q"], completions=[[{"role": "assistant", "content": "a"}]])
    with pytest.raises(ValueError, match="text content"):
        func(prompts=[[{"role": "user", "content": [{"type": "image"}]}]],
             completions=[[{"role": "assistant", "content": "a"}]])
    with pytest.raises(ValueError, match="url= .* or model="):
        reward_function()


# ---- what the adapters import --------------------------------------------------------------------------------------


def test_path_loaded_adapters_need_only_the_standard_library():
    """OpenRLHF and verl run these files in their own environments: nothing beyond the standard library."""
    code = ("import json, sys\n"
            "before = set(sys.modules)\n"
            "import criticrm.integrations.openrlhf, criticrm.integrations.verl\n"
            "print(json.dumps(sorted(m for m in set(sys.modules) - before\n"
            "                        if m.split('.')[0] not in sys.stdlib_module_names | {'criticrm'})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_the_old_reward_func_path_still_works_with_a_deprecation_warning():
    sys.modules.pop("criticrm.serve.reward_func", None)
    with pytest.warns(DeprecationWarning, match="criticrm.integrations"):
        old = importlib.import_module("criticrm.serve.reward_func")
    assert old.reward_func is openrlhf_module.reward_func and old.compute_score is verl_module.compute_score
    assert old.compute_score_batch is verl_module.compute_score_batch
