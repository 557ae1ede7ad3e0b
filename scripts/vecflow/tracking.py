"""Experiment tracking: a local ``history.jsonl`` always, Weights & Biases and MLflow when asked for.

    tracker = Tracker(out_dir / "history.jsonl", run_name="lvm-p4", config=settings,
                      backends=settings.get("tracking", {}))
    tracker.log({"epoch": 1, "train/loss": 0.3})
    tracker.finish({"best_epoch": 3})

``backends`` is the ``tracking`` config section: ``{wandb: bool, mlflow: bool, project, mlflow_uri}``.
wandb runs in whatever mode ``WANDB_MODE`` says (``offline`` works without network); MLflow uses a local
store (``mlflow_uri``, default ``sqlite:///results/mlflow.db``). Both are optional extras: asking for one that is
not installed is a clear error, not a silent no-op.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vecflow.errors import VecflowError


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Tracker:
    def __init__(self, history_path, run_name: str, config: dict | None = None, backends: dict | None = None,
                 resume: bool = False):
        self.history_path = Path(history_path)
        self.history_path.parent.mkdir(parents=True, exist_ok=True)
        if not resume and self.history_path.exists():
            self.history_path.unlink()
        self.run_name = run_name
        backends = backends or {}
        self._wandb_run = self._start_wandb(run_name, config or {}, backends) if backends.get("wandb") else None
        self._mlflow = self._start_mlflow(run_name, config or {}, backends) if backends.get("mlflow") else None
        self._step = 0

    @staticmethod
    def _start_wandb(run_name, config, backends):
        try:
            import wandb
        except ImportError:
            raise VecflowError("tracking.wandb: true but wandb is not installed (pip install 'vecflow[wandb]')") from None
        return wandb.init(project=backends.get("project", "vecflow"), name=run_name, config=config, reinit=True)

    @staticmethod
    def _start_mlflow(run_name, config, backends):
        try:
            import mlflow
        except ImportError:
            raise VecflowError("tracking.mlflow: true but mlflow is not installed (pip install 'vecflow[mlflow]')") from None
        uri = backends.get("mlflow_uri") or f"sqlite:///{Path('results/mlflow.db').resolve()}"
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(backends.get("project", "vecflow"))
        mlflow.start_run(run_name=run_name)
        flat = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in config.items()}
        mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
        return mlflow

    def log(self, metrics: dict, step: int | None = None) -> None:
        """Append one record to history.jsonl and forward numeric values to the enabled backends."""
        step = self._step if step is None else step
        self._step = step + 1
        record = {k: _clean(v) for k, v in metrics.items()}
        with open(self.history_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
        numeric = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._wandb_run is not None:
            self._wandb_run.log(numeric, step=step)
        if self._mlflow is not None:
            self._mlflow.log_metrics({k.replace("@", "_at_"): float(v) for k, v in numeric.items()}, step=step)

    def finish(self, summary: dict | None = None) -> None:
        summary = {k: _clean(v) for k, v in (summary or {}).items()}
        if self._wandb_run is not None:
            self._wandb_run.summary.update(summary)
            self._wandb_run.finish()
        if self._mlflow is not None:
            numeric = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if numeric:
                self._mlflow.log_metrics(numeric)
            self._mlflow.end_run()
