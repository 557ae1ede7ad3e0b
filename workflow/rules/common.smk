# Helpers only (no rules): thin input functions; what the rules ask of the config is in the package
# (vecflow/<track>/workflow.py: pure functions of config).
import json
import os
import sys

from vecflow.core import workflow as core_workflow
from vecflow.core.workflow import launcher, parent_of
from vecflow.data import workflow as data_workflow
from vecflow.hpo import workflow as hpo_workflow
from vecflow.lvm import workflow as lvm_workflow
from vecflow.ship import workflow as ship_workflow
from vecflow.summary import workflow as summary_workflow

# The rules call the `vecflow` CLI of the Python that runs Snakemake (the project's .venv); with
# --sdm conda the rule's environment provides it. Models are never fetched from a hub at run time.
os.environ.update(
    PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# glibc keeps freed tensor memory in per-thread arenas: a CPU training job with varying batch shapes grew until
# it was OOM-killed (BENCHMARKS.md, design notes); large blocks through mmap are returned to the system on free.
# 4 MiB, not 256 KiB: mapping every activation of a step cost a CPU training job a third of its time in page
# faults (train_causal, 1 thread: 106 s, 31 s of it system time, against 83 s and 10 s; BENCHMARKS.md).
os.environ.setdefault("MALLOC_ARENA_MAX", "2")
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "4194304")
os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", "4194304")

R = config["results_dir"]
# the gpu resource of the jobs that can use a GPU: 1, or 0 where they run on CPU (device: cpu, or auto on a
# machine that shows no GPU), so that --resources gpu=1 serialises GPU jobs only where there is a GPU
GPU = core_workflow.gpu_request(config)
# Which ready job starts first when cores (or the GPU) are short: roughly the seconds of work left on the job's
# longest path to the report (the demo on 2 CPU cores, BENCHMARKS.md), so that the LM families' chains start early
# and the LVM chain ends beside the scoring job instead of after it.
PRIORITY = {
    "fetch_model": 100,
    "link_model": 100,
    "ingest_dialogues": 100,
    "chunk_articles": 100,
    "split_articles": 100,
    "synthesize": 70,
    "filter_summary": 70,
    "train_causal": 65,
    "hpo_worker": 60,
    "hpo_best": 55,
    "train_elm": 50,
    "embed_chunks": 45,
    "predict_elm": 40,
    "predict_summarizer": 40,
    "predict_retrieval": 40,
    "train_summarizer": 35,
    "make_windows": 25,
    "diagnose_direction": 25,
    "score_summaries": 20,
    "train_lvm": 18,
    "fivecat": 12,
}
LOGS = f"{R}/logs"
LVM_SPLITS = list(lvm_workflow.SPLITS)
# the splits that synthesize writes: those filter_summary reads when the synthesis is the pipeline's own
SYNTHESIS_SPLITS = summary_workflow.synthesis_splits(config)
try:  # lvm.runs plus the learning-curve and seed copies (vecflow/lvm/workflow.py); the config stays as written
    LVM_RUNS = list(lvm_workflow.runs(config))
except VecflowError as exc:
    raise WorkflowError(str(exc)) from None


def model_input(name):
    """The file that jobs using a model depend on: its manifest (so fetch_model runs first)."""
    try:
        return core_workflow.model_input(config, name)
    except VecflowError as exc:
        raise WorkflowError(str(exc)) from None


def summary_split_inputs(wildcards):
    """ingest_dialogues' inputs: the dialogue file of each summary.splits entry."""
    return dict(config["summary"]["splits"])


def synthesis_inputs(wildcards):
    """filter_summary's inputs: each split's synthesis records and embeddings (vecflow/summary/workflow.py)."""
    return summary_workflow.synthesis_inputs(config)


def elm_params_input(wildcards):
    """The ELM study's best_params.yaml, when the study runs (vecflow/summary/workflow.py)."""
    return summary_workflow.elm_params_input(config)


def deploy_summarizer_inputs(wildcards):
    """Only the summarizer the deploy_decision checkpoint chose goes into the bundle (vecflow/ship/workflow.py)."""
    decision = checkpoints.deploy_decision.get(name=wildcards.name).output.decision
    return ship_workflow.bundle_summarizer_inputs(
        config, ship_workflow.chosen_family(decision)
    )


def deploy_bundle_if_passed(wildcards):
    """The bundle is a target only when the deploy_decision checkpoint says every gate passed."""
    if not ship_workflow.deploy_on(config):
        return []
    decision = checkpoints.deploy_decision.get(name=config["deploy"]["name"])
    return ship_workflow.bundle_targets(config, decision.output.decision)
