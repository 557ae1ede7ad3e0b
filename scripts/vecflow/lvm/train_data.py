"""What a ``vecflow train-lvm`` run reads, checked and prepared once (``load_run_data`` -> ``RunData``).

The training windows and bank (a seeded ``train_fraction`` of the windows for a learning-curve run), the
selection split (``selection_fraction`` of the training ARTICLES held out, articles that repeat a training
article's text returned to training; or the ``--val-*`` inputs), the per-epoch loss weights, the mini-5CAT
windows and the baselines' scores on them. ``WindowTensors`` puts windows next to their bank on the training
device, so a batch gathers its context, target and future vectors there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vecflow.core.errors import VecflowError
from vecflow.lvm.bank import ChunkBank, bank_index_rows, load_bank, resident_bank
from vecflow.lvm.baselines import build_baselines
from vecflow.lvm.losses import LossBatch
from vecflow.lvm.presets import resolve_schedule
from vecflow.lvm.settings import LvmTrainSettings
from vecflow.lvm.train_scoring import mini_fivecat, mini_fivecat_sample
from vecflow.lvm.windows import Windows, load_windows


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


# ----------------------------------------------------------------------------------------------- the run's data
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
                    run: LvmTrainSettings) -> tuple[dict, object]:
    """Mini-5CAT scores of copy-last, context-mean and ridge (λ by GCV on ≤ ridge_max_samples training windows),
    and the fitted ridge predictor."""
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
