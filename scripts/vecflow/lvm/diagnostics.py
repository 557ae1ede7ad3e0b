"""Data-direction diagnostics and the gate before LVM training (``vecflow diagnose``, docs/design.md §3).

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
from vecflow.lvm.bank import ChunkBank, load_bank
from vecflow.lvm.settings import DiagnosticsSettings
from vecflow.lvm.windows import Windows, load_windows


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def direction_stats(windows: Windows, bank: ChunkBank, block_rows: int = 4096) -> dict:
    """pos_i, temporal signal, monotonicity and coherence of a set of windows (plus per-article spread).

    The vectors are gathered from the bank ``block_rows`` windows at a time, so memory stays at one block.
    """
    n, c = len(windows), windows.context_length
    to_target_sum, adjacent_sum = np.zeros(c), np.zeros(max(c - 1, 0))
    window_signal = np.zeros(n)
    for start in range(0, n, block_rows):
        block = windows.subset(slice(start, start + block_rows))
        contexts = _unit(block.contexts(bank).astype(np.float64))
        targets = _unit(block.targets(bank).astype(np.float64))
        cos_to_target = np.einsum("ncd,nd->nc", contexts, targets)  # B x C
        to_target_sum += cos_to_target.sum(axis=0)
        adjacent_sum += np.einsum("ncd,ncd->nc", contexts[:, :-1], contexts[:, 1:]).sum(axis=0)
        window_signal[start:start + len(block)] = cos_to_target[:, -1] - cos_to_target[:, 0]
    pos = to_target_sum / n
    return {
        "n_windows": int(n),
        "context_length": int(c),
        "pos": [float(p) for p in pos],
        "signal": float(pos[-1] - pos[0]),
        "monotonic": bool(np.all(np.diff(pos) > 0)),
        "coherence": float(adjacent_sum.mean() / n) if c > 1 else None,  # undefined for C = 1
        "per_article": per_article_spread(window_signal, windows.article_ids),
    }


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
    parser.add_argument("--embeddings", required=True, help="the bank the windows index (F.safetensors)")
    parser.add_argument("--index", required=True, help="its F.index.jsonl")
    parser.add_argument("--settings", required=True, type=DiagnosticsSettings.from_json,
                        help="the lvm.diagnostics section and seed/device, as JSON")
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--out-plot", required=True, help="PNG")
    parser.add_argument("--encoder", metavar="DIR",
                        help="the encoder folder the config names: a bank of another encoder or dimension is refused")
    args = parser.parse_args(argv)

    bank = load_bank(args.embeddings, args.index, encoder_dir=args.encoder)
    stats = direction_stats(load_windows(args.windows, bank), bank)
    thresholds = args.settings.thresholds()
    gate = check_gate(stats, thresholds, waived=args.settings.waive_gate)
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
