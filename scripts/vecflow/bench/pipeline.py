"""``vecflow bench pipeline``: pipeline overhead (issue 10 item 7): what the DAG costs beyond the work itself.

    vecflow bench pipeline [--workdir DIR] [--size tiny|full] [--out-dir results/bench]

On a finished run of the demo DAG (``--workdir``: a folder with ``config/config.yaml`` and its results; at
``--size full`` the default is the repository's own ``make demo`` run; at ``--size tiny`` without ``--workdir``
one is built first in a temporary folder with the tests' tiny random models, and that build is timed) it
measures, in one run:

(a) no-op rerun: a real ``snakemake --cores 2`` that finds nothing to do (goal <= 2 s);
(b) report regeneration from cache: the report removed and re-made alone, then ``--forcerun resolved_config
    report`` (goal <= 4 s). Both check that no other job ran. At full size this
    rewrites the workdir's report (from the same cached inputs);
(c) per-job start-up: ``python -c pass`` (the peer: a bare interpreter), ``snakemake --version``,
    ``vecflow --help``, ``import vecflow.ship.report`` and ``vecflow report --help``; and ``python -X
    importtime`` of the modules the report jobs import, summarised as the 5 largest cumulative imports outside
    vecflow (plus vecflow's own self time) and which heavy packages (torch, transformers, matplotlib, ...) load.

Wall seconds are the best of ``repeats``; next to each, the CPU seconds of the whole process tree (getrusage
of the waited-for children), the steadier figure on a shared machine. ``PYTHONDONTWRITEBYTECODE`` is recorded:
when set, every job recompiles vecflow's sources (an editable install has no other bytecode cache).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vecflow.bench.common import REPO
from vecflow.core.errors import VecflowError
from vecflow.core.io import write_json
from vecflow.core.machine import machine

BIN = Path(sys.executable).parent
GOALS_S = {"noop_rerun": 2.0, "report_regeneration": 4.0, "full_dag": 120.0}
HEAVY = ("torch", "transformers", "matplotlib", "scipy", "sklearn", "pandas", "sentence_transformers", "optuna",
         "jinja2", "yaml", "numpy")
# what -X importtime profiles: the CLI entry, the two jobs of a report regeneration, and the report job as it runs
# when it draws (the modules it imports lazily: jinja2 for the page, matplotlib for every training-log plot)
IMPORT_TARGETS = {"vecflow.cli": "vecflow.cli", "vecflow.ship.report": "vecflow.ship.report",
                  "vecflow.core.resolved_config": "vecflow.core.resolved_config",
                  "report job drawing": "vecflow.ship.report, jinja2, matplotlib.figure"}
JOB_LINE = re.compile(r"^(?:local)?rule (\w+):", re.MULTILINE)
NOTHING_TO_DO = "Nothing to be done"


def child_env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def timed(argv: list, timeout: float = 3600) -> dict:
    """Run ``argv``; wall seconds, CPU seconds of its process tree, and its output. A failure raises."""
    argv = [str(a) for a in argv]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise VecflowError(f"{' '.join(argv)}: exit {done.returncode}: {(done.stderr or done.stdout).strip()[-800:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "output": done.stdout + done.stderr}


def best_of(argv: list, repeats: int) -> dict:
    """The fastest of ``repeats`` runs (wall clock), with its CPU seconds."""
    runs = [timed(argv) for _ in range(max(1, repeats))]
    fastest = min(runs, key=lambda r: r["wall_s"])
    return {"wall_s": fastest["wall_s"], "cpu_s": fastest["cpu_s"], "runs": len(runs)}


def vecflow_argv(*args: str) -> list:
    script = BIN / "vecflow"
    return [script, *args] if script.is_file() else [sys.executable, "-m", "vecflow.cli", *args]


def snakemake_argv(workdir: Path, *extra: str, cores: int = 2) -> list:
    """The workdir's own Snakefile when it has one (a copy: concurrent edits of the repository's rules then do
    not change what the rerun sees), else the repository's."""
    snakefile = workdir / "Snakefile" if (workdir / "Snakefile").is_file() else REPO / "Snakefile"
    snakemake = BIN / "snakemake"
    if not snakemake.is_file():
        raise VecflowError(f"{snakemake}: not found (install the package's dependencies: make install)")
    return [snakemake, "-s", snakefile, "-d", workdir, "--cores", str(cores), "--resources", "gpu=1", *extra]


def jobs_run(output: str) -> list[str]:
    """The rules of the jobs a Snakemake run started, from its log (``rule X:`` / ``localrule X:`` lines)."""
    return sorted(set(JOB_LINE.findall(output)) - {"all"})


def plot_counts(output: str, workdir: Path) -> str | None:
    """What the report job said of its plots (``plots: N drawn, M from the cache``), from its log."""
    log = results_dir(workdir) / "logs" / "report.log"
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    found = re.findall(r"plots: (\d+ drawn, \d+ from the cache)", text)
    return found[-1] if found else None


def results_dir(workdir: Path) -> Path:
    import yaml

    config = workdir / "config" / "config.yaml"
    if not config.is_file():
        raise VecflowError(f"{config}: not found (--workdir must be a run folder with config/config.yaml)")
    data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    return workdir / (data.get("results_dir") or "results")


# ---------------------------------------------------------------------------------------------- importtime
def parse_importtime(stderr: str) -> list[tuple[str, float, float, int]]:
    """``python -X importtime`` lines -> (module, self s, cumulative s, depth), in the order printed (children
    before their parent)."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:"):].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header line
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip()) - 1) // 2
        rows.append((name.strip(), int(parts[0]) / 1e6, int(parts[1]) / 1e6, depth))
    return rows


def summarise_importtime(rows: list[tuple[str, float, float, int]], modules: str, top: int = 5) -> dict:
    """Cumulative import seconds per top-level package outside vecflow (each counted where it is first reached
    from above, so nested imports of the same package are not counted twice), the 5 largest, vecflow's own self
    time (its module bodies, and compiling them when no bytecode is cached), and the heavy packages loaded."""
    per_root: dict[str, float] = {}
    stack: list[str] = []  # root package of each ancestor, by depth
    for name, _, cumulative, depth in reversed(rows):  # reversed post-order: every parent before its children
        root = name.split(".")[0]
        del stack[depth:]
        if root != "vecflow" and root not in stack:
            per_root[root] = per_root.get(root, 0.0) + cumulative
        stack.append(root)
    own = sum(s for name, s, _, _ in rows if name.split(".")[0] == "vecflow")
    total = sum(cumulative for _, _, cumulative, depth in rows if depth == 0)  # all the command imported
    largest = sorted(per_root.items(), key=lambda kv: -kv[1])[:top]
    loaded = {name.split(".")[0] for name, *_ in rows}
    return {"modules": modules, "total_s": total, "vecflow_self_s": own,
            "top": [[name, seconds] for name, seconds in largest],
            "heavy_loaded": [name for name in HEAVY if name in loaded], "modules_loaded": len(rows)}


def importtime(modules: str) -> dict:
    """``python -X importtime -c "import MODULES"`` in a fresh interpreter, summarised."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {modules}"], env=child_env(),
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise VecflowError(f"import {modules}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return summarise_importtime(parse_importtime(done.stderr), modules)


# ---------------------------------------------------------------------------------------------- DAG timeline
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
JOB_ID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+)|^Finished job (\d+)\.")


def job_timeline(log_text: str) -> list[dict]:
    """The jobs of one Snakemake log with their start and end (seconds after the log's first time stamp; the log
    stamps to the second): ``[{"rule", "jobid", "start_s", "end_s", "wall_s"}]`` in start order; a job that
    did not finish has no end."""
    from datetime import datetime

    first = now = None
    rule = None
    jobs: dict[int, dict] = {}
    for line in log_text.splitlines():
        stamp = STAMP.match(line)
        if stamp:
            now = datetime.strptime(" ".join(stamp.group(1).split()), "%a %b %d %H:%M:%S %Y")
            first = first or now
            continue
        header = JOB_LINE.match(line)
        if header:
            rule = header.group(1)
            continue
        jobid = JOB_ID.match(line)
        if jobid and rule and now is not None:
            jobs.setdefault(int(jobid.group(1)), {"rule": rule, "jobid": int(jobid.group(1)),
                                                  "start_s": (now - first).total_seconds(), "end_s": None})
            rule = None
            continue
        finished = FINISHED.match(line)
        if finished and now is not None:
            job = jobs.get(int(finished.group(1) or finished.group(2)))
            if job is not None:
                job["end_s"] = (now - first).total_seconds()
    for job in jobs.values():
        job["wall_s"] = None if job["end_s"] is None else job["end_s"] - job["start_s"]
    return sorted(jobs.values(), key=lambda j: (j["start_s"], j["jobid"]))


def dag_summary(jobs: list[dict], top: int = 10) -> dict:
    """A run's timeline summarised: DAG wall (first start to last end), the sum of job walls, the top jobs and
    the wall per rule."""
    done = [j for j in jobs if j["wall_s"] is not None and j["rule"] != "all"]
    per_rule: dict[str, list] = {}
    for job in done:
        entry = per_rule.setdefault(job["rule"], [0, 0.0])
        entry[0] += 1
        entry[1] += job["wall_s"]
    return {"jobs": len(done), "unfinished": sum(1 for j in jobs if j["wall_s"] is None and j["rule"] != "all"),
            "dag_wall_s": (max(j["end_s"] for j in done) - min(j["start_s"] for j in done)) if done else 0.0,
            "sum_job_wall_s": sum(j["wall_s"] for j in done),
            "top_jobs": [[j["rule"], j["jobid"], j["wall_s"]] for j in sorted(done, key=lambda j: -j["wall_s"])[:top]],
            "per_rule": {rule: {"jobs": n, "wall_s": wall}
                         for rule, (n, wall) in sorted(per_rule.items(), key=lambda kv: -kv[1][1])}}


def benchmark_cpu(results: Path) -> dict[str, dict]:
    """Snakemake benchmark files of a run (``results/benchmarks/**.tsv``): wall and CPU seconds per job."""
    figures = {}
    root = results / "benchmarks"
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) < 2:
            continue
        row = dict(zip(lines[0].split("\t"), lines[1].split("\t")))
        try:
            figures[path.relative_to(root).with_suffix("").as_posix()] = {
                "wall_s": float(row["s"]), "cpu_s": float(row.get("cpu_time", "nan"))}
        except (KeyError, ValueError):
            continue
    return figures


def last_full_run(workdir: Path) -> dict | None:
    """The timeline of the workdir's latest Snakemake run that ran the most jobs (the full build, not the
    bench's own reruns), from ``.snakemake/log``; None when there is none."""
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    best = None
    for path in logs:
        jobs = job_timeline(path.read_text(encoding="utf-8", errors="replace"))
        if jobs and (best is None or len(jobs) >= len(best[1])):
            best = (path, jobs)
    if best is None:
        return None
    return {"log": str(best[0]), **dag_summary(best[1])}


# ---------------------------------------------------------------------------------------------- the tiny run
def build_tiny_run(root: Path, minilm: Path | None = None, smollm2: Path | None = None) -> Path:
    """A workdir with the demo config on the tests' tiny random models (tests/test_workflow.tiny_config, as
    tests/test_pipeline_e2e.py sets it up) and its own copy of the Snakefile, workflow/ and envs/; not yet
    run."""
    tests = REPO / "tests"
    if not (tests / "tiny_models.py").is_file() or not (tests / "test_workflow.py").is_file():
        raise VecflowError(f"{tests}: tiny_models.py / test_workflow.py not found (--size tiny builds its run "
                           "with the tests' tiny models; pass --workdir of a finished run instead)")
    sys.path.insert(0, str(tests))
    try:
        from test_workflow import tiny_config, write_workdir
        from tiny_models import make_tiny_causal_lm, make_tiny_encoder, write_manifest
    finally:
        sys.path.remove(str(tests))
    if minilm is None:
        minilm = make_tiny_encoder(root / "models" / "tiny-encoder")
        write_manifest(minilm, "tiny-encoder")
    if smollm2 is None:
        smollm2 = make_tiny_causal_lm(root / "models" / "tiny-lm")
        write_manifest(smollm2, "tiny-lm")
    workdir = root / "run"
    workdir.mkdir(parents=True)
    shutil.copy(REPO / "Snakefile", workdir / "Snakefile")
    for folder in ("workflow", "envs"):  # the rules and what they name relative to themselves
        shutil.copytree(REPO / folder, workdir / folder)
    config = tiny_config(Path(minilm), Path(smollm2))
    config["hpo"].update({"workers": 2, "trials_per_worker": 1})
    config["deploy"]["name"] = "tiny"
    config["deploy"]["gates"]["summarizer"].update({"min_distinct_ratio": 0.0, "min_input_margin": -1.0})
    write_workdir(workdir, config)
    return workdir


# ---------------------------------------------------------------------------------------------- the benchmark
def measure(workdir: Path, repeats: int, regeneration_repeats: int) -> dict:
    """(a) no-op rerun, (b) report regeneration, (c) start-up and import profile, on a finished run."""
    plan = timed(snakemake_argv(workdir, "-n"))
    if NOTHING_TO_DO not in plan["output"]:
        raise VecflowError(f"{workdir}: the DAG is not finished (a dry run plans {', '.join(jobs_run(plan['output']))})"
                           ": run it first (make demo), or use --size tiny without --workdir to build a tiny one")
    noop_runs = []
    for _ in range(max(1, min(repeats, 2))):
        run = timed(snakemake_argv(workdir))
        if NOTHING_TO_DO not in run["output"] or jobs_run(run["output"]):
            raise VecflowError(f"{workdir}: the no-op rerun ran {jobs_run(run['output'])}: not a finished run")
        noop_runs.append(run)
    noop = min(noop_runs, key=lambda r: r["wall_s"])

    report = results_dir(workdir) / "report" / "index.html"
    if not report.is_file():
        raise VecflowError(f"{report}: not found (the finished run has no report)")
    regeneration = {}
    for name, extra, expected in [("report", (), ["report"]),
                                  ("resolved_config+report", ("--forcerun", "resolved_config", "report"),
                                   ["report", "resolved_config"])]:
        runs = []
        for _ in range(max(1, regeneration_repeats)):
            if not extra:
                report.unlink()
            run = timed(snakemake_argv(workdir, *extra))
            if not report.is_file():
                raise VecflowError(f"{report}: not written by the regeneration ({name})")
            runs.append({**run, "jobs": jobs_run(run["output"])})
        fastest = min(runs, key=lambda r: r["wall_s"])
        regeneration[name] = {"wall_s": fastest["wall_s"], "cpu_s": fastest["cpu_s"], "jobs": fastest["jobs"],
                              "runs": len(runs), "only_expected_jobs": all(r["jobs"] == expected for r in runs),
                              # every run in order: the first report after a change of a plot's inputs (or of
                              # the plotting code) draws, the later ones take the plots from the cache
                              "each_run": [{"wall_s": r["wall_s"], "cpu_s": r["cpu_s"], "plots": plot_counts(r["output"],
                                                                                                         workdir)}
                                           for r in runs]}

    startup = {
        "python -c pass": best_of([sys.executable, "-c", "pass"], repeats),
        "snakemake --version": best_of([BIN / "snakemake", "--version"], repeats),
        "vecflow --help": best_of(vecflow_argv("--help"), repeats),
        "import vecflow.ship.report": best_of([sys.executable, "-c", "import vecflow.ship.report"], repeats),
        "vecflow report --help": best_of(vecflow_argv("report", "--help"), repeats),
        # the floor of every torch job of the DAG (about 20 of the demo's 36 jobs import it)
        "import torch": best_of([sys.executable, "-c", "import torch"], repeats),
    }
    floor = startup["python -c pass"]["wall_s"]
    for figures in startup.values():
        figures["vs_bare_python"] = figures["wall_s"] / floor if floor > 0 else float("inf")
    return {"noop_rerun": {"wall_s": noop["wall_s"], "cpu_s": noop["cpu_s"], "runs": len(noop_runs)},
            "report_regeneration": regeneration, "startup": startup, "dag_timeline": last_full_run(workdir),
            "job_benchmarks": benchmark_cpu(results_dir(workdir)),
            "importtime": {name: importtime(modules) for name, modules in IMPORT_TARGETS.items()}}


def bench_pipeline(size: str, out_dir: Path | None, workdir: Path | None = None, minilm: Path | None = None,
                   smollm2: Path | None = None, repeats: int | None = None, **_) -> dict:
    full = size == "full"
    repeats = repeats or (3 if full else 1)
    build = None
    with tempfile.TemporaryDirectory(prefix="vecflow-bench-pipeline-") as tmp:
        if workdir is None and not full:
            workdir = build_tiny_run(Path(tmp), minilm, smollm2)
            run = timed(snakemake_argv(workdir))
            build = {"wall_s": run["wall_s"], "cpu_s": run["cpu_s"], "jobs": len(JOB_LINE.findall(run["output"]))}
        workdir = Path(workdir or REPO).resolve()
        figures = measure(workdir, repeats, regeneration_repeats=2 if full else 1)
    noop_s = figures["noop_rerun"]["wall_s"]
    regen_s = figures["report_regeneration"]["resolved_config+report"]["wall_s"]
    goals = {"noop_rerun": {"goal_s": GOALS_S["noop_rerun"], "wall_s": noop_s, "met": noop_s <= GOALS_S["noop_rerun"]},
             "report_regeneration": {"goal_s": GOALS_S["report_regeneration"], "wall_s": regen_s,
                                     "met": regen_s <= GOALS_S["report_regeneration"]},
             # the goal is about the demo's real models after install: a tiny build says nothing about it; at full
             # size, the workdir's own full run (its Snakemake log: first job start to last job end)
             "full_dag": {"goal_s": GOALS_S["full_dag"], "wall_s": build and build["wall_s"], "met": None}}
    timeline = figures["dag_timeline"]
    if full and timeline and not timeline["unfinished"]:
        goals["full_dag"].update(wall_s=timeline["dag_wall_s"], met=timeline["dag_wall_s"] <= GOALS_S["full_dag"])
    check = {"noop_ran_no_job": True, **{f"{name}_ran_only_its_jobs": data["only_expected_jobs"]
                                         for name, data in figures["report_regeneration"].items()}}
    workload = {"workdir": "tiny demo DAG built by the bench (tests' tiny random models)" if build else str(workdir),
                "snakemake": "CLI, --cores 2 --resources gpu=1", "repeats": repeats,
                "timing": "wall = best of the runs; cpu = CPU seconds of the whole process tree",
                "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
                "full_dag": ("the tiny build, tiny models: not the demo's figure" if build else
                             "the workdir's own full run, from its Snakemake log (.snakemake/log: job start and "
                             "finish stamps, 1 s resolution); CPU seconds per job from its benchmark files")}
    result = {"benchmark": "pipeline", "unit": "s", **figures, "full_dag": build, "goals": goals, "check": check,
              "workload": workload, "machine": machine(),
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    print_result(result)
    if out_dir is not None:
        write_json(Path(out_dir) / "pipeline.json", result)
    return result


def print_result(result: dict) -> None:
    import json

    def fig(d: dict) -> str:
        return f"{d['wall_s']:.2f} s (CPU {d['cpu_s']:.2f} s)"

    def goal(key: str) -> str:
        g = result["goals"][key]
        return f"goal <= {g['goal_s']:g} s: {'met' if g['met'] else 'MISSED'}"

    regen = result["report_regeneration"]
    peer = result["startup"]["python -c pass"]
    each = "; ".join(f"{name} runs: " + ", ".join(f"{fig(r)} [{r.get('plots') or 'plots ?'}]" for r in d["each_run"])
                     for name, d in regen.items() if d.get("each_run"))
    lines = [f"no-op rerun: {fig(result['noop_rerun'])}; {goal('noop_rerun')}",
             f"report regeneration: report alone {fig(regen['report'])}, resolved_config + report "
             f"{fig(regen['resolved_config+report'])}; {goal('report_regeneration')}",
             f"report regeneration, each run in order: {each}",
             f"peer  python -c pass: {peer['wall_s']:.2f} s",
             *(f"ours  {name}: {d['wall_s']:.2f} s ({d['vs_bare_python']:.1f}x the bare interpreter)"
               for name, d in result["startup"].items() if name != "python -c pass")]
    for target, summary in result["importtime"].items():
        top = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in summary["top"])
        lines.append(f"importtime {target}: {summary['total_s']:.2f} s; top {top}; vecflow self "
                     f"{summary['vecflow_self_s']:.2f} s; heavy loaded: {', '.join(summary['heavy_loaded']) or 'none'}")
    if result["full_dag"]:
        lines.append(f"full DAG (tiny build): {result['full_dag']['jobs']} jobs, {fig(result['full_dag'])}")
    timeline = result.get("dag_timeline")
    if timeline:
        top = ", ".join(f"{rule} {wall:.0f} s" for rule, _, wall in timeline["top_jobs"])
        lines.append(f"DAG timeline ({timeline['log']}): {timeline['jobs']} jobs in {timeline['dag_wall_s']:.0f} s "
                     f"(sum of job walls {timeline['sum_job_wall_s']:.0f} s; {timeline['unfinished']} unfinished); "
                     f"top jobs: {top}")
    cpu = {name: d for name, d in result.get("job_benchmarks", {}).items()}
    if cpu:
        lines.append("job benchmarks (wall/CPU s): " + ", ".join(
            f"{name} {d['wall_s']:.0f}/{d['cpu_s']:.0f}" for name, d in sorted(cpu.items(), key=lambda kv: -kv[1]["wall_s"])))
    lines += [f"check {json.dumps(result['check'])}", f"workload {json.dumps(result['workload'], default=str)}",
              f"machine {json.dumps(result['machine'])}"]
    print("\n".join(f"[bench pipeline] {line}" for line in lines), flush=True)


def table_row(data: dict, where: str) -> str:
    """The pipeline's row of BENCHMARKS.md's table (``vecflow.bench.table.render_table``)."""
    regen = data["report_regeneration"]
    peer = data["startup"]["python -c pass"]["wall_s"]
    def fig(d: dict) -> str:
        return f"{d['wall_s']:.2f} s (CPU {d['cpu_s']:.2f} s)"

    ours = (f"no-op rerun {fig(data['noop_rerun'])}; report regeneration: report alone {fig(regen['report'])}, "
            f"resolved_config + report {fig(regen['resolved_config+report'])}; `vecflow --help` "
            f"{data['startup']['vecflow --help']['wall_s']:.2f} s; `import vecflow.ship.report` "
            f"{data['startup']['import vecflow.ship.report']['wall_s']:.2f} s")
    timeline = data.get("dag_timeline")
    if timeline and not data.get("full_dag"):
        ours += (f"; full DAG (the run's log) {timeline['jobs']} jobs in {timeline['dag_wall_s']:.0f} s, top "
                 + ", ".join(f"{rule} {wall:.0f} s" for rule, _, wall in timeline["top_jobs"][:3]))
    goals = "; ".join(f"{key} <= {g['goal_s']:g} s: {'met' if g['met'] else 'MISSED'}"
                      for key, g in data["goals"].items() if g["met"] is not None)
    check = ", ".join(f"{k} {v}" for k, v in data["check"].items())
    return f"| pipeline | python -c pass {peer:.2f} s | {ours} | | | {goals} | {check} | {where} |"
