"""HPO across nodes (issue 13 item 5): workers in separate processes share one Optuna study through a journal
file (the NFS-safe storage), and ``hpo.storage`` accepts journal files and RDB URLs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest

from test_hpo import data, hpo_settings  # noqa: F401 (the fixture)
from vecflow.cli import main
from vecflow.core.errors import VecflowError
from vecflow.hpo import storage as hpo

WORKERS, TRIALS = 3, 2


def worker_command(storage: str, index: int, data_dir: Path, lm: Path, encoder: Path, out: Path) -> list[str]:
    settings = hpo_settings(workers=WORKERS, trials_per_worker=TRIALS, pruner_startup_trials=100)
    return [sys.executable, "-m", "vecflow.cli", "hpo-worker", "--study", "s", "--storage", storage,
            "--worker", str(index), "--data-dir", str(data_dir), "--lm", str(lm), "--encoder", str(encoder),
            "--settings", json.dumps(settings), "--out", str(out)]


@pytest.mark.slow
def test_three_worker_processes_share_one_journal_study(tmp_path, data, tiny_causal_lm, tiny_encoder):  # noqa: F811
    journal = tmp_path / "nfs" / "hpo" / "study.journal"  # a bare path: the form hpo.storage takes on a cluster
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    outs = [tmp_path / f"worker_{i}.json" for i in range(WORKERS)]
    logs = [open(tmp_path / f"worker_{i}.log", "w") for i in range(WORKERS)]
    try:  # all three start before any is waited for: they append to the journal at the same time
        procs = [subprocess.Popen(worker_command(str(journal), i, data, tiny_causal_lm, tiny_encoder, outs[i]),
                                  stdout=logs[i], stderr=subprocess.STDOUT, env=env) for i in range(WORKERS)]
        codes = [proc.wait(timeout=900) for proc in procs]
    finally:
        for log in logs:
            log.close()
    assert codes == [0] * WORKERS, "\n".join((tmp_path / f"worker_{i}.log").read_text()[-2000:] for i in range(WORKERS))

    records = [json.loads(out.read_text()) for out in outs]
    numbers = [t["number"] for record in records for t in record["trials"]]
    assert [len(record["trials"]) for record in records] == [TRIALS] * WORKERS
    assert sorted(numbers) == list(range(WORKERS * TRIALS)), f"duplicate or missing trial numbers: {numbers}"

    study = hpo.load_study("s", str(journal))
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(WORKERS * TRIALS))
    assert len({t._trial_id for t in trials}) == WORKERS * TRIALS
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert Counter(t.user_attrs["worker"] for t in trials) == {i: TRIALS for i in range(WORKERS)}
    for i, record in enumerate(records):  # each worker reported exactly the trials the study attributes to it
        assert {t["number"] for t in record["trials"]} == {t.number for t in trials if t.user_attrs["worker"] == i}

    params = tmp_path / "best.yaml"
    code = main(["hpo-best", "--study", "s", "--storage", str(journal), "--workers", ",".join(map(str, outs)),
                 "--settings", json.dumps({"hpo": hpo_settings()["hpo"]}), "--out-params", str(params),
                 "--out-trials", str(tmp_path / "trials.csv"), "--out-plot", str(tmp_path / "imp.png")])
    assert code == 0 and f"trial {study.best_trial.number}," in params.read_text()
    assert len((tmp_path / "trials.csv").read_text().splitlines()) == 1 + WORKERS * TRIALS


# ---- the storage forms (fast) --------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["journal_url", "bare_journal", "bare_log"])
def test_journal_forms_open_a_journal_storage_and_create_the_folder(tmp_path, form):
    path = tmp_path / "shared" / ("study.log" if form == "bare_log" else "study.journal")
    url = f"journal:///{path}" if form == "journal_url" else str(path)
    storage = hpo.open_storage(url)
    assert isinstance(storage, optuna.storages.JournalStorage) and path.parent.is_dir()
    optuna.create_study(study_name="x", storage=storage).optimize(lambda t: t.suggest_float("a", 0, 1), n_trials=2)
    again = hpo.load_study("x", url)  # a second opener (another node) sees the trials the first wrote
    assert [t.number for t in again.trials] == [0, 1] and path.stat().st_size > 0


def test_rdb_urls_pass_through_and_sqlite_gets_its_folder(tmp_path):
    assert hpo.open_storage("postgresql://hpo@db.cluster/vecflow") == "postgresql://hpo@db.cluster/vecflow"
    url = f"sqlite:///{tmp_path}/deep/study.db"
    storage = hpo.open_storage(url)  # an RDBStorage whose schema was created under a file lock
    assert str(storage.engine.url) == url and (tmp_path / "deep" / "study.db").exists()


@pytest.mark.parametrize("url, message", [
    ("", "--storage: empty"),
    ("results/hpo/study.db", "is neither a URL nor a journal file"),
    ("journal:///", "names a folder, not a journal file"),
])
def test_bad_storage_values_say_what_to_use(url, message):
    with pytest.raises(VecflowError, match=message) as info:
        hpo.open_storage(url)
    assert "journal:///path.journal" in str(info.value) or "folder" in message


def test_older_optuna_uses_journal_file_storage(tmp_path, monkeypatch):
    """Before Optuna 4 the backend was optuna.storages.JournalFileStorage (no optuna.storages.journal module)."""
    opened = []

    class OldJournalFileStorage(optuna.storages.journal.JournalFileBackend):
        def __init__(self, file_path, lock_obj=None):
            opened.append(file_path)
            super().__init__(file_path, lock_obj)

    monkeypatch.setitem(sys.modules, "optuna.storages.journal", None)  # `from optuna.storages.journal` fails
    monkeypatch.setattr(optuna.storages, "JournalFileStorage", OldJournalFileStorage, raising=False)
    storage = hpo.open_storage(str(tmp_path / "old.journal"))
    assert opened == [str(tmp_path / "old.journal")] and isinstance(storage, optuna.storages.JournalStorage)
