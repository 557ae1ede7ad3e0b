"""Seq2seq dialogue summarizer: train (BERT2BERT warm start or any HF seq2seq) and predict.

    vecflow train-summarizer --train train.jsonl --val val.jsonl --base resources/models/minilm \
        --settings '{"seed": 1, "device": "auto", "epochs": 2, "generation": {...}, ...}' --out results/summarizer/model
    vecflow predict-summarizer --model results/summarizer/model --dialogues val.jsonl --settings S --out preds.jsonl

What the users' post-mortems (seeds 000, 001; DESIGN §7) made us do:
- speaker tags are normal tokens with distinct initial embeddings (``vecflow.speakers``), so predictions keep
  ``#Person1#`` and the model starts able to tell speakers apart;
- no padding in preprocessing: ``DataCollatorForSeq2Seq`` pads per batch, labels with -100;
- validation scores text produced by ``generate`` (the configured beam search), never teacher-forced logits;
- generation settings are checked (``vecflow.generation``) before any work starts.

Training writes ``DIR.partial/`` next to ``DIR``: ``last/`` (model, tokenizer, ``state.pt`` with optimizer,
scheduler, epoch, RNG states), ``best/`` (best ROUGE-L so far) and ``history.jsonl``. A rerun continues from
``last/``. At the end ``DIR`` is published atomically: the best model folder (model, tokenizer,
generation_config), ``history.jsonl`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import time
import warnings
from pathlib import Path

from vecflow.errors import VecflowError, where
from vecflow.generation import check_generation_config, to_generation_config
from vecflow.io import atomic_dir, iter_jsonl, read_jsonl, sha256_file, write_json, write_jsonl
from vecflow.settings import need, seed_everything, settings_arg
from vecflow.speakers import add_speaker_tokens, count_speakers, speaker_tags

ENCODER_ONLY_TYPES = ("bert", "roberta", "xlm-roberta", "electra", "distilbert", "mpnet")


# ----------------------------------------------------------------------------------------------- inputs
def read_dialogues(path: str | Path, need_summaries: bool = True) -> list[dict]:
    """Read dialogues JSONL ``{id, dialogue, summaries: [str, ...], topic?}``; errors name file:line:field."""
    rows, seen = [], {}
    for lineno, record in iter_jsonl(path):
        for field in ("id", "dialogue"):
            if field not in record:
                raise VecflowError(f"{where(path, lineno, field)}: missing")
        if not isinstance(record["id"], (str, int)) or isinstance(record["id"], bool):
            raise VecflowError(f"{where(path, lineno, 'id')}: expected str, got {type(record['id']).__name__}")
        if not isinstance(record["dialogue"], str) or not record["dialogue"].strip():
            raise VecflowError(f"{where(path, lineno, 'dialogue')}: expected a non-empty string")
        summaries = _read_summaries(record, path, lineno, need_summaries)
        row_id = str(record["id"])
        if row_id in seen:
            raise VecflowError(f"{where(path, lineno, 'id')}: duplicate id '{row_id}' (first on line {seen[row_id]})")
        seen[row_id] = lineno
        rows.append({"id": row_id, "dialogue": record["dialogue"], "summaries": summaries})
    if not rows:
        raise VecflowError(f"{path}: no dialogues (empty file)")
    return rows


def _read_summaries(record: dict, path, lineno: int, required: bool) -> list[str]:
    if "summaries" not in record:
        if required:
            raise VecflowError(f"{where(path, lineno, 'summaries')}: missing")
        return []
    summaries = record["summaries"]
    if not isinstance(summaries, list) or (required and not summaries):
        raise VecflowError(f"{where(path, lineno, 'summaries')}: expected a non-empty list of strings")
    for i, summary in enumerate(summaries):
        if not isinstance(summary, str) or not summary.strip():
            raise VecflowError(f"{where(path, lineno, 'summaries')}: item {i} is not a non-empty string")
    return summaries


# ------------------------------------------------------------------------------------------------ model
def load_base(base_dir: str | Path, speaker_texts: list[str], min_speakers: int = 3):
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


def make_collator(tokenizer, model):
    """Dynamic padding: inputs with the pad id, labels with -100 (ignored by the loss)."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, padding="longest")


def epoch_order(count: int, seed: int, epoch: int) -> list[int]:
    """A shuffled order that depends only on (seed, epoch): reruns and resumed runs see the same batches."""
    order = list(range(count))
    random.Random(seed * 1000 + epoch).shuffle(order)
    return order


# -------------------------------------------------------------------------------------------- training
def use_bf16(requested: bool, device) -> bool:
    import torch

    if not requested:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def make_optimizer(model, settings: dict, steps_total: int):
    """AdamW (no decay on biases and LayerNorm) with linear warmup then linear decay."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": float(settings.get("weight_decay", 0.0))},
              {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=float(need(settings, "learning_rate")))
    warmup = int(float(settings.get("warmup_ratio", 0.0)) * steps_total)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, steps_total)
    return optimizer, scheduler


def train_one_epoch(model, features, collator, optimizer, scheduler, settings: dict, epoch: int, device,
                    bf16: bool) -> float:
    """One pass over ``features`` in the seeded order; returns the mean training loss."""
    import torch
    from tqdm import tqdm

    batch_size, grad_accum = int(need(settings, "batch_size")), int(settings.get("grad_accum", 1))
    max_grad_norm = float(settings.get("max_grad_norm", 1.0))
    order = epoch_order(len(features), int(settings["seed"]), epoch)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    model.train()
    optimizer.zero_grad()
    losses = []
    for step, idx in enumerate(tqdm(batches, desc=f"train epoch {epoch}", mininterval=10), start=1):
        batch = collator([features[i] for i in idx]).to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16), warnings.catch_warnings():
            # EncoderDecoderModel warns on every call with labels that its loss changed in v4.12
            warnings.filterwarnings("ignore", message="Version v4.12.0", category=FutureWarning)
            loss = model(**batch).loss
        (loss / grad_accum).backward()
        losses.append(loss.item())
        if step % grad_accum == 0 or step == len(batches):
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    return sum(losses) / max(len(losses), 1)


def optimizer_steps_per_epoch(count: int, batch_size: int, grad_accum: int) -> int:
    return math.ceil(math.ceil(count / batch_size) / grad_accum)


# ------------------------------------------------------------------------------------------ generation
def generate_summaries(model, tokenizer, dialogues: list[str], generation_config, max_source_length: int,
                       batch_size: int, device, bf16: bool = False) -> list[str]:
    """Summaries from ``model.generate``, longest dialogues first (less padding), returned in input order.

    Decoding skips special tokens; speaker tags are normal tokens, so they stay.
    """
    import torch

    model.eval()
    order = sorted(range(len(dialogues)), key=lambda i: -len(dialogues[i]))
    out = [""] * len(dialogues)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer([dialogues[i] for i in idx], max_length=max_source_length, truncation=True,
                              padding=True, return_tensors="pt", return_token_type_ids=False).to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                generated = model.generate(**batch, generation_config=generation_config)
            texts = tokenizer.batch_decode(generated, skip_special_tokens=True)
            for i, text in zip(idx, texts):
                out[i] = text.strip()
    return out


def rouge_l(predictions: list[str], references_list: list[list[str]]) -> dict:
    """Mean ROUGE-1/2/L F1 (stemmed, best reference per sample) via ``vecflow.scoring``."""
    from vecflow.scoring import rouge_scores

    mean = rouge_scores(predictions, references_list)["mean"]
    return {name: mean[name]["f"] for name in ("rouge1", "rouge2", "rougeL")}


def validate(model, tokenizer, val_rows: list[dict], generation_config, settings: dict, device,
             bf16: bool) -> tuple[dict, list[dict]]:
    """Score generated text on the first ``val_samples`` dialogues: ROUGE + how many keep speaker tags."""
    rows = val_rows[: int(settings.get("val_samples", len(val_rows)))]
    predictions = generate_summaries(model, tokenizer, [r["dialogue"] for r in rows], generation_config,
                                     int(need(settings, "max_source_length")),
                                     int(settings.get("eval_batch_size", need(settings, "batch_size"))), device, bf16)
    scores = rouge_l(predictions, [r["summaries"] for r in rows])
    scores["speaker_tag_rate"] = sum("#Person" in p for p in predictions) / len(predictions)
    examples = [{"id": r["id"], "prediction": p, "reference": r["summaries"][0]}
                for r, p in zip(rows, predictions)][: int(settings.get("log_examples", 2))]
    return scores, examples


# ------------------------------------------------------------------------------------- resume + publish
def partial_dir(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + ".partial")


def save_model_folder(target: Path, model, tokenizer, state: dict | None = None) -> None:
    """Model + tokenizer (+ ``state.pt``) into ``target``, atomically."""
    import torch

    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if state is not None:
            torch.save(state, tmp / "state.pt")


def rng_state() -> dict:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def run_fingerprint(settings: dict, train_path, val_path, base_dir) -> str:
    """What a resumed run must share with the interrupted one: settings (not device/tracking), data, base."""
    import hashlib
    import json

    kept = {k: v for k, v in settings.items() if k not in ("device", "tracking")}
    parts = [json.dumps(kept, sort_keys=True), sha256_file(train_path), sha256_file(val_path), str(base_dir)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def load_resume_state(partial: Path, fingerprint: str) -> dict | None:
    """The state saved after the last finished epoch of the SAME run, or None (then start afresh)."""
    import torch

    state_path = partial / "last" / "state.pt"
    if not state_path.exists():
        return None
    try:
        state = torch.load(state_path, weights_only=False, map_location="cpu")
    except Exception as exc:  # a corrupt file: say so rather than silently restart
        raise VecflowError(f"{state_path}: cannot read resume state ({exc}); delete {partial} to start over") from None
    if state.get("fingerprint") != fingerprint:
        print(f"[vecflow] {partial}: settings, data or base changed since it was written; starting afresh",
              flush=True)
        shutil.rmtree(partial)
        return None
    return state


def trim_history(history_path: Path, last_epoch: int) -> None:
    """Drop history records of epochs after ``last_epoch`` (logged by a run that died before saving)."""
    if not history_path.exists():
        return
    keep = [r for r in read_jsonl(history_path) if int(r.get("epoch", 0)) <= last_epoch]
    write_jsonl(history_path, keep)


def publish(out_dir: Path, partial: Path, summary: dict) -> None:
    """``DIR`` = best model folder + history.jsonl + summary.json, atomically; then drop ``DIR.partial``."""
    with atomic_dir(out_dir) as tmp:
        for item in (partial / "best").iterdir():
            shutil.copy2(item, tmp / item.name)
        shutil.copy2(partial / "history.jsonl", tmp / "history.jsonl")
        write_json(tmp / "summary.json", summary)
    shutil.rmtree(partial)


# ---------------------------------------------------------------------------------------------- train
def train_summarizer(train_path, val_path, base_dir, settings: dict, out_dir) -> dict:
    """Train, validate by generated text each epoch, keep the best by ROUGE-L; returns the summary."""
    import torch
    from vecflow.devices import pick_device
    from vecflow.tracking import Tracker

    check_generation_config(need(settings, "generation"), "summarizer.generation")
    out_dir = Path(out_dir)
    partial = partial_dir(out_dir)
    seed = int(need(settings, "seed"))
    seed_everything(seed)
    train_rows, val_rows = read_dialogues(train_path), read_dialogues(val_path)
    device = pick_device(settings.get("device", "auto"))
    bf16 = use_bf16(bool(settings.get("bf16", False)), device)

    fingerprint = run_fingerprint(settings, train_path, val_path, base_dir)
    resume = load_resume_state(partial, fingerprint)
    if resume is None:
        texts = [r["dialogue"] for r in train_rows] + [s for r in train_rows for s in r["summaries"]]
        model, tokenizer = load_base(base_dir, texts, int(settings.get("min_speakers", 3)))
    else:
        print(f"[vecflow] resuming from {partial} after epoch {resume['epoch']}", flush=True)
        model, tokenizer = load_trained(partial / "last")
    model.to(device)
    start_id = decoder_start_id(model, tokenizer)
    generation_config = to_generation_config(settings["generation"], tokenizer, start_id)
    model.generation_config = generation_config

    max_source, max_target = int(need(settings, "max_source_length")), int(need(settings, "max_target_length"))
    features = tokenize_dialogues(train_rows, tokenizer, max_source, max_target, start_id)
    collator = make_collator(tokenizer, model)
    epochs = int(need(settings, "epochs"))
    steps_total = epochs * optimizer_steps_per_epoch(len(features), int(need(settings, "batch_size")),
                                                     int(settings.get("grad_accum", 1)))
    optimizer, scheduler = make_optimizer(model, settings, steps_total)
    best = {"epoch": 0, "rougeL": -1.0}
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        restore_rng(resume["rng"])
        best = resume["best"]
        trim_history(partial / "history.jsonl", resume["epoch"])
    first_epoch = 1 if resume is None else resume["epoch"] + 1

    tracker = Tracker(partial / "history.jsonl", run_name="summarizer", config=settings,
                      backends=settings.get("tracking", {}), resume=resume is not None)
    for epoch in range(first_epoch, epochs + 1):
        started = time.time()
        train_loss = train_one_epoch(model, features, collator, optimizer, scheduler, settings, epoch, device, bf16)
        scores, examples = validate(model, tokenizer, val_rows, generation_config, settings, device, bf16)
        seconds = time.time() - started
        print(f"[vecflow] epoch {epoch}: loss {train_loss:.4f} rougeL {scores['rougeL']:.4f} "
              f"({seconds:.0f} s)", flush=True)
        if scores["rougeL"] > best["rougeL"]:
            best = {"epoch": epoch, "rougeL": scores["rougeL"]}
            save_model_folder(partial / "best", model, tokenizer)
        state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng": rng_state(), "best": best, "fingerprint": fingerprint}
        save_model_folder(partial / "last", model, tokenizer, state)
        record = {"epoch": epoch, "train/loss": train_loss, "lr": scheduler.get_last_lr()[0],
                  "epoch_seconds": seconds, **{f"val/{k}": v for k, v in scores.items()},
                  "val/examples": examples}
        tracker.log(record, step=epoch)

    summary = {"best_epoch": best["epoch"], "best_val_rougeL": best["rougeL"], "epochs": epochs,
               "train_dialogues": len(train_rows), "val_dialogues_scored": min(len(val_rows),
               int(settings.get("val_samples", len(val_rows)))), "bf16": bf16, "device": str(device)}
    tracker.finish(summary)
    publish(out_dir, partial, summary)
    return summary


# -------------------------------------------------------------------------------------------- predict
def predict_summaries(model_dir, dialogues_path, settings: dict, out_path) -> int:
    """Generate a summary per dialogue and write ``{id, prediction, references}`` JSONL; returns the count."""
    from vecflow.devices import pick_device

    gen = need(settings, "generation")
    check_generation_config(gen, "summarizer.generation")
    seed_everything(int(need(settings, "seed")))
    rows = read_dialogues(dialogues_path, need_summaries=False)
    device = pick_device(settings.get("device", "auto"))
    model, tokenizer = load_trained(model_dir)
    model.to(device)
    generation_config = to_generation_config(gen, tokenizer, decoder_start_id(model, tokenizer))
    predictions = generate_summaries(
        model, tokenizer, [r["dialogue"] for r in rows], generation_config,
        int(need(settings, "max_source_length")),
        int(settings.get("eval_batch_size", need(settings, "batch_size"))), device,
        use_bf16(bool(settings.get("bf16", False)), device),
    )
    return write_jsonl(out_path, ({"id": r["id"], "prediction": p, "references": r["summaries"]}
                                  for r, p in zip(rows, predictions)))


# ------------------------------------------------------------------------------------------------- CLI
def main_train(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow train-summarizer", description=__doc__.split("\n")[0])
    parser.add_argument("--train", required=True, help="dialogues JSONL to train on (first summary = target)")
    parser.add_argument("--val", required=True, help="dialogues JSONL to validate on (all summaries scored)")
    parser.add_argument("--base", required=True, help="HF folder: a seq2seq model or a BERT-like encoder")
    parser.add_argument("--settings", required=True, type=settings_arg, help="the summarizer config section")
    parser.add_argument("--out", required=True, help="output model folder (DIR.partial/ holds resume state)")
    args = parser.parse_args(argv)
    summary = train_summarizer(args.train, args.val, args.base, args.settings, args.out)
    print(f"[vecflow] best epoch {summary['best_epoch']}: val rougeL {summary['best_val_rougeL']:.4f} "
          f"-> {args.out}", flush=True)
    return 0


def main_predict(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow predict-summarizer", description="Summarize dialogues.")
    parser.add_argument("--model", required=True, help="trained seq2seq folder (train-summarizer's --out)")
    parser.add_argument("--dialogues", required=True, help="dialogues JSONL")
    parser.add_argument("--settings", required=True, type=settings_arg, help="the summarizer config section")
    parser.add_argument("--out", required=True, help="predictions JSONL {id, prediction, references}")
    args = parser.parse_args(argv)
    count = predict_summaries(args.model, args.dialogues, args.settings, args.out)
    print(f"[vecflow] wrote {count} predictions -> {args.out}", flush=True)
    return 0
