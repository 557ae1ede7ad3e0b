# Summaries: the seq2seq and causal summarizers, the ELM variants, the retrieval baseline, and scoring of every
# family. Package: vecflow/summary/.

from vecflow.core.config_checks import elm_eval_suffixes

# eval/<family>/ is the top candidate; eval/<family>_rerank/ the re-ranked one (elm.rerank_candidates > 1)
ELM_EVAL_SUFFIXES = elm_eval_suffixes(config)
SUMMARIZER_DIRS = summary_workflow.summarizer_dirs(config)
# the families score_summaries scores: {family: the eval split its predictions are for}
SCORED_FAMILIES = summary_workflow.scored_families(config)


rule train_summarizer:
    input:
        train=f"{R}/summary/dialogues/train.jsonl",
        selection=summary_workflow.selection_dialogues(config),
        base=model_input(config["summarizer"]["base"]),
    output:
        model=directory(f"{R}/summarizer/model"),
    log:
        f"{LOGS}/train_summarizer.log",
    benchmark:
        f"{R}/benchmarks/train_summarizer.tsv"
    priority: PRIORITY["train_summarizer"]
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["train"]
    resources:
        gpu=core_workflow.gpu_request(config, config["train"]["gpus"]),
        mem_mb=8000,
        runtime=240,
    params:
        launch=launcher,
        base=parent_of("base"),
        settings=lambda w: summary_workflow.summarizer_settings(config, "seq2seq"),
    shell:
        "{params.launch} train-summarizer --train {input.train} --val {input.selection} --base {params.base} "
        "--settings {params.settings:q} --out {output.model} > {log} 2>&1"


rule train_causal:
    input:
        train=f"{R}/summary/dialogues/train.jsonl",
        selection=summary_workflow.selection_dialogues(config),
        # resolved only when the family is trained
        base=lambda w: model_input(summary_workflow.summarizer_base(config, "causal")),
    output:
        model=directory(f"{R}/causal/model"),
    log:
        f"{LOGS}/train_causal.log",
    benchmark:
        f"{R}/benchmarks/train_causal.tsv"
    priority: PRIORITY["train_causal"]
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["train"]
    resources:
        gpu=core_workflow.gpu_request(config, config["train"]["gpus"]),
        mem_mb=8000,
        runtime=240,
    params:
        launch=launcher,
        base=parent_of("base"),
        settings=lambda w: summary_workflow.summarizer_settings(config, "causal"),
    shell:
        "{params.launch} train-causal --train {input.train} --val {input.selection} --base {params.base} "
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
    priority: PRIORITY["predict_summarizer"]
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["eval"]
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=120,
    params:
        settings=lambda w: summary_workflow.summarizer_settings(config, w.family),
    shell:
        "vecflow predict-summarizer --model {input.model} --dialogues {input.dialogues} "
        "--settings {params.settings:q} --out {output.predictions} > {log} 2>&1"


rule predict_retrieval:
    input:
        data=rules.filter_summary.output,
        stats=rules.filter_summary.output.stats,
    output:
        predictions=f"{R}/eval/retrieval/predictions.jsonl",
    log:
        f"{LOGS}/predict_retrieval.log",
    priority: PRIORITY["predict_retrieval"]
    conda:
        "../../envs/vecflow.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        data_dir=parent_of("stats"),
    shell:
        "vecflow predict-retrieval --data-dir {params.data_dir} --split val --out {output.predictions} > {log} 2>&1"


# one job per ELM variant: elm (the embedding alone) and elm_rag (plus the summaries of the nearest training
# dialogues in the prompt); both start from the study's best parameters when the study runs
rule train_elm:
    input:
        data=rules.filter_summary.output,
        stats=rules.filter_summary.output.stats,
        lm=model_input(config["elm"]["lm"]),
        encoder=model_input(config["encoder"]),
        params=elm_params_input,
        bertscore=model_input(config["evaluation"]["bertscore"]["model"]),
    output:
        adapter=directory(f"{R}/{{elm}}/adapter"),
    log:
        f"{LOGS}/train_{{elm}}.log",
    benchmark:
        f"{R}/benchmarks/train_{{elm}}.tsv"
    priority: PRIORITY["train_elm"]
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["train"]
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=240,
    params:
        data_dir=parent_of("stats"),
        lm=parent_of("lm"),
        encoder=parent_of("encoder"),
        best=lambda w, input: f"--params {input.params}" if input.params else "",
        bertscore=parent_of("bertscore"),
        settings=lambda w: summary_workflow.elm_train_settings(config, w.elm),
    shell:
        "vecflow train-elm --data-dir {params.data_dir} --lm {params.lm} --encoder {params.encoder} "
        "--settings {params.settings:q} {params.best} --bertscore-model {params.bertscore} "
        "--out {output.adapter} > {log} 2>&1"


# with elm.rerank_candidates > 1 the job also writes eval/<family>_rerank/: the candidate nearest the input
# embedding after re-embedding; eval/<family>/ is always the top candidate (the prediction without re-ranking)
rule predict_elm:
    input:
        adapter=f"{R}/{{elm}}/adapter",
        data=rules.filter_summary.output,
        stats=rules.filter_summary.output.stats,
        lm=model_input(config["elm"]["lm"]),
        encoder=model_input(config["encoder"]),
    output:
        predictions=expand(
            "{R}/eval/{{elm}}{suffix}/predictions.jsonl", R=R, suffix=ELM_EVAL_SUFFIXES
        ),
    log:
        f"{LOGS}/predict_{{elm}}.log",
    benchmark:
        f"{R}/benchmarks/predict_{{elm}}.tsv"
    priority: PRIORITY["predict_elm"]
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["eval"]
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=120,
    params:
        data_dir=parent_of("stats"),
        lm=parent_of("lm"),
        encoder=parent_of("encoder"),
        outs=lambda w, output: (
            f"--out {output[-1]} --out-first {output[0]}"
            if len(output) > 1
            else f"--out {output[0]}"
        ),
        settings=lambda w: summary_workflow.elm_predict_settings(config, w.elm),
    shell:
        "vecflow predict-elm --adapter {input.adapter} --lm {params.lm} --data-dir {params.data_dir} "
        "--encoder {params.encoder} --split val --settings {params.settings:q} {params.outs} > {log} 2>&1"


# one job scores every family (the BERTScore model and the encoder loaded once): eval/<family>/scores.json and
# examples.json for each of SCORED_FAMILIES
if SCORED_FAMILIES:

    rule score_summaries:
        input:
            predictions=[
                f"{R}/eval/{family}/predictions.jsonl" for family in SCORED_FAMILIES
            ],
            # the splits the predictions were made for: ids one-to-one with them, with their references
            eval_splits=sorted(set(SCORED_FAMILIES.values())),
            bertscore=model_input(config["evaluation"]["bertscore"]["model"]),
            # semantic consistency: the eval dialogues' embeddings, and the encoder that made them
            sources=f"{R}/summary/filtered/val_synthesis.jsonl",
            encoder=model_input(config["encoder"]),
        output:
            scores=[
                report(
                    f"{R}/eval/{family}/scores.json",
                    caption="../report/scores.rst",
                    category="4. Summaries",
                    subcategory=family,
                )
                for family in SCORED_FAMILIES
            ],
            examples=[f"{R}/eval/{family}/examples.json" for family in SCORED_FAMILIES],
        log:
            f"{LOGS}/score_summaries.log",
        benchmark:
            f"{R}/benchmarks/score_summaries.tsv"
        priority: PRIORITY["score_summaries"]
        conda:
            "../../envs/vecflow.yaml"
        threads: config["threads"]["eval"]
        resources:
            gpu=GPU,
            mem_mb=4000,
            runtime=60,
        params:
            families=summary_workflow.score_family_args(config),
            # --out-dir: the folder above every eval/<family>/
            out_dir=lambda w, output: os.path.dirname(os.path.dirname(output.scores[0])),
            bertscore=parent_of("bertscore"),
            encoder=parent_of("encoder"),
            settings=lambda w: summary_workflow.score_settings(config),
        shell:
            "vecflow score {params.families} --out-dir {params.out_dir} "
            "--bertscore-model {params.bertscore} --encoder {params.encoder} --sources {input.sources} "
            "--settings {params.settings:q} > {log} 2>&1"
