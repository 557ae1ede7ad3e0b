"""Checks of a whole (already schema-validated) config that JSON schema cannot express.

Called from the Snakefile before any job runs; each problem raises a VecflowError naming the key.
"""

from __future__ import annotations

from vecflow.errors import VecflowError
from vecflow.generation import check_generation_config


def check_config(config: dict) -> None:
    check_generation_config(config["summarizer"]["generation"], "summarizer.generation")
    check_generation_config(config["elm"]["generation"], "elm.generation")
    _check_models_referenced(config)
    _check_lvm(config["lvm"])
    _check_deploy(config)
    splits = config["summary"]["splits"]
    for name in ("train", "val"):
        if name not in splits:
            raise VecflowError(f"config: summary.splits.{name}: missing (train and val are required)")


def _check_models_referenced(config: dict) -> None:
    references = {
        "encoder": config["encoder"],
        "elm.lm": config["elm"]["lm"],
        "evaluation.bertscore.model": config["evaluation"]["bertscore"]["model"],
    }
    for key, name in references.items():
        if name not in config["models"]:
            known = ", ".join(sorted(config["models"])) or "none"
            raise VecflowError(f"config: {key}: '{name}' is not a models: entry (known: {known})")


def _check_lvm(lvm: dict) -> None:
    split = lvm["split"]
    if split["method"] == "fractions":
        fractions = split["fractions"]
        for name in ("train", "val", "ood"):
            if fractions.get(name, 0) <= 0:
                raise VecflowError(f"config: lvm.split.fractions.{name}: must be > 0")
        total = sum(fractions.values())
        if abs(total - 1.0) > 1e-6:
            raise VecflowError(f"config: lvm.split.fractions: must sum to 1 (sum is {total:g})")
    else:
        for name in ("train", "val", "ood"):
            if not split["ranges"].get(name):
                raise VecflowError(f"config: lvm.split.ranges.{name}: missing (method is 'ranges')")
            for low, high in split["ranges"][name]:
                if low > high:
                    raise VecflowError(f"config: lvm.split.ranges.{name}: range [{low}, {high}] is empty")
    if not lvm["runs"]:
        raise VecflowError("config: lvm.runs: at least one run is needed")
    if lvm["train"]["d_model"] % lvm["train"]["heads"]:
        raise VecflowError("config: lvm.train.d_model: must be divisible by lvm.train.heads")


def _check_deploy(config: dict) -> None:
    deploy = config["deploy"]
    if deploy["lvm_run"] not in config["lvm"]["runs"]:
        raise VecflowError(f"config: deploy.lvm_run: '{deploy['lvm_run']}' is not one of lvm.runs")
    if deploy["summarizer"] == "elm" and not config["tracks"]["elm"]:
        raise VecflowError("config: deploy.summarizer: 'elm' but tracks.elm is false")
