"""Optuna HPO for the ELM adapter: workers on one shared storage, resumption, best params, bad search spaces."""

import json
from pathlib import Path

import optuna
import pytest
import yaml

from test_elm import elm_settings, make_elm_data
from vecflow.summary import elm, elm_train
from vecflow.hpo import best as hpo_best
from vecflow.hpo import space as hpo_space
from vecflow.hpo import storage as hpo_storage
from vecflow.cli import main
from vecflow.core.errors import VecflowError

SPACE = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
    "residual_scale": {"type": "float", "low": 0.05, "high": 0.5},
    "soft_tokens": {"type": "int", "low": 1, "high": 3},
    "hidden_dim": {"type": "categorical", "choices": [8, 16]},
}


def hpo_settings(**hpo_overrides) -> dict:
    section = {
        "study": "s",
        "storage": "",
        "workers": 2,
        "trials_per_worker": 1,
        "direction": "maximize",
        "metric": "rougeL",
        "search_space": SPACE,
    }
    section.update(hpo_overrides)
    run = elm_settings(
        max_train_samples=4, val_samples=1, batch_size=2, generation={"num_beams": 1, "max_new_tokens": 3}
    )
    return {"hpo": section, "elm": run, "seed": 5, "device": "cpu"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_elm_data(tmp_path_factory.mktemp("hpo") / "filtered", train_sources=2, val_sources=1)


def worker(tmp_path, storage, index, data, lm, encoder, settings=None, study="s") -> dict:
    out = tmp_path / f"worker{index}.json"
    code = main(
        [
            "hpo-worker",
            "--study",
            study,
            "--storage",
            storage,
            "--worker",
            str(index),
            "--data-dir",
            str(data),
            "--lm",
            str(lm),
            "--encoder",
            str(encoder),
            "--settings",
            json.dumps(settings or hpo_settings()),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return json.loads(out.read_text())


def test_two_workers_share_one_sqlite_study_and_resuming_adds_trials(tmp_path, data, tiny_causal_lm, tiny_encoder):
    storage = f"sqlite:///{tmp_path}/nested/study.db"  # the parent folder does not exist yet
    w0 = worker(tmp_path, storage, 0, data, tiny_causal_lm, tiny_encoder)
    w1 = worker(tmp_path, storage, 1, data, tiny_causal_lm, tiny_encoder)
    assert [t["number"] for t in w0["trials"]] == [0] and [t["number"] for t in w1["trials"]] == [1]
    # one selection source cannot pass the input-dependence gate: the trial's score is its last one minus 2
    assert all(t["state"] == "COMPLETE" and -2.0 <= t["value"] <= -1.0 for t in w0["trials"] + w1["trials"])
    assert w0["sampler_seed"] == 5 and w1["sampler_seed"] == 6
    # one evaluation at the end of the only epoch (4 rows, batch 2: step 2), reported to the trial
    assert set(w0["trials"][0]["params"]) == set(SPACE) and w0["trials"][0]["intermediate"].keys() == {"2"}
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 2

    again = worker(tmp_path, storage, 0, data, tiny_causal_lm, tiny_encoder)
    assert [t["number"] for t in again["trials"]] == [2] and again["sampler_seed"] == 5 + 1000
    assert again["trials"][0]["params"] != w0["trials"][0]["params"]
    study = optuna.load_study(study_name="s", storage=storage)
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert [t.user_attrs["worker"] for t in study.trials] == [0, 1, 0]

    params, table, plot = (
        tmp_path / "best" / "params.yaml",
        tmp_path / "best" / "trials.csv",
        tmp_path / "best" / "imp.png",
    )
    code = main(
        [
            "hpo-best",
            "--study",
            "s",
            "--storage",
            storage,
            "--workers",
            f"{tmp_path / 'worker0.json'},{tmp_path / 'worker1.json'}",
            "--settings",
            json.dumps({"hpo": hpo_settings()["hpo"]}),
            "--out-params",
            str(params),
            "--out-trials",
            str(table),
            "--out-plot",
            str(plot),
        ]
    )
    assert code == 0
    best = yaml.safe_load(params.read_text())
    assert best == study.best_params and set(best) == set(SPACE)
    assert elm_train.train_settings(elm_settings(), params).learning_rate == best["learning_rate"]
    lines = table.read_text().splitlines()
    assert len(lines) == 1 + 3 and "params_learning_rate" in lines[0] and "value" in lines[0]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_journal_storage_and_placeholder_plot(tmp_path, data, tiny_causal_lm, tiny_encoder):
    journal = tmp_path / "j" / "study.log"
    storage = f"journal:///{journal}"
    record = worker(tmp_path, storage, 3, data, tiny_causal_lm, tiny_encoder)
    assert journal.exists() and [t["number"] for t in record["trials"]] == [0]
    assert len(hpo_storage.load_study("s", storage).trials) == 1

    plot = tmp_path / "imp.png"
    study = hpo_storage.load_study("s", storage)
    assert hpo_best.param_importances(study) == ({}, "1 complete trial(s): parameter importance needs at least 2")
    code = main(
        [
            "hpo-best",
            "--study",
            "s",
            "--storage",
            storage,
            "--workers",
            str(tmp_path / "worker3.json"),
            "--settings",
            "{}",
            "--out-params",
            str(tmp_path / "p.yaml"),
            "--out-trials",
            str(tmp_path / "t.csv"),
            "--out-plot",
            str(plot),
        ]
    )
    assert code == 0 and plot.stat().st_size > 1000


def test_pruned_trial_raises_and_leaves_no_output(tmp_path, data, tiny_causal_lm, tiny_encoder):
    class AlwaysPrune:
        reported = []

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return True

    trial = AlwaysPrune()
    settings = {**hpo_settings()["elm"], "text_drift_weight": 0.0}
    with pytest.raises(optuna.TrialPruned):
        elm_train.train_elm(settings, data, tiny_causal_lm, tiny_encoder, tmp_path / "out", trial=trial)
    assert [step for step, _ in trial.reported] == [2]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither out nor out.partial


@pytest.mark.parametrize(
    "space, message",
    [
        (
            {"learning_rate": {"type": "float", "low": 0.1, "high": 0.01}},
            "hpo.search_space.learning_rate: 'low' (0.1) must be below",
        ),
        (
            {"learning_rate": {"type": "float", "low": 0.0, "high": 0.1, "log": True}},
            "hpo.search_space.learning_rate: log scale needs 'low' > 0",
        ),
        (
            {"learning_rate": {"type": "uniform", "low": 0.0, "high": 0.1}},
            "hpo.search_space.learning_rate: field 'type': 'uniform' is not one of float, int, categorical",
        ),
        (
            {"soft_tokens": {"type": "int", "low": 1.5, "high": 4}},
            "hpo.search_space.soft_tokens: 'low' must be an integer",
        ),
        ({"hidden_dim": {"type": "categorical", "choices": []}}, "hpo.search_space.hidden_dim: categorical needs"),
        ({"warp": {"type": "float", "low": 0, "high": 1}}, "hpo.search_space.warp: not an elm setting"),
        ({"dropout": [0.0, 0.3]}, "hpo.search_space.dropout: expected a mapping"),
        ({}, "hpo.search_space: must be a non-empty mapping"),
    ],
)
def test_bad_search_space_entries_name_the_parameter(space, message):
    with pytest.raises(VecflowError, match=message.replace("(", r"\(").replace(")", r"\)")):
        hpo_space.parse_search_space(space)


def test_worker_errors_exit_2_before_any_trial(tmp_path, data, tiny_causal_lm, tiny_encoder, capsys):
    bad = hpo_settings(search_space={"learning_rate": {"type": "float", "low": 1, "high": 0}})
    args = [
        "hpo-worker",
        "--study",
        "s",
        "--storage",
        f"sqlite:///{tmp_path}/s.db",
        "--worker",
        "0",
        "--data-dir",
        str(data),
        "--lm",
        str(tiny_causal_lm),
        "--encoder",
        str(tiny_encoder),
        "--out",
        str(tmp_path / "w.json"),
    ]
    assert main(args + ["--settings", json.dumps(bad)]) == 2
    assert "hpo.search_space.learning_rate: 'low' (1) must be below 'high' (0)" in capsys.readouterr().err
    assert main(args + ["--settings", json.dumps(hpo_settings(metric="bertscore_f1"))]) == 2
    assert "'bertscore_f1' needs --bertscore-model" in capsys.readouterr().err
    assert main(args[:4] + ["not-a-url"] + args[5:] + ["--settings", json.dumps(hpo_settings())]) == 2
    assert not (tmp_path / "w.json").exists()


def test_hpo_best_without_complete_trials_is_an_error(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/empty.db"
    optuna.create_study(study_name="empty", storage=storage)
    (tmp_path / "w.json").write_text(json.dumps({"study": "empty", "trials": []}))
    args = [
        "hpo-best",
        "--study",
        "empty",
        "--storage",
        storage,
        "--workers",
        str(tmp_path / "w.json"),
        "--settings",
        "{}",
        "--out-params",
        str(tmp_path / "p.yaml"),
        "--out-trials",
        str(tmp_path / "t.csv"),
        "--out-plot",
        str(tmp_path / "i.png"),
    ]
    minimize = json.dumps({"hpo": {"direction": "minimize"}})
    assert main(args[:8] + [minimize] + args[9:]) == 2
    assert "study 'empty': no complete trial (no trials)" in capsys.readouterr().err
    maximize = json.dumps({"hpo": {"direction": "maximize"}})  # the schema's default, as "{}" has it
    assert main(args[:8] + [maximize] + args[9:]) == 2
    assert "hpo.direction: 'maximize', but study 'empty' was created to minimize" in capsys.readouterr().err
    assert not (tmp_path / "p.yaml").exists()
    assert main(args[:2] + ["missing"] + args[3:6] + [str(tmp_path / "w.json")] + args[7:]) == 2
    assert "field 'study': 'empty' is not 'missing'" in capsys.readouterr().err
