# Data: named data sets (fetch), dialogues (ingest, synthesis, summary filter) and articles (chunks,
# article-based splits). Package: vecflow/data/.

# data:<name>/<key> in summary.splits / lvm.articles become the paths fetch_data reports (vecflow/data/workflow.py)
try:
    DATA_USED = data_workflow.used_datasets(config)
except VecflowError as exc:
    raise WorkflowError(str(exc)) from None


if DATA_USED:

    # one job for the data sets the config uses (data:<name>/<key>): hub files downloaded (pinned commit, sha256 in the manifest), local
    # files format-checked in place and never copied; nothing is written unless every file passes
    rule fetch_data:
        input:
            data_workflow.fetch_inputs(DATA_USED),
        output:
            data_workflow.fetch_outputs(config, DATA_USED),
        log:
            f"{LOGS}/fetch_data.log",
        conda:
            "../../envs/vecflow.yaml"
        resources:
            mem_mb=4000,
            runtime=60,
        params:
            settings=json.dumps(DATA_USED, sort_keys=True),
            data_dir=lambda w, output: os.path.dirname(os.path.dirname(output[0])),  # <dir>/<name>/manifest.json
        shell:
            "env -u HF_HUB_OFFLINE -u TRANSFORMERS_OFFLINE vecflow fetch-data --settings {params.settings:q} "
            "--data-dir {params.data_dir:q} > {log} 2>&1"


rule ingest_dialogues:
    input:
        unpack(summary_split_inputs),
        data=ancient(
            data_workflow.manifests(
                config, DATA_USED, *config["summary"]["splits"].values()
            )
        ),
    output:
        splits=expand(
            "{R}/summary/dialogues/{split}.jsonl",
            R=R,
            split=summary_workflow.dialogue_splits(config),
        ),
        stats=report(
            f"{R}/summary/dialogues/stats.json",
            caption="../report/ingest.rst",
            category="1. Data",
        ),
    log:
        f"{LOGS}/ingest_dialogues.log",
    priority: PRIORITY["ingest_dialogues"]
    conda:
        "../../envs/vecflow.yaml"
    params:
        splits=lambda w, input: " ".join(
            f"--split {k}={input[k]}" for k in config["summary"]["splits"]
        ),
        settings=lambda w: summary_workflow.dialogue_data_settings(config),
        out_dir=parent_of("stats"),
    shell:
        "vecflow ingest-dialogues {params.splits} --settings {params.settings:q} "
        "--out-dir {params.out_dir} --stats {output.stats} > {log} 2>&1"


# one job for every split: the sentence encoder is loaded once (each split is encoded on its own)
rule synthesize:
    input:
        dialogues=expand(
            "{R}/summary/dialogues/{split}.jsonl", R=R, split=SYNTHESIS_SPLITS
        ),
        encoder=model_input(config["encoder"]),
    output:
        jsonl=expand(
            "{R}/summary/synthesis/{split}_synthesis.jsonl",
            R=R,
            split=SYNTHESIS_SPLITS,
        ),
        embeddings=expand(
            "{R}/summary/synthesis/{split}_embeddings.safetensors",
            R=R,
            split=SYNTHESIS_SPLITS,
        ),
    log:
        f"{LOGS}/synthesize.log",
    benchmark:
        f"{R}/benchmarks/synthesize.tsv"
    priority: PRIORITY["synthesize"]
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["eval"]
    resources:
        gpu=GPU,
        mem_mb=4000,
        runtime=60,
    params:
        splits=lambda w, input: " ".join(
            f"--split {split}={path}"
            for split, path in zip(SYNTHESIS_SPLITS, input.dialogues)
        ),
        settings=lambda w: summary_workflow.dialogue_data_settings(config),
        encoder=parent_of("encoder"),
        out_dir=lambda w, output: os.path.dirname(output.jsonl[0]),
    shell:
        "vecflow synthesize {params.splits} --encoder {params.encoder} "
        "--settings {params.settings:q} --out-dir {params.out_dir} > {log} 2>&1"


rule filter_summary:
    input:
        unpack(synthesis_inputs),
    output:
        expand(
            "{R}/summary/filtered/{split}_{kind}",
            R=R,
            split=summary_workflow.synthesis_splits(config),
            kind=["synthesis.jsonl", "embeddings.safetensors"],
        ),
        stats=report(
            f"{R}/summary/filtered/stats.json",
            caption="../report/filter.rst",
            category="1. Data",
        ),
    log:
        f"{LOGS}/filter_summary.log",
    priority: PRIORITY["filter_summary"]
    conda:
        "../../envs/vecflow.yaml"
    params:
        in_dir=parent_of("train_synthesis"),
        out_dir=parent_of("stats"),
        settings=lambda w: summary_workflow.dialogue_data_settings(config),
        splits=",".join(summary_workflow.synthesis_splits(config)),
    shell:
        "vecflow filter-summary --in-dir {params.in_dir} --splits {params.splits} "
        "--settings {params.settings:q} --out-dir {params.out_dir} --stats {output.stats} > {log} 2>&1"


rule chunk_articles:
    input:
        articles=lambda w: (
            []
            if config["lvm"]["articles"]["format"] == "pydoc"
            else config["lvm"]["articles"]["input"]
        ),
        ood_articles=lambda w: (
            [config["lvm"]["articles"]["ood_input"]]
            if config["lvm"]["articles"]["ood_input"]
            else []
        ),
        data=ancient(
            data_workflow.manifests(
                config,
                DATA_USED,
                config["lvm"]["articles"]["input"],
                config["lvm"]["articles"]["ood_input"],
            )
        ),
    output:
        chunks=f"{R}/lvm/chunks.jsonl",
    log:
        f"{LOGS}/chunk_articles.log",
    benchmark:
        f"{R}/benchmarks/chunk_articles.tsv"
    priority: PRIORITY["chunk_articles"]
    conda:
        "../../envs/vecflow.yaml"
    params:
        source=config["lvm"]["articles"]["input"],
        format=config["lvm"]["articles"]["format"],
        ood=lambda w, input: (
            f"--ood-input {input.ood_articles}" if input.ood_articles else ""
        ),
        settings=lambda w: data_workflow.chunk_settings(config),
    shell:
        "vecflow chunk-articles --input {params.source:q} --format {params.format} {params.ood} "
        "--settings {params.settings:q} --out {output.chunks} > {log} 2>&1"


rule split_articles:
    input:
        chunks=f"{R}/lvm/chunks.jsonl",
    output:
        splits=expand("{R}/lvm/splits/{split}.jsonl", R=R, split=LVM_SPLITS),
        ids=f"{R}/lvm/splits/ids.json",
        leakage=report(
            f"{R}/lvm/splits/leakage.json",
            caption="../report/leakage.rst",
            category="1. Data",
        ),
    log:
        f"{LOGS}/split_articles.log",
    priority: PRIORITY["split_articles"]
    conda:
        "../../envs/vecflow.yaml"
    params:
        settings=lambda w: data_workflow.split_settings(config),
    # the folder is taken in the shell, not as a param: params are part of the between-workflow cache key of
    # every job downstream (embed_chunks), which must not depend on results_dir
    shell:
        "vecflow split-articles --chunks {input.chunks} --settings {params.settings:q} "
        '--out-dir "$(dirname {output.ids:q})" > {log} 2>&1'
