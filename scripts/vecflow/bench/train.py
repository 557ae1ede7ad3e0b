"""``vecflow bench train``: ``vecflow.summary.loop.Loop.train_step`` vs HF ``Seq2SeqTrainer`` (BERT2BERT) and
``Trainer`` (causal LM) on the same model, rows, batch and lengths, one length-grouped epoch each (samples/s),
on DialogSum train (``--dialogsum``) or tiny generated dialogues."""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from vecflow.bench.common import MODELS, record
from vecflow.bench.inputs import causal_model, dialogue_rows, seq2seq_model, tiny_dialogue_rows


class _StepClock:
    """A TrainerCallback that stamps the end of every optimizer step."""

    def __init__(self):
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.stamps.append((time.perf_counter(), time.process_time()))

        self.stamps: list[tuple[float, float]] = []
        self.callback = Callback()


def _rate(stamps: list[tuple[float, float]], samples_per_step: list[int]) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second) from the end of step 1 to the end of the last step
    (the first step is warm-up)."""
    samples = sum(samples_per_step[1:])
    return samples / (stamps[-1][0] - stamps[0][0]), samples / max(stamps[-1][1] - stamps[0][1], 1e-9)


def ours_train(model, tokenizer, features, collator, settings, forward=None) -> tuple[tuple, list[float]]:
    import torch

    from vecflow.summary.budget import fixed_plan
    from vecflow.summary.loop import Loop
    from vecflow.summary.settings import SummarizerSettings

    steps = math.ceil(len(features) / settings["batch_size"])
    loop_settings = SummarizerSettings.parse(settings).loop_settings()  # the summarizer's defaults for the rest
    with tempfile.TemporaryDirectory() as tmp:
        loop = Loop(model=model, tokenizer=tokenizer, features=features, collator=collator, validate=None,
                    settings=loop_settings, out_dir=Path(tmp) / "model", fingerprint="bench", spec={}, device=torch.device("cpu"),
                    run_name="bench", resume=None, forward=forward)
        loop.plan = fixed_plan(steps, settings["warmup_ratio"], 1.0)
        stamps, samples, losses = [], [], []
        for step in range(steps):
            loss, count, _ = loop.train_step(step, False)
            stamps.append((time.perf_counter(), time.process_time()))
            samples.append(count)
            losses.append(loss)
    return _rate(stamps, samples), losses


def hf_train(model, features, collator, settings, seq2seq: bool) -> tuple[tuple, list[float]]:
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, TrainingArguments

    steps = math.ceil(len(features) / settings["batch_size"])
    clock = _StepClock()
    args_class, trainer_class = (Seq2SeqTrainingArguments, Seq2SeqTrainer) if seq2seq else (TrainingArguments, Trainer)
    with tempfile.TemporaryDirectory() as tmp:
        args = args_class(output_dir=tmp, per_device_train_batch_size=settings["batch_size"], max_steps=steps,
                          learning_rate=settings["learning_rate"], weight_decay=settings["weight_decay"],
                          warmup_steps=settings["warmup_ratio"], lr_scheduler_type="linear", max_grad_norm=1.0,
                          train_sampling_strategy="group_by_length", report_to="none", save_strategy="no", eval_strategy="no",
                          logging_strategy="steps", logging_steps=1, disable_tqdm=True, dataloader_num_workers=0,
                          use_cpu=True, seed=settings["seed"], remove_unused_columns=False)
        trainer = trainer_class(model=model, args=args, train_dataset=features, data_collator=collator,
                                callbacks=[clock.callback])
        trainer.train()
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    sizes = [settings["batch_size"]] * steps
    sizes[-1] = len(features) - settings["batch_size"] * (steps - 1)
    return _rate(clock.stamps, sizes), losses


def weights_digest(model) -> str:
    """A hash of every parameter, to check that both trainers start from the same weights."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def bench_train(size: str, out_dir: Path | None, minilm: Path | None = None, smollm2: Path | None = None,
                families: tuple = ("seq2seq", "causal"),
                dialogsum: Path | None = None, **_) -> list[dict]:
    """Each side loads its own copy of the model (seeded: same weights, checked by hash), one after the other,
    so that only one model and its optimizer state are in memory at a time."""
    import gc

    import torch

    from vecflow.summary.causal import CausalCollator, loss_on_labels, tokenize_examples
    from vecflow.summary.seq2seq import loss_on_labels as seq2seq_loss, make_collator, tokenize_dialogues

    full = size == "full"
    results = []
    timing = "end of step 1 to end of the last step, one length-grouped epoch (the longest batch is step 1 on both)"

    def compare(name, load, features_of, collator_of, settings, workload, peer, forward=None, seq2seq=True):
        digests, rates, losses = {}, {}, {}
        for side in ("ours", "hf"):
            model, tokenizer, extra = load()
            digests[side] = weights_digest(model)
            features = features_of(tokenizer, extra)
            torch.manual_seed(0)
            if side == "ours":
                rates[side], losses[side] = ours_train(model.train(), tokenizer, features, collator_of(tokenizer, model),
                                                       settings, forward=forward)
            else:
                rates[side], losses[side] = hf_train(model.train(), features, collator_of(tokenizer, model), settings,
                                                     seq2seq=seq2seq)
            del model
            gc.collect()
        return record(name, workload={**workload, "rows": len(features), "precision": "fp32", "timing": timing,
                                      "steps": math.ceil(len(features) / settings["batch_size"]), **settings},
                      unit="samples/s", peer=peer, peer_value=rates["hf"][0], ours="vecflow.summary.loop.Loop.train_step",
                      ours_value=rates["ours"][0], goal=1.3, cpu=rates["ours"][1] / rates["hf"][1],
                      check={"ours_mean_loss": float(np.mean(losses["ours"])), "hf_mean_loss": float(np.mean(losses["hf"])),
                             "same_start_weights": digests["ours"] == digests["hf"]}, out_dir=out_dir)

    if "seq2seq" in families:
        rows = dialogue_rows(dialogsum, 32, "train", "train") if full else tiny_dialogue_rows(8)
        encoder = Path(minilm or MODELS / "minilm")
        settings = {"batch_size": 4, "learning_rate": 5e-4, "weight_decay": 0.01, "warmup_ratio": 0.1, "seed": 0,
                    "group_by_length": True}
        lengths = {"max_source_length": 128, "max_target_length": 48}
        results.append(compare(
            "train_seq2seq", lambda: seq2seq_model(encoder, rows),
            lambda tokenizer, start: tokenize_dialogues(rows, tokenizer, lengths["max_source_length"],
                                                        lengths["max_target_length"], start),
            make_collator, settings, {"model": f"BERT2BERT from {encoder.name}", **lengths,
                                      "data": "DialogSum train" if full else "tiny"},
            "transformers Seq2SeqTrainer", forward=seq2seq_loss))
    if "causal" in families:
        rows = dialogue_rows(dialogsum, 16, "train", "train") if full else tiny_dialogue_rows(8)
        lm = Path(smollm2 or MODELS / "smollm2")
        settings = {"batch_size": 2, "learning_rate": 5e-5, "weight_decay": 0.0, "warmup_ratio": 0.1, "seed": 0,
                    "group_by_length": True}
        spec = {"kind": "causal", "max_source_length": 128 if full else 48, "max_target_length": 48,
                "system_message": None, "user_template": None}
        results.append(compare(
            "train_causal", lambda: (*causal_model(lm), None), lambda tokenizer, _: tokenize_examples(rows, tokenizer, spec),
            lambda tokenizer, model: CausalCollator(tokenizer.pad_token_id), settings,
            {"model": f"{lm.name} (full fine-tune)", "max_source_length": spec["max_source_length"],
             "max_target_length": spec["max_target_length"], "data": "DialogSum train" if full else "tiny"},
            "transformers Trainer", forward=loss_on_labels, seq2seq=False))
    return results
