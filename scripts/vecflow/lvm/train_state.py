"""A ``vecflow train-lvm`` run's resumable state and its published folder.

After every epoch ``DIR.partial/state.pt`` holds the model, optimizer, RNG state, best checkpoint and history,
under a fingerprint of the settings and inputs (``fingerprint``: a rerun with other settings or inputs starts
over); ``start_or_resume`` continues from it. ``publish`` writes DIR atomically (the best checkpoint, its
config, the history, the summary) and drops the side folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from vecflow.core.io import atomic_dir, atomic_path, write_json, write_jsonl
from vecflow.core.tracking import copy_tracking_record
from vecflow.lvm.models import save_lvm

# settings that do not change what a run computes, so a resumed run may differ in them
NOT_FINGERPRINTED = ("device", "stop_after_epoch", "tracking", "run_name", "run")


def fingerprint(settings: dict, input_paths: dict) -> str:
    """Identifies what a run computes: the settings as sent (minus device/tracking/...) and the inputs' sizes and
    times."""
    relevant = {k: v for k, v in settings.items() if k not in NOT_FINGERPRINTED}
    files = {name: [Path(p).stat().st_size, Path(p).stat().st_mtime_ns] for name, p in sorted(input_paths.items())}
    text = json.dumps({"settings": relevant, "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def fresh_state(fingerprint_text: str) -> dict:
    return {"fingerprint": fingerprint_text, "epoch": 0, "history": [], "best_epoch": None, "best_value": None,
            "best_model": None, "best_margin": None, "epochs_without_margin_gain": 0, "stopped_early": False}


def load_state(path: Path, fingerprint_text: str) -> dict | None:
    """The saved state of an interrupted run with the same fingerprint, or None."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: start over rather than fail
        print(f"[train-lvm] ignoring unreadable {path} ({exc})", flush=True)
        return None
    if state.get("fingerprint") != fingerprint_text:
        print(f"[train-lvm] {path} belongs to other settings or inputs: starting over", flush=True)
        return None
    return state


def save_state(path: Path, state: dict, model, optimizer) -> None:
    state = {**state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def restore_state(state: dict, model, optimizer) -> None:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def start_or_resume(partial_dir: Path, fingerprint_text: str, model, optimizer) -> dict:
    """The saved state of an interrupted identical run (model/optimizer/RNG restored), or a fresh one."""
    state_path = partial_dir / "state.pt"
    state = load_state(state_path, fingerprint_text)
    partial_dir.mkdir(parents=True, exist_ok=True)
    if state is None:
        return fresh_state(fingerprint_text)
    restore_state(state, model, optimizer)
    write_jsonl(partial_dir / "history.jsonl", state["history"])  # drop records logged after the saved state
    print(f"[train-lvm] resuming after epoch {state['epoch']} from {state_path}", flush=True)
    return state


def publish(out_dir: Path, partial_dir: Path, state: dict, model, config: dict, summary: dict) -> None:
    """Write DIR atomically with the best checkpoint, then drop the resumable side folder."""
    from vecflow.lvm.models import with_contrast

    if state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    with atomic_dir(out_dir) as tmp:
        save_lvm(tmp, with_contrast(model, config.get("contrast")), config)
        shutil.copyfile(partial_dir / "history.jsonl", tmp / "history.jsonl")
        copy_tracking_record(partial_dir, tmp)  # names the W&B / MLflow runs, when tracking was on
        write_json(tmp / "summary.json", summary)
    shutil.rmtree(partial_dir, ignore_errors=True)
