"""The search space of a study (``hpo.search_space`` for the ELM, ``hpo.lvm_search_space`` for an LVM run): each
entry checked for what Optuna can sample, and one trial's parameters drawn from it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from vecflow.core.errors import VecflowError
from vecflow.core.settings import describe_validation_error
from vecflow.hpo.settings import SearchParam
from vecflow.lvm.study_params import LVM_TUNABLE
from vecflow.lvm.study_params import is_lvm_setting as _lvm_setting
from vecflow.summary.settings import ELM_TUNABLE  # not vecflow.summary.elm: that imports torch


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None


def space_key(target: str) -> str:
    return "lvm_search_space" if target == "lvm" else "search_space"


def parse_search_space(space: Mapping[str, SearchParam | dict], target: str = "elm") -> dict[str, ParamSpec]:
    """``hpo.search_space`` (or ``hpo.lvm_search_space``) -> specs; an entry Optuna cannot sample is a
    VecflowError naming it."""
    if not isinstance(space, Mapping) or not space:
        raise VecflowError(f"settings: hpo.{space_key(target)}: must be a non-empty mapping of {target} settings")
    return {name: _parse_param(name, entry, target) for name, entry in space.items()}


def _parse_param(name: str, entry: SearchParam | dict, target: str = "elm") -> ParamSpec:
    label = f"hpo.{space_key(target)}.{name}"
    if target == "lvm" and not _lvm_setting(name):
        raise VecflowError(f"{label}: not a tunable lvm setting (one of {', '.join(LVM_TUNABLE)}, or losses.<key>)")
    if target == "elm" and name not in ELM_TUNABLE:
        raise VecflowError(f"{label}: not an elm setting")
    if isinstance(entry, Mapping):  # a direct call with plain values: checked as the settings model checks them
        try:
            entry = SearchParam.model_validate(dict(entry))
        except ValidationError as exc:
            described = describe_validation_error(exc, dict(entry)).removeprefix("settings: ")
            raise VecflowError(f"{label}: {described}") from None
    if not isinstance(entry, SearchParam):
        raise VecflowError(f"{label}: expected a mapping with 'type'")
    if entry.type == "categorical":
        if not entry.choices:
            raise VecflowError(f"{label}: categorical needs a non-empty 'choices' list")
        return ParamSpec(name, entry.type, choices=tuple(entry.choices))
    low, high, log = entry.low, entry.high, bool(entry.log)
    number = int if entry.type == "int" else (int, float)
    for key, value in (("low", low), ("high", high)):
        if not isinstance(value, number) or isinstance(value, bool):
            raise VecflowError(
                f"{label}: '{key}' must be {'an integer' if entry.type == 'int' else 'a number'}, got {value!r}"
            )
    if low >= high:
        raise VecflowError(f"{label}: 'low' ({low}) must be below 'high' ({high})")
    if log and low <= 0:
        raise VecflowError(f"{label}: log scale needs 'low' > 0, got {low}")
    return ParamSpec(name, entry.type, low=low, high=high, log=log)


def suggest(trial, specs: dict[str, ParamSpec]) -> dict:
    params = {}
    for name, spec in specs.items():
        if spec.type == "float":
            params[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
        elif spec.type == "int":
            params[name] = trial.suggest_int(name, spec.low, spec.high, log=spec.log)
        else:
            params[name] = trial.suggest_categorical(name, list(spec.choices))
    return params
