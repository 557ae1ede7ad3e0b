"""Next-vector training windows (``vecflow windows``) and their validated reader ``load_windows``.

For each article's chunks in order, every position t >= C gives one window: contexts = chunks[t-C .. t-1],
target = chunk[t]. A window never crosses an article boundary, nor a gap in the chunk indices (e.g. where a
duplicate chunk was dropped by the split), so its C + 1 chunks are always consecutive text.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vecflow.lvm.embeddings import load_embeddings
from vecflow.core.errors import VecflowError
from vecflow.core.io import check_embeddings, load_tensors, save_tensors
from vecflow.core.settings import settings_arg

WINDOW_KEYS = ("contexts", "targets", "article_ids", "target_indices")


def make_windows(vectors: np.ndarray, article_ids, chunk_indices, context_length: int) -> dict[str, np.ndarray]:
    """Build every window of ``context_length`` consecutive chunks + the next one, per article.

    Rows may come in any order; they are sorted by (article, chunk). Returns ``contexts`` (N x C x D),
    ``targets`` (N x D), ``article_ids`` (N) and ``target_indices`` (N, the target's own chunk index).
    """
    if context_length < 1:
        raise VecflowError(f"settings: context_length must be >= 1, got {context_length}")
    article_ids = np.asarray(article_ids, dtype=np.int64)
    chunk_indices = np.asarray(chunk_indices, dtype=np.int64)
    order = np.lexsort((chunk_indices, article_ids))
    vectors, article_ids, chunk_indices = vectors[order], article_ids[order], chunk_indices[order]

    c = context_length
    t = np.arange(c, len(vectors))
    same_article = article_ids[t] == article_ids[t - c]
    consecutive = chunk_indices[t] - chunk_indices[t - c] == c
    t = t[same_article & consecutive]
    context_rows = t[:, None] - c + np.arange(c)[None, :]
    return {
        "contexts": vectors[context_rows].astype(np.float32),
        "targets": vectors[t].astype(np.float32),
        "article_ids": article_ids[t],
        "target_indices": chunk_indices[t],
    }


def check_unique_chunks(index: list[dict], index_path) -> None:
    seen = set()
    for row_number, row in enumerate(index, start=1):
        key = (row["article_id"], row["chunk_index"])
        if key in seen:
            raise VecflowError(f"{index_path}:{row_number}: chunk (article {key[0]}, chunk {key[1]}) appears twice")
        seen.add(key)


def no_windows_message(path, article_ids: np.ndarray, context_length: int) -> str:
    lengths = np.unique(article_ids, return_counts=True)[1]
    return (
        f"{path}: no windows with context_length {context_length}: {len(lengths)} articles, "
        f"{len(article_ids)} chunks, the longest article has {int(lengths.max(initial=0))} chunks "
        f"(each needs at least {context_length + 1} consecutive chunks)"
    )


def load_windows(path: str | Path) -> dict[str, np.ndarray]:
    """Read a windows file and check that the four arrays have consistent shapes and dtypes."""
    arrays = load_tensors(path, required=WINDOW_KEYS)
    contexts, targets = arrays["contexts"], arrays["targets"]
    if contexts.ndim != 3 or contexts.dtype != np.float32:
        raise VecflowError(f"{path}: 'contexts' must be N x C x D float32, got {contexts.dtype} {contexts.shape}")
    n, _, dim = contexts.shape
    if targets.shape != (n, dim) or targets.dtype != np.float32:
        raise VecflowError(f"{path}: 'targets' must be {n} x {dim} float32, got {targets.dtype} {targets.shape}")
    for key in ("article_ids", "target_indices"):
        if arrays[key].shape != (n,) or arrays[key].dtype != np.int64:
            raise VecflowError(f"{path}: '{key}' must be {n} int64 values, got {arrays[key].dtype} {arrays[key].shape}")
    if n == 0:
        raise VecflowError(f"{path}: no windows")
    for key in ("contexts", "targets"):  # finite: a NaN must never reach training or the diagnostics gate
        check_embeddings(arrays[key], path, key, tolerance=None)
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow windows", description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", required=True, help="F.safetensors from embed")
    parser.add_argument("--index", required=True, help="F.index.jsonl from embed")
    parser.add_argument("--settings", required=True, type=settings_arg, help="the lvm config section as JSON")
    parser.add_argument("--out", required=True, help="windows safetensors")
    args = parser.parse_args(argv)

    context_length = int(args.settings.get("context_length", 5))
    vectors, index = load_embeddings(args.embeddings, args.index)
    check_unique_chunks(index, args.index)
    article_ids = np.array([row["article_id"] for row in index], dtype=np.int64)
    chunk_indices = np.array([row["chunk_index"] for row in index], dtype=np.int64)
    windows = make_windows(vectors, article_ids, chunk_indices, context_length)
    n = len(windows["targets"])
    if n == 0:
        raise VecflowError(no_windows_message(args.embeddings, article_ids, context_length))
    metadata = {"context_length": str(context_length), "embeddings": Path(args.embeddings).name}
    save_tensors(args.out, windows, metadata=metadata)
    n_articles = len(np.unique(windows["article_ids"]))
    print(f"[vecflow] {args.out}: {n} windows (C={context_length}) from {n_articles} articles", flush=True)
    return 0
