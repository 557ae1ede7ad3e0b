"""Retrieval over the training summaries by embedding (exact cosine on the L2-normalised synthesis vectors).

Two users:

- the **retrieval baseline** (``vecflow predict-retrieval``): each eval dialogue gets the summary of its nearest
  training dialogue. It sees exactly what the ELM sees (one embedding) and the rows every family trains on, so
  every family is read against it in the report; it is a baseline, never deployed;
- the **retrieval-augmented ELM** (``elm.retrieval_k``): its prompt carries the summaries of the k nearest
  training dialogues, so that the model edits what retrieval found. A training row never retrieves itself.

Ties are broken by the lower pool index, so the result depends only on the data.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vecflow.core.errors import VecflowError
from vecflow.core.io import write_jsonl
from vecflow.data.synthesis import SynthesisRow, load_summary_split


@dataclass(frozen=True)
class Pool:
    """One entry per training source (dialogue): its id, unit vector and first summary."""

    ids: list[str]
    vectors: np.ndarray  # (N, D) float32, L2-normalised
    summaries: list[str]

    def position(self) -> dict[str, int]:
        return {source_id: i for i, source_id in enumerate(self.ids)}


def build_pool(rows: list[SynthesisRow], vectors: np.ndarray) -> Pool:
    """The distinct sources of a summary-only split in order of first appearance, each with its first summary."""
    first: dict[str, SynthesisRow] = {}
    for row in rows:
        first.setdefault(row.source_id, row)
    ids = list(first)
    return Pool(ids, np.ascontiguousarray(vectors[[first[i].embedding_index for i in ids]], dtype=np.float32),
                [first[i].target_text for i in ids])


def nearest(pool: np.ndarray, queries: np.ndarray, k: int, exclude: list[int | None] | None = None,
            block: int = 1024) -> np.ndarray:
    """(Q, k) pool indices by descending cosine; ``exclude[q]`` (a pool index or None) is never returned for q."""
    if k < 1 or k > len(pool) - (1 if exclude is not None else 0):
        raise VecflowError(f"retrieval: k = {k} needs at least {k + (exclude is not None)} pool entries, "
                           f"there are {len(pool)}")
    out = np.empty((len(queries), k), dtype=np.int64)
    for start in range(0, len(queries), block):
        sims = queries[start : start + block] @ pool.T
        if exclude is not None:
            for row, index in enumerate(exclude[start : start + block]):
                if index is not None:
                    sims[row, index] = -np.inf
        # stable sort of the negated similarities: equal scores keep the lower pool index first
        out[start : start + block] = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return out


def neighbour_summaries(pool: Pool, query_vectors: np.ndarray, k: int, query_ids: list[str] | None = None
                        ) -> list[list[str]]:
    """The k nearest pool summaries per query; a query whose id is in the pool (a training row) skips itself."""
    position = pool.position()
    exclude = None if query_ids is None else [position.get(i) for i in query_ids]
    return [[pool.summaries[j] for j in row] for row in nearest(pool.vectors, query_vectors, k, exclude)]


def predict_retrieval(data_dir, split: str, out, pool_split: str = "train") -> int:
    """One prediction per distinct source of ``split``: the summary of its nearest ``pool_split`` source."""
    from vecflow.summary.pairing import paired_rows

    pool_rows, pool_vectors = load_summary_split(data_dir, pool_split)
    rows, vectors = load_summary_split(data_dir, split)
    if pool_vectors.shape[1] != vectors.shape[1]:
        raise VecflowError(f"{data_dir}: {pool_split} and {split} embeddings differ in dimension "
                           f"({pool_vectors.shape[1]} vs {vectors.shape[1]})")
    pool, queries = build_pool(pool_rows, pool_vectors), build_pool(rows, vectors)
    references: dict[str, list[str]] = {}
    for row in rows:
        references.setdefault(row.source_id, []).append(row.target_text)
    found = nearest(pool.vectors, queries.vectors, 1)[:, 0]
    predictions = [pool.summaries[j] for j in found]
    return write_jsonl(out, paired_rows(queries.ids, predictions, [references[i] for i in queries.ids],
                                        f"{data_dir}/{split}_synthesis.jsonl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow predict-retrieval",
                                     description="Baseline: the summary of the nearest training dialogue.")
    parser.add_argument("--data-dir", required=True, help="summary-only synthesis folder (filter-summary's output)")
    parser.add_argument("--split", required=True, help="the split to predict, e.g. val")
    parser.add_argument("--pool", default="train", help="the split whose summaries are retrieved (default train)")
    parser.add_argument("--out", required=True, help="predictions JSONL")
    args = parser.parse_args(argv)
    count = predict_retrieval(Path(args.data_dir), args.split, args.out, args.pool)
    print(f"[vecflow] predict-retrieval: {count} predictions -> {args.out}", flush=True)
    return 0
