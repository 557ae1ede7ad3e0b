"""Next-vector training windows (``vecflow windows``): the windows artifact, written, read and checked here only.

For each article's chunks in order, every chunk t whose C predecessors t-C .. t-1 are all in the bank gives
one window: contexts = chunks[t-C .. t-1], target = chunk[t]. A window never crosses an article boundary, nor
a gap in the chunk indices (e.g. where a duplicate chunk was dropped by the split), so its C + 1 chunks are
always consecutive text. The chunks are found with ``ChunkBank.rows`` (the one "chunk t+k of article a").

The file stores bank ROW INDICES, not vectors (safetensors, format ``bank-rows/1``):
- ``rows`` (N x (C+1) int64): bank rows of ctx_0 .. ctx_{C-1} and of the target;
- ``article_ids`` (N), ``target_indices`` (N): the target's article and own chunk index;
- metadata: ``format``, ``context_length``, ``bank_rows`` (rows of the bank it indexes) and ``embeddings``.
Every consumer reads it with the bank it indexes and gathers vectors on the fly. A file of the former float
layout (``contexts`` N x C x D) is refused with the way to rebuild it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vecflow.core.errors import VecflowError
from vecflow.core.io import load_tensors, save_tensors
from vecflow.lvm.bank import ChunkBank, load_bank, safetensors_header
from vecflow.lvm.settings import WindowsSettings

FORMAT = "bank-rows/1"
WINDOW_KEYS = ("rows", "article_ids", "target_indices")
REBUILD = ("delete it and rerun the make_windows rule (snakemake re-creates it from the embedding bank), or run "
           "`vecflow windows --embeddings BANK.safetensors --index BANK.index.jsonl --settings S --out FILE`")


@dataclass(frozen=True)
class Windows:
    """N windows as bank rows: ``rows`` (N, C+1) = ctx_0..ctx_{C-1}, target; plus their article and target
    chunk index. ``contexts(bank)`` / ``targets(bank)`` gather the vectors."""

    rows: np.ndarray
    article_ids: np.ndarray
    target_indices: np.ndarray
    source: str = "windows"

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def context_length(self) -> int:
        return int(self.rows.shape[1]) - 1

    @property
    def context_rows(self) -> np.ndarray:
        return self.rows[:, :-1]

    @property
    def target_rows(self) -> np.ndarray:
        return self.rows[:, -1]

    def subset(self, rows: np.ndarray) -> "Windows":
        return Windows(self.rows[rows], self.article_ids[rows], self.target_indices[rows], self.source)

    def contexts(self, bank: ChunkBank) -> np.ndarray:
        """(N, C, D) float32 context vectors."""
        return bank.vectors(self.context_rows)

    def targets(self, bank: ChunkBank) -> np.ndarray:
        """(N, D) float32 target vectors."""
        return bank.vectors(self.target_rows)


def make_windows(bank: ChunkBank, context_length: int) -> Windows:
    """Every window of ``context_length`` consecutive chunks + the next one, per article, in (article, chunk)
    order: chunk t of article a is a target when chunks t-C .. t of a are all in the bank."""
    if context_length < 1:
        raise VecflowError(f"settings: context_length must be >= 1, got {context_length}")
    order = np.lexsort((bank.chunk_indices, bank.article_ids))
    articles, targets = bank.article_ids[order], bank.chunk_indices[order]
    offsets = np.arange(-context_length, 1)
    rows = bank.rows(articles[:, None], targets[:, None] + offsets[None, :])  # (M, C+1)
    keep = (rows >= 0).all(axis=1)
    return Windows(rows[keep], articles[keep], targets[keep], bank.source)


def no_windows_message(path, bank: ChunkBank, context_length: int) -> str:
    return (
        f"{path}: no windows with context_length {context_length}: {len(bank.articles)} articles, "
        f"{len(bank)} chunks, the longest article has {int(bank.article_sizes.max(initial=0))} chunks "
        f"(each needs at least {context_length + 1} consecutive chunks)"
    )


def save_windows(path: str | Path, windows: Windows, bank: ChunkBank) -> None:
    save_tensors(path, {"rows": windows.rows, "article_ids": windows.article_ids,
                        "target_indices": windows.target_indices},
                 metadata={"format": FORMAT, "context_length": str(windows.context_length),
                           "bank_rows": str(len(bank)), "embeddings": Path(bank.source).name})


def load_windows(path: str | Path, bank: ChunkBank | None = None) -> Windows:
    """Read a windows file and check it: shapes and dtypes, and with ``bank`` that it indexes that bank (row
    count, rows in range, every row the chunk the window says: target (a, t), context t-C+i of a)."""
    path = Path(path)
    header = safetensors_header(path)[0]  # the names first: an old float file may be gigabytes
    if "contexts" in header or "targets" in header:
        raise VecflowError(f"{path}: an old windows file with float vectors (contexts N x C x D); windows now "
                           f"hold bank row indices: {REBUILD}")
    missing = [key for key in WINDOW_KEYS if key not in header]
    if missing:
        names = ", ".join(sorted(k for k in header if k != "__metadata__")) or "none"
        raise VecflowError(f"{path}: missing tensor '{missing[0]}' (has: {names}); not a windows file: {REBUILD}")
    arrays = load_tensors(path, required=WINDOW_KEYS)
    rows, article_ids, target_indices = arrays["rows"], arrays["article_ids"], arrays["target_indices"]
    if rows.ndim != 2 or rows.shape[1] < 2 or rows.dtype != np.int64:
        raise VecflowError(f"{path}: 'rows' must be N x (C+1) int64 bank rows, got {rows.dtype} {rows.shape}")
    n = len(rows)
    for key in ("article_ids", "target_indices"):
        if arrays[key].shape != (n,) or arrays[key].dtype != np.int64:
            raise VecflowError(f"{path}: '{key}' must be {n} int64 values, got {arrays[key].dtype} {arrays[key].shape}")
    if n == 0:
        raise VecflowError(f"{path}: no windows")
    windows = Windows(rows, article_ids, target_indices, str(path))
    if bank is not None:
        check_against_bank(windows, bank, (header.get("__metadata__") or {}).get("bank_rows"))
    return windows


def check_against_bank(windows: Windows, bank: ChunkBank, bank_rows: str | None = None) -> None:
    """The windows index this bank: same row count as when built, and every row is the chunk it must be."""
    if bank_rows is not None and int(bank_rows) != len(bank):
        raise VecflowError(f"{windows.source}: built from a bank of {bank_rows} rows, but {bank.source} has "
                           f"{len(bank)}: the bank was re-embedded since; {REBUILD}")
    rows = windows.rows
    if rows.min() < 0 or rows.max() >= len(bank):
        bad = int(np.flatnonzero((rows < 0).any(axis=1) | (rows >= len(bank)).any(axis=1))[0])
        raise VecflowError(f"{windows.source}: window {bad}: row {rows[bad].tolist()} outside {bank.source} "
                           f"({len(bank)} rows); {REBUILD}")
    expected = windows.target_indices[:, None] + np.arange(-windows.context_length, 1)[None, :]
    wrong = (bank.article_ids[rows] != windows.article_ids[:, None]) | (bank.chunk_indices[rows] != expected)
    if wrong.any():
        bad = int(np.flatnonzero(wrong.any(axis=1))[0])
        raise VecflowError(f"{windows.source}: window {bad} (article_id={windows.article_ids[bad]}, "
                           f"target_index={windows.target_indices[bad]}) does not point at its chunks in "
                           f"{bank.source}: the windows were built from another bank; {REBUILD}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow windows", description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", required=True, help="F.safetensors from embed")
    parser.add_argument("--index", required=True, help="F.index.jsonl from embed")
    parser.add_argument("--settings", required=True, type=WindowsSettings.from_json,
                        help="context_length (the lvm section's) and seed/device, as JSON")
    parser.add_argument("--out", required=True, help="windows safetensors")
    parser.add_argument("--encoder", metavar="DIR",
                        help="the encoder folder the config names: a bank of another encoder or dimension is refused")
    args = parser.parse_args(argv)

    context_length = args.settings.context_length
    bank = load_bank(args.embeddings, args.index, encoder_dir=args.encoder)
    windows = make_windows(bank, context_length)
    if len(windows) == 0:
        raise VecflowError(no_windows_message(args.embeddings, bank, context_length))
    save_windows(args.out, windows, bank)
    n_articles = len(np.unique(windows.article_ids))
    print(f"[vecflow] {args.out}: {len(windows)} windows (C={context_length}) from {n_articles} articles "
          f"(bank rows of {args.embeddings})", flush=True)
    return 0
