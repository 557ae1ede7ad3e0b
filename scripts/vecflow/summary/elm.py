"""ELM adapter: a sentence embedding becomes K soft tokens that a frozen causal LM reads as part of its prompt.

    embedding (D) -> LayerNorm -> MLP (D -> hidden_dim -> K*H) + residual_scale * Linear(D -> K*H)
                  -> K soft tokens of the LM's hidden size H

The prompt is the LM's chat template applied to one user message, the synthesis row's
``input_prompt_template``; its ``<EMB>`` placeholder is replaced by the K soft tokens, spliced into
``inputs_embeds`` at that position. The target text follows as the assistant's answer plus eos, and only those
tokens carry labels (everything else is -100). Only the adapter trains (AdamW); the LM is frozen.

Validation generates text (``generate``, never teacher-forced logits) for ``val_samples`` val sources and scores
it with BERTScore F1 (``--bertscore-model``) or ROUGE-L.

Commands: ``vecflow train-elm`` (``main_train``) and ``vecflow predict-elm`` (``main_predict``);
``train_elm(...)`` is also the objective that ``vecflow.hpo.study`` optimises.
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vecflow.core.devices import pick_device
from vecflow.summary.elm_losses import LossWeights, combine_losses
from vecflow.core.errors import VecflowError, where
from vecflow.summary.generation import check_generation_config
from vecflow.core.io import atomic_dir, iter_jsonl, load_tensors, read_json, require_fields, write_json, write_jsonl
from vecflow.core.io import check_embeddings
from vecflow.core.settings import seed_everything, settings_arg
from vecflow.core.tracking import Tracker

PLACEHOLDER = "<EMB>"
SPLITS = ("train", "val")
ROW_FIELDS = {
    "task_type": str,
    "input_prompt_template": str,
    "embedding_index": int,
    "target_text": str,
    "source_id": str,
}
# settings keys with their defaults; a --params YAML (from hpo-best) may override any of them
DEFAULTS = {
    "soft_tokens": 4,
    "hidden_dim": 256,
    "dropout": 0.1,
    "residual_scale": 0.1,
    "epochs": 1,
    "batch_size": 4,
    "grad_accum": 1,
    "learning_rate": 1.0e-3,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_target_length": 48,
    "max_train_samples": 0,
    "val_samples": 6,
    "contrastive_weight": 0.0,
    "contrastive_temperature": 0.07,
    "text_drift_weight": 0.0,
    "text_drift_target_similarity": 0.75,
    "encode_batch_size": 32,
    "generation": {"num_beams": 1, "max_new_tokens": 24},
    "selection_split": "val",  # epochs (and HPO trials) are chosen on it; the pipeline passes 'selection'
}
POSITIVE_INTS = ("soft_tokens", "hidden_dim", "epochs", "batch_size", "grad_accum", "max_target_length", "val_samples")


# ----------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class SynthesisRow:
    template: str
    embedding_index: int
    target_text: str
    source_id: str


def load_split(data_dir: str | Path, split: str) -> tuple[list[SynthesisRow], torch.Tensor]:
    """Rows of ``DIR/{split}_synthesis.jsonl`` and the matching ``DIR/{split}_embeddings.safetensors``."""
    data_dir = Path(data_dir)
    rows_path = data_dir / f"{split}_synthesis.jsonl"
    vectors_path = data_dir / f"{split}_embeddings.safetensors"
    embeddings = load_tensors(vectors_path, required=["embeddings"])["embeddings"]
    if embeddings.ndim != 2 or len(embeddings) == 0:
        raise VecflowError(f"{vectors_path}: tensor 'embeddings' must be N×D with N > 0, got {embeddings.shape}")
    check_embeddings(embeddings, vectors_path, tolerance=None)  # finite
    rows = [_parse_row(record, rows_path, lineno, len(embeddings)) for lineno, record in iter_jsonl(rows_path)]
    if not rows:
        raise VecflowError(f"{rows_path}: no rows")
    return rows, torch.from_numpy(embeddings).float()


def _parse_row(record: dict, path: Path, lineno: int, num_vectors: int) -> SynthesisRow:
    require_fields(record, ROW_FIELDS, path, lineno)
    if record["task_type"] != "summary":
        raise VecflowError(f"{where(path, lineno, 'task_type')}: expected 'summary', got '{record['task_type']}'")
    if record["input_prompt_template"].count(PLACEHOLDER) != 1:
        raise VecflowError(f"{where(path, lineno, 'input_prompt_template')}: must contain '{PLACEHOLDER}' exactly once")
    if not 0 <= record["embedding_index"] < num_vectors:
        raise VecflowError(
            f"{where(path, lineno, 'embedding_index')}: {record['embedding_index']} is outside 0..{num_vectors - 1}"
        )
    if not record["target_text"].strip():
        raise VecflowError(f"{where(path, lineno, 'target_text')}: empty")
    return SynthesisRow(
        record["input_prompt_template"], record["embedding_index"], record["target_text"], record["source_id"]
    )


def take_subset(rows: list, limit: int, seed: int) -> list:
    """A seeded random subset of ``limit`` rows kept in file order (``limit`` 0 = all rows)."""
    if not limit or limit >= len(rows):
        return list(rows)
    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


@dataclass(frozen=True)
class Source:
    """One embedded source (dialogue): the first row's template and vector, every row's target text."""

    source_id: str
    template: str
    embedding_index: int
    references: list[str]


def group_by_source(rows: list[SynthesisRow]) -> list[Source]:
    """One entry per distinct ``source_id``, in order of first appearance."""
    groups: dict[str, Source] = {}
    for row in rows:
        if row.source_id not in groups:
            groups[row.source_id] = Source(row.source_id, row.template, row.embedding_index, [])
        groups[row.source_id].references.append(row.target_text)
    return list(groups.values())


# ---------------------------------------------------------------------------------------------- model


class EmbeddingAdapter(nn.Module):
    """Maps a D-dim sentence embedding to K soft tokens of the LM's hidden size H.

    ``pool`` is the mean of the soft tokens, i.e. what the LM reads, with no trainable head in between (a head
    could absorb the contrastive and text-drift losses without changing the soft tokens); those losses compare it
    with the frozen LM's own input embeddings of the target text (``lm_space_targets``).
    """

    def __init__(
        self, embed_dim: int, lm_hidden: int, soft_tokens: int, hidden_dim: int, dropout: float, residual_scale: float
    ):
        super().__init__()
        self.soft_tokens, self.lm_hidden, self.residual_scale = soft_tokens, lm_hidden, residual_scale
        self.norm = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, soft_tokens * lm_hidden),
        )
        self.residual = nn.Linear(embed_dim, soft_tokens * lm_hidden)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        x = self.norm(embeddings)
        soft = self.mlp(x) + self.residual_scale * self.residual(x)
        return soft.view(len(embeddings), self.soft_tokens, self.lm_hidden)

    def pool(self, soft: torch.Tensor) -> torch.Tensor:
        return soft.mean(dim=1)


def adapter_config(settings: dict, embed_dim: int, lm_hidden: int) -> dict:
    return {
        "embed_dim": embed_dim,
        "lm_hidden": lm_hidden,
        "soft_tokens": int(settings["soft_tokens"]),
        "hidden_dim": int(settings["hidden_dim"]),
        "dropout": float(settings["dropout"]),
        "residual_scale": float(settings["residual_scale"]),
    }


def build_adapter(config: dict) -> EmbeddingAdapter:
    return EmbeddingAdapter(
        config["embed_dim"],
        config["lm_hidden"],
        config["soft_tokens"],
        config["hidden_dim"],
        config["dropout"],
        config["residual_scale"],
    )


def load_frozen_lm(lm_dir: str | Path, device: torch.device):
    """The causal LM and its tokenizer; every LM parameter is frozen and the LM stays in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm_dir = Path(lm_dir)
    if not (lm_dir / "config.json").exists():
        raise VecflowError(f"{lm_dir}: not an HF model folder (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    if tokenizer.chat_template is None:
        raise VecflowError(f"{lm_dir}: the tokenizer has no chat template")
    if tokenizer.eos_token_id is None:
        raise VecflowError(f"{lm_dir}: the tokenizer has no eos token")
    lm = AutoModelForCausalLM.from_pretrained(lm_dir).to(device).eval()
    for param in lm.parameters():
        param.requires_grad_(False)
    return lm, tokenizer


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


# -------------------------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class Example:
    """Token ids around the soft tokens: ``prefix <K soft tokens> suffix target``; target is empty to generate."""

    prefix: list[int]
    suffix: list[int]
    target: list[int]


SYSTEM_MESSAGE = (
    "You turn an embedded text into words. The user message holds the embedding of a text as special tokens; "
    "answer with exactly what is asked about that text, briefly, and refer to speakers as #Person1#, #Person2#, ..."
)


def prompt_ids(tokenizer, template: str) -> tuple[list[int], list[int]]:
    """The chat-formatted system + user turn (with the assistant header) split at ``<EMB>`` into two id lists.

    The system message is explicit: without one, templates such as SmolLM2's inject their default
    ("You are a helpful AI assistant named SmolLM..."), which the adapter's outputs then echo.
    """
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": template}],
        tokenize=False, add_generation_prompt=True,
    )
    before, after = text.split(PLACEHOLDER)
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    return encode(before), encode(after)


def make_example(tokenizer, template: str, target_text: str | None, max_target_length: int) -> Example:
    """The target is ``target_text`` truncated to ``max_target_length`` tokens, then eos."""
    prefix, suffix = prompt_ids(tokenizer, template)
    target = []
    if target_text is not None:
        target = tokenizer(target_text, add_special_tokens=False)["input_ids"][:max_target_length]
        target = target + [tokenizer.eos_token_id]
    return Example(prefix, suffix, target)


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, L); the K soft-token slots hold the pad id
    attention_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L); -100 everywhere but the target tokens
    soft_start: torch.Tensor  # (B,) index of the first soft token in each row

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels, self.soft_start)))


def collate(examples: list[Example], soft_tokens: int, pad: int, padding_side: str = "right") -> Batch:
    """Pad to the longest row; right padding for training, left padding for generation."""
    rows = []
    for ex in examples:
        prompt = ex.prefix + [pad] * soft_tokens + ex.suffix
        rows.append((prompt + ex.target, [-100] * len(prompt) + ex.target, len(ex.prefix)))
    width = max(len(ids) for ids, _, _ in rows)
    input_ids, mask, labels, starts = [], [], [], []
    for ids, row_labels, start in rows:
        fill = width - len(ids)
        if padding_side == "left":
            input_ids.append([pad] * fill + ids)
            mask.append([0] * fill + [1] * len(ids))
            labels.append([-100] * fill + row_labels)
            starts.append(start + fill)
        else:
            input_ids.append(ids + [pad] * fill)
            mask.append([1] * len(ids) + [0] * fill)
            labels.append(row_labels + [-100] * fill)
            starts.append(start)
    return Batch(torch.tensor(input_ids), torch.tensor(mask), torch.tensor(labels), torch.tensor(starts))


def splice_soft_tokens(token_embeddings: torch.Tensor, soft: torch.Tensor, soft_start: torch.Tensor) -> torch.Tensor:
    """Replace rows ``soft_start .. soft_start+K`` of each sequence with that example's soft tokens."""
    batch_size, k, _ = soft.shape
    rows = torch.arange(batch_size, device=soft.device).unsqueeze(1).expand(batch_size, k)
    cols = soft_start.unsqueeze(1) + torch.arange(k, device=soft.device)
    out = token_embeddings.clone()
    out[rows, cols] = soft.to(out.dtype)
    return out


def inputs_embeds_for(lm, adapter: EmbeddingAdapter, batch: Batch, embeddings: torch.Tensor):
    """(inputs_embeds, soft tokens) for a batch: token embeddings with the adapter's soft tokens spliced in."""
    soft = adapter(embeddings)
    token_embeddings = lm.get_input_embeddings()(batch.input_ids)
    return splice_soft_tokens(token_embeddings, soft, batch.soft_start), soft


# ------------------------------------------------------------------------------------------- settings


def resolve_settings(settings: dict, params_path: str | Path | None = None) -> dict:
    """Defaults <- settings <- params YAML (from hpo-best); checks the values training relies on."""
    merged = {**copy.deepcopy(DEFAULTS), **settings}
    if params_path is not None:
        merged.update(read_params(params_path))
    for key in POSITIVE_INTS:
        value = merged[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise VecflowError(f"settings: elm.{key}: must be a positive integer, got {value!r}")
    if not 0 <= float(merged["dropout"]) < 1:
        raise VecflowError(f"settings: elm.dropout: must be in [0, 1), got {merged['dropout']!r}")
    if float(merged["learning_rate"]) <= 0:
        raise VecflowError(f"settings: elm.learning_rate: must be > 0, got {merged['learning_rate']!r}")
    check_generation_config(merged["generation"], "elm.generation")
    return merged


def read_params(path: str | Path) -> dict:
    """A flat YAML mapping of elm settings (hpo-best's best_params.yaml)."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise VecflowError(f"{path}: file not found")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise VecflowError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(params, dict):
        raise VecflowError(f"{path}: expected a mapping of elm settings")
    for key in params:
        if key not in DEFAULTS:
            raise VecflowError(f"{path}: key '{key}': not an elm setting")
    return params


# ------------------------------------------------------------------------------------ generate & score


@torch.inference_mode()
def generate_texts(
    lm,
    tokenizer,
    adapter: EmbeddingAdapter,
    sources: list[Source],
    embeddings: torch.Tensor,
    generation: dict,
    batch_size: int,
) -> list[str]:
    """Generate one text per source from its embedding (left-padded batches)."""
    from transformers import GenerationConfig

    config = GenerationConfig(**generation, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id(tokenizer))
    device = next(adapter.parameters()).device
    adapter.eval()
    texts = []
    for start in range(0, len(sources), batch_size):
        chunk = sources[start : start + batch_size]
        examples = [make_example(tokenizer, s.template, None, 0) for s in chunk]
        batch = collate(examples, adapter.soft_tokens, pad_id(tokenizer), padding_side="left").to(device)
        vectors = embeddings[[s.embedding_index for s in chunk]].to(device)
        inputs_embeds, _ = inputs_embeds_for(lm, adapter, batch, vectors)
        output = lm.generate(inputs_embeds=inputs_embeds, attention_mask=batch.attention_mask, generation_config=config)
        texts += [t.strip() for t in tokenizer.batch_decode(output, skip_special_tokens=True)]
    return texts


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


# -------------------------------------------------------------------------------------------- training


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
    train_rows = take_subset(train_rows, int(settings["max_train_samples"]), seed)
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


def load_adapter(adapter_dir: str | Path, device: torch.device) -> tuple[EmbeddingAdapter, dict]:
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    config = read_json(adapter_dir / "adapter_config.json")
    for key in ("embed_dim", "lm_hidden", "soft_tokens", "hidden_dim", "dropout", "residual_scale"):
        if key not in config:
            raise VecflowError(f"{where(adapter_dir / 'adapter_config.json', field=key)}: missing")
    weights_path = adapter_dir / "adapter.safetensors"
    if not weights_path.exists():
        raise VecflowError(f"{weights_path}: file not found")
    adapter = build_adapter(config)
    adapter.load_state_dict(load_file(str(weights_path)))
    return adapter.to(device).eval(), config


# ---------------------------------------------------------------------------------------------- predict


def predict_elm(adapter_dir, lm_dir, data_dir, split: str, settings: dict, out) -> int:
    """One prediction per distinct source_id of the split; returns the number of rows written."""
    settings = resolve_settings(settings)
    seed_everything(int(settings.get("seed", 0)))
    device = pick_device(settings.get("device", "auto"))
    adapter, config = load_adapter(adapter_dir, device)
    lm, tokenizer = load_frozen_lm(lm_dir, device)
    hidden = int(lm.get_input_embeddings().embedding_dim)
    if hidden != config["lm_hidden"]:
        raise VecflowError(
            f"{where(Path(adapter_dir) / 'adapter_config.json', field='lm_hidden')}: "
            f"{config['lm_hidden']} does not match {lm_dir} (hidden size {hidden})"
        )
    rows, vectors = load_split(data_dir, split)
    if vectors.shape[1] != config["embed_dim"]:
        raise VecflowError(
            f"{data_dir}/{split}_embeddings.safetensors: dimension {vectors.shape[1]} "
            f"does not match the adapter's embed_dim {config['embed_dim']}"
        )
    sources = group_by_source(rows)
    texts = generate_texts(
        lm, tokenizer, adapter, sources, vectors, settings["generation"], int(settings["batch_size"])
    )
    return write_jsonl(
        out, ({"id": s.source_id, "prediction": t, "references": s.references} for s, t in zip(sources, texts))
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


def main_predict(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow predict-elm", description="Generate text from embeddings.")
    parser.add_argument("--adapter", required=True, help="folder written by train-elm")
    parser.add_argument("--lm", required=True, help="the causal LM the adapter was trained with")
    parser.add_argument("--data-dir", required=True, help="folder with {split}_synthesis.jsonl + embeddings")
    parser.add_argument("--split", required=True, help="split name, e.g. val")
    parser.add_argument("--settings", required=True, type=settings_arg, help="the elm section as JSON")
    parser.add_argument("--out", required=True, help="predictions JSONL")
    args = parser.parse_args(argv)
    count = predict_elm(args.adapter, args.lm, args.data_dir, args.split, args.settings, args.out)
    print(f"[vecflow] predict-elm: {count} predictions -> {args.out}", flush=True)
    return 0
