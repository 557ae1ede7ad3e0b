"""Seed 002's training recipes (P1, P3, P4) as data, and the per-epoch loss schedule they imply.

A preset is ``base`` (the values in force from the first epoch) plus ``phases``: each phase sets some values
from a point in training on. Phase starts are FRACTIONS of the run, so a recipe keeps its shape at any
length: a phase starting at fraction f is in force from the first epoch e with (e - 1) / epochs >= f.
Seed 002 wrote its recipes for 20 epochs, so "from epoch k of 20" is f = (k - 1) / 20 and a 20-epoch run
reproduces the seed exactly, while a 4-epoch demo still goes through every phase:

    P4 over 20 epochs: 1-3 MSE | 4-5 roll 0.05 | 6 + adaptive guards | 7-9 roll 0.10 | 10-20 + future loss
    P4 over  4 epochs: 1   MSE | 2   roll 0.05 + guards              | 3-4 roll 0.10 + future loss

A run overrides a preset through ``settings["losses"]`` (see ``apply_overrides``).
"""

from __future__ import annotations

import copy

from vecflow.core.errors import VecflowError

REFERENCE_EPOCHS = 20  # seed 002's recipes are written for 20 epochs

DEFAULTS = {
    "lambda_mse": 1.0,      # main loss
    "lambda_cos": 0.0,      # 1 - cos(pred, y)
    "lambda_dir": 0.0,      # directional guard (beat ctx[-1])
    "lambda_ac": 0.0,       # anti-copy over all context slots
    "lambda_fut": 0.0,      # future ranking (beat chunks t+1, t+2)
    "lambda_nce": 0.0,      # in-article ranking (InfoNCE) against the context slots and chunks t+1, t+2
    "nce_temperature": 0.05,
    "lambda_roll": 0.0,     # multi-step rollout
    "margin_dir": 0.0,
    "margin_ac": 0.0,
    "margin_fut": 0.0,
    "rollout_h": 1,         # rollout steps (1 = the ordinary prediction only)
    "adaptive_dir": False,  # boost lambda_dir on samples where ctx[-1] resembles y
    "context_drop": 0.0,    # probability of zeroing each context slot during training
}


def _from_epoch(epoch: int) -> float:
    """The start fraction of seed 002's "from epoch k (of 20)"."""
    return (epoch - 1) / REFERENCE_EPOCHS


PRESETS = {
    "P1": {
        "description": "pure MSE baseline",
        "base": {},
        "phases": [],
    },
    "P3": {
        "description": "MSE warm-up (epochs 1-5 of 20), then tiny directional and future guards",
        "base": {"margin_dir": 0.01, "margin_fut": 0.008},
        "phases": [
            {"start": _from_epoch(6), "set": {"lambda_dir": 0.002, "lambda_fut": 0.002, "context_drop": 0.05}},
        ],
    },
    "P4": {
        "description": "MSE warm-up (1-3 of 20), rollout 0.05 (4-6) then 0.10 (7+), adaptive guards (6+), "
                       "future loss (10+)",
        "base": {"rollout_h": 3, "margin_dir": 0.01, "margin_fut": 0.008, "context_drop": 0.05},
        "phases": [
            {"start": _from_epoch(4), "set": {"lambda_roll": 0.05}},
            {"start": _from_epoch(6), "set": {"lambda_dir": 0.002, "adaptive_dir": True}},
            {"start": _from_epoch(7), "set": {"lambda_roll": 0.10}},
            {"start": _from_epoch(10), "set": {"lambda_fut": 0.002}},
        ],
    },
}


def get_preset(name: str) -> dict:
    if name not in PRESETS:
        raise VecflowError(f"settings: field 'preset': unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    return copy.deepcopy(PRESETS[name])


def apply_overrides(preset: dict, overrides: dict | None) -> dict:
    """A copy of ``preset`` with a run's ``losses`` overrides applied.

    - ``phases: [{start: fraction, set: {...}}, ...]`` replaces the preset's phases;
    - ``base: {...}`` updates the values in force from epoch 1;
    - any other key (e.g. ``lambda_dir: 0.005``) replaces that value wherever the preset sets it: in the base
      and in every phase that turns it on, keeping the preset's timing. A key no phase sets goes in the base.
    """
    recipe = copy.deepcopy(preset)
    overrides = dict(overrides or {})
    if "phases" in overrides:
        recipe["phases"] = _checked_phases(overrides.pop("phases"))
    recipe["base"].update(_checked_values(overrides.pop("base", {}), "losses.base"))
    for key, value in _checked_values(overrides, "losses").items():
        phases_setting = [phase for phase in recipe["phases"] if key in phase["set"]]
        if key in recipe["base"] or not phases_setting:
            recipe["base"][key] = value
        for phase in phases_setting:
            if phase["set"][key]:  # a phase that switches the value off keeps it off
                phase["set"][key] = value
    return recipe


def _checked_values(values: dict, field: str) -> dict:
    if not isinstance(values, dict):
        raise VecflowError(f"settings: field '{field}': expected a mapping, got {type(values).__name__}")
    for key, value in values.items():
        if key not in DEFAULTS:
            raise VecflowError(f"settings: field '{field}.{key}': unknown loss setting (known: {', '.join(DEFAULTS)})")
        kind = type(DEFAULTS[key])
        wrong_kind = isinstance(value, bool) != (kind is bool) or not isinstance(value, (int, float))
        if wrong_kind or (kind is int and not isinstance(value, int)):
            raise VecflowError(f"settings: field '{field}.{key}': expected {kind.__name__}, got {value!r}")
        if not isinstance(value, bool) and value < 0:
            raise VecflowError(f"settings: field '{field}.{key}': must be >= 0, got {value!r}")
        if key == "rollout_h" and value < 1:
            raise VecflowError(f"settings: field '{field}.{key}': must be >= 1, got {value!r}")
        if key == "context_drop" and value >= 1:
            raise VecflowError(f"settings: field '{field}.{key}': must be < 1, got {value!r}")
    return dict(values)


def _checked_phases(phases) -> list[dict]:
    if not isinstance(phases, list):
        raise VecflowError(f"settings: field 'losses.phases': expected a list, got {type(phases).__name__}")
    checked = []
    for i, phase in enumerate(phases):
        field = f"losses.phases[{i}]"
        if not isinstance(phase, dict) or "start" not in phase or "set" not in phase:
            raise VecflowError(f"settings: field '{field}': expected {{start: fraction, set: {{...}}}}")
        if not isinstance(phase["start"], (int, float)) or not 0.0 <= phase["start"] < 1.0:
            raise VecflowError(
                f"settings: field '{field}.start': expected a fraction in [0, 1), got {phase['start']!r}")
        checked.append({"start": float(phase["start"]), "set": _checked_values(phase["set"], f"{field}.set")})
    return checked


def resolve_schedule(preset: str | dict, overrides: dict | None, epochs: int) -> list[dict]:
    """Per-epoch weight dicts (index 0 = epoch 1): every key of DEFAULTS, with the phases in force applied."""
    if not isinstance(epochs, int) or epochs < 1:
        raise VecflowError(f"settings: field 'epochs': expected a positive integer, got {epochs!r}")
    recipe = apply_overrides(get_preset(preset) if isinstance(preset, str) else preset, overrides)
    phases = sorted(recipe["phases"], key=lambda phase: phase["start"])
    schedule = []
    for epoch in range(1, epochs + 1):
        progress = (epoch - 1) / epochs
        weights = {**DEFAULTS, **recipe["base"]}
        for phase in phases:
            if progress >= phase["start"] - 1e-9:
                weights.update(phase["set"])
        schedule.append(weights)
    return schedule
