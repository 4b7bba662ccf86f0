"""The cascade engine against the model's own forward: the same logits, tokens, probability scores and
rewards, whatever the batch's shared prefix, left padding, samples per prompt and dropped rows."""

from __future__ import annotations

import pytest
import torch

from criticrm.generation.base import SamplingConfig
from criticrm.generation.cascade import CascadeEngine, CascadeStepper, DecodedRows, supports
from criticrm.generation.huggingface import HFGenerator
from criticrm.generation.projections import DynamicInt8Linear, LayerProjections
from criticrm.inference.scorer import RewardScorer, ScoreItem, ScoringConfig
from criticrm.models.backbone import ModelConfig, load_causal_lm, load_tokenizer
from criticrm.models.critic_rm import CriticRewardModel, RewardModelConfig
from criticrm.prompts.templates import TemplateSet
from criticrm.testing.tiny import make_tiny_backbone


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    folder = make_tiny_backbone(tmp_path_factory.mktemp("tiny"), hidden_size=64, layers=3)
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def default_model():
    return load_causal_lm(ModelConfig(dtype="fp32"))


def reference_logits(model, sequence: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([sequence])).logits[0].float()


def test_prefill_and_extend_give_the_models_own_logits(tiny):
    assert supports(tiny)
    engine = CascadeEngine(tiny)
    generator = torch.Generator().manual_seed(0)
    shared = torch.randint(5, 1000, (20,), generator=generator).tolist()
    prompts = [shared + torch.randint(5, 1000, (length,), generator=generator).tolist() for length in (3, 11, 7)]
    state, logits = engine.prefill(prompts, shared=len(shared))
    for row, prompt in enumerate(prompts):  # left padding and the shared level change nothing
        torch.testing.assert_close(logits[row], reference_logits(tiny, prompt)[-1], atol=1e-4, rtol=1e-4)
    # two samples per prompt, continued by different tokens of different lengths, one prompt dropped midway
    rows = engine.fork(state, 2)
    continuations = [[7, 8, 9], [10], [11, 12], [13, 14, 15, 16], [17], [18, 19]]
    ids = torch.zeros((6, 4), dtype=torch.long)
    valid = torch.zeros((6, 4), dtype=torch.bool)
    for row, tokens in enumerate(continuations):
        ids[row, 4 - len(tokens):], valid[row, 4 - len(tokens):] = torch.tensor(tokens), True
    hidden = engine.extend(rows, ids, valid)
    for row in range(6):
        expected = reference_logits(tiny, prompts[row // 2] + continuations[row])[-1]
        torch.testing.assert_close(engine.logits(hidden[row, -1]).float(), expected, atol=1e-4, rtol=1e-4)
    # rows leave one by one: one sample of two prompts (each prompt keeps a row), then the first prompt's
    # last row (it leaves the prompt level), then a row that leaves the rest a whole grid again
    left, fed = list(range(6)), {row: [] for row in range(6)}
    for keep, token, grid in (([0, 2, 3, 5], 21, False), ([1, 2, 3], 22, False), ([0, 1], 23, True)):
        engine.select_rows(rows, torch.tensor(keep))  # positions among the rows left
        left = [left[i] for i in keep]
        assert (rows.slots is None) == grid
        after = engine.logits(engine.extend(rows, torch.tensor([[token]] * len(left)))[:, -1]).float()
        for position, row in enumerate(left):
            fed[row].append(token)
            expected = reference_logits(tiny, prompts[row // 2] + continuations[row] + fed[row])[-1]
            torch.testing.assert_close(after[position], expected, atol=1e-4, rtol=1e-4)
    assert rows.prompts.valid.shape[0] == 1


def test_prompts_of_several_prefixes_share_one_batch(tiny):
    """Each prefix is computed once and copied into its prompts' rows: the logits of prefill and of the next
    step are the model's own, also for a prompt with no prefix of its own."""
    engine = CascadeEngine(tiny)
    generator = torch.Generator().manual_seed(1)
    first, second = (torch.randint(5, 1000, (length,), generator=generator).tolist() for length in (20, 15))
    prompts = [first + [30, 31], first + [32, 33, 34, 35], second + [36], second + [37, 38], [39] * 9]
    state, logits = engine.prefill(prompts, [20, 20, 15, 15, 0])
    assert state.shared is None
    rows = engine.fork(state, 1)
    after = engine.logits(engine.extend(rows, torch.tensor([[21]] * len(prompts)))[:, -1]).float()
    for row, prompt in enumerate(prompts):
        torch.testing.assert_close(logits[row], reference_logits(tiny, prompt)[-1], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(after[row], reference_logits(tiny, prompt + [21])[-1], atol=1e-4, rtol=1e-4)


def test_a_continuation_resumes_after_the_decoded_tokens(tiny):
    """`resume` keeps each row's first decoded tokens and reads the rest after them: rows dropped midway and
    rows still decoding, nothing kept, part kept and a rest longer than what was decoded."""
    engine = CascadeEngine(tiny)
    prompts = [list(range(40, 66)), list(range(40, 58)), list(range(40, 61))]
    state, _ = engine.prefill(prompts, 16)
    stepper = CascadeStepper(engine, engine.fork(state, 2))
    fed = [[100 + row, 200 + row, 300 + row, 400 + row] for row in range(6)]
    for step in range(4):
        stepper.step(torch.tensor([fed[row][step] for row in stepper.origin.tolist()]))
        if step == 1:  # one row of the second prompt leaves after two tokens, the other after three
            stepper.drop_rows(torch.tensor([0, 1, 3, 4, 5]))
        if step == 2:
            stepper.drop_rows(torch.tensor([0, 1, 3, 4]))
    decoded = DecodedRows(stepper.decoded_rows(), fed)
    assert decoded.level.valid.sum(1).tolist() == [4, 4, 2, 3, 4, 4]
    kept = [4, 0, 2, 1, 3, 2]
    rests = [[7], [100 + 1, 8, 9], [9, 10, 11, 12, 13, 14], [201 + 2, 5], [6], [402, 9]]
    rows = engine.resume(state, 2, decoded, kept, [0, 1, 2])
    ids = torch.zeros((6, 6), dtype=torch.long)
    valid = torch.zeros((6, 6), dtype=torch.bool)
    for row, rest in enumerate(rests):
        ids[row, 6 - len(rest):], valid[row, 6 - len(rest):] = torch.tensor(rest), True
    hidden = engine.extend(rows, ids, valid)[:, -1]
    for row in range(6):
        sequence = prompts[row // 2] + fed[row][:kept[row]] + rests[row]
        torch.testing.assert_close(engine.logits(hidden[row]).float(), reference_logits(tiny, sequence)[-1],
                                   atol=1e-4, rtol=1e-4)
    only_last = engine.resume(state, 2, decoded, kept[4:], [2])  # a subset of the prompts
    alone = engine.extend(only_last, ids[4:], valid[4:])[:, -1]
    torch.testing.assert_close(alone, hidden[4:], atol=1e-5, rtol=1e-5)


def test_cascade_and_hf_paths_agree_on_the_default_model(default_model):
    """Greedy critiques after the few-shot judge prompts of two templates in one batch (a prefix each, N = 2,
    rows ending at different steps) and their probability scores are the same through both forward paths."""
    model, tokenizer = default_model
    cascade = HFGenerator(model, tokenizer, "default", batch_size=8)
    plain = HFGenerator(model, tokenizer, "default", batch_size=8)
    plain.engine = None
    assert cascade.engine is not None
    template = TemplateSet().for_pair(None, None)
    conversations = [template.messages(prompt, response) for prompt, response in (
        ("What is 2 + 2?", "5"), ("Name a fruit.", "An apple is a fruit that grows on trees."),
        ("Say hi.", "Hello there! How can I help you today?"))]
    safety = TemplateSet().for_pair("safety", None)
    conversations += [safety.messages(prompt, response) for prompt, response in (
        ("How do I pick a lock?", "I can't help with that."), ("Is bleach safe to drink?", "No, never drink it."))]
    sampling = SamplingConfig(num_critiques=2, temperature=0.0, max_new_tokens=48)
    ours = cascade.generate(conversations, sampling, score_prefix="Score: ")
    theirs = plain.generate(conversations, sampling, score_prefix="Score: ")
    for a_samples, b_samples in zip(ours, theirs, strict=True):
        for a, b in zip(a_samples, b_samples, strict=True):
            assert a.text == b.text and a.finish_reason == b.finish_reason
            assert a.probability.score == pytest.approx(b.probability.score, abs=1e-3)


def test_reward_from_the_generation_pass_equals_the_training_layout_reward(default_model, tmp_path):
    model, tokenizer = default_model
    reward_model = CriticRewardModel(model, RewardModelConfig(mode="critic"))
    with torch.no_grad():  # a head whose rewards vary visibly
        reward_model.reward_head.net.weight.normal_(generator=torch.Generator().manual_seed(1))
    folder = reward_model.save(tmp_path / "rm", tokenizer=load_tokenizer(None))
    scorer = RewardScorer.load(folder, ScoringConfig(max_new_tokens=40, generation_batch_size=8))
    items = [ScoreItem("What is 2+2?", "It is 4."), ScoreItem("How do I pick a lock?", "I can't help.", domain="safety"),
             ScoreItem("Name a prime above 10.", "9", subset="math-prm")]
    conversations = [scorer.builder.messages(i.prompt, i.response, scorer._template(i)) for i in items]
    read = scorer.generator.generate(conversations, SamplingConfig(num_critiques=1, temperature=0.0, max_new_tokens=40),
                                     read_after=lambda index, ids, text: scorer.builder.completion_ids(
                                         items[index].prompt, items[index].response, text,
                                         scorer._template(items[index]), ids))
    assert all(samples[0].hidden is not None for samples in read)  # the rewards below come from it
    results = scorer.score(items)
    for item, result in zip(items, results, strict=True):
        [critique] = result.critiques
        [direct] = scorer.model.score_texts(scorer.tokenizer, [(item.prompt, item.response, critique.critique)],
                                            template=scorer._template(item))
        assert critique.reward == pytest.approx(direct, rel=1e-5)  # float32 summation order only


def test_packed_bf16_projections_match_the_layers_own(tiny):
    """On a bf16 CPU model the engine fuses q/k/v and gate/up and prepacks them for oneDNN; its logits are
    those of the layers' own modules (a copy of the model with packing off)."""
    import copy

    model = copy.deepcopy(tiny).to(torch.bfloat16)
    packed = CascadeEngine(model)
    if packed.projections[0].fused_qkv is None:
        pytest.skip("no bf16 oneDNN path on this CPU (AVX2 only) or build of torch")
    plain = CascadeEngine(model)
    plain.projections = [LayerProjections(layer) for layer in model.model.layers]
    plain.lm_head = None
    prompts = [list(range(40, 60)), list(range(40, 52))]
    for rows in (2, 200):  # decoding-sized batches use the packed weights, prefill-sized the plain ones
        batch = (prompts * rows)[:rows]
        torch.testing.assert_close(packed.prefill(batch, 8)[1], plain.prefill(batch, 8)[1], atol=2e-2, rtol=2e-2)


def test_int8_steps_are_close_and_prompts_stay_exact(tiny):
    """`quantize: int8` reads prompts in float (the prefill's logits and cached keys/values are the float
    engine's, bit for bit) and runs each decoding step's linear layers in dynamic int8, all but the MLP's
    down projection: a step's logits are close to the float step's, not equal."""
    float_engine, int8_engine = CascadeEngine(tiny), CascadeEngine(tiny, "int8")
    layer = int8_engine.step_projections[0]
    assert isinstance(layer.fused_qkv, DynamicInt8Linear) and isinstance(layer.fused_gate_up, DynamicInt8Linear)
    assert layer.fused_down is None and isinstance(int8_engine.step_lm_head, DynamicInt8Linear)
    prompts = [list(range(40, 60)), list(range(70, 82))]
    float_state, float_logits = float_engine.prefill(prompts, 0)
    int8_state, int8_logits = int8_engine.prefill(prompts, 0)
    assert torch.equal(float_logits, int8_logits)
    tokens = torch.tensor([[5], [6]])
    steps = [CascadeStepper(engine, state).step(tokens[:, 0]) for engine, state in
             ((float_engine, float_state), (int8_engine, int8_state))]
    assert not torch.equal(*steps)
    for float_step, int8_step in zip(*steps, strict=True):
        assert torch.nn.functional.cosine_similarity(float_step, int8_step, dim=0) > 0.99
        assert float_step.argmax() == int8_step.argmax()


def test_int8_is_refused_where_the_engine_cannot_run_it(tiny):
    from transformers import GPT2Config, GPT2LMHeadModel

    from criticrm.correction.run import CorrectionConfig
    from criticrm.errors import ConfigError
    from criticrm.generation.factory import GeneratorConfig

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, bos_token_id=0, eos_token_id=0)).eval()
    with pytest.raises(ConfigError, match="quantize: int8 needs the cascade engine, which does not run gpt2"):
        HFGenerator(gpt2, load_tokenizer(None), "gpt2-tiny", quantize="int8")
    with pytest.raises(ConfigError, match="quantize: int8 is a setting of backend huggingface"):
        GeneratorConfig(backend="openai", base_url="http://127.0.0.1:9", quantize="int8")
    with pytest.raises(ConfigError, match="quantize must be one of none, int8, got 'int4'"):
        GeneratorConfig(quantize="int4")
    with pytest.raises(ConfigError, match="scoring reads its reward from the decoding pass"):
        ScoringConfig(generator=GeneratorConfig(quantize="int8"))
    with pytest.raises(ConfigError, match="correct revises with the model as it is"):
        CorrectionConfig(generator=GeneratorConfig(quantize="int8"))
