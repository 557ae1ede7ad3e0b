# LVM: embedding export, windows, direction diagnostics, next-vector training, 5CAT. Package: vecflow/lvm/.
# The runs (lvm.runs, plus the learning-curve copies <run>-lc<percent> and the seed copies <run>-seed<i>) and
# each job's --settings come from vecflow/lvm/workflow.py, computed from the config without changing it.
CURVE_POINTS = lvm_workflow.curve_points(config)  # [run, run-lc10, ...] or []
SEED_POINTS = lvm_workflow.seed_points(config)  # [run, run-seed2, ...] or []


# one job for every split: the sentence encoder is loaded once (each split is encoded on its own); for each
# splits/<split>.jsonl, vecflow embed writes <split>.safetensors + <split>.index.jsonl into --out-dir
rule embed_chunks:
    input:
        chunks=expand("{R}/lvm/splits/{split}.jsonl", R=R, split=LVM_SPLITS),
        encoder=model_input(config["encoder"]),
    output:
        # named: Snakemake caches a rule of several outputs only when each is named (or all are a multiext)
        **lvm_workflow.embedding_outputs(R),
    log:
        f"{LOGS}/embed_chunks.log",
    # between-workflow cache (OUTPUT_CACHE, models.smk): a results_dir with the same chunks and encoder links
    # the banks instead of embedding again. No benchmark: Snakemake allows none on a cacheable rule. The cache
    # key hashes params and the unformatted shell command, not paths: the folder is taken in the shell
    cache: OUTPUT_CACHE
    priority: PRIORITY["embed_chunks"]
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["eval"]
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=60,
    params:
        encoder=parent_of("encoder"),
        settings=lambda w: lvm_workflow.embed_settings(config),
    shell:
        "vecflow embed --chunks {input.chunks} --encoder {params.encoder} --settings {params.settings:q} "
        '--out-dir "$(dirname {output.train_vectors:q})" > {log} 2>&1'


rule make_windows:
    input:
        vectors=f"{R}/lvm/embeddings/{{split}}.safetensors",
        index=f"{R}/lvm/embeddings/{{split}}.index.jsonl",
        encoder=model_input(config["encoder"]),
    output:
        windows=f"{R}/lvm/windows/{{split}}.safetensors",
    log:
        f"{LOGS}/make_windows/{{split}}.log",
    benchmark:
        f"{R}/benchmarks/make_windows/{{split}}.tsv"
    priority: PRIORITY["make_windows"]
    conda:
        "../../envs/vecflow.yaml"
    params:
        encoder=parent_of("encoder"),
        settings=lambda w: lvm_workflow.windows_settings(config),
    shell:
        "vecflow windows --embeddings {input.vectors} --index {input.index} "
        "--encoder {params.encoder} "
        "--settings {params.settings:q} --out {output.windows} > {log} 2>&1"


rule diagnose_direction:
    input:
        windows=f"{R}/lvm/windows/train.safetensors",
        vectors=f"{R}/lvm/embeddings/train.safetensors",
        index=f"{R}/lvm/embeddings/train.index.jsonl",
        encoder=model_input(config["encoder"]),
    output:
        json=f"{R}/lvm/diagnostics/direction.json",
        plot=report(
            f"{R}/lvm/diagnostics/direction.png",
            caption="../report/direction.rst",
            category="2. Data direction",
        ),
    log:
        f"{LOGS}/diagnose_direction.log",
    benchmark:
        f"{R}/benchmarks/diagnose_direction.tsv"
    priority: PRIORITY["diagnose_direction"]
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["eval"]
    params:
        encoder=parent_of("encoder"),
        settings=lambda w: lvm_workflow.diagnostics_settings(config),
    shell:
        "vecflow diagnose --windows {input.windows} --embeddings {input.vectors} --index {input.index} "
        "--encoder {params.encoder} --settings {params.settings:q} "
        "--out-json {output.json} --out-plot {output.plot} > {log} 2>&1"


rule train_lvm:
    input:
        gate=f"{R}/lvm/diagnostics/direction.json",
        train=f"{R}/lvm/windows/train.safetensors",
        train_vectors=f"{R}/lvm/embeddings/train.safetensors",
        train_index=f"{R}/lvm/embeddings/train.index.jsonl",
        val=f"{R}/lvm/windows/val.safetensors",
        val_vectors=f"{R}/lvm/embeddings/val.safetensors",
        val_index=f"{R}/lvm/embeddings/val.index.jsonl",
        encoder=model_input(config["encoder"]),
        study=lambda w: lvm_workflow.study_params_input(config, w.run),
    output:
        model=directory(f"{R}/lvm/models/{{run}}"),
    log:
        f"{LOGS}/train_lvm/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/train_lvm/{{run}}.tsv"
    priority: PRIORITY["train_lvm"]
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["train"]
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=240,
    params:
        encoder=parent_of("encoder"),
        study=lambda w, input: f"--params {input.study}" if input.study else "",
        settings=lambda w: lvm_workflow.train_settings(config, w.run),
    shell:
        "vecflow train-lvm --train-windows {input.train} --train-embeddings {input.train_vectors} "
        "--train-index {input.train_index} --val-windows {input.val} "
        "--val-embeddings {input.val_vectors} --val-index {input.val_index} "
        "--encoder {params.encoder} {params.study} "
        "--settings {params.settings:q} --out {output.model} > {log} 2>&1"


rule fivecat:
    input:
        model=f"{R}/lvm/models/{{run}}",
        train=f"{R}/lvm/windows/train.safetensors",
        train_vectors=f"{R}/lvm/embeddings/train.safetensors",
        train_index=f"{R}/lvm/embeddings/train.index.jsonl",
        windows=expand("{R}/lvm/windows/{split}.safetensors", R=R, split=["val", "ood"]),
        vectors=expand(
            "{R}/lvm/embeddings/{split}.safetensors", R=R, split=["val", "ood"]
        ),
        index=expand(
            "{R}/lvm/embeddings/{split}.index.jsonl", R=R, split=["val", "ood"]
        ),
        encoder=model_input(config["encoder"]),
    output:
        json=f"{R}/lvm/fivecat/{{run}}.json",
        plot=report(
            f"{R}/lvm/fivecat/{{run}}.png",
            caption="../report/fivecat.rst",
            category="3. Next-vector models",
            subcategory="{run}",
        ),
    log:
        f"{LOGS}/fivecat/{{run}}.log",
    benchmark:
        f"{R}/benchmarks/fivecat/{{run}}.tsv"
    priority: PRIORITY["fivecat"]
    conda:
        "../../envs/vecflow.yaml"
    threads: config["threads"]["eval"]
    resources:
        gpu=GPU,
        mem_mb=8000,
        runtime=60,
    params:
        encoder=parent_of("encoder"),
        splits=lambda w, input: " ".join(
            f"--split {name}={win},{vec},{idx}"
            for name, win, vec, idx in zip(
                ["val", "ood"], input.windows, input.vectors, input.index
            )
        ),
        settings=lambda w: lvm_workflow.fivecat_settings(config, w.run),
    shell:
        "vecflow fivecat --model {input.model} --train-windows {input.train} "
        "--train-embeddings {input.train_vectors} --train-index {input.train_index} {params.splits} "
        "--encoder {params.encoder} "
        "--settings {params.settings:q} --out-json {output.json} --out-plot {output.plot} > {log} 2>&1"


rule lvm_learning_curve:
    input:
        fivecat=lambda w: [f"{R}/lvm/fivecat/{run}.json" for run in CURVE_POINTS],
        models=lambda w: [f"{R}/lvm/models/{run}" for run in CURVE_POINTS],
    output:
        json=f"{R}/lvm/learning_curve.json",
        plot=report(
            f"{R}/lvm/learning_curve.png",
            caption="../report/learning_curve.rst",
            category="3. Next-vector models",
        ),
    log:
        f"{LOGS}/lvm_learning_curve.log",
    conda:
        "../../envs/vecflow.yaml"
    params:
        points=lambda w, input: " ".join(
            f"--point {run}={report},{model}"
            for run, report, model in zip(CURVE_POINTS, input.fivecat, input.models)
        ),
    shell:
        "vecflow lvm-curve {params.points} --out-json {output.json} "
        "--out-plot {output.plot} > {log} 2>&1"


if SEED_POINTS:

    rule lvm_seeds:
        input:
            fivecat=[f"{R}/lvm/fivecat/{run}.json" for run in SEED_POINTS],
        output:
            json=f"{R}/lvm/seeds.json",
        log:
            f"{LOGS}/lvm_seeds.log",
        conda:
            "../../envs/vecflow.yaml"
        params:
            reports=lambda w, input: " ".join(
                f"--report {run}={path}"
                for run, path in zip(SEED_POINTS, input.fivecat)
            ),
        shell:
            "vecflow lvm-seeds {params.reports} --out-json {output.json} > {log} 2>&1"
