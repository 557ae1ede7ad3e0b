rule train_elm:
    input:
        data=rules.filter_summary.output,
        stats=rules.filter_summary.output.stats,
        lm=model_input(config["elm"]["lm"]),
        encoder=model_input(config["encoder"]),
        params=elm_params_input,
        bertscore=model_input(config["evaluation"]["bertscore"]["model"]),
    output:
        adapter=directory(f"{R}/elm/adapter"),
    log:
        f"{LOGS}/train_elm.log",
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["train"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        data_dir=parent_of("stats"),
        lm=parent_of("lm"),
        encoder=parent_of("encoder"),
        best=lambda w, input: f"--params {input.params}" if input.params else "",
        bertscore=parent_of("bertscore"),
        settings=lambda w: settings("elm", **elm_bertscore_settings()),
    shell:
        "vecflow train-elm --data-dir {params.data_dir} --lm {params.lm} --encoder {params.encoder} "
        "--settings {params.settings:q} {params.best} --bertscore-model {params.bertscore} "
        "--out {output.adapter} > {log} 2>&1"


rule predict_elm:
    input:
        adapter=f"{R}/elm/adapter",
        data=rules.filter_summary.output,
        stats=rules.filter_summary.output.stats,
        lm=model_input(config["elm"]["lm"]),
    output:
        predictions=f"{R}/eval/elm/predictions.jsonl",
    log:
        f"{LOGS}/predict_elm.log",
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["eval"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        data_dir=parent_of("stats"),
        lm=parent_of("lm"),
        settings=lambda w: settings("elm"),
    shell:
        "vecflow predict-elm --adapter {input.adapter} --lm {params.lm} --data-dir {params.data_dir} "
        "--split val --settings {params.settings:q} --out {output.predictions} > {log} 2>&1"
