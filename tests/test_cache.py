"""Shared caches (issue 25 item 4): Snakemake's between-workflow output cache (`--cache` with
SNAKEMAKE_OUTPUT_CACHE) lets a second checkout or results_dir take the fetched models (fetch_model) and the
embedding exports (embed_chunks) of the first instead of computing them again.

The fast test checks the cache keys from the DAG alone (Snakemake's own ProvenanceHashMap): the same in two
results_dirs, one for the embed_chunks job (every split's bank, its outputs named so that Snakemake can cache
them), and a new one when a local model folder changes. The slow test runs the jobs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from snakemake.api import SnakemakeApi
from snakemake.caching.hash import ProvenanceHashMap
from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

from test_workflow import tiny_config, write_workdir
from vecflow.cli import main as cli_main
from vecflow.core import fetch
from vecflow.core.errors import VecflowError
from vecflow.core.io import sha256_file
from vecflow.lvm.workflow import SPLITS
from workflow_api import SNAKEFILE

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
CACHED_RULES = {"fetch_model", "embed_chunks"}


def embedding_targets(results_dir: str, splits=SPLITS) -> list[str]:
    return [f"{results_dir}/lvm/embeddings/{split}.safetensors" for split in splits]


def cache_workdir(path: Path, tiny_encoder: Path, tiny_causal_lm: Path, results_dir: str) -> Path:
    config = tiny_config(tiny_encoder, tiny_causal_lm)
    config["results_dir"] = results_dir
    return write_workdir(path, config)


def cache_keys(workdir: Path, targets: list[str]) -> dict[str, str]:
    """'rule:wildcards' -> the key `--cache` files the job's outputs under, for every cacheable job of the DAG.
    Reaches into Snakemake (the workflow behind the API, its DAG, ProvenanceHashMap): what `--cache` computes."""
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1, resources={"gpu": 1}),
            config_settings=ConfigSettings(),
            snakefile=SNAKEFILE,
            workdir=workdir,
        )
        dag_api = workflow_api.dag(DAGSettings(targets=set(targets), print_dag_as="dot"))
        dag_api.printrulegraph()  # builds the DAG (and prints the rule graph: captured by pytest)
        workflow = dag_api.workflow_api._workflow
        hashes = ProvenanceHashMap()
        keys = {}
        for job in workflow.dag.jobs:
            if job.rule.cache and job.rule.cache.output:
                wildcards = ",".join(f"{k}={v}" for k, v in sorted(job.wildcards_dict.items()))
                keys[f"{job.rule.name}:{wildcards}"] = workflow.async_run(hashes.get_provenance_hash(job))
        return keys


def test_cache_keys_do_not_depend_on_results_dir_and_differ_per_job(
    tmp_path, tiny_encoder, tiny_causal_lm, monkeypatch, capsys
):
    monkeypatch.setenv("SNAKEMAKE_OUTPUT_CACHE", str(tmp_path / "cache"))  # the rules are eligible only then
    first = cache_workdir(tmp_path / "first", tiny_encoder, tiny_causal_lm, "results")
    second = cache_workdir(tmp_path / "second", tiny_encoder, tiny_causal_lm, "results-b")
    keys = cache_keys(first, embedding_targets("results"))
    expected = {"fetch_model:model=tiny", "embed_chunks:"}  # one embed job for every split: no wildcards
    assert set(keys) == expected
    assert {name.split(":")[0] for name in keys} == CACHED_RULES
    assert len(set(keys.values())) == len(keys), "two jobs would share one cache entry"
    assert cache_keys(second, embedding_targets("results-b")) == keys  # so the second results_dir hits

    # a local model is fetched again when its folder changes: its files are inputs, hashed into the key
    edited = tmp_path / "edited-encoder"
    shutil.copytree(tiny_encoder, edited)
    (edited / "config.json").write_text((edited / "config.json").read_text() + "\n")
    config = tiny_config(edited, tiny_causal_lm)
    third = write_workdir(tmp_path / "third", config)
    changed = cache_keys(third, embedding_targets("results"))
    assert changed["fetch_model:model=tiny"] != keys["fetch_model:model=tiny"]
    assert all(changed[name] != keys[name] for name in keys)  # embeddings of another encoder: not reused
    capsys.readouterr()


def snakemake(workdir: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", SNAKEMAKE_OUTPUT_CACHE=str(cache))
    done = subprocess.run(
        # --cache takes rule names (nargs *): it goes last, after the targets
        [SNAKEMAKE, "-s", str(SNAKEFILE), "-d", str(workdir), "--cores", "2", *args, "--cache"],
        capture_output=True, text=True, env=env, timeout=1800,  # about a minute on 2 idle cores
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done


@pytest.mark.slow
def test_a_second_results_dir_takes_models_and_embeddings_from_the_cache(tmp_path, tiny_encoder, tiny_causal_lm):
    """One split's bank is asked for; the one embed job makes (and caches) every split's: each run starts few
    jobs."""
    split = "val"
    cache = tmp_path / "cache"
    cache.mkdir()
    first = cache_workdir(tmp_path / "first", tiny_encoder, tiny_causal_lm, "results")
    second = cache_workdir(tmp_path / "second", tiny_encoder, tiny_causal_lm, "results-b")

    snakemake(first, cache, *embedding_targets("results", [split]))
    assert (first / "logs" / "fetch_model" / "tiny.log").is_file()
    assert (first / "results" / "logs" / "embed_chunks.log").is_file()
    entries = sorted(p.name for p in cache.iterdir())
    assert len(entries) == 1 + 2 * len(SPLITS), entries  # the model folder, each split's bank and its index

    plan = snakemake(second, cache, "-n", *embedding_targets("results-b", [split]))
    said = plan.stdout + plan.stderr
    assert said.count("will be obtained from global between-workflow cache") == 2, said[-3000:]
    assert "will be written to global between-workflow cache" not in said

    done = snakemake(second, cache, *embedding_targets("results-b", [split]))
    said = done.stdout + done.stderr
    assert "from cache" in said and "to cache" not in said, said[-3000:]
    assert sorted(p.name for p in cache.iterdir()) == entries  # nothing new stored
    # neither job ran: their logs stay empty (Snakemake only creates them), the outputs are links into the cache
    assert (first / "logs" / "fetch_model" / "tiny.log").stat().st_size > 0
    for log in (second / "logs" / "fetch_model" / "tiny.log",
                second / "results-b" / "logs" / "embed_chunks.log"):
        assert not log.exists() or log.stat().st_size == 0, log.read_text()
    for name, suffix in ((name, suffix) for name in SPLITS for suffix in (".safetensors", ".index.jsonl")):
        ours = second / "results-b" / "lvm" / "embeddings" / f"{name}{suffix}"
        theirs = first / "results" / "lvm" / "embeddings" / f"{name}{suffix}"
        assert ours.is_symlink() and ours.resolve().parent == cache.resolve()
        assert ours.resolve() == theirs.resolve()  # the first run's file, one copy on disk
    installed = second / "resources" / "models" / "tiny"
    assert (installed / "manifest.json").is_file() and (second / "logs" / "link_model" / "tiny.log").is_file()
    assert (installed / "config.json").resolve().is_relative_to(cache.resolve())

    # both checkouts are complete and stay so: the second run did not make the first one's outputs stale
    for workdir, results_dir in ((first, "results"), (second, "results-b")):
        again = snakemake(workdir, cache, "-n", *embedding_targets(results_dir, [split]))
        assert "Nothing to be done" in again.stdout + again.stderr, (again.stdout + again.stderr)[-3000:]


# ------------------------------------------------------------------------ link_model and local model inputs


def test_link_model_installs_links_through_the_fetched_folder_and_checks_each_file(tiny_encoder, tmp_path):
    fetched = tmp_path / "models" / ".fetched" / "enc"
    manifest = fetch.fetch_model("enc", {"source": "local", "path": str(tiny_encoder)}, fetched)
    out = tmp_path / "models" / "enc"
    assert cli_main(["fetch-model", "--name", "enc", "--from", str(fetched), "--out", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for rel in manifest["files"]:
        link = out / rel
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))  # relative: the folder can move
        assert link.resolve() == (fetched / rel).resolve() and sha256_file(link) == manifest["files"][rel]
    assert {p.name for p in out.iterdir() if p.name.startswith(".")} == set()  # no temporaries left

    (fetched / "config.json").write_text("{}")  # a cache entry changed in place: refused, naming the file
    with pytest.raises(VecflowError, match=r"config.json: sha256 differs"):
        fetch.link_model("enc", fetched, out)
    with pytest.raises(VecflowError, match=r"names model 'enc', expected 'other'"):
        fetch.link_model("other", fetched, tmp_path / "other")
    with pytest.raises(VecflowError, match=r"not a fetched model folder"):
        fetch.link_model("enc", tmp_path / "nowhere", tmp_path / "x")
    assert (out / "manifest.json").is_file()  # a refused install leaves the installed folder as it was


def test_local_source_files_are_the_files_a_local_fetch_copies(tiny_encoder, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny_encoder, folder)
    (folder / ".hidden").write_text("x")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "a.pyc").write_text("x")
    (folder / "sub").mkdir()
    (folder / "sub" / "extra.txt").write_text("x")
    listed = fetch.local_source_files({"source": "local", "path": str(folder)})
    out = tmp_path / "copy"
    manifest = fetch.fetch_model("m", {"source": "local", "path": str(folder)}, out)
    assert sorted(Path(p).relative_to(folder).as_posix() for p in listed) == sorted(manifest["files"])
    assert "sub/extra.txt" in manifest["files"]
    assert fetch.local_source_files({"source": "pypi", "package": "x", "version": "1"}) == []
    assert fetch.local_source_files({"source": "local", "path": str(tmp_path / "missing")}) == []
