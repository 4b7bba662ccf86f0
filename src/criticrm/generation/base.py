"""One interface for every critique-generation engine (this process, vLLM in this process, OpenAI-compatible servers).

A backend receives judge conversations (chat messages) and returns, for each, N sampled replies;
and, for (conversation, critique body) pairs, the probability-weighted score the model gives after
the forced score prefix. Both backends render the conversation with the same chat template, so a
server and a local model see exactly the same prompt tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from criticrm.config import Config
from criticrm.prompts.scores import strip_score_line

Messages = list[dict[str, str]]


@dataclass
class SamplingConfig(Config):
    """How critiques are sampled."""

    num_critiques: int = field(default=4, metadata={"help": "critiques sampled per response (N)", "min": 1})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature (0 = greedy)", "min": 0})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling threshold", "above": 0, "max": 1})
    max_new_tokens: int = field(default=128, metadata={"help": "longest critique, in tokens", "min": 1})
    seed: int = field(default=0, metadata={"help": "random seed (each batch derives its own from it)"})

    def __post_init__(self):
        super().__post_init__()


@dataclass(frozen=True)
class ProbabilityScore:
    score: float  # probability-weighted mean over 1..10
    mass: float  # probability the model put on any valid score (low = it wanted to write something else)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (the model ended its turn) or "length" (max_new_tokens reached)
    probability: ProbabilityScore | None = None
    # the final hidden state after the tokens `read_after` asked for (a float32 tensor), from backends that
    # run the model themselves; None otherwise (the reward is then read by a forward of its own)
    hidden: Any = None


class Generator(Protocol):
    backend: str
    model_name: str

    def generate(self, conversations: Sequence[Messages], sampling: SamplingConfig,
                 score_prefix: str | None = None, read_after=None) -> list[list[Completion]]:
        """N completions (sampling.num_critiques) for each conversation, in input order.

        With `score_prefix`, each completion also carries its probability score: the score
        distribution after the completion's body (its written score line removed), a newline and
        the prefix. Doing both in one call lets a backend reuse the prompt's KV cache.
        `read_after(index, prompt_ids, text)` may name tokens to read after the prompt; a backend that
        runs the model returns their last hidden state as `Completion.hidden`, others ignore it.
        """
        ...

    def choice_probabilities(self, conversations: Sequence[Messages], continuations: Sequence[str],
                             choices: Sequence[str]) -> list[list[float]]:
        """For each conversation, with the assistant turn begun by its continuation, P(each choice) next.

        A choice is read as the first token it adds after the continuation (" A" after "Verdict:"): the
        pairwise judge's probability verdict, as the probability score reads "1".."10" after "Score: ".
        """
        ...


def generate_grouped(generator: Generator, conversations: Sequence[Messages], score_prefixes: Sequence[str],
                     sampling: SamplingConfig) -> list[list[Completion]]:
    """`generator.generate` for conversations whose templates may end in different score prefixes: one
    call per prefix (the built-in judge templates share one), results in input order."""
    results: list[list[Completion]] = [[] for _ in conversations]
    for prefix in dict.fromkeys(score_prefixes):
        indices = [i for i, p in enumerate(score_prefixes) if p == prefix]
        outputs = generator.generate([conversations[i] for i in indices], sampling, score_prefix=prefix)
        for i, completions in zip(indices, outputs, strict=True):
            results[i] = completions
    return results


def score_continuation(completion_text: str, score_prefix: str) -> str:
    """The assistant text after which the score is read: the critique body, then the prefix on its own line."""
    body = strip_score_line(completion_text)
    return f"{body}\n{score_prefix}" if body else score_prefix


def prompt_ids(tokenizer, conversation: Messages) -> list[int]:
    """A judge conversation's prompt tokens: the chat template with the assistant turn opened, tokenized
    without further special tokens (the template writes its own). Every local engine starts from these."""
    text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False).input_ids


def choice_token(tokenizer, text: str, ids: list[int], choice: str) -> int:
    """The token that `choice` adds after `text` (whose tokens are `ids`): what a choice verdict is read as."""
    full = tokenizer(text + choice, add_special_tokens=False).input_ids
    if full[:len(ids)] != ids or len(full) == len(ids):
        raise ValueError(f"{choice!r} does not start a new token after {text[-20:]!r}")
    return full[len(ids)]


def batch_seed(seed: int, first_key: str) -> int:
    """A per-batch seed that depends only on the configured seed and the batch content.

    Resumed runs therefore sample each batch the same way an uninterrupted run with the same batches would.
    """
    import zlib

    return (seed * 1_000_003 + zlib.crc32(first_key.encode("utf-8"))) % (2**31 - 1)
