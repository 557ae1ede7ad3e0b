"""One epoch of ``vecflow train-lvm``: the seeded training pass, validation, the mini-5CAT score, the contrast.

``train_one_epoch`` is one shuffled AdamW pass (``epoch_generator``: the shuffle and context drop are a function
of seed and epoch, so a resumed run draws what an uninterrupted one would); ``evaluate`` gives the mean loss
terms without context drop; ``score_epoch`` adds the mini-5CAT and returns the epoch's history record (epoch 0:
the untrained start). ``contrast_grid`` chooses the context contrast (``models.ContextContrast``) by the forward
rule on the mini-5CAT windows.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from vecflow.lvm.losses import compute_losses
from vecflow.lvm.models import predict
from vecflow.lvm.settings import LvmTrainSettings
from vecflow.lvm.train_data import RunData, WindowTensors
from vecflow.lvm.train_scoring import dominance, epoch_record, forward_key, mini_fivecat


# ----------------------------------------------------------------------------------------------- training
def drop_context_slots(contexts: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Zero each context slot with ``probability`` (seeded), so the model cannot lean on any one slot."""
    if probability <= 0:
        return contexts
    keep = torch.rand(contexts.shape[:2], generator=generator) >= probability
    return contexts * keep.unsqueeze(-1).to(contexts.device, contexts.dtype)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator for one epoch's shuffle and context drop: a function of (seed, epoch) only, so a resumed
    run draws exactly what an uninterrupted one would."""
    return torch.Generator().manual_seed(seed * 1000 + epoch)


def make_optimizer(model, learning_rate: float, weight_decay: float, device) -> torch.optim.Optimizer:
    """AdamW, with torch's fused kernel on CPU and CUDA (one pass over all tensors instead of a loop per tensor:
    part of what takes the default transformer's step to a third of the matmul peak, ``vecflow bench lvm``)."""
    fused = torch.device(device).type in ("cpu", "cuda") or None
    return torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay, fused=fused)


def train_one_epoch(model, optimizer, windows: WindowTensors, weights: dict, run: LvmTrainSettings,
                    generator: torch.Generator, device) -> dict:
    """One shuffled pass; returns the mean of every loss term (unweighted) plus ``total`` and ``dir_boost``."""
    model.train()
    order = torch.randperm(len(windows), generator=generator)
    sums, seen = {}, 0
    for start in range(0, len(order), run.batch_size):
        batch = windows.batch(order[start:start + run.batch_size], device)
        batch.contexts = drop_context_slots(batch.contexts, weights["context_drop"], generator)
        terms = compute_losses(model, batch, weights)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        if run.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), run.grad_clip)
        optimizer.step()
        size = len(batch.targets)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach()) * size
        seen += size
    return {name: total / seen for name, total in sums.items()}


@torch.no_grad()
def evaluate(model, windows: WindowTensors, weights: dict, batch_size: int, device) -> dict:
    """Mean loss terms over all the windows (no context drop), plus ``cos_sim`` = 1 - cos term."""
    model.eval()
    sums, seen = {}, 0
    for start in range(0, len(windows), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(windows)))
        terms = compute_losses(model, windows.batch(rows, device), weights, rollout_with_grad=False)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value) * len(rows)
        seen += len(rows)
    means = {name: total / seen for name, total in sums.items()}
    means["cos_sim"] = 1.0 - means["cos"]
    return means


# ----------------------------------------------------------------------------------------------- one epoch
def score_epoch(epoch: int, model, data: RunData, tensors: dict, run: LvmTrainSettings, device,
                train_terms: dict | None, started: float) -> dict:
    """Validate, score the mini-5CAT and return the epoch's history record. ``train_terms`` None: epoch 0,
    the untrained start, whose training-set terms are measured without an update."""
    weights = data.schedule[max(epoch, 1) - 1]
    if train_terms is None:
        train_terms = evaluate(model, tensors["train"], weights, run.batch_size, device)
    val_terms = evaluate(model, tensors["val"], weights, run.batch_size, device)
    contexts = data.fivecat_windows.contexts(data.bank)
    pred = predict(model, contexts, run.batch_size, device)
    scores = mini_fivecat(pred, data.fivecat_windows, data.bank, run.min_article_chunks)
    scores["dominance"] = dominance(scores, data.baselines)
    record = epoch_record(epoch, weights, train_terms, val_terms, scores, time.perf_counter() - started, device)
    if run.contrast.enabled:  # checkpoints compete as they will be published: with their own best contrast
        chosen = contrast_grid(pred, contexts, data, run)["chosen"]
        record.update({"contrast/alpha": chosen["alpha"], "contrast/slots": chosen["slots"],
                       "contrast/c0": chosen["c0"], "contrast/margin": chosen["margin"], "contrast/mrr": chosen["mrr"],
                       "val/forward": forward_key(chosen["margin"], chosen["c0"], chosen["wins"])})
    return record


def run_epoch(epoch: int, model, optimizer, data: RunData, tensors: dict, run: LvmTrainSettings, device) -> dict:
    """Train one epoch, validate, score the mini-5CAT; return the epoch's history record."""
    started = time.perf_counter()
    train_terms = train_one_epoch(model, optimizer, tensors["train"], data.schedule[epoch - 1], run,
                                  epoch_generator(run.seed, epoch), device)
    return score_epoch(epoch, model, data, tensors, run, device, train_terms, started)


# ----------------------------------------------------------------------------------------------- context contrast
def choose_contrast(model, data: RunData, run: LvmTrainSettings, device) -> dict:
    """The context contrast (``models.ContextContrast``) chosen on the selection split's mini-5CAT windows by the
    forward rule: among (alpha, slots) with a positive margin the highest c_0; with none, dominance (pairs won
    of the baselines, then margin). alpha 0 is a candidate, so the rule can keep the model as it is."""
    contexts = data.fivecat_windows.contexts(data.bank)
    return contrast_grid(predict(model, contexts, run.batch_size, device), contexts, data, run)


def contrast_grid(base: np.ndarray, contexts: np.ndarray, data: RunData, run: LvmTrainSettings) -> dict:
    """``choose_contrast`` on predictions already made for the mini-5CAT windows (every epoch scores them);
    the grid is ``contrast.alphas`` x ``contrast.slots`` (slots capped at the context length)."""
    context_len = contexts.shape[1]
    grid = []
    for slots in sorted({min(int(k), context_len) for k in run.contrast.slots}):
        recent = contexts[:, -slots:].mean(axis=1)
        for alpha in run.contrast.alphas:
            pred = base - float(alpha) * recent
            pred /= np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-12)
            scores = mini_fivecat(pred, data.fivecat_windows, data.bank, run.min_article_chunks)
            scores["dominance"] = dominance(scores, data.baselines)
            grid.append({"alpha": float(alpha), "slots": slots, "c0": scores["c0"], "margin": scores["margin"],
                         "mrr": scores["mrr"], "r1": scores["r1"], "wins": scores["dominance"]["wins"],
                         "dominates": scores["dominance"]["dominates"], "loses_to": scores["dominance"]["loses_to"],
                         "peak_offset": scores["peak_offset"]})
    forward = [g for g in grid if g["margin"] is not None and g["margin"] > 0]
    if forward:
        chosen = max(forward, key=lambda g: (g["c0"], g["margin"], -g["alpha"]))
        reason = (f"alpha {chosen['alpha']} over the last {chosen['slots']} slots: selection margin "
                  f"{chosen['margin']:+.4f}, c0 {chosen['c0']:.4f} (the highest c0 of {len(forward)} forward settings)")
    else:
        chosen = max(grid, key=lambda g: (g["wins"], g["margin"] if g["margin"] is not None else -1.0, -g["alpha"]))
        reason = (f"no setting reached a positive selection margin; by dominance: alpha {chosen['alpha']} over "
                  f"{chosen['slots']} slots (margin {chosen['margin']:+.4f}, c0 {chosen['c0']:.4f})")
    untouched = next(g for g in grid if g["alpha"] == 0.0) if any(g["alpha"] == 0.0 for g in grid) else None
    return {"alpha": chosen["alpha"], "slots": chosen["slots"], "chosen": chosen, "without": untouched,
            "rule": "forward" if forward else "dominance", "reason": reason, "grid": grid}
