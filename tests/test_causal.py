"""Causal-LM summarizer: prompt + labels, speaker tags verbatim, collator, train/predict CLI, LoRA merged on save."""

import json

import pytest
import torch

from vecflow.summary.causal import CausalCollator, load_base, spec_for, tokenize_examples, train_causal
from vecflow.cli import main
from vecflow.summary.settings import CausalSettings
from vecflow.summary.infer import (
    DEFAULT_SYSTEM_MESSAGE,
    SPEC_FILE,
    causal_generation_config,
    end_of_turn_id,
    generate_causal,
    load_summarizer,
    prompt_ids,
)

ROWS = [
    {"id": "h1", "dialogue": "#Person1#: can you help me book a hotel room ?\n#Person2#: yes , for today ?",
     "summaries": ["#Person1# asks #Person2# to book a hotel room."]},
    {"id": "f1", "dialogue": "#Person1#: what about dinner tomorrow ?\n#Person2#: good , my friend will buy food .",
     "summaries": ["#Person2# says a friend will buy food."]},
]
SETTINGS = {
    "seed": 3, "device": "cpu", "max_source_length": 64, "max_target_length": 24, "epochs": 1, "batch_size": 2,
    "learning_rate": 1e-3, "warmup_ratio": 0.0, "val_samples": 2, "bf16": False, "tracking": {},
    "generation": {"num_beams": 1, "max_new_tokens": 6}, "min_distinct_ratio": 0.0, "min_input_margin": -1.0,
    "system_message": "", "user_template": "",
}


@pytest.fixture(scope="module")
def lm(tiny_causal_lm):
    return load_base(tiny_causal_lm)


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r | {"id": f"{r['id']}-{i}"}) + "\n" for i, r in enumerate(rows)))
    return path


def test_prompt_has_an_explicit_system_message_and_the_generation_prompt(lm):
    _, tok = lm
    text = tok.decode(prompt_ids(tok, ROWS[0]["dialogue"], spec_for(CausalSettings.parse(SETTINGS))))
    assert text.startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM_MESSAGE}<|im_end|>\n<|im_start|>user\n")
    assert ROWS[0]["dialogue"] in text and text.endswith("<|im_start|>assistant\n")
    custom = tok.decode(prompt_ids(tok, "hi", spec_for(CausalSettings.parse(SETTINGS | {"system_message": "Be brief."}))))
    assert custom.startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_loss_only_on_summary_and_end_of_turn(lm):
    _, tok = lm
    spec = spec_for(CausalSettings.parse(SETTINGS))
    [feature] = tokenize_examples(ROWS[:1], tok, spec)
    prompt = prompt_ids(tok, ROWS[0]["dialogue"], spec)
    labels = feature["labels"]
    assert labels[: len(prompt)] == [-100] * len(prompt)
    learned = [t for t in labels if t != -100]
    assert learned[-1] == end_of_turn_id(tok) == tok.convert_tokens_to_ids("<|im_end|>")
    # speaker tags come back verbatim from the labels
    assert tok.decode(learned[:-1]) == "#Person1# asks #Person2# to book a hotel room."
    assert feature["input_ids"][len(prompt):] == learned


def test_collator_right_pads_with_pad_id_and_minus_100(lm):
    _, tok = lm
    features = tokenize_examples(ROWS, tok, spec_for(CausalSettings.parse(SETTINGS)))
    batch = CausalCollator(tok.pad_token_id)(features)
    short = min(range(2), key=lambda i: len(features[i]["input_ids"]))
    n = len(features[short]["input_ids"])
    assert (batch["labels"][short, n:] == -100).all() and (batch["input_ids"][short, n:] == tok.pad_token_id).all()
    assert (batch["attention_mask"][short, n:] == 0).all() and batch["attention_mask"][short, :n].all()


def test_batched_left_padded_generation_equals_one_at_a_time(lm):
    model, tok = lm
    spec = spec_for(CausalSettings.parse(SETTINGS))
    config = causal_generation_config({"num_beams": 1, "max_new_tokens": 6}, tok)
    dialogues = [ROWS[0]["dialogue"], "#Person1#: hi ."]
    batched = generate_causal(model, tok, dialogues, spec, config, batch_size=2, device=torch.device("cpu"))
    single = [generate_causal(model, tok, [d], spec, config, batch_size=1, device=torch.device("cpu"))[0]
              for d in dialogues]
    assert batched == single


def test_generated_speaker_tags_are_verbatim(lm, tmp_path):
    """A model pushed to write '#Person2#': the decoded prediction carries the tag exactly, never '# person2 #'."""
    model, tok = lm
    tag_ids = tok("#Person2#", add_special_tokens=False)["input_ids"]
    bias = torch.zeros(model.config.vocab_size)
    bias[tag_ids[0]] = 100.0

    lm_head = model.lm_head
    original = lm_head.forward
    try:
        lm_head.forward = lambda h: original(h) + bias  # first token of the tag wins
        config = causal_generation_config({"num_beams": 1, "max_new_tokens": 1}, tok)
        [first] = generate_causal(model, tok, [ROWS[0]["dialogue"]], spec_for(CausalSettings.parse(SETTINGS)), config, 1,
                                  torch.device("cpu"))
    finally:
        lm_head.forward = original
    assert first == tok.decode(tag_ids[:1])
    assert tok.decode(tag_ids) == "#Person2#"


def test_train_and_predict_through_the_cli(tiny_causal_lm, tmp_path):
    train = write_rows(tmp_path / "train.jsonl", ROWS * 2)
    selection = write_rows(tmp_path / "sel.jsonl", ROWS)
    out = tmp_path / "model"
    assert main(["train-causal", "--train", str(train), "--val", str(selection), "--base", str(tiny_causal_lm),
                 "--settings", json.dumps(SETTINGS), "--out", str(out)]) == 0
    spec = json.loads((out / SPEC_FILE).read_text())
    assert spec["kind"] == "causal" and spec["max_source_length"] == 64
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples_seen"] == 4 and summary["steps"] == 2
    preds = tmp_path / "preds.jsonl"
    assert main(["predict-summarizer", "--model", str(out), "--dialogues", str(selection),
                 "--settings", json.dumps(SETTINGS), "--out", str(preds)]) == 0
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["h1-0", "f1-1"] and all(isinstance(r["prediction"], str) for r in rows)
    # the server's loader repeats the trained settings
    summarizer = load_summarizer(out)
    assert summarizer.kind == "causal" and summarizer.max_source_length == 64
    assert summarizer.summarize([ROWS[0]["dialogue"]]) == [rows[0]["prediction"]]


def test_lora_is_merged_on_save_and_loads_without_peft(tiny_causal_lm, tmp_path):
    pytest.importorskip("peft")
    train = write_rows(tmp_path / "train.jsonl", ROWS * 2)
    out = tmp_path / "model"
    settings = SETTINGS | {"lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}, "learning_rate": 5e-2}
    summary = train_causal(train, train, tiny_causal_lm, settings, out)
    assert summary["lora"] is True
    assert not (out / "adapter_config.json").exists()  # a plain HF folder, not a peft adapter
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_causal_lm)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    changed = [n for (n, p), (_, q) in zip(merged.named_parameters(), base.named_parameters()) if not torch.equal(p, q)]
    assert changed and all("proj" in n for n in changed)  # only the LoRA-targeted projections moved


@pytest.mark.slow
def test_a_tiny_model_trained_on_two_dialogue_types_writes_different_summaries(tiny_causal_lm, tmp_path):
    """Behavioural check (issue 14): after training, the model's output depends on its input. Two clearly different
    dialogue types, each with its own summary; held-out dialogues of each type must get different predictions,
    each closer to its own type's summary, and the checkpoint must pass the selection gate (distinct ≥ 0.9 of the
    selection outputs would be impossible with 2 summaries for 8 dialogues, so the threshold here is 0.25 = the two
    types' share; the margin must be positive as in production)."""
    hotel = "#Person1#: can you help me book a hotel room ?\n#Person2#: yes , a room for {i} day ."
    dinner = "#Person1#: what about dinner and food tomorrow ?\n#Person2#: good , my friend will buy food {i} ."
    rows = []
    for i in range(12):
        rows.append({"id": f"h{i}", "dialogue": hotel.format(i=i), "summaries": ["they book a hotel room."]})
        rows.append({"id": f"d{i}", "dialogue": dinner.format(i=i), "summaries": ["they talk about dinner food."]})
    train = write_rows(tmp_path / "train.jsonl", rows[:20])
    selection = write_rows(tmp_path / "sel.jsonl", rows[20:])
    settings = SETTINGS | {"epochs": 15, "batch_size": 4, "learning_rate": 3e-3, "warmup_ratio": 0.1, "evals": 3,
                           "val_samples": 4, "min_distinct_ratio": 0.25, "min_input_margin": 0.0,
                           "generation": {"num_beams": 1, "max_new_tokens": 16}}
    summary = train_causal(train, selection, tiny_causal_lm, settings, tmp_path / "model")
    assert summary["selection_gate_passed"], summary
    summarizer = load_summarizer(tmp_path / "model")
    out_hotel, out_dinner = summarizer.summarize([hotel.format(i=99), dinner.format(i=99)])
    assert out_hotel != out_dinner
    assert "hotel" in out_hotel and "dinner" in out_dinner


def test_loss_on_labelled_positions_equals_the_full_model_loss(lm):
    from vecflow.summary.causal import loss_on_labels

    model, tok = lm
    batch = CausalCollator(tok.pad_token_id)(tokenize_examples(ROWS, tok, spec_for(CausalSettings.parse(SETTINGS))))
    full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert loss_on_labels(model, batch).item() == pytest.approx(full.item(), rel=1e-5)


# ------------------------------------------------------------------ length control, selection rule, decoding (issue 26)
def test_length_model_follows_the_training_summaries():
    from vecflow.summary.infer import fit_length_model, length_budget, length_instruction

    dialogues = [" ".join(["w"] * n) for n in (50, 100, 150, 200, 250)]
    summaries = [" ".join(["s"] * (5 + n // 10)) for n in (50, 100, 150, 200, 250)]  # exactly 5 + 0.1 x
    length = fit_length_model(dialogues, summaries, round_to=5)
    assert length["slope"] == pytest.approx(0.1) and length["intercept"] == pytest.approx(5.0)
    assert length_budget(length, " ".join(["w"] * 150)) == 20
    assert length_budget(length, " ".join(["w"] * 5000)) == 30  # clipped to the training range, then rounded
    spec = {"length": length}
    assert length_instruction(spec, "a b c", words=17) == "Write about 15 words."  # training: the reference's own
    assert length_instruction({}, "a b c") is None


def test_length_instruction_ends_the_user_turn_in_training_and_prediction(lm):
    _, tok = lm
    rows = ROWS * 3
    spec = spec_for(CausalSettings.parse(SETTINGS | {"length_control": {"mode": "instruction", "round_to": 1}}), rows)
    assert spec["length"]["mode"] == "instruction"
    [feature] = tokenize_examples(ROWS[:1], tok, spec)
    prompt = tok.decode([t for t, label in zip(feature["input_ids"], feature["labels"]) if label == -100])
    words = len(ROWS[0]["summaries"][0].split())
    assert f"{ROWS[0]['dialogue']}\n\nWrite about {words} words." in prompt
    predicted = tok.decode(prompt_ids(tok, ROWS[0]["dialogue"], spec))
    assert "Write about " in predicted and predicted.index("Write about") > predicted.index("#Person2#: yes")
    assert "Write about" not in tok.decode(prompt_ids(tok, ROWS[0]["dialogue"], spec_for(CausalSettings.parse(SETTINGS))))
    with pytest.raises(Exception, match="needs the training rows"):
        spec_for(CausalSettings.parse(SETTINGS | {"length_control": {"mode": "instruction"}}))


def test_final_weights_are_kept_unless_an_earlier_checkpoint_wins_by_more_than_one_se():
    from vecflow.summary.loop import final_or_best

    final = {"step": 20, "score": 0.40, "eligible": True, "per_sample": [0.40, 0.30, 0.50, 0.40]}
    noisy = {"step": 10, "score": 0.41, "per_sample": [0.50, 0.20, 0.55, 0.39]}  # +0.01, SE ~0.04
    clear = {"step": 10, "score": 0.50, "per_sample": [0.50, 0.41, 0.60, 0.49]}  # +0.10, SE ~0.003
    assert final_or_best(noisy, final, "final_unless_significant")["kept"] == "final"
    kept = final_or_best(clear, final, "final_unless_significant")
    assert kept["kept"] == "best" and kept["gain_over_final"] == pytest.approx(0.1)
    assert final_or_best(noisy, final, "best")["kept"] == "best"
    assert final_or_best(noisy, final | {"eligible": False}, "final_unless_significant")["kept"] == "best"
    assert final_or_best(final, final, "final_unless_significant")["kept"] == "best"  # same step


def test_training_with_length_control_selection_rule_and_decoding_candidates(tiny_causal_lm, tmp_path):
    train = write_rows(tmp_path / "train.jsonl", ROWS * 2)
    selection = write_rows(tmp_path / "sel.jsonl", ROWS)
    out = tmp_path / "model"
    settings = SETTINGS | {"length_control": {"mode": "instruction", "round_to": 5}, "evals": 2, "epochs": 2,
                           "selection_rule": "final_unless_significant",
                           "decoding_candidates": [{"num_beams": 2, "early_stopping": True}]}
    summary = train_causal(train, selection, tiny_causal_lm, settings, out)
    assert summary["selection"]["rule"] == "final_unless_significant"
    assert summary["selection"]["final_step"] == summary["steps"]
    decoding = summary["decoding"]
    assert [c["generation"]["num_beams"] for c in decoding["candidates"]] == [1, 2]
    saved = json.loads((out / "generation_config.json").read_text())
    assert saved.get("num_beams", 1) == decoding["generation"]["num_beams"]
    spec = json.loads((out / SPEC_FILE).read_text())
    assert spec["length"]["mode"] == "instruction" and spec["length"]["round_to"] == 5
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    evals = [h for h in history if "val/rougeL" in h]
    assert evals and all("val/length_ratio" in h and not any("per_sample" in k for k in h) for h in evals)


def test_a_bad_decoding_candidate_fails_before_training(tiny_causal_lm, tmp_path):
    from vecflow.core.errors import VecflowError

    train = write_rows(tmp_path / "train.jsonl", ROWS * 2)
    settings = SETTINGS | {"decoding_candidates": [{"length_penalty": 2.0}]}  # beam-only flag with greedy
    with pytest.raises(VecflowError, match=r"decoding_candidates\[0\].length_penalty"):
        train_causal(train, train, tiny_causal_lm, settings, tmp_path / "model")
    assert not (tmp_path / "model").exists()
