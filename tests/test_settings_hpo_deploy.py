"""Typed settings (issue 24) of the HPO, deploy and report commands: each model agrees with the config schema
(names, types, defaults; the checks of ``test_settings_models``), and the HPO, deploy and report rules send
exactly what the models accept (a dry run of each study target, of the deploy jobs and of the report)."""

from __future__ import annotations

import json
import shlex

import pytest

from test_settings_models import SCHEMA, disagreements, resolve, validated
from vecflow.core.errors import VecflowError
from vecflow.hpo import settings as hpo_settings
from vecflow.hpo import workflow as hpo_workflow
from vecflow.ship import settings as ship_settings

MODELS = [hpo_settings.HpoBestSettings, hpo_settings.ElmStudySettings, hpo_settings.LvmStudySettings,
          ship_settings.DeploySettings, ship_settings.DeployBundleSettings, ship_settings.ReportSettings]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_each_hpo_and_deploy_settings_model_agrees_with_the_schema(model):
    assert disagreements(model) == []


def test_a_search_space_entry_agrees_with_the_schemas_search_param():
    where = {key: resolve(prop) for key, prop in SCHEMA["definitions"]["search_param"]["properties"].items()}
    assert disagreements(hpo_settings.SearchParam, where) == []


# ------------------------------------------------------------------------------------------- parsing
def test_worker_settings_pick_the_target_and_name_a_bad_key():
    run = {"preset": "P1", "arch": "mlp", "epochs": 2, "batch_size": 8, "learning_rate": 1e-3}
    lvm = hpo_settings.worker_settings({"hpo": {"target": "lvm"}, "lvm": run})
    assert isinstance(lvm, hpo_settings.LvmStudySettings) and lvm.run_settings() == run
    elm = hpo_settings.worker_settings({"hpo": {}, "elm": {"epochs": 1}})
    assert isinstance(elm, hpo_settings.ElmStudySettings) and elm.hpo.trials_per_worker == 2
    cases = [({"hpo": {"target": "lvm"}, "elm": {}}, "settings: hpo.target: 'lvm', but the settings carry 'elm'"),
             ({"hpo": {}, "lvm": run}, "settings: hpo.target: 'elm', but the settings carry 'lvm'"),
             ({"hpo": {"trials_per_workers": 1}, "elm": {}}, "settings: unknown key 'hpo.trials_per_workers'"),
             ({"hpo": {"search_space": {"x": {"type": "uniform"}}}, "elm": {}},
              "settings: field 'hpo.search_space.x.type': 'uniform' is not one of float, int, categorical"),
             ({"hpo": {}}, "settings: missing key 'elm'"),
             ({"hpo": {"target": "lvm"}, "lvm": {**run, "arch": "cnn"}}, "settings: field 'lvm.arch': 'cnn'")]
    for settings, message in cases:
        with pytest.raises(VecflowError) as caught:
            hpo_settings.worker_settings(settings)
        assert str(caught.value).startswith(message), str(caught.value)


def test_deploy_settings_fill_the_schemas_gates_and_refuse_a_typo():
    parsed = ship_settings.DeploySettings.parse({"gates": {"summarizer": {"min_bertscore_f1": 0.8}}})
    assert parsed.gates.lvm.use_fivecat_thresholds is True and parsed.gates.summarizer.min_rouge1 == 0.2
    assert parsed.gates.summarizer.min_bertscore_f1 == 0.8 and parsed.summarizer == "best"
    with pytest.raises(VecflowError, match=r"settings: unknown key 'gates\.lvm\.min_c_0'"):
        ship_settings.DeploySettings.parse({"gates": {"lvm": {"min_c_0": 0.5}}})
    with pytest.raises(VecflowError, match=r"settings: unknown key 'max_source_length'"):  # a bundle setting
        ship_settings.DeploySettings.parse({"max_source_length": 64})
    bundle = ship_settings.DeployBundleSettings.parse({"max_source_length": 64})
    assert bundle.legacy_spec() == {"kind": "seq2seq", "max_source_length": 64, "max_target_length": 128,
                                    "system_message": None}


def test_report_settings_fill_the_schemas_title_and_refuse_a_typo():
    parsed = ship_settings.ReportSettings.parse({"config_hash": "abc"})
    assert parsed.title == "vecflow report" and parsed.compare_with == "" and parsed.config_hash == "abc"
    assert ship_settings.ReportSettings.parse({}).config_hash is None
    with pytest.raises(VecflowError, match=r"settings: unknown key 'compare'"):
        ship_settings.ReportSettings.parse({"compare": "results/old"})


# ------------------------------------------------------------------------------------------- the rules
COMMAND_MODEL = {("hpo-worker",): hpo_settings.worker_settings, ("hpo-best",): hpo_settings.HpoBestSettings.parse,
                 ("deploy", "decide"): ship_settings.DeploySettings.parse,
                 ("deploy", "bundle"): ship_settings.DeployBundleSettings.parse,
                 ("report",): ship_settings.ReportSettings.parse}


def sent_settings(stdout: str) -> dict[tuple, list]:
    """Each vecflow command of a dry run's shell commands -> the --settings each job sends, parsed by its model."""
    seen: dict[tuple, list] = {}
    for line in stdout.splitlines():
        argv = shlex.split(line.removeprefix("Shell command: ").split(" > ")[0]) if "vecflow " in line else []
        for command, parse in COMMAND_MODEL.items():
            if len(argv) > len(command) and tuple(argv[1:1 + len(command)]) == command and argv[0] == "vecflow":
                seen.setdefault(command, []).append(parse(json.loads(argv[argv.index("--settings") + 1])))
    return seen


@pytest.mark.parametrize("target", ["elm", "lvm"])
def test_the_hpo_rules_send_what_each_model_accepts(tmp_path, target):
    from test_settings_models import lvm_config
    from test_workflow import snakemake_cli, write_workdir

    config = lvm_config(tmp_path)
    config["hpo"]["target"] = target
    if target == "lvm":
        config["hpo"]["lvm_search_space"] = {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2}}
    workdir = write_workdir(tmp_path / "run", config)
    study = f"results/hpo/{config['hpo']['study']}"
    result = snakemake_cli(workdir, "-n", "-p", f"{study}/best_params.yaml")
    assert result.returncode == 0, result.stderr[-2000:]
    seen = sent_settings(result.stdout)
    workers, best = seen[("hpo-worker",)], seen[("hpo-best",)]
    assert len(workers) == config["hpo"]["workers"] and len(best) == 1
    expected = validated(config)
    assert all(w.hpo.model_dump() == best[0].hpo.model_dump() for w in workers)
    assert best[0].hpo.study == expected["hpo"]["study"] and best[0].hpo.target == target
    if target == "lvm":
        assert {w.lvm.run for w in workers} == {hpo_workflow.tuned_run(expected)}
    else:
        assert workers[0].elm.hidden_dim == expected["elm"]["hidden_dim"]
        assert {"bertscore_num_layers", "selection_split"} <= set(workers[0].run_settings())


def test_the_deploy_rules_send_what_each_model_accepts(tmp_path):
    from test_settings_models import lvm_config
    from test_workflow import snakemake_cli, write_workdir

    config = lvm_config(tmp_path)
    config["deploy"]["lvm_run"] = "p1"
    config["deploy"]["gates"] = {"summarizer": {"min_bertscore_f1": 0.5}}
    workdir = write_workdir(tmp_path / "run", config)
    result = snakemake_cli(workdir, "-n", "-p", f"results/deploy/{config['deploy']['name']}.decision.json")
    assert result.returncode == 0, result.stderr[-2000:]
    (decide,) = sent_settings(result.stdout)[("deploy", "decide")]
    assert decide.gates.summarizer.min_bertscore_f1 == 0.5 and decide.name == config["deploy"]["name"]
    assert decide.gates.lvm.model_dump() == validated(config)["deploy"]["gates"]["lvm"]


def test_the_report_rule_sends_what_its_model_accepts(tmp_path):
    from test_settings_models import lvm_config
    from test_workflow import snakemake_cli, write_workdir
    from vecflow.core.workflow import config_hash

    config = lvm_config(tmp_path)
    config["report"] = {"title": "tiny <run>", "compare_with": "results/old"}
    workdir = write_workdir(tmp_path / "run", config)
    result = snakemake_cli(workdir, "-n", "-p", "results/report/index.html")
    assert result.returncode == 0, result.stderr[-2000:]
    (report,) = sent_settings(result.stdout)[("report",)]
    assert report.title == "tiny <run>" and report.compare_with == "results/old"
    assert report.config_hash == config_hash(validated(config)) and report.seed == config["seed"]
