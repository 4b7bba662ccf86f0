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
is the HFGenerator on the cascade engine (`generation/cascade.py`), the default for Llama-layout models
(`cascade-<dtype>-int8-*`: its decoding steps in dynamic int8, `quantize: int8`);
`llamacpp-server` is the OpenAI-compatible backend against llama-cpp-python's server over the Q4_1 GGUF
(one request at a time: that server has one slot).

The peers, each tuned as its own documentation advises for this workload:
- `llama-server-<type>-np<S>`: criticrm's OpenAI backend, S requests at a time, against llama.cpp's own
  server binary (`--llama-server PATH`) with S parallel slots (continuous batching), flash attention
  and its per-slot prompt cache (a slot computes its whole prompt when it starts a request whose prefix
  it does not hold: with 32 slots that is 32 prefills of the few-shot prefix, so fewer slots are
  tried); `q4_1` is the shipped GGUF, `q8_0` and `bf16` are GGUF files converted from the same
  checkpoint by llama.cpp's `convert_hf_to_gguf.py` (`--gguf-dir`, see `gguf_file`).
- `ct2-<compute>-b<B>`: CTranslate2's `Generator` over the same checkpoint converted by its own
  converter (cached), `num_hypotheses=N` (one prompt pass per prompt), the template's shared token
  prefix as a cached `static_prompt`, prompts forwarded at once (`include_prompt_in_result=False`),
  32 (or 8) rows per batch. CTranslate2 has no bf16 compute on CPU: int8 and float32.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from criticrm.data.readers import DataConfig, load_pairs
from criticrm.generation.base import SamplingConfig
from criticrm.generation.huggingface import HFGenerator, _common_prefix_length
from criticrm.models.backbone import (
    DEFAULT_MODEL_NAME,
    ModelConfig,
    cache_dir,
    cpu_has_fast_bf16,
    default_gguf_path,
    default_model_dir,
    load_causal_lm,
    load_tokenizer,
)
from criticrm.prompts.templates import TemplateSet
from machine import describe

VARIANTS = ["hf-naive-fp32-b16", "hf-shared-fp32-b32", "hf-shared-bf16-b32", "cascade-fp32-b32", "cascade-bf16-b32",
            "cascade-fp32-int8-b32", "cascade-bf16-b64", "cascade-bf16-b128", "cascade-bf16-b32+score",
            "llamacpp-server", "llama-server-q4_1-np32", "llama-server-q8_0-np32", "llama-server-bf16-np32",
            "llama-server-q8_0-np4", "ct2-int8-b32", "ct2-float32-b32", "ct2-int8-b8"]
# Every engine takes any batch size (slot count): tuning is a sweep, not a fixed list.
SWEEP_PATTERN = re.compile(r"(hf-shared-(fp32|bf16)|cascade-(fp32|bf16)(-int8)?)-b[1-9][0-9]*(\+score)?"
                           r"|llama-server-(q4_1|q8_0|bf16)-np[1-9][0-9]*|ct2-(int8|float32)-b[1-9][0-9]*")


def variant_name(name: str) -> str:
    """An argparse type: a listed variant, or any engine's variant with another batch size / slot count."""
    if name in VARIANTS or SWEEP_PATTERN.fullmatch(name):
        return name
    raise argparse.ArgumentTypeError(f"unknown variant {name!r}: one of {', '.join(VARIANTS)}, or "
                                     f"<hf-shared|cascade>-<fp32|bf16>-b<batch>[+score], "
                                     f"cascade-<fp32|bf16>-int8-b<batch>[+score], "
                                     f"llama-server-<q4_1|q8_0|bf16>-np<slots> / ct2-<int8|float32>-b<batch>")


def conversations(data: str, pairs: int):
    templates = TemplateSet()
    loaded = load_pairs(DataConfig(data=data, limit=pairs)).pairs
    return [templates.for_pair(p.domain, p.subset).messages(p.prompt, p.response(side))
            for p in loaded for side in ("chosen", "rejected")]


def run_hf(variant: str, convs, sampling: SamplingConfig) -> dict:
    dtype = "bf16" if "bf16" in variant else "fp32"
    batch = int(variant.split("-b")[-1].split("+")[0])
    model, tokenizer = load_causal_lm(ModelConfig(dtype=dtype))
    quantize = "int8" if "-int8-" in variant else "none"
    generator = HFGenerator(model, tokenizer, "SmolLM2-135M-Instruct", batch_size=batch, quantize=quantize)
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


def gguf_file(gguf_dir: Path | None, kind: str) -> Path | str:
    """The GGUF file of `kind` (q4_1: the shipped one), or the reason it is missing."""
    if kind == "q4_1":
        return default_gguf_path()
    path = (gguf_dir or Path()) / f"{DEFAULT_MODEL_NAME}-{kind}.gguf"
    if gguf_dir is None or not path.is_file():
        return (f"no {path.name} in --gguf-dir; make it with llama.cpp's converter: python convert_hf_to_gguf.py "
                f"{default_model_dir()} --outtype {kind} --outfile DIR/{path.name}")
    return path


def run_llama_server(variant: str, convs, sampling: SamplingConfig, binary: Path | None, gguf_dir: Path | None,
                     threads: int) -> dict:
    from criticrm.generation.openai_compat import OpenAIGenerator
    from criticrm.testing.llamacpp import native_llama_server

    kind, slots = variant.split("-")[2], int(variant.split("-np")[-1])
    if binary is None:
        return {"skipped": "no --llama-server binary given (build llama.cpp's `llama-server` target)"}
    model = gguf_file(gguf_dir, kind)
    if isinstance(model, str):
        return {"skipped": model}
    with native_llama_server(binary, model, slots=slots, threads=threads) as url:
        generator = OpenAIGenerator(url, DEFAULT_MODEL_NAME, load_tokenizer(None), concurrency=slots, timeout=1200)
        started = time.perf_counter()
        out = generator.generate(convs, sampling)
        seconds = time.perf_counter() - started
    tokens = sum(c.completion_tokens for completions in out for c in completions)
    return {"generated_tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "threads": threads, "slots": slots, "gguf": Path(model).name}


def run_ctranslate2(variant: str, convs, sampling: SamplingConfig, threads: int) -> dict:
    try:
        import ctranslate2
        from ctranslate2.converters import TransformersConverter
    except ImportError as error:
        return {"skipped": f"ctranslate2 is not installed ({error}); pip install ctranslate2"}
    compute, batch = variant.split("-")[1], int(variant.split("-b")[-1])
    folder = cache_dir() / "ctranslate2" / f"{DEFAULT_MODEL_NAME}-{compute}"
    if not (folder / "model.bin").is_file():
        TransformersConverter(str(default_model_dir())).convert(
            str(folder), quantization=None if compute == "float32" else compute, force=True)
    tokenizer = load_tokenizer(None)
    generator = ctranslate2.Generator(str(folder), device="cpu", compute_type=compute, intra_threads=threads)
    by_template: dict[str, list[list[int]]] = {}
    for conversation in convs:
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        by_template.setdefault(conversation[0]["content"], []).append(
            tokenizer(text, add_special_tokens=False).input_ids)
    started = time.perf_counter()
    tokens = 0
    for prompts in by_template.values():
        # the template's shared tokens, less one: a prompt keeps at least one token of its own
        shared = max(0, min(_common_prefix_length(prompts), min(len(p) for p in prompts) - 1))
        results = generator.generate_batch(
            [tokenizer.convert_ids_to_tokens(p[shared:]) for p in prompts],
            static_prompt=tokenizer.convert_ids_to_tokens(prompts[0][:shared]) if shared else None,
            max_batch_size=max(1, batch // sampling.num_critiques), num_hypotheses=sampling.num_critiques,
            sampling_topk=0, sampling_topp=sampling.top_p, sampling_temperature=sampling.temperature,
            max_length=sampling.max_new_tokens, include_prompt_in_result=False, end_token=tokenizer.eos_token,
            return_end_token=True)
        tokens += sum(len(ids) for result in results for ids in result.sequences_ids)
    seconds = time.perf_counter() - started
    return {"generated_tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "threads": threads, "compute_type": compute}



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "dev.jsonl"))
    parser.add_argument("--pairs", type=int, default=8, help="pairs (x2 responses x N critiques)")
    parser.add_argument("--num-critiques", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, type=variant_name)
    parser.add_argument("--llamacpp-threads", type=int, default=torch.get_num_threads(),
                        help="threads of the llama.cpp servers and of CTranslate2")
    parser.add_argument("--llama-server", type=Path, help="llama.cpp's llama-server binary (llama-server-* variants)")
    parser.add_argument("--gguf-dir", type=Path, help="folder of the q8_0 / bf16 GGUF files (see gguf_file)")
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
        elif variant.startswith("llama-server"):
            results[variant] = run_llama_server(variant, convs, sampling, args.llama_server, args.gguf_dir,
                                                args.llamacpp_threads)
        elif variant.startswith("ct2"):
            results[variant] = run_ctranslate2(variant, convs, sampling, args.llamacpp_threads)
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
