"""Sequence layout, label mask and read position, checked on token ids (tokenizer only: fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from criticrm.models.backbone import load_tokenizer
from criticrm.models.sequences import SequenceBuilder, SequenceTooLongError, pad_sequences
from criticrm.testing.rows import synthetic_rows
from criticrm.training.data import PairCollator, PairDataset, encode_pairs

SAMPLE = Path(__file__).parent.parent / "data" / "sample" / "train.jsonl"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(None)


def test_critic_layout_reads_the_end_of_turn_token_closing_the_critique(tokenizer):
    builder = SequenceBuilder(tokenizer, mode="critic", max_length=512)
    critique = "Correct and complete.\nScore: 9/10"
    sequence = builder.encode("What is 2+2?", "It is 4.", critique)
    prefix = builder.prompt_ids("What is 2+2?", "It is 4.")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert sequence.input_ids[:len(prefix)] == prefix  # the generation prompt, exactly
    assert sequence.read_position == len(sequence) - 1
    assert sequence.input_ids[sequence.read_position] == im_end == tokenizer.pad_token_id
    body = tokenizer(critique, add_special_tokens=False)["input_ids"]
    assert sequence.input_ids[sequence.label_start:sequence.label_end] == body + [im_end]
    assert sequence.label_start == len(prefix)
    text = tokenizer.decode(sequence.input_ids)
    assert "[Request]\nWhat is 2+2?" in text and "[Response]\nIt is 4." in text
    assert "Score: 2/10" not in text  # no few-shot examples in training / scoring sequences


def test_standard_layout_reads_the_end_of_the_response_and_has_no_labels(tokenizer):
    builder = SequenceBuilder(tokenizer, mode="standard", max_length=512)
    sequence = builder.encode("What is 2+2?", "It is 4.")
    assert tokenizer.decode(sequence.input_ids).endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
                                                         "<|im_start|>assistant\nIt is 4.<|im_end|>")
    assert sequence.label_start == sequence.label_end
    with pytest.raises(ValueError):
        SequenceBuilder(tokenizer, mode="critic").encode("p", "r")  # critic mode needs a critique


def test_label_mask_excludes_every_prompt_and_response_token(tokenizer):
    rows = synthetic_rows(SAMPLE, limit=6)
    builder = SequenceBuilder(tokenizer, mode="critic", max_length=384)
    examples, report = encode_pairs(rows, builder)
    assert report.pairs == 6 and report.reward_only_pairs == 1
    dataset = PairDataset(examples, pairing="all")
    batch = PairCollator(tokenizer.pad_token_id)([dataset[i] for i in range(len(dataset))])
    width = batch["input_ids"].shape[1]
    rows_of, columns = batch["lm_positions"] // width, batch["lm_positions"] % width
    # every target is the token right after its position, and lies inside the critique span of its row
    sequences = [s for i in range(len(dataset)) for s in dataset[i]["sequences"]]
    supervised = [slot in dataset[i]["critique_slots"] for i in range(len(dataset))
                  for slot in range(len(dataset[i]["sequences"]))]
    expected_targets = []
    for row, (sequence, is_supervised) in enumerate(zip(sequences, supervised, strict=True)):
        mine = columns[rows_of == row] + 1
        if not is_supervised:
            assert mine.numel() == 0  # reward-only rows get no LM loss
            continue
        assert mine.tolist() == list(range(sequence.label_start, sequence.label_end))
        prefix_len = sequence.label_start
        assert all(position >= prefix_len for position in mine.tolist())
        expected_targets += sequence.input_ids[sequence.label_start:sequence.label_end]
    assert batch["lm_targets"].tolist() == expected_targets
    assert batch["input_ids"].view(-1)[batch["lm_positions"] + 1].tolist() == expected_targets
    # the critique tokens carry no token of the judge prompt (prompt and response) of their row
    for row in range(len(sequences)):
        targets = batch["lm_targets"][rows_of == row].tolist()
        if targets:
            critique_text = tokenizer.decode(targets[:-1])
            assert critique_text.rstrip().endswith("/10") and "[Response]" not in critique_text


def test_standard_collation_has_no_critique_positions(tokenizer):
    rows = synthetic_rows(SAMPLE, limit=3)
    examples, _ = encode_pairs(rows, SequenceBuilder(tokenizer, mode="standard", max_length=384))
    dataset = PairDataset(examples)
    batch = PairCollator(tokenizer.pad_token_id, with_critique_loss=False)([dataset[i] for i in range(3)])
    assert batch["lm_positions"].numel() == 0 and batch["input_ids"].shape[0] == 6


def test_truncation_keeps_the_critique_and_the_read_token(tokenizer):
    long_prompt, long_response = "word " * 400, "answer " * 300
    critique = "Too long and repetitive.\nScore: 2/10"
    builder = SequenceBuilder(tokenizer, mode="critic", max_length=128)
    sequence = builder.encode(long_prompt, long_response, critique)
    assert len(sequence) == 128 and sequence.truncated
    body = tokenizer(critique, add_special_tokens=False)["input_ids"]
    assert sequence.input_ids[sequence.label_start:sequence.label_end] == body + [tokenizer.pad_token_id]
    assert tokenizer.decode(sequence.input_ids[:8]).startswith("<|im_start|>system")
    assert tokenizer.decode(sequence.input_ids[sequence.label_start - 4:sequence.label_start]) == "<|im_start|>assistant\n"
    assert SequenceBuilder(tokenizer, mode="critic", max_length=128, truncation="drop").encode(
        long_prompt, long_response, critique) is None
    with pytest.raises(SequenceTooLongError):
        SequenceBuilder(tokenizer, mode="critic", max_length=128, truncation="error").encode(
            long_prompt, long_response, critique)
    standard = SequenceBuilder(tokenizer, mode="standard", max_length=100).encode(long_prompt, long_response)
    assert len(standard) == 100 and standard.input_ids[-1] == tokenizer.pad_token_id


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_read_positions(side):
    batch = pad_sequences([[5, 6, 7], [8]], pad_token_id=2, padding_side=side)
    for row, ids in enumerate(([5, 6, 7], [8])):
        assert batch.input_ids[row, batch.read_positions[row]].item() == ids[-1]
        assert batch.attention_mask[row].sum().item() == len(ids)
