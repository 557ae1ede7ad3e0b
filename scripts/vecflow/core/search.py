"""Exact nearest-neighbour search over a whole bank by inner product (cosine for unit vectors).

    index = BankSearch(bank_vectors, faiss_min_rows=100_000)
    ids, scores = index.search(query, k)          # query (D,) or (Q, D); ids/scores (k,) or (Q, k)

Banks with at least ``faiss_min_rows`` rows are scanned with faiss (``faiss.knn`` with
``METRIC_INNER_PRODUCT``: the exact brute-force kernel behind ``IndexFlatIP.search``, run on the bank array
itself, so the bank is not copied into an index); smaller banks with one numpy product. Both backends give the
same answer, because neither decides it:

1. the backend scores every row in float32 and keeps ``k' > k`` candidates;
2. the candidates are rescored in float64 (exact products of the float32 values, summed along the row) and
   ordered by (score descending, bank row ascending): ties go to the lower row;
3. the float32 scores are within ``gamma_D * max_row_norm * |q|`` of the true inner products, so when the k-th
   rescored value clears the best excluded candidate by more than that bound, no row outside the candidates can
   belong to the top k; otherwise ``k'`` doubles and step 1 runs again (at worst over the whole bank).

The result is therefore the exact top k under that order, whatever the backend's summation order or
tie-breaking, with scores in float64.
"""

from __future__ import annotations

import numpy as np

from vecflow.core.errors import VecflowError

FAISS_MIN_ROWS = 100_000  # default for deploy.serve.faiss_min_rows (the schema's; see BankSearch for costs)
NORM_CHUNK_ROWS = 65_536  # rows per block when computing the bank's largest row norm (bounded memory)
_U32, _U64 = 2.0**-24, 2.0**-53  # unit round-off of float32 / float64


def _gamma(n: int, unit: float) -> float:
    """Higham's gamma_n: the relative error bound of an n-term dot product in any summation order."""
    return n * unit / (1.0 - n * unit)


def import_faiss(rows: int | None = None, faiss_min_rows: int | None = None):
    """The faiss module, or a VecflowError that says why it is needed and how to get it."""
    try:
        import faiss
    except ImportError as exc:
        why = (f"the bank has {rows} rows (>= deploy.serve.faiss_min_rows = {faiss_min_rows})"
               if rows is not None else "faiss search was requested")
        raise VecflowError(f"faiss: {why}, but faiss cannot be imported ({exc}); install it with "
                           "`pip install faiss-cpu` (a vecflow dependency) or raise deploy.serve.faiss_min_rows "
                           "above the bank's size to search with numpy") from None
    return faiss


def backend_for(rows: int, faiss_min_rows: int = FAISS_MIN_ROWS) -> str:
    """``faiss`` or ``numpy`` for a bank of ``rows`` rows; raises (clearly) when faiss is needed but missing."""
    if not isinstance(faiss_min_rows, int) or isinstance(faiss_min_rows, bool) or faiss_min_rows < 0:
        raise VecflowError(f"deploy.serve.faiss_min_rows: must be a non-negative integer, got {faiss_min_rows!r}")
    if rows >= faiss_min_rows:
        import_faiss(rows, faiss_min_rows)
        return "faiss"
    return "numpy"


class BankSearch:
    """Exact top-k inner-product search over one bank (rows x dim, float32), numpy or faiss by size.

    Cost: one float32 pass over the bank per query batch plus a float64 rescoring of about 2k + 32 rows. For one
    query the two are about equally fast (BENCHMARKS.md, figures from the code's design notes). faiss's gain is in holding only a k'-row heap per
    query and blocking query
    batches (numpy holds a Q x rows score matrix); its scan of ONE query is single-threaded (it parallelises over
    queries), where numpy's BLAS product uses every core. Set ``faiss_min_rows`` with that in mind.
    """

    def __init__(self, vectors, faiss_min_rows: int = FAISS_MIN_ROWS, source: str = "bank"):
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] < 1 or vectors.shape[1] < 1:
            raise VecflowError(f"{source}: expected a non-empty (rows, dim) matrix, got shape {vectors.shape}")
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # no copy when it already is
        self.rows, self.dim = self.vectors.shape
        self.max_norm = self._max_row_norm(source)
        self.backend = backend_for(self.rows, faiss_min_rows)
        self._faiss = import_faiss(self.rows, faiss_min_rows) if self.backend == "faiss" else None

    def _max_row_norm(self, source: str) -> float:
        largest = 0.0
        for start in range(0, self.rows, NORM_CHUNK_ROWS):
            block = self.vectors[start : start + NORM_CHUNK_ROWS].astype(np.float64)
            norms = np.einsum("ij,ij->i", block, block)
            if not np.all(np.isfinite(norms)):
                bad = start + int(np.flatnonzero(~np.isfinite(norms))[0])
                raise VecflowError(f"{source}: row {bad} contains NaN or infinity (or overflows)")
            largest = max(largest, float(norms.max()))
        return float(np.sqrt(largest))

    # -------------------------------------------------------------------------------------- the two steps

    def _candidates(self, queries: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids (Q, width), the lowest float32 score among each query's candidates (Q,)): every row left out
        scores at most that in float32."""
        if self.backend == "faiss":
            scores, ids = self._faiss.knn(queries, self.vectors, width, metric=self._faiss.METRIC_INNER_PRODUCT)
            if np.any(ids < 0):
                raise VecflowError("faiss returned fewer candidates than asked for (non-finite scores?)")
            return ids, scores.min(axis=1)
        scores = queries @ self.vectors.T  # (Q, rows) float32
        if width < self.rows:
            ids = np.argpartition(-scores, width - 1, axis=1)[:, :width]
        else:
            ids = np.broadcast_to(np.arange(self.rows), (len(queries), self.rows))
        return ids, np.take_along_axis(scores, ids, axis=1).min(axis=1)

    def exact_scores(self, ids: np.ndarray, query: np.ndarray) -> np.ndarray:
        """float64 inner products of bank rows ``ids`` with ``query``: exact products, each row summed alone
        (pairwise along the row), so a row's score never depends on which other rows are scored with it."""
        return (self.vectors[ids].astype(np.float64) * query.astype(np.float64)).sum(axis=1)

    # ------------------------------------------------------------------------------------------- search

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` (at most the bank's rows) best rows per query, best first, ties to the lower row; returns
        (ids int64, scores float64), shaped (k,) for one query of shape (D,) and (Q, k) for (Q, D)."""
        queries = np.asarray(queries)
        single = queries.ndim == 1
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise VecflowError(f"query: expected dimension {self.dim}, got shape {queries.shape}")
        if not np.all(np.isfinite(queries)):
            raise VecflowError("query: contains NaN or infinity")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise VecflowError(f"k: must be a positive integer, got {k!r}")
        k = min(int(k), self.rows)
        q_norms = np.linalg.norm(queries.astype(np.float64), axis=1)
        slack = (_gamma(self.dim + 2, _U32) + 2 * _gamma(self.dim, _U64)) * self.max_norm * q_norms
        out_ids = np.empty((len(queries), k), dtype=np.int64)
        out_scores = np.empty((len(queries), k), dtype=np.float64)
        pending, width = np.arange(len(queries)), min(self.rows, 2 * k + 32)
        while pending.size:
            ids, floor = self._candidates(queries[pending], width)
            again = []
            for row, q in enumerate(pending):
                cand = np.asarray(ids[row], dtype=np.int64)
                exact = self.exact_scores(cand, queries[q])
                order = np.lexsort((cand, -exact))[:k]  # score descending, then bank row ascending
                if width < self.rows and not exact[order[-1]] > floor[row] + slack[q]:
                    again.append(q)  # a row outside the candidates might still tie or beat the k-th
                    continue
                out_ids[q], out_scores[q] = cand[order], exact[order]
            pending, width = np.asarray(again, dtype=np.int64), min(self.rows, 2 * width)
        return (out_ids[0], out_scores[0]) if single else (out_ids, out_scores)
