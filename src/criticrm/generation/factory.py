"""Build the configured critique generator; the only place that knows every backend."""

from __future__ import annotations

import os

from criticrm.generation.base import Generator
from criticrm.models.backbone import ModelConfig, display_name, load_causal_lm, load_tokenizer


def build_generator(backend: str, model_config: ModelConfig, *, batch_size: int = 32, base_url: str | None = None,
                    api_key: str | None = None, tokenizer: str | None = None, concurrency: int = 8,
                    timeout: float = 120.0, max_retries: int = 4) -> Generator:
    """A Hugging Face generator on the local model, or a client of an OpenAI-compatible server.

    For the server the prompt is rendered locally with the chat template of `tokenizer` (default:
    the model, else the embedded default's), so both backends send the model the same tokens.
    """
    if backend == "huggingface":
        from criticrm.generation.huggingface import HFGenerator

        model, hf_tokenizer = load_causal_lm(model_config)
        return HFGenerator(model, hf_tokenizer, display_name(model_config.model), batch_size=batch_size)
    from criticrm.errors import ConfigError
    from criticrm.generation.openai_compat import OpenAIGenerator

    if not base_url:
        raise ConfigError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000)")
    generator = OpenAIGenerator(
        base_url=base_url,
        model=display_name(model_config.model),
        tokenizer=load_tokenizer(tokenizer or model_config.model),
        api_key=api_key or os.environ.get("OPENAI_API_KEY"),
        concurrency=concurrency, timeout=timeout, max_retries=max_retries,
    )
    generator.check_reachable()
    return generator
