"""synthesize: seed-003 records (summary + topic tasks) and one normalised embedding per dialogue."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError
from vecflow.core.io import load_tensors, read_jsonl
from test_dialogues import schema_errors
from vecflow.data.settings import SynthesisSettings
from vecflow.data.synthesis import (
    DEFAULT_TEMPLATES,
    build_records,
    load_summary_split,
    prompt_templates,
    read_embeddings,
    read_records,
    split_paths,
    synthesize,
    write_split,
)

DIALOGUES = [
    {"id": "a", "dialogue": "#Person1#: I want to buy a book.\n#Person2#: It is on the table.",
     "summaries": ["#Person1# wants a book.", "#Person2# helps #Person1#."], "topic": "buy a book"},
    {"id": "b", "dialogue": "#Person1#: The doctor is here today.\n#Person2#: Good.", "summaries": ["A doctor visit."],
     "topic": None},
    {"id": "c", "dialogue": "#Person1#: What time is dinner?\n#Person2#: Seven.", "summaries": ["Dinner at seven."],
     "topic": "dinner"},
]


def _write_dialogues(path: Path, rows=DIALOGUES) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_records_per_summary_and_topic():
    records = build_records(DIALOGUES, DEFAULT_TEMPLATES)
    assert [(r["task_type"], r["embedding_index"], r["variation"]) for r in records] == [
        ("summary", 0, 0), ("summary", 0, 1), ("topic", 0, 0), ("summary", 1, 0), ("summary", 2, 0), ("topic", 2, 0)]
    assert records[1]["target_text"] == "#Person2# helps #Person1#." and records[1]["source_id"] == "a"
    assert records[2]["target_text"] == "buy a book"
    assert all("<EMB>" in r["input_prompt_template"] for r in records)
    assert records[0]["input_prompt_template"] != records[2]["input_prompt_template"]


def test_templates_from_settings_and_the_schema_checks_them():
    templates = prompt_templates(SynthesisSettings(templates={"summary": "Dialogue <EMB>. Summary:"}))
    assert templates["summary"] == "Dialogue <EMB>. Summary:" and templates["topic"] == DEFAULT_TEMPLATES["topic"]
    splits = {"train": "a", "val": "b"}
    assert schema_errors("summary", {"splits": splits, "templates": {"summary": "Summarize {text}"}})
    assert schema_errors("summary", {"splits": splits, "templates": {"title": "<EMB>"}})
    assert schema_errors("summary", {"splits": splits, "templates": {"topic": "Topic of <EMB>:"}}) == []


def test_one_module_writes_and_reads_the_format(tmp_path):
    rows_path, vectors_path = split_paths(tmp_path, "val")
    records = build_records(DIALOGUES, DEFAULT_TEMPLATES)
    vectors = np.eye(3, 4, dtype=np.float32)
    with pytest.raises(VecflowError, match=r"val_synthesis\.jsonl:1: field 'embedding_index': 0 is out of range"):
        write_split(rows_path, vectors_path, records, vectors[:0])
    assert not rows_path.exists() and not vectors_path.exists()
    write_split(rows_path, vectors_path, records, vectors)
    assert [r for _, r in read_records(rows_path, 3)] == records
    np.testing.assert_array_equal(read_embeddings(vectors_path), vectors)
    # the summary-only reader (the ELM's) refuses unfiltered data, naming the step to run
    with pytest.raises(VecflowError, match=r"val_synthesis\.jsonl:3: field 'task_type': expected 'summary', got "
                                           r"'topic'; run filter-summary"):
        load_summary_split(tmp_path, "val")
    write_split(rows_path, vectors_path, [r for r in records if r["task_type"] == "summary"], vectors)
    rows, loaded = load_summary_split(tmp_path, "val")
    assert [(r.source_id, r.embedding_index) for r in rows] == [("a", 0), ("a", 0), ("b", 1), ("c", 2)]
    assert loaded.dtype == np.float32 and loaded.shape == (3, 4)


def test_synthesize_writes_records_and_matching_embeddings(tiny_encoder, tmp_path):
    from vecflow.core.encoder import SentenceEncoder

    train = _write_dialogues(tmp_path / "train.jsonl")
    val = _write_dialogues(tmp_path / "val.jsonl", DIALOGUES[1:])
    out = tmp_path / "out"
    counts = synthesize({"train": train, "val": val}, tiny_encoder, {"seed": 1, "device": "cpu", "embed_batch_size": 2},
                        out)
    assert counts == {"train": {"records": 6, "embeddings": 3}, "val": {"records": 3, "embeddings": 2}}

    encoder = SentenceEncoder(tiny_encoder, device="cpu")
    for split, dialogues in [("train", DIALOGUES), ("val", DIALOGUES[1:])]:  # each split's own rows, in its order
        records = read_jsonl(out / f"{split}_synthesis.jsonl")
        embeddings = load_tensors(out / f"{split}_embeddings.safetensors", required=["embeddings"])["embeddings"]
        assert embeddings.shape == (len(dialogues), 32) and embeddings.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
        expected = encoder.encode([d["dialogue"] for d in dialogues])
        np.testing.assert_allclose(embeddings, expected, atol=1e-5)  # row i is dialogue i, whatever the batching
        assert {r["embedding_index"] for r in records} == set(range(len(dialogues)))
        assert [r["source_id"] for r in records if r["task_type"] == "summary"][0] == dialogues[0]["id"]


def test_bad_dialogue_file_fails_before_writing(tiny_encoder, tmp_path):
    good = _write_dialogues(tmp_path / "train.jsonl")
    path = _write_dialogues(tmp_path / "d.jsonl", [*DIALOGUES, {"id": "z", "dialogue": "#Person1#: hi"}])
    out = tmp_path / "o"
    with pytest.raises(VecflowError, match=r"d\.jsonl:4: field 'summary': missing"):
        synthesize({"train": good, "val": path}, tiny_encoder, {"seed": 1, "device": "cpu"}, out)
    assert not out.exists()  # not even the good split


def test_cli_synthesize_and_bad_encoder(tiny_encoder, tmp_path, capsys):
    path = _write_dialogues(tmp_path / "d.jsonl")
    settings = json.dumps({"seed": 1234, "device": "cpu", "embed_batch_size": 32,
                           "templates": {"topic": "Topic of <EMB>:"}})
    argv = ["synthesize", "--split", f"val={path}", "--encoder", str(tiny_encoder), "--settings", settings,
            "--out-dir", str(tmp_path / "out")]
    assert cli_main(argv) == 0
    topics = [r for r in read_jsonl(tmp_path / "out" / "val_synthesis.jsonl") if r["task_type"] == "topic"]
    assert [r["input_prompt_template"] for r in topics] == ["Topic of <EMB>:"] * 2
    assert "[vecflow] val: 6 records over 3 dialogue embeddings" in capsys.readouterr().out

    argv[4] = str(tmp_path / "no-model")
    assert cli_main(argv) == 2
    assert "no-model: not an HF model folder (no config.json)" in capsys.readouterr().err
