import json

import numpy as np
import pytest

from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError
from vecflow.core.io import load_tensors, save_tensors
from vecflow.lvm.windows import load_windows, make_windows


def unit_rows(n, dim=8, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_embeddings(tmp_path, vectors, keys):
    save_tensors(tmp_path / "e.safetensors", {"embeddings": vectors})
    rows = [{"article_id": a, "chunk_index": c, "text": f"{a}/{c}"} for a, c in keys]
    (tmp_path / "e.index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "e.safetensors", tmp_path / "e.index.jsonl"


def run_cli(emb, index, out, context_length):
    settings = json.dumps({"seed": 1, "device": "cpu", "context_length": context_length})
    return cli_main(["windows", "--embeddings", str(emb), "--index", str(index), "--settings", settings,
                     "--out", str(out)])


def test_make_windows_never_crosses_articles_and_keeps_target_index():
    # article 0 has 4 chunks, article 1 has 2, article 2 has 3; C = 2
    keys = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    vectors = np.arange(len(keys), dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    w = make_windows(vectors, [a for a, _ in keys], [c for _, c in keys], context_length=2)
    assert w["article_ids"].tolist() == [0, 0, 2]
    assert w["target_indices"].tolist() == [2, 3, 2]
    assert w["contexts"][:, :, 0].tolist() == [[0, 1], [1, 2], [6, 7]]
    assert w["targets"][:, 0].tolist() == [2, 3, 8]
    assert w["contexts"].shape == (3, 2, 3) and w["contexts"].dtype == np.float32


def test_make_windows_sorts_rows_and_skips_gaps_in_chunk_indices():
    keys = [(5, 3), (5, 0), (5, 1), (5, 2), (5, 5), (5, 6), (5, 7)]  # chunk 4 was dropped
    vectors = np.array([[a * 10 + c] for a, c in keys], dtype=np.float32)
    w = make_windows(vectors, [a for a, _ in keys], [c for _, c in keys], context_length=2)
    assert w["target_indices"].tolist() == [2, 3, 7]
    assert w["contexts"][:, :, 0].tolist() == [[50, 51], [51, 52], [55, 56]]


def test_cli_windows_roundtrip_and_load_windows(tmp_path):
    keys = [(a, c) for a in range(3) for c in range(6)]
    vectors = unit_rows(len(keys))
    emb, index = write_embeddings(tmp_path, vectors, keys)
    assert run_cli(emb, index, tmp_path / "w.safetensors", context_length=3) == 0
    w = load_windows(tmp_path / "w.safetensors")
    assert w["contexts"].shape == (9, 3, 8) and w["targets"].shape == (9, 8)
    assert w["target_indices"].tolist() == [3, 4, 5] * 3
    np.testing.assert_array_equal(w["targets"][0], vectors[3])
    np.testing.assert_array_equal(w["contexts"][0], vectors[0:3])


def test_cli_no_windows_says_why(tmp_path, capsys):
    emb, index = write_embeddings(tmp_path, unit_rows(5), [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)])
    assert run_cli(emb, index, tmp_path / "w.safetensors", context_length=3) == 2
    err = capsys.readouterr().err
    assert "no windows with context_length 3: 2 articles, 5 chunks, the longest article has 3 chunks" in err
    assert "at least 4 consecutive chunks" in err
    assert not (tmp_path / "w.safetensors").exists()


def test_cli_duplicate_chunk_key_is_an_error(tmp_path, capsys):
    emb, index = write_embeddings(tmp_path, unit_rows(3), [(0, 0), (0, 1), (0, 1)])
    assert run_cli(emb, index, tmp_path / "w.safetensors", context_length=1) == 2
    assert "e.index.jsonl:3: chunk (article 0, chunk 1) appears twice" in capsys.readouterr().err


def test_load_windows_rejects_inconsistent_shapes(tmp_path):
    good = make_windows(unit_rows(6), [0] * 6, range(6), context_length=2)
    save_tensors(tmp_path / "w.safetensors", {**good, "targets": good["targets"][:2]})
    with pytest.raises(VecflowError, match=r"w.safetensors: 'targets' must be 4 x 8 float32"):
        load_windows(tmp_path / "w.safetensors")
    save_tensors(tmp_path / "w.safetensors", {k: v for k, v in good.items() if k != "article_ids"})
    with pytest.raises(VecflowError, match="missing tensor 'article_ids'"):
        load_windows(tmp_path / "w.safetensors")
    save_tensors(tmp_path / "w.safetensors", {**good, "article_ids": good["article_ids"].astype(np.int32)})
    with pytest.raises(VecflowError, match="'article_ids' must be 4 int64 values"):
        load_windows(tmp_path / "w.safetensors")
    assert set(load_tensors(tmp_path / "w.safetensors")) == {"contexts", "targets", "article_ids", "target_indices"}
