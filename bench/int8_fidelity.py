"""How far `quantize: int8` moves what a decoding step samples from, against the float model and against bf16.

The default backbone in float32 is the reference. The first `--pairs` pairs of `--data` give 2 judge prompts
each (chosen and rejected responses, their templates with few-shot examples); the reference decodes
`--steps` greedy tokens after each. Every variant then reads the same prompts and is fed the same tokens
(teacher forcing), and each step's next-token distribution is compared with the reference's:
KL(reference || variant) in nats, and whether the two pick the same top token.

Variants: `bf16` (the model cast to bf16: the error this project already accepts), `int8` (the shipped
setting: steps' linear layers in dynamic int8 except the MLP's down projection, prompts in float), `int8-all`
(the down projection quantized too: why it is left out) and `int8-no-head` (the LM head left in float).

    python bench/int8_fidelity.py --out bench/results/int8_fidelity.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench_generation import conversations
from criticrm.generation.cascade import CascadeEngine, CascadeStepper
from criticrm.generation.huggingface import HFGenerator
from criticrm.generation.projections import fused_linear
from criticrm.models.backbone import ModelConfig, load_causal_lm
from machine import describe


def engines(model: torch.nn.Module) -> dict[str, CascadeEngine]:
    shipped = CascadeEngine(model, "int8")
    every_layer = CascadeEngine(model, "int8")
    every_layer.step_projections = [replace(projections, fused_down=fused_linear([layer.mlp.down_proj], "int8"))
                                    for projections, layer in zip(every_layer.step_projections, model.model.layers,
                                                                  strict=True)]
    float_head = CascadeEngine(model, "int8")
    float_head.step_lm_head = float_head.lm_head
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    return {"bf16": CascadeEngine(bf16), "int8": shipped, "int8-all": every_layer, "int8-no-head": float_head}


@torch.inference_mode()
def decode(engine: CascadeEngine, prompts: list[list[int]], shared: int, steps: int,
           forced: list[torch.Tensor] | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Log-probabilities of `steps` next tokens after each prompt (the prefill's included); the tokens fed
    are `forced`, or the engine's own greedy choices."""
    state, logits = engine.prefill(prompts, shared)
    stepper = CascadeStepper(engine, state)
    log_probs, tokens = [logits.float().log_softmax(-1)], []
    for index in range(steps):
        token = forced[index] if forced is not None else log_probs[-1].argmax(-1)
        tokens.append(token)
        log_probs.append(stepper.step(token).log_softmax(-1))
    return log_probs, tokens


def compare(reference: list[torch.Tensor], other: list[torch.Tensor]) -> dict:
    ref, new = torch.stack(reference[1:]), torch.stack(other[1:])  # the decoding steps
    kl = (ref.exp() * (ref - new)).sum(-1)
    prefill_kl = (reference[0].exp() * (reference[0] - other[0])).sum(-1)
    return {"step_kl_mean": round(kl.mean().item(), 5), "step_kl_p95": round(kl.flatten().quantile(0.95).item(), 5),
            "step_top1_agreement": round((ref.argmax(-1) == new.argmax(-1)).float().mean().item(), 4),
            "prefill_kl_mean": round(prefill_kl.mean().item(), 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "dev.jsonl"))
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--out", type=Path, default=Path("bench/results/int8_fidelity.json"))
    args = parser.parse_args()

    model, tokenizer = load_causal_lm(ModelConfig(dtype="fp32"))
    generator = HFGenerator(model, tokenizer, "SmolLM2-135M-Instruct")
    convs = conversations(args.data, args.pairs)
    templates: dict[str, list[list[int]]] = {}
    for conversation in convs:  # one template per batch, as the critique stage batches them
        templates.setdefault(conversation[0]["content"], []).append(generator.encode(conversation))
    variants = engines(model)
    per_variant: dict[str, list[dict]] = {name: [] for name in variants}
    started = time.perf_counter()
    for prompts in templates.values():
        shared = HFGenerator._shared_length(prompts)
        reference, tokens = decode(generator.engine, prompts, shared, args.steps)
        for name, engine in variants.items():
            log_probs, _ = decode(engine, prompts, shared, args.steps, forced=tokens)
            per_variant[name].append({**compare(reference, log_probs), "rows": len(prompts)})
    results = {}
    for name, parts in per_variant.items():
        rows = sum(p["rows"] for p in parts)
        results[name] = {key: round(sum(p[key] * p["rows"] for p in parts) / rows, 6)
                         for key in parts[0] if key != "rows"}
    report = {"machine": describe(), "command": "python bench/int8_fidelity.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()), "prompts": len(convs),
        "templates": len(templates), "steps": args.steps, "seconds": round(time.perf_counter() - started, 1),
        "variants": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, result in results.items():
        print(f"{name:14s} " + "  ".join(f"{k} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
