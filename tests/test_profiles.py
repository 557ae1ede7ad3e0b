"""Execution profiles: the SLURM profile driven end to end through stub SLURM commands, the stubs themselves,
the generic cluster submit script, and the local profile.

The stubs in tests/slurm_stubs/ stand in for a cluster (docs/design.md §7): sbatch records its arguments, runs the
wrapped command in the background and prints only the job id; sacct/squeue report each job's state.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_hpo import data  # noqa: F401 (the tiny ELM data fixture, for the HPO workers of the cluster example)

REPO = Path(__file__).resolve().parents[1]
STUBS = REPO / "tests" / "slurm_stubs"
PROFILES = REPO / "profiles"
VENV_BIN = Path(sys.executable).parent
SUBMIT = PROFILES / "cluster-generic" / "submit.sh"


def workflow_gpu_rules() -> dict[str, str]:
    """rule name -> its ``gpu=`` expression, for every rule in workflow/rules/*.smk that declares one."""
    found, rule = {}, None
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for line in path.read_text().splitlines():
            if match := re.match(r"\s*(?:rule|checkpoint)\s+(\w+)\s*:", line):
                rule = match.group(1)
            elif (match := re.match(r"\s*gpu=(.+),\s*$", line)) and rule:
                found[rule] = match.group(1).strip()
    return found


GPU_RULES = workflow_gpu_rules()
TRAIN_RULES = {rule for rule, gpu in GPU_RULES.items() if 'config["train"]["gpus"]' in gpu}  # train.gpus ranks, one node

TINY_WORKFLOW = """
rule all:
    input: "gpu.txt", "cpu.txt", "lvm.txt"

rule gpu_step:
    output: "gpu.txt"
    resources: gpu=1, mem_mb=2000, runtime=15, slurm_partition="gpuq"
    shell: "echo gpu > {output}"

rule cpu_step:
    output: "cpu.txt"
    shell: "echo cpu > {output}"

# named like a vecflow GPU rule, so the profile's set-resources apply to it
rule train_lvm:
    output: "lvm.txt"
    resources: gpu=1, mem_mb=1000, runtime=10
    shell: "echo lvm > {output}"
"""


def stub_env(state: Path, **extra) -> dict:
    return {
        **os.environ,
        "PATH": f"{STUBS}{os.pathsep}{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "STUB_SLURM_STATE": str(state),
        "STUB_SLURM_ACCOUNT": "lab42",
        **extra,
    }


def sbatch_calls(state: Path) -> dict[str, list[str]]:
    """rule name -> the exact sbatch argv of its job (from the stub's NUL-separated records)."""
    calls = {}
    for path in sorted((state / "jobs").glob("*.argv")):
        argv = path.read_bytes().decode().split("\0")[:-1]
        rule = argv[argv.index("--comment") + 1].removeprefix("rule_")
        calls[rule] = argv
    return calls


def option(argv: list[str], name: str) -> str:
    """The value of ``name`` given as ``name value`` or ``name=value``."""
    for i, arg in enumerate(argv):
        if arg == name:
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in sbatch call {argv}")


# ---- the SLURM profile, end to end --------------------------------------------------------------------------


@pytest.mark.slow
def test_slurm_profile_submits_with_mapped_resources_and_completes(tmp_path):
    workdir, state = tmp_path / "wf", tmp_path / "state"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(TINY_WORKFLOW)
    env = stub_env(state, VECFLOW_SLURM_ACCOUNT="lab42", VECFLOW_SLURM_PARTITION="cpuq",
                   VECFLOW_SLURM_GPU_PARTITION="a100q")
    result = subprocess.run(
        [str(VENV_BIN / "snakemake"), "--profile", str(PROFILES / "slurm"), "--executor", "slurm", "--jobs", "3",
         "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=1200,  # generous: a loaded machine is slow
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert [(workdir / f).read_text() for f in ("gpu.txt", "cpu.txt", "lvm.txt")] == ["gpu\n", "cpu\n", "lvm\n"]

    calls = sbatch_calls(state)
    assert set(calls) == {"gpu_step", "cpu_step", "train_lvm"}
    gpu, cpu, lvm = calls["gpu_step"], calls["cpu_step"], calls["train_lvm"]
    # the rule's own resources
    assert "--gpus=1" in gpu and option(gpu, "--mem") == "2000" and option(gpu, "-t") == "15"
    assert option(gpu, "-p") == "gpuq" and option(gpu, "-A") == "lab42"
    # profile defaults for a rule that declares nothing
    assert not any(a.startswith(("--gpus", "--gres")) for a in cpu)
    assert option(cpu, "-p") == "cpuq" and option(cpu, "--mem") == "8000" and option(cpu, "-t") == "60"
    # profile set-resources for a GPU rule win over the rule's numbers
    assert "--gpus=1" in lvm and option(lvm, "--cpus-per-gpu") == "4"
    assert option(lvm, "-p") == "a100q" and option(lvm, "--mem") == "16000" and option(lvm, "-t") == "240"
    # every job ran under -D with its log where --output said (%j replaced by the job id)
    for argv in calls.values():
        assert option(argv, "-D") == str(workdir) and option(argv, "--wrap")
    logs = sorted(p.name for p in (workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert len(logs) == 3 and all(name.removesuffix(".log").isdigit() for name in logs)
    # inside the jobs, the jobstep executor ran the rule through srun with one-token options
    srun_lines = [line.split("\t") for line in (state / "calls.log").read_text().splitlines() if line.startswith("srun")]
    assert len(srun_lines) == 3 and all(line[1] == "-n1" for line in srun_lines)
    uuid = option(gpu, "--job-name")
    assert any(line.startswith("sacct") and uuid in line for line in (state / "calls.log").read_text().splitlines())


# The README's worked cluster example in miniature: rules named like vecflow's, so the profile's set-resources
# apply; a 2-GPU summarizer training job (train.gpus: 2) and three real `vecflow hpo-worker` jobs on one journal.
CLUSTER_EXAMPLE = """
rule all:
    input: "summarizer/done.txt", expand("hpo/worker_{{i}}.json", i=range(3))

rule train_summarizer:
    output: "summarizer/done.txt"
    resources: gpu=2, mem_mb=1000, runtime=10
    shell: "echo trained > {{output}}"

rule hpo_worker:
    output: "hpo/worker_{{i}}.json"
    resources: gpu=1, mem_mb=1000, runtime=10
    params: settings={settings!r}
    shell:
        "vecflow hpo-worker --study s --storage hpo/study.journal --worker {{wildcards.i}} --data-dir {data} "
        "--lm {lm} --encoder {encoder} --settings {{params.settings:q}} --out {{output}}"
"""


def sbatch_calls_per_rule(state: Path) -> dict[str, list[list[str]]]:
    calls: dict[str, list[list[str]]] = {}
    for path in sorted((state / "jobs").glob("*.argv")):
        argv = path.read_bytes().decode().split("\0")[:-1]
        comment = argv[argv.index("--comment") + 1]  # rule_<name>, with _wildcards_<values> for wildcard jobs
        calls.setdefault(re.sub(r"_wildcards_.*$", "", comment.removeprefix("rule_")), []).append(argv)
    return calls


@pytest.mark.slow
def test_cluster_example_multi_gpu_job_on_one_node_and_hpo_workers_sharing_a_journal(
        tmp_path, data, tiny_causal_lm, tiny_encoder):  # noqa: F811
    import optuna

    from test_hpo import hpo_settings

    workdir, state = tmp_path / "wf", tmp_path / "state"
    workdir.mkdir()
    settings = json.dumps(hpo_settings(workers=3, trials_per_worker=1, pruner_startup_trials=100))
    (workdir / "Snakefile").write_text(CLUSTER_EXAMPLE.format(settings=settings, data=data, lm=tiny_causal_lm,
                                                              encoder=tiny_encoder))
    env = stub_env(state, VECFLOW_SLURM_ACCOUNT="lab42", VECFLOW_SLURM_PARTITION="cpuq",
                   VECFLOW_SLURM_GPU_PARTITION="a100q", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [str(VENV_BIN / "snakemake"), "--profile", str(PROFILES / "slurm"), "--executor", "slurm", "--jobs", "4",
         "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=1500,
    )
    logs = "\n".join(p.read_text()[-1500:] for p in (workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + logs

    calls = sbatch_calls_per_rule(state)
    assert {rule: len(argvs) for rule, argvs in calls.items()} == {"train_summarizer": 1, "hpo_worker": 3}
    (train,) = calls["train_summarizer"]
    # the rule's gpu (train.gpus) as the job's GPU total, all on one node, CPUs per GPU and memory from the profile
    assert "--gpus=2" in train and option(train, "--nodes") == "1" and option(train, "--cpus-per-gpu") == "8"
    assert option(train, "-p") == "a100q" and option(train, "--mem") == "32000" and option(train, "-t") == "480"
    for worker in calls["hpo_worker"]:
        assert "--gpus=1" in worker and option(worker, "-p") == "a100q" and option(worker, "-t") == "480"
        assert option(worker, "-D") == str(workdir) and "--nodes" not in " ".join(worker)

    # the three jobs ran as separate processes and appended to one study
    study = optuna.load_study(study_name="s", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(workdir / "hpo" / "study.journal"))))
    assert sorted(t.number for t in study.trials) == [0, 1, 2]
    assert sorted(t.user_attrs["worker"] for t in study.trials) == [0, 1, 2]
    reported = [t["number"] for i in range(3) for t in json.loads((workdir / "hpo" / f"worker_{i}.json").read_text())["trials"]]
    assert sorted(reported) == [0, 1, 2]


# ---- the stubs on their own (fast) --------------------------------------------------------------------------


def run_stub(name: str, args: list[str], state: Path, cwd: Path | None = None) -> str:
    result = subprocess.run([str(STUBS / name), *args], env=stub_env(state), cwd=cwd, capture_output=True,
                            text=True, timeout=30, check=True)
    return result.stdout


def wait_for_state(state: Path, job_id: str, expected: set[str], timeout_s: float = 20) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = run_stub("sacct", ["--name", "run-1"], state)
        states = dict(entry.split("|") for entry in line.split())
        if states.get(job_id) in expected:
            return states[job_id]
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {expected}")


def test_stub_sbatch_prints_only_the_id_and_runs_the_job_under_D(tmp_path):
    state, workdir = tmp_path / "state", tmp_path / "work"
    workdir.mkdir()
    out = run_stub("sbatch", ["--parsable", "--job-name", "run-1", "--output", "logs/%j.log", "-D", str(workdir),
                              "--wrap=pwd > where.txt && echo done"], state, cwd=tmp_path)
    job_id = out.strip()
    assert out == f"{job_id}\n" and job_id.isdigit()
    assert wait_for_state(state, job_id, {"COMPLETED", "FAILED"}) == "COMPLETED"
    assert (workdir / "where.txt").read_text().strip() == str(workdir)
    assert (workdir / "logs" / f"{job_id}.log").read_text() == "done\n"


def test_stub_sacct_and_squeue_report_failures_by_name(tmp_path):
    state = tmp_path / "state"
    ok = run_stub("sbatch", ["--job-name", "run-1", "-D", str(tmp_path), "--wrap=true"], state).strip()
    bad = run_stub("sbatch", ["--job-name", "run-1", "-D", str(tmp_path), "--wrap=exit 3"], state).strip()
    other = run_stub("sbatch", ["--job-name", "run-2", "-D", str(tmp_path), "--wrap=true"], state).strip()
    assert wait_for_state(state, bad, {"COMPLETED", "FAILED"}) == "FAILED"
    assert wait_for_state(state, ok, {"COMPLETED", "FAILED"}) == "COMPLETED"
    squeue = run_stub("squeue", ["--format=%i|%T", "--states=all", "--noheader", "--name", "run-1"], state)
    assert squeue.split() == [f"{ok}|COMPLETED", f"{bad}|FAILED"]
    assert other not in squeue


def test_stub_scancel_marks_jobs_cancelled(tmp_path):
    state = tmp_path / "state"
    job_id = run_stub("sbatch", ["--job-name", "run-1", "-D", str(tmp_path), "--wrap=sleep 30"], state).strip()
    run_stub("scancel", [job_id], state)
    assert wait_for_state(state, job_id, {"CANCELLED"}) == "CANCELLED"


def test_stub_sinfo_sacctmgr_and_srun(tmp_path):
    state = tmp_path / "state"
    assert "cpu*" in run_stub("sinfo", ["-o", "%P"], state).split()
    assert run_stub("sacctmgr", ["-n", "-s", "list", "user", "me", "format=account%256"], state).strip() == "lab42"
    out = run_stub("srun", ["-n1", "--cpu-bind=q", "--cpus-per-task=2", "--gpus=1", "--nodes=1", "echo", "ran", "it"], state)
    assert out == "ran it\n"


# ---- profile files ------------------------------------------------------------------------------------------


def load_profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "profile.yaml").read_text())


def test_slurm_profile_maps_every_gpu_rule():
    profile = load_profile("slurm")
    assert profile["executor"] == "slurm" and profile["jobs"] == 100
    assert len(GPU_RULES) >= 12 and {"train_summarizer", "train_causal"} <= TRAIN_RULES  # the parse found them
    assert set(profile["set-resources"]) == set(GPU_RULES), "every rule that declares gpu= gets the GPU partition"
    for rule, resources in profile["set-resources"].items():
        assert resources["slurm_partition"] == "'$VECFLOW_SLURM_GPU_PARTITION'" and resources["cpus_per_gpu"] >= 1
        if rule in TRAIN_RULES:  # the GPU count is train.gpus (the rule's), on one node
            assert "gpu" not in resources and resources["nodes"] == 1, rule
        else:
            assert resources["gpu"] == 1, rule
    assert {"slurm_account", "slurm_partition", "mem_mb", "runtime"} <= set(profile["default-resources"])
    assert "cpus_per_task" not in profile["default-resources"], "it would override cpus_per_gpu"
    assert profile["resources"]["gpu"] >= 1


def test_default_profile_serialises_gpu_jobs_locally():
    profile = load_profile("default")
    assert profile["cores"] == "all" and profile["resources"] == {"gpu": 1}
    assert profile["printshellcmds"] is True and profile["rerun-incomplete"] is True
    assert profile["keep-going"] is False


@pytest.mark.parametrize("name", ["default", "cluster-generic"])
def test_profiles_are_accepted_by_snakemake(tmp_path, name):
    (tmp_path / "Snakefile").write_text(TINY_WORKFLOW)
    result = subprocess.run(
        [str(VENV_BIN / "snakemake"), "--profile", str(PROFILES / name), "--dry-run", "--quiet", "rules"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train_lvm" in result.stdout + result.stderr


# ---- the generic cluster submit script ----------------------------------------------------------------------


def write_jobscript(path: Path, rule: str, threads: int, resources: dict) -> Path:
    properties = {"type": "single", "rule": rule, "threads": threads, "resources": resources, "jobid": 3}
    path.write_text(f"#!/bin/sh\n# properties = {json.dumps(properties)}\necho running {rule}\n")
    return path


def submit(jobscript: Path, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(SUBMIT), str(jobscript)], env={**os.environ, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=30)


def test_submit_maps_resources_to_pbs_flags(tmp_path):
    jobscript = write_jobscript(tmp_path / "job.sh", "train_lvm", 4, {"gpu": 1, "mem_mb": 16000, "runtime": 90})
    result = submit(jobscript, {"VECFLOW_SUBMIT_DRY_RUN": "1", "VECFLOW_GPU_QUEUE": "gpuq"}, tmp_path)
    assert result.returncode == 0, result.stderr
    command = result.stdout.split()
    assert command[:5] == ["qsub", "-N", "train_lvm", "-l", "select=1:ncpus=4:mem=16000mb:ngpus=1"]
    assert "walltime=01:30:00" in command and command[command.index("-q") + 1] == "gpuq"


def test_submit_maps_resources_to_lsf_flags(tmp_path):
    jobscript = write_jobscript(tmp_path / "job.sh", "windows", 2, {"mem_mb": 4000, "runtime": 30})
    result = submit(jobscript, {"VECFLOW_SUBMIT_DRY_RUN": "1", "VECFLOW_SCHEDULER": "lsf",
                                "VECFLOW_QUEUE": "short"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "bsub -J windows -n 2 -R rusage\\[mem=4000\\] -W 30 -q short" in result.stdout
    assert "-gpu" not in result.stdout


@pytest.mark.parametrize(
    "scheduler, fake_output, job_id",
    [("pbs", "4711.headnode", "4711.headnode"), ("lsf", "Job <815> is submitted to queue <normal>.", "815")],
)
def test_submit_prints_only_the_schedulers_job_id(tmp_path, scheduler, fake_output, job_id):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in ("qsub", "bsub"):
        fake = bin_dir / command
        fake.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path}/{command}.args\necho '{fake_output}'\n")
        fake.chmod(0o755)
    jobscript = write_jobscript(tmp_path / "job.sh", "fivecat", 1, {"gpu": 1, "mem_mb": 1000, "runtime": 5})
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "VECFLOW_SCHEDULER": scheduler}
    result = submit(jobscript, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{job_id}\n"
    args = (tmp_path / f"{'qsub' if scheduler == 'pbs' else 'bsub'}.args").read_text()
    assert ("ngpus=1" in args) if scheduler == "pbs" else ("-gpu num=1" in args)


def test_submit_rejects_an_unknown_scheduler_and_a_non_jobscript(tmp_path):
    jobscript = write_jobscript(tmp_path / "job.sh", "fivecat", 1, {})
    result = submit(jobscript, {"VECFLOW_SCHEDULER": "sge"}, tmp_path)
    assert result.returncode == 2 and "VECFLOW_SCHEDULER must be pbs or lsf, got 'sge'" in result.stderr
    (tmp_path / "plain.sh").write_text("echo hi\n")
    result = submit(tmp_path / "plain.sh", {"VECFLOW_SUBMIT_DRY_RUN": "1"}, tmp_path)
    assert result.returncode != 0 and "no '# properties = ' line" in result.stderr


def test_every_gpu_rule_declares_threads():
    """Snakemake sets OMP_NUM_THREADS to a rule's threads (1 when it declares none), so a heavy (gpu) rule without
    `threads:` runs torch on one CPU thread: embed_chunks and train_lvm did, at half the speed."""
    declared, rule = set(), None
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for line in path.read_text().splitlines():
            if match := re.match(r"\s*(?:rule|checkpoint)\s+(\w+)\s*:", line):
                rule = match.group(1)
            elif re.match(r"\s*threads:\s*config\[\"threads\"\]\[\"(train|eval)\"\]", line) and rule:
                declared.add(rule)
    assert GPU_RULES and set(GPU_RULES) - declared == set()
