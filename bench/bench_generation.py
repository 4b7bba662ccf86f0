"""Critique-generation throughput: aggregate generated tokens/s for each backend and setting.

Workload (issue 2): pairs from ../shared/data/dev.jsonl, both responses of each, N=4 critiques
at temperature 0.8, up to 128 new tokens, the default judge templates with their few-shot examples.
Every variant generates the same critiques' worth of work; the metric is generated tokens (up to and
including the end-of-turn token) divided by wall time, prefill included. `+score` variants also
compute the probability score of every critique, as the critique stage does.

    python bench/bench_generation.py --pairs 8 --out bench/results/generation.json
    python bench/bench_generation.py --variants hf-shared-fp32-b32 llamacpp-server   # a subset

Variants: `hf-naive-*` is plain `generate(num_return_sequences=N)` (N prefills per prompt, no shared
prefix), the reference point; `hf-shared-*` is criticrm's HFGenerator on the model's own forward (one
prefill per prompt and one per batch for the template's shared prefix, static KV cache: the backend
before the cascade engine, and still the path of architectures the engine does not cover); `cascade-*`
is the HFGenerator on the cascade engine (`generation/cascade.py`), the default for Llama-layout models;
`llamacpp-server` is the OpenAI-compatible backend against llama-cpp-python's server over the Q4_1 GGUF
(one request at a time: that server has one slot).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from criticrm.data.readers import DataConfig, load_pairs
from criticrm.generation.base import SamplingConfig
from criticrm.generation.huggingface import HFGenerator
from criticrm.models.backbone import (
    ModelConfig,
    cpu_has_fast_bf16,
    default_gguf_path,
    load_causal_lm,
    load_tokenizer,
)
from criticrm.prompts.templates import TemplateSet
from machine import describe

VARIANTS = ["hf-naive-fp32-b16", "hf-shared-fp32-b32", "hf-shared-bf16-b32", "cascade-fp32-b32", "cascade-bf16-b32",
            "cascade-bf16-b64", "cascade-bf16-b128", "cascade-bf16-b32+score", "llamacpp-server"]


def conversations(data: str, pairs: int):
    templates = TemplateSet()
    loaded = load_pairs(DataConfig(data=data, limit=pairs)).pairs
    return [templates.for_pair(p.domain, p.subset).messages(p.prompt, p.response(side))
            for p in loaded for side in ("chosen", "rejected")]


def run_hf(variant: str, convs, sampling: SamplingConfig) -> dict:
    dtype = "bf16" if "bf16" in variant else "fp32"
    batch = int(variant.split("-b")[-1].split("+")[0])
    model, tokenizer = load_causal_lm(ModelConfig(dtype=dtype))
    generator = HFGenerator(model, tokenizer, "SmolLM2-135M-Instruct", batch_size=batch)
    if not variant.startswith("cascade"):
        generator.engine = None  # the model's own forward over a Hugging Face cache
    # Group by template, as the critique stage does, so a batch shares its few-shot prefix.
    convs = sorted(convs, key=lambda c: (c[0]["content"], -len(c[-1]["content"])))
    started = time.perf_counter()
    if "naive" in variant:
        tokens = _naive(generator, convs, sampling, batch)
    else:
        prefix = "Score: " if "+score" in variant else None
        per_call = max(1, batch // sampling.num_critiques)
        tokens = 0
        for start in range(0, len(convs), per_call):
            out = generator.generate(convs[start:start + per_call], sampling, score_prefix=prefix)
            tokens += sum(c.completion_tokens for completions in out for c in completions)
    seconds = time.perf_counter() - started
    return {"generated_tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}


@torch.inference_mode()
def _naive(generator: HFGenerator, convs, sampling: SamplingConfig, batch: int) -> int:
    """Plain HF generate: left-padded prompts, num_return_sequences=N (N prefills per prompt)."""
    from criticrm.generation.huggingface import _left_pad

    per_call = max(1, batch // sampling.num_critiques)
    tokens = 0
    for start in range(0, len(convs), per_call):
        ids, mask = _left_pad([generator.encode(c) for c in convs[start:start + per_call]], generator.pad_id, "cpu")
        output = generator.model.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                                          temperature=sampling.temperature, top_p=sampling.top_p, top_k=None,
                                          max_new_tokens=sampling.max_new_tokens,
                                          num_return_sequences=sampling.num_critiques,
                                          pad_token_id=generator.pad_id, eos_token_id=generator.eos_ids)
        for row in output[:, ids.shape[1]:].tolist():
            end = next((i for i, t in enumerate(row) if t in generator.eos_ids), None)
            tokens += len(row) if end is None else end + 1
    return tokens


def run_llamacpp(convs, sampling: SamplingConfig, threads: int) -> dict:
    from criticrm.generation.openai_compat import OpenAIGenerator
    from criticrm.testing.llamacpp import llamacpp_available, llamacpp_server

    reason = llamacpp_available()
    if reason:
        return {"skipped": reason}
    with llamacpp_server(default_gguf_path(), threads=threads) as url:
        generator = OpenAIGenerator(url, "SmolLM2-135M-Instruct", load_tokenizer(None), concurrency=1, timeout=600)
        started = time.perf_counter()
        out = generator.generate(convs, sampling)
        seconds = time.perf_counter() - started
    tokens = sum(c.completion_tokens for completions in out for c in completions)
    return {"generated_tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "threads": threads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "dev.jsonl"))
    parser.add_argument("--pairs", type=int, default=8, help="pairs (x2 responses x N critiques)")
    parser.add_argument("--num-critiques", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--llamacpp-threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", type=Path, default=Path("bench/results/generation.json"))
    args = parser.parse_args()
    sampling = SamplingConfig(num_critiques=args.num_critiques, temperature=0.8, top_p=0.95,
                              max_new_tokens=args.max_new_tokens, seed=0)
    convs = conversations(args.data, args.pairs)
    results = {}
    report = {
        "benchmark": "critique generation throughput",
        "date": time.strftime("%Y-%m-%d"),
        "machine": describe(),
        "workload": {"data": args.data, "pairs": args.pairs, "responses": len(convs),
                     "num_critiques": args.num_critiques, "max_new_tokens": args.max_new_tokens,
                     "temperature": 0.8, "top_p": 0.95},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for variant in args.variants:
        if "bf16" in variant and not cpu_has_fast_bf16() and not torch.cuda.is_available():
            results[variant] = {"skipped": "this CPU has no fast bf16 (no AVX-512 BF16 / AMX): bf16 matmuls run "
                                          "hundreds of times slower than fp32 here"}
        elif variant == "llamacpp-server":
            results[variant] = run_llamacpp(convs, sampling, args.llamacpp_threads)
        else:
            results[variant] = run_hf(variant, convs, sampling)
        print(variant, results[variant], flush=True)
        args.out.write_text(json.dumps(report, indent=2))  # after every variant: a cut run keeps its numbers
    print("| variant | generated tokens | seconds | tokens/s |\n|---|---|---|---|")
    for variant, result in results.items():
        if "skipped" in result:
            print(f"| {variant} | – | – | skipped: {result['skipped']} |")
        else:
            print(f"| {variant} | {result['generated_tokens']} | {result['seconds']} | {result['tokens_per_s']} |")


if __name__ == "__main__":
    main()
