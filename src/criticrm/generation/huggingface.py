"""Critique generation with Hugging Face models, batched for throughput.

What makes it fast on a small CPU and still right on a GPU:
- conversations are batched by their messages before the last (one judge template's system turn and
  few-shot examples: most of the prompt), longest first within those, and left-padded;
- each prompt is prefilled once and its KV cache repeated for the N samples, instead of N prefills
  (the judge prompt with its few-shot examples is several times longer than a critique);
- decoding drops finished rows from the batch and its cache, and top-p sampling keeps the nucleus
  without sorting the vocabulary at every step (`decoding.py`, `nucleus.py`);
- on Llama-layout models (`cascade.supports`) every forward goes through the cascade engine, which
  computes a template's prefix once and reads the shared prefix's and each prompt's keys and values
  once per step for all their rows; other architectures use the model's own forward over a Hugging
  Face cache;
- what is read after a critique — the probability score after the score prefix, and with
  `read_after` the final hidden state after the reward model's training layout of the critique (the
  reward then needs no re-read) — continues from the keys and values decoding wrote: only the tokens
  that differ from the decoded ones are run (a few per row). LM logits are computed only for the
  positions that are read.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch

from criticrm.errors import ConfigError
from criticrm.generation.base import (
    Completion,
    Messages,
    ProbabilityScore,
    SamplingConfig,
    batch_seed,
    choice_token,
    prompt_ids,
    score_continuation,
)
from criticrm.generation.cascade import (
    BatchState,
    CascadeEngine,
    CascadeStepper,
    DecodedRows,
    indices_by_value,
    left_pad,
    length_groups,
    supports,
)
from criticrm.generation.decoding import HFStepper, cache_keyword, sample_tokens
from criticrm.generation.projections import Quantize
from criticrm.prompts.scores import ScoreTokens, expected_score

MIN_SHARED_PREFIX = 16  # below this, sharing a prefix saves less than its bookkeeping costs
SHORT_REST = 16  # continuations with at most this many tokens after the decoded ones run together
# (conversation index, its prompt token ids, a completion's text) -> the token ids after the prompt whose
# last hidden state to return with the completion, or None when none is wanted for it
ReadAfter = Callable[[int, list[int], str], "list[int] | None"]


class HFGenerator:
    backend = "huggingface"

    def __init__(self, model, tokenizer, model_name: str, batch_size: int = 32, quantize: Quantize = "none"):
        if quantize != "none" and not supports(model):
            raise ConfigError(f"quantize: {quantize} needs the cascade engine, which does not run "
                              f"{getattr(model.config, 'model_type', type(model).__name__)} models; use quantize: none")
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = _eos_ids(model, tokenizer)
        self._score_tokens: dict[str, ScoreTokens] = {}
        self._prefix_caches: dict[tuple[int, ...], object] = {}
        self._cache_keyword = cache_keyword(model)
        self.engine = CascadeEngine(model, quantize) if supports(model) else None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, conversation: Messages) -> list[int]:
        return prompt_ids(self.tokenizer, conversation)

    def generate(self, conversations: Sequence[Messages], sampling: SamplingConfig,
                 score_prefix: str | None = None, read_after: ReadAfter | None = None) -> list[list[Completion]]:
        encoded = [self.encode(conversation) for conversation in conversations]
        per_batch = max(1, self.batch_size // sampling.num_critiques)
        groups = _by_prefix(conversations)
        shared = _shared_lengths(groups, encoded)
        results: list[list[Completion]] = [[] for _ in encoded]
        for chunk in _batches(groups, encoded, per_batch):
            seed = batch_seed(sampling.seed, repr(encoded[chunk[0]][-64:]))
            reader = (lambda row, ids, text, chunk=chunk: read_after(chunk[row], ids, text)) if read_after else None
            for index, completions in zip(chunk, self._generate_batch([encoded[i] for i in chunk],
                                                                      [shared[i] for i in chunk], sampling,
                                                                      score_prefix, seed, reader), strict=True):
                results[index] = completions
        return results

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[list[int]], shared: list[int], sampling: SamplingConfig,
                        score_prefix: str | None, seed: int, read_after: ReadAfter | None) -> list[list[Completion]]:
        n = sampling.num_critiques
        decoding = dict(max_new_tokens=sampling.max_new_tokens, eos_ids=self.eos_ids,
                        temperature=sampling.temperature, top_p=sampling.top_p)
        if self.engine is not None:
            state, logits = self.engine.prefill(prompts, shared)
            stepper = CascadeStepper(self.engine, self.engine.fork(state, n))
            torch.manual_seed(seed)
            new_tokens = sample_tokens(logits.repeat_interleave(n, dim=0), stepper, **decoding)
            decoded = DecodedRows(stepper.decoded_rows(), new_tokens) if score_prefix or read_after else None
            del stepper
        else:
            input_ids, attention, prompt_cache = self._prefill(prompts)
            generation_cache = _static_copy(prompt_cache, self.model.config, n, sampling.max_new_tokens + 1)
            stepper = HFStepper(self.model, input_ids.repeat_interleave(n, dim=0), attention.repeat_interleave(n, dim=0),
                                generation_cache)
            torch.manual_seed(seed)
            new_tokens = sample_tokens(stepper.first_logits(), stepper, **decoding)
            del generation_cache, stepper
        texts, lengths, finished = [], [], []
        for row in new_tokens:  # sample_tokens() stops a row at its end-of-sequence token
            ended = bool(row) and row[-1] in self.eos_ids
            texts.append(self.tokenizer.decode(row[:-1] if ended else row, skip_special_tokens=True).strip())
            lengths.append(len(row))
            finished.append(ended)
        probabilities, hidden = [None] * len(texts), [None] * len(texts)
        if score_prefix and self.engine is not None:
            probabilities = self._probability_scores_cascade(state, decoded, texts, score_prefix, n)
        elif score_prefix:
            probabilities = self._probability_scores(input_ids, attention, prompt_cache, texts, score_prefix, n)
        if read_after is not None:
            hidden = self._hidden_after(prompts, texts, n, read_after,
                                        (state, decoded) if self.engine is not None else None)
        prompt_lengths = [len(p) for p in prompts]
        return [
            [
                Completion(text=texts[p * n + s], prompt_tokens=prompt_lengths[p],
                           completion_tokens=lengths[p * n + s],
                           finish_reason="stop" if finished[p * n + s] else "length",
                           probability=probabilities[p * n + s], hidden=hidden[p * n + s])
                for s in range(n)
            ]
            for p in range(len(prompts))
        ]

    @staticmethod
    def _shared_length(prompts: list[list[int]]) -> int:
        """How many leading tokens every prompt of a batch shares, when sharing them is worth it (at least
        one token of each prompt stays its own, so every prompt has a position of its own to read)."""
        shared = min(_common_prefix_length(prompts), min(len(p) for p in prompts) - 1)
        return shared if len(prompts) > 1 and shared >= MIN_SHARED_PREFIX else 0

    def _continue(self, state: BatchState, decoded: DecodedRows, n: int, continuations: list[list[int]],
                  read: int) -> torch.Tensor:
        """Final hidden states (rows, read, hidden) of the last `read` tokens of every row's `continuation`
        read after its prompt.

        A continuation mostly repeats what its row decoded (the critique, re-tokenized from its text), so
        each row keeps decoding's keys and values of the tokens the two share (never its last `read`, whose
        hidden states are wanted) and runs only the rest: a few tokens instead of the whole critique. A
        sampled critique can hold a token split its re-tokenized text does not, which leaves a long rest;
        such prompts run apart, so the others are not padded to their width."""
        lengths = [max(0, min(_common_prefix_length([tokens, wanted]), len(tokens) - 1, len(wanted) - read))
                   for tokens, wanted in zip(decoded.tokens, continuations, strict=True)]
        rests = [wanted[k:] for wanted, k in zip(continuations, lengths, strict=True)]
        widest = [max(len(rest) for rest in rests[p * n:(p + 1) * n]) for p in range(len(rests) // n)]
        out = None
        for prompts in length_groups([n * max(width, SHORT_REST) for width in widest]):
            rows = [p * n + s for p in prompts for s in range(n)]
            ids, valid = left_pad([rests[r] for r in rows], self.device)
            hidden = self.engine.extend(self.engine.resume(state, n, decoded, [lengths[r] for r in rows], prompts),
                                        ids, valid)[:, -read:]
            out = hidden.new_empty((len(rests), *hidden.shape[1:])) if out is None else out
            out[torch.tensor(rows, device=self.device)] = hidden
        return out

    def _probability_scores_cascade(self, state: BatchState, decoded: DecodedRows, texts: list[str],
                                    score_prefix: str, n: int) -> list[ProbabilityScore]:
        """The probability score after each critique body and the score prefix (see `_probability_scores`)."""
        tokens = self._score_tokens_for(score_prefix)
        suffix = [tokens.score_ids[0]] if tokens.split_ten else []
        continuations = [self.tokenizer(score_continuation(text, score_prefix), add_special_tokens=False).input_ids
                         + suffix for text in texts]
        hidden = self._continue(state, decoded, n, continuations, read=2)
        return _score_distributions(self.engine.logits(hidden).float(), tokens)

    def _hidden_after(self, prompts: list[list[int]], texts: list[str], n: int, read_after: ReadAfter,
                      cascade: tuple[BatchState, DecodedRows] | None) -> list[torch.Tensor | None]:
        """The final hidden state (float32) after each row's `read_after` tokens, None where there are none
        (or where this model has no cascade engine: the caller then re-reads the whole sequence)."""
        if cascade is None:
            return [None] * len(texts)
        wanted = [read_after(row // n, prompts[row // n], text) for row, text in enumerate(texts)]
        if not any(wanted):
            return [None] * len(texts)
        state, decoded = cascade
        hidden = self._continue(state, decoded, n, [ids or [self.pad_id] for ids in wanted], read=1)[:, 0].float()
        return [hidden[row] if ids else None for row, ids in enumerate(wanted)]

    def _prefill(self, prompts: list[list[int]]):
        """Lay out a batch and run every prompt token but the last into a KV cache.

        The token prefix shared by the whole batch (the system turn and the few-shot examples of a
        judge template: most of the prompt) is computed once, kept across batches, and repeated;
        each row's own part follows it, left-padded *after* the prefix so that positions stay
        contiguous. Returns (input_ids, attention_mask, cache of all tokens but the last).
        """
        from transformers import DynamicCache

        # At least one token per row is left to the batch's own forward (identical prompts share everything else).
        shared = min(_common_prefix_length(prompts), min(len(p) for p in prompts) - 2)
        rows = len(prompts)
        if rows > 1 and shared >= MIN_SHARED_PREFIX:
            prefix = prompts[0][:shared]
            cache = copy.deepcopy(self._prefix_cache(tuple(prefix)))
            cache.batch_repeat_interleave(rows)
            suffix_ids, suffix_mask = _left_pad([p[shared:] for p in prompts], self.pad_id, self.device)
            input_ids = torch.cat([torch.tensor([prefix], device=self.device).expand(rows, -1), suffix_ids], dim=1)
            attention = torch.cat([torch.ones((rows, shared), dtype=suffix_mask.dtype, device=self.device), suffix_mask], dim=1)
        else:
            shared = 0
            cache = DynamicCache(config=self.model.config)
            input_ids, attention = _left_pad(prompts, self.pad_id, self.device)
        self.model(
            input_ids=input_ids[:, shared:-1],
            attention_mask=attention[:, :-1],
            position_ids=_position_ids(attention)[:, shared:-1],
            **{self._cache_keyword: cache},
            use_cache=True,
            logits_to_keep=1,
        )
        return input_ids, attention, cache

    def _prefix_cache(self, prefix: tuple[int, ...]):
        """KV cache of one shared prefix (batch 1), remembered for the next batches."""
        if prefix not in self._prefix_caches:
            from transformers import DynamicCache

            if len(self._prefix_caches) >= 4:
                self._prefix_caches.pop(next(iter(self._prefix_caches)))
            cache = DynamicCache(config=self.model.config)
            ids = torch.tensor([prefix], device=self.device)
            self.model(input_ids=ids, **{self._cache_keyword: cache}, use_cache=True, logits_to_keep=1)
            self._prefix_caches[prefix] = cache
        return self._prefix_caches[prefix]

    def _probability_scores(self, input_ids, attention, prompt_cache, texts: list[str], score_prefix: str,
                            n: int) -> list[ProbabilityScore]:
        """Score distribution after each critique body, continuing from the prompt's KV cache.

        The continuation (the prompt's last token, the critique body, the score prefix and, for
        tokenizers that split "10", a "1") is left-padded *after* the cached prompt so that the two
        positions read are the last two of every row: `logits_to_keep=2` then gives exactly them.
        """
        tokens = self._score_tokens_for(score_prefix)
        suffix = [tokens.score_ids[0]] if tokens.split_ten else []
        continuations = [
            [input_ids[i // n, -1].item()] + self.tokenizer(score_continuation(text, score_prefix),
                                                            add_special_tokens=False).input_ids + suffix
            for i, text in enumerate(texts)
        ]
        width = max(len(c) for c in continuations)
        rows = len(continuations)
        cont_ids = torch.full((rows, width), self.pad_id, dtype=torch.long, device=self.device)
        cont_mask = torch.zeros((rows, width), dtype=attention.dtype, device=self.device)
        for row, continuation in enumerate(continuations):
            cont_ids[row, width - len(continuation):] = torch.tensor(continuation, device=self.device)
            cont_mask[row, width - len(continuation):] = 1
        prompt_mask = attention.repeat_interleave(n, dim=0)
        full_mask = torch.cat([prompt_mask[:, :-1], cont_mask], dim=1)
        cache = copy.deepcopy(prompt_cache)
        cache.batch_repeat_interleave(n)
        positions = (full_mask.cumsum(dim=1) - 1).clamp(min=0)[:, -width:]
        logits = self.model(input_ids=cont_ids, attention_mask=full_mask, position_ids=positions,
                            **{self._cache_keyword: cache}, use_cache=True, logits_to_keep=2).logits.float()
        return _score_distributions(logits, tokens)

    @torch.inference_mode()
    def choice_probabilities(self, conversations: Sequence[Messages], continuations: Sequence[str],
                             choices: Sequence[str]) -> list[list[float]]:
        """P(first token of each choice) after each conversation and its continuation; one forward each.

        The prompt is prefilled as for generation (the shared few-shot prefix is cached), and only the
        last position's logits are computed.
        """
        results: list[list[float]] = []
        for start in range(0, len(conversations), self.batch_size):
            prompts, choice_ids = [], []
            for conversation, continuation in zip(conversations[start:start + self.batch_size],
                                                  continuations[start:start + self.batch_size], strict=True):
                ids = self.tokenizer(continuation, add_special_tokens=False).input_ids
                prompts.append(self.encode(conversation) + ids)
                choice_ids.append([choice_token(self.tokenizer, continuation, ids, choice) for choice in choices])
            probabilities = torch.softmax(self._last_logits(prompts), dim=-1)
            results.extend(probabilities[row, ids].tolist() for row, ids in enumerate(choice_ids))
        return results

    def _last_logits(self, prompts: list[list[int]]) -> torch.Tensor:
        """Next-token logits (float32) after each prompt."""
        if self.engine is not None:
            return self.engine.prefill(prompts, self._shared_length(prompts))[1]
        input_ids, attention, cache = self._prefill(prompts)
        return self.model(input_ids=input_ids[:, -1:], attention_mask=attention,
                          position_ids=_position_ids(attention)[:, -1:], **{self._cache_keyword: cache},
                          use_cache=True).logits[:, -1].float()

    def _score_tokens_for(self, prefix: str) -> ScoreTokens:
        if prefix not in self._score_tokens:
            self._score_tokens[prefix] = ScoreTokens.from_tokenizer(self.tokenizer, prefix)
        return self._score_tokens[prefix]


def _score_distributions(logits: torch.Tensor, tokens: ScoreTokens) -> list[ProbabilityScore]:
    """Probability scores from the logits (rows, 2, vocab) of a continuation's last two positions: the
    last one follows the score prefix, or, for tokenizers that split "10", the "1" appended after it."""
    read_at = logits[:, 0] if tokens.split_ten else logits[:, 1]
    first = torch.softmax(read_at, dim=-1)[:, list(tokens.score_ids)]
    if not tokens.split_ten:
        return [ProbabilityScore(*expected_score(row.tolist())) for row in first]
    after_one = torch.softmax(logits[:, 1], dim=-1)
    zero = after_one[:, tokens.ten_second_id]
    digit = after_one[:, list(tokens.digit_ids)].sum(dim=-1)
    return [ProbabilityScore(*expected_score(first[row].tolist(), zero[row].item(), digit[row].item()))
            for row in range(len(first))]


def _eos_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _static_copy(cache, config, repeats: int, room: int):
    """A preallocated copy of a prompt's KV cache, each row repeated, with `room` free positions.

    Decoding into a `DynamicCache` concatenates every layer's whole cache at every step; with a
    few-shot judge prompt that copy is most of a CPU decode step. A static cache writes in place.
    Its buffers are filled in one pass (a broadcast copy of the prompt rows; zeros only in the room,
    which attention reads masked, so it must not hold NaN garbage): fresh memory is slow to touch
    the first time, and zero-filling it all then copying a repeated temporary touched it three times.
    """
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    length = cache.get_seq_length()
    static = StaticCache(config=config, max_cache_len=length + room)
    if any(type(layer) is not StaticLayer for layer in static.layers):  # sliding-window layers: stay dynamic
        dynamic = copy.deepcopy(cache)
        dynamic.batch_repeat_interleave(repeats)
        return dynamic
    for source, target in zip(cache.layers, static.layers, strict=True):
        rows, heads, _, _ = source.keys.shape
        target.dtype, target.device = source.keys.dtype, source.keys.device
        target.batch_size, target.num_heads = rows * repeats, heads
        target.k_head_dim, target.v_head_dim = source.keys.shape[-1], source.values.shape[-1]
        target.keys = _repeated_with_room(source.keys, repeats, room)
        target.values = _repeated_with_room(source.values, repeats, room)
        target.cumulative_length = target.cumulative_length.to(target.device)
        target.cumulative_length.fill_(length)
        target.is_initialized = True
    return static


def _repeated_with_room(tensor: torch.Tensor, repeats: int, room: int) -> torch.Tensor:
    """(rows, heads, length, dim) -> (rows * repeats, heads, length + room, dim): each row repeated, room zeroed."""
    rows, heads, length, dim = tensor.shape
    out = torch.empty((rows, repeats, heads, length + room, dim), dtype=tensor.dtype, device=tensor.device)
    out[:, :, :, :length].copy_(tensor[:, None].expand(rows, repeats, heads, length, dim))
    out[:, :, :, length:].zero_()
    return out.view(rows * repeats, heads, length + room, dim)


def _by_prefix(conversations: Sequence[Messages]) -> list[list[int]]:
    """Indices of `conversations` grouped by their messages before the last: one judge template's system turn
    and few-shot examples, which every member's prompt then begins with."""
    return list(indices_by_value([repr(list(conversation[:-1])) for conversation in conversations]).values())


def _shared_lengths(groups: list[list[int]], encoded: list[list[int]]) -> list[int]:
    """Per prompt, how many leading tokens it shares with the other prompts of its group, when sharing them is
    worth it (see `HFGenerator._shared_length`): the prefix the engine computes once and remembers."""
    shared = [0] * len(encoded)
    for members in groups:
        length = HFGenerator._shared_length([encoded[i] for i in members])
        for i in members:
            shared[i] = length
    return shared


def _batches(groups: list[list[int]], encoded: list[list[int]], size: int) -> list[list[int]]:
    """Indices of the prompts in batches of `size`: a group's prompts one after another (a batch of one group
    reads their shared prefix once per decoding step), longest first within it (rows of a batch pad little),
    the group with the longest prompt first (an out-of-memory shows in the first batch)."""
    ordered = sorted((sorted(members, key=lambda i: -len(encoded[i])) for members in groups),
                     key=lambda members: -len(encoded[members[0]]))
    order = [i for members in ordered for i in members]
    return [order[start:start + size] for start in range(0, len(order), size)]


def _common_prefix_length(sequences: list[list[int]]) -> int:
    first, length = sequences[0], len(sequences[0])
    for other in sequences[1:]:
        length = min(length, len(other))
        for i in range(length):
            if first[i] != other[i]:
                length = i
                break
    return length


def _left_pad(sequences: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) as Hugging Face forwards take them."""
    ids, valid = left_pad(sequences, device, pad_id)
    return ids, valid.long()


def _position_ids(attention: torch.Tensor) -> torch.Tensor:
    """Positions that ignore left padding, as `generate` computes them."""
    return (attention.cumsum(dim=1) - 1).clamp(min=0)
