"""ELM training (``vecflow train-elm``): the adapter, then (optionally) the adapter with the LM, on the shared
budgeted loop of the summarizer families (``vecflow.summary.loop``).

As in the ELM paper (Tennenholtz et al. 2024) training has two stages, each with its share of the budget
(``adapter_share`` of ``max_minutes``, or of ``epochs`` without a budget):

1. the adapter alone, the LM frozen (AdamW at ``learning_rate``);
2. with ``lm_training: lora`` (peft) or ``full``, the adapter and the LM together (``lm_learning_rate`` for the
   LM, ``learning_rate`` for the adapter), starting from stage 1's published adapter.

Every summary row of the training split is used (``max_train_samples``: 0), in length-grouped, seeded batches;
the warmup-stable-decay schedule is planned from the measured throughput. The selection split is scored by
generation (ROUGE, and BERTScore F1 with ``--bertscore-model``) at ``evals`` points per stage, and a checkpoint
is eligible only if its outputs depend on the embedding (distinct outputs, positive own-vs-shuffled margin:
the gate of the summarizers). The output folder holds ``adapter.safetensors`` + ``adapter_config.json`` and,
when the LM was tuned, ``lm/`` (LoRA merged in, so serving needs no peft); ``summary.json`` and
``history.jsonl`` describe both stages.

The retrieval-augmented variant (``retrieval_k`` > 0) lists the summaries of the k nearest training dialogues in
the prompt (a training row never sees its own). ``train_elm(...)`` is also the objective of the Optuna study
(``vecflow.hpo.elm_worker``): a trial reports each evaluation and is pruned on it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vecflow.core.devices import pick_device
from vecflow.core.errors import VecflowError
from vecflow.core.io import read_json, write_json
from vecflow.core.settings import seed_everything
from vecflow.summary.settings import ElmTrainSettings, LoraSettings
from vecflow.data.dialogues import seeded_subset
from vecflow.data.synthesis import SynthesisRow
from vecflow.summary.elm import (
    PLACEHOLDER,
    Batch,
    Example,
    adapter_config,
    attach_neighbours,
    build_adapter,
    generate_texts,
    group_by_source,
    inputs_embeds_for,
    load_frozen_lm,
    load_split,
    make_example,
    pad_id,
    read_params,
)
from vecflow.summary.generation import check_generation_config
from vecflow.summary.elm_losses import LossWeights, combine_losses


def check_encoder_dim(encoder_dir, embed_dim: int) -> None:
    """The encoder that serves requests must produce the data's embedding dimension."""
    config = read_json(Path(encoder_dir) / "config.json")
    dim = config.get("hidden_size")
    if dim is not None and int(dim) != int(embed_dim):
        raise VecflowError(
            f"{encoder_dir}: encoder dimension {dim} differs from the data's embedding dimension {embed_dim}"
        )


@torch.no_grad()
def lm_space_targets(lm, examples: list[Example]) -> torch.Tensor:
    """The target text as the LM would read it: mean of the frozen LM's input embeddings of its tokens (N, H).

    The contrastive and text-drift losses compare the mean soft token with this, in the LM's own input space,
    so nothing trainable sits between the loss and what the LM reads.
    """
    table = lm.get_input_embeddings().weight
    rows = []
    for ex in examples:
        ids = ex.target[:-1] or ex.target  # without the closing eos
        rows.append(table[torch.tensor(ids, device=table.device)].float().mean(0))
    return torch.stack(rows).cpu()


def lm_loss(lm, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on the labelled positions; the LM head runs only there (the vocabulary-wide
    logits of the prompt positions are never built). Same value as ``lm(..., labels=labels).loss``."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    body, head = getattr(base, "model", None), base.get_output_embeddings()
    if body is None or head is None or getattr(base.config, "final_logit_softcapping", None):
        return lm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels).loss
    hidden = body(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != -100
    return F.cross_entropy(head(hidden[:, :-1][keep]).float(), targets[keep])


def train_step(lm, adapter, batch: Batch, vectors, target_vectors, weights: LossWeights):
    """Loss for one batch: the LM's cross-entropy on the target tokens plus the weighted guards."""
    inputs_embeds, soft = inputs_embeds_for(lm, adapter, batch, vectors)
    loss = lm_loss(lm, inputs_embeds, batch.attention_mask, batch.labels)
    return combine_losses(loss, adapter.pool(soft), target_vectors, target_vectors, weights)


class ElmModel(nn.Module):
    """The adapter and the LM as one module, so that the shared loop trains, evaluates and saves it.

    ``save_pretrained(folder)`` writes the adapter (``adapter.safetensors`` + ``adapter_config.json``) and, once
    the LM is being tuned, the LM (LoRA merged into a copy) and its tokenizer as ``folder/lm``.
    """

    def __init__(self, lm, adapter, weights: LossWeights, config: dict, tokenizer, tunes_lm: bool):
        super().__init__()
        self.lm, self.adapter, self.weights = lm, adapter, weights
        self.config, self.tokenizer, self.tunes_lm = config, tokenizer, tunes_lm
        self.parts: dict[str, float] = {}

    def forward(self, input_ids, attention_mask, labels, soft_start, vectors, target_vectors=None):
        batch = Batch(input_ids, attention_mask, labels, soft_start)
        loss, self.parts = train_step(self.lm, self.adapter, batch, vectors, target_vectors, self.weights)
        return loss

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.tunes_lm:
            self.lm.eval()  # a frozen LM stays in eval mode (no dropout)
        return self

    def save_pretrained(self, folder) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        state = {k: v.detach().cpu().contiguous() for k, v in self.adapter.state_dict().items()}
        save_file(state, str(folder / "adapter.safetensors"))
        write_json(folder / "adapter_config.json", self.config)
        if self.tunes_lm:
            import copy

            lm = copy.deepcopy(self.lm)
            lm = lm.merge_and_unload() if hasattr(lm, "merge_and_unload") else lm
            lm.save_pretrained(folder / "lm")
            self.tokenizer.save_pretrained(folder / "lm")


class _NoTokenizer:
    """The loop saves a tokenizer beside each checkpoint; an adapter folder has none (the LM's is in ``lm/``)."""

    def save_pretrained(self, folder) -> None:
        return None


class ElmCollator:
    """Right-padded batches with each row's input vector (and text-drift target) for the ELM's forward."""

    def __init__(self, soft_tokens: int, pad: int, vectors: torch.Tensor, target_vectors: torch.Tensor | None):
        self.soft_tokens, self.pad, self.vectors, self.target_vectors = soft_tokens, pad, vectors, target_vectors

    def __call__(self, features: list[dict]):
        from transformers import BatchEncoding

        from vecflow.summary.elm import collate

        batch = collate([f["example"] for f in features], self.soft_tokens, self.pad, "right")
        index = [f["row"] for f in features]
        out = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": batch.labels,
               "soft_start": batch.soft_start, "vectors": self.vectors[index]}
        if self.target_vectors is not None:
            out["target_vectors"] = self.target_vectors[index]
        return BatchEncoding(out)


def features_for(examples: list[Example], soft_tokens: int) -> list[dict]:
    """The loop's features: ``input_ids`` / ``labels`` give each row's length for length grouping."""
    out = []
    for row, ex in enumerate(examples):
        length = len(ex.prefix) + soft_tokens + len(ex.suffix) + len(ex.target)
        out.append({"input_ids": range(length), "labels": range(0), "example": ex, "row": row})
    return out


def score_selection(predictions: list[str], references: list[list[str]], bertscorer,
                    settings: ElmTrainSettings) -> dict:
    """What each evaluation selects on: ROUGE, length, input dependence (``selection_scores``), plus BERTScore
    F1 (mean and per sample) when a scorer is given."""
    from vecflow.summary import scoring

    scores = scoring.selection_scores(predictions, references)
    if bertscorer is not None:
        bert = scoring.bertscore(bertscorer, predictions, references, settings.bertscore_batch_size)
        scores["bertscore_f1"] = bert["f1"]
        scores["per_sample"]["bertscore_f1"] = bert["per_sample_f1"]
    return scores


def load_bertscorer(bertscore_model, device: torch.device, settings: ElmTrainSettings):
    from vecflow.summary import scoring

    if bertscore_model is None:
        return None
    layers = settings.bertscore_num_layers
    model_dir = scoring.check_bertscore_model(Path(bertscore_model), layers)
    return scoring.load_bertscorer(str(model_dir), layers, device.type)


def stage_plan(settings: ElmTrainSettings) -> list[dict]:
    """The stages to run: [{name, tunes_lm, max_minutes, epochs}] from lm_training and adapter_share."""
    mode = settings.lm_training
    minutes, epochs = float(settings.max_minutes), settings.epochs
    share = float(settings.adapter_share)
    if mode == "none" or share >= 1.0:
        return [{"name": "adapter", "tunes_lm": False, "max_minutes": minutes, "epochs": epochs}]
    first_epochs = max(1, round(epochs * share)) if share > 0 else 0
    stages = []
    if share > 0:
        stages.append({"name": "adapter", "tunes_lm": False, "max_minutes": minutes * share, "epochs": first_epochs})
    stages.append({"name": f"adapter+lm ({mode})", "tunes_lm": True, "max_minutes": minutes * (1 - share),
                   "epochs": max(1, epochs - first_epochs)})
    return stages


def lm_lr_scale(settings: ElmTrainSettings):
    """The LM's parameters train at ``lm_learning_rate``, the adapter's at ``learning_rate``."""
    ratio = float(settings.lm_learning_rate) / float(settings.learning_rate)
    return lambda name: 1.0 if name.startswith("adapter.") else ratio


def tune_lm(lm, settings: ElmTrainSettings):
    """Stage 2's LM: LoRA adapters (peft) on the attention projections, or every weight (``full``)."""
    if settings.lm_training == "lora":
        from vecflow.summary.causal import apply_lora

        return apply_lora(lm, LoraSettings(enabled=True, r=settings.lora_r, alpha=settings.lora_alpha, dropout=0.0))
    for param in lm.parameters():
        param.requires_grad_(True)
    return lm


def train_settings(settings: ElmTrainSettings | dict, params_path=None) -> ElmTrainSettings:
    """The run's settings: validated (a dict: a study's trial or a direct call), with a study's best parameters
    (hpo-best's best_params.yaml) laid over them, and the generation flags checked (the schema cannot say)."""
    run = settings if isinstance(settings, ElmTrainSettings) else ElmTrainSettings.parse(settings)
    if params_path is not None:
        run = run.with_params(read_params(params_path))
    check_generation_config(run.generation, "elm.generation")
    return run


def train_elm(
    settings: ElmTrainSettings | dict, data_dir, lm_dir, encoder_dir, out_dir, trial=None, bertscore_model=None,
    params_path=None,
) -> float:
    """Train (both stages), write the adapter folder; returns the published checkpoint's selection score.

    With an Optuna ``trial`` every evaluation is reported (step numbers continue across stages) and a pruned
    trial raises ``optuna.TrialPruned`` (``out_dir`` is then left untouched). ``settings`` as a dict (a study's
    trial) is validated here.
    """
    from vecflow.summary.loop import Loop, partial_dir

    settings = train_settings(settings, params_path)
    seed = settings.seed
    seed_everything(seed)
    out_dir = Path(out_dir)
    stages = stage_plan(settings)
    device = pick_device(settings.device)
    lm, tokenizer = load_frozen_lm(lm_dir, device)
    train_rows, train_vectors = load_split(data_dir, "train")
    val_rows, val_vectors = load_split(data_dir, settings.selection_split)
    if train_vectors.shape[1] != val_vectors.shape[1]:
        raise VecflowError(f"{data_dir}: train and val embeddings differ in dimension")
    check_encoder_dim(encoder_dir, train_vectors.shape[1])
    train_rows = seeded_subset(train_rows, settings.max_train_samples or None, seed, "elm-train")
    val_sources = group_by_source(val_rows)[: settings.val_samples]
    val_sources = attach_neighbours(val_sources, data_dir, val_vectors, settings.neighbours,
                                    settings.retrieval_max_tokens, tokenizer)
    examples, vectors = train_examples(tokenizer, train_rows, train_vectors, data_dir, settings)
    weights = LossWeights.from_settings(settings)
    target_vectors = lm_space_targets(lm, examples) if weights.text_drift > 0 or weights.contrastive > 0 else None
    config = adapter_config(settings, vectors.shape[1], int(lm.get_input_embeddings().embedding_dim))
    config |= {
        "lm": Path(lm_dir).name, "placeholder": PLACEHOLDER,
        "prompt": "chat template, one user turn; <EMB> replaced by the soft tokens; answer = target + eos",
        "templates": sorted({r.template for r in train_rows}),
        "max_target_length": settings.max_target_length, "generation": settings.generation,
        "retrieval_k": settings.neighbours, "retrieval_max_tokens": settings.retrieval_max_tokens,
        "lm_training": settings.lm_training,
    }
    adapter = build_adapter(config).to(device)
    bertscorer = load_bertscorer(bertscore_model, device, settings)
    features = features_for(examples, adapter.soft_tokens)
    collator = ElmCollator(adapter.soft_tokens, pad_id(tokenizer), vectors, target_vectors)
    print(f"[vecflow] train-elm: {len(examples)} train rows (mean {sum(len(f['input_ids']) for f in features) / len(features):.0f} "
          f"tokens), {len(val_sources)} selection sources, {sum(p.numel() for p in adapter.parameters())} adapter "
          f"parameters; stages: {', '.join(s['name'] for s in stages)}", flush=True)

    step_offset, summaries = 0, []
    for number, stage in enumerate(stages):
        last = number == len(stages) - 1
        stage_dir = out_dir if last else out_dir.with_name(f"{out_dir.name}.stage{number + 1}")
        if stage["tunes_lm"]:
            lm = tune_lm(lm, settings)
        model = ElmModel(lm, adapter, weights, config, tokenizer, stage["tunes_lm"]).to(device)
        run = settings.loop_settings(stage["max_minutes"], stage["epochs"])

        def validate(model_now):
            texts = generate_texts(model_now.lm, tokenizer, model_now.adapter, val_sources, val_vectors,
                                   settings.generation, settings.eval_batch_size)
            references = [s.references for s in val_sources]
            examples_out = [{"id": s.source_id, "prediction": t, "reference": s.references[0]}
                            for s, t in zip(val_sources, texts)][:2]
            return score_selection(texts, references, bertscorer, settings), examples_out

        shutil.rmtree(partial_dir(stage_dir), ignore_errors=True)  # an ELM run starts afresh (no resume)
        loop = Loop(model=model, tokenizer=_NoTokenizer(), features=features, collator=collator, validate=validate,
                    settings=run, out_dir=stage_dir, fingerprint="", spec=None, device=device,
                    run_name=(settings.run_name or f"elm-{out_dir.name}") + f"-stage{number + 1}", resume=None,
                    forward=lambda m, b: m(**b), lr_scale=lm_lr_scale(settings) if stage["tunes_lm"] else None,
                    record={**settings.received, **run.model_dump()})
        if trial is not None:
            loop.after_evaluate = trial_reporter(trial, step_offset)
        previous = summaries[:]
        if last and previous:
            loop.before_publish = lambda folder, previous=previous, earlier=stage_dirs(out_dir, number): (
                merge_stages(folder, previous, earlier))
        try:
            summary = loop.run()
        except BaseException:  # a pruned trial, an error, an interrupt: no partial or stage folder is left
            for folder in [partial_dir(stage_dir), *stage_dirs(out_dir, number)]:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        summaries.append({"stage": stage["name"], **summary})
        step_offset += int(summary["steps"])
        if not last:  # the next stage starts from this stage's published adapter
            from safetensors.torch import load_file

            adapter.load_state_dict(load_file(str(stage_dir / "adapter.safetensors")))
    for folder in stage_dirs(out_dir, len(stages) - 1):
        shutil.rmtree(folder, ignore_errors=True)
    return published_score(out_dir, summaries[-1])


def published_score(out_dir: Path, summary: dict) -> float:
    """The published checkpoint's selection score; when no checkpoint passed the input-dependence gate (the
    summary says so), the last evaluation's score, so that a study still sees how far it got."""
    if summary.get("best_score") is not None:
        return float(summary["best_score"])
    from vecflow.core.io import read_jsonl

    key = f"val/{summary['selection_metric']}"
    scored = [r[key] for r in read_jsonl(out_dir / "history.jsonl") if key in r]
    return float(scored[-1]) if scored else float("-inf")


def stage_dirs(out_dir: Path, count: int) -> list[Path]:
    return [out_dir.with_name(f"{out_dir.name}.stage{i + 1}") for i in range(count)]


def merge_stages(folder: Path, previous: list[dict], earlier_dirs: list[Path]) -> dict:
    """Before the last stage publishes: the earlier stages' histories (``stage1_history.jsonl``, ...) are kept
    beside its own, and the summary lists every stage."""
    for i, stage_dir in enumerate(earlier_dirs, 1):
        if (stage_dir / "history.jsonl").exists():
            shutil.copy2(stage_dir / "history.jsonl", folder / f"stage{i}_history.jsonl")
    return {"stages": previous}


def trial_reporter(trial, step_offset: int):
    """The loop's ``after_evaluate``: report the score to Optuna and stop a trial it prunes."""

    def report(step: int, score: float) -> None:
        import optuna

        trial.report(score, step_offset + step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step_offset + step} (value {score:.4f})")

    return report


def train_examples(tokenizer, rows: list[SynthesisRow], all_vectors: torch.Tensor, data_dir,
                   settings: ElmTrainSettings):
    """Tokenised examples (with their retrieved neighbours for the retrieval-augmented ELM) and input vectors."""
    from vecflow.summary.elm import Source

    sources = [Source(r.source_id, r.template, r.embedding_index, [r.target_text]) for r in rows]
    sources = attach_neighbours(sources, data_dir, all_vectors, settings.neighbours, settings.retrieval_max_tokens,
                                tokenizer, exclude_self=True)
    max_len = settings.max_target_length
    examples = [make_example(tokenizer, s.template, s.references[0], max_len, s.neighbours) for s in sources]
    return examples, all_vectors[[r.embedding_index for r in rows]]


# ------------------------------------------------------------------------------------------------- CLI


def main_train(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow train-elm", description="Train the embedding-to-text adapter.")
    parser.add_argument("--data-dir", required=True, help="folder with {train,val}_synthesis.jsonl + embeddings")
    parser.add_argument("--lm", required=True, help="causal LM folder")
    parser.add_argument("--encoder", required=True, help="sentence encoder folder (its dimension is checked)")
    parser.add_argument("--settings", required=True, type=ElmTrainSettings.from_json,
                        help="the elm section, the variant and the selection split (ElmTrainSettings), as JSON")
    parser.add_argument("--params", default=None, help="best_params.yaml from hpo-best; overrides settings")
    parser.add_argument("--bertscore-model", default=None, help="also score the selection split with BERTScore F1")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    settings = train_settings(args.settings, args.params)  # the study's values laid over the settings
    value = train_elm(
        settings,
        args.data_dir,
        args.lm,
        args.encoder,
        args.out,
        bertscore_model=args.bertscore_model,
    )
    print(f"[vecflow] train-elm: selection score {value:.4f} -> {args.out}", flush=True)
    print(json.dumps({"selection_score": value}), flush=True)
    return 0
