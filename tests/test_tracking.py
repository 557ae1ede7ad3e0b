"""``vecflow.tracking.Tracker``: local history.jsonl always; wandb (offline) and MLflow (local store) when asked.

The wandb and MLflow tests skip when the optional extras are not installed. The wandb test reads the offline
run's transaction log (``run-<id>.wandb``: a LevelDB-style record log of protobuf ``Record`` messages) to prove
that config, history and summary reached it.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from vecflow.errors import VecflowError
from vecflow.tracking import Tracker

CONFIG = {"seed": 7, "learning_rate": 0.001, "arch": "transformer", "generation": {"num_beams": 2}}
RECORDS = [
    {"epoch": 1, "train/loss": 0.9, "val/R@1": 0.25, "note": "warm-up"},
    {"epoch": 2, "train/loss": 0.4, "val/R@1": 0.5, "note": "best"},
]
SUMMARY = {"best_epoch": 2, "best_val_margin": 0.125}


def log_two_epochs(tracker: Tracker) -> None:
    for record in RECORDS:
        tracker.log(record)
    tracker.finish(SUMMARY)


def read_history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- local history ------------------------------------------------------------------------------------------


def test_history_has_one_json_line_per_log_call(tmp_path):
    history = tmp_path / "run" / "history.jsonl"
    log_two_epochs(Tracker(history, "lvm-p4", config=CONFIG))
    assert read_history(history) == RECORDS


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


# ---- wandb offline ------------------------------------------------------------------------------------------


def read_records_once_complete(run_file: Path, timeout_s: float = 60.0) -> list:
    """wandb's service process may still be flushing after finish() on a loaded machine: wait for the run record."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        records = read_wandb_records(run_file)
        if any(r.WhichOneof("record_type") == "run" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def read_wandb_records(run_file: Path) -> list:
    """Protobuf records of a ``.wandb`` file: 7-byte header, then 32 KiB blocks of chunked records."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, pending, records = run_file.read_bytes(), 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer too small for a chunk header: padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_items(records, kind: str) -> list[dict]:
    """``{key: value}`` per config / summary / history record (keys joined with '/' when nested)."""
    out = []
    for record in records:
        if record.WhichOneof("record_type") != kind:
            continue
        message = getattr(record, kind)
        items = message.item if kind == "history" else message.update
        out.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items})
    return out


def test_wandb_offline_run_holds_config_history_and_summary(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    tracker = Tracker(tmp_path / "history.jsonl", "lvm-p4", config=CONFIG,
                      backends={"wandb": True, "project": "vecflow-test"})
    log_two_epochs(tracker)

    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    records = read_records_once_complete(run_file)
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.display_name == "lvm-p4" and run.project == "vecflow-test"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert {k: config[k] for k in CONFIG} == CONFIG
    history = wandb_items(records, "history")
    assert [(h["_step"], h["epoch"], h["train/loss"], h["val/R@1"]) for h in history] == [(0, 1, 0.9, 0.25), (1, 2, 0.4, 0.5)]
    assert all("note" not in h for h in history), "only numbers go to wandb"
    summary = {}
    for update in wandb_items(records, "summary"):
        summary.update(update)
    assert summary["best_epoch"] == 2 and summary["best_val_margin"] == 0.125
    assert read_history(tmp_path / "history.jsonl") == RECORDS


# ---- MLflow local stores ------------------------------------------------------------------------------------


def run_with_mlflow(tmp_path: Path, uri: str):
    mlflow = pytest.importorskip("mlflow")
    tracker = Tracker(tmp_path / "history.jsonl", "summarizer", config=CONFIG,
                      backends={"mlflow": True, "mlflow_uri": uri, "project": "vecflow-test"})
    log_two_epochs(tracker)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("vecflow-test")
    (run,) = client.search_runs([experiment.experiment_id])
    return client, run


def check_mlflow_run(client, run) -> None:
    assert run.info.run_name == "summarizer" and run.info.status == "FINISHED"
    assert run.data.params["seed"] == "7" and run.data.params["arch"] == "transformer"
    assert json.loads(run.data.params["generation"]) == {"num_beams": 2}
    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in sorted(loss, key=lambda m: m.step)] == [(0, 0.9), (1, 0.4)]
    assert run.data.metrics["val/R_at_1"] == 0.5, "'@' is not allowed in MLflow metric names"
    assert run.data.metrics["best_epoch"] == 2.0 and run.data.metrics["best_val_margin"] == 0.125


def test_mlflow_file_store_gets_params_metrics_and_summary(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow >= 3.17 refuses file stores without it
    client, run = run_with_mlflow(tmp_path, (tmp_path / "mlruns").as_uri())
    check_mlflow_run(client, run)


@pytest.mark.slow
def test_mlflow_sqlite_store_gets_params_metrics_and_summary(tmp_path):
    client, run = run_with_mlflow(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")
    check_mlflow_run(client, run)
