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

This module is the command and the run from start to summary; its parts: ``train_data`` (inputs, the selection
split, ``RunData``), ``train_loop`` (one epoch, the context contrast), ``train_scoring`` (the mini-5CAT, the
history record, the selection rule) and ``train_state`` (resumable state, publishing).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vecflow.core.devices import pick_device
from vecflow.core.settings import seed_everything, settings_arg
from vecflow.core.tracking import Tracker
from vecflow.lvm.models import build_model, model_config
from vecflow.lvm.settings import LvmTrainSettings
from vecflow.lvm.train_data import load_run_data
from vecflow.lvm.train_loop import choose_contrast, make_optimizer, run_epoch, score_epoch
from vecflow.lvm.train_scoring import format_epoch_line, forward_verdict, update_best
from vecflow.lvm.train_state import fingerprint, publish, save_state, start_or_resume

UNTRAINED_KEYS = ("val/c0", "val/margin", "val/mrr", "val/r1", "val/cos_sim", "val/mse", "val/wins", "val/dominates")


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
    merged = lvm_trial_settings(run, {}, read_lvm_params(path), run.run_name or run.run or "lvm")
    return {**merged, "tracking": run.tracking, "params_file": str(path)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = LvmTrainSettings.parse(with_study_params(args.settings, args.params))
    train_lvm(args.train_windows, args.val_windows, args.val_embeddings, args.val_index, run, args.out,
              train_embeddings_path=args.train_embeddings, train_index_path=args.train_index,
              encoder_dir=args.encoder)
    return 0
