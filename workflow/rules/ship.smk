# Ship: the deploy decision and bundle, the resolved config and the report. Package: vecflow/ship/.


# Deploy: the decision picks the summarizer (deploy.summarizer: a family, or `best` by
# deploy.summarizer_metric) and applies the gates; the bundle holds only the chosen summarizer.
checkpoint deploy_decision:
    input:
        unpack(lambda w: ship_workflow.decision_inputs(config)),
    output:
        decision=f"{R}/deploy/{{name}}.decision.json",
    log:
        f"{LOGS}/deploy/{{name}}.decision.log",
    conda:
        "../../envs/vecflow.yaml"
    params:
        scores=lambda w, input: ship_workflow.scores_args(input),
        settings=lambda w: ship_workflow.decide_settings(config),
    shell:
        "vecflow deploy decide --settings {params.settings:q} --fivecat {input.fivecat} "
        "{params.scores} --out {output.decision} > {log} 2>&1"


rule deploy_bundle:
    input:
        unpack(deploy_summarizer_inputs),
        decision=f"{R}/deploy/{{name}}.decision.json",
        lvm=f"{R}/lvm/models/{config['deploy']['lvm_run']}",
        encoder=model_input(config["encoder"]),
        bank_vectors=f"{R}/lvm/embeddings/train.safetensors",
        bank_index=f"{R}/lvm/embeddings/train.index.jsonl",
        fivecat=f"{R}/lvm/fivecat/{config['deploy']['lvm_run']}.json",
    output:
        bundle=directory(f"{R}/deploy/{{name}}"),
    log:
        f"{LOGS}/deploy/{{name}}.bundle.log",
    benchmark:
        f"{R}/benchmarks/deploy_bundle/{{name}}.tsv"
    conda:
        "../../envs/vecflow.yaml"
    params:
        encoder=parent_of("encoder"),
        summarizer=lambda w, input: ship_workflow.bundle_summarizer_args(input),
        settings=lambda w: ship_workflow.bundle_settings(config),
    shell:
        "vecflow deploy bundle --decision {input.decision} --settings {params.settings:q} "
        "--lvm {input.lvm} --encoder {params.encoder} --bank-embeddings {input.bank_vectors} "
        "--bank-index {input.bank_index} {params.summarizer} "
        "--metrics {input.fivecat} --metrics {input.scores} --out {output.bundle} > {log} 2>&1"


rule resolved_config:
    output:
        f"{R}/config.resolved.yaml",
    log:
        f"{LOGS}/resolved_config.log",
    conda:
        "../../envs/vecflow.yaml"
    params:
        config=lambda w: json.dumps(config, sort_keys=True, default=str),
        sources=lambda w: ship_workflow.config_source_args(CONFIG_FILES),
    shell:
        "vecflow resolve-config --config {params.config:q} {params.sources} --out {output} > {log} 2>&1"


rule report:
    input:
        unpack(lambda w: ship_workflow.report_inputs(config)),
    output:
        html=report(
            f"{R}/report/index.html",
            caption="../report/index.rst",
            category="5. Report",
        ),
    log:
        f"{LOGS}/report.log",
    conda:
        "../../envs/vecflow.yaml"
    params:
        artifacts=lambda w, input: ship_workflow.artifact_args(config, input),
        # read when the job runs (after every job upstream), not declared as inputs: a missing benchmark
        # file would re-run a finished training job just to write it
        benchmarks=f"{R}/benchmarks",
        # drawn plots kept between report jobs, named by the hash of their input files and plotting code:
        # a regeneration redraws only the plots whose inputs changed
        plot_cache=f"{R}/cache/report-plots",
        settings=lambda w: ship_workflow.report_settings(config),
    shell:
        "vecflow report {params.artifacts} --benchmarks {params.benchmarks} --settings {params.settings:q} "
        "--plot-cache {params.plot_cache} --out {output.html} > {log} 2>&1"
