"""Which engine writes critiques, and how to reach it: `GeneratorConfig`, and the one place that builds it.

Every stage that generates (critiques, refinement, the LLM-judge baselines, a critic-mode reward model's
own critiques) nests a `GeneratorConfig`; its options sit in that stage's YAML section and flags.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from criticrm.config import Config
from criticrm.errors import ConfigError
from criticrm.generation.base import Generator
from criticrm.generation.projections import Quantize
from criticrm.models.backbone import (
    ModelConfig,
    display_name,
    load_causal_lm,
    load_tokenizer,
    resolve_model_path,
)


@dataclass
class GeneratorConfig(Config):
    """The generation backend: the local model (Hugging Face) or an OpenAI-compatible server."""

    backend: Literal["huggingface", "openai", "vllm"] = field(default="huggingface", metadata={"help": "huggingface (the model, in this process, any machine), vllm (vLLM's offline engine in this process, where vllm is installed: a GPU) or openai (any OpenAI-compatible server)"})
    base_url: str | None = field(default=None, metadata={"help": "server URL for backend openai, e.g. http://127.0.0.1:8000"})
    api_key: str | None = field(default=None, metadata={"help": "bearer token for the server (default: $OPENAI_API_KEY)"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer (chat template) for backend openai; default: the model's, else the default model's"})
    concurrency: int = field(default=8, metadata={"help": "parallel requests for backend openai", "min": 1})
    timeout: float = field(default=120.0, metadata={"help": "seconds per request for backend openai", "above": 0})
    max_retries: int = field(default=4, metadata={"help": "retries with backoff per request for backend openai", "min": 0})
    quantize: Quantize = field(default="none", metadata={"help": "backend huggingface on a CPU: int8 runs each decoding step's linear layers in dynamic int8 (the LM head too; not the MLP's down projection), prompts still in float: 1.3-1.8x faster critiques where bf16 is slow (an AVX2-only CPU, fp32 weights), sampled from a slightly different distribution (BENCHMARKS.md measures it); none: exact"})
    gpu_memory_utilization: float = field(default=0.5, metadata={"help": "backend vllm: share of the GPU's memory vLLM reserves (the rest stays for the reward model beside it)", "above": 0, "max": 1})

    def __post_init__(self):
        super().__post_init__()
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("backend openai needs base_url, the server's address (e.g. http://127.0.0.1:8000)")
        if self.quantize != "none" and self.backend != "huggingface":
            raise ConfigError(f"quantize: {self.quantize} is a setting of backend huggingface (got backend {self.backend})")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {self.base_url!r}")


def generator_for(config: GeneratorConfig, model: ModelConfig, batch_size: int = 32) -> Generator:
    """A Hugging Face generator on the local model, vLLM's engine on it, or a client of an OpenAI-compatible server.

    For the server the prompt is rendered locally with the chat template of `config.tokenizer` (default:
    the model, else the embedded default's), so every backend sends the model the same tokens.
    `batch_size`: sequences the local model generates together (vLLM schedules its own batches).
    """
    if config.backend == "huggingface":
        from criticrm.generation.huggingface import HFGenerator

        model_object, tokenizer = load_causal_lm(model)
        return HFGenerator(model_object, tokenizer, display_name(model.model), batch_size=batch_size,
                           quantize=config.quantize)
    if config.backend == "vllm":
        from criticrm.generation.vllm_offline import VLLMGenerator, import_vllm

        import_vllm()  # before any model is read: a missing package is the first thing to say
        path = resolve_model_path(model.model)
        return VLLMGenerator.start(path, load_tokenizer(config.tokenizer or model.model), display_name(model.model),
                                   dtype=model.dtype, gpu_memory_utilization=config.gpu_memory_utilization)
    from criticrm.generation.openai_compat import OpenAIGenerator

    generator = OpenAIGenerator(
        base_url=config.base_url,
        model=display_name(model.model),
        tokenizer=load_tokenizer(config.tokenizer or model.model),
        api_key=config.api_key or os.environ.get("OPENAI_API_KEY"),
        concurrency=config.concurrency, timeout=config.timeout, max_retries=config.max_retries,
    )
    generator.check_reachable()
    return generator
