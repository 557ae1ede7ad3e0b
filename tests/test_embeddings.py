import json

import numpy as np
import pytest
from safetensors import safe_open

from vecflow.cli import main as cli_main
from vecflow.lvm.embeddings import embed_chunks, load_embeddings
from vecflow.core.errors import VecflowError
from vecflow.core.io import save_tensors

TEXTS = ["the model reads a book", "a friend buys dinner today at work", "python module data file", "the doctor"]


def write_chunks(path, texts=TEXTS):
    rows = [{"article_id": i // 2, "title": "t", "chunk_index": i % 2, "text": t} for i, t in enumerate(texts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_embed(tmp_path, chunks, encoder):
    settings = json.dumps({"seed": 1, "device": "cpu", "embed_batch_size": 3})
    out, index = tmp_path / "e.safetensors", tmp_path / "e.index.jsonl"
    argv = ["embed", "--chunks", str(chunks), "--encoder", str(encoder), "--settings", settings]
    return cli_main(argv + ["--out", str(out), "--index", str(index)]), out, index


def test_cli_embed_writes_normalised_vectors_index_and_metadata(tmp_path, tiny_encoder):
    code, out, index = run_embed(tmp_path, write_chunks(tmp_path / "c.jsonl"), tiny_encoder)
    assert code == 0
    vectors, rows = load_embeddings(out, index)
    assert vectors.shape == (4, 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert [(r["article_id"], r["chunk_index"], r["text"]) for r in rows] == [
        (i // 2, i % 2, t) for i, t in enumerate(TEXTS)
    ]
    with safe_open(str(out), "np") as fh:
        assert fh.metadata() == {"encoder": "tiny-encoder", "dim": "32", "count": "4"}


def test_embedding_rows_follow_input_order_and_batches_do_not_matter(tiny_encoder):
    rows = [{"text": t} for t in TEXTS]
    small, _ = embed_chunks(rows, tiny_encoder, batch_size=1, device="cpu")
    large, _ = embed_chunks(rows[::-1], tiny_encoder, batch_size=4, device="cpu")
    np.testing.assert_allclose(small, large[::-1], atol=1e-5)
    assert not np.allclose(small[0], small[1])


def test_load_embeddings_rejects_row_count_mismatch(tmp_path):
    save_tensors(tmp_path / "e.safetensors", {"embeddings": np.eye(3, dtype=np.float32)})
    (tmp_path / "e.index.jsonl").write_text(
        "".join(json.dumps({"article_id": 0, "chunk_index": i, "text": "x"}) + "\n" for i in range(2))
    )
    with pytest.raises(VecflowError, match=r"e.safetensors: 3 embeddings but .*e.index.jsonl has 2 rows"):
        load_embeddings(tmp_path / "e.safetensors", tmp_path / "e.index.jsonl")


def test_load_embeddings_rejects_unnormalised_and_bad_index(tmp_path):
    save_tensors(tmp_path / "e.safetensors", {"embeddings": 2 * np.eye(2, dtype=np.float32)})
    (tmp_path / "e.index.jsonl").write_text(
        json.dumps({"article_id": 0, "chunk_index": 0, "text": "x"}) + "\n"
        + json.dumps({"article_id": 0, "chunk_index": "1", "text": "y"}) + "\n"
    )
    with pytest.raises(VecflowError, match=r"e.index.jsonl:2: field 'chunk_index': expected int"):
        load_embeddings(tmp_path / "e.safetensors", tmp_path / "e.index.jsonl")
    write_chunks(tmp_path / "e.index.jsonl", ["a", "b"])
    with pytest.raises(VecflowError, match=r"e.safetensors: row 0 is not L2-normalised \(norm 2.0000\)"):
        load_embeddings(tmp_path / "e.safetensors", tmp_path / "e.index.jsonl")


def test_cli_embed_bad_chunks_and_bad_encoder(tmp_path, tiny_encoder, capsys):
    chunks = tmp_path / "c.jsonl"
    chunks.write_text(json.dumps({"article_id": 0, "chunk_index": 0}) + "\n")
    code, out, index = run_embed(tmp_path, chunks, tiny_encoder)
    assert code == 2 and "c.jsonl:1: field 'text': missing" in capsys.readouterr().err
    assert not out.exists() and not index.exists()
    code, out, _ = run_embed(tmp_path, write_chunks(chunks), tmp_path)
    assert code == 2 and "not an HF model folder" in capsys.readouterr().err
    assert not out.exists()
