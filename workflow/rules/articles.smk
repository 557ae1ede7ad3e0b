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
    output:
        chunks=f"{R}/lvm/chunks.jsonl",
    log:
        f"{LOGS}/chunk_articles.log",
    conda:
        "../../envs/vecflow.yaml"
    params:
        source=config["lvm"]["articles"]["input"],
        format=config["lvm"]["articles"]["format"],
        ood=lambda w, input: (
            f"--ood-input {input.ood_articles}" if input.ood_articles else ""
        ),
        settings=lambda w: settings(
            "lvm", "articles", chunking=config["lvm"]["chunking"]
        ),
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
    conda:
        "../../envs/vecflow.yaml"
    params:
        out_dir=parent_of("ids"),
        settings=lambda w: settings("lvm", "split"),
    shell:
        "vecflow split-articles --chunks {input.chunks} --settings {params.settings:q} "
        "--out-dir {params.out_dir} > {log} 2>&1"
