"""Token sequences a reward model reads: (prompt, response[, critique]) -> ids, label span, read position.

Two layouts, one rule:

- `critic` mode: the judge prompt holding (x, y) is the user turn (the template's system turn first, no
  few-shot examples: a fine-tuned Critic-RM has learnt the format) and the critique is the assistant turn;
- `standard` mode: the prompt x is the user turn and the response y is the assistant turn.

Either way the assistant turn ("completion") is followed by the chat template's end-of-turn token
(`<|im_end|>` for ChatML, `<|eot_id|>` for Llama 3, ...) and the reward is read at that token, the one that
closes the completion. The sequence stops there: nothing after it can change a causal model's state at it.
The position is kept as an index; it is never found by searching for a token id (for SmolLM2 the end-of-turn
token is also the pad token).

The prefix is the chat template's generation prompt, exactly what a generator sees before it writes the
critique, so a critique generated at inference is scored in the layout the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from criticrm.errors import CriticRMError
from criticrm.prompts.templates import JudgeTemplate, load_template

MODES = ("critic", "standard")
TRUNCATION_POLICIES = ("middle", "drop", "error")
_SENTINEL = "\u2063CRITICRM_COMPLETION\u2063"
# Used only for tokenizers without a chat template (base models): a plain ChatML rendering.
_FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class SequenceTooLongError(CriticRMError):
    """A sequence exceeds max_length and the truncation policy is `error` (or `drop`, for callers that drop)."""


@dataclass(frozen=True)
class EncodedSequence:
    """One tokenized sequence.

    `read_position` is the index of the end-of-turn token that closes the completion (always the last
    token); `label_start:label_end` is the span of tokens the critique loss predicts (the critique and,
    when the critique was not cut, its end-of-turn token, so that a trained model stops there). The
    span is empty in standard mode.
    """

    input_ids: list[int]
    label_start: int
    label_end: int
    truncated: bool = False

    @property
    def read_position(self) -> int:
        return len(self.input_ids) - 1

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class SequenceBuilder:
    """Builds the token sequences of one mode for one tokenizer (and, in critic mode, judge templates).

    `template` is the default judge template (name or YAML file); `encode(..., template=...)` can name
    another one per example (training rows record the template their critiques were written in).
    """

    tokenizer: Any
    mode: str = "critic"
    template: str = "general"
    max_length: int = 1024
    truncation: str = "middle"
    _templates: dict[str, JudgeTemplate] = field(default_factory=dict, init=False, repr=False)
    _closing_cache: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.truncation not in TRUNCATION_POLICIES:
            raise ValueError(f"truncation must be one of {', '.join(TRUNCATION_POLICIES)}, got {self.truncation!r}")
        if self.max_length < 16:
            raise ValueError(f"max_length must be at least 16, got {self.max_length}")

    # ---- texts ---------------------------------------------------------------------------------
    def judge_template(self, name: str | None = None) -> JudgeTemplate:
        name = name or self.template
        if name not in self._templates:
            self._templates[name] = load_template(name)
        return self._templates[name]

    def messages(self, prompt: str, response: str, template: str | None = None) -> list[dict[str, str]]:
        """The conversation before the completion (critique in critic mode, response in standard mode)."""
        if self.mode == "critic":
            return self.judge_template(template).messages(prompt, response, few_shot=False)
        return [{"role": "user", "content": prompt}]

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        kwargs = {}
        if getattr(self.tokenizer, "chat_template", None) is None:
            kwargs["chat_template"] = _FALLBACK_CHAT_TEMPLATE
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                                  **kwargs)

    def prompt_text(self, prompt: str, response: str, template: str | None = None) -> str:
        """The generation prompt: what a generator is given to write the critique (critic mode)."""
        return self._render(self.messages(prompt, response, template), generation_prompt=True)

    def prompt_ids(self, prompt: str, response: str, template: str | None = None) -> list[int]:
        return self._tokenize(self.prompt_text(prompt, response, template))

    def _tokenize(self, text: str) -> list[int]:
        # The rendered chat text already holds every special token the template wants (BOS included).
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def closing_token_id(self, messages: list[dict[str, str]]) -> int:
        """The token the chat template writes right after an assistant turn's content (cached per layout)."""
        rendered = self._render([*messages, {"role": "assistant", "content": _SENTINEL}], generation_prompt=False)
        key = rendered[rendered.index(_SENTINEL) + len(_SENTINEL):][:64]
        if key not in self._closing_cache:
            ids = self._tokenize(key) if key else []
            special = set(getattr(self.tokenizer, "all_special_ids", ()) or ())
            special |= {i for i, t in (getattr(self.tokenizer, "added_tokens_decoder", None) or {}).items()
                        if getattr(t, "special", False)}
            marked = [i for i in ids if i in special]  # e.g. "<|im_end|>" in "<|im_end|>\n"
            if marked or ids:
                self._closing_cache[key] = (marked or ids)[0]
            elif self.tokenizer.eos_token_id is not None:
                self._closing_cache[key] = self.tokenizer.eos_token_id
            else:
                raise CriticRMError("the tokenizer has neither an end-of-turn token in its chat template nor an eos token; "
                                    "the reward cannot be read at the end of the completion")
        return self._closing_cache[key]

    # ---- sequences ------------------------------------------------------------------------------
    def encode(self, prompt: str, response: str, critique: str | None = None,
               template: str | None = None) -> EncodedSequence | None:
        """The sequence whose reward is r(x, y, c) in critic mode, r(x, y) in standard mode.

        Returns None when it is too long and the policy is `drop`; raises SequenceTooLongError for `error`.
        """
        return self.assemble(*self._parts(prompt, response, critique, template))

    def completion_ids(self, prompt: str, response: str, critique: str, template: str | None = None,
                       prompt_ids: list[int] | None = None) -> list[int] | None:
        """The tokens that follow the generation prompt in this critique's sequence (its body and the
        end-of-turn token the reward is read at), or None when the sequence is not the prompt followed by
        them: it is truncated, or its prompt differs from `prompt_ids` (what a generator was given).

        A generator that wrote the critique after `prompt_ids` can read these tokens from its KV cache and
        get the reward of the training layout without reading the prompt again.
        """
        prefix, body, closing = self._parts(prompt, response, critique, template)
        if len(prefix) + len(body) + 1 > self.max_length or (prompt_ids is not None and prompt_ids != prefix):
            return None
        return body + [closing]

    def _parts(self, prompt: str, response: str, critique: str | None,
               template: str | None) -> tuple[list[int], list[int], int]:
        """(generation prompt, completion body, end-of-turn token) of one sequence, before truncation."""
        if self.mode == "critic" and critique is None:
            raise ValueError("critic mode needs a critique: r(x, y, c) is read at the end of the critique")
        messages = self.messages(prompt, response, template)
        completion = (critique if self.mode == "critic" else response).strip()
        prefix = self._tokenize(self._render(messages, generation_prompt=True))
        return prefix, self._tokenize(completion), self.closing_token_id(messages)

    def encode_many(self, items: list[tuple[str, str, str | None]], template: str | None = None) -> list[EncodedSequence | None]:
        """`encode` over (prompt, response, critique) triples, sharing the prefix of repeated (prompt, response)."""
        prefixes: dict[tuple[str, str], tuple[list[int], int]] = {}
        out = []
        for prompt, response, critique in items:
            key = (prompt, response)
            if key not in prefixes:
                messages = self.messages(prompt, response, template)
                prefixes[key] = (self._tokenize(self._render(messages, generation_prompt=True)),
                                 self.closing_token_id(messages))
            prefix, closing = prefixes[key]
            if self.mode == "critic" and critique is None:
                raise ValueError("critic mode needs a critique for every item")
            completion = (critique if self.mode == "critic" else response).strip()
            out.append(self.assemble(prefix, self._tokenize(completion), closing))
        return out

    def assemble(self, prefix: list[int], body: list[int], closing: int) -> EncodedSequence | None:
        """prefix + body + closing, fitted into max_length by the truncation policy.

        `middle` keeps the whole completion when it can and cuts the middle of the prefix (keeping the
        system turn and instruction at its start and the end of the response and the assistant header at
        its end); a completion too long even for a 64-token prefix is cut at its end (its end-of-turn token
        is then still read but not used as a critique target: the critique did not end there).
        """
        total = len(prefix) + len(body) + 1
        if total <= self.max_length:
            labels = (len(prefix), total) if self.mode == "critic" else (total - 1, total - 1)
            return EncodedSequence(prefix + body + [closing], *labels)
        if self.truncation == "drop":
            return None
        if self.truncation == "error":
            raise SequenceTooLongError(f"a sequence has {total} tokens, more than max_length={self.max_length}; "
                                       "raise max_length or use truncation 'middle' or 'drop'")
        budget = self.max_length - 1
        min_prefix = min(len(prefix), 64, budget // 2)
        body_keep = min(len(body), budget - min_prefix)
        cut_body = body_keep < len(body)
        if cut_body:
            body = body[:body_keep] if self.mode == "critic" else _cut_middle(body, body_keep)
        prefix = _cut_middle(prefix, budget - len(body))
        ids = prefix + body + [closing]
        if self.mode == "critic":
            end = len(ids) - 1 if cut_body else len(ids)
            return EncodedSequence(ids, len(prefix), end, truncated=True)
        return EncodedSequence(ids, len(ids) - 1, len(ids) - 1, truncated=True)


def _cut_middle(ids: list[int], keep: int) -> list[int]:
    if keep >= len(ids):
        return list(ids)
    head = keep // 2
    return ids[:head] + ids[len(ids) - (keep - head):]


@dataclass
class PaddedBatch:
    """Sequences padded into one tensor batch, with the index of the token each reward is read at."""

    input_ids: Any
    attention_mask: Any
    read_positions: Any


def pad_sequences(sequences: list[list[int]], pad_token_id: int, padding_side: str = "right",
                  pad_to_multiple_of: int | None = None) -> PaddedBatch:
    """Pad token lists into tensors; `read_positions` is each sequence's last real token."""
    import torch

    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
    width = max(len(s) for s in sequences)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    read_positions = torch.empty(len(sequences), dtype=torch.long)
    for row, ids in enumerate(sequences):
        start = 0 if padding_side == "right" else width - len(ids)
        input_ids[row, start:start + len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, start:start + len(ids)] = 1
        read_positions[row] = start + len(ids) - 1
    return PaddedBatch(input_ids, attention_mask, read_positions)
