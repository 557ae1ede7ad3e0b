"""Data-direction diagnostics and the gate before LVM training (``vecflow diagnose``, DESIGN §5).

For windows ctx_0 .. ctx_{C-1} -> y (all L2-normalised):
- pos_i = mean cos(ctx_i, y); temporal signal = pos_{C-1} - pos_0; monotonic = pos strictly increasing;
- coherence = mean cos(ctx_i, ctx_{i+1}).
Seed 002's reference: good data coherence ~0.46-0.47 and signal ~+0.12; bad data 0.353 / +0.015.

The gate compares these with ``min_coherence``, ``min_signal`` and ``require_monotonic``. A failing gate writes
nothing and raises (exit 2) with the numbers and thresholds, unless ``waive_gate`` is set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vecflow.core.errors import VecflowError
from vecflow.core.io import atomic_path, write_json
from vecflow.core.settings import settings_arg
from vecflow.lvm.windows import load_windows

DEFAULT_THRESHOLDS = {"min_coherence": 0.2, "min_signal": 0.0, "require_monotonic": False}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def direction_stats(contexts: np.ndarray, targets: np.ndarray, article_ids: np.ndarray | None = None) -> dict:
    """pos_i, temporal signal, monotonicity and coherence of a set of windows (plus per-article spread)."""
    contexts, targets = _unit(contexts.astype(np.float64)), _unit(targets.astype(np.float64))
    cos_to_target = np.einsum("ncd,nd->nc", contexts, targets)  # N x C
    cos_adjacent = np.einsum("ncd,ncd->nc", contexts[:, :-1], contexts[:, 1:])  # N x (C-1)
    pos = cos_to_target.mean(axis=0)
    stats = {
        "n_windows": int(len(targets)),
        "context_length": int(contexts.shape[1]),
        "pos": [float(p) for p in pos],
        "signal": float(pos[-1] - pos[0]),
        "monotonic": bool(np.all(np.diff(pos) > 0)),
        "coherence": float(cos_adjacent.mean()) if cos_adjacent.size else None,  # undefined for C = 1
    }
    if article_ids is not None:
        stats["per_article"] = per_article_spread(cos_to_target[:, -1] - cos_to_target[:, 0], article_ids)
    return stats


def per_article_spread(window_signal: np.ndarray, article_ids: np.ndarray) -> dict:
    """How the temporal signal varies across articles: mean/std/min/max of per-article means."""
    _, inverse, counts = np.unique(article_ids, return_inverse=True, return_counts=True)
    article_signal = np.bincount(inverse, weights=window_signal) / counts
    return {
        "n_articles": int(len(counts)),
        "signal_mean": float(article_signal.mean()),
        "signal_std": float(article_signal.std()),
        "signal_min": float(article_signal.min()),
        "signal_max": float(article_signal.max()),
        "positive_signal_fraction": float((article_signal > 0).mean()),
    }


def diagnostics_section(settings: dict) -> dict:
    """The gate settings: ``lvm.diagnostics`` itself, or the ``diagnostics`` key of the whole lvm section."""
    return settings.get("diagnostics", settings)


def thresholds_from(settings: dict) -> dict:
    diagnostics = diagnostics_section(settings)
    return {key: diagnostics.get(key, default) for key, default in DEFAULT_THRESHOLDS.items()}


def check_gate(stats: dict, thresholds: dict, waived: bool = False) -> dict:
    """``{passed, failures, waived}``: each failure names the number and its threshold."""
    failures = []
    if not stats["signal"] >= thresholds["min_signal"]:
        failures.append(f"temporal signal {stats['signal']:+.3f} < min_signal {thresholds['min_signal']}")
    if stats["coherence"] is not None and not stats["coherence"] >= thresholds["min_coherence"]:
        failures.append(f"coherence {stats['coherence']:.3f} < min_coherence {thresholds['min_coherence']}")
    if thresholds["require_monotonic"] and not stats["monotonic"]:
        pos = ", ".join(f"{p:.3f}" for p in stats["pos"])
        failures.append(f"pos_i not strictly increasing ({pos}) with require_monotonic")
    return {"passed": not failures, "failures": failures, "waived": bool(waived and failures)}


def plot_direction(stats: dict, gate: dict, path: str | Path) -> None:
    """Bars of pos_i per context position with the coherence line; written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = stats["context_length"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(range(c), stats["pos"], color="tab:blue", label="pos_i = mean cos(ctx_i, y)")
    if stats["coherence"] is not None:
        ax.axhline(stats["coherence"], color="tab:orange", linestyle="--", label=f"coherence {stats['coherence']:.3f}")
    ax.set_xticks(range(c), [f"ctx_{i}" for i in range(c)])
    ax.set_ylabel("cosine")
    verdict = "passed" if gate["passed"] else ("waived" if gate["waived"] else "failed")
    ax.set_title(f"temporal signal {stats['signal']:+.3f}, n={stats['n_windows']} (gate {verdict})")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow diagnose", description=__doc__.splitlines()[0])
    parser.add_argument("--windows", required=True, help="windows safetensors")
    parser.add_argument("--settings", required=True, type=settings_arg, help="lvm.diagnostics (or lvm) as JSON")
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--out-plot", required=True, help="PNG")
    args = parser.parse_args(argv)

    windows = load_windows(args.windows)
    stats = direction_stats(windows["contexts"], windows["targets"], windows["article_ids"])
    thresholds = thresholds_from(args.settings)
    waive = bool(diagnostics_section(args.settings).get("waive_gate", False))
    gate = check_gate(stats, thresholds, waived=waive)
    coherence = "n/a" if stats["coherence"] is None else f"{stats['coherence']:.3f}"
    summary = (
        f"coherence {coherence}, signal {stats['signal']:+.3f}, "
        f"pos {[round(p, 3) for p in stats['pos']]}, monotonic {stats['monotonic']}"
    )
    print(f"[vecflow] {args.windows}: {stats['n_windows']} windows: {summary}", flush=True)
    if not gate["passed"] and not gate["waived"]:
        raise VecflowError(
            f"direction gate failed for {args.windows}: {'; '.join(gate['failures'])} "
            f"(set lvm.diagnostics.waive_gate: true to train anyway)"
        )
    if gate["waived"]:
        print(f"[vecflow] WARNING: direction gate failed but waived: {'; '.join(gate['failures'])}", flush=True)
    plot_direction(stats, gate, args.out_plot)
    write_json(args.out_json, {**stats, "thresholds": thresholds, "gate": gate, "windows": str(args.windows)})
    return 0
