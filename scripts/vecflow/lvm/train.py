"""``vecflow train-lvm``: train one next-vector model (a run = preset + architecture) with resumable state.

    vecflow train-lvm --train-windows F --train-embeddings F --train-index F \
        --val-windows F --val-embeddings F --val-index F --settings S --out DIR

Windows are bank row indices (``vecflow.lvm.windows``); each batch gathers its vectors from the bank, which
sits on the training device when it fits there (``vecflow.lvm.bank.resident_bank``).

Settings (``vecflow.lvm.settings.LvmTrainSettings``, checked once at the start): ``lvm.train`` merged with the
run entry (``preset``, ``arch``, optional ``losses`` overrides) plus the global ``seed`` and ``device``. Each epoch: one seeded pass over the training windows (AdamW), the selection
split's loss terms and cosine, and a mini-5CAT on up to ``mini5cat_samples`` of its windows; one record goes
to ``history.jsonl`` (and wandb/mlflow when enabled).

The selection split: with ``selection_fraction`` > 0 a seeded share of the TRAINING articles is held out
(never trained on) and checkpoints are chosen there, so the VAL split that 5CAT reports is never seen; with 0
the ``--val-*`` inputs are the selection split (history keys ``val/...`` always mean the selection split).
The mini-5CAT calls the ``fivecat`` functions themselves (offset sweep over the windows where all seven
offsets exist, within-article retrieval of articles with >= ``min_article_chunks`` chunks, ties ranked
pessimistically), and scores copy-last, context-mean and ridge (λ by GCV on the training windows) on the
same windows once. Epoch 0 is the untrained start (a residual model's context mean or ridge baseline),
scored and recorded like every epoch and a selection candidate, so training never publishes a checkpoint
that is worse than where it started by the selection metric. ``selection_metric: dominance`` (default) keeps the checkpoint that beats the most of
those (baseline, metric) pairs for c_0, MRR and margin, ties broken by margin: a checkpoint that dominates
every baseline always wins over one that does not. Early stopping counts epochs without a gain in the
selection metric.

Resuming: after every epoch, ``DIR.partial/state.pt`` holds the model, optimizer, RNG state, best checkpoint
and history; a rerun with the same settings and inputs continues from it. Only a finished run publishes DIR
(atomically): ``model.safetensors`` (best epoch), ``config.json``, ``history.jsonl``, ``summary.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vecflow.lvm import fivecat
from vecflow.lvm.baselines import build_baselines
from vecflow.core.devices import pick_device
from vecflow.lvm.bank import ChunkBank, bank_index_rows, load_bank, resident_bank
from vecflow.core.errors import VecflowError
from vecflow.core.io import atomic_dir, atomic_path, write_json, write_jsonl
from vecflow.lvm.losses import TERMS, LossBatch, compute_losses, guard_to_mse_ratio
from vecflow.lvm.models import build_model, model_config, predict, save_lvm
from vecflow.lvm.presets import resolve_schedule
from vecflow.core.settings import seed_everything, settings_arg
from vecflow.core.tracking import Tracker, copy_tracking_record
from vecflow.lvm.settings import LvmTrainSettings
from vecflow.lvm.windows import Windows, load_windows

OFFSETS = (-3, -2, -1, 0, 1, 2, 3)
SELECTION_METRICS = {  # setting -> (history key, higher is better)
    "dominance": ("val/dominance", True),  # [pairs won of baselines x (c0, mrr, margin), margin]
    "forward": ("val/forward", True),  # [1, c0, margin] when margin > 0, else [0, wins, margin] (dominance)
    "val_margin": ("val/margin", True),
    "val_cos": ("val/cos_sim", True),
    "val_loss": ("val/mse", False),
}
DOMINANCE_METRICS = ("c0", "mrr", "margin")
# settings that do not change what a run computes, so a resumed run may differ in them
NOT_FINGERPRINTED = ("device", "stop_after_epoch", "tracking", "run_name", "run")
UNTRAINED_KEYS = ("val/c0", "val/margin", "val/mrr", "val/r1", "val/cos_sim", "val/mse", "val/wins", "val/dominates")


# ----------------------------------------------------------------------------------------------- inputs

def check_compatible(train: Windows, val: Windows, train_bank: ChunkBank, val_bank: ChunkBank, paths: dict) -> None:
    """Validation windows and bank must have the training windows' context length and the training bank's
    dimension (that every window points at its own chunks is checked when the windows are read)."""
    if val.context_length != train.context_length:
        raise VecflowError(f"{paths['val_windows']}: windows of {val.context_length} context chunks, but the "
                           f"training windows have {train.context_length}")
    if val_bank.dim != train_bank.dim:
        raise VecflowError(f"{paths['val_embeddings']}: embeddings have dimension {val_bank.dim}, "
                           f"the training bank {paths['train_embeddings']} {train_bank.dim}")


def future_rows(windows: Windows, bank: ChunkBank, horizon: int) -> np.ndarray:
    """(N, horizon): bank rows of chunks t+1 .. t+horizon of each window's article, -1 from the first missing
    one on (the article has ended, or has a gap), so rollout step h always continues consecutive text."""
    steps = np.arange(1, horizon + 1)
    rows = bank.rows(windows.article_ids[:, None], windows.target_indices[:, None] + steps[None, :])
    present = np.cumprod(rows >= 0, axis=1).astype(bool)
    return np.where(present, rows, -1)


# ----------------------------------------------------------------------------------------------- mini-5CAT

def mini_fivecat(pred: np.ndarray, windows: Windows, bank: ChunkBank,
                 min_article_chunks: int = 6) -> dict:
    """The 5CAT offset sweep and retrieval (the ``fivecat`` functions, same definitions) for one epoch.

    Returns {"c": {k: c_k}, "c0", "margin", "peak_offset", "r1", "r5", "mrr", "sweep_n", "samples"}.
    """
    sweep = fivecat.offset_sweep(pred, windows, bank)
    ranks = fivecat.retrieval(pred, windows, bank, min_article_chunks)
    return {"c": {int(k): v["c"] for k, v in sweep["offsets"].items() if v["c"] is not None},
            "c0": sweep["c0"], "margin": sweep["margin"], "peak_offset": sweep["peak_k"],
            "r1": ranks["r1"], "r5": ranks["r5"], "mrr": ranks["mrr"], "sweep_n": sweep["n"],
            "samples": len(pred)}


def dominance(scores: dict, baselines: dict) -> dict:
    """Which (baseline, metric) pairs for c_0, MRR and margin the model beats (strictly) on the selection split.

    Returns {"wins", "pairs", "dominates", "loses_to": ["baseline:metric", ...]}."""
    def beats(a, b):
        return a is not None and (b is None or a > b)

    lost = [f"{name}:{metric}" for name, base in baselines.items() for metric in DOMINANCE_METRICS
            if not beats(scores.get(metric), base.get(metric))]
    pairs = len(baselines) * len(DOMINANCE_METRICS)
    return {"wins": pairs - len(lost), "pairs": pairs, "dominates": not lost, "loses_to": lost}


def offset_key(k: int) -> str:
    """History key of c_k: ``c_m1`` for k=-1, ``c_0``, ``c_p1`` (tracking backends reject '+' in names)."""
    return f"c_m{-k}" if k < 0 else f"c_p{k}" if k > 0 else "c_0"


# ----------------------------------------------------------------------------------------------- settings

def fingerprint(settings: dict, input_paths: dict) -> str:
    """Identifies what a run computes: the settings as sent (minus device/tracking/...) and the inputs' sizes and
    times."""
    relevant = {k: v for k, v in settings.items() if k not in NOT_FINGERPRINTED}
    files = {name: [Path(p).stat().st_size, Path(p).stat().st_mtime_ns] for name, p in sorted(input_paths.items())}
    text = json.dumps({"settings": relevant, "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------------------------- one epoch

@dataclass
class WindowTensors:
    """Windows as torch index tensors next to the bank they index (on the device when the bank is there):
    a batch gathers its context, target and future vectors from the bank on the fly."""
    bank: torch.Tensor     # (M, D)
    rows: torch.Tensor     # (N, C+1) bank rows: ctx_0..ctx_{C-1}, target
    futures: torch.Tensor  # (N, F) bank rows of chunks t+1..t+F, -1 = none

    @classmethod
    def build(cls, bank: torch.Tensor, windows: Windows, futures: np.ndarray) -> "WindowTensors":
        return cls(bank, torch.from_numpy(windows.rows).to(bank.device), torch.from_numpy(futures).to(bank.device))

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, index: torch.Tensor, device) -> LossBatch:
        index = index.to(self.rows.device)
        rows, future_rows = self.rows[index], self.futures[index]
        future_mask = future_rows >= 0
        return LossBatch(self.bank[rows[:, :-1]].to(device), self.bank[rows[:, -1]].to(device),
                         self.bank[future_rows.clamp(min=0)].to(device), future_mask.to(device))


def drop_context_slots(contexts: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Zero each context slot with ``probability`` (seeded), so the model cannot lean on any one slot."""
    if probability <= 0:
        return contexts
    keep = torch.rand(contexts.shape[:2], generator=generator) >= probability
    return contexts * keep.unsqueeze(-1).to(contexts.device, contexts.dtype)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator for one epoch's shuffle and context drop: a function of (seed, epoch) only, so a resumed
    run draws exactly what an uninterrupted one would."""
    return torch.Generator().manual_seed(seed * 1000 + epoch)


def make_optimizer(model, learning_rate: float, weight_decay: float, device) -> torch.optim.Optimizer:
    """AdamW, with torch's fused kernel on CPU and CUDA (one pass over all tensors instead of a loop per tensor:
    part of what takes the default transformer's step to a third of the matmul peak, ``vecflow bench lvm``)."""
    fused = torch.device(device).type in ("cpu", "cuda") or None
    return torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay, fused=fused)


def train_one_epoch(model, optimizer, windows: WindowTensors, weights: dict, run: LvmTrainSettings,
                    generator: torch.Generator, device) -> dict:
    """One shuffled pass; returns the mean of every loss term (unweighted) plus ``total`` and ``dir_boost``."""
    model.train()
    order = torch.randperm(len(windows), generator=generator)
    sums, seen = {}, 0
    for start in range(0, len(order), run.batch_size):
        batch = windows.batch(order[start:start + run.batch_size], device)
        batch.contexts = drop_context_slots(batch.contexts, weights["context_drop"], generator)
        terms = compute_losses(model, batch, weights)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        if run.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), run.grad_clip)
        optimizer.step()
        size = len(batch.targets)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach()) * size
        seen += size
    return {name: total / seen for name, total in sums.items()}


@torch.no_grad()
def evaluate(model, windows: WindowTensors, weights: dict, batch_size: int, device) -> dict:
    """Mean loss terms over all the windows (no context drop), plus ``cos_sim`` = 1 - cos term."""
    model.eval()
    sums, seen = {}, 0
    for start in range(0, len(windows), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(windows)))
        terms = compute_losses(model, windows.batch(rows, device), weights, rollout_with_grad=False)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value) * len(rows)
        seen += len(rows)
    means = {name: total / seen for name, total in sums.items()}
    means["cos_sim"] = 1.0 - means["cos"]
    return means


def mini_fivecat_sample(val: Windows, max_samples: int) -> np.ndarray:
    """Evenly spaced validation rows (deterministic, spread over articles)."""
    count = min(max_samples, len(val))
    return np.unique(np.linspace(0, len(val) - 1, count).round().astype(np.int64))


def epoch_record(epoch: int, weights: dict, train_terms: dict, val_terms: dict, fivecat: dict,
                 epoch_time: float, device) -> dict:
    record = {"epoch": epoch, "device": str(device), "epoch_time_s": round(epoch_time, 4)}
    record.update({f"train/{name}": train_terms[name] for name in (*TERMS, "total")})
    record["train/cos_sim"] = 1.0 - train_terms["cos"]
    record.update({f"val/{name}": val_terms[name] for name in (*TERMS, "total", "cos_sim")})
    for key, value in weights.items():  # lambda_roll -> lambda/roll; margin_dir -> schedule/margin_dir
        record[f"lambda/{key.removeprefix('lambda_')}" if key.startswith("lambda_") else f"schedule/{key}"] = value
    record["lambda/dir_effective"] = weights["lambda_dir"] * train_terms["dir_boost"]
    record["train/guard_to_mse"] = guard_to_mse_ratio(train_terms, weights)
    record["val/margin"] = fivecat["margin"]
    record["val/c0"] = fivecat["c0"]
    record["val/r1"] = fivecat["r1"]
    record["val/r5"] = fivecat["r5"]
    record["val/mrr"] = fivecat["mrr"]
    record["val/sweep_n"] = fivecat["sweep_n"]
    record["val/peak_offset"] = fivecat["peak_offset"]
    record["val/wins"] = fivecat["dominance"]["wins"]
    record["val/dominates"] = fivecat["dominance"]["dominates"]
    record["val/loses_to"] = fivecat["dominance"]["loses_to"]
    record["val/dominance"] = [fivecat["dominance"]["wins"], fivecat["margin"]]
    record["val/forward"] = forward_key(fivecat["margin"], fivecat["c0"], fivecat["dominance"]["wins"])
    record.update({f"val/{offset_key(k)}": value for k, value in fivecat["c"].items()})
    return record


def forward_key(margin, c0, wins) -> list:
    """``selection_metric: forward``: a checkpoint that predicts forward (selection margin > 0) beats every one
    that does not, and among those the highest c_0 wins; with no positive margin it is dominance (wins, margin)."""
    if margin is not None and c0 is not None and margin > 0:
        return [1, c0, margin]
    return [0, wins, margin]


def format_epoch_line(record: dict, epochs: int) -> str:
    return (f"[train-lvm] epoch {record['epoch']}/{epochs} train_total {record['train/total']:.5f} "
            f"val_mse {record['val/mse']:.5f} val_cos {record['val/cos_sim']:.4f} margin {record['val/margin']:+.4f} "
            f"c0 {record['val/c0']:.4f} MRR {record['val/mrr']:.3f} R@1 {record['val/r1']:.3f} "
            f"peak k={record['val/peak_offset']} beats {record['val/wins']}/9 "
            f"guard/mse {record['train/guard_to_mse']:.3f} "
            f"lambda_roll {record['lambda/roll']} lambda_dir {record['lambda/dir']} ({record['epoch_time_s']:.2f}s)")


# ----------------------------------------------------------------------------------------------- state

def is_better(value, best, higher_is_better: bool) -> bool:
    """``value`` beats ``best``; lists ([wins, margin]) compare in order, a missing/NaN part never wins."""
    if isinstance(value, (list, tuple)):
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in value):
            return False
        return best is None or list(value) > list(best)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return best is None or (value > best if higher_is_better else value < best)


def fresh_state(fingerprint_text: str) -> dict:
    return {"fingerprint": fingerprint_text, "epoch": 0, "history": [], "best_epoch": None, "best_value": None,
            "best_model": None, "best_margin": None, "epochs_without_margin_gain": 0, "stopped_early": False}


def load_state(path: Path, fingerprint_text: str) -> dict | None:
    """The saved state of an interrupted run with the same fingerprint, or None."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a torn or foreign file: start over rather than fail
        print(f"[train-lvm] ignoring unreadable {path} ({exc})", flush=True)
        return None
    if state.get("fingerprint") != fingerprint_text:
        print(f"[train-lvm] {path} belongs to other settings or inputs: starting over", flush=True)
        return None
    return state


def save_state(path: Path, state: dict, model, optimizer) -> None:
    state = {**state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def restore_state(state: dict, model, optimizer) -> None:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def update_best(state: dict, record: dict, model, run: LvmTrainSettings) -> None:
    """Keep the best checkpoint by the selection metric; stop early after ``early_stop_patience`` epochs
    without a gain in it (0 = never)."""
    key, higher = SELECTION_METRICS[run.selection_metric]
    if is_better(record[key], state["best_value"], higher):
        state["best_value"], state["best_epoch"] = record[key], record["epoch"]
        state["best_model"] = {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}
        state["epochs_without_margin_gain"] = 0
    else:
        state["epochs_without_margin_gain"] += 1
    patience = run.early_stop_patience
    state["stopped_early"] = bool(patience and state["epochs_without_margin_gain"] >= patience)


# ----------------------------------------------------------------------------------------------- the run

@dataclass
class RunData:
    """Everything a run reads, checked and prepared once: windows, banks, schedule, mini-5CAT baselines."""
    train: Windows
    val: Windows                    # the selection split
    train_bank: ChunkBank           # the chunks the training windows index
    bank: ChunkBank                 # the selection split's chunks (the training bank when carved from it)
    schedule: list[dict]            # per-epoch loss weights
    horizon: int                    # future chunks t+1..t+horizon per window (rollout and ranking losses)
    fivecat_windows: Windows        # selection windows scored by the mini-5CAT
    baselines: dict                 # {name: mini-5CAT scores} on the same windows
    selection: dict                 # where the selection split comes from
    ridge: object                   # the ridge baseline (a residual: ridge model starts from it)

    def tensors(self, device) -> dict[str, WindowTensors]:
        """Train and selection windows as index tensors next to their banks, resident on ``device`` when
        they fit (one copy of a bank shared by both when the selection split is carved from training)."""
        train_bank = resident_bank(self.train_bank, device)
        val_bank = train_bank if self.bank is self.train_bank else resident_bank(self.bank, device)
        return {"train": WindowTensors.build(train_bank, self.train, future_rows(self.train, self.train_bank,
                                                                                  self.horizon)),
                "val": WindowTensors.build(val_bank, self.val, future_rows(self.val, self.bank, self.horizon))}


def selection_size(article_count: int, fraction: float) -> int:
    """How many training articles a ``fraction`` carve holds out: at least one, never all."""
    return min(article_count - 1, max(1, round(fraction * article_count)))


def carve_selection(train: Windows, fraction: float, seed: int, index_rows: list[dict] | None = None,
                    short_tokens: int = 0) -> tuple[Windows, Windows, list[int]]:
    """Hold out a seeded ``fraction`` of the training ARTICLES (at least one, never all) as the selection split.

    With ``index_rows`` (the bank index's ``article_id, text`` rows) a chosen article that shares a chunk text of
    more than ``short_tokens`` tokens with an article left for training goes back to training: the rule
    ``split_articles`` applies between splits (``vecflow.data.splits.drop_leaking_articles``). DialogSum train
    repeats 1,012 of its dialogues, and a selection split holding copies of training dialogues rewards memorising."""
    from vecflow.data.splits import drop_leaking_articles

    articles = np.unique(train.article_ids)
    if len(articles) < 2:
        raise VecflowError(f"settings: selection_fraction {fraction}: the training windows come from "
                           f"{len(articles)} article; set selection_fraction: 0 to select on --val-windows")
    count = selection_size(len(articles), fraction)
    chosen = np.sort(np.random.default_rng(seed).choice(articles, size=count, replace=False))
    if index_rows:
        picked = set(chosen.tolist())
        kept, _ = drop_leaking_articles({"train": [r for r in index_rows if r["article_id"] not in picked],
                                         "val": [r for r in index_rows if r["article_id"] in picked], "ood": []},
                                        short_tokens)
        chosen = np.asarray(sorted({r["article_id"] for r in kept["val"]}), dtype=articles.dtype)
        if not len(chosen):
            raise VecflowError(f"settings: selection_fraction {fraction}: every selection article repeats a "
                               f"training article's text; set selection_fraction: 0 to select on --val-windows")
    held = np.isin(train.article_ids, chosen)
    return train.subset(np.flatnonzero(~held)), train.subset(np.flatnonzero(held)), chosen.tolist()


def train_subset(train: Windows, fraction: float, seed: int) -> Windows:
    """A seeded ``fraction`` of the training windows (learning curve); smaller fractions are nested in larger
    ones because every fraction takes a prefix of the same permutation."""
    if fraction >= 1.0:
        return train
    count = max(1, round(fraction * len(train)))
    return train.subset(np.sort(np.random.default_rng(seed + 1).permutation(len(train))[:count]))


def baseline_scores(train: Windows, train_bank: ChunkBank, windows: Windows, bank: ChunkBank,
                    run: LvmTrainSettings) -> dict:
    """Mini-5CAT scores of copy-last, context-mean and ridge (λ by GCV on ≤ ridge_max_samples training windows)."""
    rows = np.arange(len(train))
    if run.ridge_max_samples and len(rows) > run.ridge_max_samples:
        rows = np.sort(np.random.default_rng(run.seed).choice(rows, run.ridge_max_samples, replace=False))
    sample = train.subset(rows)
    baselines = build_baselines(sample.contexts(train_bank), sample.targets(train_bank), "auto", run.ridge_lambdas)
    contexts = windows.contexts(bank)
    scores = {name: mini_fivecat(predict_fn(contexts), windows, bank, run.min_article_chunks)
              for name, predict_fn in baselines.items()}
    scores["ridge"]["lambda"] = baselines["ridge"].ridge_lambda
    return scores, baselines["ridge"]


def load_run_data(paths: dict, run: LvmTrainSettings, encoder_dir=None) -> RunData:
    train_bank = load_bank(paths["train_embeddings"], paths["train_index"], encoder_dir=encoder_dir)
    train = load_windows(paths["train_windows"], train_bank)
    if run.selection_fraction > 0:
        wanted = selection_size(len(np.unique(train.article_ids)), run.selection_fraction)
        index_rows = list(bank_index_rows(paths["train_embeddings"], paths["train_index"]))
        train, val, held = carve_selection(train, run.selection_fraction, run.seed, index_rows,
                                           run.short_duplicate_tokens)
        val = Windows(val.rows, val.article_ids, val.target_indices, f"{paths['train_windows']} (selection articles)")
        bank = train_bank
        selection = {"split": "train-carved", "fraction": run.selection_fraction, "articles": len(held),
                     "returned_to_training_as_leaking": wanted - len(held)}
    else:
        bank = load_bank(paths["val_embeddings"], paths["val_index"], encoder_dir=encoder_dir)
        val = load_windows(paths["val_windows"], bank)
        check_compatible(train, val, train_bank, bank, paths)
        selection = {"split": "val", "articles": int(len(np.unique(val.article_ids)))}
    train = train_subset(train, run.train_fraction, run.seed)
    schedule = resolve_schedule(run.preset, run.losses, run.epochs)
    horizon = max(2, max(weights["rollout_h"] for weights in schedule) - 1)  # futures for rollout and ranking
    windows = val.subset(mini_fivecat_sample(val, run.mini5cat_samples))
    selection["windows"] = len(val)
    scores, ridge = baseline_scores(train, train_bank, windows, bank, run)
    return RunData(train, val, train_bank, bank, schedule, horizon, windows, scores, selection, ridge)


def score_epoch(epoch: int, model, data: RunData, tensors: dict, run: LvmTrainSettings, device,
                train_terms: dict | None, started: float) -> dict:
    """Validate, score the mini-5CAT and return the epoch's history record. ``train_terms`` None: epoch 0,
    the untrained start, whose training-set terms are measured without an update."""
    weights = data.schedule[max(epoch, 1) - 1]
    if train_terms is None:
        train_terms = evaluate(model, tensors["train"], weights, run.batch_size, device)
    val_terms = evaluate(model, tensors["val"], weights, run.batch_size, device)
    contexts = data.fivecat_windows.contexts(data.bank)
    pred = predict(model, contexts, run.batch_size, device)
    scores = mini_fivecat(pred, data.fivecat_windows, data.bank, run.min_article_chunks)
    scores["dominance"] = dominance(scores, data.baselines)
    record = epoch_record(epoch, weights, train_terms, val_terms, scores, time.perf_counter() - started, device)
    if run.contrast.enabled:  # checkpoints compete as they will be published: with their own best contrast
        chosen = contrast_grid(pred, contexts, data, run)["chosen"]
        record.update({"contrast/alpha": chosen["alpha"], "contrast/slots": chosen["slots"],
                       "contrast/c0": chosen["c0"], "contrast/margin": chosen["margin"], "contrast/mrr": chosen["mrr"],
                       "val/forward": forward_key(chosen["margin"], chosen["c0"], chosen["wins"])})
    return record


def run_epoch(epoch: int, model, optimizer, data: RunData, tensors: dict, run: LvmTrainSettings, device) -> dict:
    """Train one epoch, validate, score the mini-5CAT; return the epoch's history record."""
    started = time.perf_counter()
    train_terms = train_one_epoch(model, optimizer, tensors["train"], data.schedule[epoch - 1], run,
                                  epoch_generator(run.seed, epoch), device)
    return score_epoch(epoch, model, data, tensors, run, device, train_terms, started)


def start_or_resume(partial_dir: Path, fingerprint_text: str, model, optimizer) -> dict:
    """The saved state of an interrupted identical run (model/optimizer/RNG restored), or a fresh one."""
    state_path = partial_dir / "state.pt"
    state = load_state(state_path, fingerprint_text)
    partial_dir.mkdir(parents=True, exist_ok=True)
    if state is None:
        return fresh_state(fingerprint_text)
    restore_state(state, model, optimizer)
    write_jsonl(partial_dir / "history.jsonl", state["history"])  # drop records logged after the saved state
    print(f"[train-lvm] resuming after epoch {state['epoch']} from {state_path}", flush=True)
    return state


def train_lvm(train_path, val_path, val_embeddings_path, val_index_path, settings: LvmTrainSettings | dict, out_dir,
              epoch_callback=None, *, train_embeddings_path, train_index_path, encoder_dir=None) -> dict | None:
    """Train (or resume) one LVM run and publish ``out_dir``; returns the summary, or None when stopped early
    on purpose by ``stop_after_epoch`` (the state stays in ``out_dir.partial`` for the next call).
    ``epoch_callback(record)`` is called after each trained epoch (HPO reports and prunes there).

    Epoch 0 is the untrained start (for a residual model: the context mean, or the ridge baseline), scored
    like every epoch and a candidate for selection, so the published checkpoint is never worse than it.
    ``settings`` as a dict (an LVM study's trial) is validated here."""
    run = settings if isinstance(settings, LvmTrainSettings) else LvmTrainSettings.parse(settings)
    out_dir = Path(out_dir)
    partial_dir = out_dir.with_name(out_dir.name + ".partial")
    paths = {"train_windows": train_path, "train_embeddings": train_embeddings_path, "train_index": train_index_path,
             "val_windows": val_path, "val_embeddings": val_embeddings_path, "val_index": val_index_path}
    data = load_run_data(paths, run, encoder_dir)

    device = pick_device(run.device)
    seed_everything(run.seed)
    context_length, dim = data.train.context_length, data.train_bank.dim
    model = build_model(run.arch, dim, context_length, run.model_sizes())
    if hasattr(model, "set_base"):  # residual: ridge starts at the ridge baseline of these training windows
        model.set_base(data.ridge.weights, data.ridge.bias)
    model = model.to(device)
    optimizer = make_optimizer(model, run.learning_rate, run.weight_decay, device)
    tensors = data.tensors(device)
    print(f"[train-lvm] {run.arch} / {run.preset}: {sum(p.numel() for p in model.parameters())} parameters, "
          f"{len(data.train)} train / {len(data.val)} selection windows ({data.selection['split']}), "
          f"C={context_length}, D={dim}, bank on {tensors['train'].bank.device}", flush=True)
    for name, scores in data.baselines.items():
        print(f"[train-lvm] selection baseline {name}: c0 {scores['c0']:.4f} MRR {scores['mrr']:.3f} "
              f"margin {scores['margin']:+.4f} (sweep n={scores['sweep_n']})", flush=True)

    used = {k: v for k, v in paths.items() if run.selection_fraction == 0 or k.startswith("train")}
    state = start_or_resume(partial_dir, fingerprint(run.received, used), model, optimizer)
    tracker = Tracker(partial_dir / "history.jsonl", run.tracking_name(), config=run.received,
                      backends=run.tracking, resume=bool(state["history"]))
    if not state["history"]:  # epoch 0: the untrained start is the first candidate
        record = score_epoch(0, model, data, tensors, run, device, None, time.perf_counter())
        print(format_epoch_line(record, run.epochs) + " [the untrained start]", flush=True)
        update_best(state, record, model, run)
        state["history"].append(record)
        save_state(partial_dir / "state.pt", state, model, optimizer)
        tracker.log(record, step=0)
    for epoch in range(state["epoch"] + 1, run.epochs + 1):
        if state["stopped_early"]:
            break
        record = run_epoch(epoch, model, optimizer, data, tensors, run, device)
        print(format_epoch_line(record, run.epochs), flush=True)
        update_best(state, record, model, run)
        state["epoch"] = epoch
        state["history"].append(record)
        save_state(partial_dir / "state.pt", state, model, optimizer)
        tracker.log(record, step=epoch)
        if epoch_callback is not None:
            epoch_callback(record)
        if state["stopped_early"]:
            print(f"[train-lvm] early stop: no {run.selection_metric} gain for {run.early_stop_patience} epochs",
                  flush=True)
        if run.stop_after_epoch and run.stop_after_epoch <= epoch < run.epochs:
            print(f"[train-lvm] stopping after epoch {epoch} (stop_after_epoch); state kept in {partial_dir}")
            tracker.finish({})
            return None

    summary = build_summary(state, run, device, len(data.train), len(data.val))
    summary.update({"selection": data.selection, "selection_baselines": data.baselines})
    contrast = None
    if run.contrast.enabled:
        if state["best_model"] is not None:
            model.load_state_dict(state["best_model"])
        contrast = choose_contrast(model, data, run, device)
        apply_contrast_to_summary(summary, contrast, run.selection_metric)
        print(f"[train-lvm] context contrast: {contrast['reason']}", flush=True)
    tracker.finish({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    config = model_config(run.arch, dim, context_length, run.model_sizes(), preset=run.preset,
                          best_epoch=state["best_epoch"],
                          **({"contrast": {"alpha": contrast["alpha"], "slots": contrast["slots"]}} if contrast else {}))
    publish(out_dir, partial_dir, state, model, config, summary)
    where = "the untrained start (epoch 0)" if summary["best_epoch"] == 0 else f"epoch {summary['best_epoch']}"
    print(f"[train-lvm] best: {where} by {run.selection_metric}: wrote {out_dir}", flush=True)
    return summary


def build_summary(state: dict, run: LvmTrainSettings, device, train_count: int, val_count: int) -> dict:
    history = state["history"]
    best = next((r for r in history if r["epoch"] == state["best_epoch"]), history[-1])
    start = next((r for r in history if r["epoch"] == 0), None)
    times = [r["epoch_time_s"] for r in history if r["epoch"] > 0]
    return {
        "arch": run.arch, "preset": run.preset, "device": str(device),
        "selection_metric": run.selection_metric, "best_epoch": best["epoch"],
        "best_is_untrained_start": best["epoch"] == 0,
        "best": {k: v for k, v in best.items() if k != "epoch"},
        "untrained_start": None if start is None else {k: start[k] for k in UNTRAINED_KEYS if k in start},
        "epochs_run": len(times), "epochs_planned": run.epochs, "stopped_early": state["stopped_early"],
        "epoch_times_s": times, "mean_epoch_time_s": sum(times) / max(len(times), 1), "train_time_s": sum(times),
        "train_windows": train_count, "val_windows": val_count, "train_fraction": run.train_fraction,
        "val_margin": best["val/margin"], "val_cos": best["val/cos_sim"], "val_r1": best["val/r1"],
        "val_c0": best["val/c0"], "val_mrr": best["val/mrr"], "dominates": best["val/dominates"],
        "loses_to": best["val/loses_to"],
        "forward": forward_verdict(best, run.selection_metric),
    }


def forward_verdict(best: dict, selection_metric: str) -> dict:
    """Does the published checkpoint predict forward on the selection split, and (for ``forward``) was the
    rule's fallback to dominance used because no checkpoint had a positive margin?"""
    positive = best.get("val/margin") is not None and best["val/margin"] > 0
    verdict = {"positive_margin": positive, "margin": best.get("val/margin")}
    if selection_metric == "forward":
        verdict["fallback"] = None if positive else "dominance"
    return verdict


def choose_contrast(model, data: RunData, run: LvmTrainSettings, device) -> dict:
    """The context contrast (``models.ContextContrast``) chosen on the selection split's mini-5CAT windows by the
    forward rule: among (alpha, slots) with a positive margin the highest c_0; with none, dominance (pairs won
    of the baselines, then margin). alpha 0 is a candidate, so the rule can keep the model as it is."""
    contexts = data.fivecat_windows.contexts(data.bank)
    return contrast_grid(predict(model, contexts, run.batch_size, device), contexts, data, run)


def contrast_grid(base: np.ndarray, contexts: np.ndarray, data: RunData, run: LvmTrainSettings) -> dict:
    """``choose_contrast`` on predictions already made for the mini-5CAT windows (every epoch scores them);
    the grid is ``contrast.alphas`` x ``contrast.slots`` (slots capped at the context length)."""
    context_len = contexts.shape[1]
    grid = []
    for slots in sorted({min(int(k), context_len) for k in run.contrast.slots}):
        recent = contexts[:, -slots:].mean(axis=1)
        for alpha in run.contrast.alphas:
            pred = base - float(alpha) * recent
            pred /= np.maximum(np.linalg.norm(pred, axis=1, keepdims=True), 1e-12)
            scores = mini_fivecat(pred, data.fivecat_windows, data.bank, run.min_article_chunks)
            scores["dominance"] = dominance(scores, data.baselines)
            grid.append({"alpha": float(alpha), "slots": slots, "c0": scores["c0"], "margin": scores["margin"],
                         "mrr": scores["mrr"], "r1": scores["r1"], "wins": scores["dominance"]["wins"],
                         "dominates": scores["dominance"]["dominates"], "loses_to": scores["dominance"]["loses_to"],
                         "peak_offset": scores["peak_offset"]})
    forward = [g for g in grid if g["margin"] is not None and g["margin"] > 0]
    if forward:
        chosen = max(forward, key=lambda g: (g["c0"], g["margin"], -g["alpha"]))
        reason = (f"alpha {chosen['alpha']} over the last {chosen['slots']} slots: selection margin "
                  f"{chosen['margin']:+.4f}, c0 {chosen['c0']:.4f} (the highest c0 of {len(forward)} forward settings)")
    else:
        chosen = max(grid, key=lambda g: (g["wins"], g["margin"] if g["margin"] is not None else -1.0, -g["alpha"]))
        reason = (f"no setting reached a positive selection margin; by dominance: alpha {chosen['alpha']} over "
                  f"{chosen['slots']} slots (margin {chosen['margin']:+.4f}, c0 {chosen['c0']:.4f})")
    untouched = next(g for g in grid if g["alpha"] == 0.0) if any(g["alpha"] == 0.0 for g in grid) else None
    return {"alpha": chosen["alpha"], "slots": chosen["slots"], "chosen": chosen, "without": untouched,
            "rule": "forward" if forward else "dominance", "reason": reason, "grid": grid}


def apply_contrast_to_summary(summary: dict, contrast: dict, selection_metric: str) -> None:
    """The summary's selection numbers become those of the published (contrasted) model; the model's own are
    kept under ``contrast.without``."""
    chosen = contrast["chosen"]
    summary["contrast"] = contrast
    summary.update({"val_c0": chosen["c0"], "val_margin": chosen["margin"], "val_mrr": chosen["mrr"],
                    "val_r1": chosen["r1"], "dominates": chosen["dominates"], "loses_to": chosen["loses_to"]})
    summary["best"] = {**summary["best"], "val/wins": chosen["wins"], "val/margin": chosen["margin"],
                       "val/c0": chosen["c0"], "val/mrr": chosen["mrr"]}
    summary["forward"] = forward_verdict(summary["best"], selection_metric)


def publish(out_dir: Path, partial_dir: Path, state: dict, model, config: dict, summary: dict) -> None:
    """Write DIR atomically with the best checkpoint, then drop the resumable side folder."""
    from vecflow.lvm.models import with_contrast

    if state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    with atomic_dir(out_dir) as tmp:
        save_lvm(tmp, with_contrast(model, config.get("contrast")), config)
        shutil.copyfile(partial_dir / "history.jsonl", tmp / "history.jsonl")
        copy_tracking_record(partial_dir, tmp)  # names the W&B / MLflow runs, when tracking was on
        write_json(tmp / "summary.json", summary)
    shutil.rmtree(partial_dir, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vecflow train-lvm", description=__doc__.split("\n")[0])
    parser.add_argument("--train-windows", required=True, help="training windows (.safetensors)")
    parser.add_argument("--train-embeddings", required=True, help="the training bank they index (.safetensors)")
    parser.add_argument("--train-index", required=True, help="its index (.index.jsonl)")
    parser.add_argument("--val-windows", required=True, help="validation windows (.safetensors)")
    parser.add_argument("--val-embeddings", required=True, help="validation chunk embeddings (.safetensors)")
    parser.add_argument("--val-index", required=True, help="validation chunk index (.index.jsonl)")
    parser.add_argument("--settings", required=True, type=settings_arg,
                        help="lvm.train + run entry, as JSON (vecflow.lvm.settings.LvmTrainSettings)")
    parser.add_argument("--out", required=True, help="output model folder")
    parser.add_argument("--encoder", metavar="DIR",
                        help="the encoder folder the config names: a bank of another encoder or dimension is refused")
    parser.add_argument("--params", metavar="YAML",
                        help="an LVM study's best_params.yaml (hpo-best): its values override the settings "
                             "(losses.<key> into the loss overrides)")
    return parser.parse_args(argv)


def with_study_params(settings: dict, path: str | None) -> dict:
    """``settings`` (as sent, not yet validated) overridden by a study's best parameters (the trial's values,
    exactly as the trial ran)."""
    if not path:
        return settings
    from vecflow.lvm.study_params import lvm_trial_settings, read_lvm_params

    run = LvmTrainSettings.parse(settings)  # names a bad key before the study's values are laid over it
    merged = lvm_trial_settings({"lvm": settings}, read_lvm_params(path), run.run_name or run.run or "lvm")
    return {**merged, "tracking": run.tracking, "params_file": str(path)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = LvmTrainSettings.parse(with_study_params(args.settings, args.params))
    train_lvm(args.train_windows, args.val_windows, args.val_embeddings, args.val_index, run, args.out,
              train_embeddings_path=args.train_embeddings, train_index_path=args.train_index,
              encoder_dir=args.encoder)
    return 0
