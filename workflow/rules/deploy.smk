checkpoint deploy_decision:
    input:
        fivecat=f"{R}/lvm/fivecat/{DEPLOY['lvm_run']}.json",
        scores=f"{R}/eval/{DEPLOY['summarizer']}/scores.json",
    output:
        decision=f"{R}/deploy/{{name}}.decision.json",
    log:
        f"{LOGS}/deploy/{{name}}.decision.log",
    conda:
        "../../envs/vecflow.yaml"
    params:
        settings=lambda w: settings("deploy"),
    shell:
        "vecflow deploy decide --settings {params.settings:q} --fivecat {input.fivecat} "
        "--scores {input.scores} --out {output.decision} > {log} 2>&1"


rule deploy_bundle:
    input:
        decision=f"{R}/deploy/{{name}}.decision.json",
        lvm=f"{R}/lvm/models/{DEPLOY['lvm_run']}",
        encoder=model_input(config["encoder"]),
        bank_vectors=f"{R}/lvm/embeddings/train.safetensors",
        bank_index=f"{R}/lvm/embeddings/train.index.jsonl",
        summarizer=f"{R}/summarizer/model",
        fivecat=f"{R}/lvm/fivecat/{DEPLOY['lvm_run']}.json",
        scores=f"{R}/eval/{DEPLOY['summarizer']}/scores.json",
        elm=deploy_elm_inputs,
    output:
        bundle=directory(f"{R}/deploy/{{name}}"),
    log:
        f"{LOGS}/deploy/{{name}}.bundle.log",
    conda:
        "../../envs/vecflow.yaml"
    params:
        encoder=parent_of("encoder"),
        elm=deploy_elm_args,
        settings=lambda w: settings("deploy"),
    shell:
        "vecflow deploy bundle --decision {input.decision} --settings {params.settings:q} "
        "--lvm {input.lvm} --encoder {params.encoder} --bank-embeddings {input.bank_vectors} "
        "--bank-index {input.bank_index} --summarizer {input.summarizer} {params.elm} "
        "--metrics {input.fivecat} --metrics {input.scores} --out {output.bundle} > {log} 2>&1"
