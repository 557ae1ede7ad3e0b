"""Baseline next-vector predictors that every 5CAT report scores next to the model.

A predictor is any callable ``predict(contexts) -> predictions`` mapping a float array of shape (B, C, D)
(C context slots, oldest first) to (B, D) L2-normalised vectors. Baselines:

- ``copy_last``: ŷ = ctx[-1] (what a model with backward bias converges to);
- ``context_mean``: ŷ = normalised mean of the context slots (order-blind);
- ``fit_ridge``: closed-form ridge regression from the flattened context (C·D) to the target, fitted on
  TRAIN windows; ``fit_ridge_gcv`` picks λ from a grid by generalised cross-validation (the closed-form
  rotation-invariant leave-one-out estimate) on those same training windows, from one eigendecomposition;
- ``NearestContextOracle``: ŷ = the target of the window whose context is closest to the query; on the
  windows it was built from it returns ŷ = y exactly. For tests (it needs the targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from vecflow.core.errors import VecflowError

Predictor = Callable[[np.ndarray], np.ndarray]


def normalise(vectors: np.ndarray, axis: int = -1) -> np.ndarray:
    """L2-normalise along ``axis``; zero vectors stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    moved = np.moveaxis(vectors, axis, -1)
    norms = np.sqrt(np.einsum("...d,...d->...", moved, moved))  # no squared copy, unlike np.linalg.norm
    return vectors / np.maximum(np.expand_dims(norms, axis), 1e-12)


def _check_contexts(contexts: np.ndarray) -> np.ndarray:
    contexts = np.asarray(contexts, dtype=np.float32)
    if contexts.ndim != 3:
        raise VecflowError(f"contexts: expected shape (batch, slots, dim), got {contexts.shape}")
    return contexts


def copy_last(contexts: np.ndarray) -> np.ndarray:
    """ŷ = ctx[-1]."""
    return normalise(_check_contexts(contexts)[:, -1])


def context_mean(contexts: np.ndarray) -> np.ndarray:
    """ŷ = normalised mean of all context slots."""
    return normalise(_check_contexts(contexts).mean(axis=1))


DEFAULT_LAMBDA_GRID = tuple(float(v) for v in np.logspace(-2, 4, 13))


@dataclass(frozen=True)
class RidgeRegression:
    """ŷ = normalise(flatten(ctx) @ weights + bias), with weights (C·D, D) and bias (D,)."""

    weights: np.ndarray
    bias: np.ndarray
    ridge_lambda: float = float("nan")
    gcv: dict | None = None  # {λ: GCV score} when λ was chosen by fit_ridge_gcv

    def __call__(self, contexts: np.ndarray) -> np.ndarray:
        contexts = _check_contexts(contexts)
        flat = contexts.reshape(len(contexts), -1)
        if flat.shape[1] != self.weights.shape[0]:
            raise VecflowError(
                f"ridge: fitted on contexts of {self.weights.shape[0]} values (slots × dim), "
                f"got {flat.shape[1]}"
            )
        return normalise(flat @ self.weights + self.bias)


def _centred_gram(contexts: np.ndarray, targets: np.ndarray, batch_size: int) -> dict:
    """XcᵀXc, XcᵀYc, ||Yc||², the means and n of the centred data, accumulated batch by batch.

    Each batch's products are computed in float32 (3x faster than float64 on CPU) and accumulated in
    float64, so large training sets need only O((C·D)²) memory.
    """
    contexts = _check_contexts(contexts)
    targets = np.asarray(targets, dtype=np.float32)
    if len(contexts) != len(targets) or len(contexts) == 0:
        raise VecflowError(f"ridge: need the same non-zero number of contexts and targets, "
                           f"got {len(contexts)} and {len(targets)}")
    n, features = len(contexts), contexts.shape[1] * contexts.shape[2]
    xtx = np.zeros((features, features))
    xty = np.zeros((features, targets.shape[1]))
    x_sum, y_sum, y_sq = np.zeros(features), np.zeros(targets.shape[1]), 0.0
    for start in range(0, n, batch_size):
        x = contexts[start:start + batch_size].reshape(-1, features)
        y = targets[start:start + batch_size]
        xtx += x.T @ x
        xty += x.T @ y
        x_sum += x.sum(axis=0)
        y_sum += y.sum(axis=0)
        y_sq += float((y.astype(np.float64) ** 2).sum())
    x_mean, y_mean = x_sum / n, y_sum / n
    return {"xtx": xtx - n * np.outer(x_mean, x_mean), "xty": xty - n * np.outer(x_mean, y_mean),
            "yy": y_sq - n * float(y_mean @ y_mean), "x_mean": x_mean, "y_mean": y_mean, "n": n}


def _ridge(gram: dict, ridge_lambda: float, gcv: dict | None = None) -> RidgeRegression:
    features = gram["xtx"].shape[0]
    weights = np.linalg.solve(gram["xtx"] + ridge_lambda * np.eye(features), gram["xty"])
    bias = gram["y_mean"] - gram["x_mean"] @ weights
    return RidgeRegression(weights.astype(np.float32), bias.astype(np.float32), float(ridge_lambda), gcv)


def fit_ridge(
    contexts: np.ndarray, targets: np.ndarray, ridge_lambda: float = 1.0, batch_size: int = 4096
) -> RidgeRegression:
    """Fit ridge regression in closed form: (XcᵀXc + λI) W = XcᵀYc on centred data, bias = ȳ − x̄W."""
    if ridge_lambda < 0:
        raise VecflowError(f"settings: field 'ridge_lambda': must be >= 0, got {ridge_lambda}")
    return _ridge(_centred_gram(contexts, targets, batch_size), ridge_lambda)


def gcv_scores(gram: dict, grid) -> dict[float, float]:
    """GCV(λ) = n·RSS(λ) / (n − df(λ))² for each λ, from one eigendecomposition XcᵀXc = V diag(s) Vᵀ:
    with Z = VᵀXcᵀYc and d = 1/(s+λ), RSS = ||Yc||² − Σ_i (2 d_i − s_i d_i²)·||Z_i||² and df = Σ_i s_i d_i."""
    s, v = np.linalg.eigh(gram["xtx"])
    s = np.clip(s, 0.0, None)
    z2 = ((v.T @ gram["xty"]) ** 2).sum(axis=1)
    n, scores = gram["n"], {}
    for value in grid:
        d = 1.0 / (s + value)
        rss = gram["yy"] - float(((2 * d - s * d * d) * z2).sum())
        df = float((s * d).sum()) + 1.0  # + the intercept
        scores[float(value)] = n * max(rss, 0.0) / max(n - df, 1e-9) ** 2 if df < n else float("inf")
    return scores


def fit_ridge_gcv(contexts: np.ndarray, targets: np.ndarray, grid=DEFAULT_LAMBDA_GRID,
                  batch_size: int = 4096) -> RidgeRegression:
    """Ridge with λ chosen on these (training) windows by generalised cross-validation over ``grid``."""
    grid = [float(v) for v in grid]
    if not grid or any(v <= 0 for v in grid):
        raise VecflowError(f"settings: field 'ridge_lambdas': expected positive values, got {grid}")
    gram = _centred_gram(contexts, targets, batch_size)
    scores = gcv_scores(gram, grid)
    return _ridge(gram, min(scores, key=scores.get), scores)


class NearestContextOracle:
    """ŷ = target of the stored window whose flattened context has the highest dot product with the query.

    Built from windows (contexts, targets): on those contexts it returns the true targets, so it is the
    ``ŷ = y`` oracle; on altered contexts (ablations, rollout) it answers with the nearest window's target.
    """

    def __init__(self, contexts: np.ndarray, targets: np.ndarray, batch_size: int = 1024):
        contexts = _check_contexts(contexts)
        self.keys = contexts.reshape(len(contexts), -1)
        self.targets = normalise(targets)
        self.batch_size = batch_size

    def __call__(self, contexts: np.ndarray) -> np.ndarray:
        queries = _check_contexts(contexts).reshape(len(contexts), -1)
        nearest = np.concatenate([
            np.argmax(queries[start:start + self.batch_size] @ self.keys.T, axis=1)
            for start in range(0, len(queries), self.batch_size)
        ]) if len(queries) else np.zeros(0, dtype=np.int64)
        return self.targets[nearest]


def build_baselines(train_contexts: np.ndarray, train_targets: np.ndarray, ridge_lambda: float | str = "auto",
                    grid=DEFAULT_LAMBDA_GRID) -> dict[str, Predictor]:
    """The three baselines every 5CAT report scores, by name (ridge fitted on the given TRAIN windows, its λ
    chosen there by GCV over ``grid`` when ``ridge_lambda`` is "auto")."""
    if ridge_lambda == "auto":
        ridge = fit_ridge_gcv(train_contexts, train_targets, grid)
    else:
        ridge = fit_ridge(train_contexts, train_targets, float(ridge_lambda))
    return {"copy_last": copy_last, "context_mean": context_mean, "ridge": ridge}
