"""Hyper-parameter search for the ELM adapter (or, with ``hpo.target: lvm``, a next-vector model) with Optuna:
parallel workers on one shared study.

    vecflow hpo-worker --study elm-demo --storage sqlite:///results/hpo/elm-demo/study.db --worker 0 ...
    vecflow hpo-best   --study elm-demo --storage sqlite:///results/hpo/elm-demo/study.db --workers w0.json,w1.json ...

Each worker opens (or creates) the study, samples with ``TPESampler(seed=seed + worker)``, prunes with a
``MedianPruner`` on the per-epoch validation score that ``vecflow.summary.elm_train.train_elm`` reports, and runs
``trials_per_worker`` trials. The study lives in the storage, so rerunning a worker adds trials and never
loses one. A worker that resumes draws from a sampler seed offset by the trials it already ran, so it
does not re-propose its first parameters.

``hpo.target: lvm`` (see ``run_lvm_worker``): each trial trains ``vecflow.lvm.train.train_lvm`` with the
lvm.train settings sampled from ``hpo.lvm_search_space`` (its own key, so that the ELM ``search_space`` of a base
config never leaks in; ``losses.<key>`` entries set loss weights) and returns the selection split's margin,
subject to c_0 >= the context-mean baseline's c_0 there (an Optuna constraint: TPE prefers feasible trials,
and ``hpo-best`` picks the best feasible one). The ELM target is unchanged.

Storage (``hpo.storage``; the parent folder of a file is created):

- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: the default, for one machine (SQLite's
  locks are not reliable on NFS);
- a journal file, ``journal:///relative/path.journal``, ``journal:////absolute/path.journal`` or a bare path
  ending in ``.journal`` or ``.log``: Optuna's ``JournalStorage`` on that file (``JournalFileBackend``, or
  ``JournalFileStorage`` before Optuna 4), which appends under a symlink lock: safe for workers on several
  nodes sharing one file over NFS, with no database server;
- any other SQLAlchemy URL (``postgresql://user@host/db``, ``mysql+pymysql://...``): an RDB every node reaches.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vecflow.summary import elm, elm_train
from vecflow.core.errors import VecflowError
from vecflow.core.io import atomic_path, read_json, write_json, write_text
from vecflow.core.settings import need, settings_arg
from vecflow.lvm.study_params import LVM_TUNABLE, lvm_trial_settings, read_lvm_params  # noqa: F401 (re-exported)
from vecflow.lvm.study_params import is_lvm_setting as _lvm_setting

PARAM_TYPES = ("float", "int", "categorical")
DIRECTIONS = ("maximize", "minimize")
METRICS = ("bertscore_f1", "rougeL")
TARGETS = ("elm", "lvm")
RESUME_SEED_STRIDE = 1000


# ------------------------------------------------------------------------------------------ search space


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None


def parse_search_space(space: dict, target: str = "elm") -> dict[str, ParamSpec]:
    """``hpo.search_space`` -> specs; an entry Optuna cannot sample is a VecflowError naming it."""
    if not isinstance(space, dict) or not space:
        key = "lvm_search_space" if target == "lvm" else "search_space"
        raise VecflowError(f"settings: hpo.{key}: must be a non-empty mapping of {target} settings")
    return {name: _parse_param(name, entry, target) for name, entry in space.items()}


def _parse_param(name: str, entry, target: str = "elm") -> ParamSpec:
    label = f"hpo.{'lvm_search_space' if target == 'lvm' else 'search_space'}.{name}"
    if target == "lvm" and not _lvm_setting(name):
        raise VecflowError(f"{label}: not a tunable lvm setting (one of {', '.join(LVM_TUNABLE)}, or losses.<key>)")
    if target == "elm" and name not in elm.SETTINGS:
        raise VecflowError(f"{label}: not an elm setting")
    if not isinstance(entry, dict):
        raise VecflowError(f"{label}: expected a mapping with 'type'")
    kind = entry.get("type")
    if kind not in PARAM_TYPES:
        raise VecflowError(f"{label}: type must be one of {', '.join(PARAM_TYPES)}, got {kind!r}")
    if kind == "categorical":
        choices = entry.get("choices")
        if not isinstance(choices, list) or not choices:
            raise VecflowError(f"{label}: categorical needs a non-empty 'choices' list")
        return ParamSpec(name, kind, choices=tuple(choices))
    low, high, log = entry.get("low"), entry.get("high"), entry.get("log", False)
    number = int if kind == "int" else (int, float)
    for key, value in (("low", low), ("high", high)):
        if not isinstance(value, number) or isinstance(value, bool):
            raise VecflowError(
                f"{label}: '{key}' must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}"
            )
    if low >= high:
        raise VecflowError(f"{label}: 'low' ({low}) must be below 'high' ({high})")
    if not isinstance(log, bool):
        raise VecflowError(f"{label}: 'log' must be true or false")
    if log and low <= 0:
        raise VecflowError(f"{label}: log scale needs 'low' > 0, got {low}")
    return ParamSpec(name, kind, low=low, high=high, log=log)


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


# ---------------------------------------------------------------------------------------------- storage


JOURNAL_SUFFIXES = (".journal", ".log")  # a bare path with one of these is a journal file


def journal_file_backend(path: str):
    """Optuna's journal file backend on ``path``: ``JournalFileBackend`` (Optuna >= 4) or ``JournalFileStorage``
    (3.x). Both lock with a symlink by default (atomic on NFS), so processes on several hosts can append."""
    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # Optuna 3.x has the same backend under its old name
        from optuna.storages import JournalFileStorage as JournalFileBackend
    return JournalFileBackend(path)


def journal_path(url: str) -> Path | None:
    """The journal file that ``url`` names (``journal:///path`` or a bare ``*.journal`` / ``*.log`` path)."""
    if url.startswith("journal:///"):
        return Path(url[len("journal:///") :])
    if "://" not in url and url.endswith(JOURNAL_SUFFIXES):
        return Path(url)
    return None


def open_storage(url: str):
    """An Optuna storage for ``url``; file-based storages get their parent folder created."""
    from optuna.storages import JournalStorage

    usage = "use sqlite:///path.db, journal:///path.journal (or a path ending in .journal) or an RDB URL"
    if not url:
        raise VecflowError(f"--storage: empty ({usage})")
    if url.startswith("sqlite:///"):
        from filelock import FileLock
        from optuna.storages import RDBStorage

        db = Path(url[len("sqlite:///") :])
        db.parent.mkdir(parents=True, exist_ok=True)
        # workers started together would race to create the schema (UNIQUE constraint failed: alembic_version)
        with FileLock(f"{db}.lock"):
            return RDBStorage(url)
    path = journal_path(url)
    if path is not None:
        if path.is_dir() or not path.name:
            raise VecflowError(f"--storage: '{url}' names a folder, not a journal file")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(journal_file_backend(str(path)))
    if "://" not in url:
        raise VecflowError(f"--storage: '{url}' is neither a URL nor a journal file ({usage})")
    return url


def load_study(study_name: str, storage_url: str):
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    except KeyError:
        raise VecflowError(f"{storage_url}: no study named '{study_name}'") from None


# ----------------------------------------------------------------------------------------------- worker


@dataclass(frozen=True)
class HpoSettings:
    trials_per_worker: int
    direction: str
    metric: str
    specs: dict[str, ParamSpec]
    pruner_startup_trials: int
    pruner_warmup_epochs: int


def read_hpo_settings(settings: dict) -> HpoSettings:
    hpo = need(settings, "hpo")
    trials = hpo.get("trials_per_worker", 1)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise VecflowError(f"settings: hpo.trials_per_worker: must be a positive integer, got {trials!r}")
    direction = hpo.get("direction", "maximize")
    if direction not in DIRECTIONS:
        raise VecflowError(f"settings: hpo.direction: must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    metric = hpo.get("metric", "bertscore_f1")
    if metric not in METRICS:
        raise VecflowError(f"settings: hpo.metric: must be one of {', '.join(METRICS)}, got {metric!r}")
    return HpoSettings(
        trials,
        direction,
        metric,
        parse_search_space(hpo.get("search_space")),
        int(hpo.get("pruner_startup_trials", 2)),
        int(hpo.get("pruner_warmup_epochs", 0)),
    )


def trial_settings(settings: dict, params: dict, run_name: str) -> dict:
    """The elm section with the global seed/device/tracking, overridden by the trial's parameters."""
    base = dict(need(settings, "elm"))
    for key in ("seed", "device", "tracking"):
        if key in settings:
            base[key] = settings[key]
    fixed = dict(settings.get("hpo", {}).get("elm_fixed") or {})
    unknown = sorted(k for k in fixed if k not in elm.SETTINGS)
    if unknown:
        raise VecflowError(f"settings: hpo.elm_fixed.{unknown[0]}: not an elm setting")
    return {**base, **fixed, **params, "run_name": run_name}


def fail_abandoned_trials(study, worker: int) -> list[int]:
    """This worker's trials still RUNNING when it starts were left by a killed run (Snakemake runs one job per
    worker index at a time): mark them FAIL so the study resumes cleanly; its COMPLETE trials are kept."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    abandoned = [t for t in running if t.user_attrs.get("worker") == worker]
    for trial in abandoned:
        study._storage.set_trial_user_attr(trial._trial_id, "failed_because", "its worker process was killed")
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        print(f"[vecflow] hpo-worker {worker}: trial {trial.number} was left running by a killed run: marked FAIL")
    return [t.number for t in abandoned]


def run_worker(
    settings: dict, study_name: str, storage_url: str, worker: int, data_dir, lm_dir, encoder_dir, bertscore_model=None
) -> dict:
    """Run this worker's trials on the shared study; returns the worker record (trial numbers, values, states)."""
    import optuna

    hpo = read_hpo_settings(settings)
    if hpo.metric == "bertscore_f1" and bertscore_model is None:
        raise VecflowError("settings: hpo.metric: 'bertscore_f1' needs --bertscore-model (or set metric: rougeL)")
    seed = int(settings.get("seed", 0))
    study = optuna.create_study(
        study_name=study_name,
        storage=open_storage(storage_url),
        load_if_exists=True,
        direction=hpo.direction,
        sampler=optuna.samplers.TPESampler(seed=seed + worker),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=hpo.pruner_startup_trials, n_warmup_steps=hpo.pruner_warmup_epochs
        ),
    )
    fail_abandoned_trials(study, worker)
    earlier = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == worker]
    sampler_seed = seed + worker + RESUME_SEED_STRIDE * len(earlier)
    if earlier:  # a resumed worker must not re-propose the parameters of its first run
        study.sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    numbers: list[int] = []

    def objective(trial) -> float:
        numbers.append(trial.number)
        trial.set_user_attr("worker", worker)
        params = suggest(trial, hpo.specs)
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
        "trials": [_trial_record(ran[n]) for n in numbers],
    }


def _trial_record(trial) -> dict:
    return {
        "number": trial.number,
        "state": trial.state.name,
        **({"values": trial.values} if trial.values is not None and len(trial.values) > 1 else {"value": trial.value}),
        "params": trial.params,
        "intermediate": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
    }


# ------------------------------------------------------------------------------------------ LVM target


LVM_OBJECTIVES = ("c0", "margin")


def lvm_objectives(hpo: dict) -> tuple[str, ...]:
    """``hpo.lvm_objectives``: [margin] (one objective, c_0 >= context mean as a constraint) or [c0, margin]
    (two objectives: the study maps the c_0 / margin front)."""
    objectives = tuple(hpo.get("lvm_objectives") or ("margin",))
    if objectives not in (("margin",), LVM_OBJECTIVES):
        raise VecflowError(f"settings: hpo.lvm_objectives: expected [margin] or [c0, margin], got {list(objectives)}")
    return objectives


def lvm_constraint(summary: dict) -> float:
    """<= 0 when the selected checkpoint's c_0 is at least the context-mean baseline's on the selection split."""
    return float(summary["selection_baselines"]["context_mean"]["c0"] - summary["val_c0"])


def _constraints(trial) -> tuple[float]:
    return tuple(trial.user_attrs.get("constraint", (1.0,)))


def run_lvm_worker(settings: dict, study_name: str, storage_url: str, worker: int, windows: dict) -> dict:
    """LVM trials: train_lvm per trial, objective the selection margin, constraint c_0 >= context-mean c_0;
    the per-epoch margin is reported to Optuna and a MedianPruner stops hopeless trials."""
    import optuna

    from vecflow.lvm import train as lvm_train

    hpo = need(settings, "hpo")
    specs = parse_search_space(hpo.get("lvm_search_space"), "lvm")
    trials = hpo.get("trials_per_worker", 1)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise VecflowError(f"settings: hpo.trials_per_worker: must be a positive integer, got {trials!r}")
    if hpo.get("direction", "maximize") != "maximize":
        raise VecflowError("settings: hpo.direction: the lvm target maximises the margin (set direction: maximize)")
    seed = int(settings.get("seed", 0))
    two = lvm_objectives(hpo) == LVM_OBJECTIVES

    native = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna >= 5: constraints live on the trial

    def sampler(sampler_seed):
        if native or two:  # two objectives: the whole front is wanted, no constraint
            return optuna.samplers.TPESampler(seed=sampler_seed)
        return optuna.samplers.TPESampler(seed=sampler_seed, constraints_func=_constraints)

    direction = {"directions": ["maximize", "maximize"]} if two else {"direction": "maximize"}
    study = optuna.create_study(
        study_name=study_name, storage=open_storage(storage_url), load_if_exists=True, **direction,
        sampler=sampler(seed + worker),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=int(hpo.get("pruner_startup_trials", 2)),
                                           n_warmup_steps=int(hpo.get("pruner_warmup_epochs", 0))),
    )
    fail_abandoned_trials(study, worker)
    earlier = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == worker]
    sampler_seed = seed + worker + RESUME_SEED_STRIDE * len(earlier)
    if earlier:
        study.sampler = sampler(sampler_seed)
    numbers: list[int] = []

    def objective(trial) -> float:
        numbers.append(trial.number)
        trial.set_user_attr("worker", worker)
        run_settings = lvm_trial_settings(settings, suggest(trial, specs), f"{study_name}-trial{trial.number}")

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

    study.optimize(objective, n_trials=trials)
    ran = {t.number: t for t in study.get_trials(deepcopy=False) if t.number in numbers}
    return {"study": study_name, "storage": storage_url, "worker": worker, "sampler_seed": sampler_seed,
            "metric": "c0,margin" if two else "margin", "direction": "maximize", "target": "lvm",
            "trials": [{**_trial_record(ran[n]), "constraint": list(_constraints(ran[n]))} for n in numbers]}


def main_worker(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow hpo-worker", description="Run ELM (or LVM) trials on a shared Optuna study.")
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--storage", required=True, help="sqlite:///x.db, journal:///x.journal, x.journal or an RDB URL")
    parser.add_argument("--worker", required=True, type=int, help="worker index (sampler seed = seed + index)")
    parser.add_argument("--data-dir", help="ELM: filtered synthesis folder")
    parser.add_argument("--lm", help="ELM: causal LM folder")
    parser.add_argument("--encoder", help="ELM: sentence encoder folder")
    parser.add_argument("--settings", required=True, type=settings_arg, help="{hpo, elm | lvm, seed, device} as JSON")
    parser.add_argument("--bertscore-model", default=None, help="BERTScore backbone (needed for metric bertscore_f1)")
    parser.add_argument("--train-windows", help="LVM: training windows")
    parser.add_argument("--train-embeddings", help="LVM: the training bank the windows index")
    parser.add_argument("--train-index", help="LVM: its chunk index")
    parser.add_argument("--val-windows", help="LVM: validation windows (used only with selection_fraction 0)")
    parser.add_argument("--val-embeddings", help="LVM: validation chunk embeddings")
    parser.add_argument("--val-index", help="LVM: validation chunk index")
    parser.add_argument("--out", required=True, help="worker JSON")
    args = parser.parse_args(argv)
    target = args.settings.get("hpo", {}).get("target", "elm")
    if target not in TARGETS:
        raise VecflowError(f"settings: hpo.target: must be one of {', '.join(TARGETS)}, got {target!r}")
    needed = (("train_windows", "train_embeddings", "train_index", "val_windows", "val_embeddings", "val_index")
              if target == "lvm"
              else ("data_dir", "lm", "encoder"))
    missing = [f"--{name.replace('_', '-')}" for name in needed if not getattr(args, name)]
    if missing:
        raise VecflowError(f"hpo-worker (target {target}): missing {', '.join(missing)}")
    if target == "lvm":
        windows = {"train": args.train_windows, "val": args.val_windows, "val_embeddings": args.val_embeddings,
                   "val_index": args.val_index, "train_embeddings": args.train_embeddings,
                   "train_index": args.train_index}
        record = run_lvm_worker(args.settings, args.study, args.storage, args.worker, windows)
        write_json(args.out, record)
        print(f"[vecflow] hpo-worker {args.worker} (lvm): trials {[t['number'] for t in record['trials']]} -> {args.out}")
        return 0
    record = run_worker(
        args.settings,
        args.study,
        args.storage,
        args.worker,
        args.data_dir,
        args.lm,
        args.encoder,
        bertscore_model=args.bertscore_model,
    )
    write_json(args.out, record)
    print(f"[vecflow] hpo-worker {args.worker}: trials {[t['number'] for t in record['trials']]} -> {args.out}")
    return 0


# ------------------------------------------------------------------------------------------------- best


def check_worker_files(paths: list[str], study_name: str) -> int:
    """The worker JSONs must exist and belong to this study; returns how many trials they ran."""
    total = 0
    for path in paths:
        record = read_json(path)
        if record.get("study") != study_name:
            raise VecflowError(f"{path}: field 'study': '{record.get('study')}' is not '{study_name}'")
        total += len(record.get("trials", []))
    return total


def check_direction(study, settings: dict) -> None:
    """The study must optimise in the direction the config asks for (a reused study name could differ)."""
    wanted = settings.get("hpo", {}).get("direction")
    if len(study.directions) > 1:  # the lvm target's [c0, margin] study: both maximised
        if settings.get("hpo", {}).get("target") != "lvm":
            raise VecflowError(f"study '{study.study_name}' has {len(study.directions)} objectives: only the lvm "
                               "target runs a two-objective study")
        return
    actual = study.direction.name.lower()
    if wanted is not None and wanted != actual:
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
        feasible = [t for t in complete if all(c <= 0 for c in _constraints(t))]
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
    parser.add_argument("--settings", required=True, type=settings_arg, help="{hpo, ...} as JSON")
    parser.add_argument("--out-params", required=True, help="best params YAML (for train-elm --params)")
    parser.add_argument("--out-trials", required=True, help="trials table CSV")
    parser.add_argument("--out-plot", required=True, help="parameter-importance PNG")
    args = parser.parse_args(argv)
    worker_trials = check_worker_files([p for p in args.workers.split(",") if p], args.study)
    study = load_study(args.study, args.storage)
    check_direction(study, args.settings)
    trial = best_trial(study, args.settings.get("hpo", {}).get("target", "elm"))
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
