import json

import numpy as np
import pytest

from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError
from vecflow.core.io import load_tensors, save_tensors
from vecflow.lvm.bank import ChunkBank, load_bank
from vecflow.lvm.windows import load_windows, make_windows, save_windows


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


def bank_of(keys, vectors=None):
    vectors = unit_rows(len(keys), 3) if vectors is None else vectors
    return ChunkBank(vectors, [a for a, _ in keys], [c for _, c in keys], source="bank")


def test_make_windows_never_crosses_articles_and_keeps_target_index():
    # article 0 has 4 chunks, article 1 has 2, article 2 has 3; C = 2
    keys = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]
    vectors = unit_rows(len(keys), 3)
    bank = bank_of(keys, vectors)
    w = make_windows(bank, context_length=2)
    assert w.article_ids.tolist() == [0, 0, 2]
    assert w.target_indices.tolist() == [2, 3, 2]
    assert w.rows.tolist() == [[0, 1, 2], [1, 2, 3], [6, 7, 8]] and w.rows.dtype == np.int64
    assert w.context_length == 2
    np.testing.assert_array_equal(w.contexts(bank)[2], vectors[[6, 7]])
    np.testing.assert_array_equal(w.targets(bank), vectors[[2, 3, 8]])
    assert w.contexts(bank).shape == (3, 2, 3) and w.contexts(bank).dtype == np.float32


def test_make_windows_sorts_rows_and_skips_gaps_in_chunk_indices():
    keys = [(5, 3), (5, 0), (5, 1), (5, 2), (5, 5), (5, 6), (5, 7)]  # chunk 4 was dropped
    w = make_windows(bank_of(keys), context_length=2)
    assert w.target_indices.tolist() == [2, 3, 7]
    # rows point into the bank's own (unsorted) order: chunk 0 is row 1, chunk 3 is row 0, ...
    assert w.rows.tolist() == [[1, 2, 3], [2, 3, 0], [4, 5, 6]]


def test_cli_windows_roundtrip_and_load_windows(tmp_path):
    keys = [(a, c) for a in range(3) for c in range(6)]
    vectors = unit_rows(len(keys))
    emb, index = write_embeddings(tmp_path, vectors, keys)
    assert run_cli(emb, index, tmp_path / "w.safetensors", context_length=3) == 0
    stored = load_tensors(tmp_path / "w.safetensors")
    assert set(stored) == {"rows", "article_ids", "target_indices"}  # indices only: no vectors on disk
    assert stored["rows"].shape == (9, 4)
    bank = load_bank(emb, index)
    w = load_windows(tmp_path / "w.safetensors", bank)
    assert w.target_indices.tolist() == [3, 4, 5] * 3
    np.testing.assert_array_equal(w.targets(bank)[0], vectors[3])
    np.testing.assert_array_equal(w.contexts(bank)[0], vectors[0:3])


def test_old_float_windows_are_refused_with_how_to_rebuild(tmp_path):
    old = tmp_path / "train.safetensors"
    save_tensors(old, {"contexts": unit_rows(8).reshape(2, 4, 8), "targets": unit_rows(2),
                       "article_ids": np.zeros(2, np.int64), "target_indices": np.array([4, 5])})
    with pytest.raises(VecflowError, match=r"train.safetensors: an old windows file with float vectors .*"
                                           r"delete it and rerun the make_windows rule"):
        load_windows(old)


def test_windows_built_from_another_bank_are_refused(tmp_path):
    keys = [(0, c) for c in range(6)]
    bank = bank_of(keys)
    save_windows(tmp_path / "w.safetensors", make_windows(bank, 2), bank)
    load_windows(tmp_path / "w.safetensors", bank)
    with pytest.raises(VecflowError, match="built from a bank of 6 rows, but other has 7"):
        load_windows(tmp_path / "w.safetensors", ChunkBank(unit_rows(7, 3), [0] * 7, range(7), source="other"))
    reordered = ChunkBank(unit_rows(6, 3), [0] * 6, [1, 0, 2, 3, 4, 5], source="reordered")  # re-embedded
    with pytest.raises(VecflowError, match="window 0 .* does not point at its chunks in reordered"):
        load_windows(tmp_path / "w.safetensors", reordered)


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
    assert "e.index.jsonl:3: duplicate (article_id=0, chunk_index=1), first on line 2" in capsys.readouterr().err


def test_load_windows_rejects_inconsistent_shapes(tmp_path):
    bank = bank_of([(0, c) for c in range(6)])
    good = make_windows(bank, context_length=2)
    arrays = {"rows": good.rows, "article_ids": good.article_ids, "target_indices": good.target_indices}
    save_tensors(tmp_path / "w.safetensors", {**arrays, "target_indices": good.target_indices[:2]})
    with pytest.raises(VecflowError, match=r"w.safetensors: 'target_indices' must be 4 int64 values"):
        load_windows(tmp_path / "w.safetensors")
    save_tensors(tmp_path / "w.safetensors", {k: v for k, v in arrays.items() if k != "article_ids"})
    with pytest.raises(VecflowError, match="missing tensor 'article_ids'"):
        load_windows(tmp_path / "w.safetensors")
    save_tensors(tmp_path / "w.safetensors", {**arrays, "rows": good.rows.astype(np.float32)})
    with pytest.raises(VecflowError, match=r"'rows' must be N x \(C\+1\) int64 bank rows"):
        load_windows(tmp_path / "w.safetensors")
    save_tensors(tmp_path / "w.safetensors", {**arrays, "rows": good.rows + 10})
    with pytest.raises(VecflowError, match=r"window 0: row \[10, 11, 12\] outside bank"):
        load_windows(tmp_path / "w.safetensors", bank)


def encoder_folder(parent, name, hidden_size):
    """An encoder folder as the config names it: only config.json is read (no weights are loaded)."""
    folder = parent / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": hidden_size}))
    return folder


def test_load_bank_accepts_the_configured_encoder_and_refuses_another(tmp_path):
    """The writer's metadata and the reader's check agree: a bank exported with encoder 'minilm' (D=8) loads
    with --encoder .../minilm, both sharded (mid-export) and finished; another encoder or width is refused."""
    from vecflow.lvm.bank import ShardedBankWriter, export_bank, partial_dir

    minilm, mpnet = encoder_folder(tmp_path, "minilm", 8), encoder_folder(tmp_path, "mpnet", 8)
    wide = encoder_folder(tmp_path, "wide", 16)
    rows = [{"article_id": 0, "chunk_index": c, "text": f"c{c}"} for c in range(6)]
    out = tmp_path / "bank.safetensors"
    writer = ShardedBankWriter(out, tmp_path / "bank.index.jsonl", 4, source={"chunks": "x"})
    writer.add_shard(unit_rows(4), rows[:4], {"encoder": "minilm"})
    sharded = partial_dir(out)
    assert load_bank(sharded, encoder_dir=minilm).dim == 8
    with pytest.raises(VecflowError, match=r"bank\.safetensors\.partial: the bank was made with encoder 'minilm' "
                                           r"\(D=8\) but the config names encoder 'mpnet'"):
        load_bank(sharded, encoder_dir=mpnet)
    export_bank(iter(rows), lambda texts: unit_rows(len(texts), seed=len(texts)), writer, {"encoder": "minilm"})
    bank = load_bank(out, encoder_dir=minilm)
    assert len(bank) == 6 and bank.dim == 8
    assert len(load_bank(out, encoder_dir=str(minilm) + "/")) == 6  # a trailing slash names the same folder
    with pytest.raises(VecflowError, match=r"made with encoder 'minilm' \(D=8\) but the config names encoder "
                                           r"'mpnet' .*\('minilm'\)$"):
        load_bank(out, encoder_dir=mpnet)
    with pytest.raises(VecflowError, match=r"made with encoder 'minilm' \(D=8\) .* encoder 'wide' \(.*D=16\)"):
        load_bank(out, encoder_dir=wide)
    assert len(load_bank(out)) == 6  # no --encoder: not checked (direct use of the CLIs)


def test_bank_without_metadata_is_checked_on_width_only(tmp_path):
    emb, index = write_embeddings(tmp_path, unit_rows(6), [(0, c) for c in range(6)])  # an older file
    assert len(load_bank(emb, index, encoder_dir=encoder_folder(tmp_path, "any-name", 8))) == 6
    with pytest.raises(VecflowError, match=r"e\.safetensors: the bank has rows of dimension 8 but the config "
                                           r"names encoder 'wide' \(.*wide, D=16\); re-run vecflow embed"):
        load_bank(emb, index, encoder_dir=encoder_folder(tmp_path, "wide", 16))
    with pytest.raises(VecflowError, match=r"nothing: not an HF encoder folder \(no config\.json\)"):
        load_bank(emb, index, encoder_dir=tmp_path / "nothing")


def test_cli_windows_with_the_matching_encoder(tmp_path):
    vectors = unit_rows(6)
    emb, index = write_embeddings(tmp_path, vectors, [(0, c) for c in range(6)])
    save_tensors(emb, {"embeddings": vectors}, metadata={"encoder": "minilm", "dim": "8"})  # as embed writes it
    argv = ["windows", "--embeddings", str(emb), "--index", str(index), "--settings", json.dumps({"context_length": 2}),
            "--encoder", str(encoder_folder(tmp_path, "minilm", 8)), "--out", str(tmp_path / "w.safetensors")]
    assert cli_main(argv) == 0
    assert load_tensors(tmp_path / "w.safetensors")["rows"].shape == (4, 3)
