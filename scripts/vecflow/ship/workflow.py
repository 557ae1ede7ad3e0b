"""What the ship rules (``workflow/rules/ship.smk``, ``gpu_check.smk``) and the target list ask of the config:
the deploy decision's inputs and each deploy job's ``--settings`` (the fields of its model in
``vecflow.ship.settings``), the bundle's summarizer, the files the report shows and the trained families the GPU
check reads.

Pure functions of the (schema-validated) config and of the files a checkpoint wrote: nothing here changes the
config. The thin input functions that ask the deploy_decision checkpoint stay in ``common.smk``.
"""

from __future__ import annotations

import os

from vecflow.core.config_checks import config_sources, elm_eval_families, elm_families, summary_families
from vecflow.core.io import read_json
from vecflow.core.settings import job_globals, settings_json
from vecflow.core.workflow import config_hash, model_input
from vecflow.hpo import workflow as hpo_workflow
from vecflow.lvm import workflow as lvm_workflow
from vecflow.summary.workflow import summarizer_base, summarizer_dirs, summarizer_kinds

TRAIN_RULES = {"seq2seq": "train_summarizer", "causal": "train_causal", "elm": "train_elm"}


def model_folder(config: dict, family: str) -> str:
    """Where a summarizer family's trained model is (the ELM's adapter; it also needs its frozen LM)."""
    return f"{config['results_dir']}/elm/adapter" if family == "elm" else summarizer_dirs(config)[family]


# ---------------------------------------------------------------------------------------------- deploy
def deploy_on(config: dict) -> bool:
    """The deploy jobs run: tracks deploy, lvm and summary."""
    tracks = config["tracks"]
    return bool(tracks["deploy"] and tracks["lvm"] and tracks["summary"])


def deploy_families(config: dict) -> list[str]:
    """The families the deploy decision compares: all trained ones for `best`, else the one named."""
    choice = config["deploy"]["summarizer"]
    return summary_families(config) if choice == "best" else [choice]


def decision_inputs(config: dict) -> dict[str, str]:
    """deploy_decision's inputs: the deployed run's 5CAT report and each compared family's scores."""
    R = config["results_dir"]
    inputs = {"fivecat": f"{R}/lvm/fivecat/{config['deploy']['lvm_run']}.json"}
    for family in deploy_families(config):
        inputs[f"scores__{family}"] = f"{R}/eval/{family}/scores.json"
    return inputs


def scores_args(input) -> str:
    """--scores FAMILY=PATH for each scores__FAMILY input."""
    return " ".join(f"--scores {key.split('__', 1)[1]}={path}" for key, path in input.items()
                    if key.startswith("scores__"))


def decide_settings(config: dict) -> str:
    """``vecflow deploy decide`` (DeploySettings): the deploy section."""
    return settings_json({**job_globals(config), **config["deploy"]})


def bundle_settings(config: dict) -> str:
    """``vecflow deploy bundle`` (DeployBundleSettings): the deploy section, plus the seq2seq training lengths for
    summarizer folders written before vecflow_summarizer.json existed (the server must truncate as training did)."""
    summarizer = config["summarizer"]
    return settings_json({**job_globals(config), **config["deploy"], "max_source_length": summarizer["max_source_length"],
                     "max_target_length": summarizer["max_target_length"]})


def chosen_family(decision_path: str) -> str:
    """The summarizer family a deploy decision chose (a decision written before the choice existed: seq2seq)."""
    from vecflow.ship.deploy import chosen_family as family_of

    return family_of(read_json(decision_path))


def bundle_summarizer_inputs(config: dict, family: str) -> dict[str, str]:
    """Only the chosen summarizer goes into the bundle: its model folder and scores (and for the ELM, its LM)."""
    inputs = {"summarizer": model_folder(config, family),
              "scores": f"{config['results_dir']}/eval/{family}/scores.json"}
    if family == "elm":
        inputs["lm"] = model_input(config, config["elm"]["lm"])
    return inputs


def bundle_summarizer_args(input) -> str:
    if "lm" in input.keys():
        return f"--elm-adapter {input.summarizer} --lm {os.path.dirname(input.lm)}"
    return f"--summarizer {input.summarizer}"


def bundle_targets(config: dict, decision_path: str) -> list[str]:
    """The bundle, when the decision says every gate passed (else nothing)."""
    passed = read_json(decision_path)["deploy"]
    return [f"{config['results_dir']}/deploy/{config['deploy']['name']}"] if passed else []


# ---------------------------------------------------------------------------------------------- the report
def report_inputs(config: dict) -> dict[str, str]:
    """Every metric/plot file the report shows, named KEY or KEY__NAME (becomes KEY:NAME)."""
    R, tracks = config["results_dir"], config["tracks"]
    files = {"config": f"{R}/config.resolved.yaml"}
    models = {config["encoder"]}
    if tracks["summary"]:
        files["ingest_stats"] = f"{R}/summary/dialogues/stats.json"
        files["filter_stats"] = f"{R}/summary/filtered/stats.json"
        for split, path in config["summary"]["splits"].items():
            files[f"data__{split}"] = path
        for family in summarizer_kinds(config):
            files[f"history__{family}"] = model_folder(config, family)
            files[f"scores__{family}"] = f"{R}/eval/{family}/scores.json"
            files[f"examples__{family}"] = f"{R}/eval/{family}/examples.json"
            models.add(summarizer_base(config, family))
        models.add(config["evaluation"]["bertscore"]["model"])
        # the baseline every family is read against (summary.smk)
        files["scores__retrieval"] = f"{R}/eval/retrieval/scores.json"
        files["examples__retrieval"] = f"{R}/eval/retrieval/examples.json"
    for family in elm_families(config):
        files[f"history__{family}"] = f"{R}/{family}/adapter"
        models.add(config["elm"]["lm"])
    for family in elm_eval_families(config):
        files[f"scores__{family}"] = f"{R}/eval/{family}/scores.json"
        files[f"examples__{family}"] = f"{R}/eval/{family}/examples.json"
    files.update(hpo_workflow.report_files(config))
    if tracks["lvm"]:
        files.update(lvm_workflow.report_files(config))
    if deploy_on(config):
        files["decision"] = f"{R}/deploy/{config['deploy']['name']}.decision.json"
    for name in sorted(m for m in models if m in config["models"]):
        files[f"manifest__{name}"] = f"resources/models/{name}/manifest.json"
    return files


def artifact_args(config: dict, input) -> str:
    """--artifact KEY[:NAME]=PATH for the report; a training folder contributes its history.jsonl (and, for a
    summarizer, its summary.json: training minutes, samples seen)."""
    args = []
    tracked = config["tracking"]["wandb"] or config["tracking"]["mlflow"]
    for key, path in input.items():
        if key.startswith("history__"):
            name = key.split("__", 1)[1]
            if name in ("seq2seq", "causal", "elm", "elm_rag"):
                args.append(f"--artifact train_summary:{name}={path}/summary.json")
            if tracked:
                args.append(f"--artifact tracking:{name}={path}/tracking.json")  # names the W&B / MLflow runs
            path = f"{path}/history.jsonl"
        args.append(f"--artifact {key.replace('__', ':')}={path}")
    return " ".join(args)


def report_settings(config: dict) -> str:
    """``vecflow report``: the report section and the config's hash."""
    return settings_json({**job_globals(config), **config["report"], "config_hash": config_hash(config)})


def all_targets(config: dict) -> list[str]:
    """rule all: the report and every file it shows (the bundle is added once the decision passes)."""
    return [f"{config['results_dir']}/report/index.html", *report_inputs(config).values()]


# ---------------------------------------------------------------------------------------------- gpu-check
def gpu_check_families(config: dict) -> dict[str, dict]:
    """Each trained family's job log, model folder and benchmark file: {family: {log, model, benchmark}}."""
    R, tracks = config["results_dir"], config["tracks"]
    families = {}
    trained = summarizer_kinds(config) if tracks["summary"] else []
    trained += ["elm"] if tracks["summary"] and tracks["elm"] else []
    for family in trained:
        rule_name = TRAIN_RULES[family]
        families[family] = {"log": f"{R}/logs/{rule_name}.log", "model": model_folder(config, family),
                            "benchmark": f"{R}/benchmarks/{rule_name}.tsv"}
    if tracks["lvm"]:
        families.update(lvm_workflow.gpu_check_families(config))
    return families


# ---------------------------------------------------------------------------------------------- resolved config
def config_source_args(config_files) -> str:
    """--source FILE for each config file merged into this run, in merge order and each once."""
    return " ".join(f"--source {path}" for path in config_sources(config_files))
