"""What the data rules (``workflow/rules/data.smk``) ask of the config: the data sets it uses (``data:<name>/<key>``
values), the files the fetch_data job reads and writes (``vecflow.data.fetch``), and the article rules'
``--settings`` (``vecflow.data.settings``)."""

from __future__ import annotations

from vecflow.core.settings import job_globals, settings_json
from vecflow.data.fetch import hub_outputs, local_inputs, manifest_path, manifests_for, resolve_references


def used_datasets(config: dict) -> dict[str, dict]:
    """The data sets the config uses, {name: entry}: those fetch_data fetches or checks. Its ``data:<name>/<key>``
    values become the paths fetch_data reports (``resolve_references``: the one place the config's values are
    rewritten, before any rule reads them); a bad reference is a VecflowError naming the config key."""
    used = resolve_references(config)
    return {name: config["datasets"][name] for name in sorted(set(used.values()))}


def manifests(config: dict, datasets: dict, *paths) -> list[str]:
    """The fetch_data manifests of the used data sets these paths belong to (mark them ancient: the files carry
    the mtime, the manifest only orders the check before the job that reads them)."""
    return manifests_for(paths, datasets, config["data_dir"])


def fetch_outputs(config: dict, datasets: dict) -> list[str]:
    """Each used data set's manifest, plus the files a hub data set writes."""
    return [manifest_path(name, config["data_dir"]) for name in datasets] + hub_outputs(datasets, config["data_dir"])


def fetch_inputs(datasets: dict) -> list[str]:
    """A local data set's own files: fetch_data checks them again when they change."""
    return local_inputs(datasets)


def chunk_settings(config: dict) -> str:
    """``vecflow chunk-articles`` (ChunkSettings): lvm.articles, with lvm.chunking as ``chunking``."""
    return settings_json({**job_globals(config), **config["lvm"]["articles"], "chunking": config["lvm"]["chunking"]})


def split_settings(config: dict) -> str:
    """``vecflow split-articles`` (SplitSettings): lvm.split."""
    return settings_json({**job_globals(config), **config["lvm"]["split"]})
