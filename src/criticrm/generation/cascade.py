"""A batched inference engine for Llama-layout causal LMs with three-level shared-prefix attention.

Why it exists: a critique is written after a long judge prompt, and every row of a batch re-reads that
prompt's keys and values at every decoding step. With Hugging Face's forward a batch of 32 rows reads
32 copies of the judge template's few-shot prefix, each prompt's own text once per sample (N = 4), and
expands grouped key/value heads to every query head before attending: on a CPU that memory traffic,
not the weights, is most of a decoding step. This engine keeps the keys and values in three levels
and reads each level once per step ("cascade" attention, as FlashInfer and vLLM's cascade kernels do):

- shared: the token prefix every prompt of the batch shares (the template's system turn and few-shot
  examples), one copy, cached across batches;
- prompt: each prompt's own tokens, one copy per prompt, left-padded to the longest;
- row: the tokens each row (sample) adds: its critique as it is generated. `CascadeStepper` keeps each
  row's keys and values when it leaves the batch, and `resume` continues after them, so what is read
  after a critique (a score prefix for the probability score, the end-of-turn token of the reward's
  training layout) costs its own few tokens, not a re-read of the critique.

Queries of every head that shares a key/value head are multiplied together (no head expansion); the
samples of one prompt are multiplied with that prompt's keys together; the levels' scores then share
one softmax and each level's weights multiply its own values, so the result is exact attention (up to
floating-point rounding). Every level is written by the same `extend` forward, chunked so a long prompt
never builds a large score tensor.

The layers' own modules do the rest (embedding, RMSNorm, projections, rotary embedding, MLP, final
norm, LM head): only attention and the cache are ours, so any checkpoint of a supported architecture
(Llama, Mistral without sliding window, Qwen2) runs unchanged; others fall back to Hugging Face.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from criticrm.generation.projections import LayerProjections, Quantize, fused_linear

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
PREFILL_CHUNK = 256  # tokens per row per forward while reading prompts: bounds the score tensor
MASKED = -1e30  # a finite "minus infinity": a fully masked query (left padding) stays finite, never NaN


def supports(model) -> bool:
    """Whether `model` (a Hugging Face causal LM) has the layer layout this engine implements."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return False
    if getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True):
        return False
    if getattr(config, "pretraining_tp", 1) != 1:
        return False
    inner = getattr(model, "model", None)
    needed = ("embed_tokens", "layers", "norm", "rotary_emb")
    if inner is None or not all(hasattr(inner, name) for name in needed) or not hasattr(model, "lm_head"):
        return False
    attention = inner.layers[0].self_attn
    return all(hasattr(attention, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")) and not any(
        hasattr(attention, name) for name in ("q_norm", "k_norm"))


@dataclass
class _Level:
    """Keys and values of one level: per layer (batch, kv_heads, length, head_dim), and which are real."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    valid: torch.Tensor  # (batch, length) bool; False for left padding (and unwritten room in `rows`)

    @property
    def length(self) -> int:
        return self.valid.shape[1]


@dataclass
class BatchState:
    """The KV levels of one batch. Its rows are cells of a (prompts, n) grid: row r is sample
    `slots[r] % n` of prompt `slots[r] // n` of the prompt level. While no row has left, the rows are the
    whole grid in order (`slots` None) and every level is read by plain reshapes; once finished rows leave
    one by one, `slots` says where the others sit, so a prompt's keys and values are still read once for
    all of its rows left."""

    shared: _Level | None
    prompts: _Level | None
    rows: _Level | None
    row_length: int  # positions of `rows` written so far
    n: int
    next_position: torch.Tensor  # (rows,) position id of each row's next token
    slots: torch.Tensor | None = None  # (rows,) each row's grid cell; None: the whole grid, in order


@dataclass
class DecodedRows:
    """What decoding left of a batch's rows: their own keys and values (`CascadeStepper.decoded_rows`) and
    the tokens each row generated, whose first ones those columns hold (all but the last are written)."""

    level: _Level
    tokens: list[list[int]]


@dataclass
class CascadeEngine:
    """Forward passes of one causal LM over `BatchState`s (see the module docstring)."""

    model: torch.nn.Module
    # "int8": decoding steps run their linear layers in dynamic int8 (`projections`; CPU only). Prompts
    # are still read in float, so every cached key and value of a prompt is exact; only the tokens a
    # step samples from are approximate.
    quantize: Quantize = "none"
    _shared: dict[tuple[int, ...], _Level] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        config = self.model.config
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.groups = self.heads // self.kv_heads
        self.scaling = self.head_dim ** -0.5
        self.inner = self.model.model
        self.projections = [LayerProjections.of(layer) for layer in self.inner.layers]
        self.lm_head = fused_linear([self.model.lm_head])
        if self.quantize == "none":
            self.step_projections, self.step_lm_head = self.projections, self.lm_head
        else:
            self.step_projections = [LayerProjections.of(layer, self.quantize) for layer in self.inner.layers]
            self.step_lm_head = fused_linear([self.model.lm_head], self.quantize)

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    # ---- batch construction ---------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, prompts: list[list[int]], shared: int | list[int] = 0) -> tuple[BatchState, torch.Tensor]:
        """Read `prompts` into a state with one row each; returns it and the next-token logits (float32) of
        every prompt.

        The first `shared[i]` tokens of prompt i (`shared` tokens of each, if an int) are a prefix (a judge
        template's system turn and few-shot examples) whose keys and values are computed once and
        remembered; only the rest of each prompt is computed here. When all prompts have the same prefix it becomes the state's shared level, read once
        per decoding step for every row; prompts of several prefixes get a copy of theirs in their own row.
        """
        shared = [shared] * len(prompts) if isinstance(shared, int) else shared
        prefixes = [tuple(prompt[:k]) for prompt, k in zip(prompts, shared, strict=True)]
        one = len(set(prefixes)) == 1
        own = [len(prompt) - (len(prefix) if one else 0) for prompt, prefix in zip(prompts, prefixes, strict=True)]
        width = max(own)
        state = BatchState(shared=self._shared_prefix(prefixes[0]) if one and prefixes[0] else None, prompts=None,
                           rows=None, row_length=0, n=1,
                           next_position=torch.tensor([len(p) for p in prompts], device=self.device))
        self._make_room(state, len(prompts), width)
        state.row_length = width
        rows = state.rows
        last = [None] * len(prompts)
        for prefix, members in indices_by_value(prefixes).items():
            level = self._shared_prefix(prefix) if prefix else None
            suffixes = [prompts[i][len(prefix):] for i in members]
            for group in length_groups([len(s) for s in suffixes]):
                # each group is computed without the others' padding, then laid out left-padded in the batch
                part = BatchState(shared=level, prompts=None, rows=None, row_length=0, n=1,
                                  next_position=torch.full((len(group),), len(prefix), dtype=torch.long, device=self.device))
                ids, valid = left_pad([suffixes[j] for j in group], self.device)
                hidden = self._extend_chunked(part, ids, valid)
                length, index = ids.shape[1], torch.tensor([members[j] for j in group], device=self.device)
                copies = [(width - length, part.rows, length)]
                if level is not None and not one:  # the prefix's keys and values, before the group's own
                    copies.append((width - length - level.length, level, level.length))
                for begin, source, size in copies:
                    for into, computed in zip(rows.keys + rows.values, source.keys + source.values, strict=True):
                        into[index, :, begin:begin + size] = computed[..., :size, :]
                    rows.valid[index, begin:begin + size] = source.valid[..., :size] if source is level else valid
                for row, j in enumerate(group):
                    last[members[j]] = hidden[row, -1]
        return state, self.logits(torch.stack(last)).float()

    def _shared_prefix(self, prefix: tuple[int, ...]) -> _Level:
        """The shared level of a token prefix, computed once and remembered (the last four)."""
        if prefix not in self._shared:
            if len(self._shared) >= 4:
                self._shared.pop(next(iter(self._shared)))
            state = BatchState(shared=None, prompts=None, rows=None, row_length=0, n=1,
                               next_position=torch.zeros(1, dtype=torch.long, device=self.device))
            ids = torch.tensor([prefix], device=self.device)
            self._extend_chunked(state, ids, torch.ones_like(ids, dtype=torch.bool))
            level = state.rows
            self._shared[prefix] = _Level([k[0, :, :state.row_length] for k in level.keys],
                                          [v[0, :, :state.row_length] for v in level.values],
                                          level.valid[:, :state.row_length])
        return self._shared[prefix]

    def fork(self, state: BatchState, n: int) -> BatchState:
        """A state whose rows are `n` samples of each prompt of `state` (whose rows become its prompts)."""
        prompts = _trim(state.rows, state.row_length) if state.rows is not None else state.prompts
        return BatchState(shared=state.shared, prompts=prompts, rows=None, row_length=0, n=n,
                          next_position=state.next_position.repeat_interleave(n))

    def resume(self, state: BatchState, n: int, decoded: DecodedRows, lengths: list[int],
               prompts: list[int]) -> BatchState:
        """A state of the `n` samples of each of `prompts` (indices into `state`, whose rows are the prompts:
        a `prefill` state), sample row r holding the first `lengths[r]` columns of its decoded row, so that an
        `extend` reads only what follows them. The unused columns stay as holes, masked like padding."""
        index = torch.tensor(prompts, device=self.device)
        chosen = BatchState(shared=state.shared, prompts=None, rows=_select(_trim(state.rows, state.row_length), index),
                            row_length=state.row_length, n=1, next_position=state.next_position[index])
        rows = self.fork(chosen, n)
        samples = (index[:, None] * n + torch.arange(n, device=self.device)).view(-1)
        width = max(max(lengths), 1)
        kept = torch.tensor(lengths, device=self.device)
        level = _select(_trim(decoded.level, width), samples)
        level.valid &= torch.arange(width, device=self.device)[None, :] < kept[:, None]
        rows.rows, rows.row_length = level, width
        rows.next_position = rows.next_position + kept
        return rows

    def select_rows(self, state: BatchState, keep: torch.Tensor) -> None:
        """Keep only rows `keep` (any of them, in that order), e.g. the finished ones dropped. A prompt leaves
        the prompt level when none of its rows is left."""
        slots = _grid_slots(state)[keep]
        state.next_position = state.next_position[keep]
        state.rows = _select(state.rows, keep)
        if state.prompts is None:
            return
        prompt = slots // state.n
        alive = torch.unique(prompt)  # sorted: the prompt level keeps its order
        if len(alive) < state.prompts.valid.shape[0]:
            state.prompts = _select(state.prompts, alive)
            prompt = torch.searchsorted(alive, prompt)
        slots = prompt * state.n + slots % state.n
        whole = len(slots) == state.prompts.valid.shape[0] * state.n and torch.equal(
            slots, torch.arange(len(slots), device=slots.device))
        state.slots = None if whole else slots

    # ---- forward --------------------------------------------------------------------------------
    @torch.inference_mode()
    def logits(self, hidden: torch.Tensor, step: bool = False) -> torch.Tensor:
        """The LM head over `hidden`; `step`: a decoding step's (the `quantize` setting's head)."""
        head = self.step_lm_head if step else self.lm_head
        return head(hidden) if head is not None else self.model.lm_head(hidden)

    def _extend_chunked(self, state: BatchState, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """`extend` in chunks of PREFILL_CHUNK tokens; returns the last chunk's hidden states."""
        hidden = None
        for start in range(0, ids.shape[1], PREFILL_CHUNK):
            hidden = self.extend(state, ids[:, start:start + PREFILL_CHUNK], valid[:, start:start + PREFILL_CHUNK])
        return hidden

    @torch.inference_mode()
    def extend(self, state: BatchState, ids: torch.Tensor, valid: torch.Tensor | None = None,
               step: bool = False) -> torch.Tensor:
        """Run tokens `ids` (rows, T) after each row's current tokens; returns the final-norm hidden states
        (rows, T, hidden). `valid` marks real tokens (False: left padding, never attended to); `step`: a
        decoding step (its linear layers as `quantize` says)."""
        rows, width = ids.shape
        valid = torch.ones_like(ids, dtype=torch.bool) if valid is None else valid
        positions = state.next_position[:, None] + valid.long().cumsum(1) - 1
        state.next_position = state.next_position + valid.sum(1)
        start = state.row_length
        self._make_room(state, rows, width)
        state.rows.valid[:, start:start + width] = valid
        state.row_length = start + width
        bias = self._attention_bias(state, width)
        cell = None if state.slots is None else (state.slots // state.n, state.slots % state.n)

        hidden = self.inner.embed_tokens(ids)
        cos, sin = self.inner.rotary_emb(hidden, positions.clamp(min=0))
        cos, sin = cos[:, :, None], sin[:, :, None]  # broadcast over heads in the (rows, T, heads, dim) layout
        layer_projections = self.step_projections if step else self.projections
        for index, layer in enumerate(self.inner.layers):
            normed = layer.input_layernorm(hidden)
            projections = layer_projections[index]
            query, key, value = projections.qkv(normed)
            query = _rotate(query.view(rows, width, self.heads, self.head_dim), cos, sin)
            key = _rotate(key.view(rows, width, self.kv_heads, self.head_dim), cos, sin)
            value = value.view(rows, width, self.kv_heads, self.head_dim)
            state.rows.keys[index][:, :, start:start + width] = key.transpose(1, 2)
            state.rows.values[index][:, :, start:start + width] = value.transpose(1, 2)
            mixed = self._attend(state, index, query, bias, cell)
            hidden = hidden + projections.output(mixed)
            hidden = hidden + projections.mlp(layer.post_attention_layernorm(hidden))
        return self.inner.norm(hidden)

    def _make_room(self, state: BatchState, rows: int, width: int) -> None:
        """Grow the row level to hold `width` more tokens (doubling, so decoding reallocates rarely)."""
        needed = state.row_length + width
        if state.rows is not None and state.rows.length >= needed:
            return
        capacity = max(needed, 2 * (state.rows.length if state.rows is not None else 0), 64)
        dtype = self.model.lm_head.weight.dtype

        def grown(old: torch.Tensor | None) -> torch.Tensor:
            new = torch.zeros((rows, self.kv_heads, capacity, self.head_dim), dtype=dtype, device=self.device)
            if old is not None:
                new[:, :, :state.row_length] = old[:, :, :state.row_length]
            return new

        layers = len(self.inner.layers)
        old = state.rows
        valid = torch.zeros((rows, capacity), dtype=torch.bool, device=self.device)
        if old is not None:
            valid[:, :state.row_length] = old.valid[:, :state.row_length]
        state.rows = _Level([grown(old.keys[i] if old else None) for i in range(layers)],
                            [grown(old.values[i] if old else None) for i in range(layers)], valid)

    def _attention_bias(self, state: BatchState, width: int) -> torch.Tensor:
        """What every layer adds to its attention scores in this forward: 0 where a query may attend, MASKED
        where not, over the levels' keys side by side (shared, prompt, row), as (rows, 1, 1, T, keys).

        Built once per forward (every layer reads the same mask): a query at chunk position t sees the whole
        shared prefix, its prompt's real tokens, its row's earlier tokens and the chunk's first t + 1.
        """
        rows, start = state.next_position.shape[0], state.row_length - width
        device = state.next_position.device
        causal = torch.ones((width, start + width), dtype=torch.bool, device=device).tril(diagonal=start)
        parts = [state.rows.valid[:, None, :start + width] & causal]
        if state.prompts is not None:
            own = state.prompts.valid[_grid_slots(state) // state.n]
            parts.insert(0, own[:, None, :].expand(rows, width, -1))
        if state.shared is not None:
            parts.insert(0, state.shared.valid.view(1, 1, -1).expand(rows, width, -1))
        allowed = torch.cat(parts, dim=-1)
        bias = torch.zeros(allowed.shape, dtype=torch.float32, device=device).masked_fill_(~allowed, MASKED)
        return bias[:, None, None]

    def _attend(self, state: BatchState, index: int, query: torch.Tensor, bias: torch.Tensor,
                cell: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """Attention of `query` (rows, T, heads, head_dim) over the three levels -> (rows, T, heads*head_dim).

        Each level's scores are computed in its own layout (the shared prefix once for every row, a prompt
        once for its samples), then laid side by side for one softmax, and each level's weights multiply
        its own values. A decoding step is bound by the number of small operations, not by bytes: one
        softmax over the concatenated scores is a handful of operations where merging per-level partial
        softmaxes (as flash attention merges blocks) took dozens.

        Scores are laid out as (lead, kv, per_kv, keys) with lead = (prompts, n) while the rows are the whole
        grid, else (rows, 1): the prompt level then runs on the grid, its empty cells' queries zero, and is
        gathered to the rows left (a few small copies, where the rows that left would cost whole rows).
        `cell` is each row's (prompt, sample) in that grid, None while the rows are the whole grid.
        """
        rows, width, _, dim = query.shape
        kv, per_kv, n = self.kv_heads, self.groups * width, state.n  # per_kv: query rows sharing a kv head
        lead = (rows // n, n) if cell is None else (rows, 1)
        # (rows, kv, groups*T, dim); a view when T == 1 (decoding)
        grouped = query.view(rows, width, kv, self.groups, dim).permute(0, 2, 3, 1, 4).reshape(rows, kv, per_kv, dim)
        scores, values = [], []  # per level: scores as (*lead, kv, per_kv, keys), and the values
        if state.shared is not None:  # one copy for every row: (kv, rows*groups*T, dim) @ (kv, dim, P)
            flat = grouped.transpose(0, 1).reshape(kv, rows * per_kv, dim)
            level = torch.matmul(flat, state.shared.keys[index].transpose(-1, -2))
            scores.append(level.view(kv, *lead, per_kv, -1).permute(1, 2, 0, 3, 4))
            values.append(state.shared.values[index])
        if state.prompts is not None:  # one copy per prompt, its samples' queries together
            prompts = state.prompts.valid.shape[0]
            grid = grouped.view(prompts, n, kv, per_kv, dim) if cell is None else _scattered(grouped, cell, prompts, n)
            by_prompt = grid.transpose(1, 2).reshape(prompts, kv, n * per_kv, dim)
            level = torch.matmul(by_prompt, state.prompts.keys[index].transpose(-1, -2))
            level = level.view(prompts, kv, n, per_kv, -1).transpose(1, 2)  # (prompts, n, kv, per_kv, L)
            scores.append(level if cell is None else level[cell].unsqueeze(1))
            values.append(state.prompts.values[index])
        length = state.row_length
        level = torch.matmul(grouped, state.rows.keys[index][:, :, :length].transpose(-1, -2))
        scores.append(level.view(*lead, kv, per_kv, -1))
        values.append(state.rows.values[index][:, :, :length])

        sizes = [level.shape[-1] for level in scores]
        joined = torch.cat(scores, dim=-1).float().mul_(self.scaling)
        del scores  # a prefill chunk's scores are the largest tensors of a forward: hold one copy at a time
        shape = joined.shape
        joined = joined.view(*lead, kv, self.groups, width, -1).add_(bias.view(*lead, 1, 1, width, -1)).view(shape)
        weights = torch.softmax(joined, dim=-1).to(query.dtype).split(sizes, dim=-1)
        del joined

        # the levels' weighted values are summed in float32 and rounded once, as one attention would be
        out = torch.matmul(weights[-1].reshape(rows, kv, per_kv, -1), values[-1]).float().view(*lead, kv, per_kv, dim)
        if state.prompts is not None:
            w = weights[-2] if cell is None else _scattered(weights[-2][:, 0], cell, prompts, n)
            mixed = torch.matmul(w.transpose(1, 2).reshape(prompts, kv, n * per_kv, -1), values[-2]).float()
            mixed = mixed.view(prompts, kv, n, per_kv, dim).transpose(1, 2)
            out += mixed if cell is None else mixed[cell].unsqueeze(1)
        if state.shared is not None:
            w = weights[0].permute(2, 0, 1, 3, 4).reshape(kv, rows * per_kv, -1)
            out += torch.matmul(w, values[0]).float().view(kv, *lead, per_kv, dim).permute(1, 2, 0, 3, 4)
        # (*lead, kv, groups, T, dim) -> (rows, T, heads*dim)
        out = out.to(query.dtype).reshape(rows, kv, self.groups, width, dim)
        return out.permute(0, 3, 1, 2, 4).reshape(rows, width, self.heads * dim)


def _grid_slots(state: BatchState) -> torch.Tensor:
    """Each row's cell of the (prompts, n) grid (see `BatchState`)."""
    if state.slots is not None:
        return state.slots
    return torch.arange(state.next_position.shape[0], device=state.next_position.device)


def _scattered(per_row: torch.Tensor, cell: tuple[torch.Tensor, torch.Tensor], prompts: int, n: int) -> torch.Tensor:
    """Rows' tensors (rows, ...) laid into a zero (prompts, n, ...) grid at their cells."""
    grid = per_row.new_zeros((prompts, n, *per_row.shape[1:]))
    grid[cell] = per_row
    return grid


def indices_by_value(values: list) -> dict:
    """Indices of `values` by value, in order of first appearance."""
    groups: dict = {}
    for index, value in enumerate(values):
        groups.setdefault(value, []).append(index)
    return groups


def length_groups(lengths: list[int], slack: float = 1.25, max_tokens: int = 4096) -> list[list[int]]:
    """Indices of items of `lengths` tokens in groups of similar length (the longest at most `slack` times the
    shortest, at most `max_tokens` padded tokens), so a forward over a group computes little padding."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        length = max(lengths[i], 1)
        if group is None or length > slack * max(lengths[group[0]], 1) or length * (len(group) + 1) > max_tokens:
            groups.append([i])
        else:
            group.append(i)
    return groups


class CascadeStepper:
    """`decoding.Stepper` over the engine: one token per row per step.

    A row's own keys and values are kept when it leaves the batch (`decoded_rows`): what follows a
    critique (its probability score, the reward layout's end-of-turn token) is then read after the
    tokens decoding already wrote, instead of re-reading the whole critique.
    """

    def __init__(self, engine: CascadeEngine, state: BatchState):
        self.engine, self.state = engine, state
        self.origin = torch.arange(state.next_position.shape[0], device=state.next_position.device)
        self._left: list[tuple[torch.Tensor, _Level]] = []  # (original rows, their keys/values) of dropped rows

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.engine.extend(self.state, tokens[:, None], step=True)[:, -1]
        return self.engine.logits(hidden, step=True).float()

    def drop_rows(self, keep: torch.Tensor) -> None:
        dropped = torch.ones(len(self.origin), dtype=torch.bool, device=keep.device)
        dropped[keep] = False
        self._keep_rows(dropped.nonzero().squeeze(1))
        self.engine.select_rows(self.state, keep)
        self.origin = self.origin[keep]

    def decoded_rows(self) -> _Level:
        """Every row's own keys and values as decoding left them, in the original row order (all rows, those
        still in the batch included): column j holds the j-th token fed, `valid` marks the columns written."""
        self._keep_rows(torch.arange(len(self.origin), device=self.origin.device))
        rows = int(sum(len(origin) for origin, _ in self._left))
        width = max(level.length for _, level in self._left)
        like = self._left[0][1]

        def gathered(tensors: list[torch.Tensor]) -> torch.Tensor:
            out = tensors[0].new_zeros((rows, *tensors[0].shape[1:2], width, tensors[0].shape[-1]))
            for (origin, _), tensor in zip(self._left, tensors, strict=True):
                out[origin, :, :tensor.shape[2]] = tensor
            return out

        valid = like.valid.new_zeros((rows, width))
        for origin, level in self._left:
            valid[origin, :level.length] = level.valid
        layers = range(len(like.keys))
        return _Level([gathered([level.keys[i] for _, level in self._left]) for i in layers],
                      [gathered([level.values[i] for _, level in self._left]) for i in layers], valid)

    def _keep_rows(self, rows: torch.Tensor) -> None:
        if len(rows):
            level = _trim(self.state.rows, self.state.row_length)
            self._left.append((self.origin[rows], _select(level, rows)))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding, the rotate-half form every supported architecture uses."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _select(level: _Level | None, keep: torch.Tensor) -> _Level | None:
    if level is None:
        return None
    return _Level([k.index_select(0, keep) for k in level.keys], [v.index_select(0, keep) for v in level.values],
                  level.valid.index_select(0, keep))


def _trim(level: _Level, length: int) -> _Level:
    return _Level([k[:, :, :length] for k in level.keys], [v[:, :, :length] for v in level.values],
                  level.valid[:, :length])


def left_pad(sequences: list[list[int]], device, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (ids, valid) tensors, each row right-aligned (left padding with `pad_id`)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    valid = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, sequence in enumerate(sequences):
        if sequence:
            ids[row, width - len(sequence):] = torch.tensor(sequence)
            valid[row, width - len(sequence):] = True
    return ids.to(device), valid.to(device)
