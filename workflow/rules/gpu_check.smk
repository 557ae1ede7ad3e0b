# make gpu-check: the trained families' job logs must show the accelerator; samples/s per family.
# Not part of rule all: target it (Makefile). Package: vecflow/core/gpu_check.py.


rule gpu_check:
    input:
        unpack(
            lambda w: {
                name: paths["model"]
                for name, paths in ship_workflow.gpu_check_families(config).items()
            }
        ),
    output:
        json=f"{R}/gpu_check.json",
        md=f"{R}/gpu_check.md",
    log:
        f"{LOGS}/gpu_check.log",
    conda:
        "../../envs/vecflow.yaml"
    params:
        families=lambda w: json.dumps(
            ship_workflow.gpu_check_families(config), sort_keys=True
        ),
        out_dir=parent_of("json"),
    shell:
        # the devices the jobs must have used: cuda or mps; only the test sets VECFLOW_GPU_CHECK_DEVICES=cpu
        'vecflow gpu-check --families {params.families:q} --expect "${{VECFLOW_GPU_CHECK_DEVICES:-cuda,mps}}" '
        "--out-dir {params.out_dir} > {log} 2>&1"
