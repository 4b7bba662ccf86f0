"""GPU readiness check: correctness and throughput of generation, scoring and training at real model shapes.

For a lent accelerator with nothing beyond torch / transformers / peft / accelerate installed and no way
to download a model: every model is randomly initialised with a real architecture's shapes (SmolLM2-135M,
Llama-3.2-1B, Llama-3-8B). Random weights never write an end-of-turn token, so every critique has exactly
`--new-tokens` tokens: the throughput of a fixed workload.

For each shape it measures
- correctness: the cascade engine's next-token logits against the model's own forward (max |difference|),
  with a shared prefix, left padding and several samples per prompt;
- generation: the critique stage's layout (a shared few-shot prefix, each prompt's own text, N samples each)
  decoded by the engine, generated tokens/s (prefill included);
- scoring: a Critic-RM's reward read after each critique from the generation pass's KV cache, pairs/s;
- training: joint Critic-RM steps (critique cross-entropy + Bradley-Terry) with AdamW, trained tokens/s
  (full fine-tuning up to 1B, LoRA for 8B).

    python bench/gpu_check.py --out bench/results/gpu_check.json            # on the GPU machine (< 8 min)
    python bench/gpu_check.py --tiny --out /tmp/gpu_check.json              # CPU smoke run (CI)

Run with `PYTHONPATH=src` where criticrm is not installed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from criticrm.generation.cascade import CascadeEngine, CascadeStepper, left_pad
from criticrm.generation.decoding import sample_tokens
from criticrm.models.critic_rm import CriticRewardModel, RewardModelConfig
from criticrm.training.losses import bradley_terry_losses

SHAPES = {  # hidden, layers, heads, kv heads, intermediate, vocab
    "smollm2-135m": (576, 30, 9, 3, 1536, 49152),
    "llama-3.2-1b": (2048, 16, 32, 8, 8192, 128256),
    "llama-3-8b": (4096, 32, 32, 8, 14336, 128256),
    "tiny": (64, 2, 4, 2, 128, 1024),
}


def build(shape: str, device: torch.device, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, kv_heads, intermediate, vocab = SHAPES[shape]
    config = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, intermediate_size=intermediate, vocab_size=vocab,
                         max_position_embeddings=8192, tie_word_embeddings=shape != "llama-3-8b")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def workload(vocab: int, prompts: int, shared: int, own: int, seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    prefix = torch.randint(10, vocab, (shared,), generator=generator).tolist()
    return [prefix + torch.randint(10, vocab, (own + 7 * i,), generator=generator).tolist() for i in range(prompts)]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.inference_mode()
def check_logits(model, device: torch.device) -> float:
    """Max |engine - forward| over next-token logits, relative to the logits' scale."""
    engine = CascadeEngine(model)
    prompts = workload(model.config.vocab_size, 3, 24, 5)
    state, logits = engine.prefill(prompts, shared=24)
    rows = engine.fork(state, 2)
    continuation = torch.randint(10, model.config.vocab_size, (6, 3), device=device)
    after = engine.logits(engine.extend(rows, continuation)[:, -1]).float()
    worst, scale = 0.0, 0.0
    for row in range(6):
        sequence = torch.tensor([prompts[row // 2]], device=device)
        reference = model(input_ids=torch.cat([sequence, continuation[row:row + 1]], dim=1)).logits[0, -1].float()
        worst = max(worst, float((after[row] - reference).abs().max()))
        scale = max(scale, float(reference.abs().max()))
    for row, prompt in enumerate(prompts):
        reference = model(input_ids=torch.tensor([prompt], device=device)).logits[0, -1].float()
        worst = max(worst, float((logits[row] - reference).abs().max()))
    return worst / max(scale, 1e-6)


@torch.inference_mode()
def generation(model, device: torch.device, prompts: int, n: int, new_tokens: int, shared: int, own: int) -> dict:
    engine = CascadeEngine(model)
    batch = workload(model.config.vocab_size, prompts, shared, own)
    synchronize(device)
    started = time.perf_counter()
    state, logits = engine.prefill(batch, shared=shared)
    rows = engine.fork(state, n)
    tokens = sample_tokens(logits.repeat_interleave(n, dim=0), CascadeStepper(engine, rows), max_new_tokens=new_tokens,
                           eos_ids=[-1], temperature=0.8, top_p=0.95)
    synchronize(device)
    seconds = time.perf_counter() - started
    generated = sum(len(t) for t in tokens)
    return {"rows": prompts * n, "generated_tokens": generated, "seconds": round(seconds, 3),
            "tokens_per_s": round(generated / seconds, 1)}


@torch.inference_mode()
def scoring(model, device: torch.device, pairs: int, new_tokens: int, own: int) -> dict:
    """m = 1 greedy critiques of both responses of `pairs` pairs, each reward read from the generation pass."""
    reward_model = CriticRewardModel(model, RewardModelConfig(mode="critic")).to(device)
    engine = CascadeEngine(model)
    batch = workload(model.config.vocab_size, 2 * pairs, 16, own, seed=1)
    synchronize(device)
    started = time.perf_counter()
    state, logits = engine.prefill(batch, shared=16)
    rows = engine.fork(state, 1)
    critiques = sample_tokens(logits, CascadeStepper(engine, rows), max_new_tokens=new_tokens, eos_ids=[-1])
    read = engine.fork(state, 1)
    ids, valid = left_pad([c + [2] for c in critiques], device)
    hidden = engine.extend(read, ids, valid)[:, -1]
    rewards = reward_model.reward_head(hidden.float())
    synchronize(device)
    seconds = time.perf_counter() - started
    assert torch.isfinite(rewards).all()
    return {"pairs": pairs, "seconds": round(seconds, 3), "pairs_per_s": round(pairs / seconds, 3)}


def training(model, device: torch.device, shape: str, steps: int, batch: int, length: int, lora: bool) -> dict:
    reward_model = CriticRewardModel(model, RewardModelConfig(mode="critic")).to(device)
    if lora:
        reward_model.add_lora(r=16, alpha=32)
    reward_model.train()
    if device.type == "cuda":
        reward_model.activation_checkpointing_enable()
    parameters = [p for p in reward_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-5)
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(10, vocab, (2 * batch, length), generator=generator).to(device)
    critique = torch.arange(length // 2, length - 1, device=device)  # the second half is the "critique"
    lm_positions = (torch.arange(2 * batch, device=device)[:, None] * length + critique[None]).reshape(-1)
    targets = ids[:, length // 2 + 1:].reshape(-1)
    seconds, trained = 0.0, 0
    for step in range(steps + 1):  # step 0 warms up (allocations, kernel selection)
        synchronize(device)
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = reward_model(ids, lm_positions=lm_positions)
            critique_loss = torch.nn.functional.cross_entropy(out.lm_logits.float(), targets)
            reward_loss = bradley_terry_losses(out.rewards[:batch], out.rewards[batch:]).mean()
            loss = 0.5 * critique_loss + 0.5 * reward_loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if step:
            seconds += time.perf_counter() - started
            trained += ids.numel()
    assert torch.isfinite(loss)
    return {"method": "LoRA r16" if lora else "full fine-tuning", "sequences": 2 * batch, "length": length,
            "steps": steps, "seconds": round(seconds, 3), "trained_tokens_per_s": round(trained / seconds, 1),
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1) if device.type == "cuda" else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny model on whatever device there is (CI smoke run)")
    parser.add_argument("--shapes", nargs="+", default=None, choices=list(SHAPES))
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    shapes = args.shapes or (["tiny"] if args.tiny else ["smollm2-135m", "llama-3.2-1b", "llama-3-8b"])
    new_tokens = 8 if args.tiny else args.new_tokens
    report = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "dtype": str(dtype),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "new_tokens": new_tokens, "shapes": {}}
    for shape in shapes:
        started = time.perf_counter()
        model = build(shape, device, dtype)
        small = args.tiny or shape == "tiny"
        result = {"logit_error": check_logits(model, device)}
        result["generation"] = generation(model, device, prompts=4 if small else 64, n=4, new_tokens=new_tokens,
                                          shared=32 if small else 400, own=16 if small else 200)
        result["scoring"] = scoring(model, device, pairs=4 if small else 128, new_tokens=new_tokens,
                                    own=16 if small else 400)
        result["training"] = training(model, device, shape, steps=1 if small else 5, batch=2 if small else 4,
                                      length=32 if small else 1024, lora=shape == "llama-3-8b")
        result["seconds"] = round(time.perf_counter() - started, 1)
        report["shapes"][shape] = result
        print(shape, json.dumps(result), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
