"""How ``vecflow train-lvm`` judges a checkpoint: the mini-5CAT, dominance over the baselines, the selection rule.

Every epoch scores the selection split's mini-5CAT windows with the ``fivecat`` functions themselves (offset
sweep, within-article retrieval), counts the (baseline, metric) pairs of copy-last, context-mean and ridge
x c_0, MRR and margin it beats, and writes one history record (``epoch_record``). ``SELECTION_METRICS`` names
the record key each ``selection_metric`` compares; ``update_best`` keeps the best checkpoint by it and counts
the epochs without a gain (early stopping); ``forward_verdict`` says whether the published checkpoint predicts
forward.
"""

from __future__ import annotations

import math

import numpy as np

from vecflow.lvm import fivecat
from vecflow.lvm.bank import ChunkBank
from vecflow.lvm.fivecat_verdicts import DOMINANCE_METRICS, beats
from vecflow.lvm.losses import TERMS, guard_to_mse_ratio
from vecflow.lvm.settings import LvmTrainSettings
from vecflow.lvm.windows import Windows

SELECTION_METRICS = {  # setting -> (history key, higher is better)
    "dominance": ("val/dominance", True),  # [pairs won of baselines x (c0, mrr, margin), margin]
    "forward": ("val/forward", True),  # [1, c0, margin] when margin > 0, else [0, wins, margin] (dominance)
    "val_margin": ("val/margin", True),
    "val_cos": ("val/cos_sim", True),
    "val_loss": ("val/mse", False),
}


# ----------------------------------------------------------------------------------------------- mini-5CAT
def mini_fivecat(pred: np.ndarray, windows: Windows, bank: ChunkBank,
                 min_article_chunks: int = 6) -> dict:
    """The 5CAT offset sweep and retrieval (the ``fivecat`` functions, same definitions) for one epoch.

    Returns {"c": {k: c_k}, "c0", "margin", "peak_offset", "r1", "r5", "mrr", "sweep_n", "samples"}.
    """
    sweep = fivecat.offset_sweep(pred, windows, bank)
    ranks = fivecat.retrieval(pred, windows, bank, min_article_chunks)
    return {"c": {int(k): v["c"] for k, v in sweep["offsets"].items() if v["c"] is not None},
            "c0": sweep["c0"], "margin": sweep["margin"], "peak_offset": sweep["peak_k"],
            "r1": ranks["r1"], "r5": ranks["r5"], "mrr": ranks["mrr"], "sweep_n": sweep["n"],
            "samples": len(pred)}


def dominance(scores: dict, baselines: dict) -> dict:
    """Which (baseline, metric) pairs for c_0, MRR and margin the model beats (strictly) on the selection split.

    Returns {"wins", "pairs", "dominates", "loses_to": ["baseline:metric", ...]}."""
    lost = [f"{name}:{metric}" for name, base in baselines.items() for metric in DOMINANCE_METRICS
            if not beats(scores.get(metric), base.get(metric))]
    pairs = len(baselines) * len(DOMINANCE_METRICS)
    return {"wins": pairs - len(lost), "pairs": pairs, "dominates": not lost, "loses_to": lost}


def offset_key(k: int) -> str:
    """History key of c_k: ``c_m1`` for k=-1, ``c_0``, ``c_p1`` (tracking backends reject '+' in names)."""
    return f"c_m{-k}" if k < 0 else f"c_p{k}" if k > 0 else "c_0"


def mini_fivecat_sample(val: Windows, max_samples: int) -> np.ndarray:
    """Evenly spaced validation rows (deterministic, spread over articles)."""
    count = min(max_samples, len(val))
    return np.unique(np.linspace(0, len(val) - 1, count).round().astype(np.int64))


# ----------------------------------------------------------------------------------------------- the record
def epoch_record(epoch: int, weights: dict, train_terms: dict, val_terms: dict, fivecat: dict,
                 epoch_time: float, device) -> dict:
    record = {"epoch": epoch, "device": str(device), "epoch_time_s": round(epoch_time, 4)}
    record.update({f"train/{name}": train_terms[name] for name in (*TERMS, "total")})
    record["train/cos_sim"] = 1.0 - train_terms["cos"]
    record.update({f"val/{name}": val_terms[name] for name in (*TERMS, "total", "cos_sim")})
    for key, value in weights.items():  # lambda_roll -> lambda/roll; margin_dir -> schedule/margin_dir
        record[f"lambda/{key.removeprefix('lambda_')}" if key.startswith("lambda_") else f"schedule/{key}"] = value
    record["lambda/dir_effective"] = weights["lambda_dir"] * train_terms["dir_boost"]
    record["train/guard_to_mse"] = guard_to_mse_ratio(train_terms, weights)
    record["val/margin"] = fivecat["margin"]
    record["val/c0"] = fivecat["c0"]
    record["val/r1"] = fivecat["r1"]
    record["val/r5"] = fivecat["r5"]
    record["val/mrr"] = fivecat["mrr"]
    record["val/sweep_n"] = fivecat["sweep_n"]
    record["val/peak_offset"] = fivecat["peak_offset"]
    record["val/wins"] = fivecat["dominance"]["wins"]
    record["val/dominates"] = fivecat["dominance"]["dominates"]
    record["val/loses_to"] = fivecat["dominance"]["loses_to"]
    record["val/dominance"] = [fivecat["dominance"]["wins"], fivecat["margin"]]
    record["val/forward"] = forward_key(fivecat["margin"], fivecat["c0"], fivecat["dominance"]["wins"])
    record.update({f"val/{offset_key(k)}": value for k, value in fivecat["c"].items()})
    return record


def forward_key(margin, c0, wins) -> list:
    """``selection_metric: forward``: a checkpoint that predicts forward (selection margin > 0) beats every one
    that does not, and among those the highest c_0 wins; with no positive margin it is dominance (wins, margin)."""
    if margin is not None and c0 is not None and margin > 0:
        return [1, c0, margin]
    return [0, wins, margin]


def format_epoch_line(record: dict, epochs: int) -> str:
    return (f"[train-lvm] epoch {record['epoch']}/{epochs} train_total {record['train/total']:.5f} "
            f"val_mse {record['val/mse']:.5f} val_cos {record['val/cos_sim']:.4f} margin {record['val/margin']:+.4f} "
            f"c0 {record['val/c0']:.4f} MRR {record['val/mrr']:.3f} R@1 {record['val/r1']:.3f} "
            f"peak k={record['val/peak_offset']} beats {record['val/wins']}/9 "
            f"guard/mse {record['train/guard_to_mse']:.3f} "
            f"lambda_roll {record['lambda/roll']} lambda_dir {record['lambda/dir']} ({record['epoch_time_s']:.2f}s)")


# ----------------------------------------------------------------------------------------------- selection
def is_better(value, best, higher_is_better: bool) -> bool:
    """``value`` beats ``best``; lists ([wins, margin]) compare in order, a missing/NaN part never wins."""
    if isinstance(value, (list, tuple)):
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in value):
            return False
        return best is None or list(value) > list(best)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return best is None or (value > best if higher_is_better else value < best)


def update_best(state: dict, record: dict, model, run: LvmTrainSettings) -> None:
    """Keep the best checkpoint by the selection metric; stop early after ``early_stop_patience`` epochs
    without a gain in it (0 = never)."""
    key, higher = SELECTION_METRICS[run.selection_metric]
    if is_better(record[key], state["best_value"], higher):
        state["best_value"], state["best_epoch"] = record[key], record["epoch"]
        state["best_model"] = {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}
        state["epochs_without_margin_gain"] = 0
    else:
        state["epochs_without_margin_gain"] += 1
    patience = run.early_stop_patience
    state["stopped_early"] = bool(patience and state["epochs_without_margin_gain"] >= patience)


def forward_verdict(best: dict, selection_metric: str) -> dict:
    """Does the published checkpoint predict forward on the selection split, and (for ``forward``) was the
    rule's fallback to dominance used because no checkpoint had a positive margin?"""
    positive = best.get("val/margin") is not None and best["val/margin"] > 0
    verdict = {"positive_margin": positive, "margin": best.get("val/margin")}
    if selection_metric == "forward":
        verdict["fallback"] = None if positive else "dominance"
    return verdict
