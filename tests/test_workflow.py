"""Workflow tests through the Snakemake API: config validation, the full DAG, lint, and real tiny runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workflow_api import REPO, SNAKEFILE, dry_run, rulegraph, run

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

ALL_RULES_BEFORE_CHECKPOINT = {
    "fetch_model", "ingest_dialogues", "synthesize", "filter_summary", "train_summarizer",
    "predict_summarizer", "hpo_worker", "hpo_best", "train_elm", "predict_elm", "score_summaries",
    "chunk_articles", "split_articles", "embed_chunks", "make_windows", "diagnose_direction",
    "train_lvm", "fivecat", "deploy_decision", "report", "all",
}


def tiny_config(tiny_encoder: Path, tiny_causal_lm: Path) -> dict:
    """The demo config with tiny random models (source: local) and small sizes."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["models"] = {
        "tiny": {"source": "local", "path": str(tiny_encoder)},
        "tinylm": {"source": "local", "path": str(tiny_causal_lm)},
    }
    config["encoder"] = "tiny"
    config["summarizer"].update({"base": "tiny", "epochs": 1, "val_samples": 2, "max_source_length": 64})
    config["summarizer"]["generation"] = {"num_beams": 2, "max_new_tokens": 8, "early_stopping": True}
    config["summarizer"]["causal"].update({"base": "tinylm", "max_source_length": 64, "max_target_length": 8,
                                           "batch_size": 4, "learning_rate": 1e-3})
    config["summarizer"]["causal"]["generation"] = {"num_beams": 1, "max_new_tokens": 6}
    config["summary"]["selection_dialogues"] = 4
    config["elm"].update({"lm": "tinylm", "hidden_dim": 16, "max_train_samples": 8, "val_samples": 2})
    config["elm"]["generation"] = {"num_beams": 1, "max_new_tokens": 6}
    config["evaluation"]["bertscore"] = {"model": "tiny", "num_layers": 2, "batch_size": 8}
    config["summary"]["splits"] = {
        "train": str(REPO / "resources" / "demo" / "dialogues_train.jsonl"),
        "val": str(REPO / "resources" / "demo" / "dialogues_val.jsonl"),
    }
    config["lvm"]["articles"]["max_articles"] = 40
    config["lvm"]["diagnostics"].update({"min_coherence": -1.0, "min_signal": -1.0})
    config["lvm"]["train"].update({"epochs": 2, "d_model": 16, "layers": 1, "heads": 2, "mini5cat_samples": 50})
    config["lvm"]["fivecat"]["max_samples"] = 200
    return config


def write_workdir(tmp_path: Path, config: dict) -> Path:
    (tmp_path / "config").mkdir(parents=True, exist_ok=True)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp_path


@pytest.fixture
def tiny_workdir(tmp_path, tiny_encoder, tiny_causal_lm) -> Path:
    return write_workdir(tmp_path, tiny_config(tiny_encoder, tiny_causal_lm))


def snakemake_cli(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run(
        [SNAKEMAKE, "-s", str(SNAKEFILE), "-d", str(workdir), "--cores", "1", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )


def test_full_dag_dry_run_has_every_stage(tiny_workdir, capsys):
    dry_run(tiny_workdir)
    capsys.readouterr()
    rulegraph(tiny_workdir)
    dot = capsys.readouterr().out
    rules = {line.split('label = "')[1].split('"')[0] for line in dot.splitlines() if 'label = "' in line}
    assert ALL_RULES_BEFORE_CHECKPOINT <= rules, ALL_RULES_BEFORE_CHECKPOINT - rules


def test_the_report_job_keeps_its_plots_in_the_results_cache(tiny_workdir):
    """The report rule hands its job a plot cache under the run's results folder (a regeneration then redraws
    only the plots whose inputs changed: tests/test_report_plot_cache.py)."""
    done = snakemake_cli(tiny_workdir, "-n", "-p", "results/report/index.html")
    assert done.returncode == 0, done.stderr[-2000:]
    printed = [line.removeprefix("Shell command: ") for line in done.stdout.splitlines()]  # `-p`, as Snakemake 9 prints it
    commands = [line for line in printed if line.startswith("vecflow report ")]
    assert len(commands) == 1, done.stdout[-2000:]
    assert " --plot-cache results/cache/report-plots " in commands[0]


@pytest.mark.parametrize("configfile", ["config.yaml", "wikitext.yaml", "dialogsum.yaml"])
def test_the_shipped_configs_build_a_dag(configfile):
    # the real-data configs fetch their data (fetch_data, hub): no ../shared/data needed (issue 25)
    result = subprocess.run(
        [SNAKEMAKE, "--cores", "1", "-n", "--rulegraph", "--configfile", f"config/{configfile}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "digraph" in result.stdout


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["lvm"].update({"epochz": 3}), "epochz"),
        (lambda c: c["lvm"]["train"].update({"epochs": "many"}), "epochs"),
        (lambda c: c["summarizer"]["generation"].update({"num_beams": 1, "length_penalty": 2.0}),
         "summarizer.generation.length_penalty"),
        (lambda c: c["elm"]["generation"].update({"num_beams": 1, "early_stopping": True}),
         "elm.generation.early_stopping"),
        (lambda c: c["lvm"]["split"].update({"fractions": {"train": 0.5, "val": 0.2, "ood": 0.2}}),
         "lvm.split.fractions"),
        (lambda c: c.update({"encoder": "nosuchmodel"}), "encoder"),
    ],
)
def test_bad_config_fails_before_any_job_naming_the_key(tmp_path, tiny_encoder, tiny_causal_lm, change, message):
    config = tiny_config(tiny_encoder, tiny_causal_lm)
    change(config)
    workdir = write_workdir(tmp_path, config)
    result = snakemake_cli(workdir, "-n")
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (workdir / "results").exists()


def test_lint_is_clean():
    result = subprocess.run([SNAKEMAKE, "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Lints for" not in output, output[-3000:]


def test_snakefmt_is_clean():
    snakefmt = Path(sys.executable).with_name("snakefmt")
    files = [str(REPO / "Snakefile")] + sorted(str(p) for p in (REPO / "workflow" / "rules").glob("*.smk"))
    result = subprocess.run([str(snakefmt), "--check", *files], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_tiny_slice_really_runs(tiny_workdir):
    """ingest -> synthesize -> filter and chunk -> split -> embed -> windows -> diagnose, for real."""
    targets = ["results/summary/filtered/stats.json", "results/lvm/diagnostics/direction.json"]
    targets += [f"results/lvm/windows/{split}.safetensors" for split in ("val", "ood")]
    run(tiny_workdir, targets=targets, cores=2)
    from vecflow.lvm.diagnostics import check_gate, direction_stats
    from vecflow.core.io import load_tensors, read_jsonl
    from vecflow.lvm.bank import load_bank
    from vecflow.lvm.windows import load_windows

    stats = json.loads((tiny_workdir / "results/summary/filtered/stats.json").read_text())
    for split in ("train", "val"):  # the stats describe the files written, not just any non-empty dict
        numbers = stats["splits"][split]
        rows = read_jsonl(tiny_workdir / f"results/summary/filtered/{split}_synthesis.jsonl")
        vectors = load_tensors(tiny_workdir / f"results/summary/filtered/{split}_embeddings.safetensors")
        assert numbers["rows_kept"] == len(rows) > 0
        assert numbers["embeddings_kept"] == len(vectors["embeddings"]) == len({r["embedding_index"] for r in rows})
        assert numbers["rows_kept"] + numbers["rows_dropped"] == numbers["rows_in"]
    direction = json.loads((tiny_workdir / "results/lvm/diagnostics/direction.json").read_text())
    # the tiny config lowers the thresholds to -1 so that random embeddings pass: check instead that the gate's
    # numbers are those of the training windows and that its verdict follows from them and the thresholds
    bank = load_bank(tiny_workdir / "results/lvm/embeddings/train.safetensors")
    windows = load_windows(tiny_workdir / "results/lvm/windows/train.safetensors", bank)
    expected = direction_stats(windows, bank)
    assert direction["pos"] == pytest.approx(expected["pos"]) and direction["signal"] == pytest.approx(expected["signal"])
    assert direction["n_windows"] == len(windows)
    assert direction["thresholds"]["min_signal"] == -1.0
    assert direction["gate"] == check_gate(expected, direction["thresholds"])
    manifest = json.loads((tiny_workdir / "resources/models/tiny/manifest.json").read_text())
    assert manifest["files"]
    for split in ("train", "val", "ood"):
        assert (tiny_workdir / f"results/lvm/windows/{split}.safetensors").exists()
    # a second run has nothing to do
    before = {p: p.stat().st_mtime_ns for p in (tiny_workdir / "results").rglob("*") if p.is_file()}
    run(tiny_workdir, targets=targets, cores=2)
    after = {p: p.stat().st_mtime_ns for p in (tiny_workdir / "results").rglob("*") if p.is_file()}
    assert before == after


def test_loss_overrides_of_train_and_run_are_merged(tmp_path, tiny_encoder, tiny_causal_lm):
    config = tiny_config(tiny_encoder, tiny_causal_lm)
    config["lvm"]["train"]["losses"] = {"lambda_dir": 0.001, "rollout_h": 4}
    config["lvm"]["runs"]["p4"]["losses"] = {"rollout_h": 2}
    workdir = write_workdir(tmp_path, config)
    result = snakemake_cli(workdir, "-n", "-p", "results/lvm/models/p4")
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"losses": {"lambda_dir": 0.001, "rollout_h": 2}' in result.stdout


def test_lvm_study_seeds_and_pareto_are_wired_by_file_dependencies(tmp_path, tiny_encoder, tiny_causal_lm):
    """Issue 21: a run with params_from_study trains with the study's best_params.yaml (and without it when the
    study is off), lvm.seeds adds <run>-seed<i> with their own seeds, lvm_seeds reads every seed's 5CAT, and a
    [c0, margin] study gets its hpo_pareto job."""
    config = tiny_config(tiny_encoder, tiny_causal_lm)
    config["lvm"]["runs"]["fwd"] = {"preset": "P1", "selection_metric": "forward", "params_from_study": True,
                                    "contrast": {"enabled": True}}
    config["lvm"]["seeds"] = {"run": "fwd", "count": 2}
    config["hpo"].update({"target": "lvm", "study": "fwdstudy", "lvm_run": "fwd", "lvm_objectives": ["c0", "margin"],
                          "lvm_fixed": {"train_fraction": 0.5},
                          "lvm_search_space": {"losses.lambda_ac": {"type": "float", "low": 0.01, "high": 1.0}}})
    config.setdefault("tracks", {})["hpo"] = True
    workdir = write_workdir(tmp_path, config)
    result = snakemake_cli(workdir, "-n", "-p", "results/lvm/seeds.json", "results/hpo/fwdstudy/pareto.json")
    assert result.returncode == 0, result.stderr[-2000:]
    printed = [line.removeprefix("Shell command: ") for line in result.stdout.splitlines()]
    trains = [line for line in printed if line.startswith("vecflow train-lvm ")]
    assert len(trains) == 2 and all("--params results/hpo/fwdstudy/best_params.yaml" in t for t in trains)
    seeds = {json.loads(t.split("--settings '")[1].split("'")[0])["seed"] for t in trains}
    assert len(seeds) == 2  # fwd and fwd-seed2 train with different seeds
    [aggregate] = [line for line in printed if line.startswith("vecflow lvm-seeds ")]
    assert "--report fwd=results/lvm/fivecat/fwd.json" in aggregate and "fwd-seed2=results/lvm/fivecat/fwd-seed2.json" in aggregate
    assert any(line.startswith("vecflow hpo-pareto ") for line in printed)
    config["tracks"]["hpo"] = False  # the quick run: the same run trains with its entry alone
    workdir = write_workdir(tmp_path / "quick", config)
    result = snakemake_cli(workdir, "-n", "-p", "results/lvm/models/fwd")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "vecflow train-lvm " in result.stdout and "--params" not in result.stdout
