import json
import re

import numpy as np
import pytest
from safetensors import safe_open

from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError
from vecflow.core.io import save_tensors
from vecflow.lvm import embeddings
from vecflow.lvm.bank import (ShardedBankWriter, export_bank, load_bank, load_embeddings, map_tensor,
                              open_embeddings, partial_dir)
from vecflow.lvm.embeddings import embed_chunks

TEXTS = ["the model reads a book", "a friend buys dinner today at work", "python module data file", "the doctor"]


def write_chunks(path, texts=TEXTS):
    rows = [{"article_id": i // 2, "title": "t", "chunk_index": i % 2, "text": t} for i, t in enumerate(texts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_embed(tmp_path, chunks, encoder, out_dir="banks", **settings):
    """`vecflow embed` on one chunks file or a list of them; returns (exit code, bank, index) of the first."""
    chunks = chunks if isinstance(chunks, list) else [chunks]
    settings = json.dumps({"seed": 1, "device": "cpu", "embed_batch_size": 3, **settings})
    out_dir = tmp_path / out_dir
    argv = ["embed", "--chunks", *map(str, chunks), "--encoder", str(encoder), "--settings", settings]
    code = cli_main(argv + ["--out-dir", str(out_dir)])
    name = chunks[0].name.removesuffix(".jsonl")
    return code, out_dir / f"{name}.safetensors", out_dir / f"{name}.index.jsonl"


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
    assert not partial_dir(out).exists()


def test_sharded_export_equals_one_pass_and_is_a_normal_safetensors_file(tmp_path, tiny_encoder):
    code, out, index = run_embed(tmp_path, write_chunks(tmp_path / "c.jsonl"), tiny_encoder, embed_shard_rows=3)
    assert code == 0
    whole, _ = embed_chunks([{"text": t} for t in TEXTS], tiny_encoder, batch_size=4, device="cpu")
    with safe_open(str(out), "np") as fh:  # the streamed file is what safetensors itself reads
        np.testing.assert_allclose(fh.get_tensor("embeddings"), whole, atol=1e-5)
    assert isinstance(map_tensor(out), np.memmap)  # readers map the bank, they do not load it


def test_embedding_rows_follow_input_order_and_batches_do_not_matter(tiny_encoder):
    rows = [{"text": t} for t in TEXTS]
    small, _ = embed_chunks(rows, tiny_encoder, batch_size=1, device="cpu")
    large, _ = embed_chunks(rows[::-1], tiny_encoder, batch_size=4, device="cpu")
    np.testing.assert_allclose(small, large[::-1], atol=1e-5)
    assert not np.allclose(small[0], small[1])


# ------------------------------------------------------------------ one job for every split
SPLIT_TEXTS = {"train": TEXTS, "val": ["a cat sleeps on the warm mat", "rain falls", "the market opens"],
               "ood": ["quantum field theory", "a short poem about the sea"]}


def test_one_job_embeds_each_split_into_its_own_bank_with_one_encoder_load(tmp_path, tiny_encoder, monkeypatch):
    from vecflow.core import encoder as encoder_module

    loads = []
    real = encoder_module.SentenceEncoder
    monkeypatch.setattr(encoder_module, "SentenceEncoder", lambda *a, **k: loads.append(a) or real(*a, **k))
    files = [write_chunks(tmp_path / f"{name}.jsonl", texts) for name, texts in SPLIT_TEXTS.items()]
    code, _, _ = run_embed(tmp_path, files, tiny_encoder, embed_shard_rows=2)
    assert code == 0 and len(loads) == 1  # the encoder is loaded once for the three splits
    banks = tmp_path / "banks"
    assert sorted(p.name for p in banks.iterdir()) == sorted(
        f"{name}{suffix}" for name in SPLIT_TEXTS for suffix in (".safetensors", ".index.jsonl"))
    for name, texts in SPLIT_TEXTS.items():
        vectors, rows = load_embeddings(banks / f"{name}.safetensors", banks / f"{name}.index.jsonl")
        assert [r["text"] for r in rows] == texts  # each split's rows in its own bank, in input order
        alone, _ = embed_chunks([{"text": t} for t in texts], tiny_encoder, batch_size=3, device="cpu")
        np.testing.assert_allclose(vectors, alone, atol=1e-5)
    # a split embedded in the multi-split job is byte-identical to the same split embedded alone
    assert run_embed(tmp_path, [files[1]], tiny_encoder, out_dir="alone", embed_shard_rows=2)[0] == 0
    for suffix in (".safetensors", ".index.jsonl"):
        assert (tmp_path / "alone" / f"val{suffix}").read_bytes() == (banks / f"val{suffix}").read_bytes()


def fake_split_files(tmp_path, sizes):
    """Chunks files whose texts fake_encode reads ("chunk <n>", a different n in every split)."""
    files, start = [], 0
    for name, size in sizes.items():
        rows = [dict(row, text=f"chunk {start + i}") for i, row in enumerate(fake_rows(size))]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        files.append(tmp_path / f"{name}.jsonl")
        start += 100
    return files


def test_a_job_killed_in_the_second_split_resumes_there_without_encoding_the_first_again(tmp_path, monkeypatch):
    files = fake_split_files(tmp_path, {"train": 5, "val": 5, "ood": 3})
    calls = []

    def encoder(die_at=None):
        def encode(texts):
            calls.append(texts)
            if len(calls) == die_at:
                raise Killed
            return fake_encode(texts)
        return lambda *args: encode

    monkeypatch.setattr(embeddings, "lazy_encoder", encoder(die_at=5))  # val's second shard of 2
    with pytest.raises(Killed):
        run_embed(tmp_path, files, "enc", embed_shard_rows=2)
    banks = tmp_path / "banks"
    assert not any(banks.glob("*.safetensors")) and not any(banks.glob("*.jsonl"))  # nothing published
    assert [len(c) for c in calls] == [2, 2, 1, 2, 2]

    calls.clear()
    monkeypatch.setattr(embeddings, "lazy_encoder", encoder())
    assert run_embed(tmp_path, files, "enc", embed_shard_rows=2)[0] == 0
    # train is not encoded again; val resumes after its complete shard; then ood
    assert calls == [["chunk 102", "chunk 103"], ["chunk 104"], ["chunk 200", "chunk 201"], ["chunk 202"]]
    for path in files:
        bank = load_bank(banks / f"{path.stem}.safetensors", banks / f"{path.stem}.index.jsonl")
        texts = [json.loads(line)["text"] for line in path.read_text().splitlines()]
        np.testing.assert_array_equal(bank.embeddings, fake_encode(texts))  # no split's rows in another's bank
        assert not partial_dir(banks / f"{path.stem}.safetensors").exists()


def test_a_job_killed_while_publishing_publishes_again_without_encoding(tmp_path, monkeypatch):
    files = fake_split_files(tmp_path, {"train": 3, "val": 2})
    calls = []
    monkeypatch.setattr(embeddings, "lazy_encoder", lambda *args: lambda texts: calls.append(texts) or fake_encode(texts))
    real_finish = ShardedBankWriter.finish

    def finish_once(self, keep_partial=False):
        if self.out.name == "val.safetensors":
            raise Killed
        return real_finish(self, keep_partial)

    monkeypatch.setattr(ShardedBankWriter, "finish", finish_once)
    with pytest.raises(Killed):
        run_embed(tmp_path, files, "enc", embed_shard_rows=2)
    banks = tmp_path / "banks"
    assert (banks / "train.safetensors").is_file() and partial_dir(banks / "train.safetensors").is_dir()
    for path in banks.glob("train.*"):
        if path.is_file():
            path.unlink()  # what Snakemake does with the outputs of a failed job
    calls.clear()
    monkeypatch.setattr(ShardedBankWriter, "finish", real_finish)
    assert run_embed(tmp_path, files, "enc", embed_shard_rows=2)[0] == 0 and calls == []
    assert len(load_bank(banks / "train.safetensors")) == 3 and len(load_bank(banks / "val.safetensors")) == 2
    assert not list(banks.glob("*.partial"))


def test_a_bad_split_fails_before_any_encoding_and_publishes_nothing(tmp_path, monkeypatch, capsys):
    files = fake_split_files(tmp_path, {"train": 3, "val": 3, "ood": 2})
    lines = files[1].read_text().splitlines()
    lines[1] = json.dumps({"article_id": 0, "chunk_index": "1", "text": "x"})
    files[1].write_text("\n".join(lines) + "\n")
    calls = []
    monkeypatch.setattr(embeddings, "lazy_encoder", lambda *args: lambda texts: calls.append(texts) or fake_encode(texts))

    def fails(chunks, expected):
        code, _, _ = run_embed(tmp_path, chunks, "enc", embed_shard_rows=2)
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(expected, err), err
        assert calls == [] and not (tmp_path / "banks").exists()  # nothing encoded, no bank, no partial folder

    fails(files, r"^vecflow embed: error: .*val.jsonl:2: field 'chunk_index': expected int")
    (tmp_path / "empty.jsonl").write_text("")
    fails([files[0], tmp_path / "empty.jsonl"], r"empty.jsonl: no chunks to embed")
    (tmp_path / "other").mkdir()
    twice = fake_split_files(tmp_path / "other", {"train": 1})[0]
    fails([files[0], twice], r"other/train.jsonl: split 'train' is given twice \(also .*/train.jsonl\)")
    fails([files[0], tmp_path / "missing.jsonl"], r"missing.jsonl: file not found")
    (tmp_path / "val.txt").write_text("")
    fails([tmp_path / "val.txt"], r"val.txt: --chunks takes NAME.jsonl files")


# ------------------------------------------------------------------ shards, resume, bounded memory
def fake_rows(n):
    return [{"article_id": i // 5, "chunk_index": i % 5, "text": f"chunk {i}"} for i in range(n)]


def fake_encode(texts):
    """Deterministic unit vectors from the text (stands in for the encoder)."""
    seeds = [int(t.split()[1]) for t in texts]
    x = np.stack([np.random.default_rng(s).normal(size=6) for s in seeds]).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Killed(Exception):
    pass


def test_killed_export_resumes_after_the_last_complete_shard(tmp_path):
    out, index = tmp_path / "b.safetensors", tmp_path / "b.index.jsonl"
    source = {"chunks": "c.jsonl", "size": 1}
    calls = []

    def dies_on_third_shard(texts):
        calls.append(len(texts))
        if len(calls) == 3:
            raise Killed
        return fake_encode(texts)

    with pytest.raises(Killed):
        export_bank(iter(fake_rows(23)), dies_on_third_shard, ShardedBankWriter(out, index, 10, source), {})
    assert not out.exists() and not index.exists()  # nothing published
    partial = tmp_path / "b.safetensors.partial"
    manifest = json.loads((partial / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["shards"]] == [10, 10]
    # a sharded folder reads like a bank: the 20 rows of the two complete shards
    assert len(load_bank(partial)) == 20 and open_embeddings(partial).shape == (20, 6)

    resumed = []
    writer = ShardedBankWriter(out, index, 10, source)
    assert writer.rows_done == 20
    total = export_bank(iter(fake_rows(23)), lambda t: resumed.append(len(t)) or fake_encode(t), writer, {})
    assert total == 23 and resumed == [3]  # only the rows after the last complete shard are encoded again
    assert not partial.exists()
    bank = load_bank(out, index)
    np.testing.assert_array_equal(bank.embeddings, fake_encode([r["text"] for r in fake_rows(23)]))
    assert bank.chunk_indices.tolist() == [i % 5 for i in range(23)]


def test_partial_export_of_other_inputs_is_not_resumed(tmp_path, capsys):
    out, index = tmp_path / "b.safetensors", tmp_path / "b.index.jsonl"
    writer = ShardedBankWriter(out, index, 4, {"size": 1})
    writer.add_shard(fake_encode(["chunk 0", "chunk 1"]), fake_rows(2), {})
    assert ShardedBankWriter(out, index, 4, {"size": 2}).rows_done == 0
    assert "belongs to other inputs or settings: starting over" in capsys.readouterr().out


def test_export_holds_one_shard_of_rows_at_a_time(tmp_path):
    """Peak memory does not grow with the corpus: rows are read lazily, one shard ahead at most."""
    consumed = []

    def rows():
        for row in fake_rows(50):
            consumed.append(row)
            yield row

    def encode(texts):
        assert len(texts) <= 8 and len(consumed) <= 8 * (len(encode.calls) + 1)
        encode.calls.append(len(texts))
        return fake_encode(texts)

    encode.calls = []
    writer = ShardedBankWriter(tmp_path / "b.safetensors", tmp_path / "b.index.jsonl", 8, {})
    assert export_bank(rows(), encode, writer, {}) == 50 and encode.calls == [8] * 6 + [2]


# ------------------------------------------------------------------ the reader's checks
def test_load_embeddings_rejects_row_count_mismatch(tmp_path):
    save_tensors(tmp_path / "e.safetensors", {"embeddings": np.eye(3, dtype=np.float32)})
    (tmp_path / "e.index.jsonl").write_text(
        "".join(json.dumps({"article_id": 0, "chunk_index": i, "text": "x"}) + "\n" for i in range(2))
    )
    with pytest.raises(VecflowError, match=r"e.index.jsonl: 2 rows but .*e.safetensors has 3 embeddings"):
        load_embeddings(tmp_path / "e.safetensors", tmp_path / "e.index.jsonl")


def test_load_embeddings_rejects_unnormalised_nonfinite_and_bad_index(tmp_path):
    save_tensors(tmp_path / "e.safetensors", {"embeddings": 2 * np.eye(2, dtype=np.float32)})
    (tmp_path / "e.index.jsonl").write_text(
        json.dumps({"article_id": 0, "chunk_index": 0, "text": "x"}) + "\n"
        + json.dumps({"article_id": 0, "chunk_index": "1", "text": "y"}) + "\n"
    )
    with pytest.raises(VecflowError, match=r"e.index.jsonl:2: field 'chunk_index': expected int"):
        load_embeddings(tmp_path / "e.safetensors", tmp_path / "e.index.jsonl")
    write_chunks(tmp_path / "e.index.jsonl", ["a", "b"])
    with pytest.raises(VecflowError, match=r"e.safetensors: row 0 has norm 2.0000, not 1"):
        load_embeddings(tmp_path / "e.safetensors", tmp_path / "e.index.jsonl")
    save_tensors(tmp_path / "e.safetensors", {"embeddings": np.array([[1, 0], [np.nan, 0]], np.float32)})
    with pytest.raises(VecflowError, match=r"e.safetensors: row 1 is not finite"):
        load_bank(tmp_path / "e.safetensors", tmp_path / "e.index.jsonl")
    save_tensors(tmp_path / "e.safetensors", {"embeddings": np.eye(2, dtype=np.float64)})
    with pytest.raises(VecflowError, match=r"tensor 'embeddings' must be a 2-D float32 array, got F64"):
        load_bank(tmp_path / "e.safetensors", tmp_path / "e.index.jsonl")


def test_cli_embed_bad_chunks_and_bad_encoder(tmp_path, tiny_encoder, capsys):
    chunks = tmp_path / "c.jsonl"
    chunks.write_text(json.dumps({"article_id": 0, "chunk_index": 0}) + "\n")
    code, out, index = run_embed(tmp_path, chunks, tiny_encoder)
    assert code == 2 and "c.jsonl:1: field 'text': missing" in capsys.readouterr().err
    assert not out.exists() and not index.exists()
    code, out, _ = run_embed(tmp_path, write_chunks(chunks), tmp_path)
    assert code == 2 and "not an HF model folder" in capsys.readouterr().err
    assert not out.exists() and not partial_dir(out).exists()


def test_saved_tensors_are_byte_identical_across_processes(tmp_path):
    # safetensors writes metadata from a Rust hash map (a new key order per process); save_tensors sorts it
    script = ("import sys, numpy as np; from vecflow.core.io import save_tensors; "
              "save_tensors(sys.argv[1], {'b': np.ones(3, np.float32), 'a': np.zeros(2, np.float32)}, "
              "metadata={k: str(i) for i, k in enumerate('zyxwvutsrq')} | {'é': 'ü'})")
    import subprocess
    import sys

    files = [tmp_path / f"{i}.safetensors" for i in range(4)]
    for path in files:
        subprocess.run([sys.executable, "-c", script, str(path)], check=True)
    assert len({path.read_bytes() for path in files}) == 1
    header = files[0].read_bytes()
    length = int.from_bytes(header[:8], "little")
    assert list(json.loads(header[8:8 + length])["__metadata__"]) == sorted("zyxwvutsrqé")  # the header as written
    with safe_open(str(files[0]), "np") as fh:  # still a valid file to safetensors itself
        assert fh.metadata()["é"] == "ü" and fh.metadata()["z"] == "0"
        assert fh.get_tensor("b").tolist() == [1, 1, 1]
