"""What the HPO rules (``workflow/rules/hpo.smk``) ask of the config: the study's storage, each job's
``--settings`` (the fields of its model in ``vecflow.hpo.settings``) and the study's files the report shows.

Pure functions of the (schema-validated) config: nothing here changes it.
"""

from __future__ import annotations

from vecflow.core.settings import job_globals, settings_json
from vecflow.core.workflow import study_dir
from vecflow.lvm import workflow as lvm_workflow
from vecflow.summary import workflow as summary_workflow


def storage(config: dict) -> str:
    """``hpo.storage``, or the study's SQLite file beside its outputs ('' in the config)."""
    return config["hpo"]["storage"] or f"sqlite:///{study_dir(config)}/study.db"


def tuned_run(config: dict) -> str:
    """The LVM run an LVM study tunes: ``hpo.lvm_run``, or the first of lvm.runs."""
    return config["hpo"]["lvm_run"] or next(iter(lvm_workflow.runs(config)))


def elm_worker_settings(config: dict) -> str:
    """``vecflow hpo-worker`` for the ELM (ElmStudySettings): the hpo section, and the trials' train-elm
    settings: the elm section with the BERTScore model's settings and the selection split, as train_elm gets
    them (``vecflow.summary.workflow.elm_bertscore_settings``)."""
    return settings_json({"seed": config["seed"], "device": config["device"], "hpo": config["hpo"],
                          "elm": {**config["elm"], **summary_workflow.elm_bertscore_settings(config)}})


def lvm_worker_settings(config: dict) -> str:
    """``vecflow hpo-worker`` for an LVM run (LvmStudySettings): the hpo section, and the tuned run's train-lvm
    settings (``vecflow.lvm.workflow.run_settings``)."""
    return settings_json({"seed": config["seed"], "device": config["device"], "hpo": config["hpo"],
                          "lvm": lvm_workflow.run_settings(config, tuned_run(config))})


def best_settings(config: dict) -> str:
    """``vecflow hpo-best`` (HpoBestSettings): the hpo section and the global keys."""
    return settings_json({**job_globals(config), "hpo": config["hpo"]})


def study_on(config: dict) -> bool:
    """The study runs: track hpo, and the track of its target (lvm; or summary and elm)."""
    tracks = config["tracks"]
    target_on = tracks["lvm"] if config["hpo"]["target"] == "lvm" else tracks["summary"] and tracks["elm"]
    return bool(tracks["hpo"] and target_on)


def report_files(config: dict) -> dict[str, str]:
    """The study's files the report shows, {KEY: path} (none when the study does not run)."""
    if not study_on(config):
        return {}
    folder = study_dir(config)
    files = {"hpo_trials": f"{folder}/trials.csv", "hpo_importance": f"{folder}/importance.png",
             "hpo_params": f"{folder}/best_params.yaml"}
    if config["hpo"]["target"] == "lvm" and lvm_workflow.pareto_on(config):
        files.update(hpo_pareto=f"{folder}/pareto.json", hpo_pareto_plot=f"{folder}/pareto.png")
    return files
