import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError
from vecflow.core.io import read_jsonl, save_tensors, write_jsonl
from vecflow.lvm.models import load_lvm, predict
from vecflow.lvm.presets import resolve_schedule
from vecflow.lvm.bank import ChunkBank, load_bank
from vecflow.lvm.train import train_lvm
from vecflow.lvm.train_data import carve_selection, future_rows
from vecflow.lvm.train_scoring import dominance, is_better, mini_fivecat
from vecflow.lvm.windows import load_windows, make_windows, save_windows

DIM, CONTEXT = 16, 4
SETTINGS = {
    "seed": 7, "device": "cpu", "preset": "P4", "arch": "transformer", "epochs": 2, "batch_size": 16,
    "learning_rate": 3e-3, "d_model": 32, "layers": 1, "heads": 2, "dropout": 0.0,
    "selection_metric": "val_margin", "selection_fraction": 0.0, "early_stop_patience": 0, "mini5cat_samples": 20,
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models train fastest on one thread, and the test machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ synthetic data

def rotation(dim: int, scale: float, seed: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    skew = torch.randn(dim, dim, generator=generator) * scale
    return torch.linalg.matrix_exp(skew - skew.T).numpy()


def ordered_articles(count: int, length: int, seed: int, rot: np.ndarray, noise: float = 0.05) -> list[np.ndarray]:
    """Articles whose next chunk is a fixed rotation of the previous one plus noise (adjacent cos ~ 0.7)."""
    rng = np.random.default_rng(seed)
    articles = []
    for _ in range(count):
        chunks = [rng.normal(size=DIM)]
        for _ in range(length - 1):
            chunks.append(rot @ (chunks[-1] / np.linalg.norm(chunks[-1])) + noise * rng.normal(size=DIM))
        chunks = np.array(chunks, dtype=np.float32)
        articles.append(chunks / np.linalg.norm(chunks, axis=1, keepdims=True))
    return articles


def write_split(root, name: str, articles: list[np.ndarray], first_id: int) -> None:
    """``{name}_bank.safetensors`` + ``.index.jsonl`` (every chunk) and ``{name}.safetensors``, its windows."""
    save_tensors(root / f"{name}_bank.safetensors", {"embeddings": np.concatenate(articles)})
    write_jsonl(root / f"{name}_bank.index.jsonl", [
        {"article_id": first_id + a, "chunk_index": i, "text": f"chunk {a}.{i}"}
        for a, chunks in enumerate(articles) for i in range(len(chunks))])
    bank = load_bank(root / f"{name}_bank.safetensors", root / f"{name}_bank.index.jsonl")
    save_windows(root / f"{name}.safetensors", make_windows(bank, CONTEXT), bank)


def val_split(data):
    bank = load_bank(data / "val_bank.safetensors", data / "val_bank.index.jsonl")
    return load_windows(data / "val.safetensors", bank), bank


@pytest.fixture(scope="module")
def lvm_data(tmp_path_factory):
    """Train/val windows plus the val embedding bank, from the same ordered process."""
    root = tmp_path_factory.mktemp("lvm-data")
    rot = rotation(DIM, 0.15, seed=0)
    train_articles, val_articles = ordered_articles(16, 14, 1, rot), ordered_articles(5, 12, 2, rot)
    write_split(root, "train", train_articles, 0)
    write_split(root, "val", val_articles, 100)
    return root


def cli_args(data, out, settings) -> list[str]:
    return ["train-lvm", "--train-windows", str(data / "train.safetensors"),
            "--train-embeddings", str(data / "train_bank.safetensors"),
            "--train-index", str(data / "train_bank.index.jsonl"),
            "--val-windows", str(data / "val.safetensors"), "--val-embeddings", str(data / "val_bank.safetensors"),
            "--val-index", str(data / "val_bank.index.jsonl"), "--settings", json.dumps(settings), "--out", str(out)]


def run_training(data, out, **overrides):
    settings = {**SETTINGS, **overrides}
    return train_lvm(data / "train.safetensors", data / "val.safetensors", data / "val_bank.safetensors",
                     data / "val_bank.index.jsonl", settings, out, train_embeddings_path=data / "train_bank.safetensors",
                     train_index_path=data / "train_bank.index.jsonl")


# ------------------------------------------------------------------------------------------ schedules

def active(schedule, key):
    return [weights[key] for weights in schedule]


def test_p1_is_pure_mse_at_any_length():
    for epochs in (4, 20):
        schedule = resolve_schedule("P1", None, epochs)
        assert len(schedule) == epochs
        assert all(w["lambda_mse"] == 1.0 for w in schedule)
        assert all(w[k] == 0 for w in schedule for k in ("lambda_dir", "lambda_fut", "lambda_roll", "lambda_ac"))


def test_p3_warms_up_then_adds_tiny_guards():
    long = resolve_schedule("P3", None, 20)
    assert active(long, "lambda_dir") == [0.0] * 5 + [0.002] * 15
    assert active(long, "lambda_fut") == [0.0] * 5 + [0.002] * 15
    assert active(long, "context_drop") == [0.0] * 5 + [0.05] * 15
    short = resolve_schedule("P3", None, 4)
    assert active(short, "lambda_dir") == [0.0, 0.002, 0.002, 0.002]


def test_p4_reproduces_seed_002_over_20_epochs_and_every_phase_over_4():
    long = resolve_schedule("P4", None, 20)
    assert active(long, "lambda_roll") == [0.0] * 3 + [0.05] * 3 + [0.10] * 14
    assert active(long, "lambda_dir") == [0.0] * 5 + [0.002] * 15
    assert active(long, "adaptive_dir") == [False] * 5 + [True] * 15
    assert active(long, "lambda_fut") == [0.0] * 9 + [0.002] * 11
    assert all(w["rollout_h"] == 3 and w["margin_dir"] == 0.01 and w["margin_fut"] == 0.008 for w in long)
    short = resolve_schedule("P4", None, 4)
    assert active(short, "lambda_roll") == [0.0, 0.05, 0.10, 0.10]
    assert active(short, "lambda_dir") == [0.0, 0.002, 0.002, 0.002]
    assert active(short, "lambda_fut") == [0.0, 0.0, 0.002, 0.002]


def test_run_overrides_keep_the_preset_timing_or_replace_phases():
    schedule = resolve_schedule("P4", {"lambda_roll": 0.2, "rollout_h": 4}, 20)
    assert active(schedule, "lambda_roll") == [0.0] * 3 + [0.2] * 17
    assert active(schedule, "rollout_h") == [4] * 20
    assert active(resolve_schedule("P1", {"lambda_dir": 0.001}, 4), "lambda_dir") == [0.001] * 4
    custom = resolve_schedule("P1", {"phases": [{"start": 0.5, "set": {"lambda_ac": 0.01}}]}, 4)
    assert active(custom, "lambda_ac") == [0.0, 0.0, 0.01, 0.01]


def test_bad_schedule_settings_name_the_field():
    with pytest.raises(VecflowError, match="field 'preset': unknown preset 'P9'"):
        resolve_schedule("P9", None, 4)
    with pytest.raises(VecflowError, match="field 'losses.lambda_guard': unknown loss setting"):
        resolve_schedule("P1", {"lambda_guard": 0.1}, 4)
    with pytest.raises(VecflowError, match="field 'losses.rollout_h': expected int"):
        resolve_schedule("P4", {"rollout_h": 2.5}, 4)
    with pytest.raises(VecflowError, match=r"field 'losses.phases\[0\].start': expected a fraction"):
        resolve_schedule("P1", {"phases": [{"start": 3, "set": {}}]}, 4)


# ------------------------------------------------------------------------------------------ helpers

def test_future_rows_follow_the_article_and_stop_at_its_end_or_a_gap():
    # article 1: chunks 0..6; article 2: chunks 0..4 and 6 (chunk 5 dropped); rows in bank order
    keys = [(1, c) for c in range(7)] + [(2, c) for c in (0, 1, 2, 3, 4, 6)]
    bank = ChunkBank(np.eye(13, 4, dtype=np.float32), [a for a, _ in keys], [c for _, c in keys])
    windows = make_windows(bank, 4)
    assert windows.target_indices.tolist() == [4, 5, 6, 4]
    assert future_rows(windows, bank, 2).tolist() == [[5, 6], [6, -1], [-1, -1], [-1, -1]]  # 2's chunk 6 follows a gap


def test_mini_fivecat_is_the_fivecat_rules_definition(lvm_data):
    from vecflow.lvm import fivecat

    val, bank = val_split(lvm_data)
    oracle = mini_fivecat(val.targets(bank), val, bank)
    assert oracle["margin"] > 0 and oracle["r1"] == 1.0 and oracle["mrr"] == 1.0 and oracle["peak_offset"] == 0
    assert oracle["c"][0] == pytest.approx(1.0, abs=1e-5)
    copy_last = mini_fivecat(val.contexts(bank)[:, -1], val, bank)
    assert copy_last["peak_offset"] == -1 and copy_last["margin"] < 0 and copy_last["r1"] == 0.0
    # same numbers as the 5CAT rule's evaluate_split (same windows, candidate sets, ties)
    full = fivecat.evaluate_split(lambda c: c[:, -1], val, bank)
    for key in ("c0", "margin", "r1", "mrr"):
        assert copy_last[key] == pytest.approx(full[key], abs=1e-6), key
    # every c_k over the windows where all seven offsets exist: 12-chunk articles, C=4 -> t = 4..8
    assert copy_last["sweep_n"] == 5 * 5


def test_dominance_counts_pairs_and_names_what_it_loses_to():
    baselines = {"copy_last": {"c0": 0.5, "mrr": 0.3, "margin": -0.2},
                 "context_mean": {"c0": 0.6, "mrr": 0.2, "margin": -0.1}}
    result = dominance({"c0": 0.55, "mrr": 0.4, "margin": -0.05}, baselines)
    assert result == {"wins": 5, "pairs": 6, "dominates": False, "loses_to": ["context_mean:c0"]}
    assert dominance({"c0": 0.7, "mrr": 0.4, "margin": 0.0}, baselines)["dominates"]
    assert not dominance({"c0": 0.6, "mrr": 0.4, "margin": 0.0}, baselines)["dominates"]  # a tie is no win


def test_is_better_orders_wins_before_margin():
    assert is_better([5, -0.3], [4, 0.1], True) and not is_better([4, 0.2], [5, -0.3], True)
    assert is_better([5, -0.1], [5, -0.2], True) and not is_better([5, float("nan")], None, True)


def test_selection_split_is_carved_from_training_articles(lvm_data):
    train = load_windows(lvm_data / "train.safetensors")
    rest, held, ids = carve_selection(train, 0.25, seed=3)
    assert len(ids) == 4 and set(np.unique(held.article_ids)) == set(ids)
    assert not set(np.unique(rest.article_ids)) & set(ids)
    assert len(rest) + len(held) == len(train)
    assert carve_selection(train, 0.25, seed=3)[2] == ids


def test_selection_split_holds_no_copy_of_a_training_article(lvm_data):
    """An article whose text repeats a training article's (DialogSum train repeats 1,012 dialogues) goes back to
    training: a selection split with copies of training articles rewards memorising them."""
    train = load_windows(lvm_data / "train.safetensors")
    _, _, ids = carve_selection(train, 0.25, seed=3)
    articles = [int(a) for a in np.unique(train.article_ids)]
    copied, twin = ids[0], next(a for a in articles if a not in ids)
    rows = [{"article_id": a, "text": f"turn {i} of article {a} with enough words"} for a in articles for i in range(3)]
    rows += [{"article_id": copied, "text": f"turn 0 of article {twin}   with enough words"},  # same text, spaces
             {"article_id": ids[1], "text": "#Person2#: Thank you."},                       # generic: not leakage
             {"article_id": twin, "text": "#Person2#: Thank you."}]
    rest, held, kept = carve_selection(train, 0.25, seed=3, index_rows=rows, short_tokens=4)
    assert kept == [a for a in ids if a != copied]
    assert copied in set(np.unique(rest.article_ids)) and len(rest) + len(held) == len(train)
    assert carve_selection(train, 0.25, seed=3, index_rows=rows[:-3], short_tokens=4)[2] == ids


def test_dominance_selection_on_a_carved_split_never_reads_val(lvm_data, tmp_path):
    # a residual model starts at the context mean; selection happens on held-out TRAIN articles only
    summary = run_training(lvm_data, tmp_path / "dom", preset="P1", epochs=3, selection_metric="dominance",
                           selection_fraction=0.25, residual=True, losses={"lambda_mse": 0.0, "lambda_cos": 1.0})
    history = read_jsonl(tmp_path / "dom" / "history.jsonl")
    best = max(history, key=lambda r: (r["val/wins"], r["val/margin"]))
    assert summary["best_epoch"] == best["epoch"] and summary["selection"]["split"] == "train-carved"
    assert set(summary["selection_baselines"]) == {"copy_last", "context_mean", "ridge"}
    assert summary["selection_baselines"]["ridge"]["lambda"] > 0
    assert summary["dominates"] == best["val/dominates"]
    assert json.loads((tmp_path / "dom" / "config.json").read_text())["residual"] is True


# ------------------------------------------------------------------------------------------ training

def test_cli_trains_two_epochs_and_publishes_a_loadable_model(lvm_data, tmp_path, capsys):
    out = tmp_path / "p4"
    assert cli_main(cli_args(lvm_data, out, SETTINGS)) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["config.json", "history.jsonl", "model.safetensors", "summary.json"]
    assert not (tmp_path / "p4.partial").exists()
    history = read_jsonl(out / "history.jsonl")
    assert [r["epoch"] for r in history] == [0, 1, 2]  # epoch 0: the untrained start
    for record in history:
        for key in ("train/mse", "train/roll", "val/mse", "val/dir", "val/fut", "val/roll", "val/cos_sim",
                    "val/margin", "val/r1", "val/c_m3", "val/c_0", "val/c_p3", "lambda/roll", "lambda/dir",
                    "schedule/margin_dir", "train/guard_to_mse", "epoch_time_s"):
            assert isinstance(record[key], float), key
        assert record["device"] == "cpu"
    assert history[1]["lambda/roll"] == 0.0 and history[2]["lambda/roll"] == 0.10  # P4 phases over 2 epochs
    summary = json.loads((out / "summary.json").read_text())
    best = max(history, key=lambda r: r["val/margin"])
    assert summary["best_epoch"] == best["epoch"] and summary["val_margin"] == best["val/margin"]
    assert len(summary["epoch_times_s"]) == 2 and summary["device"] == "cpu"
    config = json.loads((out / "config.json").read_text())
    assert config["arch"] == "transformer" and config["dim"] == DIM and config["context_length"] == CONTEXT
    model = load_lvm(out, "cpu")
    val, bank = val_split(lvm_data)
    assert predict(model, val.contexts(bank)[:3]).shape == (3, DIM)
    printed = capsys.readouterr().out
    assert "epoch 2/2" in printed and "device: cpu" in printed


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(lvm_data, tmp_path):
    settings = {"epochs": 3, "preset": "P4", "dropout": 0.1}
    run_training(lvm_data, tmp_path / "straight", **settings)

    assert run_training(lvm_data, tmp_path / "resumed", **settings, stop_after_epoch=1) is None
    assert not (tmp_path / "resumed").exists()
    assert (tmp_path / "resumed.partial" / "state.pt").exists()
    assert [r["epoch"] for r in read_jsonl(tmp_path / "resumed.partial" / "history.jsonl")] == [0, 1]
    run_training(lvm_data, tmp_path / "resumed", **settings)

    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    for name in straight:
        np.testing.assert_array_equal(straight[name], resumed[name])
    drop_times = lambda rows: [{k: v for k, v in r.items() if "time" not in k} for r in rows]
    assert drop_times(read_jsonl(tmp_path / "straight" / "history.jsonl")) == \
        drop_times(read_jsonl(tmp_path / "resumed" / "history.jsonl"))


def test_state_from_other_settings_is_not_resumed(lvm_data, tmp_path, capsys):
    run_training(lvm_data, tmp_path / "run", epochs=2, preset="P1", stop_after_epoch=1)
    run_training(lvm_data, tmp_path / "run", epochs=2, preset="P1", learning_rate=1e-3)
    assert "starting over" in capsys.readouterr().out
    assert [r["epoch"] for r in read_jsonl(tmp_path / "run" / "history.jsonl")] == [0, 1, 2]


def test_trained_model_beats_copy_last_on_ordered_data(lvm_data, tmp_path):
    summary = run_training(lvm_data, tmp_path / "p1", preset="P1", arch="mlp", epochs=12, d_model=64,
                           learning_rate=1e-2, selection_metric="val_cos")
    val, bank = val_split(lvm_data)
    contexts, targets = val.contexts(bank), val.targets(bank)
    copy_last_cos = float(np.mean(np.sum(contexts[:, -1] * targets, axis=1)))
    pred = predict(load_lvm(tmp_path / "p1", "cpu"), contexts)
    model_cos = float(np.mean(np.sum(pred * targets, axis=1)))
    assert model_cos > copy_last_cos + 0.1, (model_cos, copy_last_cos)
    assert summary["val_margin"] > 0 and summary["val_cos"] == pytest.approx(model_cos, abs=1e-4)


def test_early_stop_when_the_margin_stops_improving(lvm_data, tmp_path):
    summary = run_training(lvm_data, tmp_path / "es", preset="P1", arch="amn", epochs=6, learning_rate=0.0,
                           early_stop_patience=1)
    # nothing is learnt: epoch 1 is no better than the untrained start (epoch 0), which stays selected
    assert summary["stopped_early"] and summary["epochs_run"] == 1 and summary["best_epoch"] == 0


# ------------------------------------------------------------------------------------------ bad input

def test_missing_tensor_fails_with_the_file_name_and_no_output(lvm_data, tmp_path, capsys):
    broken = tmp_path / "broken.safetensors"
    windows = load_file(str(lvm_data / "train.safetensors"))
    save_tensors(broken, {k: v for k, v in windows.items() if k != "target_indices"})
    args = cli_args(lvm_data, tmp_path / "out", SETTINGS)
    args[args.index("--train-windows") + 1] = str(broken)
    assert cli_main(args) == 2
    assert f"{broken}: missing tensor 'target_indices'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_index_row_names_file_line_and_field(lvm_data, tmp_path, capsys):
    index = tmp_path / "bank.index.jsonl"
    rows = read_jsonl(lvm_data / "val_bank.index.jsonl")
    rows[2] = {"article_id": 100, "text": "no chunk index"}
    write_jsonl(index, rows)
    args = cli_args(lvm_data, tmp_path / "out", SETTINGS)
    args[args.index("--val-index") + 1] = str(index)
    assert cli_main(args) == 2
    assert f"{index}:3: field 'chunk_index': missing" in capsys.readouterr().err


def test_val_target_missing_from_the_bank_is_an_error(lvm_data, tmp_path):
    index = tmp_path / "bank.index.jsonl"
    rows = read_jsonl(lvm_data / "val_bank.index.jsonl")
    rows[CONTEXT]["chunk_index"] = 99  # article 100's chunk 4, the first window's target
    write_jsonl(index, rows)
    with pytest.raises(VecflowError, match=r"val.safetensors: window 0 \(article_id=100, target_index=4\) does not "
                                           r"point at its chunks in .*val_bank.safetensors"):
        train_lvm(lvm_data / "train.safetensors", lvm_data / "val.safetensors", lvm_data / "val_bank.safetensors",
                  index, SETTINGS, tmp_path / "out", train_embeddings_path=lvm_data / "train_bank.safetensors",
                  train_index_path=lvm_data / "train_bank.index.jsonl")


def test_bad_settings_are_rejected_before_training(lvm_data, tmp_path, capsys):
    assert cli_main(cli_args(lvm_data, tmp_path / "out", {**SETTINGS, "selection_metric": "val_r5"})) == 2
    assert "field 'selection_metric': 'val_r5' is not one of" in capsys.readouterr().err
    settings = {k: v for k, v in SETTINGS.items() if k != "arch"}
    assert cli_main(cli_args(lvm_data, tmp_path / "out", settings)) == 2
    assert "settings: missing key 'arch'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ridge_residual_run_starts_from_the_training_ridge(lvm_data, tmp_path):
    from vecflow.lvm.baselines import normalise

    summary = run_training(lvm_data, tmp_path / "rr", preset="P1", epochs=1, learning_rate=0.0, residual="ridge",
                           selection_fraction=0.25, selection_metric="dominance")
    # with a zero learning rate the model IS the ridge baseline: same selection scores
    ridge = summary["selection_baselines"]["ridge"]
    assert summary["val_c0"] == pytest.approx(ridge["c0"], abs=1e-5)
    assert summary["val_margin"] == pytest.approx(ridge["margin"], abs=1e-5)
    model = load_lvm(tmp_path / "rr", "cpu")
    assert float(model.base_weight.abs().sum()) > 0
    val, bank = val_split(lvm_data)
    contexts = val.contexts(bank)[:4]
    flat = contexts.reshape(4, -1) @ model.base_weight.numpy() + model.base_bias.numpy()
    np.testing.assert_allclose(predict(model, contexts), normalise(flat), atol=1e-5)


def test_selection_never_publishes_a_checkpoint_worse_than_the_untrained_start(lvm_data, tmp_path, monkeypatch):
    from vecflow.lvm import train_loop
    from vecflow.lvm.baselines import normalise

    def diverging_epoch(model, optimizer, windows, weights, run, generator, device):
        """Training that only makes the model worse (a diverging optimiser): random weights."""
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=generator))
        return train_loop.evaluate(model, windows, weights, run.batch_size, device)

    monkeypatch.setattr(train_loop, "train_one_epoch", diverging_epoch)
    # a residual model starts AT the context mean (epoch 0)
    summary = run_training(lvm_data, tmp_path / "bad", preset="P1", arch="mlp", epochs=2, residual=True,
                           selection_metric="val_cos")
    history = read_jsonl(tmp_path / "bad" / "history.jsonl")
    assert history[0]["epoch"] == 0 and all(r["val/cos_sim"] < history[0]["val/cos_sim"] for r in history[1:])
    assert summary["best_epoch"] == 0 and summary["best_is_untrained_start"]
    assert summary["untrained_start"]["val/cos_sim"] == summary["val_cos"] and summary["epochs_run"] == 2
    val, bank = val_split(lvm_data)
    contexts = val.contexts(bank)  # the published model is the untrained start: the context mean
    np.testing.assert_allclose(predict(load_lvm(tmp_path / "bad", "cpu"), contexts), normalise(contexts.mean(1)),
                               atol=1e-5)


def test_train_lvm_uses_torchs_fused_adamw_on_cpu():
    import torch

    from vecflow.lvm.train_loop import make_optimizer

    optimizer = make_optimizer(torch.nn.Linear(4, 4), 1e-3, 0.01, "cpu")
    assert optimizer.defaults["fused"] is True and optimizer.defaults["weight_decay"] == 0.01


def test_forward_selection_prefers_a_positive_margin_then_the_highest_c0():
    from vecflow.lvm.train_scoring import forward_key, forward_verdict, is_better

    backward_strong = forward_key(-0.01, 0.70, 9)
    forward_weak = forward_key(0.001, 0.55, 0)
    forward_better = forward_key(0.0005, 0.60, 0)
    assert is_better(forward_weak, backward_strong, True)
    assert is_better(forward_better, forward_weak, True)  # both forward: higher c0 wins, whatever the margin
    assert is_better(forward_key(-0.01, 0.5, 9), forward_key(-0.001, 0.7, 8), True)  # none forward: dominance
    assert forward_verdict({"val/margin": -0.01}, "forward") == {"positive_margin": False, "margin": -0.01,
                                                                 "fallback": "dominance"}
    assert forward_verdict({"val/margin": 0.02}, "forward")["fallback"] is None


def test_context_contrast_is_chosen_on_the_selection_split_and_travels_with_the_model(lvm_data, tmp_path):  # noqa: F811
    """contrast.enabled: alpha/slots chosen by the forward rule on the selection windows, stored in config.json;
    load_lvm (5CAT, the server) applies it, and predict gives exactly what the choice scored."""
    from vecflow.lvm.models import ContextContrast, load_lvm, predict as lvm_predict

    out = tmp_path / "contrast"
    summary = run_training(lvm_data, out, epochs=1, selection_metric="forward", selection_fraction=0.25,
                           contrast={"enabled": True, "alphas": [0.0, 0.3, 0.6], "slots": [2, 3]})
    contrast = summary["contrast"]
    assert len(contrast["grid"]) == 6 and {g["slots"] for g in contrast["grid"]} == {2, 3}
    chosen = contrast["chosen"]
    forward = [g for g in contrast["grid"] if g["margin"] > 0]
    if forward:
        assert chosen["c0"] == max(g["c0"] for g in forward) and contrast["rule"] == "forward"
    else:
        assert contrast["rule"] == "dominance" and chosen["wins"] == max(g["wins"] for g in contrast["grid"])
    assert summary["val_margin"] == chosen["margin"] and summary["val_c0"] == chosen["c0"]
    config = json.loads((out / "config.json").read_text())
    model = load_lvm(out)
    if chosen["alpha"] > 0:
        assert config["contrast"] == {"alpha": chosen["alpha"], "slots": chosen["slots"]}
        assert isinstance(model, ContextContrast) and model.alpha == chosen["alpha"]
    ctx = np.random.default_rng(0).standard_normal((4, 3, model_dim(config))).astype(np.float32)
    ctx /= np.linalg.norm(ctx, axis=-1, keepdims=True)
    inner = model.inner if isinstance(model, ContextContrast) else model
    expected = lvm_predict(inner, ctx) - chosen["alpha"] * ctx[:, -chosen["slots"]:].mean(axis=1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(lvm_predict(model, ctx), expected, atol=1e-5)


def model_dim(config):
    return int(config["dim"])


def test_a_large_contrast_makes_copy_last_predictions_move_off_the_last_slot():
    import torch

    from vecflow.lvm.models import ContextContrast

    class CopyLast(torch.nn.Module):
        def forward(self, contexts):
            return contexts[:, -1]

    ctx = torch.nn.functional.normalize(torch.randn(8, 3, 16), dim=-1)
    plain = torch.nn.functional.cosine_similarity(CopyLast()(ctx), ctx[:, -1], dim=-1)
    moved = torch.nn.functional.cosine_similarity(ContextContrast(CopyLast(), 0.5, 1)(ctx), ctx[:, -1], dim=-1)
    assert torch.allclose(plain, torch.ones(8)) and torch.allclose(moved, torch.ones(8))  # same direction, scaled
    moved_two = ContextContrast(CopyLast(), 0.5, 2)(ctx)
    assert (torch.nn.functional.cosine_similarity(moved_two, ctx[:, -2], dim=-1) < plain).all()
