"""Tiny real training jobs with tracking on: W&B offline and MLflow's local store hold what history.jsonl holds.

One LVM job (through the ``vecflow train-lvm`` CLI) and one summarizer job (``train_summarizer``) each run with
``tracking: {wandb: true, mlflow: true}``, with ``WANDB_MODE`` unset (vecflow's default is offline) and a sqlite
MLflow store in the test's folder. Each library's own reader then gives back the job's config and every number
of every history record (see ``tracking_readers``); ``tracking.json`` in the published folder names the runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from test_lvm_train import SETTINGS as LVM_SETTINGS
from test_lvm_train import cli_args, lvm_data  # noqa: F401  (lvm_data is a fixture)
from test_summarizer import DIALOGUES
from test_summarizer import SETTINGS as SUMMARIZER_SETTINGS
from test_summarizer import write_dialogues
from tracking_readers import (
    assert_mlflow_run_matches,
    assert_wandb_run_matches,
    history_records,
    offline_wandb_env,
    require,
)
from vecflow.core.tracking import read_tracking_record

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """One sqlite store for both jobs (as the pipeline's results/mlflow.db; creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def tracked_job(root: Path, uri: str, train) -> dict:
    """Run ``train(tracking)`` with both backends on and no network; returns what the tests need."""
    require("wandb"), require("mlflow")
    tracking = {"wandb": True, "mlflow": True, "project": "vecflow-test", "mlflow_uri": uri}
    with pytest.MonkeyPatch.context() as monkeypatch:
        offline_wandb_env(monkeypatch, root)
        settings, out = train(tracking)
    runs = {run["backend"]: run for run in read_tracking_record(out)}
    return {"settings": settings, "out": out, "runs": runs, "uri": uri,
            "history": history_records(out / "history.jsonl")}


@pytest.fixture(scope="module")
def lvm_job(lvm_data, mlflow_uri, tmp_path_factory):  # noqa: F811
    from vecflow.cli import main

    root = tmp_path_factory.mktemp("tracked-lvm")

    def train(tracking):
        settings = {**LVM_SETTINGS, "run": "p4", "tracking": tracking}
        assert main(cli_args(lvm_data, root / "model", settings)) == 0
        return settings, root / "model"

    return tracked_job(root, mlflow_uri, train) | {"run_name": "lvm-p4", "epochs": LVM_SETTINGS["epochs"]}


@pytest.fixture(scope="module")
def summarizer_job(tiny_encoder, mlflow_uri, tmp_path_factory):
    from vecflow.summary.seq2seq import train_summarizer

    root = tmp_path_factory.mktemp("tracked-summarizer")
    train_path, val_path = write_dialogues(root / "train.jsonl"), write_dialogues(root / "val.jsonl", DIALOGUES[:2])

    def train(tracking):
        settings = {**SUMMARIZER_SETTINGS, "epochs": 2, "tracking": tracking}
        train_summarizer(train_path, val_path, tiny_encoder, settings, root / "model")
        return settings, root / "model"

    return tracked_job(root, mlflow_uri, train) | {"run_name": "summarizer"}


JOBS = ["lvm_job", "summarizer_job"]


@pytest.mark.parametrize("job_name", JOBS)
def test_published_folder_names_the_offline_wandb_run_and_the_local_mlflow_run(job_name, request):
    job = request.getfixturevalue(job_name)
    assert set(job["runs"]) == {"wandb", "mlflow"}
    wandb_run, mlflow_run = job["runs"]["wandb"], job["runs"]["mlflow"]
    assert wandb_run["mode"] == "offline" and wandb_run["run_name"] == job["run_name"]
    assert Path(wandb_run["dir"]).is_dir() and Path(wandb_run["dir"]).name.startswith("offline-run-")
    assert mlflow_run["tracking_uri"] == job["uri"] and mlflow_run["run_name"] == job["run_name"]
    assert len(job["history"]) >= 2, "the job must log at least two records to compare"


@pytest.mark.parametrize("job_name", JOBS)
def test_wandb_offline_run_has_the_config_and_every_history_number(job_name, request):
    job = request.getfixturevalue(job_name)
    rows = assert_wandb_run_matches(Path(job["runs"]["wandb"]["dir"]), job["run_name"], job["settings"],
                                    job["history"])
    if "epochs" in job:  # the LVM logs the untrained start (step 0, a selection candidate), then one per epoch
        assert [row["_step"] for row in rows] == list(range(0, job["epochs"] + 1))


@pytest.mark.parametrize("job_name", JOBS)
def test_mlflow_run_has_the_config_and_every_history_number(job_name, request):
    job = request.getfixturevalue(job_name)
    run = assert_mlflow_run_matches(job["uri"], job["runs"]["mlflow"]["run_id"], job["run_name"], job["settings"],
                                    job["history"])
    assert json.loads(run.data.params["tracking.wandb"]) is True


def test_report_lineage_names_the_tracking_runs_of_both_jobs(lvm_job, summarizer_job, tmp_path):
    """The report as the workflow calls it: each training folder gives its history.jsonl and tracking.json."""
    import html

    from vecflow.ship.report import main as report_main

    argv = []
    for name, job in (("lvm-p4", lvm_job), ("seq2seq", summarizer_job)):
        argv += ["--artifact", f"history:{name}={job['out'] / 'history.jsonl'}",
                 "--artifact", f"tracking:{name}={job['out'] / 'tracking.json'}"]
    assert report_main(argv + ["--settings", "{}", "--out", str(tmp_path / "report.html")]) == 0
    page = html.unescape((tmp_path / "report.html").read_text())
    lineage = page[page.index("Experiment tracking"):page.index('id="data"')]
    for job in (lvm_job, summarizer_job):
        assert job["runs"]["wandb"]["dir"] in lineage and job["runs"]["wandb"]["run_id"] in lineage
        assert job["runs"]["mlflow"]["run_id"] in lineage and job["uri"] in lineage
    assert "wandb sync" in lineage
