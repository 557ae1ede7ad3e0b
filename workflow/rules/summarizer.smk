rule train_summarizer:
    input:
        train=f"{R}/summary/dialogues/train.jsonl",
        val=f"{R}/summary/dialogues/val.jsonl",
        base=model_input(config["summarizer"]["base"]),
    output:
        model=directory(f"{R}/summarizer/model"),
    log:
        f"{LOGS}/train_summarizer.log",
    conda:
        "../../envs/vecflow.yaml"
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        base=parent_of("base"),
        settings=lambda w: settings("summarizer"),
    shell:
        "vecflow train-summarizer --train {input.train} --val {input.val} --base {params.base} "
        "--settings {params.settings:q} --out {output.model} > {log} 2>&1"


rule predict_summarizer:
    input:
        model=f"{R}/summarizer/model",
        dialogues=f"{R}/summary/dialogues/val.jsonl",
    output:
        predictions=f"{R}/eval/seq2seq/predictions.jsonl",
    log:
        f"{LOGS}/predict_summarizer.log",
    conda:
        "../../envs/vecflow.yaml"
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    params:
        settings=lambda w: settings("summarizer"),
    shell:
        "vecflow predict-summarizer --model {input.model} --dialogues {input.dialogues} "
        "--settings {params.settings:q} --out {output.predictions} > {log} 2>&1"
