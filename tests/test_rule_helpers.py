"""What the rules ask of the config (issue 24): the package's pure functions behind workflow/rules/*.smk for the
HPO, deploy, report, data and GPU-check rules (vecflow.{hpo,ship,core,data}.workflow). None changes the config
(except resolving data: references, which is what it is for); each job's settings parse with its model."""

from __future__ import annotations

import copy
import json
import pathlib
from types import SimpleNamespace

import pytest
import yaml

from test_settings_models import REPO, validated
from vecflow.core import workflow as core_workflow
from vecflow.core.errors import VecflowError
from vecflow.data import workflow as data_workflow
from vecflow.hpo import workflow as hpo_workflow
from vecflow.ship import workflow as ship_workflow
from vecflow.ship.settings import DeployBundleSettings, DeploySettings


@pytest.fixture(scope="module")
def demo() -> dict:
    return validated(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))


class Files(dict):
    """A rule's named input files, as Snakemake hands them to a params function."""

    def __getattr__(self, name):
        return self[name]


def test_the_helpers_leave_the_config_as_it_is(demo):
    before = json.dumps(demo, sort_keys=True)
    ship_workflow.report_inputs(demo), ship_workflow.gpu_check_families(demo), hpo_workflow.report_files(demo)
    ship_workflow.decide_settings(demo), ship_workflow.bundle_settings(demo), hpo_workflow.best_settings(demo)
    assert json.dumps(demo, sort_keys=True) == before


def test_hpo_storage_study_and_report_files(demo):
    config = copy.deepcopy(demo)
    assert hpo_workflow.storage(config) == f"sqlite:///results/hpo/{config['hpo']['study']}/study.db"
    config["hpo"]["storage"] = "journal:///shared/study.journal"
    assert hpo_workflow.storage(config) == "journal:///shared/study.journal"
    assert set(hpo_workflow.report_files(config)) == {"hpo_trials", "hpo_importance", "hpo_params"}
    config["hpo"].update(target="lvm", lvm_objectives=["c0", "margin"])
    assert {"hpo_pareto", "hpo_pareto_plot"} <= set(hpo_workflow.report_files(config))
    assert hpo_workflow.tuned_run(config) == next(iter(config["lvm"]["runs"]))
    config["tracks"]["lvm"] = False  # the target's track is off: no study
    assert hpo_workflow.report_files(config) == {}


def test_deploy_inputs_settings_and_bundle_targets(demo, tmp_path):
    config = copy.deepcopy(demo)
    name, run = config["deploy"]["name"], config["deploy"]["lvm_run"]
    inputs = ship_workflow.decision_inputs(config)
    assert inputs["fivecat"] == f"results/lvm/fivecat/{run}.json" and "scores__seq2seq" in inputs
    assert ship_workflow.scores_args(Files(inputs)).startswith("--scores seq2seq=results/eval/seq2seq/scores.json")
    decide = DeploySettings.parse(json.loads(ship_workflow.decide_settings(config)))
    assert decide.name == name and decide.seed == config["seed"]
    bundle = DeployBundleSettings.parse(json.loads(ship_workflow.bundle_settings(config)))
    assert bundle.max_source_length == config["summarizer"]["max_source_length"]
    decision = tmp_path / "decision.json"
    decision.write_text(json.dumps({"deploy": True, "summarizer": {"family": "elm"}}))
    assert ship_workflow.bundle_targets(config, str(decision)) == [f"results/deploy/{name}"]
    assert ship_workflow.chosen_family(str(decision)) == "elm"
    elm = ship_workflow.bundle_summarizer_inputs(config, "elm")
    assert elm["summarizer"] == "results/elm/adapter" and elm["lm"].endswith("/manifest.json")
    assert ship_workflow.bundle_summarizer_args(Files(elm)) == \
        f"--elm-adapter results/elm/adapter --lm resources/models/{config['elm']['lm']}"
    assert ship_workflow.bundle_summarizer_args(Files(ship_workflow.bundle_summarizer_inputs(config, "causal"))) == \
        "--summarizer results/causal/model"
    decision.write_text(json.dumps({"deploy": False}))
    assert ship_workflow.bundle_targets(config, str(decision)) == []
    config["deploy"]["summarizer"] = "causal"
    assert ship_workflow.deploy_families(config) == ["causal"]
    config["tracks"]["deploy"] = False
    assert not ship_workflow.deploy_on(config) and "decision" not in ship_workflow.report_inputs(config)


def test_report_inputs_and_artifact_args(demo):
    config = copy.deepcopy(demo)
    files = ship_workflow.report_inputs(config)
    assert files["config"] == "results/config.resolved.yaml" and files["history__seq2seq"] == "results/summarizer/model"
    assert ship_workflow.all_targets(config) == ["results/report/index.html", *files.values()]
    args = ship_workflow.artifact_args(config, Files({"history__seq2seq": "m", "scores__seq2seq": "s.json"}))
    assert args == "--artifact train_summary:seq2seq=m/summary.json --artifact history:seq2seq=m/history.jsonl " \
                   "--artifact scores:seq2seq=s.json"
    config["tracking"]["wandb"] = True
    assert "--artifact tracking:seq2seq=m/tracking.json" in ship_workflow.artifact_args(config, Files({"history__seq2seq": "m"}))
    settings = json.loads(ship_workflow.report_settings(config))
    assert settings["config_hash"] == core_workflow.config_hash(config) and settings["title"] == config["report"]["title"]


def test_gpu_check_families_name_each_trained_family(demo):
    config = copy.deepcopy(demo)
    families = ship_workflow.gpu_check_families(config)
    assert families["seq2seq"] == {"log": "results/logs/train_summarizer.log", "model": "results/summarizer/model",
                                   "benchmark": "results/benchmarks/train_summarizer.tsv"}
    assert families["elm"]["model"] == "results/elm/adapter"
    assert {f"lvm-{run}" for run in config["lvm"]["runs"]} <= set(families)
    config["tracks"].update(summary=False, lvm=False)
    assert ship_workflow.gpu_check_families(config) == {}


def test_core_helpers(demo, tmp_path):
    assert core_workflow.model_input(demo, demo["encoder"]) == f"resources/models/{demo['encoder']}/manifest.json"
    (tmp_path / "config.json").write_text("{}")
    assert core_workflow.model_input(demo, str(tmp_path)) == str(tmp_path / "config.json")
    with pytest.raises(VecflowError, match="config: model 'nowhere' is neither a models: entry nor an HF folder"):
        core_workflow.model_input(demo, "nowhere")
    assert json.loads(core_workflow.model_settings(demo, demo["encoder"]))["name"] == demo["encoder"]
    assert core_workflow.launcher(None, SimpleNamespace(gpu=1)) == "vecflow"
    assert core_workflow.launcher(None, SimpleNamespace(gpu=2)).startswith("torchrun --standalone --nproc-per-node 2")
    folder = core_workflow.parent_of("stats")
    assert folder(None, Files({"stats": "a/b/stats.json"}), Files()) == "a/b"
    assert core_workflow.config_hash(demo) == core_workflow.config_hash(copy.deepcopy(demo))


def test_gpu_request_is_zero_only_where_jobs_run_on_cpu(demo):
    """On a CPU machine --resources gpu=1 must not serialise the torch jobs: they declare gpu=0 there."""
    for device, visible, want in [("cpu", True, 0), ("cuda", False, 2), ("mps", False, 2),
                                  ("auto", True, 2), ("auto", False, 0)]:
        assert core_workflow.gpu_request(dict(demo, device=device), 2, visible=visible) == want, (device, visible)
    no_nodes = {"CUDA_VISIBLE_DEVICES": "0"}
    assert core_workflow.gpu_visible({}, "darwin", "arm64") is True
    assert core_workflow.gpu_visible({}, "darwin", "x86_64") is False
    assert core_workflow.gpu_visible({"CUDA_VISIBLE_DEVICES": ""}, "linux", "x86_64") is False
    assert core_workflow.gpu_visible({"CUDA_VISIBLE_DEVICES": "-1"}, "linux", "x86_64") is False
    linux = core_workflow.gpu_visible(no_nodes, "linux", "x86_64")
    assert linux == any(pathlib.Path(n).exists() for n in core_workflow.GPU_DEVICE_NODES)
    assert "/dev/dxg" in core_workflow.GPU_DEVICE_NODES  # WSL2: CUDA without an NVIDIA device node


def test_data_references_name_the_files_fetch_data_checks(demo, tmp_path):
    config = copy.deepcopy(demo)
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    config["datasets"] = {"dialogs": {"source": "local", "format": "dialogues",
                                      "files": {"train": str(train), "dev": str(dev)}}}
    config["summary"]["splits"] = {"train": "data:dialogs/train", "val": "data:dialogs/dev"}
    used = data_workflow.used_datasets(config)
    assert list(used) == ["dialogs"] and config["summary"]["splits"] == {"train": str(train), "val": str(dev)}
    manifest = f"{config['data_dir']}/dialogs/manifest.json"
    assert data_workflow.manifests(config, used, str(train)) == [manifest]
    assert data_workflow.manifests(config, used, "elsewhere.jsonl") == []
    assert data_workflow.fetch_outputs(config, used) == [manifest]
    assert sorted(data_workflow.fetch_inputs(used)) == sorted([str(train), str(dev)])
    config["lvm"]["articles"]["input"] = "data:missing/valid"
    with pytest.raises(VecflowError, match="missing"):
        data_workflow.used_datasets(config)
