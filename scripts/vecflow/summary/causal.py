"""Causal-LM dialogue summarizer: fine-tune a decoder-only LM (default SmolLM2-135M-Instruct) on dialogue → summary.

    vecflow train-causal --train train.jsonl --val selection.jsonl --base resources/models/smollm2 \
        --settings '{"seed": 1, "max_minutes": 45, "learning_rate": 5e-5, ...}' --out results/causal/model
    vecflow predict-summarizer --model results/causal/model --dialogues val.jsonl --settings S --out preds.jsonl

Each example is the LM's own chat template with an EXPLICIT system message (never the template's default
"helpful assistant" one), the dialogue in the user turn and the summary as the assistant turn. The loss is on
the summary tokens and the end-of-turn token only: the prompt and the padding are -100. Sequences are not
padded in preprocessing; the collator pads per batch (inputs with the pad id, labels with -100).

Speaker tags need nothing special here: a byte-level BPE decodes exactly what it encoded, so ``#Person1#``
comes back verbatim (a test decodes real predictions and labels).

``lora.enabled`` trains LoRA adapters through ``peft`` instead of every weight (for larger LMs) and merges
them on save, so the published folder is a plain HF model: the bundle and the server need no peft.

Training runs in the loop shared with the seq2seq family (``vecflow.summary.loop``): time budget, WSD schedule,
length-grouped batches, bf16 autocast when it is faster, selection on the selection split, resume.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vecflow.core.errors import VecflowError
from vecflow.data.dialogues import load_dialogues
from vecflow.summary.generation import check_generation_config
from vecflow.core.settings import seed_everything
from vecflow.summary.infer import (
    DEFAULT_LENGTH_TEMPLATE,
    causal_generation_config,
    chat_messages,
    end_of_turn_id,
    fit_length_model,
    generate_causal,
    prompt_ids,
)
from vecflow.summary.loop import Loop, load_resume_state, partial_dir, run_fingerprint
from vecflow.summary.settings import CausalSettings, LoraSettings


# ----------------------------------------------------------------------------------------------- model
def load_base(base_dir: str | Path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    base_dir = Path(base_dir)
    if not (base_dir / "config.json").exists():
        raise VecflowError(f"{base_dir}: not an HF model folder (no config.json)")
    config = AutoConfig.from_pretrained(base_dir)
    if getattr(config, "is_encoder_decoder", False):
        raise VecflowError(f"{base_dir}/config.json: an encoder-decoder model; use summarizer.kind: seq2seq for it")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if not getattr(tokenizer, "chat_template", None):
        raise VecflowError(f"{base_dir}: the tokenizer has no chat template; the causal summarizer needs an "
                           "instruct/chat LM (e.g. SmolLM2-135M-Instruct)")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype="float32")
    return model, tokenizer


def spec_for(settings: CausalSettings, train_rows: list[dict] | None = None) -> dict:
    """What inference must repeat. ``length_control.mode: instruction`` adds the length line's model,
    fitted on ``train_rows`` (the training split only)."""
    spec = {"kind": "causal", "max_source_length": settings.max_source_length,
            "max_target_length": settings.max_target_length,
            "system_message": settings.system_message or None, "user_template": settings.user_template or None}
    control = settings.length_control
    if control.mode == "instruction":
        if not train_rows:
            raise VecflowError("summarizer.causal.length_control: mode 'instruction' needs the training rows")
        spec["length"] = fit_length_model([r["dialogue"] for r in train_rows], [r["summaries"][0] for r in train_rows],
                                          control.round_to, control.template or DEFAULT_LENGTH_TEMPLATE)
    return spec


# ------------------------------------------------------------------------------------------ features
def tokenize_examples(rows: list[dict], tokenizer, spec: dict) -> list[dict]:
    """Prompt + summary + end-of-turn, unpadded; labels are -100 on every prompt token.

    The summary is tokenized on its own (truncated to ``max_target_length``) and appended to the prompt ids,
    so the boundary between what is conditioned on and what is learned is exact.
    With a length instruction in the spec, each prompt asks for its own reference's word count, so the model
    learns to follow the number; prediction asks for the fitted budget instead.
    """
    eot = end_of_turn_id(tokenizer)
    features = []
    for row in rows:
        summary = row["summaries"][0]
        prompt = prompt_ids(tokenizer, row["dialogue"], spec, words=len(summary.split()))
        target = tokenizer(summary, add_special_tokens=False)["input_ids"]
        target = target[: int(spec["max_target_length"])] + [eot]
        features.append({"input_ids": prompt + target, "attention_mask": [1] * (len(prompt) + len(target)),
                         "labels": [-100] * len(prompt) + target})
    return features


class CausalCollator:
    """Right-pads a batch: input ids with the pad id, attention mask with 0, labels with -100."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]):
        import torch
        from transformers import BatchEncoding

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, :n] = torch.tensor(f["input_ids"])
            mask[row, :n] = 1
            labels[row, :n] = torch.tensor(f["labels"])
        return BatchEncoding({"input_ids": ids, "attention_mask": mask, "labels": labels})


def loss_on_labels(model, batch):
    """Next-token cross-entropy on the labelled (summary + end-of-turn) positions only.

    The LM head runs only where a label follows: about a tenth of the positions for DialogSum, so the
    (batch × length × vocabulary) logits tensor — gigabytes for a 49k vocabulary — is never built. Same loss
    as ``model(..., labels=labels).loss`` (a test checks it); models without a separable decoder/head use that.
    """
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body, head = getattr(base, "model", None), base.get_output_embeddings()
    if body is None or head is None or getattr(base.config, "final_logit_softcapping", None):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    logits = head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])


# ---------------------------------------------------------------------------------------------- LoRA
def apply_lora(model, lora: LoraSettings):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=float(lora.dropout),
                        target_modules=lora.target_modules or ["q_proj", "k_proj", "v_proj", "o_proj"],
                        task_type="CAUSAL_LM")
    return get_peft_model(model, config)


class MergedOnSave:
    """Wraps a peft model so that ``save_pretrained`` writes the merged plain model (no peft needed to load)."""

    def __init__(self, peft_model):
        self.peft_model = peft_model

    def save_pretrained(self, folder):
        import copy

        merged = copy.deepcopy(self.peft_model).merge_and_unload()
        merged.save_pretrained(folder)


# ---------------------------------------------------------------------------------------------- train
def validate(model, tokenizer, rows: list[dict], spec: dict, generation_config, settings: CausalSettings, device):
    from vecflow.summary.scoring import selection_scores

    rows = rows[: settings.val_samples]
    predictions = generate_causal(model, tokenizer, [r["dialogue"] for r in rows], spec, generation_config,
                                  settings.generate_batch_size, device)
    scores = selection_scores(predictions, [r["summaries"] for r in rows])
    examples = [{"id": r["id"], "prediction": p, "reference": r["summaries"][0]}
                for r, p in zip(rows, predictions)][: settings.log_examples]
    return scores, examples


def decoding_settings(settings: CausalSettings) -> list[dict]:
    """The configured generation settings first, then each of ``decoding_candidates`` laid over them."""
    base = dict(settings.generation)
    options = [base] + [base | dict(c) for c in settings.decoding_candidates]
    for i, gen in enumerate(options[1:]):
        check_generation_config(gen, f"summarizer.causal.decoding_candidates[{i}]")
    return options


def choose_decoding(folder, tokenizer, rows: list[dict], spec: dict, settings: CausalSettings, device) -> dict:
    """Score the chosen checkpoint with each decoding option on the selection split and keep the best
    (eligible, highest ``selection_metric``; ties keep the earlier, cheaper option) in its
    ``generation_config.json``, which prediction and the server read."""
    import time

    from transformers import AutoModelForCausalLM

    from vecflow.summary.loop import eligible

    metric = settings.selection_metric
    model = AutoModelForCausalLM.from_pretrained(folder).to(device).eval()
    results, chosen = [], None
    for i, gen in enumerate(decoding_settings(settings)):
        config = causal_generation_config(gen, tokenizer)
        started = time.time()
        scores, _ = validate(model, tokenizer, rows, spec, config, settings, device)
        scores.pop("per_sample", None)
        ok = eligible(scores, settings.loop_settings())
        results.append({"generation": gen, metric: scores[metric], "eligible": ok,
                        "mean_pred_words": scores["mean_pred_words"], "length_ratio": scores["length_ratio"],
                        "seconds": round(time.time() - started, 1)})
        print(f"[vecflow] decoding {gen}: {metric} {scores[metric]:.4f}, {scores['mean_pred_words']:.1f} words "
              f"({results[-1]['seconds']} s){'' if ok else ' (not eligible)'}", flush=True)
        if ok and (chosen is None or scores[metric] > results[chosen][metric]):
            chosen = i
    chosen = 0 if chosen is None else chosen
    causal_generation_config(results[chosen]["generation"], tokenizer).save_pretrained(folder)
    return {"decoding": {"metric": metric, "candidates": results, "chosen": chosen,
                         "generation": results[chosen]["generation"]}}


def train_causal(train_path, val_path, base_dir, settings: CausalSettings | dict, out_dir) -> dict:
    """Fine-tune on ``train_path``, select on ``val_path`` (the selection split); returns the summary.
    ``settings`` as a dict (a direct call) is validated here."""
    from vecflow.core.devices import pick_device
    from vecflow.core import distributed

    settings = settings if isinstance(settings, CausalSettings) else CausalSettings.parse(settings)
    check_generation_config(settings.generation, "summarizer.causal.generation")
    out_dir = Path(out_dir)
    seed_everything(settings.seed)
    train_rows, val_rows = load_dialogues(train_path), load_dialogues(val_path)
    device = distributed.setup(pick_device(settings.device))  # this rank's, under torchrun
    spec = spec_for(settings, train_rows)
    if settings.decoding_candidates:
        decoding_settings(settings)  # a bad candidate fails now, not after the training budget is spent
    fingerprint = run_fingerprint(settings.received, [train_path, val_path], base_dir)
    resume = load_resume_state(partial_dir(out_dir), fingerprint)
    model, tokenizer = load_base(partial_dir(out_dir) / "last" if resume else base_dir)
    lora = settings.lora
    train_model = apply_lora(model, lora) if lora.enabled else model
    train_model.to(device)
    generation_config = causal_generation_config(settings.generation, tokenizer)
    model.generation_config = generation_config
    features = tokenize_examples(train_rows, tokenizer, spec)
    print(f"[vecflow] {len(features)} examples, mean {sum(len(f['input_ids']) for f in features) / len(features):.0f} "
          f"tokens ({sum(sum(1 for x in f['labels'] if x != -100) for f in features) / len(features):.0f} "
          f"in the loss); system message: {spec['system_message'] or '(vecflow default)'}", flush=True)

    def validate_model(model_now):
        return validate(model_now, tokenizer, val_rows, spec, generation_config, settings, device)

    saved = MergedOnSave(train_model) if lora.enabled else train_model
    loop = Loop(model=train_model, tokenizer=tokenizer, features=features,
                collator=CausalCollator(tokenizer.pad_token_id), validate=validate_model,
                settings=settings.loop_settings(), out_dir=out_dir, fingerprint=fingerprint, spec=spec,
                device=device, run_name="causal", resume=resume, forward=loss_on_labels, record=settings.received)
    if lora.enabled:
        loop.saved_model = saved
    if settings.decoding_candidates:
        loop.before_publish = lambda folder: choose_decoding(folder, tokenizer, val_rows, spec, settings, device)
    summary = loop.run()
    summary["lora"] = lora.enabled
    return summary


# ------------------------------------------------------------------------------------------------- CLI
def main_train(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow train-causal", description=__doc__.split("\n")[0])
    parser.add_argument("--train", required=True, help="dialogues JSONL to train on (first summary = target)")
    parser.add_argument("--val", required=True, help="selection dialogues JSONL (checkpoints are chosen on it)")
    parser.add_argument("--base", required=True, help="HF causal-LM folder with a chat template")
    parser.add_argument("--settings", required=True, type=CausalSettings.from_json,
                        help="the summarizer settings (causal): vecflow.summary.settings.CausalSettings")
    parser.add_argument("--out", required=True, help="output model folder (DIR.partial/ holds resume state)")
    args = parser.parse_args(argv)
    summary = train_causal(args.train, args.val, args.base, args.settings, args.out)
    best = "none eligible" if summary["best_score"] is None else f"{summary['best_score']:.4f}"
    print(f"[vecflow] best step {summary['best_step']} of {summary['steps']} ({summary['samples_seen']} samples, "
          f"{summary['train_minutes']:.1f} min): selection {summary['selection_metric']} {best} -> {args.out}",
          flush=True)
    return 0


__all__ = ["chat_messages", "main_train", "train_causal", "tokenize_examples"]
