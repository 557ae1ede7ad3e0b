"""make gpu-check (issue 25): the training logs must show the accelerator; samples/s per family. On this CPU-only
machine the whole check runs with device cpu, which only VECFLOW_GPU_CHECK_DEVICES (set here) allows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_workflow import tiny_config, write_workdir
from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError
from vecflow.core.gpu_check import gpu_check, samples_per_second
from workflow_api import REPO, run

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def family(tmp_path: Path, name: str, log_text: str, summary: dict | None = None, seconds: float = 10.0) -> dict:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "train.log").write_text(log_text)
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "bench.tsv").write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:10\t100\n")
    return {"log": str(folder / "train.log"), "model": str(folder), "benchmark": str(folder / "bench.tsv")}


CUDA_LOG = "loading\n[vecflow] device: cuda (requested: cuda)\n[vecflow] step 1\n[vecflow] device: cuda:0 (requested: cuda)\n"


def test_every_device_line_must_be_an_expected_device(tmp_path):
    families = {
        "seq2seq": family(tmp_path, "seq2seq", CUDA_LOG, {"samples_seen": 600, "train_minutes": 0.5}),
        "lvm-p1": family(tmp_path, "lvm", CUDA_LOG, {"train_windows": 1000, "epochs_run": 3, "train_time_s": 1.5}),
        "elm": family(tmp_path, "elm", CUDA_LOG, {"samples_seen": 200, "train_minutes": 0.05}),
    }
    result = gpu_check(families, ["cuda", "mps"])
    rows = result["families"]
    assert rows["seq2seq"]["device"] == "cuda" and rows["seq2seq"]["samples_per_s"] == 20.0
    assert rows["lvm-p1"]["samples_per_s"] == 2000.0 and rows["elm"]["samples_per_s"] == 66.67
    assert rows["elm"]["measured"] == "training loop (summary.json)"  # the ELM trains on the summarizers' loop

    # one CPU placement anywhere in a log fails the family, naming the log and line; every failure is listed
    families["causal"] = family(tmp_path, "causal", CUDA_LOG + "[vecflow] device: cpu (requested: auto)\n")
    families["lvm-p4"] = family(tmp_path, "lvm4", "trained, but no device line\n")
    with pytest.raises(VecflowError) as err:
        gpu_check(families, ["cuda", "mps"])
    message = str(err.value)
    assert f"gpu-check causal: {families['causal']['log']}:5: device cpu, expected cuda or mps" in message
    assert f"gpu-check lvm-p4: {families['lvm-p4']['log']}: no '[vecflow] device:' line" in message
    assert "\n" not in message


def test_cli_writes_nothing_when_the_check_fails(tmp_path, capsys):
    families = {"seq2seq": family(tmp_path, "s", "[vecflow] device: cpu (requested: auto)\n")}
    out = tmp_path / "out"
    code = cli_main(["gpu-check", "--families", json.dumps(families), "--out-dir", str(out)])
    assert code == 2 and "device cpu, expected cuda or mps" in capsys.readouterr().err
    assert not out.exists()
    code = cli_main(["gpu-check", "--families", json.dumps(families), "--expect", "cpu", "--out-dir", str(out)])
    assert code == 0
    assert json.loads((out / "gpu_check.json").read_text())["families"]["seq2seq"]["samples_per_s"] is None
    assert "| seq2seq | cpu | n/a | not recorded |" in (out / "gpu_check.md").read_text()


def test_missing_numbers_are_not_recorded_rather_than_guessed(tmp_path):
    paths = family(tmp_path, "causal", CUDA_LOG, {"samples_seen": 10, "train_minutes": 0})
    assert samples_per_second("causal", Path(paths["model"]), None) == (None, "not recorded")


def test_a_run_shorter_than_a_rounded_minute_uses_its_seconds(tmp_path):
    # a tiny run's train_minutes rounds to 0.0; its unrounded seconds still give the rate
    paths = family(tmp_path, "elm", CUDA_LOG, {"samples_seen": 8, "train_minutes": 0.0, "train_seconds": 0.25})
    assert samples_per_second("elm", Path(paths["model"]), None) == (32.0, "training loop (summary.json)")


def test_the_gpu_check_config_demands_the_accelerator_and_plans_every_family():
    config = yaml.safe_load((REPO / "config" / "gpu-check.yaml").read_text())
    assert config["device"] == "cuda"  # cpu is allowed only through the test's environment variable
    result = subprocess.run([SNAKEMAKE, "--cores", "1", "-n", "--nolock", "--configfile", "config/gpu-check.yaml",
                             "--", "results/gpu-check/gpu_check.json"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    plan = result.stdout
    for rule in ("train_summarizer", "train_causal", "train_elm", "train_lvm", "gpu_check"):
        assert f"rule {rule}:" in plan, rule
    for rule in ("predict_summarizer", "score_summaries", "report", "hpo_worker"):  # training only: minutes
        assert f"rule {rule}:" not in plan, rule
    assert "VECFLOW_GPU_CHECK_DEVICES:-cuda,mps" in (REPO / "workflow" / "rules" / "gpu_check.smk").read_text()


@pytest.mark.slow
def test_gpu_check_runs_every_family_on_cpu_when_the_test_allows_it(tmp_path, tiny_encoder, tiny_causal_lm,
                                                                   monkeypatch):
    config = tiny_config(tiny_encoder, tiny_causal_lm)
    config.update(device="cpu")
    config["tracks"] = {"lvm": True, "summary": True, "elm": True, "hpo": False, "deploy": False}
    workdir = write_workdir(tmp_path, config)
    monkeypatch.setenv("VECFLOW_GPU_CHECK_DEVICES", "cpu")
    run(workdir, targets=["results/gpu_check.json"], cores=2)
    result = json.loads((workdir / "results" / "gpu_check.json").read_text())
    assert set(result["families"]) == {"seq2seq", "causal", "elm", "lvm-p1", "lvm-p4"}
    for name, row in result["families"].items():
        assert row["device"] == "cpu", name
        assert row["samples_per_s"] and row["samples_per_s"] > 0, name
    assert "| seq2seq | cpu |" in (workdir / "results" / "gpu_check.md").read_text()
    # the same logs fail the real check: they show the CPU, not the accelerator
    families = json.dumps({name: {"log": str(workdir / row["log"]), "model": str(workdir)}
                           for name, row in result["families"].items()})
    done = subprocess.run([sys.executable, "-m", "vecflow.cli", "gpu-check", "--families", families,
                           "--out-dir", str(tmp_path / "again")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "device cpu, expected cuda or mps" in done.stderr
