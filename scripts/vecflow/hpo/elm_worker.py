"""The ELM study's worker (``hpo.target: elm``): each trial trains ``vecflow.summary.elm_train.train_elm`` with
the parameters Optuna samples from ``hpo.search_space`` (over ``hpo.elm_fixed``, the budget every trial has) and
returns its selection score; a MedianPruner on the scores each evaluation reports stops hopeless trials."""

from __future__ import annotations

import tempfile
from pathlib import Path

from vecflow.core.errors import VecflowError
from vecflow.core.io import read_json
from vecflow.hpo.settings import ElmStudySettings
from vecflow.hpo.space import parse_search_space, suggest
from vecflow.hpo.storage import open_worker_study, trial_record
from vecflow.summary import elm, elm_train


def trial_settings(settings: ElmStudySettings, params: dict, run_name: str) -> dict:
    """The trial's train-elm settings: ``elm`` with the global seed/device/tracking, ``hpo.elm_fixed`` and then
    the trial's parameters laid over it."""
    fixed = settings.hpo.elm_fixed
    unknown = sorted(k for k in fixed if k not in elm.SETTINGS)
    if unknown:
        raise VecflowError(f"settings: hpo.elm_fixed.{unknown[0]}: not an elm setting")
    base = {**settings.run_settings(), "seed": settings.seed, "device": settings.device,
            "tracking": settings.tracking}
    return {**base, **fixed, **params, "run_name": run_name}


def run_elm_worker(settings: ElmStudySettings, study_name: str, storage_url: str, worker: int, data_dir, lm_dir,
                   encoder_dir, bertscore_model=None) -> dict:
    """Run this worker's trials on the shared study; returns the worker record (trial numbers, values, states)."""
    import optuna

    hpo = settings.hpo
    specs = parse_search_space(hpo.search_space)
    if hpo.metric == "bertscore_f1" and bertscore_model is None:
        raise VecflowError("settings: hpo.metric: 'bertscore_f1' needs --bertscore-model (or set metric: rougeL)")
    study, sampler_seed = open_worker_study(
        study_name, storage_url, worker, settings.seed, lambda seed: optuna.samplers.TPESampler(seed=seed),
        optuna.pruners.MedianPruner(n_startup_trials=hpo.pruner_startup_trials,
                                    n_warmup_steps=hpo.pruner_warmup_epochs),
        direction=hpo.direction)
    numbers: list[int] = []

    def objective(trial) -> float:
        numbers.append(trial.number)
        trial.set_user_attr("worker", worker)
        params = suggest(trial, specs)
        run_settings = trial_settings(settings, params, f"{study_name}-trial{trial.number}")
        run_settings["selection_metric"] = hpo.metric  # the trial is ranked by what its run selects on
        with tempfile.TemporaryDirectory(prefix="vecflow-hpo-") as tmp:
            value = elm_train.train_elm(
                run_settings,
                data_dir,
                lm_dir,
                encoder_dir,
                Path(tmp) / "adapter",
                trial=trial,
                bertscore_model=bertscore_model if hpo.metric == "bertscore_f1" else None,
            )
            passed = bool(read_json(Path(tmp) / "adapter" / "summary.json").get("selection_gate_passed"))
        trial.set_user_attr("selection_gate_passed", passed)
        # a model that ignores its embedding ranks below every one that reads it (scores are in [-1, 1])
        return value if passed else value + (-2.0 if hpo.direction == "maximize" else 2.0)

    study.optimize(objective, n_trials=hpo.trials_per_worker)
    ran = {t.number: t for t in study.get_trials(deepcopy=False) if t.number in numbers}
    return {
        "study": study_name,
        "storage": storage_url,
        "worker": worker,
        "sampler_seed": sampler_seed,
        "metric": hpo.metric,
        "direction": hpo.direction,
        "trials": [trial_record(ran[n]) for n in numbers],
    }
