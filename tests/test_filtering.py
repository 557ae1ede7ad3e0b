"""filter-summary: keep summary rows, dense re-indexing of embeddings, drop counts, validation errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError
from vecflow.data.filtering import filter_summary, parse_splits, reindex
from vecflow.core.io import load_tensors, read_jsonl, save_tensors

TEMPLATE = "Summarize the conversation encoded here: <EMB>\nSummary:"


def _unit_rows(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _row(task: str, index: int, target="text", **extra) -> dict:
    row = {"task_type": task, "input_prompt_template": TEMPLATE, "embedding_index": index, **extra}
    if target is not None:
        row["target_text"] = target
    return row


def _write_split(folder: Path, split: str, rows: list, embeddings: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}_synthesis.jsonl").write_text("".join(
        (r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    save_tensors(folder / f"{split}_embeddings.safetensors", {"embeddings": embeddings})


MIXED = [
    _row("topic", 0, "food"),
    _row("summary", 3, "s3 first", variation=0, temperature=0.3, top_p=0.85, token_count=12),
    _row("summary", 1, "s1"),
    _row("qa", 2, "answer"),
    _row("summary", 3, "s3 second", variation=1),
    _row("summary", 4, "   "),
    _row("summary", 0, None),
    _row("topic", 4, "travel"),
    _row("summary", 5, "s5", source_id="dlg5"),
]


def test_filter_keeps_summaries_and_reindexes_densely(tmp_path):
    old = _unit_rows(6)
    _write_split(tmp_path / "in", "train", MIXED, old)
    stats = filter_summary(tmp_path / "in", ["train"], {"seed": 1}, tmp_path / "out", tmp_path / "stats.json")

    kept = read_jsonl(tmp_path / "out" / "train_synthesis.jsonl")
    new = load_tensors(tmp_path / "out" / "train_embeddings.safetensors", ["embeddings"])["embeddings"]
    assert [r["target_text"] for r in kept] == ["s3 first", "s1", "s3 second", "s5"]
    assert [r["embedding_index"] for r in kept] == [0, 1, 0, 2]  # order of first use
    assert new.shape == (3, 8) and new.dtype == np.float32
    original_index = {"s3 first": 3, "s1": 1, "s3 second": 3, "s5": 5}
    for record in kept:
        np.testing.assert_array_equal(new[record["embedding_index"]], old[original_index[record["target_text"]]])
    assert kept[0]["temperature"] == 0.3 and kept[3]["source_id"] == "dlg5"  # other fields are kept as they were
    # seed-003 rows have no source_id: the original embedding row names the source (what predict-elm groups by)
    assert [r["source_id"] for r in kept[:3]] == ["train_synthesis:3", "train_synthesis:1", "train_synthesis:3"]

    split = stats["splits"]["train"]
    assert (split["rows_in"], split["rows_kept"], split["rows_dropped"]) == (9, 4, 5)
    assert split["dropped"] == {"task_type": {"qa": 1, "topic": 2}, "missing_target_text": 1, "empty_target_text": 1}
    assert (split["embeddings_in"], split["embeddings_kept"], split["dim"]) == (6, 3, 8)
    assert json.loads((tmp_path / "stats.json").read_text()) == stats


def test_reindex_is_order_of_first_use():
    records, used = reindex([{"embedding_index": 7}, {"embedding_index": 2}, {"embedding_index": 7}])
    assert used == [7, 2] and [r["embedding_index"] for r in records] == [0, 1, 0]


SEED003_TEMPLATE = "Summarize the following text:\n\n{text}\n\nSummary:"


def _seed003_row(task: str, index: int, target: str, variation: int = 0) -> dict:
    """A row in exactly the seed-003 layout (no source_id, the {text} placeholder)."""
    return {"task_type": task, "input_prompt_template": SEED003_TEMPLATE, "embedding_index": index,
            "target_text": target, "variation": variation, "temperature": 0.7, "top_p": 0.9, "token_count": 17}


def test_seed003_rows_with_the_text_placeholder_are_accepted_and_normalised(tmp_path):
    rows = [_seed003_row("summary", 1, "s1"), _seed003_row("qa", 0, "a"), _seed003_row("summary", 1, "s1b", 1),
            {**_seed003_row("summary", 0, "s0"), "input_prompt_template": "Summarize: <EMB>"}]
    _write_split(tmp_path / "in", "train", rows, _unit_rows(2))
    stats = filter_summary(tmp_path / "in", ["train"], {}, tmp_path / "out", tmp_path / "stats.json")
    kept = read_jsonl(tmp_path / "out" / "train_synthesis.jsonl")
    assert [r["input_prompt_template"] for r in kept] == [
        "Summarize the following text:\n\n<EMB>\n\nSummary:"] * 2 + ["Summarize: <EMB>"]
    assert [r["embedding_index"] for r in kept] == [0, 0, 1]
    assert [r["source_id"] for r in kept] == ["train_synthesis:1", "train_synthesis:1", "train_synthesis:0"]
    assert kept[0]["temperature"] == 0.7 and kept[0]["token_count"] == 17
    assert stats["splits"]["train"]["templates_normalised"] == 2


@pytest.mark.parametrize(
    "bad_row, message",
    [
        (_row("summary", 6), r"train_synthesis\.jsonl:2: field 'embedding_index': 6 is out of range \(the embeddings have 6 rows\)"),
        (_row("topic", -1), r"train_synthesis\.jsonl:2: field 'embedding_index': -1 is out of range"),
        ({"task_type": "summary", "embedding_index": 0, "target_text": "x"},
         r"train_synthesis\.jsonl:2: field 'input_prompt_template': missing"),
        (_row("summary", "0"), r"train_synthesis\.jsonl:2: field 'embedding_index': expected int, got str"),
        (_row("summary", True), r"train_synthesis\.jsonl:2: field 'embedding_index': expected int, got bool"),
        (_row("summary", 0, 5), r"train_synthesis\.jsonl:2: field 'target_text': expected str or NoneType, got int"),
        (_row("summary", 0, variation="a"), r"train_synthesis\.jsonl:2: field 'variation': expected int, got str"),
        ({**_row("summary", 0), "input_prompt_template": "Summarize the text:"},
         r"train_synthesis\.jsonl:2: field 'input_prompt_template': needs exactly one placeholder '<EMB>' or "
         r"'\{text\}' \(found none\)"),
        ({**_row("summary", 0), "input_prompt_template": "{text} and <EMB>"},
         r"train_synthesis\.jsonl:2: field 'input_prompt_template': needs exactly one .* \(found 2\)"),
        ("{oops", r"train_synthesis\.jsonl:2: invalid JSON"),
    ],
)
def test_bad_records_are_errors_naming_file_line(tmp_path, bad_row, message):
    _write_split(tmp_path / "in", "train", [_row("summary", 0), bad_row], _unit_rows(6))
    with pytest.raises(VecflowError, match=message):
        filter_summary(tmp_path / "in", ["train"], {}, tmp_path / "out", tmp_path / "stats.json")
    assert not (tmp_path / "out").exists() and not (tmp_path / "stats.json").exists()


@pytest.mark.parametrize(
    "embeddings, message",
    [
        (_unit_rows(3) * 2, r"row 0 has L2 norm 2\.0000, expected 1 \+- 0\.001 \(3 rows not normalised\)"),
        (_unit_rows(3)[:, :, None], r"expected a non-empty N x D matrix, got shape \(3, 8, 1\)"),
        (np.ones((3, 1), dtype=np.int64), r"expected floating point, got int64"),
    ],
)
def test_bad_embeddings_are_errors(tmp_path, embeddings, message):
    _write_split(tmp_path / "in", "train", [_row("summary", 0)], embeddings)
    with pytest.raises(VecflowError, match=r"train_embeddings\.safetensors: tensor 'embeddings': " + message):
        filter_summary(tmp_path / "in", ["train"], {}, tmp_path / "out", tmp_path / "stats.json")


def test_wrong_tensor_key_and_missing_files(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "train_synthesis.jsonl").write_text(json.dumps(_row("summary", 0)) + "\n")
    with pytest.raises(VecflowError, match=r"train_embeddings\.safetensors: file not found"):
        filter_summary(folder, ["train"], {}, tmp_path / "out", tmp_path / "s.json")
    save_tensors(folder / "train_embeddings.safetensors", {"vectors": _unit_rows(1)})
    with pytest.raises(VecflowError, match=r"missing tensor 'embeddings' \(has: vectors\)"):
        filter_summary(folder, ["train"], {}, tmp_path / "out", tmp_path / "s.json")


def test_a_split_without_summaries_is_an_error(tmp_path):
    _write_split(tmp_path / "in", "val", [_row("topic", 0), _row("topic", 1)], _unit_rows(2))
    with pytest.raises(VecflowError, match=r"val_synthesis\.jsonl: no usable 'summary' rows \(dropped: task_type:topic x2\)"):
        filter_summary(tmp_path / "in", ["val"], {}, tmp_path / "out", tmp_path / "stats.json")


def test_parse_splits():
    assert parse_splits("train, val") == ["train", "val"]
    with pytest.raises(VecflowError, match="empty split name"):
        parse_splits("train,,val")
    with pytest.raises(VecflowError, match="named twice"):
        parse_splits("train,train")


def test_cli_filter_two_splits_and_bad_one(tmp_path, capsys):
    _write_split(tmp_path / "in", "train", MIXED, _unit_rows(6))
    _write_split(tmp_path / "in", "val", [_row("summary", 1), _row("topic", 0)], _unit_rows(2, seed=1))
    argv = ["filter-summary", "--in-dir", str(tmp_path / "in"), "--splits", "train,val", "--settings",
            json.dumps({"seed": 1234, "device": "cpu"}), "--out-dir", str(tmp_path / "out"), "--stats",
            str(tmp_path / "stats.json")]
    assert cli_main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "train_embeddings.safetensors", "train_synthesis.jsonl", "val_embeddings.safetensors", "val_synthesis.jsonl"]
    assert read_jsonl(tmp_path / "out" / "val_synthesis.jsonl") == [_row("summary", 0, source_id="val_synthesis:1")]

    argv[4], argv[-3] = "train,test", str(tmp_path / "out2")
    assert cli_main(argv) == 2
    assert "test_synthesis.jsonl: file not found" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
