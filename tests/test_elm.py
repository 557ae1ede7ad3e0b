"""ELM adapter: prompt assembly, label masks, soft-token splicing, losses, training and prediction (tiny models)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from test_dialogues import schema_errors
from vecflow.data.synthesis import load_summary_split
from vecflow.summary import elm, elm_train
from vecflow.summary.elm_losses import LossWeights, combine_losses, info_nce, text_drift
from vecflow.core.errors import VecflowError
from vecflow.core.io import save_tensors

TEMPLATE = "Summarize the dialogue: <EMB> Summary please."
SUMMARIES = [
    "person one asks about the hotel room",
    "they talk about dinner and lunch",
    "she wants to buy a new book",
    "the doctor tells him to work less",
    "he needs help with his school data",
    "they read a file and print the list",
]


def make_elm_data(folder: Path, dim: int = 32, seed: int = 0, train_sources: int = 6, val_sources: int = 3) -> Path:
    """A filtered synthesis folder: two summaries per source, one unit vector per row."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_sources), ("val", val_sources)):
        rows = []
        for s in range(count):
            for variation in range(2):
                text = SUMMARIES[(s + variation) % len(SUMMARIES)]
                rows.append(
                    {
                        "task_type": "summary",
                        "input_prompt_template": TEMPLATE,
                        "embedding_index": len(rows),
                        "target_text": text,
                        "source_id": f"{split}-{s}",
                        "variation": variation,
                    }
                )
        vectors = rng.normal(size=(len(rows), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{split}_synthesis.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        save_tensors(folder / f"{split}_embeddings.safetensors", {"embeddings": vectors})
    return folder


def elm_settings(**overrides) -> dict:
    settings = {
        "seed": 7,
        "device": "cpu",
        "soft_tokens": 3,
        "hidden_dim": 16,
        "dropout": 0.0,
        "residual_scale": 0.1,
        "epochs": 1,
        "batch_size": 4,
        "grad_accum": 1,
        "learning_rate": 1e-3,
        "max_target_length": 12,
        "max_train_samples": 0,
        "val_samples": 2,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "contrastive_weight": 0.01,
        "contrastive_temperature": 0.07,
        "text_drift_weight": 0.03,
        "text_drift_target_similarity": 0.75,
        "generation": {"num_beams": 1, "max_new_tokens": 6},
        "max_minutes": 0,
        "evals": 0,
        "warmup_ratio": 0.0,
        "decay_ratio": 0.2,
        "bf16": False,
        "selection_metric": "rougeL",
        "selection_rule": "best",
        "min_distinct_ratio": 0.0,
        "lm_training": "none",
        "adapter_share": 0.5,
        "lm_learning_rate": 1e-3,
        "lora_r": 4,
        "lora_alpha": 8,
        "retrieval_k": 0,
        "retrieval_max_tokens": 8,
        "rerank_candidates": 1,
        "eval_batch_size": 4,
    }
    settings.update(overrides)
    return settings


@pytest.fixture(scope="module")
def lm_and_tokenizer(tiny_causal_lm):
    return elm.load_frozen_lm(tiny_causal_lm, torch.device("cpu"))


@pytest.fixture(scope="module")
def elm_data(tmp_path_factory) -> Path:
    return make_elm_data(tmp_path_factory.mktemp("elm") / "filtered")


def small_adapter(lm, dim=32, k=3, seed=0):
    torch.manual_seed(seed)
    return elm.EmbeddingAdapter(dim, lm.get_input_embeddings().embedding_dim, k, 16, 0.0, 0.1).eval()


# ------------------------------------------------------------------------------------- prompts, labels


@pytest.mark.parametrize("side", ["right", "left"])
def test_label_mask_covers_exactly_the_target_tokens(lm_and_tokenizer, side):
    _, tok = lm_and_tokenizer
    texts = ["she wants to buy a new book", "yes"]
    examples = [elm.make_example(tok, TEMPLATE, t, max_target_length=40) for t in texts]
    batch = elm.collate(examples, soft_tokens=3, pad=elm.pad_id(tok), padding_side=side)
    for row, (text, ex) in enumerate(zip(texts, examples)):
        labelled = batch.labels[row][batch.labels[row] != -100].tolist()
        assert labelled == tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert tok.decode(labelled, skip_special_tokens=True) == text
        # labelled positions are the last real tokens, attended to, and hold the same ids as input_ids
        positions = (batch.labels[row] != -100).nonzero().squeeze(1)
        assert batch.attention_mask[row, positions].all()
        assert batch.input_ids[row, positions].tolist() == labelled
        assert int(batch.attention_mask[row].sum()) == len(ex.prefix) + 3 + len(ex.suffix) + len(ex.target)
    padded_row = 1  # the shorter target
    pads = (batch.attention_mask[padded_row] == 0).nonzero().squeeze(1).tolist()
    assert pads and (pads[0] == 0 if side == "left" else pads[-1] == batch.input_ids.shape[1] - 1)


def test_target_is_truncated_then_ends_with_eos(lm_and_tokenizer):
    _, tok = lm_and_tokenizer
    example = elm.make_example(tok, TEMPLATE, " ".join(SUMMARIES), max_target_length=5)
    assert len(example.target) == 6 and example.target[-1] == tok.eos_token_id


def test_prompt_is_the_chat_template_split_at_the_placeholder(lm_and_tokenizer):
    _, tok = lm_and_tokenizer
    prefix, suffix = elm.prompt_ids(tok, TEMPLATE)
    # an explicit system message first: never the template's default "helpful assistant" one
    assert tok.decode(prefix) == (f"<|im_start|>system\n{elm.SYSTEM_MESSAGE}<|im_end|>\n"
                                  "<|im_start|>user\nSummarize the dialogue: ")
    assert tok.decode(suffix) == " Summary please.<|im_end|>\n<|im_start|>assistant\n"


def test_soft_tokens_land_at_the_emb_position(lm_and_tokenizer):
    lm, tok = lm_and_tokenizer
    adapter = small_adapter(lm)
    examples = [elm.make_example(tok, TEMPLATE, t, 20) for t in ("yes", "they talk about dinner and lunch")]
    vectors = torch.nn.functional.normalize(torch.randn(2, 32), dim=-1)
    for side in ("right", "left"):
        batch = elm.collate(examples, 3, elm.pad_id(tok), side)
        with torch.no_grad():
            inputs_embeds, soft = elm.inputs_embeds_for(lm, adapter, batch, vectors)
            tokens = lm.get_input_embeddings()(batch.input_ids)
        for row in range(2):
            start = int(batch.soft_start[row])
            assert torch.allclose(inputs_embeds[row, start : start + 3], adapter(vectors[row : row + 1])[0], atol=1e-6)
            assert torch.equal(inputs_embeds[row, start : start + 3], soft[row])
            others = torch.ones(inputs_embeds.shape[1], dtype=torch.bool)
            others[start : start + 3] = False
            assert torch.equal(inputs_embeds[row, others], tokens[row, others])
            # the tokens just before the soft slots are the end of the text before <EMB>
            before = batch.input_ids[row, :start][batch.attention_mask[row, :start] == 1]
            assert tok.decode(before.tolist()).endswith("Summarize the dialogue: ")


def test_only_the_adapter_receives_gradients(lm_and_tokenizer):
    lm, tok = lm_and_tokenizer
    adapter = small_adapter(lm).train()
    batch = elm.collate([elm.make_example(tok, TEMPLATE, "yes", 10)], 3, elm.pad_id(tok))
    loss, parts = elm_train.train_step(lm, adapter, batch, torch.randn(1, 32), None, LossWeights())
    loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in lm.parameters())
    assert all(p.grad is not None for n, p in adapter.named_parameters() if not n.startswith("pool_head"))
    assert parts["loss/total"] == parts["loss/cross_entropy"] > 0


def test_left_padded_batch_generates_what_single_rows_generate(lm_and_tokenizer):
    lm, tok = lm_and_tokenizer
    adapter = small_adapter(lm, seed=3)
    sources = [elm.Source("a", TEMPLATE, 0, ["x"]), elm.Source("b", "Short <EMB>", 1, ["y"])]
    vectors = torch.nn.functional.normalize(torch.randn(2, 32), dim=-1)
    generation = {"num_beams": 1, "max_new_tokens": 5, "do_sample": False}
    batched = elm.generate_texts(lm, tok, adapter, sources, vectors, generation, batch_size=2)
    single = [elm.generate_texts(lm, tok, adapter, [s], vectors, generation, batch_size=1)[0] for s in sources]
    assert batched == single
    assert all(isinstance(t, str) for t in batched)


# -------------------------------------------------------------------------------------------- losses


def test_info_nce_is_low_on_the_diagonal():
    torch.manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    aligned = info_nce(vectors, vectors, temperature=0.07)
    shuffled = info_nce(vectors.roll(1, dims=0), vectors, temperature=0.07)
    assert aligned < 0.1 < shuffled
    logits = vectors @ vectors.T / 0.5
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(6))
    assert torch.allclose(info_nce(vectors, vectors, 0.5), expected)


def test_text_drift_uses_the_target_similarity():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.6, 0.8]])  # cos = 0.6
    loss_75, cos = text_drift(a, b, 0.75)
    loss_90, _ = text_drift(a, b, 0.90)
    assert float(cos) == pytest.approx(0.6)
    assert float(loss_75) == pytest.approx(0.15) and float(loss_90) == pytest.approx(0.30)
    assert float(text_drift(a, b, 0.6)[0]) == 0.0 and float(text_drift(a, b, 0.5)[0]) == 0.0
    # gradient flows only while below the target
    x = a.clone().requires_grad_(True)
    text_drift(x, b, 0.5)[0].backward()
    assert torch.all(x.grad == 0)


def test_combine_losses_weights_and_reports_each_term():
    torch.manual_seed(0)
    pooled, vectors, targets = torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 8)
    ce = torch.tensor(2.0)
    weights = LossWeights(contrastive=0.5, text_drift=2.0, drift_target_similarity=0.9)
    total, parts = combine_losses(ce, pooled, vectors, targets, weights)
    expected = 2.0 + 0.5 * parts["loss/contrastive"] + 2.0 * parts["loss/text_drift"]
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert set(parts) >= {"loss/cross_entropy", "loss/contrastive", "loss/text_drift", "drift/cosine", "loss/total"}
    higher = combine_losses(ce, pooled, vectors, targets, LossWeights(0.5, 2.0, 0.99))[1]
    assert higher["loss/text_drift"] > parts["loss/text_drift"]
    off, parts_off = combine_losses(ce, pooled, vectors, targets, LossWeights())
    assert float(off) == 2.0 and "loss/contrastive" not in parts_off and "loss/text_drift" not in parts_off


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("target_text"), "train_synthesis.jsonl:2: field 'target_text': missing"),
        (lambda r: r.update(input_prompt_template="no placeholder"), ":2: field 'input_prompt_template': must contain"),
        (lambda r: r.update(embedding_index=99),
         ":2: field 'embedding_index': 99 is out of range (the embeddings have 12"),
        (lambda r: r.update(task_type="topic"), ":2: field 'task_type': expected 'summary'"),
        (lambda r: r.update(source_id=5), ":2: field 'source_id': expected str"),
    ],
)
def test_bad_synthesis_rows_name_file_line_and_field(tmp_path, change, message):
    folder = make_elm_data(tmp_path / "d")
    path = folder / "train_synthesis.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    change(rows[1])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(VecflowError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_summary_split(folder, "train")


def test_missing_embeddings_file_is_named(tmp_path):
    folder = make_elm_data(tmp_path / "d")
    (folder / "val_embeddings.safetensors").unlink()
    with pytest.raises(VecflowError, match="val_embeddings.safetensors: file not found"):
        load_summary_split(folder, "val")


def test_group_by_source_keeps_every_reference(elm_data):
    rows, _ = elm.load_split(elm_data, "val")
    sources = elm.group_by_source(rows)
    assert [s.source_id for s in sources] == ["val-0", "val-1", "val-2"]
    assert sources[1].references == [SUMMARIES[1], SUMMARIES[2]] and sources[1].embedding_index == 2


def test_settings_and_params_are_checked(tmp_path):
    # types and ranges: the config schema (validated once, by Snakemake); the module checks what it cannot say
    assert schema_errors("elm", {"batch_size": 0}) and schema_errors("elm", {"dropout": 1.5})
    assert schema_errors("elm", {}) == []
    # a direct call: a key left out takes the schema's default, a wrong one is named
    assert elm_train.train_settings({k: v for k, v in elm_settings().items() if k != "hidden_dim"}).hidden_dim == 1024
    with pytest.raises(VecflowError, match="settings: unknown key 'hiden_dim'"):
        elm_train.train_settings(elm_settings(hiden_dim=16))
    with pytest.raises(VecflowError, match="settings: field 'variant': 'fancy' is not one of plain, rag"):
        elm_train.train_settings(elm_settings(variant="fancy"))
    with pytest.raises(VecflowError, match="elm.generation.length_penalty: only valid with num_beams > 1"):
        elm_train.train_settings(elm_settings(generation={"num_beams": 1, "max_new_tokens": 4, "length_penalty": 2.0}))
    params = tmp_path / "best_params.yaml"
    params.write_text("learning_rate: 0.01\nwarp_speed: 9\n")
    with pytest.raises(VecflowError, match="best_params.yaml: key 'warp_speed': not an elm setting"):
        elm_train.train_settings(elm_settings(), params)
    params.write_text("learning_rate: 0.01\nsoft_tokens: 2\n")
    merged = elm_train.train_settings(elm_settings(), params)
    assert merged.learning_rate == 0.01 and merged.soft_tokens == 2 and merged.hidden_dim == 16
    params.write_text("soft_tokens: 0\n")
    with pytest.raises(VecflowError, match="settings: field 'soft_tokens': Input should be greater than 0"):
        elm_train.train_settings(elm_settings(), params)
    # the plain ELM reads the embedding alone; the rag variant retrieval_k summaries
    assert elm_train.train_settings(elm_settings(retrieval_k=3)).neighbours == 0
    assert elm_train.train_settings(elm_settings(retrieval_k=3, variant="rag")).neighbours == 3


def test_every_elm_setting_is_in_the_schema():
    """The keys train-elm reads are the schema's elm keys (their defaults live there, nowhere else)."""
    import yaml

    schema = yaml.safe_load((Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml").read_text())
    keys = schema["properties"]["elm"]["properties"]
    assert set(elm.SETTINGS) <= set(keys)
    assert all("default" in keys[k] for k in elm.SETTINGS)


# ----------------------------------------------------------------------------------- train + predict


def test_train_and_predict_through_the_cli(tmp_path, elm_data, tiny_causal_lm, tiny_encoder):
    from vecflow.cli import main

    out = tmp_path / "adapter"
    params = tmp_path / "best_params.yaml"
    params.write_text("soft_tokens: 2\nlearning_rate: 0.002\n")
    settings = json.dumps(elm_settings(epochs=2))
    code = main(["train-elm", "--data-dir", str(elm_data), "--lm", str(tiny_causal_lm), "--encoder",
                 str(tiny_encoder), "--settings", settings, "--params", str(params), "--out", str(out)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter.safetensors", "adapter_config.json", "history.jsonl", "summary.json"]
    assert not any(p.name.startswith("adapter.") for p in tmp_path.iterdir() if p != out)  # no stage/partial dirs
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["soft_tokens"] == 2 and config["embed_dim"] == 32 and config["lm"] == tiny_causal_lm.name
    assert config["templates"] == [TEMPLATE] and config["lm_training"] == "none"
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    evals = [h for h in history if "val/rougeL" in h]
    assert [h["step"] for h in evals] == [3, 6]  # 12 rows, batch 4: 3 steps per epoch, one evaluation per epoch
    assert all("val/input_dependence/margin" in h and "selection/eligible" in h for h in evals)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selection_metric"] == "rougeL" and summary["best_step"] in (-1, 3, 6)
    assert summary["steps"] == 6 and summary["samples_seen"] == 24 and summary["train_dialogues"] == 12

    predictions, first = tmp_path / "pred.jsonl", tmp_path / "first.jsonl"
    code = main(["predict-elm", "--adapter", str(out), "--lm", str(tiny_causal_lm), "--data-dir", str(elm_data),
                 "--split", "val", "--settings", settings, "--out", str(predictions), "--out-first", str(first)])
    assert code == 0
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["val-0", "val-1", "val-2"]
    assert all(len(r["references"]) == 2 and isinstance(r["prediction"], str) for r in rows)
    assert first.read_text() == predictions.read_text()  # no re-ranking: the top candidate is the prediction


def test_training_is_deterministic_and_bertscore_is_used_when_given(tmp_path, elm_data, tiny_causal_lm, tiny_encoder):
    from safetensors.torch import load_file

    settings = elm_settings(max_train_samples=4, val_samples=2, contrastive_weight=0.0,
                            selection_metric="bertscore_f1", bertscore_num_layers=2)
    a = elm_train.train_elm(settings, elm_data, tiny_causal_lm, tiny_encoder, tmp_path / "a", bertscore_model=tiny_encoder)
    b = elm_train.train_elm(settings, elm_data, tiny_causal_lm, tiny_encoder, tmp_path / "b", bertscore_model=tiny_encoder)
    assert a == b
    wa, wb = load_file(str(tmp_path / "a" / "adapter.safetensors")), load_file(
        str(tmp_path / "b" / "adapter.safetensors")
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["selection_metric"] == "bertscore_f1" and summary["train_dialogues"] == 4
    history = [json.loads(line) for line in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    assert all(-1.0 <= h["val/bertscore_f1"] <= 1.0 for h in history if "val/rougeL" in h)


def test_two_stages_tune_the_lm_with_lora_and_save_it_merged(tmp_path, elm_data, tiny_causal_lm, tiny_encoder):
    """Stage 1 the adapter alone, stage 2 adapter + LoRA; the folder carries the merged LM, which prediction
    uses (a plain HF folder: no peft needed to load it)."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "adapter"
    settings = elm_settings(epochs=2, lm_training="lora", adapter_share=0.5, min_distinct_ratio=0.0)
    elm_train.train_elm(settings, elm_data, tiny_causal_lm, tiny_encoder, out)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == ["adapter"]  # the earlier stage, kept in the last's summary
    assert (out / "stage1_history.jsonl").exists() and (out / "lm" / "config.json").exists()
    assert not (tmp_path / "adapter.stage1").exists()
    merged = AutoModelForCausalLM.from_pretrained(out / "lm")
    base = AutoModelForCausalLM.from_pretrained(tiny_causal_lm)
    changed = [n for n, p in merged.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert changed and all("proj" in n for n in changed)  # LoRA on the attention projections, merged in
    assert elm.lm_folder(out, tiny_causal_lm) == out / "lm"
    assert elm.lm_folder(tmp_path, tiny_causal_lm) == tiny_causal_lm


def test_a_tiny_elm_writes_different_text_for_different_embeddings(tmp_path, tiny_causal_lm, tiny_encoder):
    """Trained to map two embeddings to two different summaries, the ELM writes them apart."""
    data = tmp_path / "two"
    vectors = np.eye(32, dtype=np.float32)[:2]
    texts = ["person one asks about the hotel room", "they talk about dinner and lunch"]
    for split in ("train", "val"):
        rows = [{"task_type": "summary", "input_prompt_template": TEMPLATE, "embedding_index": i,
                 "target_text": texts[i], "source_id": f"{split}-{i}"} for i in range(2)]
        data.mkdir(exist_ok=True)
        (data / f"{split}_synthesis.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        save_tensors(data / f"{split}_embeddings.safetensors", {"embeddings": vectors})
    settings = elm_settings(epochs=80, batch_size=2, learning_rate=1e-2, contrastive_weight=0.0, text_drift_weight=0.0,
                            max_target_length=10, generation={"num_beams": 1, "max_new_tokens": 10}, evals=2,
                            min_distinct_ratio=0.0, val_samples=2, lm_training="full", adapter_share=0.25,
                            lm_learning_rate=3e-3)
    elm_train.train_elm(settings, data, tiny_causal_lm, tiny_encoder, tmp_path / "out")
    elm.predict_elm(tmp_path / "out", tiny_causal_lm, data, "val", settings, tmp_path / "p.jsonl")
    predictions = [json.loads(line)["prediction"] for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert predictions[0] != predictions[1]


def test_rerank_keeps_the_candidate_nearest_the_input_embedding():
    class Encoder:  # each text's vector is given: "a" points along x, "b" along y, "c" between them
        table = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.7071, 0.7071]}

        def encode(self, texts, batch_size=64):
            return np.array([self.table[t] for t in texts], dtype=np.float32)

    targets = np.array([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    chosen, picks = elm.rerank_by_reembedding([["a", "b"], ["c", "a"], ["a", "c", "b"]], targets, Encoder())
    assert chosen == ["b", "a", "c"] and picks == [1, 1, 1]
    chosen, picks = elm.rerank_by_reembedding([["a", "a"]], targets[1:2], Encoder())
    assert picks == [0]  # a tie keeps the higher-scoring (earlier) candidate


def test_candidates_are_beams_and_the_first_is_the_plain_prediction(lm_and_tokenizer):
    lm, tok = lm_and_tokenizer
    adapter = small_adapter(lm, seed=5)
    sources = [elm.Source("a", TEMPLATE, 0, ["x"]), elm.Source("b", TEMPLATE, 1, ["y"])]
    vectors = torch.nn.functional.normalize(torch.randn(2, 32), dim=-1)
    generation = {"num_beams": 3, "max_new_tokens": 5}
    candidates = elm.generate_candidates(lm, tok, adapter, sources, vectors, generation, 2, candidates=3)
    assert [len(c) for c in candidates] == [3, 3]
    assert [c[0] for c in candidates] == elm.generate_texts(lm, tok, adapter, sources, vectors, generation, 1)


def test_retrieval_augmented_prompt_lists_the_neighbours_and_never_the_row_itself(tmp_path, lm_and_tokenizer):
    lm, tok = lm_and_tokenizer
    data = make_elm_data(tmp_path / "d")
    rows, vectors = elm.load_split(data, "train")
    sources = elm.group_by_source(rows)
    own = elm.attach_neighbours(sources, data, vectors, 2, 50, tok, exclude_self=True)
    first_summary = {s.source_id: s.references[0] for s in sources}
    assert all(len(s.neighbours) == 2 and first_summary[s.source_id] not in s.neighbours or
               sum(first_summary[o.source_id] == first_summary[s.source_id] for o in sources) > 1 for s in own)
    example = elm.make_example(tok, TEMPLATE, "yes", 5, own[0].neighbours)
    text = tok.decode(example.prefix + example.suffix)
    assert elm.NEIGHBOURS_HEADER in text and f"1. {own[0].neighbours[0]}" in text
    assert text.index(elm.NEIGHBOURS_HEADER) < text.index("Summarize the dialogue:")
    assert elm.attach_neighbours(sources, data, vectors, 0, 50, tok) == sources


def test_cli_bad_input_exits_2_without_output(tmp_path, elm_data, tiny_causal_lm, tiny_encoder, capsys):
    from vecflow.cli import main

    broken = make_elm_data(tmp_path / "broken")
    (broken / "val_synthesis.jsonl").write_text('{"task_type": "summary"}\n')
    out = tmp_path / "adapter"
    code = main(
        [
            "train-elm",
            "--data-dir",
            str(broken),
            "--lm",
            str(tiny_causal_lm),
            "--encoder",
            str(tiny_encoder),
            "--settings",
            json.dumps(elm_settings()),
            "--out",
            str(out),
        ]
    )
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("val_synthesis.jsonl:1: field 'input_prompt_template': missing")
    code = main(
        [
            "predict-elm",
            "--adapter",
            str(tmp_path / "nope"),
            "--lm",
            str(tiny_causal_lm),
            "--data-dir",
            str(elm_data),
            "--split",
            "val",
            "--settings",
            json.dumps(elm_settings()),
            "--out",
            str(tmp_path / "p.jsonl"),
        ]
    )
    assert code == 2 and "adapter_config.json: file not found" in capsys.readouterr().err


def test_encoder_dimension_mismatch_is_an_error(tmp_path, tiny_causal_lm, tiny_encoder):
    data = make_elm_data(tmp_path / "d", dim=16)
    with pytest.raises(VecflowError, match="encoder dimension 32 differs from the data's embedding dimension 16"):
        elm_train.train_elm(elm_settings(), data, tiny_causal_lm, tiny_encoder, tmp_path / "out")
    assert not (tmp_path / "out").exists()
