"""Where a study lives (``hpo.storage``) and what every worker does with it: open (or create) the shared study
with its seeded sampler, mark the trials a killed run left RUNNING as failed, record the trials it ran.

Storage (``hpo.storage``; the parent folder of a file is created):

- ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``: the default, for one machine (SQLite's
  locks are not reliable on NFS);
- a journal file, ``journal:///relative/path.journal``, ``journal:////absolute/path.journal`` or a bare path
  ending in ``.journal`` or ``.log``: Optuna's ``JournalStorage`` on that file (``JournalFileBackend``, or
  ``JournalFileStorage`` before Optuna 4), which appends under a symlink lock: safe for workers on several
  nodes sharing one file over NFS, with no database server;
- any other SQLAlchemy URL (``postgresql://user@host/db``, ``mysql+pymysql://...``): an RDB every node reaches.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vecflow.core.errors import VecflowError

RESUME_SEED_STRIDE = 1000
JOURNAL_SUFFIXES = (".journal", ".log")  # a bare path with one of these is a journal file


def journal_file_backend(path: str):
    """Optuna's journal file backend on ``path``: ``JournalFileBackend`` (Optuna >= 4) or ``JournalFileStorage``
    (3.x). Both lock with a symlink by default (atomic on NFS), so processes on several hosts can append."""
    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # Optuna 3.x has the same backend under its old name
        from optuna.storages import JournalFileStorage as JournalFileBackend
    return JournalFileBackend(path)


def journal_path(url: str) -> Path | None:
    """The journal file that ``url`` names (``journal:///path`` or a bare ``*.journal`` / ``*.log`` path)."""
    if url.startswith("journal:///"):
        return Path(url[len("journal:///") :])
    if "://" not in url and url.endswith(JOURNAL_SUFFIXES):
        return Path(url)
    return None


def open_storage(url: str):
    """An Optuna storage for ``url``; file-based storages get their parent folder created."""
    from optuna.storages import JournalStorage

    usage = "use sqlite:///path.db, journal:///path.journal (or a path ending in .journal) or an RDB URL"
    if not url:
        raise VecflowError(f"--storage: empty ({usage})")
    if url.startswith("sqlite:///"):
        from filelock import FileLock
        from optuna.storages import RDBStorage

        db = Path(url[len("sqlite:///") :])
        db.parent.mkdir(parents=True, exist_ok=True)
        # workers started together would race to create the schema (UNIQUE constraint failed: alembic_version)
        with FileLock(f"{db}.lock"):
            return RDBStorage(url)
    path = journal_path(url)
    if path is not None:
        if path.is_dir() or not path.name:
            raise VecflowError(f"--storage: '{url}' names a folder, not a journal file")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(journal_file_backend(str(path)))
    if "://" not in url:
        raise VecflowError(f"--storage: '{url}' is neither a URL nor a journal file ({usage})")
    return url


def load_study(study_name: str, storage_url: str):
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    except KeyError:
        raise VecflowError(f"{storage_url}: no study named '{study_name}'") from None



# ----------------------------------------------------------------------------------------------- workers
def fail_abandoned_trials(study, worker: int) -> list[int]:
    """This worker's trials still RUNNING when it starts were left by a killed run (Snakemake runs one job per
    worker index at a time): mark them FAIL so the study resumes cleanly; its COMPLETE trials are kept."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    abandoned = [t for t in running if t.user_attrs.get("worker") == worker]
    for trial in abandoned:
        study._storage.set_trial_user_attr(trial._trial_id, "failed_because", "its worker process was killed")
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        print(f"[vecflow] hpo-worker {worker}: trial {trial.number} was left running by a killed run: marked FAIL")
    return [t.number for t in abandoned]


def open_worker_study(study_name: str, storage_url: str, worker: int, seed: int, sampler: Callable, pruner,
                      **directions):
    """The shared study, created if new (``directions``: ``direction=`` or ``directions=``), with this worker's
    sampler, ``sampler(seed + worker)``; returns ``(study, sampler_seed)``. A worker that resumes draws from a
    sampler seeded ``RESUME_SEED_STRIDE`` further per trial it already ran, so it does not re-propose its first
    parameters; the trials a killed run left RUNNING are marked FAIL first."""
    import optuna

    study = optuna.create_study(study_name=study_name, storage=open_storage(storage_url), load_if_exists=True,
                                sampler=sampler(seed + worker), pruner=pruner, **directions)
    fail_abandoned_trials(study, worker)
    earlier = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == worker]
    sampler_seed = seed + worker + RESUME_SEED_STRIDE * len(earlier)
    if earlier:
        study.sampler = sampler(sampler_seed)
    return study, sampler_seed


def trial_record(trial) -> dict:
    """One trial as a worker's JSON lists it: number, state, value(s), parameters, reported values."""
    return {
        "number": trial.number,
        "state": trial.state.name,
        **({"values": trial.values} if trial.values is not None and len(trial.values) > 1 else {"value": trial.value}),
        "params": trial.params,
        "intermediate": {str(k): v for k, v in sorted(trial.intermediate_values.items())},
    }
