"""hpo.target: lvm: Optuna trials train an LVM, objective the selection margin, constraint c_0 >= context-mean."""

import json

import optuna
import pytest
import torch
import yaml

from test_lvm_train import SETTINGS, lvm_data  # noqa: F401  (the fixture)
from vecflow.hpo import best as hpo_best
from vecflow.hpo import lvm_worker, space
from vecflow.hpo import storage as hpo_storage
from vecflow.hpo.settings import HpoSection, worker_settings
from vecflow.lvm.study_params import read_lvm_params
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
                 "--settings", json.dumps({"hpo": settings["hpo"]}), "--out-params", str(tmp_path / "best.yaml"),
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
    assert hpo_best.best_trial(study, "lvm").value == 0.2
    assert hpo_best.best_trial(study).value == 0.5  # the ELM target keeps Optuna's best trial


def test_lvm_search_space_names_and_missing_inputs_are_errors(lvm_data, tmp_path, capsys):  # noqa: F811
    with pytest.raises(VecflowError, match="hpo.lvm_search_space.soft_tokens: not a tunable lvm setting"):
        space.parse_search_space({"soft_tokens": {"type": "int", "low": 1, "high": 3}}, "lvm")
    args = worker_args(lvm_data, tmp_path, lvm_hpo_settings(), "sqlite:///x.db")
    cut = args.index("--val-index")
    assert main(args[:cut] + args[cut + 2:]) == 2
    assert "hpo-worker (target lvm): missing --val-index" in capsys.readouterr().err


def test_lvm_trial_settings_route_loss_parameters():
    settings = lvm_hpo_settings()
    trial = lvm_worker.trial_run_settings(worker_settings(settings), {"learning_rate": 0.01, "losses.lambda_ac": 0.2},
                                          "t0")
    assert trial["learning_rate"] == 0.01 and trial["losses"]["lambda_ac"] == 0.2
    assert trial["losses"]["lambda_cos"] == 1.0 and trial["run_name"] == "t0"


# ------------------------------------------------------------------- two objectives, forward rule, Pareto (issue 21)
def test_two_objective_study_maps_c0_and_margin_and_train_lvm_takes_the_chosen_params(lvm_data, tmp_path):  # noqa: F811
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    settings = lvm_hpo_settings(lvm_objectives=["c0", "margin"], lvm_fixed={"train_fraction": 0.5})
    settings["lvm"]["selection_metric"] = "forward"
    assert main(worker_args(lvm_data, tmp_path, settings, storage)) == 0
    record = json.loads((tmp_path / "worker0.json").read_text())
    assert record["metric"] == "c0,margin" and len(record["trials"]) == 2
    study = optuna.load_study(study_name="lvm", storage=storage)
    assert len(study.directions) == 2
    for trial in study.trials:
        assert trial.values == [pytest.approx(trial.user_attrs["c0"]), pytest.approx(trial.user_attrs["val_margin"])]
        assert set(trial.user_attrs["baselines"]) == {"copy_last", "context_mean", "ridge"}
    out = {name: str(tmp_path / name) for name in ("best.yaml", "trials.csv", "imp.png", "pareto.json", "pareto.png")}
    assert main(["hpo-best", "--study", "lvm", "--storage", storage, "--workers", str(tmp_path / "worker0.json"),
                 "--settings", json.dumps({"hpo": settings["hpo"]}), "--out-params", out["best.yaml"],
                 "--out-trials", out["trials.csv"], "--out-plot", out["imp.png"]]) == 0
    assert main(["hpo-pareto", "--study", "lvm", "--storage", storage, "--best", out["best.yaml"],
                 "--out-json", out["pareto.json"], "--out-plot", out["pareto.png"]]) == 0
    pareto = json.loads((tmp_path / "pareto.json").read_text())
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    chosen = hpo_best.forward_trial(study.trials)
    assert best == chosen.params and pareto["chosen"] == chosen.number
    assert pareto["front"] and set(pareto["baselines"]) == {"copy_last", "context_mean", "ridge"}
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the final run takes the study's parameters (not the trials' lvm_fixed train_fraction)
    from vecflow.lvm.train import with_study_params

    run = with_study_params(settings["lvm"] | {"tracking": {}}, out["best.yaml"])
    assert run["learning_rate"] == best["learning_rate"]
    assert run["losses"]["lambda_ac"] == best["losses.lambda_ac"] and "train_fraction" not in run


def make_trial(c0, margin, wins=0):
    return optuna.trial.create_trial(
        params={"x": c0}, distributions={"x": optuna.distributions.FloatDistribution(0, 1)}, values=[c0, margin],
        user_attrs={"wins": wins})


def test_forward_trial_is_the_highest_c0_with_a_positive_margin_else_dominance():
    trials = [make_trial(0.70, -0.01, wins=9), make_trial(0.60, 0.02), make_trial(0.62, 0.001), make_trial(0.5, 0.2)]
    assert hpo_best.forward_trial(trials).values == [0.62, 0.001]
    backward = [make_trial(0.70, -0.05, wins=5), make_trial(0.60, -0.01, wins=7), make_trial(0.65, -0.02, wins=7)]
    assert hpo_best.forward_trial(backward).values == [0.60, -0.01]  # most wins, then the higher margin


def test_bad_study_params_and_objectives_are_errors(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text("soft_tokens: 4\n")
    with pytest.raises(VecflowError, match="best.yaml: key 'soft_tokens': not a tunable lvm setting"):
        read_lvm_params(path)
    with pytest.raises(VecflowError, match="file not found"):
        read_lvm_params(tmp_path / "missing.yaml")
    with pytest.raises(VecflowError, match=r"hpo.lvm_objectives: expected \[margin\] or \[c0, margin\]"):
        lvm_worker.lvm_objectives(HpoSection(lvm_objectives=["margin", "c0"]))


def test_workers_opening_a_new_sqlite_study_together_do_not_race(tmp_path):
    """Two hpo-worker jobs started at once both created the schema: 'UNIQUE constraint failed: alembic_version'."""
    from concurrent.futures import ProcessPoolExecutor

    url = f"sqlite:///{tmp_path / 'hpo' / 'study.db'}"
    with ProcessPoolExecutor(4) as pool:
        storages = list(pool.map(_open_and_create, [url] * 4))
    assert storages == ["ok"] * 4


def _open_and_create(url):
    opened = hpo_storage.open_storage(url)
    optuna.create_study(study_name="race", storage=opened, load_if_exists=True)
    return "ok"
