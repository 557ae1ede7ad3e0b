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
