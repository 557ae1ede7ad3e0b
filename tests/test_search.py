"""Exact nearest-neighbour search over a bank (issue 13 item 3): numpy below deploy.serve.faiss_min_rows, faiss
above, the same ids in the same order (ties to the lower row) and the same scores on a test bank."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from vecflow.core import search
from vecflow.core.errors import VecflowError
from vecflow.core.search import BankSearch

faiss = pytest.importorskip("faiss")
DIM = 48


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def bank() -> np.ndarray:
    """3,000 unit rows with the cases that separate a careful search from a naive one: exact duplicates (true
    ties, far apart in the bank), near-duplicates (a few float32 ulps apart) and 400 copies of one row (more tied
    rows than the first candidate pass keeps)."""
    rng = np.random.default_rng(13)
    vectors = unit(rng.normal(size=(3000, DIM)))
    vectors[2500] = vectors[10]  # exact ties, the later row must come second
    vectors[1200] = vectors[900]
    nudged = vectors[77].copy()
    nudged[0] = np.nextafter(nudged[0], np.float32(2))
    vectors[2999] = nudged  # a near-duplicate of row 77
    crowd = rng.choice(np.setdiff1d(np.arange(100, 3000), [900, 1200, 2500, 2999]), size=400, replace=False)
    vectors[np.sort(crowd)] = vectors[5]  # 401 rows equal to row 5
    return vectors


@pytest.fixture(scope="module")
def queries(bank) -> np.ndarray:
    rng = np.random.default_rng(7)
    noisy = unit(bank[[10, 900, 77, 2000]] + 0.05 * rng.normal(size=(4, DIM)))
    return np.concatenate([bank[[10, 900, 77, 5]], noisy, unit(rng.normal(size=(4, DIM)))])


def reference(bank: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """The definition: every row scored exactly (float64), ordered by score descending then row ascending."""
    exact = (bank.astype(np.float64) * query.astype(np.float64)).sum(axis=1)
    return np.lexsort((np.arange(len(bank)), -exact))[:k]


@pytest.mark.parametrize("k", [1, 5, 50])
def test_faiss_and_numpy_give_the_same_ids_order_and_scores(bank, queries, k):
    by_numpy = BankSearch(bank, faiss_min_rows=len(bank) + 1)
    by_faiss = BankSearch(bank, faiss_min_rows=len(bank))  # exactly at the threshold: faiss
    assert (by_numpy.backend, by_faiss.backend) == ("numpy", "faiss")
    ids_n, scores_n = by_numpy.search(queries, k)
    ids_f, scores_f = by_faiss.search(queries, k)
    np.testing.assert_array_equal(ids_f, ids_n)
    np.testing.assert_array_equal(scores_f, scores_n)
    for q, query in enumerate(queries):
        np.testing.assert_array_equal(ids_n[q], reference(bank, query, k))
        # the scores are the float32 cosines the server returned before, to float32 tolerance
        np.testing.assert_allclose(scores_n[q], (bank @ query)[ids_n[q]], rtol=0, atol=1e-6)
        assert np.all(np.diff(scores_n[q]) <= 0)


def test_ties_go_to_the_lower_row_even_beyond_the_first_candidate_pass(bank):
    crowd = np.flatnonzero((bank == bank[5]).all(axis=1))
    assert len(crowd) == 401
    for min_rows in (0, len(bank) + 1):
        index = BankSearch(bank, faiss_min_rows=min_rows)
        ids, scores = index.search(bank[5], 60)  # the first pass keeps 2k + 32 = 152 < 401 tied rows
        np.testing.assert_array_equal(ids, crowd[:60])
        assert len(set(scores.tolist())) == 1
        ids, _ = index.search(bank[10], 2)
        assert ids.tolist() == [10, 2500]
        ids, _ = index.search(bank[77], 2)
        assert set(ids.tolist()) == {77, 2999}  # a float32 ulp apart: the exactly closer one first
        assert ids.tolist() == reference(bank, bank[77], 2).tolist()


def test_faiss_knn_is_the_index_flat_ip_search(bank, queries):
    """BankSearch calls faiss.knn (no copy of the bank): the same kernel and answers as IndexFlatIP.search."""
    flat = faiss.IndexFlatIP(DIM)
    flat.add(bank)
    d_index, i_index = flat.search(queries, 20)
    d_knn, i_knn = faiss.knn(queries, bank, 20, metric=faiss.METRIC_INNER_PRODUCT)
    np.testing.assert_array_equal(i_knn, i_index)
    np.testing.assert_array_equal(d_knn, d_index)


def test_exact_scores_do_not_depend_on_the_other_rows_scored(bank, queries):
    index = BankSearch(bank, faiss_min_rows=0)
    rows = np.array([3, 10, 2500, 77, 2999])
    together = index.exact_scores(rows, queries[5])
    alone = [index.exact_scores(np.array([r]), queries[5])[0] for r in rows]
    assert together.tolist() == alone


def test_shapes_k_larger_than_the_bank_and_unnormalised_rows():
    rng = np.random.default_rng(0)
    small = rng.normal(size=(7, 4)).astype(np.float32) * 30  # not unit rows: plain inner products
    for min_rows in (0, 100):
        index = BankSearch(small, faiss_min_rows=min_rows)
        ids, scores = index.search(small[2], 50)
        assert ids.shape == scores.shape == (7,) and ids.dtype == np.int64
        np.testing.assert_array_equal(ids, np.argsort(-(small.astype(np.float64) @ small[2].astype(np.float64))))
        ids2, _ = index.search(small[[2, 3]], 3)
        assert ids2.shape == (2, 3) and ids2[0].tolist() == ids[:3].tolist()


def test_a_missing_faiss_fails_with_a_message_saying_what_to_do(bank, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    with pytest.raises(VecflowError, match=r"the bank has 3000 rows \(>= deploy.serve.faiss_min_rows = 1000\).*"
                                           r"pip install faiss-cpu"):
        BankSearch(bank, faiss_min_rows=1000)
    assert BankSearch(bank, faiss_min_rows=5000).backend == "numpy"  # below the threshold faiss is not needed
    with pytest.raises(VecflowError, match="pip install faiss-cpu"):
        search.backend_for(10, 0)


@pytest.mark.parametrize("vectors, message", [
    (np.zeros((0, 4), np.float32), r"bank: expected a non-empty \(rows, dim\) matrix, got shape \(0, 4\)"),
    (np.ones(4, np.float32), "expected a non-empty"),
    (np.array([[1, 0], [np.nan, 1]], np.float32), "bank: row 1 contains NaN or infinity"),
])
def test_bad_banks_are_refused(vectors, message):
    with pytest.raises(VecflowError, match=message):
        BankSearch(vectors)


def test_bad_queries_and_settings_are_refused(bank):
    index = BankSearch(bank, faiss_min_rows=0)
    with pytest.raises(VecflowError, match=f"query: expected dimension {DIM}, got shape"):
        index.search(np.ones(DIM + 1, np.float32), 3)
    with pytest.raises(VecflowError, match="query: contains NaN"):
        index.search(np.full(DIM, np.inf, np.float32), 3)
    with pytest.raises(VecflowError, match="k: must be a positive integer"):
        index.search(bank[0], 0)
    with pytest.raises(VecflowError, match="faiss_min_rows: must be a non-negative integer"):
        BankSearch(bank, faiss_min_rows=-1)


# ---- the server's /chat search over a bundle's bank -------------------------------------------------------------


def test_the_server_searches_the_bank_with_the_bundles_threshold(tmp_path, tiny_encoder, monkeypatch):
    import json

    from test_deploy import bundle_argv, deploy_settings, make_bundle_parts
    from vecflow.cli import main as cli_main
    from vecflow.core.io import read_json
    from vecflow.ship import serve

    parts, out = make_bundle_parts(tmp_path, tiny_encoder), tmp_path / "bundle"
    argv = bundle_argv(parts, out)
    argv[argv.index("--settings") + 1] = json.dumps({**deploy_settings(), "serve": {"faiss_min_rows": 5}})
    assert cli_main(argv) == 0
    assert read_json(out / "manifest.json")["serve"] == {"faiss_min_rows": 5}  # deploy.serve rides in the bundle

    with_faiss = serve.Bundle(out, device="cpu")
    vectors, rows = with_faiss.bank
    assert len(vectors) == 12 and serve.bank_search(with_faiss).backend == "faiss"
    with_numpy = serve.Bundle(out, device="cpu")
    with_numpy.manifest["serve"] = {}  # the default threshold: a 12-row bank is searched with numpy
    assert serve.bank_search(with_numpy).backend == "numpy"
    for query in (vectors[3] + 0.01, vectors[0] - vectors[7], np.ones(vectors.shape[1], np.float32)):
        hits = serve.nearest_chunks(with_faiss, query, 5)
        assert hits == serve.nearest_chunks(with_numpy, query, 5)
        # the old code's float32 ranking, to float32 tolerance (the tiny encoder's chunks are near-duplicates)
        old = vectors @ (query / np.linalg.norm(query))
        np.testing.assert_allclose([h["similarity"] for h in hits], np.sort(old)[::-1][:5], rtol=0, atol=1e-6)
        assert {h["text"] for h in hits} <= {r["text"] for r in rows} and len({h["text"] for h in hits}) == 5

    monkeypatch.setitem(sys.modules, "faiss", None)  # a broken install fails start-up, saying what to do
    with pytest.raises(VecflowError, match=r"the bank has 12 rows \(>= deploy.serve.faiss_min_rows = 5\)"):
        serve.create_app(out, device="cpu")
