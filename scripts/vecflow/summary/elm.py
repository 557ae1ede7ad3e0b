"""ELM adapter, the model and its use: a sentence embedding becomes K soft tokens that a frozen causal LM reads
as part of its prompt, and the LM writes the text.

    embedding (D) -> LayerNorm -> MLP (D -> hidden_dim -> K*H) + residual_scale * Linear(D -> K*H)
                  -> K soft tokens of the LM's hidden size H

The prompt is the LM's chat template applied to one user message, the synthesis row's
``input_prompt_template``; its ``<EMB>`` placeholder is replaced by the K soft tokens, spliced into
``inputs_embeds`` at that position. For training the target text follows as the assistant's answer plus eos.

This module is what serving and prediction need (``vecflow predict-elm``: ``main_predict``; the server's ELM
path): the adapter, ``load_adapter``, the frozen LM, the prompt, ``generate_texts``. Training (losses, the
optimizer loop, ``vecflow train-elm``) is ``vecflow.summary.elm_train``; its data reader is
``vecflow.data.synthesis``.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vecflow.core.devices import pick_device
from vecflow.core.errors import VecflowError, where
from vecflow.core.io import read_json, write_jsonl
from vecflow.core.settings import seed_everything
from vecflow.data.synthesis import EMB, SynthesisRow, load_summary_split
from vecflow.summary.generation import check_generation_config
from vecflow.summary.settings import ELM_TUNABLE, ELM_VARIANTS, ElmPredictSettings

PLACEHOLDER = EMB
# the elm config section's keys that train-elm reads and a --params YAML (from hpo-best) may override (types,
# ranges and defaults: vecflow.summary.settings.ElmTrainSettings, which mirrors workflow/schemas/config.schema.yaml)
SETTINGS = ELM_TUNABLE
VARIANTS = ELM_VARIANTS  # elm.variants -> the family (and folder) name


# ----------------------------------------------------------------------------------------------- data


def load_split(data_dir: str | Path, split: str) -> tuple[list[SynthesisRow], torch.Tensor]:
    """A summary-only synthesis split (``vecflow.data.synthesis.load_summary_split``) with its vectors as a tensor."""
    rows, embeddings = load_summary_split(data_dir, split)
    return rows, torch.from_numpy(embeddings).float()


@dataclass(frozen=True)
class Source:
    """One embedded source (dialogue): the first row's template and vector, every row's target text, and (for
    the retrieval-augmented ELM) the summaries of its nearest training dialogues."""

    source_id: str
    template: str
    embedding_index: int
    references: list[str]
    neighbours: tuple[str, ...] = ()


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


def adapter_config(settings: ElmPredictSettings, embed_dim: int, lm_hidden: int) -> dict:
    return {
        "embed_dim": embed_dim,
        "lm_hidden": lm_hidden,
        "soft_tokens": settings.soft_tokens,
        "hidden_dim": settings.hidden_dim,
        "dropout": float(settings.dropout),
        "residual_scale": float(settings.residual_scale),
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


def lm_folder(adapter_dir: str | Path, lm_dir: str | Path) -> Path:
    """The LM an adapter folder was trained with: its own ``lm/`` (written when training also tuned the LM,
    LoRA merged in) or else the base LM ``lm_dir``."""
    own = Path(adapter_dir) / "lm"
    return own if (own / "config.json").exists() else Path(lm_dir)


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


# short on purpose: every training example carries it, and a long one was most of a plain example's tokens
SYSTEM_MESSAGE = "Answer briefly about the embedded text."
NEIGHBOURS_HEADER = "Summaries of similar conversations:"


def with_neighbours(template: str, neighbours: tuple[str, ...] | list[str]) -> str:
    """The user message of the retrieval-augmented ELM: the neighbours' summaries as a list, then the template."""
    if not neighbours:
        return template
    listed = "\n".join(f"{i}. {' '.join(text.split())}" for i, text in enumerate(neighbours, 1))
    return f"{NEIGHBOURS_HEADER}\n{listed}\n\n{template}"


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


def make_example(tokenizer, template: str, target_text: str | None, max_target_length: int,
                 neighbours: tuple[str, ...] | list[str] = ()) -> Example:
    """The target is ``target_text`` truncated to ``max_target_length`` tokens, then eos; ``neighbours`` (the
    retrieval-augmented ELM) are listed before the template."""
    prefix, suffix = prompt_ids(tokenizer, with_neighbours(template, neighbours))
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


def read_params(path: str | Path) -> dict:
    """A flat YAML mapping of elm settings (hpo-best's best_params.yaml)."""
    from vecflow.core.io import read_params_yaml

    return read_params_yaml(path, "an elm setting", lambda key: key in SETTINGS)


# ------------------------------------------------------------------------------------------- generate


def generate_texts(lm, tokenizer, adapter: EmbeddingAdapter, sources: list[Source], embeddings: torch.Tensor,
                   generation: dict, batch_size: int) -> list[str]:
    """Generate one text per source from its embedding (left-padded batches; the same texts as one at a time)."""
    return [c[0] for c in generate_candidates(lm, tokenizer, adapter, sources, embeddings, generation, batch_size)]


@torch.inference_mode()
def generate_candidates(lm, tokenizer, adapter: EmbeddingAdapter, sources: list[Source], embeddings: torch.Tensor,
                        generation: dict, batch_size: int, candidates: int = 1) -> list[list[str]]:
    """``candidates`` texts per source, best-scoring first: the top ``candidates`` beams (``num_beams`` is raised
    to at least ``candidates``), or that many samples when ``do_sample`` is set."""
    from transformers import GenerationConfig

    generation = dict(generation)
    if candidates > 1:
        generation["num_return_sequences"] = candidates
        if not generation.get("do_sample"):
            generation["num_beams"] = max(int(generation.get("num_beams", 1)), candidates)
    config = GenerationConfig(**generation, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad_id(tokenizer))
    device = next(adapter.parameters()).device
    was_training = adapter.training
    adapter.eval()
    out: list[list[str]] = []
    for start in range(0, len(sources), batch_size):
        chunk = sources[start : start + batch_size]
        examples = [make_example(tokenizer, s.template, None, 0, s.neighbours) for s in chunk]
        batch = collate(examples, adapter.soft_tokens, pad_id(tokenizer), padding_side="left").to(device)
        vectors = embeddings[[s.embedding_index for s in chunk]].to(device)
        inputs_embeds, _ = inputs_embeds_for(lm, adapter, batch, vectors)
        output = lm.generate(inputs_embeds=inputs_embeds, attention_mask=batch.attention_mask, generation_config=config)
        texts = [t.strip() for t in tokenizer.batch_decode(output, skip_special_tokens=True)]
        out += [texts[i : i + candidates] for i in range(0, len(texts), candidates)]
    adapter.train(was_training)
    return out


def rerank_by_reembedding(candidates: list[list[str]], targets: np.ndarray, encoder, batch_size: int = 64
                          ) -> tuple[list[str], list[int]]:
    """vec2text's check: embed every candidate with the sentence encoder and keep, per source, the one whose
    embedding is nearest (cosine) its input embedding ``targets[i]``; ties keep the earlier (higher-scoring)
    candidate. Returns (chosen texts, chosen candidate positions)."""
    flat = [text for texts in candidates for text in texts]
    vectors = encoder.encode(flat, batch_size=batch_size)
    chosen, picks, at = [], [], 0
    for i, texts in enumerate(candidates):
        sims = vectors[at : at + len(texts)] @ targets[i]
        best = int(np.argmax(sims))  # argmax returns the first of equal maxima
        chosen.append(texts[best])
        picks.append(best)
        at += len(texts)
    return chosen, picks


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


def attach_neighbours(sources: list[Source], data_dir, vectors: torch.Tensor, k: int, limit: int, tokenizer,
                      exclude_self: bool = False) -> list[Source]:
    """The retrieval-augmented ELM (``k`` > 0): each source with the summaries of its k nearest training
    dialogues (each cut to ``limit`` tokens); a training source never gets itself."""
    if k <= 0:
        return sources
    from vecflow.summary.retrieval import build_pool, neighbour_summaries

    pool_rows, pool_vectors = load_summary_split(data_dir, "train")
    pool = build_pool(pool_rows, pool_vectors)
    queries = vectors[[s.embedding_index for s in sources]].numpy()
    found = neighbour_summaries(pool, queries, k, [s.source_id for s in sources] if exclude_self else None)

    def cut(text: str) -> str:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= limit else tokenizer.decode(ids[:limit]).strip()

    return [dataclasses.replace(s, neighbours=tuple(cut(t) for t in texts)) for s, texts in zip(sources, found)]


def predict_elm(adapter_dir, lm_dir, data_dir, split: str, settings: ElmPredictSettings | dict, out,
                encoder_dir=None, out_first=None) -> int:
    """One prediction per distinct source_id of the split; returns the number of rows written.

    With ``rerank_candidates`` > 1 (and ``encoder_dir``) ``out`` holds the candidate nearest the input embedding
    after re-embedding, and ``out_first`` (when given) the top-scoring candidate, i.e. the prediction without
    re-ranking. ``settings`` as a dict (a direct call) is validated here. The retrieved summaries per prompt are
    the adapter's own (its ``adapter_config.json``: what it was trained with), else the settings'.
    """
    if not isinstance(settings, ElmPredictSettings):
        settings = ElmPredictSettings.parse(settings)
    check_generation_config(settings.generation, "elm.generation")
    seed_everything(settings.seed)
    device = pick_device(settings.device)
    adapter, config = load_adapter(adapter_dir, device)
    neighbours = int(config.get("retrieval_k", settings.neighbours))
    neighbour_tokens = int(config.get("retrieval_max_tokens", settings.retrieval_max_tokens))
    lm_dir = lm_folder(adapter_dir, lm_dir)
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
    sources = attach_neighbours(group_by_source(rows), data_dir, vectors, neighbours, neighbour_tokens, tokenizer)
    n = settings.rerank_candidates
    if n > 1 and encoder_dir is None:
        raise VecflowError("settings: elm.rerank_candidates > 1 needs --encoder (candidates are re-embedded)")
    candidates = generate_candidates(lm, tokenizer, adapter, sources, vectors, settings.generation,
                                     settings.eval_batch_size, n)
    from vecflow.summary.pairing import paired_rows

    ids, refs = [s.source_id for s in sources], [s.references for s in sources]
    eval_path = f"{data_dir}/{split}_synthesis.jsonl"
    first = paired_rows(ids, [c[0] for c in candidates], refs, eval_path)
    if n > 1:
        from vecflow.core.encoder import SentenceEncoder

        encoder = SentenceEncoder(encoder_dir, str(device))
        targets = vectors[[s.embedding_index for s in sources]].numpy()
        chosen, picks = rerank_by_reembedding(candidates, targets, encoder)
        print(f"[vecflow] re-ranking by re-embedding: {sum(p != 0 for p in picks)} of {len(picks)} predictions "
              f"changed from the top candidate", flush=True)
        written = write_jsonl(out, paired_rows(ids, chosen, refs, eval_path))
    else:
        written = write_jsonl(out, first)
    if out_first is not None:
        write_jsonl(out_first, first)
    return written


# ------------------------------------------------------------------------------------------------- CLI


def main_predict(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow predict-elm", description="Generate text from embeddings.")
    parser.add_argument("--adapter", required=True, help="folder written by train-elm")
    parser.add_argument("--lm", required=True, help="the causal LM the adapter was trained with")
    parser.add_argument("--data-dir", required=True, help="folder with {split}_synthesis.jsonl + embeddings")
    parser.add_argument("--split", required=True, help="split name, e.g. val")
    parser.add_argument("--settings", required=True, type=ElmPredictSettings.from_json,
                        help="the elm section and the variant (vecflow.summary.settings.ElmPredictSettings)")
    parser.add_argument("--encoder", default=None, help="sentence encoder (re-ranking: rerank_candidates > 1)")
    parser.add_argument("--out", required=True, help="predictions JSONL (re-ranked when rerank_candidates > 1)")
    parser.add_argument("--out-first", default=None, help="also write the top candidate's predictions here")
    args = parser.parse_args(argv)
    count = predict_elm(args.adapter, args.lm, args.data_dir, args.split, args.settings, args.out,
                        args.encoder, args.out_first)
    print(f"[vecflow] predict-elm: {count} predictions -> {args.out}", flush=True)
    return 0
