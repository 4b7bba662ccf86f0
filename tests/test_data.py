"""The data layer: every input format, every validation error, ids, limits."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from criticrm.cli import main
from criticrm.data.readers import DataConfig, DataValidationError, load_pairs
from criticrm.data.schema import content_id

SAMPLE = Path(__file__).parent.parent / "data" / "sample" / "train.jsonl"
ROWS = [
    {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5", "subset": "math-toy"},
    {"prompt": "Name a primary colour.", "chosen": "Red.", "rejected": "Green is primary in paint.", "id": "p2"},
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def load(path, **options):
    return load_pairs(DataConfig(data=str(path), **options))


def problems_of(path, **options) -> list[str]:
    with pytest.raises(DataValidationError) as caught:
        load(path, **options)
    return [str(p) for p in caught.value.problems]


# ------------------------------------------------------------------------------------------- formats


def test_shipped_sample_loads_with_sources():
    result = load(SAMPLE)
    assert len(result.pairs) == 64 and result.invalid_rows == 0
    assert all(p.source and p.subset and p.id for p in result.pairs)


def test_jsonl_json_csv_parquet_give_the_same_pairs(tmp_path):
    expected = load(write_jsonl(tmp_path / "a.jsonl", ROWS)).pairs
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": ROWS}))
    with (tmp_path / "a.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["prompt", "chosen", "rejected", "subset", "id"])
        writer.writeheader()
        writer.writerows(ROWS)
    columns = ["prompt", "chosen", "rejected", "subset", "id"]
    pq.write_table(pa.Table.from_pydict({c: [r.get(c) for r in ROWS] for c in columns}), tmp_path / "a.parquet")
    for name in ("a.json", "wrapped.json", "a.csv", "a.parquet"):
        assert load(tmp_path / name).pairs == expected, name


def test_datasets_save_to_disk_folder_and_split(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(ROWS), "test": Dataset.from_list(ROWS[:1])}).save_to_disk(str(tmp_path / "ds"))
    assert len(load(tmp_path / "ds").pairs) == 2
    assert len(load(tmp_path / "ds", split="test").pairs) == 1
    assert "split 'nope' not found" in str(problems_of(tmp_path / "ds", split="nope"))


def test_conversational_format_renders_messages(tmp_path):
    row = {
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "Lyon."}],
    }
    pair = load(write_jsonl(tmp_path / "c.jsonl", [row])).pairs[0]
    assert pair.prompt == "System: Be brief.\n\nUser: Capital of France?"
    assert (pair.chosen, pair.rejected) == ("Paris.", "Lyon.")
    single = dict(row, prompt=[{"role": "user", "content": "Capital of France?"}])
    assert load(write_jsonl(tmp_path / "s.jsonl", [single])).pairs[0].prompt == "Capital of France?"


def test_conversational_format_with_the_model_chat_template(tmp_path):
    row = {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}],
           "rejected": [{"role": "assistant", "content": "Go away."}]}
    pair = load_pairs(DataConfig(data=str(write_jsonl(tmp_path / "c.jsonl", [row]))),
                      lambda messages: "<" + messages[0]["content"] + ">").pairs[0]
    assert pair.prompt == "<Hi>"


def test_implicit_prompt_text_and_messages(tmp_path):
    text_row = {"chosen": "Human: Is the sky blue? Assistant: Yes, on a clear day.",
                "rejected": "Human: Is the sky blue? Assistant: No."}
    pair = load(write_jsonl(tmp_path / "t.jsonl", [text_row])).pairs[0]
    assert pair.prompt == "Human: Is the sky blue? Assistant: "
    assert (pair.chosen, pair.rejected) == ("Yes, on a clear day.", "No.")
    user = {"role": "user", "content": "Is the sky blue?"}
    message_row = {"chosen": [user, {"role": "assistant", "content": "Yes."}],
                   "rejected": [user, {"role": "assistant", "content": "No."}]}
    pair = load(write_jsonl(tmp_path / "m.jsonl", [message_row])).pairs[0]
    assert (pair.prompt, pair.chosen, pair.rejected) == ("Is the sky blue?", "Yes.", "No.")


def test_string_prompt_with_whole_conversations_takes_the_shared_turns_as_trl_does(tmp_path):
    """UltraFeedback's layout: a string prompt, and chosen/rejected that repeat it as their first turn. TRL's
    `maybe_extract_prompt` (trl/data_utils.py) replaces the prompt with the conversations' shared turns."""
    user = {"role": "user", "content": "What color is the sky?"}
    row = {"prompt": "What color is the sky?", "chosen": [user, {"role": "assistant", "content": "It is blue."}],
           "rejected": [user, {"role": "assistant", "content": "It is green."}]}
    system = {"role": "system", "content": "Be brief."}
    longer = {"prompt": "What color is the sky?", "chosen": [system, user, {"role": "assistant", "content": "Blue."}],
              "rejected": [system, user, {"role": "assistant", "content": "Green."}]}
    first, second = load(write_jsonl(tmp_path / "u.jsonl", [row, longer])).pairs
    assert (first.prompt, first.chosen, first.rejected) == ("What color is the sky?", "It is blue.", "It is green.")
    assert second.prompt == "System: Be brief.\n\nUser: What color is the sky?" and second.chosen == "Blue."
    # responses that share no turn keep the given prompt
    alone = {"prompt": "What color is the sky?", "chosen": [{"role": "assistant", "content": "Blue."}],
             "rejected": [{"role": "assistant", "content": "Green."}]}
    pair = load(write_jsonl(tmp_path / "a.jsonl", [alone])).pairs[0]
    assert (pair.prompt, pair.chosen) == ("What color is the sky?", "Blue.")


def test_column_mapping(tmp_path):
    rows = [{"question": "Q?", "good": "A", "bad": "B", "uid": 7, "task": "general"}]
    pair = load(write_jsonl(tmp_path / "m.jsonl", rows), prompt_field="question", chosen_field="good",
                rejected_field="bad", id_field="uid", domain_field="task").pairs[0]
    assert (pair.id, pair.prompt, pair.chosen, pair.rejected, pair.domain) == ("7", "Q?", "A", "B", "general")


def test_ids_are_given_or_a_stable_content_hash(tmp_path):
    pairs = load(write_jsonl(tmp_path / "a.jsonl", ROWS)).pairs
    assert pairs[1].id == "p2"
    assert pairs[0].id == content_id("What is 2 + 2?", "4", "5") == load(write_jsonl(tmp_path / "b.jsonl", ROWS)).pairs[0].id


def test_limit_reads_the_first_n_pairs():
    assert [p.id for p in load(SAMPLE, limit=3).pairs] == [p.id for p in load(SAMPLE).pairs[:3]]


def test_per_subset_reads_the_first_n_pairs_of_each_subset_in_file_order():
    every = load(SAMPLE).pairs
    wanted = [p for i, p in enumerate(every) if sum(q.subset == p.subset for q in every[:i]) < 2]
    sample = load(SAMPLE, per_subset=2).pairs
    assert [p.id for p in sample] == [p.id for p in wanted]
    assert len(sample) == 2 * len({p.subset for p in every})


# ---------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("line", "expected"), [
    ('{"prompt": "x", "chosen": "a", "rejected": ', "line 2: invalid JSON (Expecting value at column 44)"),
    ('["not", "an", "object"]', "expected a JSON object, got list"),
    ({"prompt": "x", "chosen": "a"}, "field 'rejected': missing field"),
    ({"prompt": "x", "chosen": 3, "rejected": "b"}, "field 'chosen': expected a string or a list"),
    ({"prompt": 1.5, "chosen": "a", "rejected": "b"}, "field 'prompt': expected a string or a list of messages, got float"),
    ({"prompt": "x", "chosen": "  ", "rejected": "b"}, "field 'chosen': expected non-empty text"),
    ({"prompt": "", "chosen": "a", "rejected": "b"}, "field 'prompt': expected non-empty text"),
    ({"prompt": "x", "chosen": "same", "rejected": "same "}, "identical to chosen"),
    ({"prompt": "x", "chosen": [{"role": "bot", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]},
     "field 'chosen[0].role': expected one of system, user, assistant, tool, got 'bot'"),
    ({"prompt": "x", "chosen": [{"role": "assistant", "content": None}], "rejected": [{"role": "assistant", "content": "b"}]},
     "field 'chosen[0].content': expected a string, got NoneType"),
    ({"prompt": "x", "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]}, "chosen is text but rejected is messages"),
    ({"chosen": "Apples are red.", "rejected": "Bananas are yellow."}, "share no prefix"),
    ({"prompt": "x", "chosen": "a", "rejected": "b", "subset": 5}, "field 'subset': expected a string, got int"),
    ({"prompt": "x", "chosen": "a", "rejected": "b", "id": ["x"]}, "field 'id': expected a string or integer id"),
    ({"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "3", "id": "dup"}, "duplicate id 'dup'"),
])
def test_each_validation_error_names_file_line_and_field(tmp_path, line, expected):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok", "chosen": "a", "rejected": "b", "id": "dup"}, line])
    problems = problems_of(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}, line 2") and expected in problems[0], problems[0]


def test_errors_list_at_most_twenty_and_count_the_rest(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", ["{oops"] * 25 + [ROWS[0]])
    with pytest.raises(DataValidationError) as caught:
        load(path)
    message = str(caught.value)
    assert "25 problem(s) among 26 row(s)" in message and "... and 5 more" in message
    assert "set skip_invalid" in message


def test_skip_invalid_skips_and_counts(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [ROWS[0], "{oops", {"prompt": "x", "chosen": "a"}, ROWS[1]])
    result = load(path, skip_invalid=True)
    assert [p.id for p in result.pairs][1] == "p2" and result.invalid_rows == 2 and len(result.problems) == 2


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("data.txt", "hello", "unsupported file type '.txt'"),
    ("broken.json", '{"data": [1, 2,', "invalid JSON"),
    ("scalar.json", "42", "expected a list of objects"),
    ("empty.jsonl", "\n\n", "no rows found"),
])
def test_file_level_errors(tmp_path, name, content, expected):
    (tmp_path / name).write_text(content)
    assert expected in "\n".join(problems_of(tmp_path / name))


def test_missing_file_is_a_clear_error(tmp_path):
    assert "no such file or folder" in problems_of(tmp_path / "nope" / "x.jsonl")[0]


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], {"prompt": "x", "chosen": "a", "rejected": "a"}])
    status = main(["critique", "--data", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert f"{path}, line 2, field 'rejected': identical to chosen" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing was started
