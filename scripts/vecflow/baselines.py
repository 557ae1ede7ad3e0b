"""Baseline next-vector predictors that every 5CAT report scores next to the model.

A predictor is any callable ``predict(contexts) -> predictions`` mapping a float array of shape (B, C, D)
(C context slots, oldest first) to (B, D) L2-normalised vectors. Baselines:

- ``copy_last``: ŷ = ctx[-1] (what a model with backward bias converges to);
- ``context_mean``: ŷ = normalised mean of the context slots (order-blind);
- ``fit_ridge``: closed-form ridge regression from the flattened context (C·D) to the target, fitted on
  TRAIN windows;
- ``NearestContextOracle``: ŷ = the target of the window whose context is closest to the query; on the
  windows it was built from it returns ŷ = y exactly. For tests (it needs the targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from vecflow.errors import VecflowError

Predictor = Callable[[np.ndarray], np.ndarray]


def normalise(vectors: np.ndarray, axis: int = -1) -> np.ndarray:
    """L2-normalise along ``axis``; zero vectors stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=axis, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


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


@dataclass(frozen=True)
class RidgeRegression:
    """ŷ = normalise(flatten(ctx) @ weights + bias), with weights (C·D, D) and bias (D,)."""

    weights: np.ndarray
    bias: np.ndarray

    def __call__(self, contexts: np.ndarray) -> np.ndarray:
        contexts = _check_contexts(contexts)
        flat = contexts.reshape(len(contexts), -1)
        if flat.shape[1] != self.weights.shape[0]:
            raise VecflowError(
                f"ridge: fitted on contexts of {self.weights.shape[0]} values (slots × dim), "
                f"got {flat.shape[1]}"
            )
        return normalise(flat @ self.weights + self.bias)


def fit_ridge(
    contexts: np.ndarray, targets: np.ndarray, ridge_lambda: float = 1.0, batch_size: int = 4096
) -> RidgeRegression:
    """Fit ridge regression in closed form: (XcᵀXc + λI) W = XcᵀYc on centred data, bias = ȳ − x̄W.

    Each batch's products are computed in float32 (3x faster than float64 on CPU) and accumulated in
    float64, so large training sets need only O((C·D)²) memory.
    """
    contexts = _check_contexts(contexts)
    targets = np.asarray(targets, dtype=np.float32)
    if len(contexts) != len(targets) or len(contexts) == 0:
        raise VecflowError(f"ridge: need the same non-zero number of contexts and targets, "
                           f"got {len(contexts)} and {len(targets)}")
    if ridge_lambda < 0:
        raise VecflowError(f"settings: field 'ridge_lambda': must be >= 0, got {ridge_lambda}")
    n, features = len(contexts), contexts.shape[1] * contexts.shape[2]
    xtx = np.zeros((features, features))
    xty = np.zeros((features, targets.shape[1]))
    x_sum = np.zeros(features)
    y_sum = np.zeros(targets.shape[1])
    for start in range(0, n, batch_size):
        x = contexts[start:start + batch_size].reshape(-1, features)
        y = targets[start:start + batch_size]
        xtx += x.T @ x
        xty += x.T @ y
        x_sum += x.sum(axis=0)
        y_sum += y.sum(axis=0)
    x_mean, y_mean = x_sum / n, y_sum / n
    centred_xtx = xtx - n * np.outer(x_mean, x_mean)
    centred_xty = xty - n * np.outer(x_mean, y_mean)
    weights = np.linalg.solve(centred_xtx + ridge_lambda * np.eye(features), centred_xty)
    bias = y_mean - x_mean @ weights
    return RidgeRegression(weights.astype(np.float32), bias.astype(np.float32))


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


def build_baselines(train_contexts: np.ndarray, train_targets: np.ndarray, ridge_lambda: float = 1.0
                    ) -> dict[str, Predictor]:
    """The three baselines every 5CAT report scores, by name (ridge fitted on the given TRAIN windows)."""
    return {
        "copy_last": copy_last,
        "context_mean": context_mean,
        "ridge": fit_ridge(train_contexts, train_targets, ridge_lambda),
    }
