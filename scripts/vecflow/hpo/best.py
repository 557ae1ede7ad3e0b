"""After the workers: the best trial of a study (``vecflow hpo-best``: best_params.yaml, the trials table, a
parameter-importance plot) and, for an LVM study with two objectives, its c_0 / margin front (``vecflow
hpo-pareto``: pareto.json and a plot).

    vecflow hpo-best   --study elm-demo --storage sqlite:///results/hpo/elm-demo/study.db --workers w0.json,w1.json ...
    vecflow hpo-pareto --study lvm-demo --storage sqlite:///results/hpo/lvm-demo/study.db --best best_params.yaml ...

The ELM target's best trial is Optuna's; an LVM study's is the best feasible one (c_0 >= the context-mean
baseline's), and with two objectives the one the forward rule picks (``forward_trial``).
"""

from __future__ import annotations

import argparse

from vecflow.core.errors import VecflowError
from vecflow.core.io import atomic_path, read_json, write_json, write_text
from vecflow.hpo.lvm_worker import LVM_OBJECTIVES, constraints
from vecflow.hpo.settings import HpoBestSettings, HpoSection
from vecflow.hpo.storage import load_study


def check_worker_files(paths: list[str], study_name: str) -> int:
    """The worker JSONs must exist and belong to this study; returns how many trials they ran."""
    total = 0
    for path in paths:
        record = read_json(path)
        if record.get("study") != study_name:
            raise VecflowError(f"{path}: field 'study': '{record.get('study')}' is not '{study_name}'")
        total += len(record.get("trials", []))
    return total


def check_direction(study, hpo: HpoSection) -> None:
    """The study must optimise in the direction the config asks for (a reused study name could differ)."""
    wanted = hpo.direction
    if len(study.directions) > 1:  # the lvm target's [c0, margin] study: both maximised
        if hpo.target != "lvm":
            raise VecflowError(f"study '{study.study_name}' has {len(study.directions)} objectives: only the lvm "
                               "target runs a two-objective study")
        return
    actual = study.direction.name.lower()
    if wanted != actual:
        raise VecflowError(
            f"settings: hpo.direction: '{wanted}', but study '{study.study_name}' was created to {actual}"
        )


def best_trial(study, target: str = "elm"):
    """The best complete trial; for the lvm target the best FEASIBLE one (c_0 >= context-mean c_0), falling
    back to the best overall (marked ``feasible: false`` in its user attributes) when none is."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    if not complete:
        states = sorted({t.state.name for t in study.get_trials(deepcopy=False)}) or ["no trials"]
        raise VecflowError(f"study '{study.study_name}': no complete trial ({', '.join(states)})")
    if target == "lvm" and len(study.directions) > 1:
        return forward_trial(complete)
    if target == "lvm":
        feasible = [t for t in complete if all(c <= 0 for c in constraints(t))]
        return max(feasible or complete, key=lambda t: t.value)
    return study.best_trial


def forward_trial(trials: list):
    """``selection_metric: forward`` over trials ([c0, margin] values on the selection split): among those with a
    positive margin the highest c_0; with none, dominance over the baselines (pairs won, then margin). The
    chosen trial's user attribute ``forward_fallback`` says which rule chose it."""
    forward = [t for t in trials if t.values[1] > 0]
    if forward:
        return max(forward, key=lambda t: (t.values[0], t.values[1]))
    return max(trials, key=lambda t: (t.user_attrs.get("wins") or 0, t.values[1]))


def trial_value_text(trial) -> str:
    return ", ".join(f"{v:.6g}" for v in trial.values) if trial.values and len(trial.values) > 1 else f"{trial.value:.6g}"


def pareto_record(study) -> dict:
    """Every complete trial of a [c0, margin] study as a point, the Pareto front, the chosen trial (forward rule),
    and the baselines (copy-last, context-mean, ridge) measured on the same selection split."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    if not complete:
        raise VecflowError(f"study '{study.study_name}': no complete trial")
    front = {t.number for t in study.best_trials}
    chosen = forward_trial(complete)
    points = [{"trial": t.number, "c0": t.values[0], "margin": t.values[1], "mrr": t.user_attrs.get("val_mrr"),
               "wins": t.user_attrs.get("wins"), "pareto": t.number in front, "params": dict(t.params)}
              for t in sorted(complete, key=lambda t: t.number)]
    baselines = next((t.user_attrs["baselines"] for t in complete if t.user_attrs.get("baselines")), {})
    positive = [p for p in points if p["margin"] > 0]
    return {"study": study.study_name, "objectives": list(LVM_OBJECTIVES), "split": "selection",
            "trials": points, "front": sorted(front), "chosen": chosen.number,
            "rule": "forward" if positive else "dominance (no trial reached a positive margin)",
            "positive_margin_trials": len(positive), "baselines": baselines}


def write_pareto(json_path, plot_path, study) -> dict:
    """``pareto_record`` as JSON and as a plot: c_0 against margin, the front joined, baselines as labelled points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    record = pareto_record(study)
    write_json(json_path, record)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    pts = record["trials"]
    ax.scatter([p["c0"] for p in pts], [p["margin"] for p in pts], s=18, color="0.6", label="trials")
    front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["c0"])
    ax.plot([p["c0"] for p in front], [p["margin"] for p in front], "o-", color="tab:blue", label="Pareto front")
    chosen = next(p for p in pts if p["trial"] == record["chosen"])
    ax.scatter([chosen["c0"]], [chosen["margin"]], s=90, facecolors="none", edgecolors="tab:red",
               label=f"chosen (trial {chosen['trial']}, {record['rule'].split(' ')[0]})")
    for name, base in record["baselines"].items():
        if base.get("c0") is not None and base.get("margin") is not None:
            ax.scatter([base["c0"]], [base["margin"]], marker="s", color="black")
            ax.annotate(name, (base["c0"], base["margin"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(0.0, color="tab:green", lw=0.8, ls="--")
    ax.set_xlabel("c0 (selection split)")
    ax.set_ylabel("5CAT margin (selection split)")
    ax.set_title(f"{study.study_name}: c0 / margin trade-off")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(plot_path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return record


def write_best_params(path, study, trial) -> None:
    import yaml

    directions = ", ".join(d.name.lower() for d in study.directions)
    header = (
        f"# best of study '{study.study_name}': trial {trial.number}, value {trial_value_text(trial)} "
        f"({directions})\n"
    )
    write_text(path, header + yaml.safe_dump(dict(trial.params), sort_keys=True))


def write_trials_table(path, study) -> None:
    with atomic_path(path, suffix=".csv") as tmp:
        study.trials_dataframe().to_csv(tmp, index=False)


def param_importances(study) -> tuple[dict[str, float], str | None]:
    """(importances, None) or ({}, why they cannot be computed)."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE])
    if len(complete) < 2:
        return {}, f"{len(complete)} complete trial(s): parameter importance needs at least 2"
    try:
        if len(study.directions) > 1:  # importance for the margin, the objective a [c0, margin] study is about
            return optuna.importance.get_param_importances(study, target=lambda t: t.values[1]), None
        return optuna.importance.get_param_importances(study), None
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:
        return {}, f"parameter importance could not be computed: {exc}"


def write_importance_plot(path, study) -> None:
    """A bar plot of parameter importances, or a placeholder that says why there is none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    importances, reason = param_importances(study)
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * max(len(importances), 3)))
    if importances:
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names], color="tab:blue")
        ax.set_xlabel("importance (optuna.importance default evaluator)")
    else:
        ax.text(0.5, 0.5, reason, ha="center", va="center", wrap=True)
        ax.set_axis_off()
    ax.set_title(f"parameter importance: {study.study_name}")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def main_best(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow hpo-best", description="Best parameters of an Optuna study.")
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--storage", required=True, help="the storage URL the workers used")
    parser.add_argument("--workers", required=True, help="comma-separated worker JSON files")
    parser.add_argument("--settings", required=True, type=HpoBestSettings.from_json,
                        help="{hpo, seed, device, tracking} as JSON (vecflow.hpo.settings.HpoBestSettings)")
    parser.add_argument("--out-params", required=True, help="best params YAML (for train-elm --params)")
    parser.add_argument("--out-trials", required=True, help="trials table CSV")
    parser.add_argument("--out-plot", required=True, help="parameter-importance PNG")
    args = parser.parse_args(argv)
    worker_trials = check_worker_files([p for p in args.workers.split(",") if p], args.study)
    study = load_study(args.study, args.storage)
    check_direction(study, args.settings.hpo)
    trial = best_trial(study, args.settings.hpo.target)
    write_best_params(args.out_params, study, trial)
    write_trials_table(args.out_trials, study)
    write_importance_plot(args.out_plot, study)
    print(
        f"[vecflow] hpo-best: {len(study.trials)} trials in the study ({worker_trials} from these workers); "
        f"best trial {trial.number} = {trial_value_text(trial)} {trial.params}"
    )
    return 0


def main_pareto(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow hpo-pareto",
                                     description="The c0 / margin front of an LVM [c0, margin] Optuna study.")
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--storage", required=True, help="the storage URL the workers used")
    parser.add_argument("--best", required=True, help="hpo-best's best_params.yaml (the study is complete)")
    parser.add_argument("--out-json", required=True, help="trials, front, chosen trial and baselines")
    parser.add_argument("--out-plot", required=True, help="c0 against margin: trials, front, baselines")
    args = parser.parse_args(argv)
    study = load_study(args.study, args.storage)
    if len(study.directions) != 2:
        raise VecflowError(f"study '{args.study}': {len(study.directions)} objective(s); the Pareto front needs the "
                           "lvm target's two (hpo.lvm_objectives: [c0, margin])")
    record = write_pareto(args.out_json, args.out_plot, study)
    print(f"[vecflow] hpo-pareto: {len(record['trials'])} trials, front {record['front']}, chosen trial "
          f"{record['chosen']} by {record['rule']}; {record['positive_margin_trials']} with a positive margin")
    return 0
