"""What the LVM rules (``workflow/rules/lvm.smk``) ask of the config: the runs to train, each job's
``--settings``, the study file a run reads, and the LVM files the report and the GPU check collect.

Pure functions of the (schema-validated) config: nothing here changes it, so ``config.resolved.yaml`` is what
the user wrote. The learning-curve and seed copies of a run are derived here, not added to the config:

- ``lvm.learning_curve``: run ``R`` retrained on seeded shares of the training windows, as runs
  ``R-lc<percent>`` (``train_fraction``);
- ``lvm.seeds``: run ``R`` retrained with seeds ``seed+1 .. seed+count-1``, as runs ``R-seed<i>``.

Each ``*_settings`` function returns the JSON text its rule passes as ``--settings``; the fields are those of
the command's model in ``vecflow.lvm.settings``.
"""

from __future__ import annotations

from vecflow.core.errors import VecflowError
from vecflow.core.settings import job_globals, settings_json
from vecflow.core.workflow import study_dir

SPLITS = ("train", "val", "ood")


def embedding_outputs(results_dir: str) -> dict[str, str]:
    """embed_chunks' outputs, named (between-workflow caching needs every output of a rule named):
    ``<split>_vectors`` -> ``R/lvm/embeddings/<split>.safetensors``, ``<split>_index`` -> ``.index.jsonl``."""
    return {f"{split}_{kind}": f"{results_dir}/lvm/embeddings/{split}{suffix}"
            for split in SPLITS for kind, suffix in (("vectors", ".safetensors"), ("index", ".index.jsonl"))}


def _base_run(config: dict, key: str) -> str:
    """The run ``lvm.<key>.run`` names ('' = off), checked to be one of lvm.runs."""
    run = config["lvm"][key]["run"]
    if run and run not in config["lvm"]["runs"]:
        raise VecflowError(f"config: lvm.{key}.run: '{run}' is not one of lvm.runs")
    return run


def curve_runs(config: dict) -> dict[str, dict]:
    """The learning curve's extra runs, {name: entry}: the chosen run's entry with each ``train_fraction``."""
    base = _base_run(config, "learning_curve")
    if not base:
        return {}
    entry = config["lvm"]["runs"][base]
    return {f"{base}-lc{round(100 * fraction)}": dict(entry, train_fraction=fraction)
            for fraction in config["lvm"]["learning_curve"]["fractions"]}


def seed_runs(config: dict) -> dict[str, dict]:
    """The seed copies, {name: entry}: the chosen run's entry with seed ``seed + i - 1`` for i = 2 .. count."""
    base = _base_run(config, "seeds")
    if not base:
        return {}
    entry = config["lvm"]["runs"][base]
    return {f"{base}-seed{i}": dict(entry, seed=config["seed"] + i - 1)
            for i in range(2, config["lvm"]["seeds"]["count"] + 1)}


def runs(config: dict) -> dict[str, dict]:
    """Every run the workflow trains, {name: entry}: lvm.runs, then the learning-curve and seed copies."""
    return {**config["lvm"]["runs"], **curve_runs(config), **seed_runs(config)}


def curve_points(config: dict) -> list[str]:
    """The runs of the learning curve: the chosen run and its copies ([] when there is none)."""
    base = _base_run(config, "learning_curve")
    return [base, *curve_runs(config)] if base else []


def seed_points(config: dict) -> list[str]:
    """The runs of the seed aggregate: the chosen run and its copies ([] when there is none)."""
    base = _base_run(config, "seeds")
    return [base, *seed_runs(config)] if base else []


# ---------------------------------------------------------------------------------------------- --settings
def embed_settings(config: dict) -> str:
    """``vecflow embed`` (EmbedSettings)."""
    lvm = config["lvm"]
    return settings_json({**job_globals(config), "embed_batch_size": lvm["embed_batch_size"],
                     "embed_shard_rows": lvm["embed_shard_rows"]})


def windows_settings(config: dict) -> str:
    """``vecflow windows`` (WindowsSettings)."""
    return settings_json({**job_globals(config), "context_length": config["lvm"]["context_length"]})


def diagnostics_settings(config: dict) -> str:
    """``vecflow diagnose`` (DiagnosticsSettings): lvm.diagnostics."""
    return settings_json({**job_globals(config), **config["lvm"]["diagnostics"]})


def run_settings(config: dict, run: str) -> dict:
    """``vecflow train-lvm`` (LvmTrainSettings) for one run: lvm.train with the run's entry laid over it (the
    loss overrides of both merged), the context length, the selection split's leakage rule and the mini-5CAT's
    article filter. A dict: the LVM study's worker sends it inside its own settings."""
    lvm = config["lvm"]
    entry = dict(runs(config)[run])
    losses = {**lvm["train"].get("losses", {}), **entry.pop("losses", {})}
    settings = {**job_globals(config), **lvm["train"], **entry, "run": run,
                "context_length": lvm["context_length"],
                "short_duplicate_tokens": lvm["split"]["short_duplicate_tokens"],
                "min_article_chunks": lvm["fivecat"]["min_article_chunks"]}
    if losses:
        settings["losses"] = losses
    return settings


def train_settings(config: dict, run: str) -> str:
    return settings_json(run_settings(config, run))


def fivecat_settings(config: dict, run: str) -> str:
    """``vecflow fivecat`` (FivecatSettings): lvm.fivecat and the run's train_fraction (its ridge baseline sees
    the share of the training windows the model saw)."""
    fraction = run_settings(config, run)["train_fraction"]
    return settings_json({**job_globals(config), **config["lvm"]["fivecat"], "train_fraction": fraction})


# ---------------------------------------------------------------------------------------------- the study
def study_on(config: dict) -> bool:
    """The LVM study runs: tracks hpo and lvm, hpo.target lvm."""
    tracks = config["tracks"]
    return tracks["hpo"] and tracks["lvm"] and config["hpo"]["target"] == "lvm"


def pareto_on(config: dict) -> bool:
    """The study maps the c_0 / margin front (hpo.lvm_objectives [c0, margin]): hpo_pareto runs."""
    return study_on(config) and list(config["hpo"]["lvm_objectives"]) == ["c0", "margin"]


def study_params_input(config: dict, run: str) -> list[str]:
    """The study's best_params.yaml for a run with params_from_study (none when the study is off)."""
    wanted = runs(config)[run].get("params_from_study", False)
    return [f"{study_dir(config)}/best_params.yaml"] if wanted and study_on(config) \
        else []


# ---------------------------------------------------------------------------------------------- collected files
def report_files(config: dict) -> dict[str, str]:
    """The LVM track's files the report shows, {KEY or KEY__NAME: path}."""
    R, lvm = config["results_dir"], config["lvm"]
    files = {}
    if lvm["articles"]["format"] != "pydoc":
        files["data__articles"] = lvm["articles"]["input"]
    files["leakage"] = f"{R}/lvm/splits/leakage.json"
    files["split_ids"] = f"{R}/lvm/splits/ids.json"
    files["direction"] = f"{R}/lvm/diagnostics/direction.json"
    files["direction_plot"] = f"{R}/lvm/diagnostics/direction.png"
    for run in runs(config):
        files[f"history__lvm-{run}"] = f"{R}/lvm/models/{run}"
        files[f"fivecat__{run}"] = f"{R}/lvm/fivecat/{run}.json"
        files[f"fivecat_plot__{run}"] = f"{R}/lvm/fivecat/{run}.png"
    if lvm["seeds"]["run"]:
        files["lvm_seeds"] = f"{R}/lvm/seeds.json"
    if lvm["learning_curve"]["run"]:
        files["lvm_curve"] = f"{R}/lvm/learning_curve.json"
        files["lvm_curve_plot"] = f"{R}/lvm/learning_curve.png"
    return files


def gpu_check_families(config: dict) -> dict[str, dict]:
    """Each LVM run's training log, model folder and benchmark file, {lvm-<run>: {log, model, benchmark}}."""
    R = config["results_dir"]
    return {f"lvm-{run}": {"log": f"{R}/logs/train_lvm/{run}.log", "model": f"{R}/lvm/models/{run}",
                           "benchmark": f"{R}/benchmarks/train_lvm/{run}.tsv"} for run in runs(config)}
