"""The report's summary-family comparison: one table for every family, cost columns, the learning curve."""

import json

from vecflow.ship.report_sections import family_comparison, selection_curve_plot, training_cost


def scores(r1, rl, distinct, margin):
    return {"n": 500, "rouge": {"rouge1": {"f": r1}, "rouge2": {"f": r1 / 3}, "rougeL": {"f": rl},
                                "rougeLsum": {"f": rl}},
            "bertscore": {"f1": 0.6}, "mean_pred_words": 20.0,
            "speaker_tag_rate": {"predictions": 0.9}, "input_dependence": {"distinct_ratio": distinct, "margin": margin}}


def write(path, obj):
    path.write_text(json.dumps(obj) if not isinstance(obj, list) else "".join(json.dumps(r) + "\n" for r in obj))
    return path


def test_every_family_in_one_table_with_the_winner_and_the_cost(tmp_path):
    summary = write(tmp_path / "summary.json", {"train_minutes": 45.0, "samples_seen": 1800})
    elm_history = write(tmp_path / "elm.jsonl", [{"step": 1, "time/step_s": 30.0}, {"step": 2, "time/step_s": 30.0}])
    block = family_comparison(  # given out of order: shown as seq2seq, causal, elm
        {"elm": scores(0.2, 0.15, 0.8, 0.05), "causal": scores(0.45, 0.37, 1.0, 0.2),
         "seq2seq": scores(0.25, 0.20, 0.02, 0.001)},
        {"causal": summary}, {"elm": elm_history})
    header = block["columns"]
    rows = {row[0].text: {column: c for column, c in zip(["family", *header[1:]], row)} for row in block["rows"]}
    assert list(rows) == ["seq2seq", "causal", "elm"]
    for column in ("ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum", "BERTScore F1", "distinct", "own − shuffled R-1",
                   "train minutes", "samples seen", "samples/s", "with speaker tags", "mean words"):
        assert column in header
    causal, seq2seq = rows["causal"], rows["seq2seq"]
    # the best of each metric column is marked, whichever family holds it; ties (BERTScore 0.6) mark all
    assert causal["ROUGE-1"].text == "0.4500 ★" and "win" in causal["ROUGE-1"].cls
    assert causal["ROUGE-L"].text == "0.3700 ★" and rows["elm"]["ROUGE-L"].text == "0.1500"
    assert causal["distinct"].text == "1.0000 ★" and seq2seq["distinct"].text == "0.0200"
    assert seq2seq["BERTScore F1"].text == causal["BERTScore F1"].text == "0.6000 ★"
    assert "★" not in causal["samples seen"].text and causal["samples seen"].text == "1800"
    assert causal["samples/s"].text == f"{1800 / 2700:.4f}" and causal["train minutes"].text == "45.0000"
    assert seq2seq["train minutes"].text == "—"
    assert rows["elm"]["train minutes"].text == "1.0000"
    assert training_cost("causal", summary, None) == (45.0, 1800, 1800 / 2700)
    assert training_cost("elm", None, elm_history) == (1.0, None, None)
    assert training_cost("x", None, None) == (None, None, None)


def test_learning_curve_plots_score_against_samples_seen(tmp_path):
    history = write(tmp_path / "h.jsonl", [
        {"step": 0, "samples_seen": 0, "val/rouge1": 0.2, "val/rougeL": 0.15},
        {"step": 50, "samples_seen": 400, "val/rouge1": 0.4, "val/rougeL": 0.33},
    ])
    block = selection_curve_plot({"causal": history, "lvm-p4": write(tmp_path / "l.jsonl", [{"epoch": 1}])})
    assert block["kind"] == "image" and block["data_uri"].startswith("data:image/png;base64,")
    assert selection_curve_plot({"lvm-p4": tmp_path / "l.jsonl"}) is None
