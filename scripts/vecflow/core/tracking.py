"""Experiment tracking: a local ``history.jsonl`` always, Weights & Biases and MLflow when asked for.

    tracker = Tracker(out_dir / "history.jsonl", run_name="lvm-p4", config=settings.received,
                      backends=settings.tracking)
    tracker.log({"epoch": 1, "train/loss": 0.3}, step=1)
    tracker.finish({"best_epoch": 3})

``backends`` is the ``tracking`` config section: ``{wandb: bool, mlflow: bool, project, mlflow_uri}``.

- wandb runs **offline** unless ``WANDB_MODE`` says otherwise (``WANDB_MODE=online`` after ``wandb login``); its
  run folder goes under ``WANDB_DIR`` when set, else ``results/`` (``results/wandb/offline-run-*``), which
  ``wandb sync DIR`` uploads later. The config is the run's config; every record's numbers are one history row.
- MLflow logs through ``MlflowClient`` into a local store (``mlflow_uri``, default ``sqlite:///results/mlflow.db``):
  the config flattened to dotted params (strings as they are, other values as JSON), each number a metric at
  the record's step (names outside MLflow's alphabet get ``_``; ``@`` becomes ``_at_``, see ``mlflow_key``).
- When a backend is on, ``tracking.json`` beside the history names the runs (backend, run id, W&B run folder,
  MLflow store/experiment); a trainer copies it into its published folder (``copy_tracking_record``) and the
  report's lineage section lists it.

Both backends are optional extras (``vecflow[tracking]``): asking for one that is not installed is a clear
error, not a silent no-op. Nested dicts in a record are forwarded as ``a/b`` keys; booleans as 0/1; strings,
lists and non-finite numbers (null in the history) are not forwarded.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from vecflow.core.errors import VecflowError

TRACKING_FILE = "tracking.json"
DEFAULT_DIR = "results"  # W&B run folders and the default MLflow store, both ignored by git
_MLFLOW_BAD_CHARS = re.compile(r"[^0-9A-Za-z_\-. :/]")


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def numeric_items(record: dict, prefix: str = "") -> dict[str, float | int]:
    """The numbers of a (cleaned) record, nested dicts as ``a/b`` keys, booleans as 0/1."""
    out: dict[str, float | int] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(numeric_items(value, prefix=f"{name}/"))
        elif isinstance(value, bool):
            out[name] = int(value)
        elif isinstance(value, (int, float)):
            out[name] = value
    return out


def mlflow_key(name: str) -> str:
    """An MLflow metric/param name: '@' -> '_at_', any other character MLflow rejects -> '_'."""
    return _MLFLOW_BAD_CHARS.sub("_", name.replace("@", "_at_"))[:250]


def flatten_params(config: dict, prefix: str = "") -> dict[str, str]:
    """``{"generation": {"num_beams": 2}, "arch": "t"}`` -> ``{"generation.num_beams": "2", "arch": "t"}``.

    Strings stay as they are, every other value is JSON (lists included), so ``json.loads`` gives it back."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_params(value, prefix=f"{name}."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(_clean(value), default=str)
    return out


def read_tracking_record(folder) -> list[dict]:
    """The runs named by ``folder/tracking.json`` ([] when the folder has none)."""
    path = Path(folder) / TRACKING_FILE
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8")).get("runs", [])


def copy_tracking_record(src_dir, dst_dir) -> None:
    """Copy ``tracking.json`` from a trainer's working folder into the folder it publishes, when there is one."""
    src = Path(src_dir) / TRACKING_FILE
    if src.is_file():
        shutil.copyfile(src, Path(dst_dir) / TRACKING_FILE)


class Tracker:
    def __init__(self, history_path, run_name: str, config: dict | None = None, backends: dict | None = None,
                 resume: bool = False):
        self.history_path = Path(history_path)
        self.history_path.parent.mkdir(parents=True, exist_ok=True)
        self.record_path = self.history_path.with_name(TRACKING_FILE)
        if not resume:
            for path in (self.history_path, self.record_path):
                if path.exists():
                    path.unlink()
        self.run_name = run_name
        backends = backends or {}
        config = config or {}
        self.project = backends.get("project", "vecflow")
        self.runs: list[dict] = []
        self._wandb_run = self._start_wandb(config) if backends.get("wandb") else None
        self._mlflow = self._start_mlflow(config, backends) if backends.get("mlflow") else None
        self._mlflow_history_keys: set[str] = set()
        self._step = 0
        if self.runs:
            self._write_record()

    # ------------------------------------------------------------------------------------------ backends
    def _start_wandb(self, config: dict):
        try:
            import wandb
        except ImportError:
            raise VecflowError("tracking.wandb: true but wandb is not installed "
                               "(pip install 'vecflow[tracking]')") from None
        mode = os.environ.get("WANDB_MODE") or "offline"
        wandb_dir = None
        if not os.environ.get("WANDB_DIR"):
            wandb_dir = Path(DEFAULT_DIR).resolve()
            wandb_dir.mkdir(parents=True, exist_ok=True)
        run = wandb.init(project=self.project, name=self.run_name, config=config, mode=mode, dir=wandb_dir,
                         reinit="finish_previous")
        self.runs.append({"backend": "wandb", "run_name": self.run_name, "run_id": run.id,
                          "mode": run.settings.mode, "project": self.project, "dir": str(run.settings.sync_dir)})
        return run

    def _start_mlflow(self, config: dict, backends: dict):
        try:
            from mlflow.entities import Param
            from mlflow.exceptions import MlflowException
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise VecflowError("tracking.mlflow: true but mlflow is not installed "
                               "(pip install 'vecflow[tracking]')") from None
        uri = backends.get("mlflow_uri")
        if not uri:
            Path(DEFAULT_DIR).mkdir(parents=True, exist_ok=True)
            uri = f"sqlite:///{Path(DEFAULT_DIR, 'mlflow.db').resolve()}"
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(self.project)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = client.create_experiment(self.project)
            except MlflowException:  # created meanwhile by a parallel job
                experiment_id = client.get_experiment_by_name(self.project).experiment_id
        run = client.create_run(experiment_id, run_name=self.run_name)
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        params = [Param(mlflow_key(k), v[:MAX_PARAM_VAL_LENGTH]) for k, v in flatten_params(config).items()]
        for start in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(run.info.run_id, params=params[start:start + MAX_PARAMS_TAGS_PER_BATCH])
        self.runs.append({"backend": "mlflow", "run_name": self.run_name, "run_id": run.info.run_id,
                          "tracking_uri": uri, "experiment": self.project, "experiment_id": experiment_id})
        return client, run.info.run_id

    def _write_record(self) -> None:
        from vecflow.core.io import write_json

        earlier = []
        if self.record_path.is_file():  # a resumed run keeps the runs of its earlier segments
            earlier = [r for r in read_tracking_record(self.record_path.parent) if r not in self.runs]
        write_json(self.record_path, {"runs": earlier + self.runs})

    def _mlflow_log(self, values: dict, step: int, summary: bool = False) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        client, run_id = self._mlflow
        now = int(time.time() * 1000)
        metrics = []
        for key, value in values.items():
            name = mlflow_key(key)
            if summary and name in self._mlflow_history_keys:
                name = mlflow_key(f"summary/{key}")  # keeps the per-step history of that metric intact
            elif not summary:
                self._mlflow_history_keys.add(name)
            metrics.append(Metric(name, float(value), now, step))
        for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=metrics[start:start + MAX_METRICS_PER_BATCH])

    # --------------------------------------------------------------------------------------------- API
    def log(self, metrics: dict, step: int | None = None) -> None:
        """Append one record to history.jsonl and forward its numbers to the enabled backends at ``step``."""
        step = self._step if step is None else step
        self._step = step + 1
        record = {k: _clean(v) for k, v in metrics.items()}
        with open(self.history_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
        numeric = numeric_items(record)
        if self._wandb_run is not None:
            self._wandb_run.log(numeric, step=step, commit=True)
        if self._mlflow is not None:
            self._mlflow_log(numeric, step)

    def finish(self, summary: dict | None = None) -> None:
        summary = {k: _clean(v) for k, v in (summary or {}).items()}
        if self._wandb_run is not None:
            self._wandb_run.summary.update(summary)
            self._wandb_run.finish()
            self._wandb_run = None
        if self._mlflow is not None:
            numeric = numeric_items(summary)
            if numeric:
                self._mlflow_log(numeric, step=max(self._step - 1, 0), summary=True)
            client, run_id = self._mlflow
            client.set_terminated(run_id, "FINISHED")
            self._mlflow = None
