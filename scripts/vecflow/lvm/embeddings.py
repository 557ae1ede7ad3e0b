"""Chunk embeddings (``vecflow embed``): the export that writes the embedding banks (``vecflow.lvm.bank``).

One job embeds every split: ``--chunks train.jsonl val.jsonl ood.jsonl --out-dir D`` writes, for each chunks file
``NAME.jsonl``, the bank ``D/NAME.safetensors`` (key ``embeddings``, N x D float32, metadata: encoder folder
name, dim, count) plus ``D/NAME.index.jsonl`` rows ``{article_id, chunk_index, text}`` in the same order, with the
sentence encoder loaded once (mean pooling, L2-normalised; each split is encoded on its own, so a bank is the
same bytes as one embedded alone).

Every chunks file is read and checked before the encoder is loaded. Each split is then encoded shard by shard
into ``D/NAME.safetensors.partial/`` (fixed-size shards and a manifest): a killed job resumes after the last
complete shard of the split it was in, and the splits it had finished are not encoded again. The banks are
published only once every split is encoded, and the partial folders removed only once every bank is out (so a
job killed while publishing, whose outputs Snakemake then deletes, publishes again without encoding). Memory
holds one shard of texts and vectors, whatever the corpus size.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from vecflow.core.errors import VecflowError
from vecflow.core.io import require_file
from vecflow.core.settings import seed_everything
from vecflow.lvm.bank import ShardedBankWriter, iter_index, write_shards
from vecflow.lvm.settings import EmbedSettings


def embed_chunks(rows: list[dict], encoder_dir: str | Path, batch_size: int, device: str = "auto") -> tuple:
    """Encode the chunk texts in memory; return ``(vectors N x D float32, metadata)`` (small inputs, bench)."""
    from vecflow.core.encoder import SentenceEncoder

    encoder = SentenceEncoder(encoder_dir, device=device)
    vectors = encoder.encode([row["text"] for row in rows], batch_size=batch_size, progress=True)
    metadata = {"encoder": Path(encoder_dir).name, "dim": str(encoder.dim), "count": str(len(rows))}
    return vectors.astype(np.float32), metadata


def lazy_encoder(encoder_dir: str | Path, batch_size: int, device: str):
    """``encode(texts) -> vectors``; the model is loaded on the first call (a finished export never loads it)."""
    loaded = {}

    def encode(texts: list[str]) -> np.ndarray:
        if "encoder" not in loaded:
            from vecflow.core.encoder import SentenceEncoder

            loaded["encoder"] = SentenceEncoder(encoder_dir, device=device)
        start = time.perf_counter()
        vectors = loaded["encoder"].encode(texts, batch_size=batch_size, progress=False)
        seconds = time.perf_counter() - start
        print(f"[vecflow] embedded {len(texts)} chunks in {seconds:.1f} s ({len(texts) / max(seconds, 1e-9):.0f}/s)",
              flush=True)
        return vectors.astype(np.float32)

    return encode


def export_source(chunks: str | Path, encoder_dir: str | Path) -> dict:
    """What a partial export was computed from: resuming needs the same chunks file and encoder."""
    stat = require_file(chunks).stat()  # checked before anything is written
    return {"chunks": str(Path(chunks).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "encoder": str(Path(encoder_dir).resolve())}


def split_name(chunks: str | Path) -> str:
    """The split a chunks file holds: its name without ``.jsonl`` (``splits/val.jsonl`` -> ``val``)."""
    name = Path(chunks).name
    if not name.endswith(".jsonl") or name == ".jsonl":
        raise VecflowError(f"{chunks}: --chunks takes NAME.jsonl files (NAME names the split and its bank)")
    return name.removesuffix(".jsonl")


def plan_splits(chunks: list[str], out_dir: str | Path) -> list[tuple[str, Path, Path, Path]]:
    """(split, chunks, bank, index) per chunks file, in the order given; two files of one name are refused."""
    plan, seen = [], {}
    for path in chunks:
        name = split_name(path)
        if name in seen:
            raise VecflowError(f"{path}: split '{name}' is given twice (also {seen[name]}); each --chunks file "
                               f"needs its own name, its bank is {Path(out_dir) / name}.safetensors")
        seen[name] = path
        plan.append((name, Path(path), Path(out_dir) / f"{name}.safetensors", Path(out_dir) / f"{name}.index.jsonl"))
    return plan


def count_chunks(chunks: Path) -> int:
    """Rows of a chunks file, every one checked (file:line: field ...), before anything is encoded."""
    count = sum(1 for _ in iter_index(require_file(chunks)))
    if not count:
        raise VecflowError(f"{chunks}: no chunks to embed")
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow embed", description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", required=True, nargs="+", action="extend",
                        help="chunks JSONL files NAME.jsonl (article_id, chunk_index, text, ...), one per split")
    parser.add_argument("--encoder", required=True, help="HF encoder folder")
    parser.add_argument("--settings", required=True, type=EmbedSettings.from_json,
                        help="embed_batch_size, embed_shard_rows (the lvm section's) and seed/device, as JSON")
    parser.add_argument("--out-dir", required=True,
                        help="folder of the banks: NAME.safetensors + NAME.index.jsonl per chunks file")
    args = parser.parse_args(argv)

    settings = args.settings
    plan = plan_splits(args.chunks, args.out_dir)
    counts = {name: count_chunks(chunks) for name, chunks, _, _ in plan}
    seed_everything(settings.seed)
    shard_rows = settings.embed_shard_rows
    metadata = {"encoder": Path(args.encoder).name}
    encode = lazy_encoder(args.encoder, settings.embed_batch_size, settings.device)  # one load for every split
    writers = {}
    for name, chunks, out, index in plan:
        writer = ShardedBankWriter(out, index, shard_rows, export_source(chunks, args.encoder))
        if writer.rows_done >= counts[name]:
            print(f"[vecflow] {name}: all {writer.rows_done} chunks already encoded in {writer.folder}", flush=True)
        else:
            print(f"[vecflow] {name}: {counts[name]} chunks from {chunks}", flush=True)
        write_shards(iter_index(chunks), encode, writer, metadata)
        writers[name] = writer
    for name, _, out, _ in plan:
        writer = writers[name]
        total = writer.finish(keep_partial=True)
        print(f"[vecflow] {out}: {total} x {writer.manifest['dim']} ({metadata['encoder']}, "
              f"{len(writer.manifest['shards'])} shards of <= {shard_rows})", flush=True)
    for writer in writers.values():
        writer.discard()
    return 0
