import json
import socket

import pytest

from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError
from vecflow.summary.scoring import (
    bertscore,
    load_bertscorer,
    read_predictions,
    rouge_scores,
    score_predictions,
    split_sentences,
    text_stats,
)


def settings_for(layers=2, examples=1):
    return {"bertscore": {"model": "tiny", "num_layers": layers, "batch_size": 4}, "examples": examples,
            "seed": 7, "device": "cpu"}


def write_predictions(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_split(path, rows):
    """The eval split ``rows`` were predicted for: a dialogues JSONL with each row's references as summaries."""
    path.write_text("".join(json.dumps({"id": r["id"], "dialogue": f"#Person1#: dialogue {r['id']}",
                                        "summaries": r["references"]}) + "\n" for r in rows))
    return path


ROWS = [
    {"id": "a", "prediction": "#Person1# wants to buy a book. #Person2# helps.",
     "references": ["#Person1# wants to buy a book. #Person2# helps #Person1#.", "a friend buys a book"]},
    {"id": "b", "prediction": "the doctor tells her to work less",
     "references": ["the hotel room is not good"]},
    {"id": "c", "prediction": "", "references": ["they talk about dinner"]},
]


# ------------------------------------------------------------------------------------------ sentences
def test_split_sentences_on_punctuation_and_newlines():
    text = "#Person1# asks why. #Person2# says no!  Is it?\nDone"
    assert split_sentences(text) == ["#Person1# asks why.", "#Person2# says no!", "Is it?", "Done"]
    assert split_sentences("no boundary here") == ["no boundary here"]
    assert split_sentences("   ") == []
    # a decimal point is not a boundary (no whitespace after the dot)
    assert split_sentences("It costs 3.5 dollars. OK.") == ["It costs 3.5 dollars.", "OK."]


# ---------------------------------------------------------------------------------------------- ROUGE
def test_rouge_identical_is_one_and_disjoint_is_zero():
    result = rouge_scores(["the cat sat on the mat", "alpha beta"], [["the cat sat on the mat"], ["gamma delta"]])
    first, second = result["per_sample"]
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert first[name]["f"] == pytest.approx(1.0)
        assert second[name]["f"] == 0.0
        assert result["mean"][name]["f"] == pytest.approx(0.5)
        assert set(result["mean"][name]) == {"f", "p", "r"}


def test_rouge_multi_reference_takes_best_per_metric():
    prediction = "the doctor tells her to rest"
    single_bad = rouge_scores([prediction], [["a hotel room"]])["mean"]["rouge1"]["f"]
    multi = rouge_scores([prediction], [["a hotel room", "the doctor tells her to rest"]])["mean"]["rouge1"]["f"]
    assert single_bad == 0.0 and multi == pytest.approx(1.0)


def test_rougelsum_uses_sentence_lines_and_differs_from_rougel():
    # reversed sentence order: rougeL (one sequence) drops, rougeLsum (union LCS over sentences) stays at 1
    prediction = "He went home. She bought a new car."
    reference = "She bought a new car. He went home."
    mean = rouge_scores([prediction], [[reference]])["mean"]
    assert mean["rougeLsum"]["f"] == pytest.approx(1.0)
    assert mean["rougeL"]["f"] < 0.7


def test_rouge_tokenizer_reads_speaker_tags_as_words():
    # '#' is dropped and text lower-cased: '#Person1#' == 'person1'
    mean = rouge_scores(["#Person1# pays"], [["person1 pays"]])["mean"]
    assert mean["rouge1"]["f"] == pytest.approx(1.0)


def test_text_stats_counts_tags_words_and_empties():
    stats = text_stats([r["prediction"] for r in ROWS], [r["references"] for r in ROWS])
    assert stats["empty_predictions"] == 1
    assert stats["mean_pred_words"] == pytest.approx((8 + 7 + 0) / 3)
    assert stats["mean_ref_words"] == pytest.approx((9 + 5 + 6 + 4) / 4)
    assert stats["speaker_tag_rate"] == {"predictions": pytest.approx(1 / 3), "references": pytest.approx(1 / 3)}


# ------------------------------------------------------------------------------------------ BERTScore
def test_bertscore_on_local_model_without_network(tiny_encoder, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("BERTScore tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    load_bertscorer.cache_clear()
    scorer = load_bertscorer(str(tiny_encoder), 2, "cpu")
    assert load_bertscorer(str(tiny_encoder), 2, "cpu") is scorer  # cached, reused
    result = bertscore(scorer, ["the dinner is good", "", "a job at school"],
                       [["the dinner is good"], ["x y"], ["a new book", "the hotel room"]], batch_size=2)
    assert result["per_sample_f1"][0] == pytest.approx(1.0, abs=1e-4)
    assert result["per_sample_f1"][1] == 0.0  # empty prediction scores 0, not a crash
    assert 0.0 < result["per_sample_f1"][2] < 1.0
    assert result["f1"] == pytest.approx(sum(result["per_sample_f1"]) / 3)
    assert result["f1_std"] > 0


def test_bertscore_multi_reference_is_max_over_references(tiny_encoder):
    scorer = load_bertscorer(str(tiny_encoder), 2, "cpu")
    prediction = ["the doctor tells her to rest"]
    separate = [bertscore(scorer, prediction, [[ref]])["f1"] for ref in ("a hotel room", "money for lunch")]
    together = bertscore(scorer, prediction, [["a hotel room", "money for lunch"]])["f1"]
    assert together == pytest.approx(max(separate), abs=1e-5)


def test_bertscore_truncates_long_text_at_model_max_length(tiny_encoder):
    scorer = load_bertscorer(str(tiny_encoder), 2, "cpu")
    assert scorer._tokenizer.model_max_length == 128
    long_text = "the day is good and " * 200  # ~1000 tokens > 128 positions
    result = bertscore(scorer, [long_text], [[long_text]])
    assert result["f1"] == pytest.approx(1.0, abs=1e-4)


def test_bad_num_layers_and_non_local_model_are_errors(tiny_encoder, tmp_path):
    rows = read_predictions(write_predictions(tmp_path / "p.jsonl", ROWS[:1]))
    with pytest.raises(VecflowError, match=r"bertscore.num_layers.*between 1 and 2"):
        score_predictions(rows, tiny_encoder, settings_for(layers=6))
    with pytest.raises(VecflowError, match="not a local model folder"):
        score_predictions(rows, "sentence-transformers/all-MiniLM-L6-v2", settings_for())
    with pytest.raises(VecflowError, match=r"settings: field 'examples': Input should be greater than or equal to 0, got -1"):
        score_predictions(rows, tiny_encoder, settings_for(examples=-1))


# ---------------------------------------------------------------------------------------------- input
@pytest.mark.parametrize(
    "line, message",
    [
        ({"id": "x", "references": ["r"]}, r"p.jsonl:2: field 'prediction': missing"),
        ({"id": "x", "prediction": "p", "references": []}, r"p.jsonl:2: field 'references': empty list"),
        ({"id": "x", "prediction": "p", "references": "r"}, r"p.jsonl:2: field 'references': expected list"),
        ({"id": "x", "prediction": "p", "references": ["ok", " "]}, r"p.jsonl:2: field 'references': item 1"),
    ],
)
def test_bad_prediction_rows_name_file_line_and_field(tmp_path, line, message):
    path = write_predictions(tmp_path / "p.jsonl", [ROWS[0], line])
    with pytest.raises(VecflowError, match=message):
        read_predictions(path)


SHIFTED = [{**row, "references": ROWS[(i + 1) % len(ROWS)]["references"]} for i, row in enumerate(ROWS)]


@pytest.mark.parametrize(
    "rows, message",
    [
        ([ROWS[0], ROWS[1], {**ROWS[2], "id": "a"}], r"p\.jsonl:3: field 'id': duplicate id 'a' \(first at line 1\)"),
        ([{**row, "id": "a"} for row in ROWS], r"p\.jsonl:2: field 'id': duplicate id 'a' \(first at line 1\)"),
        (SHIFTED, r"p\.jsonl:1: field 'references': id 'a': not that dialogue's references \(see .*val\.jsonl:1\)"),
        ([ROWS[0], ROWS[1], {**ROWS[2], "id": "z"}], r"p\.jsonl:3: field 'id': id 'z' is not in the eval split"),
        (ROWS[:2], r"val\.jsonl:3: field 'id': id 'c' has no prediction in .*p\.jsonl \(1 of 3 eval dialogues"),
    ],
    ids=["duplicate-id", "all-ids-the-same", "references-shifted-by-one", "id-not-in-split", "missing-id"],
)
def test_predictions_must_pair_one_to_one_with_the_eval_split(tmp_path, rows, message):
    path = write_predictions(tmp_path / "p.jsonl", rows)
    split = write_split(tmp_path / "val.jsonl", ROWS)
    with pytest.raises(VecflowError, match=message):
        read_predictions(path, split)
    assert len(read_predictions(write_predictions(tmp_path / "ok.jsonl", ROWS[::-1]), split)) == 3  # order is free


def test_duplicate_ids_are_refused_even_without_a_split(tmp_path):
    with pytest.raises(VecflowError, match=r"p\.jsonl:2: field 'id': duplicate id 'a'"):
        read_predictions(write_predictions(tmp_path / "p.jsonl", [ROWS[0], ROWS[0]]))


def test_an_elm_eval_split_is_its_summary_synthesis_rows(tmp_path):
    from vecflow.summary.pairing import check_pairs

    def row(source, target):
        return {"task_type": "summary", "input_prompt_template": "Summarize: <EMB>", "embedding_index": 0,
                "target_text": target, "source_id": source}

    split = tmp_path / "val_synthesis.jsonl"
    split.write_text("".join(json.dumps(r) + "\n" for r in [row("d1", "one"), row("d1", "uno"), row("d2", "two")]))
    check_pairs([(1, "d2", ["two"]), (2, "d1", ["one", "uno"])], "p.jsonl", split)
    with pytest.raises(VecflowError, match=r"p\.jsonl:2: field 'references': id 'd1'.*val_synthesis\.jsonl:1"):
        check_pairs([(1, "d2", ["two"]), (2, "d1", ["uno"])], "p.jsonl", split)


def test_predict_steps_write_only_one_to_one_pairs():
    from vecflow.summary.pairing import paired_rows

    assert paired_rows(["a", "b"], ["x", "y"], [["r"], ["s"]], "val.jsonl")[1] == {
        "id": "b", "prediction": "y", "references": ["s"]}
    with pytest.raises(VecflowError, match=r"val\.jsonl: 2 eval dialogues but 1 predictions"):
        paired_rows(["a", "b"], ["x"], [["r"], ["s"]], "val.jsonl")
    with pytest.raises(VecflowError, match=r"val\.jsonl: id 'a' twice among the eval dialogues"):
        paired_rows(["a", "a"], ["x", "y"], [["r"], ["s"]], "val.jsonl")


def test_empty_predictions_file_is_an_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n")
    with pytest.raises(VecflowError, match=r"p.jsonl: no predictions"):
        read_predictions(path)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_writes_scores_and_examples(tiny_encoder, tmp_path):
    predictions = write_predictions(tmp_path / "p.jsonl", ROWS)
    scores_path, examples_path = tmp_path / "out" / "scores.json", tmp_path / "out" / "examples.json"
    split = write_split(tmp_path / "val.jsonl", ROWS)
    code = cli_main(["score", "--predictions", str(predictions), "--eval-split", str(split), "--bertscore-model",
                     str(tiny_encoder), "--settings", json.dumps(settings_for()), "--out-scores", str(scores_path),
                     "--out-examples", str(examples_path)])
    assert code == 0
    scores = json.loads(scores_path.read_text())
    assert scores["n"] == 3 and scores["empty_predictions"] == 1
    assert set(scores["rouge"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert 0 < scores["rouge"]["rouge1"]["f"] < 1
    assert set(scores["bertscore"]) >= {"p", "r", "f1", "f1_std", "model", "num_layers"}
    assert scores["bertscore"]["num_layers"] == 2
    assert scores["speaker_tag_rate"]["predictions"] == pytest.approx(1 / 3)
    examples = json.loads(examples_path.read_text())
    assert [e["id"] for e in examples["best"]] == ["a"]
    assert [e["id"] for e in examples["worst"]] == ["c"]  # the empty prediction
    assert set(examples["best"][0]["scores"]) == {"rouge1", "rouge2", "rougeL", "rougeLsum", "bertscore_f1"}
    assert examples["best"][0]["references"] == ROWS[0]["references"]


def test_cli_bad_input_exits_2_without_output(tiny_encoder, tmp_path, capsys):
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(json.dumps({"id": "x", "prediction": "p", "references": []}) + "\n")
    scores_path = tmp_path / "scores.json"
    code = cli_main(["score", "--predictions", str(predictions), "--eval-split", str(write_split(
                     tmp_path / "val.jsonl", ROWS)), "--bertscore-model", str(tiny_encoder), "--settings",
                     json.dumps(settings_for()), "--out-scores", str(scores_path), "--out-examples",
                     str(tmp_path / "e.json")])
    assert code == 2
    assert "p.jsonl:1: field 'references': empty list" in capsys.readouterr().err
    assert not scores_path.exists()


OTHER_ROWS = [  # a second family: other ids, other texts, two rows
    {"id": "x", "prediction": "they plan a trip to the sea", "references": ["they plan a trip"]},
    {"id": "y", "prediction": "she orders a pizza", "references": ["#Person2# orders food"]},
]


def score_families(tiny_encoder, tmp_path, families: dict, *extra: str) -> int:
    """``vecflow score --family NAME PREDICTIONS EVAL_SPLIT ... --out-dir tmp_path/eval``."""
    argv = ["score"]
    for name, rows in families.items():
        predictions = write_predictions(tmp_path / f"{name}.jsonl", rows)
        split = write_split(tmp_path / f"{name}_val.jsonl", [r for r in rows if isinstance(r, dict)] or ROWS)
        argv += ["--family", name, str(predictions), str(split)]
    return cli_main([*argv, "--out-dir", str(tmp_path / "eval"), "--bertscore-model", str(tiny_encoder),
                     "--settings", json.dumps(settings_for()), *extra])


def test_cli_scores_several_families_each_into_its_own_folder_as_one_family_runs_would(tiny_encoder, tmp_path):
    assert score_families(tiny_encoder, tmp_path, {"first": ROWS, "second": OTHER_ROWS}) == 0
    for name, rows in (("first", ROWS), ("second", OTHER_ROWS)):
        scores = json.loads((tmp_path / "eval" / name / "scores.json").read_text())
        examples = json.loads((tmp_path / "eval" / name / "examples.json").read_text())
        assert scores["n"] == len(rows)
        assert {e["id"] for e in examples["best"] + examples["worst"]} <= {r["id"] for r in rows}
        # the same files as the one-family command on that family alone
        alone = tmp_path / "alone" / name
        assert cli_main(["score", "--predictions", str(tmp_path / f"{name}.jsonl"), "--eval-split",
                         str(tmp_path / f"{name}_val.jsonl"), "--bertscore-model", str(tiny_encoder), "--settings",
                         json.dumps(settings_for()), "--out-scores", str(alone / "scores.json"), "--out-examples",
                         str(alone / "examples.json")]) == 0
        expected = json.loads((alone / "scores.json").read_text())
        assert scores["rouge"] == expected["rouge"] and scores["input_dependence"] == expected["input_dependence"]
        assert scores["bertscore"] == pytest.approx(expected["bertscore"])
        assert [e["id"] for e in examples["best"]] == [e["id"] for e in json.loads(
            (alone / "examples.json").read_text())["best"]]
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["first", "second"]


def test_cli_one_bad_family_writes_no_family(tiny_encoder, tmp_path, capsys):
    bad = [dict(OTHER_ROWS[0]), dict(OTHER_ROWS[1], references=[])]
    code = score_families(tiny_encoder, tmp_path, {"good": ROWS, "bad": bad})
    assert code == 2
    assert "bad.jsonl:2: field 'references': empty list" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()  # not even the good family, scored first


def test_cli_a_family_without_dialogue_embeddings_writes_no_family(tiny_encoder, tmp_path, capsys):
    import numpy as np

    from vecflow.core.io import save_tensors

    records = [{"task_type": "summary", "input_prompt_template": "<EMB>", "embedding_index": i,
                "target_text": "ref", "source_id": r["id"]} for i, r in enumerate(ROWS)]  # none for OTHER_ROWS
    sources = tmp_path / "val_synthesis.jsonl"
    sources.write_text("".join(json.dumps(r) + "\n" for r in records))
    save_tensors(tmp_path / "val_embeddings.safetensors", {"embeddings": np.eye(3, dtype=np.float32)})
    code = score_families(tiny_encoder, tmp_path, {"good": ROWS, "other": OTHER_ROWS}, "--encoder",
                          str(tmp_path / "no-encoder-needed-before-the-check"), "--sources", str(sources))
    assert code == 2
    assert "val_synthesis.jsonl: no embedding for id 'x' (2 of 2 predictions)" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()


@pytest.mark.parametrize("argv, message", [
    (["--family", "a", "p.jsonl", "v.jsonl"], "--family goes with --out-dir"),
    (["--family", "a", "p.jsonl", "v.jsonl", "--out-dir", "o", "--out-scores", "s.json"], "--family goes with"),
    (["--family", "a", "p.jsonl", "v.jsonl", "--family", "a", "q.jsonl", "v.jsonl", "--out-dir", "o"],
     "--family 'a' given twice"),
    (["--family", "../a", "p.jsonl", "v.jsonl", "--out-dir", "o"], "NAME must be a folder name"),
    (["--predictions", "p.jsonl", "--eval-split", "v.jsonl"], "give --family NAME PREDICTIONS EVAL_SPLIT"),
])
def test_cli_family_arguments_are_checked_before_reading(argv, message, tmp_path, capsys):
    code = cli_main(["score", *argv, "--bertscore-model", "m", "--settings", "{}"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_dialogsum_dev_sample_scores(shared_data, tiny_encoder, tmp_path):
    rows = []
    with open(shared_data / "dialogsum" / "dev.jsonl") as fh:
        for line, _ in zip(fh, range(5)):
            record = json.loads(line)
            rows.append({"id": record["fname"], "prediction": record["summary"], "references": [record["summary"]]})
    scores, _ = score_predictions(rows, tiny_encoder, settings_for())
    assert scores["rouge"]["rougeLsum"]["f"] == pytest.approx(1.0)
    assert scores["bertscore"]["f1"] == pytest.approx(1.0, abs=1e-4)


def test_semantic_consistency_compares_prediction_and_reference_with_the_dialogue_embedding(tmp_path):
    """Cosine to the dialogue's vector, per row, averaged; the reference's is the ceiling beside it."""
    import numpy as np

    from vecflow.core.io import save_tensors
    from vecflow.summary.scoring import semantic_consistency

    class Encoder:  # a fixed vector per text
        table = {"on topic": [1.0, 0.0], "off topic": [0.0, 1.0], "ref": [0.8, 0.6]}

        def encode(self, texts, batch_size=32):
            return np.array([self.table[t] for t in texts], dtype=np.float32)

    records = [{"task_type": "summary", "input_prompt_template": "<EMB>", "embedding_index": i,
                "target_text": "ref", "source_id": sid} for i, sid in enumerate(["a", "b"])]
    sources = tmp_path / "val_synthesis.jsonl"
    sources.write_text("".join(json.dumps(r) + "\n" for r in records))
    save_tensors(tmp_path / "val_embeddings.safetensors", {"embeddings": np.eye(2, dtype=np.float32)})
    rows = [{"id": "a", "prediction": "on topic", "references": ["ref"]},
            {"id": "b", "prediction": "off topic", "references": ["ref"]}]
    out = semantic_consistency(rows, Encoder(), sources)
    assert out["prediction"] == pytest.approx(1.0)  # (1 + 1) / 2: each prediction along its dialogue's axis
    assert out["reference"] == pytest.approx(0.7)  # (0.8 + 0.6) / 2
    swapped = semantic_consistency([dict(rows[0], id="b"), dict(rows[1], id="a")], Encoder(), sources)
    assert swapped["prediction"] == pytest.approx(0.0)  # the wrong dialogue: no consistency
    with pytest.raises(VecflowError, match="no embedding for id 'zz'"):
        semantic_consistency([dict(rows[0], id="zz")], Encoder(), sources)


def test_the_bertscore_model_is_recorded_as_given_so_runs_in_two_folders_agree(tiny_encoder, tmp_path,
                                                                               monkeypatch):
    rows = [{"id": "a", "prediction": "the cat sat", "references": ["a cat sat"]},
            {"id": "b", "prediction": "dogs bark", "references": ["the dog barks"]}]
    monkeypatch.chdir(tiny_encoder.parent)
    scores, _ = score_predictions(rows, tiny_encoder.name, settings_for())
    assert scores["bertscore"]["model"] == tiny_encoder.name  # not the absolute path of this run's folder
