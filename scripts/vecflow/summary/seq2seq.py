"""Seq2seq dialogue summarizer: train (BERT2BERT warm start or any HF seq2seq) and predict.

    vecflow train-summarizer --train train.jsonl --val val.jsonl --base resources/models/minilm \
        --settings '{"seed": 1, "device": "auto", "epochs": 2, "generation": {...}, ...}' --out results/summarizer/model
    vecflow predict-summarizer --model results/summarizer/model --dialogues val.jsonl --settings S --out preds.jsonl

What the users' post-mortems (seeds 000, 001; docs/design.md §5) made us do:
- speaker tags are normal tokens with distinct initial embeddings (``vecflow.data.speakers``), so predictions keep
  ``#Person1#`` and the model starts able to tell speakers apart;
- no padding in preprocessing: ``DataCollatorForSeq2Seq`` pads per batch, labels with -100;
- validation scores text produced by ``generate`` (the configured beam search), never teacher-forced logits;
- generation settings are checked (``vecflow.summary.generation``) before any work starts.

Training runs in the loop shared with the causal family (``vecflow.summary.loop``: length-grouped batches,
warmup-stable-decay on an optional ``max_minutes`` budget, selection on the selection split among
checkpoints whose outputs depend on their input, resume from ``DIR.partial/last/``). ``DIR`` is the best
model folder (model, tokenizer, generation_config, ``vecflow_summarizer.json``), ``history.jsonl`` and
``summary.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vecflow.core.errors import VecflowError
from vecflow.summary.generation import check_generation_config, to_generation_config
from vecflow.core.io import write_jsonl
from vecflow.core.settings import seed_everything
from vecflow.data.dialogues import load_dialogues
from vecflow.data.speakers import add_speaker_tokens, count_speakers, speaker_tags
from vecflow.summary.infer import generate_seq2seq
from vecflow.summary.loop import Loop, load_resume_state, partial_dir, run_fingerprint
from vecflow.summary.settings import (
    CausalSettings,
    Seq2SeqSettings,
    SummarizerSettings,
    predict_summarizer_settings,
    predict_summarizer_settings_arg,
)

__all__ = ["load_resume_state", "partial_dir"]  # re-exported: tests and callers import them from here

ENCODER_ONLY_TYPES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert", "mpnet")


# ------------------------------------------------------------------------------------------------ model
def zero_cross_attention_output(model) -> int:
    """Zero the output projection of every freshly initialised cross-attention block of a warm start.

    Random cross-attention adds input-dependent noise to a pretrained decoder; the quickest way for training to
    remove it is to make the encoder's output the same for every input, and the model then writes one summary
    for every dialogue (issue 14). Starting from zero, cross-attention adds nothing until its gradient says that
    reading the encoder helps. Returns the number of blocks changed.
    """
    import torch

    changed = 0
    with torch.no_grad():
        for name, module in model.decoder.named_modules():
            if name.endswith("crossattention.output.dense"):
                module.weight.zero_()
                module.bias.zero_()
                changed += 1
    return changed


def copy_self_attention_to_cross_attention(model) -> int:
    """Start each new cross-attention block as a copy of its layer's (pretrained) self-attention.

    In a BERT2BERT warm start both sides are the same checkpoint, so the encoder's outputs and the decoder's
    hidden states live in the same space: the copied query/key/value/output projections attend to the input in
    a structured way from the first step, instead of adding random noise that training removes by collapsing
    the encoder (issue 14). Returns the number of blocks initialised.
    """
    import torch

    copied = 0
    with torch.no_grad():
        for layer in model.decoder.bert.encoder.layer if hasattr(model.decoder, "bert") else []:
            cross = getattr(layer, "crossattention", None)
            if cross is None:
                continue
            cross.load_state_dict(layer.attention.state_dict())
            copied += 1
    if not copied:
        raise VecflowError("summarizer.cross_attention_init 'self' needs a BERT-like decoder with cross-attention")
    return copied


def load_base(base_dir: str | Path, speaker_texts: list[str], min_speakers: int = 3,
              cross_attention_init: str = "random"):
    """A seq2seq model + tokenizer from ``base_dir`` with speaker tags added.

    A seq2seq folder (T5, BART, a saved EncoderDecoder...) loads as is; an encoder folder (BERT-like,
    e.g. MiniLM) is warm-started as BERT2BERT: decoder starts from [CLS], ends at [SEP], pads with [PAD].
    """
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, EncoderDecoderModel

    base_dir = Path(base_dir)
    if not (base_dir / "config.json").exists():
        raise VecflowError(f"{base_dir}: not an HF model folder (no config.json)")
    config = AutoConfig.from_pretrained(base_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if getattr(config, "is_encoder_decoder", False):
        model = AutoModelForSeq2SeqLM.from_pretrained(base_dir)
    elif config.model_type in ENCODER_ONLY_TYPES:
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(str(base_dir), str(base_dir))
        model.config.decoder_start_token_id = tokenizer.cls_token_id
        model.config.eos_token_id = tokenizer.sep_token_id
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        raise VecflowError(
            f"{base_dir}/config.json: field 'model_type': '{config.model_type}' is neither a seq2seq model "
            f"nor a BERT-like encoder ({', '.join(ENCODER_ONLY_TYPES)})"
        )
    if cross_attention_init == "zero":
        zero_cross_attention_output(model)
    elif cross_attention_init == "self":
        copy_self_attention_to_cross_attention(model)
    tags = speaker_tags(count_speakers(speaker_texts, minimum=min_speakers))
    added = add_speaker_tokens(tokenizer, model, tags)
    print(f"[vecflow] speaker tokens added: {', '.join(added) or 'none (already present)'}", flush=True)
    return model, tokenizer


def load_trained(model_dir: str | Path):
    """A trained seq2seq folder (ours or any HF one): model + tokenizer."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise VecflowError(f"{model_dir}: not an HF model folder (no config.json)")
    return AutoModelForSeq2SeqLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)


def decoder_start_id(model, tokenizer) -> int | None:
    start = getattr(model.config, "decoder_start_token_id", None)
    if start is None and getattr(model.config, "decoder", None) is not None:
        start = getattr(model.config.decoder, "decoder_start_token_id", None)
    return start


# ----------------------------------------------------------------------------------------- preprocessing
def tokenize_dialogues(rows: list[dict], tokenizer, max_source_length: int, max_target_length: int,
                       decoder_start_token_id: int | None) -> list[dict]:
    """Token ids per dialogue, truncated, NOT padded; the target is the first summary.

    A leading decoder-start token in the labels is dropped (BERT's [CLS]): the model shifts labels right
    and prepends it itself, so keeping it would teach "[CLS] [CLS] ...".
    """
    sources = tokenizer([r["dialogue"] for r in rows], max_length=max_source_length, truncation=True,
                        return_token_type_ids=False)
    targets = tokenizer(text_target=[r["summaries"][0] for r in rows], max_length=max_target_length,
                        truncation=True, return_token_type_ids=False)
    features = []
    for i in range(len(rows)):
        labels = list(targets["input_ids"][i])
        if labels and labels[0] == decoder_start_token_id:
            labels = labels[1:]
        features.append({"input_ids": sources["input_ids"][i], "attention_mask": sources["attention_mask"][i],
                         "labels": labels})
    return features


def loss_on_labels(model, batch):
    """The model's cross-entropy with the decoder's LM head run on the labelled positions only.

    In a BERT2BERT model the head (transform + 30k-word projection) costs more than the decoder body per token,
    and a length-grouped batch pads its summaries: the padded positions' logits were computed and thrown away.
    Same loss as ``model(**batch).loss`` (a test checks it); other seq2seq models use that.
    """
    import torch.nn.functional as F

    decoder = getattr(model, "decoder", None)
    body, head = getattr(decoder, "bert", None), getattr(decoder, "cls", None)
    if body is None or head is None or "decoder_input_ids" not in batch or hasattr(model, "enc_to_dec_proj"):
        return model(**batch).loss
    encoded = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    hidden = body(input_ids=batch["decoder_input_ids"], attention_mask=batch.get("decoder_attention_mask"),
                  encoder_hidden_states=encoded, encoder_attention_mask=batch["attention_mask"],
                  use_cache=False).last_hidden_state
    keep = batch["labels"] != -100
    return F.cross_entropy(head(hidden[keep]).float(), batch["labels"][keep])


def make_collator(tokenizer, model):
    """Dynamic padding: inputs with the pad id, labels with -100 (ignored by the loss)."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, padding="longest")


def generate_summaries(model, tokenizer, dialogues: list[str], generation_config, max_source_length: int,
                       batch_size: int, device, bf16: bool = False) -> list[str]:
    """Summaries from ``model.generate`` (see ``vecflow.summary.infer.generate_seq2seq``)."""
    return generate_seq2seq(model, tokenizer, dialogues, generation_config, max_source_length, batch_size,
                            device, bf16)


def validate(model, tokenizer, rows: list[dict], generation_config, settings: Seq2SeqSettings, device,
             bf16: bool = False) -> tuple[dict, list[dict]]:
    """Score generated text on the first ``val_samples`` selection dialogues (ROUGE, tags, input dependence)."""
    from vecflow.summary.scoring import selection_scores

    rows = rows[: settings.val_samples]
    predictions = generate_summaries(model, tokenizer, [r["dialogue"] for r in rows], generation_config,
                                     settings.max_source_length, settings.generate_batch_size, device, bf16)
    scores = selection_scores(predictions, [r["summaries"] for r in rows])
    examples = [{"id": r["id"], "prediction": p, "reference": r["summaries"][0]}
                for r, p in zip(rows, predictions)][: settings.log_examples]
    return scores, examples


def spec_for(settings: Seq2SeqSettings) -> dict:
    """What inference must repeat (``vecflow_summarizer.json``)."""
    return {"kind": "seq2seq", "max_source_length": settings.max_source_length,
            "max_target_length": settings.max_target_length, "system_message": None, "user_template": None}


# ---------------------------------------------------------------------------------------------- train
def train_summarizer(train_path, val_path, base_dir, settings: Seq2SeqSettings | dict, out_dir) -> dict:
    """Train with the shared budgeted loop (``vecflow.summary.loop``), selecting on ``val_path``.

    ``val_path`` is the SELECTION split (carved from train by ingest): the split that is scored is never seen.
    ``settings`` as a dict (a direct call) is validated here.
    """
    from vecflow.core.devices import pick_device
    from vecflow.core import distributed

    settings = settings if isinstance(settings, Seq2SeqSettings) else Seq2SeqSettings.parse(settings)
    check_generation_config(settings.generation, "summarizer.generation")
    out_dir = Path(out_dir)
    seed_everything(settings.seed)
    train_rows, val_rows = load_dialogues(train_path), load_dialogues(val_path)
    device = distributed.setup(pick_device(settings.device))  # this rank's, under torchrun
    fingerprint = run_fingerprint(settings.received, [train_path, val_path], base_dir)
    resume = load_resume_state(partial_dir(out_dir), fingerprint)
    if resume is None:
        texts = [r["dialogue"] for r in train_rows] + [s for r in train_rows for s in r["summaries"]]
        model, tokenizer = load_base(base_dir, texts, settings.min_speakers, settings.cross_attention_init)
    else:
        model, tokenizer = load_trained(partial_dir(out_dir) / "last")
    model.to(device)
    start_id = decoder_start_id(model, tokenizer)
    generation_config = to_generation_config(settings.generation, tokenizer, start_id)
    model.generation_config = generation_config
    features = tokenize_dialogues(train_rows, tokenizer, settings.max_source_length, settings.max_target_length,
                                  start_id)

    def validate_model(model_now):
        return validate(model_now, tokenizer, val_rows, generation_config, settings, device)

    encoder_scale = float(settings.encoder_lr_scale)

    def lr_scale(name: str) -> float:  # a warm-started encoder may learn slower (0 = frozen)
        return encoder_scale if name.startswith("encoder.") else 1.0

    loop = Loop(model=model, tokenizer=tokenizer, features=features, collator=make_collator(tokenizer, model),
                validate=validate_model, settings=settings.loop_settings(), out_dir=out_dir,
                fingerprint=fingerprint, spec=spec_for(settings), device=device, run_name="summarizer",
                resume=resume, lr_scale=lr_scale, forward=loss_on_labels, record=settings.received)
    summary = loop.run()
    summary["val_dialogues_scored"] = min(len(val_rows), settings.val_samples)
    return summary


# -------------------------------------------------------------------------------------------- predict
def predict_summaries(model_dir, dialogues_path, settings: SummarizerSettings | dict, out_path) -> int:
    """Generate a summary per dialogue with the trained folder's own settings; write predictions JSONL.
    ``settings``: the family's (``Seq2SeqSettings`` or ``CausalSettings``); a dict (a direct call) is validated
    here."""
    from vecflow.core.devices import pick_device
    from vecflow.summary.infer import SPEC_FILE, load_summarizer

    if not isinstance(settings, (Seq2SeqSettings, CausalSettings)):
        settings = predict_summarizer_settings(settings)
    seed_everything(settings.seed)
    rows = load_dialogues(dialogues_path, need_summaries=False)
    device = pick_device(settings.device)
    batch_size = settings.generate_batch_size
    summarizer = load_summarizer(model_dir, device, batch_size)
    if not (Path(model_dir) / SPEC_FILE).exists():  # a plain HF seq2seq folder: decode with the config's settings
        check_generation_config(settings.generation, "summarizer.generation")
        summarizer.generation_config = to_generation_config(
            settings.generation, summarizer.tokenizer, decoder_start_id(summarizer.model, summarizer.tokenizer))
    started = time.time()
    predictions = summarizer.summarize([r["dialogue"] for r in rows])
    seconds = time.time() - started
    print(f"[vecflow] {len(rows)} summaries in {seconds:.1f} s ({len(rows) / max(seconds, 1e-9):.2f}/s, "
          f"batch {batch_size}, {summarizer.kind})", flush=True)
    from vecflow.summary.pairing import paired_rows

    return write_jsonl(out_path, paired_rows([r["id"] for r in rows], predictions, [r["summaries"] for r in rows],
                                             dialogues_path))


# ------------------------------------------------------------------------------------------------- CLI
def main_train(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow train-summarizer", description=__doc__.split("\n")[0])
    parser.add_argument("--train", required=True, help="dialogues JSONL to train on (first summary = target)")
    parser.add_argument("--val", required=True, help="selection dialogues JSONL (checkpoints are chosen on it)")
    parser.add_argument("--base", required=True, help="HF folder: a seq2seq model or a BERT-like encoder")
    parser.add_argument("--settings", required=True, type=Seq2SeqSettings.from_json,
                        help="the summarizer config section (vecflow.summary.settings.Seq2SeqSettings)")
    parser.add_argument("--out", required=True, help="output model folder (DIR.partial/ holds resume state)")
    args = parser.parse_args(argv)
    summary = train_summarizer(args.train, args.val, args.base, args.settings, args.out)
    best = "none eligible" if summary["best_score"] is None else f"{summary['best_score']:.4f}"
    print(f"[vecflow] best step {summary['best_step']}: selection {summary['selection_metric']} {best} "
          f"-> {args.out}", flush=True)
    return 0


def main_predict(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow predict-summarizer", description="Summarize dialogues.")
    parser.add_argument("--model", required=True, help="trained seq2seq folder (train-summarizer's --out)")
    parser.add_argument("--dialogues", required=True, help="dialogues JSONL")
    parser.add_argument("--settings", required=True, type=predict_summarizer_settings_arg,
                        help="the family's training settings (Seq2SeqSettings or CausalSettings)")
    parser.add_argument("--out", required=True, help="predictions JSONL {id, prediction, references}")
    args = parser.parse_args(argv)
    count = predict_summaries(args.model, args.dialogues, args.settings, args.out)
    print(f"[vecflow] wrote {count} predictions -> {args.out}", flush=True)
    return 0
