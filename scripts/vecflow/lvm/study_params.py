"""The LVM settings a study may tune, and a run's settings with a study's parameters applied.

Both the study (``vecflow.hpo.lvm_worker``: each trial's run settings) and ``vecflow train-lvm --params`` (a study's
best_params.yaml applied to a run) use these, so the LVM package, not the study, owns them: a parameter is
either a train setting (``LVM_TUNABLE``) or ``losses.<key>``, a weight of one of the loss terms the presets know.
"""

from __future__ import annotations

from collections.abc import Mapping

from vecflow.core.io import read_params_yaml
from vecflow.lvm.presets import DEFAULTS as LOSS_DEFAULTS
from vecflow.lvm.settings import LvmTrainSettings

LVM_TUNABLE = ("learning_rate", "weight_decay", "dropout", "d_model", "layers", "heads", "batch_size", "epochs",
               "grad_clip")


def is_lvm_setting(name: str) -> bool:
    """A tunable lvm.train setting, or ``losses.<key>`` for a loss term the presets know."""
    return name in LVM_TUNABLE or (name.startswith("losses.") and name.removeprefix("losses.") in LOSS_DEFAULTS)


def read_lvm_params(path) -> dict:
    """An LVM study's best_params.yaml: a flat mapping of tunable lvm settings and ``losses.<key>``."""
    return read_params_yaml(path, f"a tunable lvm setting ({', '.join(LVM_TUNABLE)}, or losses.<key>)", is_lvm_setting)


def lvm_trial_settings(run: LvmTrainSettings, fixed: Mapping, params: Mapping, run_name: str) -> dict:
    """The run's settings as sent (``lvm.train`` + run entry + seed/device), with ``fixed`` (``hpo.lvm_fixed``:
    every trial's overrides, e.g. a smaller train_fraction) and then the trial's parameters laid over them;
    ``losses.<key>`` keys go into the run's loss overrides. The result is validated by train-lvm."""
    params = {**fixed, **params}
    # as the rule sent them (a run nested in a study's settings was validated with them: what was set)
    base = run.received or run.model_dump(exclude_unset=True)
    losses = dict(run.losses or {})
    for name, value in params.items():
        if name.startswith("losses."):
            losses[name.removeprefix("losses.")] = value
        else:
            base[name] = value
    if losses:
        base["losses"] = losses
    return {**base, "run_name": run_name, "tracking": run.tracking}
