# HPO: Optuna workers sharing one study (ELM adapter or an LVM run), then the best trial. Package: vecflow/hpo/
# (each job's --settings: vecflow/hpo/workflow.py).

# hpo.target picks what the workers tune: the ELM adapter (default) or an LVM run (lvm.runs[hpo.lvm_run]).
if config["hpo"]["target"] == "lvm":

    rule hpo_lvm_worker:
        input:
            gate=f"{R}/lvm/diagnostics/direction.json",
            train=f"{R}/lvm/windows/train.safetensors",
            train_vectors=f"{R}/lvm/embeddings/train.safetensors",
            train_index=f"{R}/lvm/embeddings/train.index.jsonl",
            val=f"{R}/lvm/windows/val.safetensors",
            val_vectors=f"{R}/lvm/embeddings/val.safetensors",
            val_index=f"{R}/lvm/embeddings/val.index.jsonl",
        output:
            worker=f"{R}/hpo/{{study}}/worker_{{worker}}.json",
        log:
            f"{LOGS}/hpo/{{study}}.worker_{{worker}}.log",
        benchmark:
            f"{R}/benchmarks/hpo_lvm_worker/{{study}}.worker_{{worker}}.tsv"
        conda:
            "../../envs/vecflow.yaml"
        threads: config["threads"]["train"]
        resources:
            gpu=GPU,
            mem_mb=8000,
            runtime=480,
        params:
            storage=hpo_workflow.storage(config),
            settings=lambda w: hpo_workflow.lvm_worker_settings(config),
        shell:
            "vecflow hpo-worker --study {wildcards.study} --storage {params.storage} "
            "--worker {wildcards.worker} --train-windows {input.train} "
            "--train-embeddings {input.train_vectors} --train-index {input.train_index} --val-windows {input.val} "
            "--val-embeddings {input.val_vectors} --val-index {input.val_index} "
            "--settings {params.settings:q} --out {output.worker} > {log} 2>&1"

else:

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
        benchmark:
            f"{R}/benchmarks/hpo_worker/{{study}}.worker_{{worker}}.tsv"
        priority: PRIORITY["hpo_worker"]
        conda:
            "../../envs/vecflow.yaml"
        threads: config["threads"]["train"]
        resources:
            gpu=GPU,
            mem_mb=8000,
            runtime=480,
        params:
            storage=hpo_workflow.storage(config),
            data_dir=parent_of("stats"),
            lm=parent_of("lm"),
            encoder=parent_of("encoder"),
            bertscore=parent_of("bertscore"),
            settings=lambda w: hpo_workflow.elm_worker_settings(config),
        shell:
            "vecflow hpo-worker --study {wildcards.study} --storage {params.storage} "
            "--worker {wildcards.worker} --data-dir {params.data_dir} --lm {params.lm} "
            "--encoder {params.encoder} --bertscore-model {params.bertscore} "
            "--settings {params.settings:q} --out {output.worker} > {log} 2>&1"


rule hpo_best:
    input:
        workers=expand(
            "{R}/hpo/{{study}}/worker_{worker}.json",
            R=R,
            worker=range(config["hpo"]["workers"]),
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
    priority: PRIORITY["hpo_best"]
    conda:
        "../../envs/vecflow.yaml"
    params:
        storage=hpo_workflow.storage(config),
        workers=lambda w, input: ",".join(input.workers),
        settings=lambda w: hpo_workflow.best_settings(config),
    shell:
        "vecflow hpo-best --study {wildcards.study} --storage {params.storage} "
        "--workers {params.workers} --settings {params.settings:q} --out-params {output.params} "
        "--out-trials {output.trials} --out-plot {output.plot} > {log} 2>&1"


if config["hpo"]["target"] == "lvm":

    rule hpo_pareto:
        input:
            best=f"{R}/hpo/{{study}}/best_params.yaml",
        output:
            json=f"{R}/hpo/{{study}}/pareto.json",
            plot=report(
                f"{R}/hpo/{{study}}/pareto.png",
                caption="../report/hpo_pareto.rst",
                category="3. Next-vector models",
                subcategory="Optuna",
            ),
        log:
            f"{LOGS}/hpo/{{study}}.pareto.log",
        conda:
            "../../envs/vecflow.yaml"
        params:
            storage=hpo_workflow.storage(config),
        shell:
            "vecflow hpo-pareto --study {wildcards.study} --storage {params.storage} "
            "--best {input.best} --out-json {output.json} --out-plot {output.plot} > {log} 2>&1"
