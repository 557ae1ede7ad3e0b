"""Read back what a tracked run logged, with each library's own reader (no network).

- W&B: ``wandb leet inspect --json RUN_DIR`` (wandb's reader of the offline run's ``.wandb`` transaction log)
  prints one JSON object per record: the run (name, project, config, telemetry), history rows, summary, exit.
- MLflow: ``MlflowClient`` on the local store the run used.

The expectations are computed here from the job's ``history.jsonl`` and its settings, independently of
``vecflow.core.tracking``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

WANDB_ROW_KEYS = ("_step", "_runtime", "_timestamp")


def history_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def numbers(record: dict) -> dict:
    """The numeric values of one history record (booleans included: True == 1), nested dicts as a/b."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update({f"{key}/{k}": v for k, v in numbers(value).items()})
        elif isinstance(value, (int, float)) and not (isinstance(value, float) and not math.isfinite(value)):
            out[key] = value
    return out


def flat_config(config: dict, prefix: str = "") -> dict:
    """Nested settings as dotted keys, as MLflow params are named."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ----------------------------------------------------------------------------------------------- W&B
def wandb_cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "wandb", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"wandb {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def wandb_records(run_dir: Path, wait_s: float = 60.0) -> list[dict]:
    """Every record of the offline run, once its exit record is there (wandb-core may still be flushing)."""
    deadline = time.monotonic() + wait_s
    while True:
        records = [json.loads(line) for line in wandb_cli("leet", "inspect", "--json", str(run_dir)).splitlines()
                   if line.strip()]
        if any(r["type"] == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def wandb_run(records: list[dict]) -> dict:
    return next(r["run"] for r in records if r["type"] == "run")


def wandb_config(records: list[dict]) -> dict:
    config = {}
    for record in records:
        if record["type"] == "run":
            config.update(record["run"].get("config", {}).get("update", {}))
        elif record["type"] == "config":
            config.update(record["config"].get("update", {}))
    config.pop("_wandb", None)
    return config


def wandb_history(records: list[dict]) -> list[dict]:
    return [r["history"]["item"] for r in records if r["type"] == "history"]


def wandb_summary(run_dir: Path) -> dict:
    return json.loads(wandb_cli("leet", "inspect", "--summary", "--json", str(run_dir)))


def assert_wandb_run_matches(run_dir: Path, run_name: str, settings: dict, history: list[dict]) -> list[dict]:
    """The offline run has the job's name and settings, and one history row per history.jsonl record with the
    same numbers (and nothing else); returns the rows."""
    records = wandb_records(run_dir)
    assert any(r["type"] == "exit" for r in records), f"{run_dir}: the run never finished"
    run = wandb_run(records)
    assert run["display_name"] == run_name
    assert run["telemetry"]["feature"].get("offline") is True, "the run must be offline (no network)"
    deprecated = [r["telemetry"]["deprecated"] for r in records if r["type"] == "telemetry"
                  and r["telemetry"].get("deprecated")] + [run["telemetry"].get("deprecated") or {}]
    assert not any(deprecated), f"vecflow uses deprecated wandb API: {deprecated}"
    assert wandb_config(records) == json.loads(json.dumps(settings))
    rows = wandb_history(records)
    assert len(rows) == len(history), "one W&B history row per history.jsonl record"
    steps = [row["_step"] for row in rows]
    assert steps == sorted(set(steps)), f"steps must increase: {steps}"
    for row, record in zip(rows, history):
        assert {k: v for k, v in row.items() if k not in WANDB_ROW_KEYS} == numbers(record)
    return rows


# -------------------------------------------------------------------------------------------- MLflow
def mlflow_key(name: str) -> str:
    return name.replace("@", "_at_")


def assert_mlflow_run_matches(uri: str, run_id: str, run_name: str, settings: dict, history: list[dict]):
    """The local-store run has the job's name, every setting as a param and, for every number in the history,
    a metric whose values (in step order) are the history's; returns the run."""
    from mlflow.tracking import MlflowClient

    assert uri.startswith(("sqlite:///", "file:///")), f"{uri}: not a local MLflow store"
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.run_name == run_name and run.info.status == "FINISHED"
    params = run.data.params
    expected = flat_config(settings)
    assert set(params) == set(expected)
    for key, value in expected.items():
        assert (params[key] if isinstance(value, str) else json.loads(params[key])) == value, key
    keys = {key for record in history for key in numbers(record)}
    for key in sorted(keys):
        logged = sorted(client.get_metric_history(run_id, mlflow_key(key)), key=lambda m: m.step)
        wanted = [numbers(record)[key] for record in history if key in numbers(record)]
        assert [m.value for m in logged] == [float(v) for v in wanted], key
        steps = [m.step for m in logged]
        assert steps == sorted(set(steps)), f"{key}: steps must increase: {steps}"
    return run


def require(module: str):
    """Import a tracking library: skipped where the ``tracking`` extra is not installed, a failure in CI
    (``make test`` installs it there, so a skip would hide a broken install)."""
    import importlib
    import os

    import pytest

    try:
        return importlib.import_module(module)
    except ImportError as error:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is not installed in CI ({error}): `make test` installs '.[test,tracking]'")
        pytest.skip(f"{module} not installed (pip install -e '.[tracking]')")


def offline_wandb_env(monkeypatch, wandb_dir: Path, mode: str | None = None) -> None:
    """No W&B network: WANDB_MODE unset (vecflow's default is offline) or as given; runs under wandb_dir."""
    if mode is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", mode)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
