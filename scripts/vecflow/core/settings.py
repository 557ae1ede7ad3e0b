"""Settings passed from Snakemake rules: one config section as a JSON string (``--settings``)."""

from __future__ import annotations

import argparse
import json
import random

from vecflow.core.errors import VecflowError


def settings_arg(text: str) -> dict:
    """argparse ``type=`` for ``--settings``: a JSON object, or an error naming the problem."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--settings is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--settings must be a JSON object")
    return value


def need(settings: dict, dotted: str):
    """Fetch ``a.b.c`` from nested settings, raising a VecflowError that names the missing key."""
    node = settings
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise VecflowError(f"settings: missing key '{dotted}'")
        node = node[part]
    return node


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) so that reruns produce the same numbers."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
