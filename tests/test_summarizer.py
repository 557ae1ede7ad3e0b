"""Seq2seq summarizer: preprocessing, collator, speaker round trip, train/predict CLI, resume."""

import json
import re

import pytest
import torch

from vecflow.cli import main
from vecflow.core.errors import VecflowError
from vecflow.summary.seq2seq import (
    generate_summaries,
    load_base,
    load_trained,
    loss_on_labels,
    make_collator,
    partial_dir,
    tokenize_dialogues,
    train_summarizer,
)
from vecflow.summary.generation import to_generation_config

DIALOGUES = [
    ("d1", "#Person1#: can you help me book a hotel room ?\n#Person2#: yes , for today ?",
     ["#Person1# asks #Person2# to book a hotel room."]),
    ("d2", "#Person1#: what about dinner tomorrow ?\n#Person2#: good , my friend will buy food .",
     ["#Person1# and #Person2# talk about dinner.", "#Person2# says a friend will buy food."]),
    ("d3", "#Person1#: why is the doctor here ?\n#Person2#: she wants to help his friend .",
     ["#Person2# tells #Person1# the doctor wants to help."]),
    ("d4", "#Person1#: i need a new job .\n#Person2#: you can work at my school .\n#Person3#: yes !",
     ["#Person1# needs a job and #Person2# has work at school."]),
]

SETTINGS = {
    "seed": 7, "device": "cpu", "max_source_length": 64, "max_target_length": 24, "epochs": 1,
    "batch_size": 2, "grad_accum": 1, "learning_rate": 1e-3, "weight_decay": 0.01, "warmup_ratio": 0.1,
    "val_samples": 2, "bf16": False, "tracking": {"wandb": False, "mlflow": False},
    # tiny random models cannot pass the input-dependence selection gate; its own tests are in test_summary_train
    "min_distinct_ratio": 0.0, "min_input_margin": -1.0,
    "generation": {"num_beams": 2, "max_new_tokens": 8, "no_repeat_ngram_size": 3, "length_penalty": 1.0,
                   "early_stopping": True},
}


def write_dialogues(path, rows=DIALOGUES):
    path.write_text("".join(json.dumps({"id": i, "dialogue": d, "summaries": s, "topic": None}) + "\n"
                            for i, d, s in rows))
    return path


@pytest.fixture(scope="module")
def encoder_dir(tiny_encoder):
    return tiny_encoder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dialogues")
    return write_dialogues(root / "train.jsonl"), write_dialogues(root / "val.jsonl", DIALOGUES[:2])


@pytest.fixture()
def bert2bert(encoder_dir):
    torch.manual_seed(0)  # the cross-attention weights are freshly initialised
    return load_base(encoder_dir, [d for _, d, _ in DIALOGUES])


# input checks of the dialogue files: tests/test_dialogues.py (one reader, vecflow.data.dialogues)
def test_base_must_be_a_model_folder(tmp_path):
    with pytest.raises(VecflowError, match="no config.json"):
        load_base(tmp_path, [])


@pytest.mark.data
def test_dialogsum_rows_keep_their_speakers(shared_data, bert2bert, tmp_path):
    """Real DialogSum dev rows (converted in tmp, never copied into the repo): every tag is one token and
    survives the label round trip."""
    model, tokenizer = bert2bert
    raw = [json.loads(line) for line in (shared_data / "dialogsum" / "dev.jsonl").read_text().splitlines()[:5]]
    rows = [{"id": r["fname"], "dialogue": r["dialogue"], "summaries": [r["summary"]]} for r in raw]
    features = tokenize_dialogues(rows, tokenizer, 512, 128, tokenizer.cls_token_id)
    for row, feature in zip(rows, features):
        tokens = tokenizer.convert_ids_to_tokens(feature["input_ids"])
        assert tokens.count("#Person1#") == row["dialogue"].count("#Person1#") > 0
        decoded = tokenizer.decode(feature["labels"], skip_special_tokens=True)
        assert re.findall(r"#Person\d+#", decoded) == re.findall(r"#Person\d+#", row["summaries"][0])


# ------------------------------------------------------------------------------- preprocessing + collator
def test_labels_are_unpadded_and_keep_speaker_tags(bert2bert):
    model, tokenizer = bert2bert
    rows = [{"id": i, "dialogue": d, "summaries": s} for i, d, s in DIALOGUES]
    features = tokenize_dialogues(rows, tokenizer, 64, 24, model.config.decoder_start_token_id)
    assert len({len(f["labels"]) for f in features}) > 1  # no max_length padding
    assert all(tokenizer.pad_token_id not in f["input_ids"] for f in features)
    first = features[0]["labels"]
    assert first[0] != tokenizer.cls_token_id and first[-1] == tokenizer.sep_token_id
    assert tokenizer.decode(first, skip_special_tokens=True) == "#Person1# asks #Person2# to book a hotel room."


def test_collator_pads_labels_with_minus_100_and_inputs_with_pad(bert2bert):
    model, tokenizer = bert2bert
    rows = [{"id": i, "dialogue": d, "summaries": s} for i, d, s in DIALOGUES[:2]]
    features = tokenize_dialogues(rows, tokenizer, 64, 24, model.config.decoder_start_token_id)
    batch = make_collator(tokenizer, model)(features)
    longest_label = max(len(f["labels"]) for f in features)
    longest_input = max(len(f["input_ids"]) for f in features)
    assert batch["labels"].shape == (2, longest_label)  # padded to the batch, not to max_target_length
    assert batch["input_ids"].shape == (2, longest_input)
    short = min(range(2), key=lambda i: len(features[i]["labels"]))
    assert (batch["labels"][short, len(features[short]["labels"]):] == -100).all()
    short_in = min(range(2), key=lambda i: len(features[i]["input_ids"]))
    assert (batch["input_ids"][short_in, len(features[short_in]["input_ids"]):] == tokenizer.pad_token_id).all()
    assert (batch["decoder_input_ids"][:, 0] == tokenizer.cls_token_id).all()
    labels = batch["labels"].clone()
    labels[labels == -100] = tokenizer.pad_token_id
    decoded = tokenizer.batch_decode(labels, skip_special_tokens=True)
    assert decoded[0] == "#Person1# asks #Person2# to book a hotel room."
    assert decoded[1] == "#Person1# and #Person2# talk about dinner."
    assert model(**batch).loss.isfinite()


def test_loss_on_labelled_positions_equals_the_full_model_loss_and_gradients(bert2bert):
    """The head runs only where labels are: same loss and same gradients as the model's own forward, on a batch
    whose labels are padded (the positions the shortcut skips)."""
    model, tokenizer = bert2bert
    rows = [{"id": i, "dialogue": d, "summaries": s} for i, d, s in DIALOGUES]
    batch = make_collator(tokenizer, model)(tokenize_dialogues(rows, tokenizer, 64, 24,
                                                               model.config.decoder_start_token_id))
    assert (batch["labels"] == -100).any()
    model.eval()  # no dropout: both forwards are deterministic

    def loss_and_grads(loss_fn):
        model.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    full, full_grads = loss_and_grads(lambda: model(**batch).loss)
    ours, our_grads = loss_and_grads(lambda: loss_on_labels(model, batch))
    assert ours == pytest.approx(full, rel=1e-5)
    assert full_grads.keys() == our_grads.keys()
    for name, grad in full_grads.items():
        assert torch.allclose(grad, our_grads[name], atol=1e-6, rtol=1e-4), name
    model.zero_grad()


def test_generated_text_keeps_speaker_tags(bert2bert):
    """Overfit one pair for a few steps: the generated summary carries the tags, in their case."""
    model, tokenizer = bert2bert
    torch.manual_seed(0)
    row = {"id": "d1", "dialogue": DIALOGUES[0][1], "summaries": ["#Person1# asks #Person2#."]}
    batch = make_collator(tokenizer, model)(tokenize_dialogues([row], tokenizer, 64, 24, tokenizer.cls_token_id))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(20):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    config = to_generation_config({"num_beams": 1, "max_new_tokens": 8}, tokenizer, tokenizer.cls_token_id)
    [prediction] = generate_summaries(model, tokenizer, [row["dialogue"]], config, 64, 1, torch.device("cpu"))
    assert prediction.startswith("#Person1# asks #Person2#")


# --------------------------------------------------------------------------------------- train + predict
@pytest.mark.slow
def test_train_and_predict_through_the_cli(encoder_dir, data, tmp_path):
    train, val = data
    out = tmp_path / "model"
    code = main(["train-summarizer", "--train", str(train), "--val", str(val), "--base", str(encoder_dir),
                 "--settings", json.dumps(SETTINGS), "--out", str(out)])
    assert code == 0
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "history.jsonl",
            "summary.json"} <= {p.name for p in out.iterdir()}
    assert not partial_dir(out).exists()
    [record] = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert record["epoch"] == 1 and record["train/loss"] > 0
    assert 0.0 <= record["val/rougeL"] <= 1.0 and len(record["val/examples"]) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best_step"] == record["step"] == 2 and summary["best_score"] == record["val/rougeL"]
    assert summary["selection_metric"] == "rougeL" and summary["samples_seen"] == 4
    assert {f"val/input_dependence/{k}" for k in ("distinct_ratio", "margin", "own_rouge1", "shuffled_rouge1")} <= set(record)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["num_beams"] == 2 and generation["max_new_tokens"] == 8

    model, tokenizer = load_trained(out)
    assert tokenizer.convert_ids_to_tokens(tokenizer("#Person3#", add_special_tokens=False)["input_ids"]) == ["#Person3#"]

    predictions = tmp_path / "predictions.jsonl"
    code = main(["predict-summarizer", "--model", str(out), "--dialogues", str(val),
                 "--settings", json.dumps(SETTINGS), "--out", str(predictions)])
    assert code == 0
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["d1", "d2"]
    assert rows[1]["references"] == DIALOGUES[1][2]
    assert all(isinstance(r["prediction"], str) for r in rows)


def test_predictions_keep_speaker_tags_through_the_cli(encoder_dir, data, tmp_path):
    """A saved model that prefers '#Person2#': the predictions file carries the tag, case preserved."""
    model, tokenizer = load_base(encoder_dir, [])
    tag_id = tokenizer.convert_tokens_to_ids("#Person2#")
    with torch.no_grad():
        model.decoder.get_output_embeddings().bias[tag_id] += 50.0
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    out = tmp_path / "p.jsonl"
    settings = SETTINGS | {"generation": {"num_beams": 1, "max_new_tokens": 3}}
    assert main(["predict-summarizer", "--model", str(tmp_path / "model"), "--dialogues", str(data[1]),
                 "--settings", json.dumps(settings), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["prediction"].startswith("#Person2#")


def test_bad_generation_config_fails_before_any_work(encoder_dir, data, tmp_path, capsys):
    settings = SETTINGS | {"generation": {"num_beams": 1, "max_new_tokens": 8, "length_penalty": 2.0}}
    out = tmp_path / "model"
    code = main(["train-summarizer", "--train", str(data[0]), "--val", str(data[1]), "--base", str(encoder_dir),
                 "--settings", json.dumps(settings), "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "vecflow train-summarizer: error: summarizer.generation.length_penalty: "
        "only valid with num_beams > 1 (num_beams is 1)"
    )
    assert not out.exists() and not partial_dir(out).exists()


def test_bad_train_file_fails_with_no_output(encoder_dir, data, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "dialogue": "hi", "summaries": ["s"]}\n{"id": "y", "dialogue": "hi"}\n')
    out = tmp_path / "model"
    code = main(["train-summarizer", "--train", str(bad), "--val", str(data[1]), "--base", str(encoder_dir),
                 "--settings", json.dumps(SETTINGS), "--out", str(out)])
    assert code == 2
    assert f"{bad}:2: field 'summary': missing" in capsys.readouterr().err
    assert not out.exists() and not partial_dir(out).exists()


@pytest.mark.slow
def test_resume_from_partial_state(encoder_dir, data, tmp_path):
    """Two epochs in one go == one epoch, an interrupted publish, then a resumed second epoch."""
    train, val = data
    two = SETTINGS | {"epochs": 2}
    straight = train_summarizer(train, val, encoder_dir, two, tmp_path / "straight")

    out = tmp_path / "resumed"
    first = SETTINGS | {"epochs": 2}

    class Stop(Exception):
        pass

    import vecflow.summary.seq2seq as summarizer

    original = summarizer.validate
    calls = {"n": 0}

    def validate_then_stop(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Stop()  # dies during epoch 2, after epoch 1 was saved
        return original(*args, **kwargs)

    summarizer.validate = validate_then_stop
    try:
        with pytest.raises(Stop):
            train_summarizer(train, val, encoder_dir, first, out)
    finally:
        summarizer.validate = original
    partial = partial_dir(out)
    assert torch.load(partial / "last" / "state.pt", weights_only=False)["step"] == 2  # end of epoch 1
    assert not out.exists()

    resumed = train_summarizer(train, val, encoder_dir, two, out)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    straight_history = [json.loads(line) for line in (tmp_path / "straight" / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]
    assert history[1]["train/loss"] == pytest.approx(straight_history[1]["train/loss"], rel=1e-4)
    assert resumed["best_score"] == pytest.approx(straight["best_score"])
    assert not partial.exists()


def test_resume_state_is_ignored_when_the_run_changed(tmp_path):
    from vecflow.summary.seq2seq import load_resume_state

    partial = tmp_path / "model.partial"
    (partial / "last").mkdir(parents=True)
    torch.save({"epoch": 1, "fingerprint": "abc"}, partial / "last" / "state.pt")
    assert load_resume_state(partial, "abc")["epoch"] == 1
    assert load_resume_state(partial, "changed") is None
    assert not partial.exists()  # a stale partial never mixes into a new run


def test_corrupt_resume_state_is_a_clear_error(tmp_path):
    from vecflow.summary.seq2seq import load_resume_state

    partial = tmp_path / "model.partial"
    (partial / "last").mkdir(parents=True)
    (partial / "last" / "state.pt").write_text("garbage")
    with pytest.raises(VecflowError, match=r"state.pt: cannot read resume state .*delete .*model.partial"):
        load_resume_state(partial, "abc")


def test_zero_cross_attention_start_adds_nothing_to_the_decoder(encoder_dir):
    """With the new cross-attention output projections at zero, the decoder's output does not depend on the
    encoder at step 0 (no random noise that training would remove by collapsing the encoder, issue 14)."""
    torch.manual_seed(0)
    model, tokenizer = load_base(encoder_dir, [d for _, d, _ in DIALOGUES], cross_attention_init="zero")
    blocks = [m for n, m in model.decoder.named_modules() if n.endswith("crossattention.output.dense")]
    assert blocks and all(not m.weight.any() and not m.bias.any() for m in blocks)
    model.eval()
    batch = tokenizer([DIALOGUES[0][1], DIALOGUES[2][1]], padding=True, return_tensors="pt",
                      return_token_type_ids=False)
    decoder_input = torch.full((2, 3), tokenizer.cls_token_id)
    with torch.no_grad():
        logits = model(**batch, decoder_input_ids=decoder_input).logits
    assert torch.allclose(logits[0], logits[1], atol=1e-5)  # same decoder prefix -> same output, whatever the input
    torch.manual_seed(0)
    random_model, _ = load_base(encoder_dir, [d for _, d, _ in DIALOGUES])
    random_model.eval()
    with torch.no_grad():
        random_logits = random_model(**batch, decoder_input_ids=decoder_input).logits
    assert not torch.allclose(random_logits[0], random_logits[1], atol=1e-5)


def test_encoder_lr_scale_zero_freezes_the_encoder(encoder_dir, data, tmp_path):
    from transformers import AutoModelForSeq2SeqLM

    settings = SETTINGS | {"encoder_lr_scale": 0.0, "cross_attention_init": "zero"}
    train_summarizer(data[0], data[1], encoder_dir, settings, tmp_path / "model")
    trained = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "model")
    torch.manual_seed(0)
    base, _ = load_base(encoder_dir, [d for _, d, _ in DIALOGUES], cross_attention_init="zero")
    encoder_same = all(torch.equal(p, q) for (n, p), (_, q) in zip(trained.encoder.named_parameters(),
                                                                   base.encoder.named_parameters())
                       if "word_embeddings" not in n)  # rows of added speaker tags may differ in order only
    decoder_moved = any(not torch.equal(p, q) for p, q in zip(trained.decoder.parameters(), base.decoder.parameters())
                        if p.shape == q.shape)
    assert encoder_same and decoder_moved


def test_self_init_starts_cross_attention_as_the_layers_self_attention(encoder_dir):
    torch.manual_seed(0)
    model, tokenizer = load_base(encoder_dir, [d for _, d, _ in DIALOGUES], cross_attention_init="self")
    for layer in model.decoder.bert.encoder.layer:
        cross, own = layer.crossattention.state_dict(), layer.attention.state_dict()
        assert cross.keys() == own.keys() and all(torch.equal(cross[k], own[k]) for k in own)
    # and the decoder reads the input from the first step: different dialogues, different next-token logits
    model.eval()
    batch = tokenizer([DIALOGUES[0][1], DIALOGUES[2][1]], padding=True, return_tensors="pt",
                      return_token_type_ids=False)
    with torch.no_grad():
        logits = model(**batch, decoder_input_ids=torch.full((2, 2), tokenizer.cls_token_id)).logits
    assert not torch.allclose(logits[0], logits[1], atol=1e-4)


def test_beam_cache_reorders_the_decoder_cache_only():
    """Beam search reorders within a dialogue's beams, which share one encoder output: the cross-attention
    cache is left in place, the self-attention cache is reordered."""
    from vecflow.summary.infer import beam_cache
    from transformers import BertConfig

    class Stub:
        config = BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)

    cache = beam_cache(Stub())
    keys = torch.arange(2 * 2 * 3 * 4, dtype=torch.float32).reshape(2, 2, 3, 4)  # rows 0 and 1 differ
    cache.self_attention_cache.update(keys, keys, 0)
    cache.cross_attention_cache.update(keys, keys, 0)
    cache.reorder_cache(torch.tensor([1, 1]))
    assert torch.equal(cache.self_attention_cache.layers[0].keys, keys[[1, 1]])
    assert torch.equal(cache.cross_attention_cache.layers[0].keys, keys)


def test_batched_beam_search_writes_what_generate_writes_per_dialogue(bert2bert):
    model, tokenizer = bert2bert
    model.eval()
    dialogues = [d for _, d, _ in DIALOGUES]
    config = to_generation_config({"num_beams": 3, "max_new_tokens": 10, "no_repeat_ngram_size": 2}, tokenizer,
                                  tokenizer.cls_token_id)
    ours = generate_summaries(model, tokenizer, dialogues, config, 64, 2, torch.device("cpu"))
    plain = []
    for dialogue in dialogues:
        inputs = tokenizer([dialogue], max_length=64, truncation=True, return_tensors="pt", return_token_type_ids=False)
        with torch.inference_mode():
            generated = model.generate(**inputs, generation_config=config)
        plain.append(tokenizer.batch_decode(generated, skip_special_tokens=True)[0].strip())
    assert ours == plain
