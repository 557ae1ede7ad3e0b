# vecflow: data -> train -> evaluate -> deploy for next-vector (LVM), seq2seq summarizer and ELM models.
# Wiring only: every rule hands its work to one `vecflow <command>` call (scripts/vecflow/).
from snakemake.utils import min_version

min_version("9.0")


# configfile: config/config.yaml, validated against workflow/schemas/config.schema.yaml (see config_checks.smk)
include: "workflow/rules/config_checks.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/summary.smk"
include: "workflow/rules/hpo.smk"
include: "workflow/rules/lvm.smk"
include: "workflow/rules/ship.smk"
include: "workflow/rules/gpu_check.smk"


report: "workflow/report/workflow.rst"


wildcard_constraints:
    split=r"[A-Za-z0-9_-]+",
    run=r"[A-Za-z0-9_-]+",
    model=r"[A-Za-z0-9_.-]+",
    name=r"[A-Za-z0-9_-]+",
    study=r"[A-Za-z0-9_.-]+",
    worker=r"\d+",
    summarizer=r"seq2seq|causal|elm|elm_rag|elm_rerank|elm_rag_rerank|retrieval",
    elm=r"elm|elm_rag",
    family=r"seq2seq|causal",


rule all:
    default_target: True
    input:
        lambda w: ship_workflow.all_targets(config),
        deploy_bundle_if_passed,
