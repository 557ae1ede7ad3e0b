"""Loss terms for next-vector training; each returns a scalar tensor, ``compute_losses`` weighs them.

All vectors are L2-normalised: ``pred`` is the model output after ``normalize``. With B samples:

- ``mse``:  mean squared error to the target y (the main loss; equals (2 - 2 cos) / D for unit vectors).
- ``cos``:  1 - cos(pred, y).
- ``dir``:  directional guard, hinge: cos(pred, y) should beat cos(pred, ctx[-1]) by ``margin_dir``.
            With ``adaptive_dir`` each sample's hinge is scaled by 1 + sigmoid((cos(ctx[-1], y) - 0.60) / 0.05),
            so the guard is up to twice as strong where copying the last slot is tempting.
- ``ac``:   anti-copy, hinge against the most similar of ALL context slots (max_i cos(pred, ctx_i)).
- ``fut``:  future ranking, hinge: pred closer to y than to chunks t+1 and t+2 of the same article
            (masked where the article ends).
- ``nce``:  in-article ranking (InfoNCE): softmax over cos(pred, ·)/τ of the target against every context slot
            and the future chunks t+1, t+2 that exist; cross-entropy of the target. These are exactly the chunks
            that decide the 5CAT margin (c_-C..c_-1, c_+1, c_+2), so it trades c_0 for margin and MRR directly.
- ``roll``: differentiable multi-step rollout: the prediction is fed back into the context for H steps with
            gradient; step h's prediction is compared (MSE) with the true chunk t+h-1, masked past the article end.

Guards are hinges on cosine differences; MSE and rollout are per-dimension squared errors, as in seed 002,
so the λ values of its recipes keep their meaning (tiny guard nudges on top of MSE).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vecflow.lvm.models import normalize

TERMS = ("mse", "cos", "dir", "ac", "fut", "nce", "roll")
ADAPTIVE_CENTER = 0.60
ADAPTIVE_WIDTH = 0.05


@dataclass
class LossBatch:
    """One batch of windows: contexts (B, C, D), targets (B, D), futures (B, F, D) = chunks t+1..t+F of the
    same article with ``future_mask`` (B, F) telling which exist."""

    contexts: torch.Tensor
    targets: torch.Tensor
    futures: torch.Tensor
    future_mask: torch.Tensor


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b, dim=-1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is true; an (attached) zero when nothing is valid."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def mse_loss(pred: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred, targets)


def cosine_loss(pred: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (1.0 - _cos(pred, targets)).mean()


def adaptive_boost(last_context: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sample sigmoid((cos(ctx[-1], y) - 0.60) / 0.05): near 1 where the target resembles the last slot."""
    return torch.sigmoid((_cos(last_context, targets) - ADAPTIVE_CENTER) / ADAPTIVE_WIDTH)


def directional_loss(pred: torch.Tensor, targets: torch.Tensor, last_context: torch.Tensor, margin: float,
                     sample_weights: torch.Tensor | None = None) -> torch.Tensor:
    hinge = F.relu(margin - (_cos(pred, targets) - _cos(pred, last_context)))
    if sample_weights is not None:
        hinge = hinge * sample_weights
    return hinge.mean()


def anti_copy_loss(pred: torch.Tensor, targets: torch.Tensor, contexts: torch.Tensor, margin: float) -> torch.Tensor:
    closest_slot = _cos(pred.unsqueeze(1), contexts).max(dim=1).values
    return F.relu(margin - (_cos(pred, targets) - closest_slot)).mean()


def future_loss(pred: torch.Tensor, targets: torch.Tensor, futures: torch.Tensor, future_mask: torch.Tensor,
                margin: float, horizon: int = 2) -> torch.Tensor:
    """Hinge: pred closer to y than to each of chunks t+1..t+horizon that exist."""
    futures, future_mask = futures[:, :horizon], future_mask[:, :horizon]
    gap = _cos(pred, targets).unsqueeze(1) - _cos(pred.unsqueeze(1), futures)
    return _masked_mean(F.relu(margin - gap), future_mask)


def ranking_nce_loss(pred: torch.Tensor, targets: torch.Tensor, contexts: torch.Tensor, futures: torch.Tensor,
                     future_mask: torch.Tensor, temperature: float, horizon: int = 2) -> torch.Tensor:
    """Cross-entropy of the target among {target, context slots, existing futures t+1..t+horizon}."""
    futures, future_mask = futures[:, :horizon], future_mask[:, :horizon]
    candidates = torch.cat([targets.unsqueeze(1), contexts, futures], dim=1)            # (B, 1 + C + F, D)
    logits = _cos(pred.unsqueeze(1), candidates) / max(temperature, 1e-6)
    valid = torch.cat([torch.ones_like(logits[:, : 1 + contexts.shape[1]], dtype=torch.bool), future_mask], dim=1)
    logits = logits.masked_fill(~valid, float("-inf"))
    return F.cross_entropy(logits, torch.zeros(len(pred), dtype=torch.long, device=pred.device))


def rollout_loss(model: nn.Module, contexts: torch.Tensor, first_pred: torch.Tensor, targets: torch.Tensor,
                 futures: torch.Tensor, future_mask: torch.Tensor, steps: int) -> torch.Tensor:
    """Feed predictions back for ``steps`` steps (with gradient); MSE of step h against chunk t+h-1."""
    pred, window = first_pred, contexts
    truths = [targets] + [futures[:, j] for j in range(futures.shape[1])]
    masks = [torch.ones_like(future_mask[:, 0])] + [future_mask[:, j] for j in range(future_mask.shape[1])]
    errors, valid = [], []
    for step in range(max(1, steps)):
        if step > 0:
            window = torch.cat([window[:, 1:], pred.unsqueeze(1)], dim=1)
            pred = normalize(model(window))
        errors.append(((pred - truths[step]) ** 2).mean(dim=-1))
        valid.append(masks[step])
    return _masked_mean(torch.stack(errors, dim=1), torch.stack(valid, dim=1))


def compute_losses(model: nn.Module, batch: LossBatch, weights: dict, pred: torch.Tensor | None = None,
                   rollout_with_grad: bool | None = None) -> dict[str, torch.Tensor]:
    """Every loss term for one batch, the weighted ``total`` and ``dir_boost`` (mean adaptive multiplier).

    ``weights`` holds ``lambda_<term>`` for each term, ``margin_dir``, ``margin_ac``, ``margin_fut``,
    ``rollout_h`` and ``adaptive_dir``. The rollout keeps its graph only when ``lambda_roll`` > 0 (or when
    ``rollout_with_grad`` says so), so inactive terms are still measured but cost no backward pass.
    """
    if pred is None:
        pred = normalize(model(batch.contexts))
    last = batch.contexts[:, -1]
    boost = 1.0 + adaptive_boost(last, batch.targets) if weights.get("adaptive_dir") else torch.ones_like(pred[:, 0])
    steps = int(weights.get("rollout_h", 1))
    if steps > batch.futures.shape[1] + 1:
        raise ValueError(f"rollout_h={steps} needs {steps - 1} future chunks, batch has {batch.futures.shape[1]}")
    if rollout_with_grad is None:
        rollout_with_grad = weights.get("lambda_roll", 0.0) > 0
    with torch.set_grad_enabled(rollout_with_grad and torch.is_grad_enabled()):
        roll = rollout_loss(model, batch.contexts, pred, batch.targets, batch.futures, batch.future_mask, steps)
    terms = {
        "mse": mse_loss(pred, batch.targets),
        "cos": cosine_loss(pred, batch.targets),
        "dir": directional_loss(pred, batch.targets, last, weights.get("margin_dir", 0.0), boost),
        "ac": anti_copy_loss(pred, batch.targets, batch.contexts, weights.get("margin_ac", 0.0)),
        "fut": future_loss(pred, batch.targets, batch.futures, batch.future_mask, weights.get("margin_fut", 0.0)),
        "nce": ranking_nce_loss(pred, batch.targets, batch.contexts, batch.futures, batch.future_mask,
                                weights.get("nce_temperature", 0.05)),
        "roll": roll,
    }
    terms["total"] = sum(weights.get(f"lambda_{name}", 0.0) * value for name, value in terms.items())
    terms["dir_boost"] = boost.mean().detach()
    return terms


def guard_to_mse_ratio(terms: dict[str, float], weights: dict) -> float:
    """Weighted non-MSE terms over the weighted MSE term: seed 002's collapse happened when this exceeded ~1."""
    main = weights.get("lambda_mse", 0.0) * terms["mse"]
    guards = sum(weights.get(f"lambda_{name}", 0.0) * terms.get(name, 0.0) for name in TERMS if name != "mse")
    return float(guards / main) if main > 0 else float("inf") if guards > 0 else 0.0
