rule train_summarizer:
    input:
        train=f"{R}/summary/dialogues/train.jsonl",
        selection=selection_dialogues(),
        base=model_input(config["summarizer"]["base"]),
    output:
        model=directory(f"{R}/summarizer/model"),
    log:
        f"{LOGS}/train_summarizer.log",
    benchmark:
        f"{R}/benchmarks/train_summarizer.tsv"
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["train"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        base=parent_of("base"),
        settings=lambda w: summarizer_settings("seq2seq"),
    shell:
        "vecflow train-summarizer --train {input.train} --val {input.selection} --base {params.base} "
        "--settings {params.settings:q} --out {output.model} > {log} 2>&1"


rule train_causal:
    input:
        train=f"{R}/summary/dialogues/train.jsonl",
        selection=selection_dialogues(),
        base=lambda w: model_input(summarizer_base("causal")),  # resolved only when the family is trained
    output:
        model=directory(f"{R}/causal/model"),
    log:
        f"{LOGS}/train_causal.log",
    benchmark:
        f"{R}/benchmarks/train_causal.tsv"
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["train"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        base=parent_of("base"),
        settings=lambda w: summarizer_settings("causal"),
    shell:
        "vecflow train-causal --train {input.train} --val {input.selection} --base {params.base} "
        "--settings {params.settings:q} --out {output.model} > {log} 2>&1"


rule predict_summarizer:
    input:
        model=lambda w: SUMMARIZER_DIRS[w.family],
        dialogues=f"{R}/summary/dialogues/val.jsonl",
    output:
        predictions=f"{R}/eval/{{family}}/predictions.jsonl",
    log:
        f"{LOGS}/predict_summarizer/{{family}}.log",
    benchmark:
        f"{R}/benchmarks/predict_summarizer/{{family}}.tsv"
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["eval"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        settings=lambda w: summarizer_settings(w.family),
    shell:
        "vecflow predict-summarizer --model {input.model} --dialogues {input.dialogues} "
        "--settings {params.settings:q} --out {output.predictions} > {log} 2>&1"
