import numpy as np
import pytest

from vecflow.lvm.baselines import (
    NearestContextOracle,
    RidgeRegression,
    build_baselines,
    context_mean,
    copy_last,
    fit_ridge,
    normalise,
)
from vecflow.core.errors import VecflowError


def unit_vectors(rng, *shape):
    return normalise(rng.standard_normal(shape).astype(np.float32))


def test_copy_last_returns_the_last_slot():
    contexts = unit_vectors(np.random.default_rng(0), 4, 3, 8)
    np.testing.assert_allclose(copy_last(contexts), contexts[:, -1], atol=1e-6)


def test_context_mean_is_the_normalised_mean_and_ignores_order():
    contexts = unit_vectors(np.random.default_rng(1), 4, 3, 8)
    expected = contexts.mean(axis=1) / np.linalg.norm(contexts.mean(axis=1), axis=1, keepdims=True)
    np.testing.assert_allclose(context_mean(contexts), expected, atol=1e-6)
    np.testing.assert_allclose(context_mean(contexts[:, ::-1]), expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(context_mean(contexts), axis=1), 1.0, atol=1e-6)


def test_ridge_recovers_a_linear_map_from_the_flattened_context():
    rng = np.random.default_rng(2)
    contexts = rng.standard_normal((400, 3, 6)).astype(np.float32)
    true_weights = rng.standard_normal((18, 6)).astype(np.float32)
    targets = contexts.reshape(400, -1) @ true_weights + 0.5
    ridge = fit_ridge(contexts, targets, ridge_lambda=1e-6)
    np.testing.assert_allclose(ridge.weights, true_weights, atol=1e-3)
    np.testing.assert_allclose(ridge.bias, 0.5, atol=1e-3)
    np.testing.assert_allclose(ridge(contexts), normalise(targets), atol=1e-4)


def test_ridge_batched_gram_accumulation_matches_one_batch():
    rng = np.random.default_rng(3)
    contexts, targets = unit_vectors(rng, 300, 2, 5), unit_vectors(rng, 300, 5)
    one = fit_ridge(contexts, targets, ridge_lambda=0.5, batch_size=10_000)
    many = fit_ridge(contexts, targets, ridge_lambda=0.5, batch_size=7)
    np.testing.assert_allclose(one.weights, many.weights, atol=1e-5)
    np.testing.assert_allclose(one.bias, many.bias, atol=1e-5)


def test_ridge_lambda_shrinks_the_weights():
    rng = np.random.default_rng(4)
    contexts, targets = unit_vectors(rng, 200, 2, 5), unit_vectors(rng, 200, 5)
    small = fit_ridge(contexts, targets, ridge_lambda=0.01)
    large = fit_ridge(contexts, targets, ridge_lambda=1e4)
    assert np.linalg.norm(large.weights) < 0.05 * np.linalg.norm(small.weights)


def test_ridge_rejects_bad_input_with_clear_messages():
    rng = np.random.default_rng(5)
    contexts, targets = unit_vectors(rng, 10, 2, 4), unit_vectors(rng, 10, 4)
    with pytest.raises(VecflowError, match="ridge_lambda.*>= 0"):
        fit_ridge(contexts, targets, ridge_lambda=-1.0)
    with pytest.raises(VecflowError, match="same non-zero number"):
        fit_ridge(contexts, targets[:5])
    ridge = fit_ridge(contexts, targets)
    with pytest.raises(VecflowError, match="fitted on contexts of 8 values"):
        ridge(unit_vectors(rng, 3, 3, 4))
    with pytest.raises(VecflowError, match=r"contexts: expected shape \(batch, slots, dim\)"):
        copy_last(unit_vectors(rng, 3, 4))


def test_oracle_returns_the_true_targets_and_the_nearest_window_for_altered_contexts():
    rng = np.random.default_rng(6)
    contexts, targets = unit_vectors(rng, 50, 3, 16), unit_vectors(rng, 50, 16)
    oracle = NearestContextOracle(contexts, targets, batch_size=8)
    np.testing.assert_allclose(oracle(contexts), targets, atol=1e-6)
    nudged = normalise(contexts + 0.01 * rng.standard_normal(contexts.shape).astype(np.float32))
    np.testing.assert_allclose(oracle(nudged[::-1]), targets[::-1], atol=1e-6)


def test_build_baselines_names_the_three_and_fits_ridge_on_train():
    rng = np.random.default_rng(7)
    contexts, targets = unit_vectors(rng, 40, 2, 4), unit_vectors(rng, 40, 4)
    baselines = build_baselines(contexts, targets, ridge_lambda=2.0)
    assert list(baselines) == ["copy_last", "context_mean", "ridge"]
    assert isinstance(baselines["ridge"], RidgeRegression)
    np.testing.assert_allclose(baselines["ridge"].weights, fit_ridge(contexts, targets, 2.0).weights)
    for predict in baselines.values():
        assert predict(contexts).shape == (40, 4)


def test_gcv_matches_the_explicit_hat_matrix_and_picks_more_shrinkage_for_noisier_targets():
    from vecflow.lvm.baselines import _centred_gram, fit_ridge_gcv, gcv_scores

    rng = np.random.default_rng(5)
    contexts = rng.normal(size=(60, 2, 4)).astype(np.float32)
    weights = rng.normal(size=(8, 3))
    clean = contexts.reshape(60, -1) @ weights
    x = contexts.reshape(60, -1).astype(np.float64)
    xc = x - x.mean(axis=0)
    for lam in (0.1, 10.0):
        targets = (clean + rng.normal(scale=0.5, size=clean.shape)).astype(np.float32)
        yc = targets - targets.mean(axis=0)
        hat = xc @ np.linalg.solve(xc.T @ xc + lam * np.eye(8), xc.T)
        rss = ((yc - hat @ yc) ** 2).sum()
        expected = 60 * rss / (60 - np.trace(hat) - 1) ** 2
        got = gcv_scores(_centred_gram(contexts, targets, 4096), [lam])[lam]
        assert got == pytest.approx(expected, rel=1e-4)
    quiet = fit_ridge_gcv(contexts, (clean + rng.normal(scale=0.01, size=clean.shape)).astype(np.float32))
    noisy = fit_ridge_gcv(contexts, rng.normal(size=clean.shape).astype(np.float32))  # no signal at all
    assert quiet.ridge_lambda < noisy.ridge_lambda
    assert set(quiet.gcv) == set(float(v) for v in np.logspace(-2, 4, 13))


def test_build_baselines_auto_lambda_uses_gcv():
    rng = np.random.default_rng(6)
    contexts = rng.normal(size=(40, 2, 3)).astype(np.float32)
    targets = rng.normal(size=(40, 3)).astype(np.float32)
    ridge = build_baselines(contexts, targets)["ridge"]
    assert ridge.gcv and ridge.ridge_lambda == min(ridge.gcv, key=ridge.gcv.get)
    assert build_baselines(contexts, targets, 2.0)["ridge"].ridge_lambda == 2.0
