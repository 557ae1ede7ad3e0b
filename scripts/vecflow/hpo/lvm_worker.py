"""The LVM study's worker (``hpo.target: lvm``): each trial trains ``vecflow.lvm.train.train_lvm`` with the
lvm.train settings sampled from ``hpo.lvm_search_space`` (its own key, so that the ELM ``search_space`` of a base
config never leaks in; ``losses.<key>`` entries set loss weights) over ``hpo.lvm_fixed``.

``hpo.lvm_objectives: [margin]``: the objective is the selection split's margin, subject to c_0 >= the
context-mean baseline's c_0 there (an Optuna constraint: TPE prefers feasible trials, and ``hpo-best`` picks the
best feasible one); the per-epoch margin is reported and a MedianPruner stops hopeless trials.
``[c0, margin]``: two objectives, the c_0 / margin front (``hpo-pareto``), no constraint and no pruning.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from vecflow.core.errors import VecflowError
from vecflow.hpo.settings import HpoSection, LvmStudySettings
from vecflow.hpo.space import parse_search_space, suggest
from vecflow.hpo.storage import open_worker_study, trial_record
from vecflow.lvm.study_params import lvm_trial_settings

LVM_OBJECTIVES = ("c0", "margin")


def lvm_objectives(hpo: HpoSection) -> tuple[str, ...]:
    """``hpo.lvm_objectives``: [margin] (one objective, c_0 >= context mean as a constraint) or [c0, margin]
    (two objectives: the study maps the c_0 / margin front)."""
    objectives = tuple(hpo.lvm_objectives)
    if objectives not in (("margin",), LVM_OBJECTIVES):
        raise VecflowError(f"settings: hpo.lvm_objectives: expected [margin] or [c0, margin], got {list(objectives)}")
    return objectives


def lvm_constraint(summary: dict) -> float:
    """<= 0 when the selected checkpoint's c_0 is at least the context-mean baseline's on the selection split."""
    return float(summary["selection_baselines"]["context_mean"]["c0"] - summary["val_c0"])


def constraints(trial) -> tuple[float]:
    return tuple(trial.user_attrs.get("constraint", (1.0,)))


def trial_run_settings(settings: LvmStudySettings, params: dict, run_name: str) -> dict:
    """The trial's train-lvm settings: the run's, with ``hpo.lvm_fixed`` and then the trial's parameters
    (``losses.<key>`` into the run's loss overrides) laid over them."""
    return lvm_trial_settings(settings.lvm, settings.hpo.lvm_fixed, params, run_name)


def run_lvm_worker(settings: LvmStudySettings, study_name: str, storage_url: str, worker: int, windows: dict) -> dict:
    """LVM trials: train_lvm per trial, objective the selection margin, constraint c_0 >= context-mean c_0;
    the per-epoch margin is reported to Optuna and a MedianPruner stops hopeless trials."""
    import optuna

    from vecflow.lvm import train as lvm_train

    hpo = settings.hpo
    specs = parse_search_space(hpo.lvm_search_space, "lvm")
    if hpo.direction != "maximize":
        raise VecflowError("settings: hpo.direction: the lvm target maximises the margin (set direction: maximize)")
    two = lvm_objectives(hpo) == LVM_OBJECTIVES
    native = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna >= 5: constraints live on the trial

    def sampler(sampler_seed):
        if native or two:  # two objectives: the whole front is wanted, no constraint
            return optuna.samplers.TPESampler(seed=sampler_seed)
        return optuna.samplers.TPESampler(seed=sampler_seed, constraints_func=constraints)

    directions = {"directions": ["maximize", "maximize"]} if two else {"direction": "maximize"}
    study, sampler_seed = open_worker_study(
        study_name, storage_url, worker, settings.seed, sampler,
        optuna.pruners.MedianPruner(n_startup_trials=hpo.pruner_startup_trials,
                                    n_warmup_steps=hpo.pruner_warmup_epochs),
        **directions)
    numbers: list[int] = []

    def objective(trial) -> float:
        numbers.append(trial.number)
        trial.set_user_attr("worker", worker)
        run_settings = trial_run_settings(settings, suggest(trial, specs), f"{study_name}-trial{trial.number}")

        def report(record: dict) -> None:
            if two:  # Optuna prunes single-objective studies only
                return
            trial.report(record["val/margin"], record["epoch"])
            if trial.should_prune():
                trial.set_user_attr("constraint", (1.0,))
                raise optuna.TrialPruned()

        with tempfile.TemporaryDirectory(prefix="vecflow-hpo-") as tmp:
            summary = lvm_train.train_lvm(windows["train"], windows["val"], windows["val_embeddings"],
                                          windows["val_index"], run_settings, Path(tmp) / "lvm",
                                          epoch_callback=report, train_embeddings_path=windows["train_embeddings"],
                                          train_index_path=windows["train_index"])
        constraint = lvm_constraint(summary)
        trial.set_user_attr("constraint", (constraint,))
        if native:
            trial.set_constraint("context_mean_c0_minus_c0", constraint)
        trial.set_user_attr("c0", summary["val_c0"])
        trial.set_user_attr("context_mean_c0", summary["selection_baselines"]["context_mean"]["c0"])
        for key in ("val_margin", "val_mrr", "best_epoch", "epochs_run"):
            trial.set_user_attr(key, summary[key])
        trial.set_user_attr("wins", summary["best"].get("val/wins"))
        trial.set_user_attr("baselines", {name: {m: base.get(m) for m in ("c0", "margin", "mrr")}
                                          for name, base in summary["selection_baselines"].items()})
        if two:
            return float(summary["val_c0"]), float(summary["val_margin"])
        return float(summary["val_margin"])

    study.optimize(objective, n_trials=hpo.trials_per_worker)
    ran = {t.number: t for t in study.get_trials(deepcopy=False) if t.number in numbers}
    return {"study": study_name, "storage": storage_url, "worker": worker, "sampler_seed": sampler_seed,
            "metric": "c0,margin" if two else "margin", "direction": "maximize", "target": "lvm",
            "trials": [{**trial_record(ran[n]), "constraint": list(constraints(ran[n]))} for n in numbers]}
