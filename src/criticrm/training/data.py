"""Training data: rows -> tokenized pairs -> critique comparisons -> padded batches with label positions.

A training example is one preference pair with all the sequences it needs: one per critique of y+ and
one per critique of y- (critic mode), or one per response (standard mode). Every sequence is forwarded
once per step; the pairing policy only decides which (chosen, rejected) sequences are compared by the
Bradley-Terry loss, so comparing every critique with every other (`all`) costs no extra forward pass.

The collator lays the batch out in rows (each pair one packed prefix-tree row by default, else one row per
sequence), pads them to the longest on the right, and returns the flat positions whose next token is a
critique token: the trainer computes LM logits at those positions only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from criticrm.data.readers import (
    DataConfig,
    DataValidationError,
    Problem,
    check_id,
    iter_rows,
    load_pairs,
    render_transcript,
)
from criticrm.data.schema import ScoredCritique, TrainingPair
from criticrm.data.text import is_blank
from criticrm.errors import CriticRMError
from criticrm.models.packing import PackedRow, pack_sequences
from criticrm.models.sequences import EncodedSequence, SequenceBuilder
from criticrm.rundir import TRAIN_FILE


class TrainingDataError(CriticRMError):
    """The training data is missing, unreadable or unusable for the chosen mode."""


# ---- reading ---------------------------------------------------------------------------------------
def resolve_data_file(path: str | Path) -> Path:
    """A folder means its train.jsonl (the refine stage's output); a file is itself."""
    path = Path(path)
    if path.is_dir():
        candidate = path / TRAIN_FILE
        if not candidate.is_file():
            found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
            raise TrainingDataError(f"{path} has no {TRAIN_FILE} (found: {found}); give the file itself")
        return candidate
    if not path.exists():
        raise TrainingDataError(f"{path} does not exist")
    return path


def load_training_pairs(path: str | Path, mode: str) -> list[TrainingPair]:
    """Read training rows.

    Refined rows (with `chosen_critiques`) serve both modes. Plain preference data (TRL formats, any
    file type `criticrm critique` reads) serves standard mode: its rows have no critiques.
    """
    file = resolve_data_file(path)
    first = next(iter_rows(str(file)), None)
    if first is not None and isinstance(first[1], dict) and "chosen_critiques" in first[1]:
        return _read_training_rows(file)
    if mode == "critic":
        raise TrainingDataError(f"{file} holds plain preference pairs without critiques; critic mode trains on the "
                                "refined critique data: run the pipeline (or its critique, filter and refine stages) "
                                "first, or train the baseline with mode standard")
    result = load_pairs(DataConfig(data=str(file)), render_transcript)
    return [TrainingPair(id=p.id, prompt=p.prompt, chosen=p.chosen, rejected=p.rejected, chosen_critiques=[],
                         rejected_critiques=[], critique_supervision=False, subset=p.subset, domain=p.domain,
                         source=p.source, margin=p.margin) for p in result.pairs]


def _read_training_rows(file: Path) -> list[TrainingPair]:
    """Refined rows (each row's own margin or none: they are not user preference data held to one rule)."""
    rows, problems, read = [], [], 0
    for location, row in iter_rows(str(file)):
        read += 1
        result = [row] if isinstance(row, Problem) else _training_row(row, location)
        if isinstance(result, list):
            problems += result
        else:
            rows.append(result)
    if problems:
        raise DataValidationError(str(file), problems, read)
    if not rows:
        raise TrainingDataError(f"{file} holds no training rows")
    return rows


def _training_row(row: dict[str, Any], location: str) -> TrainingPair | list[Problem]:
    """One refined row (the refine stage's `train.jsonl`, or a user's file of that shape), checked field by field."""
    problems: list[Problem] = []
    raw_id = row.get("id")
    id_problem = Problem(location, "id", "missing id") if raw_id in (None, "") else check_id(raw_id, location, "id")
    if id_problem:
        problems.append(id_problem)
    for name in ("prompt", "chosen", "rejected"):
        if not isinstance(row.get(name), str) or is_blank(row[name]):
            problems.append(Problem(location, name, "expected non-empty text"))
    critiques = {side: _critiques(row.get(side), location, side, problems)
                 for side in ("chosen_critiques", "rejected_critiques")}
    critiques |= {side: _critiques(row[side], location, side, problems)
                  for side in ("sampled_chosen_critiques", "sampled_rejected_critiques") if row.get(side) is not None}
    if not isinstance(row.get("critique_supervision"), bool):
        problems.append(Problem(location, "critique_supervision", "expected true or false"))
    for name in ("template", "subset", "domain", "source"):
        if row.get(name) is not None and not isinstance(row[name], str):
            problems.append(Problem(location, name, f"expected a string, got {type(row[name]).__name__}"))
    for name in ("margin", "judge_margin"):
        if row.get(name) is not None and not _is_number(row[name]):
            problems.append(Problem(location, name, f"expected a finite number, got {row[name]!r}"))
    if problems:
        return problems
    known = {item.name for item in dataclasses.fields(TrainingPair)}
    return TrainingPair.from_dict({key: value for key, value in row.items() if key in known}
                                  | critiques | {"id": str(row["id"]), "template": row.get("template") or "general"})


def _critiques(value: Any, location: str, side: str, problems: list[Problem]) -> list[ScoredCritique]:
    """A list of {text, score} critiques; each malformed entry is added to `problems`."""
    if not isinstance(value, list):
        problems.append(Problem(location, side, f"expected a list of critiques, got {type(value).__name__}"))
        return []
    critiques = []
    for index, critique in enumerate(value):
        if (isinstance(critique, dict) and isinstance(critique.get("text"), str)
                and (critique.get("score") is None or _is_number(critique["score"]))):
            critiques.append(ScoredCritique(critique["text"], critique.get("score")))
        else:
            problems.append(Problem(location, f"{side}[{index}]", "expected {text: string, score: number or null}"))
    return critiques


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def split_by_prompt(pairs: list[TrainingPair], fraction: float, seed: int) -> tuple[list[TrainingPair], list[TrainingPair]]:
    """Hold out about `fraction` of the pairs, whole prompts at a time (no prompt in both parts)."""
    if fraction <= 0 or len(pairs) < 2:
        return pairs, []
    groups: dict[str, list[TrainingPair]] = defaultdict(list)
    for pair in pairs:
        groups[pair.prompt].append(pair)
    keys = sorted(groups, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())
    target = max(1, round(fraction * len(pairs)))
    held: set[str] = set()
    count = 0
    for key in keys:
        if count >= target or len(held) == len(keys) - 1:
            break
        held.add(key)
        count += len(groups[key])
    train = [p for p in pairs if p.prompt not in held]
    return train, [p for p in pairs if p.prompt in held]


# ---- tokenized examples -------------------------------------------------------------------------------
@dataclass
class PairExample:
    """One pair's sequences. The reward reads `chosen` and `rejected` (the Bradley-Terry comparisons); the
    critique (LM) loss learns from them too when `supervised`, and from `targets`, critiques the reward
    never reads (under `reward_critiques: sampled`, a supervised pair's refined critiques)."""

    chosen: list[EncodedSequence]
    rejected: list[EncodedSequence]
    supervised: bool
    margin: float | None = None
    pair_id: str = ""
    targets: list[EncodedSequence] = field(default_factory=list)

    @property
    def trains_critique(self) -> bool:
        return self.supervised or bool(self.targets)

    @property
    def max_length(self) -> int:
        return max(len(s) for s in (*self.chosen, *self.rejected, *self.targets))


@dataclass
class EncodeReport:
    """What happened to the rows while they were tokenized (nothing is dropped silently)."""

    rows: int = 0
    pairs: int = 0
    supervised_pairs: int = 0
    reward_only_pairs: int = 0
    sequences: int = 0
    truncated_sequences: int = 0
    dropped_too_long: int = 0
    dropped_sequences: int = 0
    dropped_no_critique: int = 0
    critique_tokens: int = 0
    pairs_with_margin: int = 0
    tokens: int = 0
    templates: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def pair_margin(pair: TrainingPair, source: str) -> float | None:
    """The margin the Bradley-Terry loss asks of this pair: the user's column (`data`, TRL's rule), the base
    judge's score gap (`judge`, an ablation that leaks the untrained judge into the reward), or none."""
    return {"data": pair.margin, "judge": pair.judge_margin, "none": None}[source]


def reads_sampled(pair: TrainingPair, reward_critiques: str) -> bool:
    """Whether the reward reads this pair's sampled critiques instead of its refined ones.

    Under `reward_critiques: sampled` a supervised pair's refined critiques are LM targets only: they were
    selected because they agree with the human label, and a reward trained to read them learns to trust
    critiques more than its own, unselected, critiques at inference deserve. Its sampled ones are read instead.
    """
    if reward_critiques == "refined" or not pair.critique_supervision:
        return False
    if not pair.sampled_chosen_critiques or not pair.sampled_rejected_critiques:
        raise TrainingDataError(
            f"pair {pair.id} has critique supervision but no sampled_chosen_critiques / sampled_rejected_critiques, "
            "which reward_critiques 'sampled' reads: its rows were refined before criticrm kept the sampled "
            "critiques; run the filter and refine stages again (the pipeline does; `criticrm refine` into the same "
            "folder reuses its answers), or train with reward_critiques 'refined'")
    return True


def _encode_critiques(builder: SequenceBuilder, pair: TrainingPair, template: str, chosen: list[ScoredCritique],
                      rejected: list[ScoredCritique]) -> list[list[EncodedSequence | None]]:
    """One sequence per critique of y+ and of y- (None where one is too long and dropped)."""
    return [builder.encode_many([(pair.prompt, response, c.text) for c in critiques], template=template)
            for response, critiques in ((pair.chosen, chosen), (pair.rejected, rejected))]


def encode_pairs(pairs: list[TrainingPair], builder: SequenceBuilder, template: str | None = None,
                 margin_source: str = "data", reward_critiques: str = "refined") -> tuple[list[PairExample], EncodeReport]:
    """Tokenize every pair for the builder's mode; `template` overrides each row's template (critic mode)."""
    report = EncodeReport(rows=len(pairs))
    examples = []
    for pair in pairs:
        targets: list[EncodedSequence | None] = []
        if builder.mode == "critic":
            if not pair.chosen_critiques or not pair.rejected_critiques:
                report.dropped_no_critique += 1
                continue
            name = template or pair.template or "general"
            report.templates[name] = report.templates.get(name, 0) + 1
            refined = _encode_critiques(builder, pair, name, pair.chosen_critiques, pair.rejected_critiques)
            if reads_sampled(pair, reward_critiques):
                sides = _encode_critiques(builder, pair, name, pair.sampled_chosen_critiques or [],
                                          pair.sampled_rejected_critiques or [])
                targets = refined[0] + refined[1]
            else:
                sides = refined
        else:
            sides = [[builder.encode(pair.prompt, pair.chosen)], [builder.encode(pair.prompt, pair.rejected)]]
        chosen, rejected = ([s for s in side if s is not None] for side in sides)
        report.dropped_sequences += sum(s is None for side in (*sides, targets) for s in side)
        if not chosen or not rejected:  # every sequence of one side was too long (truncation 'drop')
            report.dropped_too_long += 1
            continue
        supervised = builder.mode == "critic" and bool(pair.critique_supervision) and not targets
        margin = pair_margin(pair, margin_source)
        example = PairExample(chosen, rejected, supervised, margin, pair.id, [s for s in targets if s is not None])
        examples.append(example)
        report.pairs += 1
        report.pairs_with_margin += margin is not None
        report.supervised_pairs += example.trains_critique
        report.reward_only_pairs += not example.trains_critique
        for sequence in (*chosen, *rejected, *example.targets):
            report.sequences += 1
            report.truncated_sequences += sequence.truncated
            report.tokens += len(sequence)
        for sequence in example.targets or ((*chosen, *rejected) if supervised else ()):
            report.critique_tokens += sequence.label_end - sequence.label_start
    return examples, report


# ---- pairing ----------------------------------------------------------------------------------------------
def choose_comparisons(n_chosen: int, n_rejected: int, policy: str, k: int = 1,
                       rng: random.Random | None = None) -> list[tuple[int, int]]:
    """Which (chosen critique, rejected critique) pairs the Bradley-Terry loss compares."""
    if policy == "matched":
        return [(i % n_chosen, i % n_rejected) for i in range(max(n_chosen, n_rejected))]
    every = [(i, j) for i in range(n_chosen) for j in range(n_rejected)]
    if policy == "all" or len(every) <= k:
        return every
    if policy == "random-k":
        return sorted((rng or random.Random(0)).sample(every, k))
    raise ValueError(f"unknown pairing policy {policy!r}")


class PairDataset(Dataset):
    """Pair examples; each item carries the sequences to forward and the comparisons to make.

    With `random-k` the comparisons change every epoch (`set_epoch`, called by the trainer), and are
    a pure function of (seed, epoch, index): a resumed run sees the same comparisons.
    """

    def __init__(self, examples: list[PairExample], pairing: str = "matched", k: int = 1, seed: int = 0,
                 margin_scale: float = 1.0):
        self.examples = examples
        self.pairing = pairing
        self.k = k
        self.seed = seed
        self.margin_scale = margin_scale
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def lengths(self) -> list[int]:
        return [e.max_length for e in self.examples]

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.examples[index]
        rng = random.Random(f"{self.seed}:{self.epoch}:{index}") if self.pairing == "random-k" else None
        comparisons = choose_comparisons(len(example.chosen), len(example.rejected), self.pairing, self.k, rng)
        used_chosen = sorted({i for i, _ in comparisons})
        used_rejected = sorted({j for _, j in comparisons})
        sequences = [example.chosen[i] for i in used_chosen] + [example.rejected[j] for j in used_rejected]
        chosen_slot = {i: slot for slot, i in enumerate(used_chosen)}
        rejected_slot = {j: len(used_chosen) + slot for slot, j in enumerate(used_rejected)}
        margin = example.margin * self.margin_scale if example.margin is not None else 0.0
        read = len(sequences)
        critique_slots = list(range(read)) if example.supervised else list(range(read, read + len(example.targets)))
        return {
            "sequences": sequences + example.targets,
            "comparisons": [(chosen_slot[i], rejected_slot[j]) for i, j in comparisons],
            "chosen_slots": [chosen_slot[i] for i in used_chosen],
            "read_slots": read,  # the first `read` sequences are read by the reward; the others are targets only
            "critique_slots": critique_slots,
            "margin": margin,
        }


# ---- batching --------------------------------------------------------------------------------------------
class LengthGroupedSampler(Sampler[int]):
    """Random batches of similar length: shuffle, cut into mega-batches, sort each by length, shuffle batches.

    The order is a pure function of (seed, epoch), so a resumed run replays it exactly. The longest batch
    comes first, so an out-of-memory error shows at the first step, not hours later.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0, mega_batch_multiplier: int = 50,
                 group: bool = True):
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.mega = batch_size * mega_batch_multiplier
        self.group = group
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        if not self.group:
            return iter(order)
        batches = []
        for start in range(0, len(order), self.mega):
            mega = sorted(order[start:start + self.mega], key=lambda i: -self.lengths[i])
            batches.extend(mega[i:i + self.batch_size] for i in range(0, len(mega), self.batch_size))
        if not batches:
            return iter([])
        longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]))
        first = batches.pop(longest)
        shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return iter([i for batch in [first, *shuffled] for i in batch])


@dataclass
class PairCollator:
    """Items of PairDataset -> one padded batch of every sequence, with comparisons and label positions.

    With `share_prefixes`, each item (pair) is one row: its sequences packed as a prefix tree
    (`criticrm.models.packing`), so the judge prompt that N critiques of a response share is forwarded once;
    the batch then carries a 4-D attention mask, position ids, and the row each reward is read in
    (`read_rows`). Without it, each sequence is its own row, padded on the right.

    `token_cost` is what one token costs in the linear layers, in units of one query-key pair of attention
    (about 6 x the hidden size). With it, a pair whose packed row would cost more than its separate rows
    (prefixes truncated at different points share little, and a long row's attention grows with its square)
    gets one row per sequence instead.
    """

    pad_token_id: int
    with_critique_loss: bool = True
    pad_to_multiple_of: int | None = None
    share_prefixes: bool = False
    token_cost: int | None = None

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences: list[EncodedSequence] = []
        chosen_index, rejected_index, weights, margins, pair_of_seq, is_chosen, is_read = [], [], [], [], [], [], []
        label_seq: list[bool] = []
        for pair_number, item in enumerate(items):
            offset = len(sequences)
            sequences.extend(item["sequences"])
            weight = 1.0 / len(item["comparisons"])
            for c, r in item["comparisons"]:
                chosen_index.append(offset + c)
                rejected_index.append(offset + r)
                weights.append(weight)
                margins.append(item["margin"])
            chosen_slots, critique_slots = set(item["chosen_slots"]), set(item["critique_slots"])
            for slot in range(len(item["sequences"])):
                pair_of_seq.append(pair_number)
                is_chosen.append(slot in chosen_slots)
                is_read.append(slot < item["read_slots"])
                label_seq.append(self.with_critique_loss and slot in critique_slots)
        layout = _packed_layout(items, self.token_cost) if self.share_prefixes else _separate_layout(sequences)
        width = max(len(ids) for ids in layout.row_ids)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(layout.row_ids), width), self.pad_token_id, dtype=torch.long)
        for row, ids in enumerate(layout.row_ids):
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        lm_positions, lm_targets = [], []
        for k, sequence in enumerate(sequences):
            if label_seq[k] and sequence.label_end > sequence.label_start:
                # Hidden state at position p predicts token p + 1.
                columns = layout.columns[k][sequence.label_start - 1:sequence.label_end - 1]
                lm_positions.append(layout.row_of[k] * width + torch.tensor(columns, dtype=torch.long))
                lm_targets.append(torch.tensor(sequence.input_ids[sequence.label_start:sequence.label_end],
                                               dtype=torch.long))
        empty = torch.zeros(0, dtype=torch.long)
        batch = {
            "input_ids": input_ids,
            "attention_mask": layout.attention_mask(width),
            "read_positions": torch.tensor([columns[-1] for columns in layout.columns], dtype=torch.long),
            "lm_positions": torch.cat(lm_positions) if lm_positions else empty,
            "lm_targets": torch.cat(lm_targets) if lm_targets else empty,
            "chosen_index": torch.tensor(chosen_index, dtype=torch.long),
            "rejected_index": torch.tensor(rejected_index, dtype=torch.long),
            "comparison_weights": torch.tensor(weights, dtype=torch.float32),
            "margins": torch.tensor(margins, dtype=torch.float32),
            "pair_of_sequence": torch.tensor(pair_of_seq, dtype=torch.long),
            "pair_of_row": torch.tensor([pair_of_seq[layout.row_of.index(row)] for row in range(len(layout.row_ids))],
                                        dtype=torch.long),
            "sequence_is_chosen": torch.tensor(is_chosen, dtype=torch.bool),
            "sequence_is_read": torch.tensor(is_read, dtype=torch.bool),
            "num_pairs": torch.tensor(len(items), dtype=torch.long),
            "num_tokens": torch.tensor(sum(len(s) for s in sequences), dtype=torch.long),  # before any packing
        }
        if self.share_prefixes:
            batch["position_ids"] = layout.position_ids(width)
            batch["read_rows"] = torch.tensor(layout.row_of, dtype=torch.long)
        return batch


@dataclass
class _Layout:
    """Where a batch's sequences sit: the token ids of each row, the row of each sequence and the column of
    each of its tokens; `packed` rows (prefix trees) also carry their attention structure."""

    row_ids: list[list[int]]
    row_of: list[int]
    columns: list[list[int]]
    packed: list[PackedRow] | None = None

    def attention_mask(self, width: int) -> torch.Tensor:
        if self.packed is None:  # [rows, width]: 1 on each row's tokens
            mask = torch.zeros((len(self.row_ids), width), dtype=torch.long)
            for row, ids in enumerate(self.row_ids):
                mask[row, :len(ids)] = 1
            return mask
        return torch.stack([row.attention_mask(width) for row in self.packed]).unsqueeze(1)  # [rows, 1, w, w]

    def position_ids(self, width: int) -> torch.Tensor:
        positions = torch.zeros((len(self.row_ids), width), dtype=torch.long)
        for row, packed in enumerate(self.packed or []):
            positions[row, :len(packed)] = torch.tensor(packed.position_ids, dtype=torch.long)
        return positions


def _separate_layout(sequences: list[EncodedSequence]) -> _Layout:
    return _Layout([s.input_ids for s in sequences], list(range(len(sequences))),
                   [list(range(len(s))) for s in sequences])


def _packed_layout(items: list[dict[str, Any]], token_cost: int | None) -> _Layout:
    """One packed row per item, or one row per sequence of an item whose packed row would cost more."""
    rows: list[PackedRow] = []
    row_of: list[int] = []
    columns: list[list[int]] = []
    for item in items:
        sequences = [s.input_ids for s in item["sequences"]]
        packed = [pack_sequences(sequences)]
        if token_cost is not None and _cost([len(packed[0])], token_cost) > _cost([len(s) for s in sequences],
                                                                                    token_cost):
            packed = [pack_sequences([s]) for s in sequences]
        for row in packed:
            row_of.extend([len(rows)] * len(row.index))
            columns.extend(row.index)
            rows.append(row)
    return _Layout([row.input_ids for row in rows], row_of, columns, rows)


def _cost(lengths: list[int], token_cost: int) -> int:
    """The forward cost of rows of these lengths: linear layers per token, attention per query-key pair."""
    return sum(token_cost * length + length * length for length in lengths)
