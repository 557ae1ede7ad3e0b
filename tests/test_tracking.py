"""``vecflow.core.tracking.Tracker``: local history.jsonl always; wandb (offline) and MLflow (local store) when asked.

The wandb and MLflow tests read back what was logged with each library's own reader (``wandb leet inspect``
on the offline run, ``MlflowClient`` on the local store; see ``tracking_readers``). They skip where the
``tracking`` extra is not installed and fail in CI, where ``make test`` installs it. Tiny real training jobs
with tracking on are in ``test_tracking_jobs.py``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from tracking_readers import (
    assert_mlflow_run_matches,
    assert_wandb_run_matches,
    offline_wandb_env,
    require,
    wandb_summary,
)
from vecflow.core.errors import VecflowError
from vecflow.core.tracking import TRACKING_FILE, Tracker, copy_tracking_record, mlflow_key, read_tracking_record

CONFIG = {"seed": 7, "learning_rate": 0.001, "arch": "transformer", "generation": {"num_beams": 2},
          "layers": [1, 2], "bf16": False}
RECORDS = [
    {"epoch": 1, "train/loss": 0.9, "val/R@1": 0.25, "note": "warm-up", "selection/eligible": False},
    {"epoch": 2, "train/loss": 0.4, "val/R@1": 0.5, "note": "best", "selection/eligible": True},
]
SUMMARY = {"best_epoch": 2, "best_val_margin": 0.125, "epoch": 2}


def log_two_epochs(tracker: Tracker) -> None:
    for record in RECORDS:
        tracker.log(record, step=record["epoch"])
    tracker.finish(SUMMARY)


def read_history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- local history ------------------------------------------------------------------------------------------


def test_history_has_one_json_line_per_log_call(tmp_path):
    history = tmp_path / "run" / "history.jsonl"
    log_two_epochs(Tracker(history, "lvm-p4", config=CONFIG))
    assert read_history(history) == RECORDS
    assert not (history.parent / TRACKING_FILE).exists(), "no tracking.json when no backend is on"


def test_numpy_and_torch_scalars_become_numbers_and_non_finite_becomes_null(tmp_path):
    import torch

    history = tmp_path / "history.jsonl"
    tracker = Tracker(history, "run")
    tracker.log({"a": np.float32(0.5), "b": torch.tensor(3), "c": float("nan"), "d": math.inf, "e": np.int64(4)})
    tracker.finish()
    assert read_history(history) == [{"a": 0.5, "b": 3, "c": None, "d": None, "e": 4}]


def test_a_new_run_replaces_the_history_and_resume_appends(tmp_path):
    history = tmp_path / "history.jsonl"
    first = Tracker(history, "run")
    first.log({"epoch": 1})
    first.finish()
    fresh = Tracker(history, "run")
    fresh.log({"epoch": 1, "restart": True})
    resumed = Tracker(history, "run", resume=True)
    resumed.log({"epoch": 2})
    assert read_history(history) == [{"epoch": 1, "restart": True}, {"epoch": 2}]


@pytest.mark.parametrize("backend", ["wandb", "mlflow"])
def test_asking_for_a_missing_backend_is_a_clear_error(tmp_path, monkeypatch, backend):
    monkeypatch.setitem(sys.modules, backend, None)  # makes "import <backend>" raise ImportError
    with pytest.raises(VecflowError, match=rf"tracking.{backend}: true but {backend} is not installed"):
        Tracker(tmp_path / "history.jsonl", "run", backends={backend: True})


def test_disabled_backends_are_not_imported(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    tracker = Tracker(tmp_path / "history.jsonl", "run", backends={"wandb": False, "mlflow": False})
    log_two_epochs(tracker)
    assert len(read_history(tmp_path / "history.jsonl")) == 2


def test_mlflow_names_keep_to_mlflow_alphabet():
    assert mlflow_key("val/R@1") == "val/R_at_1"
    assert mlflow_key("val/c+1 (x)") == "val/c_1 _x_"
    assert mlflow_key("train/loss") == "train/loss"


def test_copy_tracking_record_copies_only_what_is_there(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir(), dst.mkdir()
    copy_tracking_record(src, dst)
    assert read_tracking_record(dst) == []
    (src / TRACKING_FILE).write_text(json.dumps({"runs": [{"backend": "mlflow", "run_id": "abc"}]}))
    copy_tracking_record(src, dst)
    assert read_tracking_record(dst) == [{"backend": "mlflow", "run_id": "abc"}]


# ---- wandb offline ------------------------------------------------------------------------------------------


def test_wandb_is_offline_by_default_and_holds_config_history_and_summary(tmp_path, monkeypatch):
    require("wandb")
    offline_wandb_env(monkeypatch, tmp_path)  # WANDB_MODE unset: vecflow must choose offline itself
    history = tmp_path / "run" / "history.jsonl"
    tracker = Tracker(history, "lvm-p4", config=CONFIG, backends={"wandb": True, "project": "vecflow-test"})
    log_two_epochs(tracker)

    (run,) = read_tracking_record(history.parent)
    run_dir = Path(run["dir"])
    assert run["backend"] == "wandb" and run["mode"] == "offline" and run["project"] == "vecflow-test"
    assert run_dir.parent == tmp_path / "wandb" and run_dir.name.startswith("offline-run-")
    assert run_dir.name.endswith(run["run_id"])
    rows = assert_wandb_run_matches(run_dir, "lvm-p4", CONFIG, RECORDS)
    assert [row["_step"] for row in rows] == [1, 2], "the trainer's step is the W&B step"
    assert all("note" not in row for row in rows), "only numbers go to wandb"
    inspected = wandb_summary(run_dir)
    assert inspected["state"] == "finished" and inspected["project"] == "vecflow-test"
    assert {k: inspected["summary"][k] for k in SUMMARY} == SUMMARY
    assert read_history(history) == RECORDS


def test_wandb_folder_defaults_to_results_when_wandb_dir_is_unset(tmp_path, monkeypatch):
    require("wandb")
    offline_wandb_env(monkeypatch, tmp_path, mode="offline")
    monkeypatch.delenv("WANDB_DIR")
    monkeypatch.chdir(tmp_path)
    tracker = Tracker(tmp_path / "history.jsonl", "run", backends={"wandb": True})
    tracker.finish()
    (run,) = read_tracking_record(tmp_path)
    assert Path(run["dir"]).parent == (tmp_path / "results" / "wandb").resolve()


# ---- MLflow local stores ------------------------------------------------------------------------------------


def run_with_mlflow(tmp_path: Path, uri: str, **kwargs) -> dict:
    require("mlflow")
    history = tmp_path / "history.jsonl"
    tracker = Tracker(history, "summarizer", config=CONFIG,
                      backends={"mlflow": True, "mlflow_uri": uri, "project": "vecflow-test"}, **kwargs)
    log_two_epochs(tracker)
    runs = read_tracking_record(tmp_path)
    assert runs[-1]["backend"] == "mlflow" and runs[-1]["tracking_uri"] == uri
    assert runs[-1]["experiment"] == "vecflow-test"
    return runs[-1]


def check_mlflow_run(uri: str, run_id: str) -> None:
    from mlflow.tracking import MlflowClient

    run = assert_mlflow_run_matches(uri, run_id, "summarizer", CONFIG, RECORDS)
    assert run.data.params["generation.num_beams"] == "2" and run.data.params["layers"] == "[1, 2]"
    assert run.data.params["arch"] == "transformer", "strings are params as they are"
    assert run.data.metrics["val/R_at_1"] == 0.5, "'@' is not allowed in MLflow metric names"
    assert run.data.metrics["best_epoch"] == 2.0 and run.data.metrics["best_val_margin"] == 0.125
    assert run.data.metrics["summary/epoch"] == 2.0, "a summary key that is also a history metric is renamed"
    epochs = MlflowClient(tracking_uri=uri).get_metric_history(run_id, "epoch")
    assert sorted((m.step, m.value) for m in epochs) == [(1, 1.0), (2, 2.0)]


def test_mlflow_file_store_gets_params_metrics_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow >= 3.17 refuses file stores without it
    uri = (tmp_path / "mlruns").as_uri()
    run = run_with_mlflow(tmp_path, uri)
    check_mlflow_run(uri, run["run_id"])


def test_mlflow_sqlite_store_gets_params_metrics_and_summary_and_resume_keeps_both_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = run_with_mlflow(tmp_path, uri)
    check_mlflow_run(uri, first["run_id"])
    second = run_with_mlflow(tmp_path, uri, resume=True)
    assert second["run_id"] != first["run_id"]
    assert [r["run_id"] for r in read_tracking_record(tmp_path)] == [first["run_id"], second["run_id"]]
    fresh = run_with_mlflow(tmp_path, uri)
    assert [r["run_id"] for r in read_tracking_record(tmp_path)] == [fresh["run_id"]], "a new run starts afresh"


# ---- the report's lineage section ---------------------------------------------------------------------------


def test_report_rejects_a_tracking_file_without_a_runs_list(tmp_path):
    from vecflow.ship.report import build_report
    from vecflow.ship.report_artifacts import collect_artifacts
    from vecflow.ship.settings import ReportSettings

    bad = tmp_path / "tracking.json"
    bad.write_text(json.dumps({"runs": {"backend": "wandb"}}))
    with pytest.raises(VecflowError, match=rf"{bad}: field 'runs': expected a list of objects"):
        build_report(collect_artifacts([f"tracking:lvm-p4={bad}"]), ReportSettings())


def test_report_without_tracking_has_no_tracking_table(tmp_path):
    from vecflow.ship.report import build_report
    from vecflow.ship.settings import ReportSettings

    assert "Experiment tracking" not in build_report({}, ReportSettings())
