rule score_summaries:
    input:
        predictions=f"{R}/eval/{{summarizer}}/predictions.jsonl",
        bertscore=model_input(config["evaluation"]["bertscore"]["model"]),
    output:
        scores=report(
            f"{R}/eval/{{summarizer}}/scores.json",
            caption="../report/scores.rst",
            category="4. Summaries",
            subcategory="{summarizer}",
        ),
        examples=f"{R}/eval/{{summarizer}}/examples.json",
    log:
        f"{LOGS}/score_summaries/{{summarizer}}.log",
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["eval"]
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
    params:
        bertscore=parent_of("bertscore"),
        settings=lambda w: settings("evaluation"),
    shell:
        "vecflow score --predictions {input.predictions} --bertscore-model {params.bertscore} "
        "--settings {params.settings:q} --out-scores {output.scores} "
        "--out-examples {output.examples} > {log} 2>&1"
