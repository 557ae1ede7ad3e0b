"""ELM adapter training (``vecflow train-elm``): only the adapter trains (AdamW); the LM is frozen.

The model, prompt and generation are ``vecflow.summary.elm`` (what serving and prediction import); the loss
terms are ``vecflow.summary.elm_losses``. The target text follows the prompt as the assistant's answer plus eos,
and only those tokens carry labels (everything else is -100).

Validation generates text (``generate``, never teacher-forced logits) for ``val_samples`` sources of the
selection split and scores it with BERTScore F1 (``--bertscore-model``) or ROUGE-L. ``train_elm(...)`` is also
the objective that ``vecflow.hpo.study`` optimises.
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vecflow.core.devices import pick_device
from vecflow.core.errors import VecflowError
from vecflow.core.io import atomic_dir, read_json, write_json
from vecflow.core.settings import seed_everything, settings_arg
from vecflow.core.tracking import Tracker
from vecflow.data.dialogues import seeded_subset
from vecflow.data.synthesis import SynthesisRow
from vecflow.summary.elm import (
    PLACEHOLDER,
    Batch,
    Example,
    adapter_config,
    build_adapter,
    collate,
    generate_texts,
    group_by_source,
    inputs_embeds_for,
    load_frozen_lm,
    load_split,
    make_example,
    pad_id,
    resolve_settings,
)
from vecflow.summary.elm_losses import LossWeights, combine_losses


def score_texts(
    predictions: list[str],
    references: list[list[str]],
    bertscore_model: str | Path | None,
    device: torch.device,
    settings: dict,
) -> tuple[str, float]:
    """(metric name, mean): BERTScore F1 on a local model folder, else ROUGE-L F; both as ``vecflow score`` does."""
    from vecflow.summary import scoring

    if bertscore_model is None:
        return "rougeL", scoring.rouge_scores(predictions, references)["mean"]["rougeL"]["f"]
    model_dir = Path(bertscore_model)
    layers = settings.get("bertscore_num_layers") or _num_layers(model_dir)
    model_dir = scoring.check_bertscore_model(model_dir, layers)
    scorer = scoring.load_bertscorer(str(model_dir), layers, device.type)
    result = scoring.bertscore(scorer, predictions, references, int(settings.get("bertscore_batch_size", 16)))
    return "bertscore_f1", result["f1"]


def _num_layers(model_dir: Path) -> int:
    """All layers of a local BERTScore backbone unless ``bertscore_num_layers`` says otherwise."""
    return int(read_json(model_dir / "config.json").get("num_hidden_layers", 1))


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


def train_step(lm, adapter, batch: Batch, vectors, target_vectors, weights: LossWeights):
    """Loss for one batch: the LM's cross-entropy on the target tokens plus the weighted guards."""
    inputs_embeds, soft = inputs_embeds_for(lm, adapter, batch, vectors)
    output = lm(inputs_embeds=inputs_embeds, attention_mask=batch.attention_mask, labels=batch.labels)
    return combine_losses(output.loss, adapter.pool(soft), target_vectors, target_vectors, weights)


@dataclass
class TrainData:
    """Tokenised training examples, their input embeddings and (for text drift) target-text embeddings."""

    examples: list[Example]
    vectors: torch.Tensor  # (N, D)
    target_vectors: torch.Tensor | None  # (N, H): the targets in the LM's input space (lm_space_targets)
    pad: int


def run_epoch(
    lm, adapter, optimizer, data: TrainData, settings: dict, epoch: int, tracker: Tracker, step: int
) -> tuple[dict, int]:
    """One pass over the training data in a seeded order; logs every batch. Returns (mean of each term, step)."""
    weights = LossWeights.from_settings(settings)
    device = next(adapter.parameters()).device
    order = torch.randperm(len(data.examples), generator=torch.Generator().manual_seed(int(settings["seed"]) + epoch))
    batch_size, accum = int(settings["batch_size"]), int(settings["grad_accum"])
    starts = list(range(0, len(order), batch_size))
    adapter.train()
    totals: dict[str, float] = {}
    for i, start in enumerate(starts):
        idx = order[start : start + batch_size]
        batch = collate([data.examples[j] for j in idx], adapter.soft_tokens, data.pad, "right").to(device)
        targets = None if data.target_vectors is None else data.target_vectors[idx].to(device)
        tic = time.perf_counter()
        loss, parts = train_step(lm, adapter, batch, data.vectors[idx].to(device), targets, weights)
        (loss / accum).backward()
        if (i + 1) % accum == 0 or i == len(starts) - 1:
            nn.utils.clip_grad_norm_(adapter.parameters(), float(settings["max_grad_norm"]))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        step += 1
        tracker.log({"epoch": epoch, "step": step, **parts, "time/step_s": time.perf_counter() - tic}, step=step)
        for key, value in parts.items():
            totals[key] = totals.get(key, 0.0) + value
    return {f"train/{k}": v / len(starts) for k, v in totals.items()}, step


def prepare_train_data(
    tokenizer, rows: list[SynthesisRow], all_vectors: torch.Tensor, lm, settings: dict
) -> TrainData:
    examples = [make_example(tokenizer, r.template, r.target_text, int(settings["max_target_length"])) for r in rows]
    vectors = all_vectors[[r.embedding_index for r in rows]]
    target_vectors = None
    if float(settings["text_drift_weight"]) > 0 or float(settings["contrastive_weight"]) > 0:
        target_vectors = lm_space_targets(lm, examples)
    return TrainData(examples, vectors, target_vectors, pad_id(tokenizer))


def train_elm(
    settings: dict, data_dir, lm_dir, encoder_dir, out_dir, trial=None, bertscore_model=None, params_path=None
) -> float:
    """Train an adapter, validate by generation after each epoch, write the adapter folder; returns the best score.

    With an Optuna ``trial`` each epoch's score is reported and a pruned trial raises ``optuna.TrialPruned``
    (``out_dir`` is then left untouched).
    """
    settings = resolve_settings(settings, params_path)
    seed = int(settings.get("seed", 0))
    settings["seed"] = seed
    seed_everything(seed)
    device = pick_device(settings.get("device", "auto"))
    lm, tokenizer = load_frozen_lm(lm_dir, device)
    train_rows, train_vectors = load_split(data_dir, "train")
    val_rows, val_vectors = load_split(data_dir, str(settings["selection_split"]))
    if train_vectors.shape[1] != val_vectors.shape[1]:
        raise VecflowError(f"{data_dir}: train and val embeddings differ in dimension")
    check_encoder_dim(encoder_dir, train_vectors.shape[1])
    train_rows = seeded_subset(train_rows, int(settings["max_train_samples"]) or None, seed, "elm-train")
    val_sources = group_by_source(val_rows)[: int(settings["val_samples"])]
    data = prepare_train_data(tokenizer, train_rows, train_vectors, lm, settings)
    config = adapter_config(settings, data.vectors.shape[1], int(lm.get_input_embeddings().embedding_dim))
    adapter = build_adapter(config).to(device)
    optimizer = torch.optim.AdamW(
        adapter.parameters(), lr=float(settings["learning_rate"]), weight_decay=float(settings["weight_decay"])
    )
    print(
        f"[vecflow] train-elm: {len(data.examples)} train rows, {len(val_sources)} val sources, "
        f"{sum(p.numel() for p in adapter.parameters())} adapter parameters",
        flush=True,
    )

    with atomic_dir(out_dir) as tmp:
        tracker = Tracker(
            tmp / "history.jsonl",
            run_name=settings.get("run_name", f"elm-{Path(out_dir).name}"),
            config=settings,
            backends=settings.get("tracking", {}),
        )
        best = {"value": float("-inf"), "epoch": 0, "state": None}
        step, epochs = 0, []
        for epoch in range(1, int(settings["epochs"]) + 1):
            train_means, step = run_epoch(lm, adapter, optimizer, data, settings, epoch, tracker, step)
            predictions = generate_texts(
                lm, tokenizer, adapter, val_sources, val_vectors, settings["generation"], int(settings["batch_size"])
            )
            metric, value = score_texts(
                predictions, [s.references for s in val_sources], bertscore_model, device, settings
            )
            record = {
                "epoch": epoch,
                "step": step,
                **train_means,
                f"val/{metric}": value,
                "val/example": predictions[0] if predictions else "",
            }
            tracker.log(record, step=step)
            epochs.append({k: v for k, v in record.items() if k != "val/example"})
            if best["state"] is None or value > best["value"]:
                best = {"value": value, "epoch": epoch, "state": copy.deepcopy(adapter.state_dict())}
            if trial is not None:
                _report_to_trial(trial, value, epoch, tracker)
        summary = {
            "val_metric": metric,
            "best_value": best["value"],
            "best_epoch": best["epoch"],
            "epochs": epochs,
            "train_rows": len(data.examples),
            "val_sources": len(val_sources),
        }
        write_adapter(tmp, best["state"], config, settings, lm_dir, train_rows)
        write_json(tmp / "summary.json", summary)
        tracker.finish({k: v for k, v in summary.items() if k != "epochs"})
    return best["value"]


def _report_to_trial(trial, value: float, epoch: int, tracker: Tracker) -> None:
    import optuna

    trial.report(value, epoch)
    if trial.should_prune():
        tracker.finish({"pruned_at_epoch": epoch})
        raise optuna.TrialPruned(f"pruned at epoch {epoch} (value {value:.4f})")


def write_adapter(folder: Path, state: dict, config: dict, settings: dict, lm_dir, train_rows) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(folder / "adapter.safetensors"))
    templates = sorted({r.template for r in train_rows})
    write_json(
        folder / "adapter_config.json",
        {
            **config,
            "lm": Path(lm_dir).name,
            "placeholder": PLACEHOLDER,
            "prompt": "chat template, one user turn; <EMB> replaced by the soft tokens; answer = target + eos",
            "templates": templates,
            "max_target_length": int(settings["max_target_length"]),
            "generation": settings["generation"],
        },
    )


# ------------------------------------------------------------------------------------------------- CLI


def main_train(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow train-elm", description="Train the embedding-to-text adapter.")
    parser.add_argument("--data-dir", required=True, help="folder with {train,val}_synthesis.jsonl + embeddings")
    parser.add_argument("--lm", required=True, help="causal LM folder (frozen)")
    parser.add_argument("--encoder", required=True, help="sentence encoder folder (text-drift targets)")
    parser.add_argument("--settings", required=True, type=settings_arg, help="the elm section as JSON")
    parser.add_argument("--params", default=None, help="best_params.yaml from hpo-best; overrides settings")
    parser.add_argument("--bertscore-model", default=None, help="score validation with BERTScore F1 (else ROUGE-L)")
    parser.add_argument("--out", required=True, help="output folder")
    args = parser.parse_args(argv)
    value = train_elm(
        args.settings,
        args.data_dir,
        args.lm,
        args.encoder,
        args.out,
        bertscore_model=args.bertscore_model,
        params_path=args.params,
    )
    print(f"[vecflow] train-elm: best validation score {value:.4f} -> {args.out}", flush=True)
    return 0


