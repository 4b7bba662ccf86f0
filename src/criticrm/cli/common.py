"""Pieces several sub-commands share: loading pairs with the right renderer, building the generator."""

from __future__ import annotations

import sys

from criticrm.data.readers import DataConfig, LoadResult, load_pairs, render_transcript
from criticrm.generation.base import Generator
from criticrm.generation.factory import build_generator
from criticrm.models.backbone import ModelConfig, load_tokenizer
from criticrm.pipeline.critique import CritiqueConfig


def read_pairs(data: DataConfig, model: ModelConfig) -> LoadResult:
    """Load and validate pairs; conversational prompts use the model's chat template if asked."""
    if data.chat_format == "template":
        tokenizer = load_tokenizer(model.model)

        def render(messages):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:  # transcript (DataConfig allows no other)
        render = render_transcript
    result = load_pairs(data, render)
    if result.invalid_rows:
        print(f"skipped {result.invalid_rows} invalid row(s) of {result.rows_read} (--skip-invalid); first problems:",
              file=sys.stderr)
        for problem in result.problems[:5]:
            print(f"  {problem}", file=sys.stderr)
    return result


def generator_for(critique: CritiqueConfig, model: ModelConfig) -> Generator:
    return build_generator(critique.backend, model, batch_size=critique.batch_size, base_url=critique.base_url,
                           api_key=critique.api_key, tokenizer=critique.tokenizer, concurrency=critique.concurrency,
                           timeout=critique.timeout, max_retries=critique.max_retries)
