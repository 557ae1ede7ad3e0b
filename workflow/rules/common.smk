# Helpers only (no rules): paths, settings passed to the `vecflow` CLI, and the target list.
import hashlib
import json
import os
import sys
from pathlib import Path

from vecflow.core.settings import job_globals
from vecflow.lvm import workflow as lvm_workflow
from vecflow.summary import workflow as summary_workflow

# The rules call the `vecflow` CLI of the Python that runs Snakemake (the project's .venv); with
# --sdm conda the rule's environment provides it. Models are never fetched from a hub at run time.
os.environ.update(
    PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# glibc keeps freed tensor memory in per-thread arenas: a CPU training job with varying batch shapes grew from
# 4.6 GB to 13.5 GB and was OOM-killed; large blocks through mmap are returned to the system on free.
os.environ.setdefault("MALLOC_ARENA_MAX", "2")
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "262144")
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", "262144")

R = config["results_dir"]
LOGS = f"{R}/logs"
TRACKS = config["tracks"]
LVM_SPLITS = list(lvm_workflow.SPLITS)
try:  # lvm.runs plus the learning-curve and seed copies (vecflow/lvm/workflow.py); the config stays as written
    LVM_RUNS = list(lvm_workflow.runs(config))
except VecflowError as exc:
    raise WorkflowError(str(exc)) from None
HPO = config["hpo"]
DEPLOY = config["deploy"]


def job_settings(**values):
    """The given values as a JSON object, with the global seed/device/tracking added."""
    return json.dumps({**job_globals(config), **values}, sort_keys=True)


def settings(*path, **extra):
    """One config section (by key path) as a JSON object for a job (see job_settings)."""
    node = config
    for key in path:
        node = node[key]
    return job_settings(
        **{**node, **extra}
    )  # extra wins, e.g. a run's merged loss overrides


def launcher(wildcards, resources):
    """How a training job starts its CLI: `vecflow` for one GPU, else torchrun with one rank per GPU.

    The rank count is the job's granted gpu resource, not the config value: Snakemake caps it at
    `--resources gpu=...` and a profile's set-resources may change it, so a job never starts more ranks
    than it holds GPUs. torchrun --standalone picks a free rendezvous port (several jobs per node are fine).
    """
    ranks = int(resources.gpu)
    if ranks <= 1:
        return "vecflow"
    return f"torchrun --standalone --nproc-per-node {ranks} -m vecflow.cli"


def model_input(name):
    """The file that jobs using a model depend on: its manifest (so fetch_model runs first)."""
    if name in config["models"]:
        return f"resources/models/{name}/manifest.json"
    if not Path(name, "config.json").exists():
        raise WorkflowError(
            f"config: model '{name}' is neither a models: entry nor an HF folder with config.json"
        )
    return str(Path(name, "config.json"))


def parent_of(key):
    """A param giving the folder of a named input or output file (lint: never hard-code path prefixes)."""

    def folder(wildcards, input, output):
        files = dict(input.items())
        files.update(output.items())
        return os.path.dirname(files[key])

    return folder


def model_settings(wildcards):
    """A model's source spec only: seeds, devices and tracking never change fetched weights."""
    return json.dumps(
        dict(config["models"][wildcards.model], name=wildcards.model), sort_keys=True
    )


def summary_split_inputs(wildcards):
    """ingest_dialogues' inputs: the dialogue file of each summary.splits entry."""
    return dict(config["summary"]["splits"])


def synthesis_inputs(wildcards):
    """filter_summary's inputs: each split's synthesis records and embeddings (vecflow/summary/workflow.py)."""
    return summary_workflow.synthesis_inputs(config)


def hpo_storage():
    return HPO["storage"] or f"sqlite:///{R}/hpo/{HPO['study']}/study.db"


def elm_params_input(wildcards):
    """The ELM study's best_params.yaml, when the study runs (vecflow/summary/workflow.py)."""
    return summary_workflow.elm_params_input(config)


def elm_bertscore_settings():
    """What train-elm and the ELM study's workers get besides the elm section (vecflow/summary/workflow.py)."""
    return summary_workflow.elm_bertscore_settings(config)


def lvm_run_settings(wildcards):
    """train-lvm's settings for a run (the LVM study's worker sends them too): vecflow/lvm/workflow.py."""
    return lvm_workflow.train_settings(config, wildcards.run)


def config_sources():
    """The config files merged into this run, in merge order and each once (see config_checks.smk)."""
    from vecflow.core.config_checks import config_sources as relative_sources

    return relative_sources(CONFIG_FILES)


def config_hash():
    return hashlib.sha256(
        json.dumps(config, sort_keys=True, default=str).encode()
    ).hexdigest()


def report_inputs(wildcards):
    """Every metric/plot file the report shows, named KEY or KEY__NAME (becomes KEY:NAME)."""
    files = {"config": f"{R}/config.resolved.yaml"}
    models = {config["encoder"]}
    if TRACKS["summary"]:
        files["ingest_stats"] = f"{R}/summary/dialogues/stats.json"
        files["filter_stats"] = f"{R}/summary/filtered/stats.json"
        for split, path in config["summary"]["splits"].items():
            files[f"data__{split}"] = path
        for family in summary_workflow.summarizer_kinds(config):
            files[f"history__{family}"] = SUMMARIZER_DIRS[family]
            files[f"scores__{family}"] = f"{R}/eval/{family}/scores.json"
            files[f"examples__{family}"] = f"{R}/eval/{family}/examples.json"
            models.add(summary_workflow.summarizer_base(config, family))
        models.add(config["evaluation"]["bertscore"]["model"])
    if TRACKS["summary"]:  # the baseline every family is read against (summary.smk)
        files["scores__retrieval"] = f"{R}/eval/retrieval/scores.json"
        files["examples__retrieval"] = f"{R}/eval/retrieval/examples.json"
    from vecflow.core.config_checks import elm_eval_families, elm_families

    for family in elm_families(config):
        files[f"history__{family}"] = f"{R}/{family}/adapter"
        models.add(config["elm"]["lm"])
    for family in elm_eval_families(config):
        files[f"scores__{family}"] = f"{R}/eval/{family}/scores.json"
        files[f"examples__{family}"] = f"{R}/eval/{family}/examples.json"
    hpo_target_on = (
        TRACKS["lvm"] if HPO["target"] == "lvm" else TRACKS["summary"] and TRACKS["elm"]
    )
    if hpo_target_on and TRACKS["hpo"]:
        files["hpo_trials"] = f"{R}/hpo/{HPO['study']}/trials.csv"
        files["hpo_importance"] = f"{R}/hpo/{HPO['study']}/importance.png"
        files["hpo_params"] = f"{R}/hpo/{HPO['study']}/best_params.yaml"
        if HPO["target"] == "lvm" and lvm_workflow.pareto_on(config):
            files["hpo_pareto"] = f"{R}/hpo/{HPO['study']}/pareto.json"
            files["hpo_pareto_plot"] = f"{R}/hpo/{HPO['study']}/pareto.png"
    if TRACKS["lvm"]:
        files.update(lvm_workflow.report_files(config))
    if deploy_enabled():
        files["decision"] = f"{R}/deploy/{DEPLOY['name']}.decision.json"
    for name in sorted(m for m in models if m in config["models"]):
        files[f"manifest__{name}"] = f"resources/models/{name}/manifest.json"
    return files


def artifact_args(wildcards, input):
    """--artifact KEY[:NAME]=PATH for the report; a training folder contributes its history.jsonl (and, for a
    summarizer, its summary.json: training minutes, samples seen)."""
    args = []
    for key, path in input.items():
        if key.startswith("history__"):
            name = key.split("__", 1)[1]
            if name in SUMMARIZER_DIRS or name in ("elm", "elm_rag"):
                args.append(f"--artifact train_summary:{name}={path}/summary.json")
            if config["tracking"]["wandb"] or config["tracking"]["mlflow"]:
                tracking = f"{path}/tracking.json"  # names the W&B / MLflow runs
                args.append(f"--artifact tracking:{key.split('__', 1)[1]}={tracking}")
            path = f"{path}/history.jsonl"
        args.append(f"--artifact {key.replace('__', ':')}={path}")
    return " ".join(args)


def deploy_enabled():
    return TRACKS["deploy"] and TRACKS["lvm"] and TRACKS["summary"]


def summary_families():
    """The summarizer families trained in this run: summarizer.kind (seq2seq and/or causal), plus elm."""
    from vecflow.core.config_checks import summary_families as families

    return families(config)


# where each family's trained model is; the ELM also needs its frozen LM
FAMILY_MODEL = {
    "seq2seq": f"{R}/summarizer/model",
    "causal": f"{R}/causal/model",
    "elm": f"{R}/elm/adapter",
}


def deploy_families():
    """The families the deploy decision compares: all trained ones for `best`, else the one named."""
    if DEPLOY["summarizer"] == "best":
        return summary_families()
    return [DEPLOY["summarizer"]]


def deploy_decision_inputs(wildcards):
    inputs = {"fivecat": f"{R}/lvm/fivecat/{DEPLOY['lvm_run']}.json"}
    for family in deploy_families():
        inputs[f"scores__{family}"] = f"{R}/eval/{family}/scores.json"
    return inputs


def deploy_scores_args(wildcards, input):
    return " ".join(
        f"--scores {key.split('__', 1)[1]}={path}"
        for key, path in input.items()
        if key.startswith("scores__")
    )


def deploy_choice(wildcards):
    """The summarizer family the deploy_decision checkpoint chose (read from its decision JSON)."""
    decision = checkpoints.deploy_decision.get(name=wildcards.name).output.decision
    with open(decision) as fh:
        return (json.load(fh).get("summarizer") or {}).get("family", "seq2seq")


def deploy_summarizer_inputs(wildcards):
    """Only the chosen summarizer goes into the bundle: its model folder (and for the ELM, its LM)."""
    family = deploy_choice(wildcards)
    inputs = {
        "summarizer": FAMILY_MODEL[family],
        "scores": f"{R}/eval/{family}/scores.json",
    }
    if family == "elm":
        inputs["lm"] = model_input(config["elm"]["lm"])
    return inputs


def deploy_summarizer_args(wildcards, input):
    if "lm" in input.keys():
        return f"--elm-adapter {input.summarizer} --lm {os.path.dirname(input.lm)}"
    return f"--summarizer {input.summarizer}"


def deploy_bundle_settings(wildcards):
    """The deploy section, plus the seq2seq training lengths for summarizer folders written before
    vecflow_summarizer.json existed (the server must truncate as training did)."""
    spec = {
        "max_source_length": config["summarizer"]["max_source_length"],
        "max_target_length": config["summarizer"]["max_target_length"],
    }
    return settings("deploy", summarizer_spec=spec)


def deploy_bundle_if_passed(wildcards):
    """The bundle is a target only when the deploy_decision checkpoint says every gate passed."""
    if not deploy_enabled():
        return []
    decision = checkpoints.deploy_decision.get(name=DEPLOY["name"]).output.decision
    with open(decision) as fh:
        passed = json.load(fh)["deploy"]
    return [f"{R}/deploy/{DEPLOY['name']}"] if passed else []


def all_targets(wildcards):
    targets = [f"{R}/report/index.html"]
    targets += list(report_inputs(wildcards).values())
    return targets


# ---- data sets (datasets:, rule fetch_data in data.smk; vecflow/data/fetch.py) ----
DATASETS = config["datasets"]
DATA_DIR = config["data_dir"]


def resolve_data_references():
    """data:<name>/<key> config values become the paths fetch_data reports (one line on a bad reference);
    returns the data sets the config uses, {name: entry}: those fetch_data fetches or checks.
    """
    from vecflow.data.fetch import resolve_references

    try:
        used = resolve_references(config)
    except VecflowError as exc:
        raise WorkflowError(str(exc)) from None
    return {name: DATASETS[name] for name in sorted(set(used.values()))}


def data_manifests(datasets, *paths):
    """The fetch_data manifests of the used data sets these paths belong to (ancient: the files themselves
    carry the mtime, the manifest only orders the check before the job that reads them).
    """
    from vecflow.data.fetch import manifests_for

    return [ancient(m) for m in manifests_for(paths, datasets, DATA_DIR)]


def fetch_data_outputs(datasets):
    """Each used data set's manifest, plus the files a hub data set writes."""
    from vecflow.data.fetch import hub_outputs, manifest_path

    manifests = [manifest_path(name, DATA_DIR) for name in datasets]
    return manifests + hub_outputs(datasets, DATA_DIR)


def fetch_data_inputs(datasets):
    """A local data set's own files: fetch_data checks them again when they change."""
    from vecflow.data.fetch import local_inputs

    return local_inputs(datasets)


# ---- gpu-check (make gpu-check, config/gpu-check.yaml; vecflow/core/gpu_check.py) ----
def gpu_check_families():
    """Each trained family's job log, model folder and benchmark file: {family: {log, model, benchmark}}."""
    families = {}
    if TRACKS["summary"]:
        for family in summary_workflow.summarizer_kinds(config):
            rule_name = "train_summarizer" if family == "seq2seq" else "train_causal"
            families[family] = {
                "log": f"{LOGS}/{rule_name}.log",
                "model": SUMMARIZER_DIRS[family],
                "benchmark": f"{R}/benchmarks/{rule_name}.tsv",
            }
    if TRACKS["summary"] and TRACKS["elm"]:
        families["elm"] = {
            "log": f"{LOGS}/train_elm.log",
            "model": FAMILY_MODEL["elm"],
            "benchmark": f"{R}/benchmarks/train_elm.tsv",
        }
    if TRACKS["lvm"]:
        families.update(lvm_workflow.gpu_check_families(config))
    return families


def gpu_check_inputs(wildcards):
    return {name: paths["model"] for name, paths in gpu_check_families().items()}
