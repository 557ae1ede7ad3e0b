"""Chunk embeddings (``vecflow embed``) and their validated reader ``load_embeddings``.

``embed`` encodes every chunk text with the sentence encoder (mean pooling, L2-normalised) and writes
``F.safetensors`` (key ``embeddings``, N x D float32, metadata: encoder folder name, dim, count) plus
``F.index.jsonl`` rows ``{article_id, chunk_index, text}`` in the same order.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from vecflow.core.errors import VecflowError
from vecflow.core.io import check_embeddings, iter_jsonl, load_tensors, require_fields, save_tensors, write_jsonl
from vecflow.core.settings import seed_everything, settings_arg

INDEX_FIELDS = {"article_id": int, "chunk_index": int, "text": str}
NORM_TOLERANCE = 1e-3


def read_index(path: str | Path) -> list[dict]:
    """Rows ``{article_id, chunk_index, text}`` (extra fields such as ``title`` are dropped), validated."""
    rows = []
    for lineno, row in iter_jsonl(path):
        require_fields(row, INDEX_FIELDS, path, lineno)
        rows.append({key: row[key] for key in INDEX_FIELDS})
    return rows


def embed_chunks(rows: list[dict], encoder_dir: str | Path, batch_size: int, device: str = "auto") -> tuple:
    """Encode the chunk texts; return ``(vectors N x D float32, metadata)``."""
    from vecflow.core.encoder import SentenceEncoder

    encoder = SentenceEncoder(encoder_dir, device=device)
    start = time.perf_counter()
    vectors = encoder.encode([row["text"] for row in rows], batch_size=batch_size, progress=True)
    seconds = time.perf_counter() - start
    print(f"[vecflow] embedded {len(rows)} chunks in {seconds:.1f} s ({len(rows) / max(seconds, 1e-9):.0f}/s)")
    metadata = {"encoder": Path(encoder_dir).name, "dim": str(encoder.dim), "count": str(len(rows))}
    return vectors.astype(np.float32), metadata


def load_embeddings(path: str | Path, index_path: str | Path) -> tuple[np.ndarray, list[dict]]:
    """Read embeddings + index; check shape, dtype, unit norm and that both have the same number of rows."""
    vectors = load_tensors(path, required=["embeddings"])["embeddings"]
    if vectors.ndim != 2 or vectors.dtype != np.float32:
        raise VecflowError(f"{path}: 'embeddings' must be a 2-D float32 array, got {vectors.dtype} {vectors.shape}")
    index = read_index(index_path)
    if len(index) != len(vectors):
        raise VecflowError(f"{path}: {len(vectors)} embeddings but {index_path} has {len(index)} rows")
    check_embeddings(vectors, path, tolerance=None)  # finite (NaN would pass the norm test below)
    norms = np.linalg.norm(vectors, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
    if bad.size:
        raise VecflowError(f"{path}: row {int(bad[0])} is not L2-normalised (norm {norms[bad[0]]:.4f})")
    return vectors, index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow embed", description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", required=True, help="chunks JSONL (article_id, chunk_index, text, ...)")
    parser.add_argument("--encoder", required=True, help="HF encoder folder")
    parser.add_argument("--settings", required=True, type=settings_arg, help="the lvm config section as JSON")
    parser.add_argument("--out", required=True, help="F.safetensors")
    parser.add_argument("--index", required=True, help="F.index.jsonl")
    args = parser.parse_args(argv)

    seed_everything(int(args.settings.get("seed", 0)))
    rows = read_index(args.chunks)
    if not rows:
        raise VecflowError(f"{args.chunks}: no chunks to embed")
    batch_size = int(args.settings.get("embed_batch_size", args.settings.get("batch_size", 64)))
    vectors, metadata = embed_chunks(rows, args.encoder, batch_size, args.settings.get("device", "auto"))
    save_tensors(args.out, {"embeddings": vectors}, metadata=metadata)
    write_jsonl(args.index, rows)
    print(f"[vecflow] {args.out}: {vectors.shape[0]} x {vectors.shape[1]} ({metadata['encoder']})", flush=True)
    return 0
