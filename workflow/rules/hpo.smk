rule hpo_worker:
    input:
        data=rules.filter_summary.output,
        stats=rules.filter_summary.output.stats,
        lm=model_input(config["elm"]["lm"]),
        encoder=model_input(config["encoder"]),
        bertscore=model_input(config["evaluation"]["bertscore"]["model"]),
    output:
        worker=f"{R}/hpo/{{study}}/worker_{{worker}}.json",
    log:
        f"{LOGS}/hpo/{{study}}.worker_{{worker}}.log",
    conda:
        "../../envs/vecflow.yaml"
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=480,
    params:
        storage=hpo_storage(),
        data_dir=parent_of("stats"),
        lm=parent_of("lm"),
        encoder=parent_of("encoder"),
        bertscore=parent_of("bertscore"),
        settings=lambda w: json.dumps(
            {
                "seed": config["seed"],
                "device": config["device"],
                "hpo": HPO,
                "elm": dict(config["elm"], **elm_bertscore_settings()),
            },
            sort_keys=True,
        ),
    shell:
        "vecflow hpo-worker --study {wildcards.study} --storage {params.storage} "
        "--worker {wildcards.worker} --data-dir {params.data_dir} --lm {params.lm} "
        "--encoder {params.encoder} --bertscore-model {params.bertscore} "
        "--settings {params.settings:q} --out {output.worker} > {log} 2>&1"


rule hpo_best:
    input:
        workers=expand(
            "{R}/hpo/{{study}}/worker_{worker}.json", R=R, worker=range(HPO["workers"])
        ),
    output:
        params=f"{R}/hpo/{{study}}/best_params.yaml",
        trials=report(
            f"{R}/hpo/{{study}}/trials.csv",
            caption="../report/hpo_trials.rst",
            category="4. Summaries",
            subcategory="Optuna",
        ),
        plot=report(
            f"{R}/hpo/{{study}}/importance.png",
            caption="../report/hpo_importance.rst",
            category="4. Summaries",
            subcategory="Optuna",
        ),
    log:
        f"{LOGS}/hpo/{{study}}.best.log",
    conda:
        "../../envs/vecflow.yaml"
    params:
        storage=hpo_storage(),
        workers=lambda w, input: ",".join(input.workers),
        settings=lambda w: json.dumps(
            {"seed": config["seed"], "hpo": HPO, "elm": config["elm"]}, sort_keys=True
        ),
    shell:
        "vecflow hpo-best --study {wildcards.study} --storage {params.storage} "
        "--workers {params.workers} --settings {params.settings:q} --out-params {output.params} "
        "--out-trials {output.trials} --out-plot {output.plot} > {log} 2>&1"
