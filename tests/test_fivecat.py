import json
import sys
import types

import numpy as np
import pytest

from vecflow.lvm.baselines import NearestContextOracle, context_mean, copy_last, fit_ridge, normalise
from vecflow.core.errors import VecflowError
from vecflow.lvm.bank import ChunkBank, load_bank
from vecflow.lvm.fivecat import (
    ablations,
    evaluate_split,
    generalisation_gaps,
    lcm_metrics,
    leave_one_out,
    offset_sweep,
    out_of_article_rows,
    retrieval,
    rows_by_article,
    rowwise_cosine,
    shuffled_slots,
)
from vecflow.lvm.fivecat_cli import subsample
from vecflow.lvm.fivecat_verdicts import beats_baselines, gate_counts, gates
from vecflow.core.io import save_tensors, write_jsonl
from vecflow.lvm.windows import Windows, load_windows, make_windows, save_windows

DIM = 16


# ------------------------------------------------------------------ synthetic ordered data
def rotating_articles(lengths, rng, first_id=0, step=0.45, noise=0.05):
    """Articles whose chunks walk around a random plane in order: chunk i is at angle phase + i·step."""
    articles = {}
    for offset, length in enumerate(lengths):
        plane, _ = np.linalg.qr(rng.standard_normal((DIM, 2)))
        angles = rng.uniform(0, 2 * np.pi) + step * np.arange(length)
        points = np.cos(angles)[:, None] * plane[:, 0] + np.sin(angles)[:, None] * plane[:, 1]
        articles[first_id + offset] = normalise(points + noise * rng.standard_normal(points.shape))
    return articles


def bank_of(articles, rng=None):
    """A ChunkBank of every chunk; rows optionally shuffled so lookups cannot rely on row order."""
    ids = np.concatenate([[a] * len(c) for a, c in articles.items()])
    chunks = np.concatenate([np.arange(len(c)) for c in articles.values()])
    vectors = np.concatenate(list(articles.values()))
    order = rng.permutation(len(ids)) if rng is not None else np.arange(len(ids))
    return ChunkBank(vectors[order], ids[order], chunks[order], source="bank.index.jsonl")


def windows_of(bank, slots):
    """Every window of ``slots`` consecutive chunks -> the next chunk of ``bank``, never crossing an article."""
    windows = make_windows(bank, slots)
    return Windows(windows.rows, windows.article_ids, windows.target_indices, source="val.windows.safetensors")


def extrapolate(contexts):
    """Order-using predictor: ŷ = normalise(2·ctx[-1] − ctx[-2])."""
    return normalise(2 * contexts[:, -1] - contexts[:, -2])


@pytest.fixture(scope="module")
def ordered():
    rng = np.random.default_rng(0)
    train = rotating_articles([12] * 40, rng, first_id=0)
    val = rotating_articles([10] * 12 + [4, 5], rng, first_id=1000)
    train_bank, val_bank = bank_of(train), bank_of(val, rng)
    return {"train": windows_of(train_bank, 5), "train_bank": train_bank, "val": windows_of(val_bank, 3),
            "val_bank": val_bank, "train5": train, "val_articles": val}


# ------------------------------------------------------------------ A: offsets
def test_oracle_peaks_at_the_true_target_with_positive_margin_and_perfect_retrieval(ordered):
    windows, bank = ordered["val"], ordered["val_bank"]
    result = evaluate_split(NearestContextOracle(windows.contexts(bank), windows.targets(bank)), windows, bank)
    assert result["peak_k"] == 0
    assert result["c0"] == pytest.approx(1.0, abs=1e-5)
    assert result["margin"] > 0.05
    assert result["r1"] == 1.0 and result["r5"] == 1.0 and result["mrr"] == 1.0


def test_copy_last_peaks_at_minus_one_because_k_minus_one_is_ctx_last(ordered):
    windows, bank = ordered["val"], ordered["val_bank"]
    sweep = offset_sweep(copy_last(windows.contexts(bank)), windows, bank)
    assert sweep["peak_k"] == -1
    assert sweep["offsets"]["-1"]["c"] == pytest.approx(1.0, abs=1e-5)
    assert sweep["margin"] < 0
    # further from the target's predecessor, lower similarity: the sweep is ordered around k = -1
    c = {int(k): v["c"] for k, v in sweep["offsets"].items()}
    assert c[-1] > c[0] > c[1] > c[2] and c[-1] > c[-2] > c[-3]


def test_offsets_near_article_edges_are_skipped_not_wrapped():
    rng = np.random.default_rng(1)
    articles = rotating_articles([5, 7], rng, first_id=10)
    bank = bank_of(articles, rng)
    windows = windows_of(bank, 3)
    # targets: article 10 -> t = 3, 4 ; article 11 -> t = 3, 4, 5, 6
    sweep = offset_sweep(copy_last(windows.contexts(bank)), windows, bank)
    available = {int(k): v["n_available"] for k, v in sweep["offsets"].items()}
    assert available == {-3: 6, -2: 6, -1: 6, 0: 6, 1: 1 + 3, 2: 0 + 2, 3: 0 + 1}
    # every c_k is averaged over the same windows: the only one with all seven offsets is article 11's t=3
    assert sweep["n"] == 1 and sweep["same_windows"]
    assert all(v["n"] == 1 for v in sweep["offsets"].values())
    prediction = copy_last(windows.contexts(bank)[2:3])[0]
    for k in (-3, 0, 3):
        expected = float(prediction @ articles[11][3 + k])
        assert sweep["offsets"][str(k)]["c"] == pytest.approx(expected, abs=1e-5)


def test_an_offset_that_no_window_has_is_reported_as_none():
    rng = np.random.default_rng(2)
    articles = rotating_articles([4, 4], rng)
    bank = bank_of(articles)
    windows = windows_of(bank, 3)
    sweep = offset_sweep(windows.targets(bank), windows, bank)
    assert sweep["offsets"]["1"] == {"c": None, "n": 0, "n_available": 0}
    assert not sweep["same_windows"]  # no window has all seven offsets: each c_k uses what exists
    assert sweep["peak_k"] == 0 and sweep["margin"] > 0


# ------------------------------------------------------------------ B: retrieval
def test_retrieval_counts_only_articles_with_at_least_six_chunks(ordered):
    windows, bank = ordered["val"], ordered["val_bank"]
    ranks = retrieval(windows.targets(bank), windows, bank)
    assert ranks["n_articles"] == 12            # the 4- and 5-chunk articles are left out
    assert ranks["n"] == 12 * (10 - 3)
    assert ranks["n"] < len(windows)
    assert ranks["r1"] == 1.0


def test_retrieval_ranks_within_the_article():
    rng = np.random.default_rng(3)
    articles = rotating_articles([8], rng)
    bank = bank_of(articles)
    windows = windows_of(bank, 3)
    # predict the chunk two before the target: the target is then never first
    predictions = articles[0][windows.target_indices - 2]
    ranks = retrieval(predictions, windows, bank)
    assert ranks["r1"] == 0.0
    assert 0 < ranks["mrr"] < 1 and ranks["r5"] > 0.0


# ------------------------------------------------------------------ C: ablations, D: rollout
def test_predictors_that_use_order_lose_under_shuffled_and_reversed_context(ordered):
    windows, bank = ordered["val"], ordered["val_bank"]
    train, train_bank = ordered["train"], ordered["train_bank"]
    ridge = fit_ridge(train.contexts(train_bank), train.targets(train_bank), ridge_lambda=0.1)
    val5 = windows_of(bank, 5)
    for predict, data in ((extrapolate, windows), (ridge, val5)):
        ablation = evaluate_split(predict, data, bank)["ablations"]
        assert ablation["shuffled"] < -0.05
        assert ablation["reversed"] < -0.05
        assert ablation["last_repeated"] < 0
        assert ablation["other_article"] < -0.3
        assert ablation["leave_one_out"] < 0
    order_blind = evaluate_split(context_mean, windows, bank)["ablations"]
    assert order_blind["shuffled"] == pytest.approx(0.0, abs=1e-5)
    assert order_blind["reversed"] == pytest.approx(0.0, abs=1e-5)


def test_ridge_fitted_on_train_beats_context_mean_on_ordered_data(ordered):
    train, train_bank = ordered["train"], ordered["train_bank"]
    val5 = windows_of(ordered["val_bank"], 5)
    ridge = fit_ridge(train.contexts(train_bank), train.targets(train_bank), ridge_lambda=0.1)
    ridge_result = evaluate_split(ridge, val5, ordered["val_bank"])
    mean_result = evaluate_split(context_mean, val5, ordered["val_bank"])
    assert ridge_result["c0"] > mean_result["c0"] + 0.1
    assert ridge_result["peak_k"] == 0 and ridge_result["margin"] > 0


def test_rollout_follows_the_true_future_chunks_for_the_oracle(ordered):
    windows, bank = ordered["val"], ordered["val_bank"]
    result = evaluate_split(NearestContextOracle(windows.contexts(bank), windows.targets(bank)), windows, bank,
                            rollout_steps=3)
    detail = result["rollout_detail"]
    assert detail["per_step"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-5)
    # h = 3 needs chunk t+2 in the same article: 10-chunk articles lose 2 of 7 windows, 4/5-chunk lose all
    assert detail["n_per_step"] == [len(windows), 12 * 6 + 1, 12 * 5]
    copy = evaluate_split(copy_last, windows, bank, rollout_steps=3)
    assert copy["rollout"] < result["rollout"]
    assert copy["rollout_detail"]["per_step"][2] < copy["rollout_detail"]["per_step"][0]


def test_shuffled_slots_never_keep_the_original_order_and_leave_one_out_uses_the_others():
    rng = np.random.default_rng(4)
    contexts = normalise(rng.standard_normal((200, 3, DIM)))
    shuffled = shuffled_slots(contexts, np.random.default_rng(0))
    assert not np.any(np.all(shuffled == contexts, axis=(1, 2)))
    np.testing.assert_allclose(np.sort(shuffled, axis=1), np.sort(contexts, axis=1))
    np.testing.assert_array_equal(shuffled, shuffled_slots(contexts, np.random.default_rng(0)))
    ablated = leave_one_out(contexts, 1)
    np.testing.assert_allclose(ablated[:, 1], normalise(contexts[:, [0, 2]].mean(axis=1)), atol=1e-6)
    np.testing.assert_array_equal(ablated[:, [0, 2]], contexts[:, [0, 2]])


# ------------------------------------------------------------------ LCM metrics: CA and PAR
LCM_KEYS = ("ca", "ca_out", "ca_in", "par", "par_median", "ca_detail", "par_detail")


def test_oracle_has_contrastive_accuracy_one_and_par_one(ordered):
    windows, bank = ordered["val"], ordered["val_bank"]
    result = evaluate_split(NearestContextOracle(windows.contexts(bank), windows.targets(bank)), windows, bank)
    assert result["ca"] == 1.0 and result["ca_out"] == 1.0 and result["ca_in"] == 1.0
    detail = result["ca_detail"]
    assert detail["n"] == detail["n_out"] == detail["n_in"] == len(windows)
    assert detail["candidates"]["out_of_article"] == 256 and detail["candidates"]["seed"] == 0
    # ŷ = y: its closest context chunk is the true next chunk's closest, so PAR is 1 (never above it)
    assert result["par"] == pytest.approx(1.0, abs=1e-6) and result["par_median"] == pytest.approx(1.0, abs=1e-6)
    assert result["par_detail"]["share_above_1"] == 0.0 and result["par_detail"]["excluded_nonpositive"] == 0


def test_copy_last_paraphrases_the_context_and_an_extrapolator_less(ordered):
    windows, bank = ordered["val"], ordered["val_bank"]
    copy = evaluate_split(copy_last, windows, bank)
    # ŷ = ctx[-1]: max_j cos(ŷ, ctx_j) = 1 >= max_j cos(y, ctx_j) and >= cos(ŷ, y), window by window
    assert copy["par"] >= 1 and copy["par_median"] >= 1
    assert copy["par_detail"]["share_above_1"] == 1.0
    assert copy["par_detail"]["vs_target"]["share_above_1"] == 1.0 and copy["par_detail"]["vs_target"]["median"] > 1
    forward = evaluate_split(extrapolate, windows, bank)
    assert forward["par"] < copy["par"] and forward["par_detail"]["vs_target"]["median"] < 1
    assert forward["ca_in"] > copy["ca_in"]  # closer to the true next chunk than to the article's other chunks


def test_ca_candidates_leave_out_the_neighbours_and_are_drawn_outside_the_article():
    rng = np.random.default_rng(5)
    u = normalise(rng.standard_normal(DIM))
    # article 0: chunks 0, 1 random, 2..49 all exactly u; article 1 (a tenth of the bank): random chunks
    first = np.concatenate([normalise(rng.standard_normal((2, DIM))), np.repeat(u[None], 48, axis=0)])
    second = normalise(rng.standard_normal((6, DIM)))
    bank = bank_of({0: first, 1: second}, rng)
    windows = Windows(bank.rows(np.zeros(4, np.int64), np.arange(4))[None], np.array([0]), np.array([3]))
    result = lcm_metrics(u[None], windows, bank, negatives=64, seed=1)  # ŷ = y = u, chunks 2 and 4 are u too
    # in-article candidates: chunks 0, 1 (farther) and 5..49 (copies of u: ties, not farther); not 2, 3, 4
    assert result["ca_detail"]["mean_in_candidates"] == 47 and result["ca_in"] == pytest.approx(2 / 47)
    # out-of-article: only article 1's chunks, all farther; a draw over the whole bank would hit u 9 times in 10
    assert result["ca_out"] == 1.0 and result["ca"] == pytest.approx((64 + 2) / (64 + 47))
    # an exact copy of the target outside the article is a tie too: not farther
    copies = bank_of({0: first, 1: np.repeat(u[None], 6, axis=0)})
    windows = Windows(copies.rows(np.zeros(4, np.int64), np.arange(4))[None], np.array([0]), np.array([3]))
    assert lcm_metrics(u[None], windows, copies, negatives=64, seed=1)["ca_out"] == 0.0


def test_out_of_article_draws_map_onto_every_other_row_once():
    rng = np.random.default_rng(6)
    articles = {7: normalise(rng.standard_normal((3, DIM))), 2: normalise(rng.standard_normal((5, DIM))),
                9: normalise(rng.standard_normal((2, DIM)))}
    bank = bank_of(articles, rng)  # rows shuffled: the (article, chunk) order is not the row order
    ordered, starts = rows_by_article(bank)
    for article, size in ((2, 5), (7, 3), (9, 2)):
        others = len(bank) - size
        draws = ((np.arange(others) + 0.5) / others)[None]  # one draw in each 1/m slice of [0, 1)
        code = bank.article_codes(np.array([article]))
        rows, valid = out_of_article_rows(code, draws, ordered, starts, bank.article_sizes)
        keys = sorted(zip(bank.article_ids, bank.chunk_indices, range(len(bank))))
        expected = [row for a, _, row in keys if a != article]
        assert rows[0].tolist() == expected and valid.tolist() == [True]
    single = bank_of({4: normalise(rng.standard_normal((3, DIM)))})
    ordered, starts = rows_by_article(single)
    _, valid = out_of_article_rows(np.array([0]), np.full((1, 8), 0.5), ordered, starts, single.article_sizes)
    assert valid.tolist() == [False]  # one article: no out-of-article candidate (ca_out None, not 0)


@pytest.mark.parametrize("predictor", ["extrapolate", "copy_last", "context_mean", "oracle"])
def test_ca_and_par_equal_the_one_window_reference_at_any_block_size(ordered, predictor):
    from vecflow.bench.common import compare_numbers
    from vecflow.bench.fivecat import reference_fivecat

    windows, bank = ordered["val"], ordered["val_bank"]
    oracle = NearestContextOracle(windows.contexts(bank), windows.targets(bank))
    predict = {"extrapolate": extrapolate, "copy_last": copy_last, "context_mean": context_mean,
               "oracle": oracle}[predictor]
    ours = evaluate_split(predict, windows, bank, seed=5, ca_negatives=40)
    ref = reference_fivecat(predict, windows, bank.embeddings, bank.article_ids, bank.chunk_indices, seed=5,
                            ca_negatives=40)
    check = compare_numbers({k: ours[k] for k in LCM_KEYS}, {k: ref[k] for k in LCM_KEYS})
    assert check["mismatched"] == [] and check["max_abs_diff"] <= 1e-6, check
    assert check["numbers"] >= 20
    predictions = normalise(predict(windows.contexts(bank)))
    blocks = lcm_metrics(predictions, windows, bank, negatives=40, seed=5, batch_values=40 * DIM * 7)  # 13 blocks
    assert compare_numbers({k: blocks[k] for k in LCM_KEYS}, {k: ours[k] for k in LCM_KEYS})["max_abs_diff"] == 0


def test_lvm_summary_shows_ca_and_par_and_marks_only_ca():
    from vecflow.ship.report_summary import lvm_summary

    def split(c0, ca, par):
        return {"c0": c0, "margin": 0.0, "mrr": 0.1, "r5": 0.2, "ca": ca, "par": par}

    report = {"model": {"val": split(0.5, 0.9, 0.98)}, "baselines": {"copy_last": {"val": split(0.4, 0.8, 1.3)}}}
    table = lvm_summary({"run": report})[0]
    columns = table["columns"]
    assert "VAL CA" in columns and "VAL PAR" in columns
    rows = {row[0].text: [c.text for c in row[1:]] for row in table["rows"]}
    ca, par = columns.index("VAL CA") - 1, columns.index("VAL PAR") - 1
    assert rows["run"][ca] == "0.9000 ★" and rows["copy-last"][ca] == "0.8000"
    assert rows["copy-last"][par] == "1.3000" and rows["run"][par] == "0.9800"  # PAR: no winner marked
    assert "CA" in table["caption"] and "PAR" in table["caption"]


# ------------------------------------------------------------------ gates, E, baselines comparison
def _metrics(c0, margin, r1=0.9, r5=1.0, mrr=0.95, rollout=0.6):
    return {"c0": c0, "margin": margin, "r1": r1, "r5": r5, "mrr": mrr, "rollout": rollout}


THRESHOLDS = {
    "val": {"c0": 0.50, "margin": 0.12, "r1": 0.60, "r5": 0.95, "mrr": 0.80, "rollout": 0.45},
    "ood": {"c0": 0.48, "margin": 0.10, "r1": 0.55, "r5": 0.92, "mrr": 0.75, "rollout": 0.42},
    "max_generalisation_gap": 0.05,
}


def test_gates_count_each_threshold_and_the_generalisation_gaps():
    results = {"val": _metrics(0.60, 0.20), "ood": _metrics(0.52, 0.05, r1=None)}
    verdict = gates(results, THRESHOLDS)
    assert verdict["val"] == dict.fromkeys(["c0", "margin", "r1", "r5", "mrr", "rollout"], True)
    assert verdict["ood"]["margin"] is False and verdict["ood"]["r1"] is False and verdict["ood"]["c0"] is True
    gaps = generalisation_gaps(results)
    assert gaps["c0"] == pytest.approx(0.08) and gaps["margin"] == pytest.approx(0.15) and gaps["r1"] is None
    assert verdict["generalisation"] == {"c0": False, "margin": False, "r1": False}
    assert set(verdict) == {"val", "ood", "generalisation"}
    assert gate_counts(verdict) == {"passed": 6 + 4, "total": 15, "all_passed": False}
    assert gate_counts({"val": {"c0": True}})["all_passed"] is True


def test_beats_baselines_needs_both_higher_c0_and_margin():
    model = {"val": _metrics(0.6, 0.1)}
    baselines = {"copy_last": {"val": _metrics(0.5, -0.3)}, "ridge": {"val": _metrics(0.65, 0.05)}}
    assert beats_baselines(model, baselines) == {"val": {"copy_last": True, "ridge": False}}


def test_subsample_is_seeded_bounded_and_in_file_order(ordered):
    windows = ordered["train"]
    a, b = subsample(windows, 50, seed=3), subsample(windows, 50, seed=3)
    assert len(a) == 50
    np.testing.assert_array_equal(a.rows, b.rows)
    assert subsample(windows, 0, seed=3) is windows
    keys = a.article_ids * 100 + a.target_indices
    assert np.all(np.diff(keys) > 0)


# ------------------------------------------------------------------ files and bad input
def write_split(tmp_path, name, articles, slots, drop_key=None):
    bank = bank_of(articles)
    windows = windows_of(bank, slots)
    paths = (tmp_path / f"{name}.windows.safetensors", tmp_path / f"{name}.safetensors",
             tmp_path / f"{name}.index.jsonl")
    save_windows(paths[0], windows, bank)
    if drop_key:
        tensors = {"rows": windows.rows, "article_ids": windows.article_ids, "target_indices": windows.target_indices}
        tensors.pop(drop_key)
        save_tensors(paths[0], tensors)
    save_tensors(paths[1], {"embeddings": bank.embeddings})
    write_jsonl(paths[2], ({"article_id": int(a), "chunk_index": int(c), "text": f"chunk {c}"}
                           for a, chunks in articles.items() for c in range(len(chunks))))
    return paths


def test_windows_without_target_indices_name_the_file_and_key(tmp_path):
    paths = write_split(tmp_path, "val", rotating_articles([7], np.random.default_rng(5)), 3,
                        drop_key="target_indices")
    with pytest.raises(VecflowError, match=r"val\.windows\.safetensors: missing tensor 'target_indices'"):
        load_windows(paths[0])


def test_a_window_whose_target_is_not_in_the_bank_is_named(tmp_path, ordered):
    windows, bank = ordered["val"], ordered["val_bank"]
    broken = Windows(windows.rows, windows.article_ids, windows.target_indices.copy(), windows.source)
    broken.target_indices[4] = 99
    with pytest.raises(VecflowError, match=r"val\.windows\.safetensors: window 4 \(article_id=1000, "
                                           r"target_index=99\) does not point at its chunks in bank\.index\.jsonl"):
        evaluate_split(copy_last, broken, bank)


def test_bad_bank_index_rows_name_file_line_and_field(tmp_path):
    paths = write_split(tmp_path, "val", rotating_articles([7], np.random.default_rng(6)), 3)
    lines = paths[2].read_text().splitlines()
    paths[2].write_text("\n".join(lines[:2] + ['{"article_id": 0, "text": "x"}'] + lines[3:]) + "\n")
    with pytest.raises(VecflowError, match=r"val\.index\.jsonl:3: field 'chunk_index': missing"):
        load_bank(paths[1], paths[2])
    paths[2].write_text("\n".join(lines[:2] + [lines[1]] + lines[3:]) + "\n")
    with pytest.raises(VecflowError, match=r"val\.index\.jsonl:3: duplicate \(article_id=0, chunk_index=1\)"):
        load_bank(paths[1], paths[2])
    paths[2].write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(VecflowError, match=r"val\.index\.jsonl: 6 rows but .*val\.safetensors has 7"):
        load_bank(paths[1], paths[2])


def test_old_float_windows_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"contexts": np.zeros((4, 3, 8), np.float32), "targets": np.zeros((4, 8), np.float32),
                        "article_ids": np.zeros(4, np.int64), "target_indices": np.zeros(4, np.int64)})
    with pytest.raises(VecflowError, match=r"w\.safetensors: an old windows file with float vectors"):
        load_windows(path)


# ------------------------------------------------------------------ CLI
@pytest.fixture
def fake_lvm_models(monkeypatch):
    """Stand-in for vecflow.lvm.models: the 'model' in DIR is the 2·ctx[-1] − ctx[-2] extrapolator."""
    module = types.ModuleType("vecflow.lvm.models")
    loaded = []

    def load_lvm(path, device):
        loaded.append((str(path), str(device)))
        return extrapolate

    def predict(model, contexts, batch_size, device):
        return np.concatenate([model(contexts[i:i + batch_size]) for i in range(0, len(contexts), batch_size)])

    module.load_lvm, module.predict, module.loaded = load_lvm, predict, loaded
    monkeypatch.setitem(sys.modules, "vecflow.lvm.models", module)
    return module


def cli_args(tmp_path, splits, settings):
    args = ["fivecat", "--model", str(tmp_path / "model"), "--train-windows", str(splits["train"][0]),
            "--train-embeddings", str(splits["train"][1]), "--train-index", str(splits["train"][2])]
    for name in ("val", "ood"):
        args += ["--split", f"{name}=" + ",".join(str(p) for p in splits[name])]
    return args + ["--settings", json.dumps(settings), "--out-json", str(tmp_path / "out" / "5cat.json"),
                   "--out-plot", str(tmp_path / "out" / "5cat.png")]


@pytest.fixture
def split_files(tmp_path):
    rng = np.random.default_rng(7)
    return {"train": write_split(tmp_path, "train", rotating_articles([12] * 20, rng, 0), 3),
            "val": write_split(tmp_path, "val", rotating_articles([10] * 6, rng, 100), 3),
            "ood": write_split(tmp_path, "ood", rotating_articles([9] * 6, rng, 200, step=0.6), 3)}


def test_cli_scores_model_and_baselines_and_writes_json_and_plot(tmp_path, split_files, fake_lvm_models):
    from vecflow.cli import main

    settings = {"seed": 3, "device": "cpu", "max_samples": 30, "rollout_steps": 3, "thresholds": THRESHOLDS,
                "ca_negatives": 16}
    assert main(cli_args(tmp_path, split_files, settings)) == 0
    report = json.loads((tmp_path / "out" / "5cat.json").read_text())
    assert fake_lvm_models.loaded == [(str(tmp_path / "model"), "cpu")]
    assert set(report) >= {"model", "baselines", "gates", "thresholds", "beats_baselines", "settings",
                           "generalisation", "gate_counts"}
    assert set(report["model"]) == {"val", "ood"}
    assert set(report["baselines"]) == {"copy_last", "context_mean", "ridge"}
    assert report["model"]["val"]["n_windows"] == 30 and report["model"]["ood"]["n_windows"] == 30
    assert report["model"]["val"]["peak_k"] == 0
    assert report["baselines"]["copy_last"]["ood"]["peak_k"] == -1
    assert report["beats_baselines"]["val"]["copy_last"] is True
    assert report["beats_baselines"]["val"]["context_mean"] is True
    assert report["gate_counts"]["total"] == 15 and report["thresholds"] == THRESHOLDS
    for contender in [report["model"], *report["baselines"].values()]:  # CA and PAR for every one, every split
        for split in ("val", "ood"):
            metrics = contender[split]
            assert 0 <= metrics["ca"] <= 1 and metrics["par"] > 0 and metrics["ca_in"] is not None
            assert metrics["ca_detail"]["candidates"]["out_of_article"] == 16  # settings.ca_negatives
    assert report["baselines"]["copy_last"]["val"]["par"] > 1
    assert all(isinstance(ok, bool) for section in report["gates"].values() for ok in section.values())
    assert (tmp_path / "out" / "5cat.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # same settings, same numbers
    first = (tmp_path / "out" / "5cat.json").read_text()
    assert main(cli_args(tmp_path, split_files, settings)) == 0
    assert (tmp_path / "out" / "5cat.json").read_text() == first


def test_cli_with_a_real_saved_lvm(tmp_path, split_files):
    lvm_models = pytest.importorskip("vecflow.lvm.models")
    from vecflow.cli import main

    settings = {"d_model": 8, "layers": 1, "heads": 2, "dropout": 0.0}
    model = lvm_models.build_model("mlp", DIM, 3, settings)
    lvm_models.save_lvm(tmp_path / "model", model, lvm_models.model_config("mlp", DIM, 3, settings))
    fivecat_settings = {"seed": 0, "device": "cpu", "max_samples": 20, "thresholds": THRESHOLDS}
    assert main(cli_args(tmp_path, split_files, fivecat_settings)) == 0
    report = json.loads((tmp_path / "out" / "5cat.json").read_text())
    bank = load_bank(*split_files["val"][1:])
    val = subsample(load_windows(split_files["val"][0], bank), 20, seed=0)
    expected = lvm_models.predict(lvm_models.load_lvm(tmp_path / "model"), val.contexts(bank))
    cos = float(np.mean(np.sum(expected * val.targets(bank), axis=1)))
    assert report["model"]["val"]["cos_target"] == pytest.approx(cos, abs=1e-5)
    assert report["model"]["val"]["n_windows"] == 20


def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, split_files, fake_lvm_models, capsys):
    from vecflow.cli import main

    index = split_files["ood"][2]
    lines = index.read_text().splitlines()
    index.write_text("\n".join(lines[:-1]) + "\n")      # drops article 205's last chunk: a window target
    save_tensors(split_files["ood"][1], {"embeddings": np.full((len(lines) - 1, DIM), DIM ** -0.5, np.float32)})
    code = main(cli_args(tmp_path, split_files, {"seed": 0, "device": "cpu", "thresholds": THRESHOLDS}))
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "ood.windows.safetensors: built from a bank of 54 rows, but" in err and "has 53" in err
    assert "delete it and rerun the make_windows rule" in err
    assert not (tmp_path / "out").exists()


def test_cli_rejects_a_malformed_split_argument(tmp_path, capsys):
    from vecflow.lvm.fivecat_cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "m", "--train-windows", "t", "--split", "val=a,b", "--settings", "{}",
              "--out-json", "o.json", "--out-plot", "o.png"])
    assert exit_info.value.code == 2
    assert "expected NAME=WINDOWS,EMBEDDINGS,INDEX" in capsys.readouterr().err


def test_bank_rows_must_be_unit_norm_on_load(tmp_path):
    index = tmp_path / "b.index.jsonl"
    index.write_text("".join(json.dumps({"article_id": 0, "chunk_index": i}) + "\n" for i in range(3)))
    vectors = normalise(np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32))
    vectors[1] *= 2.0
    save_tensors(tmp_path / "b.safetensors", {"embeddings": vectors})
    with pytest.raises(VecflowError, match=r"b.safetensors: row 1 has norm 2.0000, not 1"):
        load_bank(tmp_path / "b.safetensors", index)


def test_ties_are_ranked_pessimistically():
    rng = np.random.default_rng(3)
    vectors = normalise(rng.normal(size=(7, 4)).astype(np.float32))
    vectors[6] = vectors[5]  # chunk 6 is an exact copy of the target chunk 5
    bank = ChunkBank(vectors, np.zeros(7, np.int64), np.arange(7))
    windows = Windows(np.arange(6)[None], np.zeros(1, np.int64), np.array([5]))
    ranks = retrieval(vectors[5:6], windows, bank)
    assert ranks["r1"] == 0.0 and ranks["mrr"] == 0.5


def test_dominance_verdicts_need_all_three_metrics_and_a_tie_loses():
    from vecflow.lvm.fivecat_verdicts import dominance_verdicts

    model = {"val": {"c0": 0.6, "mrr": 0.5, "margin": 0.0}}
    baselines = {"ridge": {"val": {"c0": 0.6, "mrr": 0.3, "margin": -0.1}},
                 "copy_last": {"val": {"c0": 0.4, "mrr": 0.2, "margin": -0.3}}}
    verdict = dominance_verdicts(model, baselines)["val"]
    assert not verdict["dominates"] and verdict["loses_to"] == ["ridge:c0"]
    assert verdict["line"] == "val: the model does NOT dominate: it loses to ridge on c0 (0.600 vs 0.600)"
    model["val"]["c0"] = 0.61
    assert dominance_verdicts(model, baselines)["val"]["dominates"]


def test_lvm_curve_cli_names_a_folder_without_summary(tmp_path, capsys):
    from vecflow.cli import main

    (tmp_path / "r.json").write_text("{}")
    code = main(["lvm-curve", "--point", f"r={tmp_path / 'r.json'},{tmp_path / 'nope'}",
                 "--out-json", str(tmp_path / "c.json"), "--out-plot", str(tmp_path / "c.png")])
    assert code == 2 and "nope/summary.json: file not found" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_results_file_reader_and_writer_check_the_headline_numbers(tmp_path):
    from vecflow.lvm.fivecat_results import read_results, write_results

    path = tmp_path / "r.json"
    write_results(path, {"model": {"val": {"c0": 0.5, "margin": None}}, "baselines": {"ridge": {"val": {"c0": 0.4}}}})
    assert read_results(path)["model"]["val"]["c0"] == 0.5
    path.write_text(json.dumps({"model": {"val": {"c0": "0.5"}}}))
    with pytest.raises(VecflowError, match=r"r\.json: field 'model\.val\.c0': expected a number, got str"):
        read_results(path)
    path.write_text(json.dumps({"baselines": {}}))
    with pytest.raises(VecflowError, match=r"r\.json: field 'model': missing or not an object"):
        read_results(path)
    with pytest.raises(VecflowError, match=r"field 'baselines\.ridge\.val\.r1': expected a number, got bool"):
        write_results(tmp_path / "w.json", {"model": {}, "baselines": {"ridge": {"val": {"r1": True}}}})
    assert not (tmp_path / "w.json").exists()


# ------------------------------------------------------------------ the model predictor (inference path)
@pytest.mark.parametrize("residual", [False, True, "ridge"])
@pytest.mark.parametrize("arch", ["transformer", "gru", "lstm", "amn", "mlp"])
def test_model_predictor_gives_the_eval_forward_without_dropout(arch, residual):
    """``predict`` (the transformer's last-position-only ``infer`` among them) must give the normalised eval-mode
    forward, at any batch size and for a context shorter than the model's, leave the mode as it found it and
    never apply dropout."""
    torch = pytest.importorskip("torch")
    from vecflow.lvm.models import build_model, normalize, predict

    torch.manual_seed(0)
    model = build_model(arch, DIM, 5, {"d_model": 16, "layers": 3, "heads": 4, "dropout": 0.5, "residual": residual})
    with torch.no_grad():
        for parameter in model.parameters():  # residual models start with a zero output layer: randomise it
            parameter.normal_(0.0, 0.3)
    model.train()
    contexts = np.random.default_rng(1).standard_normal((37, 5, DIM)).astype(np.float32)
    for slots in (5, 3) if arch != "mlp" and residual != "ridge" else (5,):  # those two flatten all 5 slots
        got = [predict(model, contexts[:, :slots], batch_size) for batch_size in (1, 8, 64)]
        assert model.training
        model.eval()
        with torch.no_grad():
            expected = normalize(model(torch.as_tensor(contexts[:, :slots]))).numpy()
        model.train()
        for predictions in got:
            assert predictions.shape == (37, DIM)
            np.testing.assert_allclose(predictions, expected, atol=2e-6)


def test_other_article_ablation_reads_the_donor_windows_prediction_instead_of_predicting_again(ordered):
    windows, bank = ordered["val"], ordered["val_bank"]
    calls = []

    def counting(contexts):
        calls.append(len(contexts))
        return extrapolate(contexts)

    result = evaluate_split(counting, windows, bank, rollout_steps=3, seed=4)
    slots = windows.rows.shape[1] - 1
    # prediction, 2 rollout steps, leave-one-out per slot, shuffled, reversed, last repeated: no other-article call
    assert calls == [len(windows)] * (1 + 2 + slots + 3)
    contexts, targets = windows.contexts(bank), windows.targets(bank)
    base = rowwise_cosine(extrapolate(contexts), targets)
    predicted_again = ablations(extrapolate, contexts, targets, windows.article_ids, base, np.random.default_rng(4))
    assert result["ablations"]["other_article_n"] == predicted_again["other_article_n"] > 0
    assert result["ablations"]["other_article"] == pytest.approx(predicted_again["other_article"], abs=1e-6)
    assert result["ablations"]["other_article"] != pytest.approx(0.0, abs=1e-3)
