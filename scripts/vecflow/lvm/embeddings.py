"""Chunk embeddings (``vecflow embed``): the export that writes the embedding bank (``vecflow.lvm.bank``).

``embed`` encodes every chunk text with the sentence encoder (mean pooling, L2-normalised) shard by shard:
``F.safetensors.partial/`` receives fixed-size shards and a manifest as it goes, a killed job resumes after
the last complete shard, and only a finished export publishes ``F.safetensors`` (key ``embeddings``, N x D
float32, metadata: encoder folder name, dim, count) plus ``F.index.jsonl`` rows ``{article_id, chunk_index,
text}`` in the same order. Memory holds one shard of texts and vectors, whatever the corpus size.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

from vecflow.core.errors import VecflowError
from vecflow.core.io import require_file
from vecflow.core.settings import seed_everything
from vecflow.lvm.bank import ShardedBankWriter, export_bank, iter_index
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow embed", description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", required=True, help="chunks JSONL (article_id, chunk_index, text, ...)")
    parser.add_argument("--encoder", required=True, help="HF encoder folder")
    parser.add_argument("--settings", required=True, type=EmbedSettings.from_json,
                        help="embed_batch_size, embed_shard_rows (the lvm section's) and seed/device, as JSON")
    parser.add_argument("--out", required=True, help="F.safetensors")
    parser.add_argument("--index", required=True, help="F.index.jsonl")
    args = parser.parse_args(argv)

    settings = args.settings
    seed_everything(settings.seed)
    shard_rows = settings.embed_shard_rows
    writer = ShardedBankWriter(args.out, args.index, shard_rows, export_source(args.chunks, args.encoder))
    encode = lazy_encoder(args.encoder, settings.embed_batch_size, settings.device)
    rows = iter_index(args.chunks)
    first = next(rows, None)
    if first is None:
        raise VecflowError(f"{args.chunks}: no chunks to embed")
    total = export_bank(itertools.chain([first], rows), encode, writer, {"encoder": Path(args.encoder).name})
    print(f"[vecflow] {args.out}: {total} x {writer.manifest['dim']} ({Path(args.encoder).name}, "
          f"{len(writer.manifest['shards'])} shards of <= {shard_rows})", flush=True)
    return 0
