"""The settings of the HPO commands, one typed model per command, validated once where the command starts.

Each model mirrors what its rule in ``workflow/rules/hpo.smk`` sends (``vecflow.hpo.workflow`` builds it): the
``hpo`` section (``HpoSection``: names, types and defaults are those of ``workflow/schemas/config.schema.yaml``,
checked by ``tests/test_settings_models.py``) and the global ``seed``, ``device`` and ``tracking``, plus what the
trials train:

- ``ElmStudySettings`` (``vecflow hpo-worker``, ``hpo.target: elm``): ``elm``, the trials' train-elm settings
  (``vecflow.summary.settings.ElmTrainSettings``: ``elm`` with the BERTScore model's settings and the selection
  split);
- ``LvmStudySettings`` (``vecflow hpo-worker``, ``hpo.target: lvm``): ``lvm``, the tuned run's
  ``train-lvm`` settings (``vecflow.lvm.settings.LvmTrainSettings``);
- ``HpoBestSettings`` (``vecflow hpo-best``): the ``hpo`` section alone.

``vecflow hpo-pareto`` takes no settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import NonNegativeInt, PositiveInt

from vecflow.core.errors import VecflowError
from vecflow.core.settings import JobSettings, Number, SettingsModel, settings_arg
from vecflow.lvm.settings import LvmTrainSettings
from vecflow.summary.settings import ElmTrainSettings


class SearchParam(SettingsModel):
    """One entry of ``hpo.search_space`` / ``hpo.lvm_search_space`` (the schema's ``search_param``); what Optuna
    cannot sample (low above high, a log scale from 0, no choices) is checked by ``vecflow.hpo.space``."""

    type: Literal["float", "int", "categorical"]
    low: Number | None = None
    high: Number | None = None
    log: bool | None = None
    step: Number | None = None  # in the schema; the sampler does not use it
    choices: list[Any] | None = None


class HpoSection(SettingsModel):
    """The ``hpo`` config section."""

    study: str = "elm"
    target: Literal["elm", "lvm"] = "elm"
    lvm_run: str = ""
    lvm_search_space: dict[str, SearchParam] = {}
    lvm_objectives: list[Literal["c0", "margin"]] = ["margin"]
    lvm_fixed: dict[str, Any] = {}
    elm_fixed: dict[str, Any] = {}
    storage: str = ""
    workers: PositiveInt = 2
    trials_per_worker: PositiveInt = 2
    direction: Literal["maximize", "minimize"] = "maximize"
    metric: Literal["bertscore_f1", "rougeL"] = "bertscore_f1"
    pruner_startup_trials: NonNegativeInt = 2
    pruner_warmup_epochs: NonNegativeInt = 0
    search_space: dict[str, SearchParam] = {}


class StudySettings(JobSettings):
    """What every HPO command gets: the ``hpo`` section and the global keys."""

    SCHEMA_FIELDS = {**JobSettings.SCHEMA_FIELDS, "hpo": "hpo"}

    hpo: HpoSection = HpoSection()


class HpoBestSettings(StudySettings):
    """``vecflow hpo-best``: the direction the study must have and the target (which trial is best)."""


class ElmStudySettings(StudySettings):
    """``vecflow hpo-worker`` with ``hpo.target: elm``: ``elm`` is each trial's train-elm settings before
    ``hpo.elm_fixed`` and the trial's parameters are laid over them."""

    NOT_IN_SCHEMA = frozenset({"elm"})
    TARGET: ClassVar[str] = "elm"

    elm: ElmTrainSettings

    def run_settings(self) -> dict:
        """The trials' settings as sent (train-elm validates each trial's again, with its parameters)."""
        return self.elm.model_dump(exclude_unset=True)


class LvmStudySettings(StudySettings):
    """``vecflow hpo-worker`` with ``hpo.target: lvm``: ``lvm`` is the tuned run's train-lvm settings, before
    ``hpo.lvm_fixed`` and the trial's parameters are laid over them."""

    NOT_IN_SCHEMA = frozenset({"lvm"})
    TARGET: ClassVar[str] = "lvm"

    lvm: LvmTrainSettings

    def run_settings(self) -> dict:
        """The run's settings as sent (train-lvm validates each trial's again, with its parameters)."""
        return self.lvm.model_dump(exclude_unset=True)


def worker_settings(data: Mapping) -> ElmStudySettings | LvmStudySettings:
    """``vecflow hpo-worker``'s settings: an LVM study's when they carry ``lvm``, else an ELM study's; the
    target they name (``hpo.target``) must be the one they carry the settings of."""
    model = LvmStudySettings if "lvm" in data else ElmStudySettings
    settings = model.parse(data)
    if settings.hpo.target != model.TARGET:
        raise VecflowError(f"settings: hpo.target: '{settings.hpo.target}', but the settings carry "
                           f"'{model.TARGET}' (the {model.TARGET} trials' settings)")
    return settings


def worker_settings_arg(text: str) -> ElmStudySettings | LvmStudySettings:
    """argparse ``type=`` for hpo-worker's ``--settings``."""
    return worker_settings(settings_arg(text))
