"""Choosing the torch device: ``auto`` means cuda, then mps, then cpu. The choice is logged, never a param."""

from __future__ import annotations

import logging

from vecflow.core.errors import VecflowError

log = logging.getLogger("vecflow")

CHOICES = ("auto", "cuda", "mps", "cpu")


def pick_device(requested: str = "auto"):
    import torch

    if requested not in CHOICES:
        raise VecflowError(f"device: '{requested}' is not one of {', '.join(CHOICES)}")
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if requested == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu"
    elif requested == "cuda" and not torch.cuda.is_available():
        raise VecflowError("device: 'cuda' requested but torch sees no CUDA device")
    elif requested == "mps" and not mps_ok:
        raise VecflowError("device: 'mps' requested but MPS is not available")
    else:
        name = requested
    device = torch.device(name)
    print(f"[vecflow] device: {device} (requested: {requested})", flush=True)
    return device
