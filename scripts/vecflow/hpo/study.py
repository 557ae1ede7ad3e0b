"""Hyper-parameter search for the ELM adapter (or, with ``hpo.target: lvm``, a next-vector model) with Optuna:
parallel workers on one shared study.

    vecflow hpo-worker --study elm-demo --storage sqlite:///results/hpo/elm-demo/study.db --worker 0 ...
    vecflow hpo-best   --study elm-demo --storage sqlite:///results/hpo/elm-demo/study.db --workers w0.json,w1.json ...

Each worker opens (or creates) the study, samples with ``TPESampler(seed=seed + worker)``, prunes with a
``MedianPruner`` on the values its trials report, and runs ``trials_per_worker`` trials. The study lives in the
storage (``vecflow.hpo.storage``), so rerunning a worker adds trials and never loses one. A worker that resumes
draws from a sampler seed offset by the trials it already ran, so it does not re-propose its first parameters.

The package, by what each part does:

- ``vecflow.hpo.settings``: the commands' typed settings (the ``hpo`` section, the trials' settings);
- ``vecflow.hpo.space``: the search space, checked, and each trial's parameters drawn from it;
- ``vecflow.hpo.storage``: the storage URL, the shared study, the trials a killed run left;
- ``vecflow.hpo.elm_worker``: the ELM trials (``vecflow.summary.elm_train.train_elm``);
- ``vecflow.hpo.lvm_worker``: the LVM trials (``vecflow.lvm.train.train_lvm``; objective the selection margin,
  constraint c_0 >= the context-mean baseline's c_0, or the two objectives c_0 and margin);
- ``vecflow.hpo.best``: the best trial, the trials table, the importance plot and the Pareto front;
- ``vecflow.hpo.workflow``: what the rules (``workflow/rules/hpo.smk``) ask of the config.

This module is ``vecflow hpo-worker``: the settings are validated once (``vecflow.hpo.settings.worker_settings``),
then the target's worker runs.
"""

from __future__ import annotations

import argparse

from vecflow.core.errors import VecflowError
from vecflow.core.io import write_json
from vecflow.hpo.settings import LvmStudySettings, worker_settings_arg

LVM_INPUTS = ("train_windows", "train_embeddings", "train_index", "val_windows", "val_embeddings", "val_index")
ELM_INPUTS = ("data_dir", "lm", "encoder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vecflow hpo-worker", description="Run ELM (or LVM) trials on a shared Optuna study.")
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--storage", required=True, help="sqlite:///x.db, journal:///x.journal, x.journal or an RDB URL")
    parser.add_argument("--worker", required=True, type=int, help="worker index (sampler seed = seed + index)")
    parser.add_argument("--data-dir", help="ELM: filtered synthesis folder")
    parser.add_argument("--lm", help="ELM: causal LM folder")
    parser.add_argument("--encoder", help="ELM: sentence encoder folder")
    parser.add_argument("--settings", required=True, type=worker_settings_arg,
                        help="{hpo, elm | lvm, seed, device} as JSON (vecflow.hpo.settings)")
    parser.add_argument("--bertscore-model", default=None, help="BERTScore backbone (needed for metric bertscore_f1)")
    parser.add_argument("--train-windows", help="LVM: training windows")
    parser.add_argument("--train-embeddings", help="LVM: the training bank the windows index")
    parser.add_argument("--train-index", help="LVM: its chunk index")
    parser.add_argument("--val-windows", help="LVM: validation windows (used only with selection_fraction 0)")
    parser.add_argument("--val-embeddings", help="LVM: validation chunk embeddings")
    parser.add_argument("--val-index", help="LVM: validation chunk index")
    parser.add_argument("--out", required=True, help="worker JSON")
    return parser


def main_worker(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = args.settings
    target = settings.hpo.target
    lvm = isinstance(settings, LvmStudySettings)
    missing = [f"--{name.replace('_', '-')}" for name in (LVM_INPUTS if lvm else ELM_INPUTS) if not getattr(args, name)]
    if missing:
        raise VecflowError(f"hpo-worker (target {target}): missing {', '.join(missing)}")
    if lvm:
        from vecflow.hpo.lvm_worker import run_lvm_worker

        windows = {"train": args.train_windows, "val": args.val_windows, "val_embeddings": args.val_embeddings,
                   "val_index": args.val_index, "train_embeddings": args.train_embeddings,
                   "train_index": args.train_index}
        record = run_lvm_worker(settings, args.study, args.storage, args.worker, windows)
    else:
        from vecflow.hpo.elm_worker import run_elm_worker

        record = run_elm_worker(settings, args.study, args.storage, args.worker, args.data_dir, args.lm,
                                args.encoder, bertscore_model=args.bertscore_model)
    write_json(args.out, record)
    label = " (lvm)" if lvm else ""
    print(f"[vecflow] hpo-worker {args.worker}{label}: trials {[t['number'] for t in record['trials']]} -> {args.out}")
    return 0
