"""What every track's rules ask of the config and of a job: the file a job using a model depends on, a model's
fetch settings, the folder of a named input or output, how a training job starts its CLI, and the config's hash.

Pure functions (of the config where they take it): nothing here changes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as platform_module
import sys
from pathlib import Path

from vecflow.core.errors import VecflowError


def model_input(config: dict, name: str) -> str:
    """The file that jobs using a model depend on: its manifest (so fetch_model runs first), or for an HF folder
    given by path, its config.json."""
    if name in config["models"]:
        return f"resources/models/{name}/manifest.json"
    if not Path(name, "config.json").exists():
        raise VecflowError(f"config: model '{name}' is neither a models: entry nor an HF folder with config.json")
    return str(Path(name, "config.json"))


def study_dir(config: dict) -> str:
    """The Optuna study's folder (``hpo.study``): its storage, best_params.yaml and tables."""
    return f"{config['results_dir']}/hpo/{config['hpo']['study']}"


def model_settings(config: dict, model: str) -> str:
    """A model's source spec only (fetch_model's --settings): seeds, devices and tracking never change fetched
    weights."""
    return json.dumps(dict(config["models"][model], name=model), sort_keys=True)


def parent_of(key: str):
    """A param giving the folder of a named input or output file (lint: never hard-code path prefixes)."""

    def folder(wildcards, input, output):
        files = dict(input.items())
        files.update(output.items())
        return os.path.dirname(files[key])

    return folder


def launcher(wildcards, resources) -> str:
    """How a training job starts its CLI: `vecflow` for one GPU, else torchrun with one rank per GPU.

    The rank count is the job's granted gpu resource, not the config value: Snakemake caps it at
    `--resources gpu=...` and a profile's set-resources may change it, so a job never starts more ranks
    than it holds GPUs. torchrun --standalone picks a free rendezvous port (several jobs per node are fine).
    """
    ranks = int(resources.gpu)
    if ranks <= 1:
        return "vecflow"
    return f"torchrun --standalone --nproc-per-node {ranks} -m vecflow.cli"


def config_hash(config: dict) -> str:
    """The sha256 of the whole config (sorted JSON): the report names the run's config by it."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def gpu_visible(environ: dict | None = None, platform: str | None = None, machine: str | None = None) -> bool:
    """Whether this machine shows a GPU that torch would pick with ``device: auto``, without importing torch
    (planning stays fast): an NVIDIA, ROCm or WSL2 GPU device node (``GPU_DEVICE_NODES``) not hidden by
    CUDA_VISIBLE_DEVICES, or Apple silicon (MPS)."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    machine = platform_module.machine() if machine is None else machine
    if platform == "darwin":
        return machine == "arm64"
    hidden = environ.get("CUDA_VISIBLE_DEVICES", environ.get("HIP_VISIBLE_DEVICES"))
    if hidden is not None and hidden.strip() in ("", "-1"):
        return False
    # NVIDIA, ROCm, and WSL2's GPU paravirtualisation (CUDA there has no /dev/nvidia* node). A false "yes" only
    # keeps GPU jobs one at a time, as before; a false "no" would let two share one GPU.
    return any(Path(node).exists() for node in GPU_DEVICE_NODES)


def gpu_request(config: dict, count: int = 1, visible: bool | None = None) -> int:
    """The ``gpu`` resource a GPU-capable job declares: ``count`` where it runs on a GPU, 0 where it runs on CPU.

    ``device: cpu`` requests none, ``cuda``/``mps`` request ``count``; ``auto`` asks whether the machine that
    plans the DAG shows a GPU (``gpu_visible``). On a CPU machine `--resources gpu=1` then no longer runs the
    torch jobs one at a time: `--cores` alone shares the CPU between them. A cluster whose submit host has no
    GPU but whose nodes do sets ``device: cuda`` (config/gpu.yaml does), so that every job asks for its GPU.
    """
    device = config["device"]
    if device == "cpu":
        return 0
    if device == "auto" and not (gpu_visible() if visible is None else visible):
        return 0
    return int(count)
