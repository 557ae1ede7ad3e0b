rule resolved_config:
    output:
        f"{R}/config.resolved.yaml",
    log:
        f"{LOGS}/resolved_config.log",
    conda:
        "../../envs/vecflow.yaml"
    params:
        config=lambda w: json.dumps(config, sort_keys=True, default=str),
        sources=lambda w: " ".join(f"--source {f}" for f in config_sources()),
    shell:
        "vecflow resolve-config --config {params.config:q} {params.sources} --out {output} > {log} 2>&1"


rule report:
    input:
        unpack(report_inputs),
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
        artifacts=artifact_args,
        settings=lambda w: settings("report", config_hash=config_hash()),
    shell:
        "vecflow report {params.artifacts} --settings {params.settings:q} --out {output.html} > {log} 2>&1"
