"""Loss terms for the ELM adapter (embedding -> soft tokens -> frozen causal LM -> text).

    total = cross_entropy
          + contrastive_weight * info_nce(mean soft token, target text in the LM's input space)
          + text_drift_weight  * text_drift(mean soft token, target text in the LM's input space)

"Mean soft token" is exactly what the LM reads (no trainable head that could absorb the losses); "target text
in the LM's input space" is the mean of the frozen LM's input embeddings of the target tokens.

* cross-entropy is the frozen LM's own loss on the target-text tokens (labels are -100 elsewhere);
* InfoNCE ties each example's soft tokens to its own target: positives on the diagonal of the batch
  similarity matrix, every other target in the batch is a negative;
* text drift is a hinge, ``relu(target_similarity - cos(adapter side, target-text embedding))``: it pushes
  the adapter's representation towards the meaning of the text it should produce until the cosine reaches
  ``text_drift_target_similarity``, and is exactly zero beyond that (seed 003 declared this target but never
  used it; here it is the hinge's margin).

Every term is returned separately so that training can log each one per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    contrastive: float = 0.0
    text_drift: float = 0.0
    drift_target_similarity: float = 0.75
    temperature: float = 0.07

    @classmethod
    def from_settings(cls, settings) -> "LossWeights":
        """From the elm settings (``vecflow.summary.settings.ElmTrainSettings``)."""
        return cls(
            contrastive=float(settings.contrastive_weight),
            text_drift=float(settings.text_drift_weight),
            drift_target_similarity=float(settings.text_drift_target_similarity),
            temperature=float(settings.contrastive_temperature),
        )


def info_nce(predicted: torch.Tensor, embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``predicted`` should match row i of ``embeddings`` (the diagonal)."""
    predicted = F.normalize(predicted, dim=-1)
    embeddings = F.normalize(embeddings, dim=-1)
    logits = predicted @ embeddings.T / temperature
    positives = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, positives) + F.cross_entropy(logits.T, positives))


def text_drift(
    adapter_side: torch.Tensor, target_text_embeddings: torch.Tensor, target_similarity: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hinge ``relu(target_similarity - cos)``, averaged over the batch; also returns the mean cosine."""
    cosine = F.cosine_similarity(adapter_side, target_text_embeddings, dim=-1)
    return F.relu(target_similarity - cosine).mean(), cosine.mean().detach()


def combine_losses(
    cross_entropy: torch.Tensor,
    pooled: torch.Tensor,
    embeddings: torch.Tensor,
    target_text_embeddings: torch.Tensor | None,
    weights: LossWeights,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted total and a flat dict of every term (for the per-step history)."""
    total = cross_entropy
    parts = {"loss/cross_entropy": float(cross_entropy.detach())}
    if weights.contrastive > 0:
        contrastive = info_nce(pooled, embeddings, weights.temperature)
        total = total + weights.contrastive * contrastive
        parts["loss/contrastive"] = float(contrastive.detach())
    if weights.text_drift > 0 and target_text_embeddings is not None:
        drift, cosine = text_drift(pooled, target_text_embeddings, weights.drift_target_similarity)
        total = total + weights.text_drift * drift
        parts["loss/text_drift"] = float(drift.detach())
        parts["drift/cosine"] = float(cosine)
    parts["loss/total"] = float(total.detach())
    parts["loss/guard_ratio"] = (parts["loss/total"] - parts["loss/cross_entropy"]) / max(
        parts["loss/cross_entropy"], 1e-12
    )
    return total, parts
