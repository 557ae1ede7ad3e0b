"""An Optuna worker killed mid-trial (issue 11 item 15): the study resumes, the killed trial is marked FAIL, no
finished trial is lost, and hpo-best still picks among the complete trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from test_lvm_hpo import lvm_hpo_settings, one_torch_thread, worker_args  # noqa: F401 (fixture)
from test_lvm_train import lvm_data  # noqa: F401 (fixture)
from vecflow.cli import main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def states(storage: str) -> list[tuple[int, str]]:
    study = optuna.load_study(study_name="lvm", storage=storage)
    return [(t.number, t.state.name) for t in study.get_trials(deepcopy=False)]


def test_a_worker_killed_mid_trial_leaves_a_resumable_study(lvm_data, tmp_path):  # noqa: F811
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    quick = lvm_hpo_settings(trials_per_worker=1)
    assert main(worker_args(lvm_data, tmp_path, quick, storage)) == 0  # trial 0 completes
    finished = optuna.load_study(study_name="lvm", storage=storage).trials[0]
    assert finished.state == TrialState.COMPLETE

    endless = lvm_hpo_settings(trials_per_worker=1)
    endless["lvm"]["epochs"] = 100_000  # never ends on its own: the kill lands mid-trial
    proc = subprocess.Popen([sys.executable, "-m", "vecflow.cli", *worker_args(lvm_data, tmp_path, endless, storage)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO / "scripts"), "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 300  # a bound on waiting for the trial to start, not a timing assertion
        while (1, "RUNNING") not in states(storage):
            assert proc.poll() is None, "the worker exited before its trial started"
            assert time.monotonic() < deadline, "the worker's trial never started"
            time.sleep(0.2)
        study = optuna.load_study(study_name="lvm", storage=storage)
        while "worker" not in study.trials[1].user_attrs and time.monotonic() < deadline:
            time.sleep(0.1)
            study = optuna.load_study(study_name="lvm", storage=storage)
        time.sleep(1.0)  # a few epochs into the trial
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert states(storage) == [(0, "COMPLETE"), (1, "RUNNING")]  # the zombie a killed worker leaves

    assert main(worker_args(lvm_data, tmp_path, quick, storage)) == 0  # the rerun of that worker
    study = optuna.load_study(study_name="lvm", storage=storage)
    assert [(t.number, t.state.name) for t in study.trials] == [(0, "COMPLETE"), (1, "FAIL"), (2, "COMPLETE")]
    assert study.trials[1].user_attrs["failed_because"] == "its worker process was killed"
    kept = study.trials[0]
    assert (kept.params, kept.value) == (finished.params, finished.value)  # no finished trial lost
    record = json.loads((tmp_path / "worker0.json").read_text())
    assert [t["number"] for t in record["trials"]] == [2]

    code = main(["hpo-best", "--study", "lvm", "--storage", storage, "--workers", str(tmp_path / "worker0.json"),
                 "--settings", json.dumps({"hpo": quick["hpo"]}), "--out-params", str(tmp_path / "best.yaml"),
                 "--out-trials", str(tmp_path / "trials.csv"), "--out-plot", str(tmp_path / "imp.png")])
    assert code == 0
    rows = (tmp_path / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3 and "FAIL" in rows[2]
