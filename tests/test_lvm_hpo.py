"""hpo.target: lvm: Optuna trials train an LVM, objective the selection margin, constraint c_0 >= context-mean."""

import json

import optuna
import pytest
import torch
import yaml

from test_lvm_train import SETTINGS, lvm_data  # noqa: F401  (the fixture)
from vecflow.hpo import study as hpo
from vecflow.cli import main
from vecflow.core.errors import VecflowError

SPACE = {"learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
         "losses.lambda_ac": {"type": "float", "low": 0.0, "high": 0.5}}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def lvm_hpo_settings(**hpo_overrides):
    section = {"study": "lvm", "target": "lvm", "workers": 1, "trials_per_worker": 2, "direction": "maximize",
               "pruner_startup_trials": 5, "lvm_search_space": SPACE,
               "search_space": {"residual_scale": {"type": "float", "low": 0.1, "high": 0.5}},  # ELM's: ignored
               **hpo_overrides}
    run = {**SETTINGS, "preset": "P1", "epochs": 2, "selection_metric": "dominance", "selection_fraction": 0.25,
           "losses": {"lambda_mse": 0.0, "lambda_cos": 1.0, "margin_ac": 0.05}}
    return {"hpo": section, "lvm": run, "seed": 5, "device": "cpu"}


def worker_args(data, tmp_path, settings, storage, index=0):
    return ["hpo-worker", "--study", "lvm", "--storage", storage, "--worker", str(index),
            "--train-windows", str(data / "train.safetensors"),
            "--train-embeddings", str(data / "train_bank.safetensors"),
            "--train-index", str(data / "train_bank.index.jsonl"), "--val-windows", str(data / "val.safetensors"),
            "--val-embeddings", str(data / "val_bank.safetensors"), "--val-index", str(data / "val_bank.index.jsonl"),
            "--settings", json.dumps(settings), "--out", str(tmp_path / f"worker{index}.json")]


def test_lvm_trials_record_margin_and_the_c0_constraint_and_best_is_feasible(lvm_data, tmp_path):  # noqa: F811
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    settings = lvm_hpo_settings()
    assert main(worker_args(lvm_data, tmp_path, settings, storage)) == 0
    record = json.loads((tmp_path / "worker0.json").read_text())
    assert record["target"] == "lvm" and record["metric"] == "margin" and len(record["trials"]) == 2
    study = optuna.load_study(study_name="lvm", storage=storage)
    for trial in study.trials:
        assert set(trial.params) == {"learning_rate", "losses.lambda_ac"}
        assert trial.user_attrs["constraint"][0] == pytest.approx(
            trial.user_attrs["context_mean_c0"] - trial.user_attrs["c0"])
    code = main(["hpo-best", "--study", "lvm", "--storage", storage, "--workers", str(tmp_path / "worker0.json"),
                 "--settings", json.dumps(settings), "--out-params", str(tmp_path / "best.yaml"),
                 "--out-trials", str(tmp_path / "trials.csv"), "--out-plot", str(tmp_path / "imp.png")])
    assert code == 0
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    feasible = [t for t in study.trials if t.user_attrs["constraint"][0] <= 0]
    expected = max(feasible or study.trials, key=lambda t: t.value)
    assert best == expected.params


def test_best_trial_prefers_a_feasible_trial_over_a_higher_infeasible_one():
    study = optuna.create_study(direction="maximize")
    for value, constraint in ((0.5, 0.1), (0.1, -0.01), (0.2, 0.0)):
        trial = optuna.trial.create_trial(params={"x": value}, distributions={
            "x": optuna.distributions.FloatDistribution(0, 1)}, value=value, user_attrs={"constraint": (constraint,)})
        study.add_trial(trial)
    assert hpo.best_trial(study, "lvm").value == 0.2
    assert hpo.best_trial(study).value == 0.5  # the ELM target keeps Optuna's best trial


def test_lvm_search_space_names_and_missing_inputs_are_errors(lvm_data, tmp_path, capsys):  # noqa: F811
    with pytest.raises(VecflowError, match="hpo.lvm_search_space.soft_tokens: not a tunable lvm setting"):
        hpo.parse_search_space({"soft_tokens": {"type": "int", "low": 1, "high": 3}}, "lvm")
    args = worker_args(lvm_data, tmp_path, lvm_hpo_settings(), "sqlite:///x.db")
    cut = args.index("--val-index")
    assert main(args[:cut] + args[cut + 2:]) == 2
    assert "hpo-worker (target lvm): missing --val-index" in capsys.readouterr().err


def test_lvm_trial_settings_route_loss_parameters():
    settings = lvm_hpo_settings()
    trial = hpo.lvm_trial_settings(settings, {"learning_rate": 0.01, "losses.lambda_ac": 0.2}, "t0")
    assert trial["learning_rate"] == 0.01 and trial["losses"]["lambda_ac"] == 0.2
    assert trial["losses"]["lambda_cos"] == 1.0 and trial["run_name"] == "t0"
