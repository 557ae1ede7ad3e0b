"""The 5CAT results file (``fivecat/{run}.json``): written by ``vecflow fivecat``, read by deploy, the report
and the learning curve, all through here.

Layout: ``{"model": {split: metrics}, "baselines": {name: {split: metrics}}, "gates": {...}, "gate_counts",
"thresholds", "generalisation", "beats_baselines", "dominance", "ridge", "settings"}`` where ``metrics`` has
the headline numbers ``c0, margin, r1, r5, mrr, rollout, cos_target`` (a number, or null where undefined),
``peak_k``, ``n_windows`` and the nested details (``offsets``, ``retrieval``, ``ablations``, ...).
"""

from __future__ import annotations

from pathlib import Path

from vecflow.core.errors import VecflowError, where
from vecflow.core.io import read_json, write_json

HEADLINE = ("c0", "margin", "r1", "r5", "mrr", "rollout", "cos_target")


def check_metrics(metrics, path, field: str) -> None:
    if not isinstance(metrics, dict):
        raise VecflowError(f"{where(path, field=field)}: expected an object of metrics, got {type(metrics).__name__}")
    for name in HEADLINE:
        value = metrics.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise VecflowError(f"{where(path, field=f'{field}.{name}')}: expected a number, got {type(value).__name__}")


def check_results(results, path) -> dict:
    """The checks every reader needs: an object whose ``model`` (and each ``baselines`` entry) maps splits
    to metric objects with numeric (or null) headline numbers."""
    if not isinstance(results, dict):
        raise VecflowError(f"{path}: expected a JSON object, got {type(results).__name__}")
    model = results.get("model")
    if not isinstance(model, dict):
        raise VecflowError(f"{where(path, field='model')}: missing or not an object (not a 5CAT results file)")
    for split, metrics in model.items():
        check_metrics(metrics, path, f"model.{split}")
    baselines = results.get("baselines", {})
    if not isinstance(baselines, dict):
        raise VecflowError(f"{where(path, field='baselines')}: expected an object")
    for name, splits in baselines.items():
        if not isinstance(splits, dict):
            raise VecflowError(f"{where(path, field=f'baselines.{name}')}: expected an object of splits")
        for split, metrics in splits.items():
            check_metrics(metrics, path, f"baselines.{name}.{split}")
    return results


def write_results(path: str | Path, results: dict) -> None:
    write_json(path, check_results(results, path))


def read_results(path: str | Path) -> dict:
    return check_results(read_json(path), path)
