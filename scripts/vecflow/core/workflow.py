"""What every track's rules ask of the config and of a job: the file a job using a model depends on, a model's
fetch settings, the folder of a named input or output, how a training job starts its CLI, and the config's hash.

Pure functions (of the config where they take it): nothing here changes it.
"""

from __future__ import annotations

import hashlib
import json
import os
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
