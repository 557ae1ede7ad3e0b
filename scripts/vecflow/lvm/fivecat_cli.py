"""``vecflow fivecat`` and ``vecflow lvm-curve``: 5CAT of a trained LVM from files, and the learning curve.

    vecflow fivecat --model DIR --train-windows F --train-embeddings F --train-index F \
        --split val=WINDOWS,EMBEDDINGS,INDEX --split ood=... --settings S --out-json F --out-plot F
    vecflow lvm-curve --point RUN=FIVECAT_JSON,MODEL_DIR ... --out-json F --out-plot F

``vecflow fivecat`` reads the evaluation splits (a seeded subsample of ``max_samples`` windows each), fits the
baselines on the training windows (the ridge baseline on the same share a learning-curve run trained on),
scores the model and every baseline (``vecflow.lvm.fivecat``), adds the verdicts (``fivecat_verdicts``), writes
the results file (``fivecat_results``) and the offset-sweep plot. ``vecflow lvm-curve`` gathers several runs'
5CAT results and training summaries into the learning curve (table and plot).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vecflow.core.devices import pick_device
from vecflow.core.errors import VecflowError
from vecflow.core.io import atomic_path, read_json, write_json
from vecflow.core.settings import seed_everything
from vecflow.lvm.bank import ChunkBank, load_bank
from vecflow.lvm.baselines import Predictor, build_baselines
from vecflow.lvm.fivecat import OFFSETS, evaluate_predictor, generalisation_gaps
from vecflow.lvm.fivecat_results import read_results, write_results
from vecflow.lvm.fivecat_verdicts import beats_baselines, dominance_verdicts, format_metric, gate_counts, gates
from vecflow.lvm.settings import FivecatSettings
from vecflow.lvm.windows import Windows, load_windows

DESCRIPTION = "5CAT: the five-category evaluation of a next-vector (LVM) model, with baselines (docs/design.md §4)."


# ---------------------------------------------------------------------------------------------- inputs
def subsample(windows: Windows, max_samples: int, seed: int) -> Windows:
    """A seeded subset of at most ``max_samples`` windows, kept in file order (0 = all)."""
    if not max_samples or len(windows) <= max_samples:
        return windows
    rows = np.sort(np.random.default_rng(seed).choice(len(windows), size=max_samples, replace=False))
    return windows.subset(rows)


def load_splits(split_args: list[tuple[str, tuple[str, str, str]]], max_samples: int, seed: int,
                encoder_dir: str | None = None) -> dict[str, tuple[Windows, ChunkBank]]:
    splits = {}
    for name, (windows_path, embeddings_path, index_path) in split_args:
        if name in splits:
            raise VecflowError(f"--split: split '{name}' given twice")
        bank = load_bank(embeddings_path, index_path, encoder_dir=encoder_dir)
        windows = load_windows(windows_path, bank)
        splits[name] = (subsample(windows, max_samples, seed), bank)
    return splits


def model_predictor(model_dir: str, device, batch_size: int) -> Predictor:
    from vecflow.lvm.models import load_lvm, predict

    model = load_lvm(model_dir, device)
    return lambda contexts: predict(model, contexts, batch_size, device)


# ---------------------------------------------------------------------------------------------- plot
def plot_offsets(curves: dict[str, dict], out_path: str | Path) -> None:
    """c_k against k, one panel per split, one line per predictor (``curves``: {predictor: {split: metrics}})."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = list(next(iter(curves.values())))
    fig, axes = plt.subplots(1, len(splits), figsize=(5 * len(splits), 4), squeeze=False, sharey=True)
    for ax, split in zip(axes[0], splits):
        for name, results in curves.items():
            offsets = results[split]["offsets"]
            ks = [int(k) for k, v in offsets.items() if v["c"] is not None]
            ax.plot(ks, [offsets[str(k)]["c"] for k in ks], marker="o", label=name,
                    linewidth=2.5 if name == "model" else 1.2)
        ax.axvline(0, color="grey", linestyle=":", linewidth=1)
        ax.set(title=f"{split}: cos(ŷ, chunk[t+k])", xlabel="k (0 = true target, -1 = ctx[-1])",
               xticks=list(OFFSETS))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean cosine")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- CLI
def parse_split(text: str) -> tuple[str, tuple[str, str, str]]:
    """``NAME=WINDOWS,EMBEDDINGS,INDEX`` -> (name, (windows, embeddings, index))."""
    name, sep, paths = text.partition("=")
    parts = paths.split(",")
    if not sep or not name or len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(f"--split '{text}': expected NAME=WINDOWS,EMBEDDINGS,INDEX")
    return name, tuple(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vecflow fivecat", description=DESCRIPTION)
    parser.add_argument("--model", required=True, help="trained LVM folder (read with vecflow.lvm.models)")
    parser.add_argument("--train-windows", required=True, help="TRAIN windows; the ridge baseline is fitted on them")
    parser.add_argument("--train-embeddings", required=True, help="the TRAIN bank those windows index")
    parser.add_argument("--train-index", required=True, help="its index JSONL")
    parser.add_argument("--split", action="append", required=True, type=parse_split,
                        metavar="NAME=WINDOWS,EMBEDDINGS,INDEX", help="an evaluation split (repeat: val, ood)")
    parser.add_argument("--settings", required=True, type=FivecatSettings.from_json,
                        help="the lvm.fivecat config section (vecflow.lvm.settings.FivecatSettings)")
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--out-plot", required=True)
    parser.add_argument("--encoder", metavar="DIR",
                        help="the encoder folder the config names: a bank of another encoder or dimension is refused")
    return parser


def run_fivecat(model: Predictor, baselines: dict[str, Predictor], splits: dict, settings: FivecatSettings) -> dict:
    """Score the model and every baseline on every split; add gates, gaps and the baseline comparison."""
    options = {"rollout_steps": settings.rollout_steps, "min_article_chunks": settings.min_article_chunks,
               "seed": settings.seed, "ca_negatives": settings.ca_negatives}
    thresholds = settings.thresholds.model_dump()
    model_results = evaluate_predictor(model, splits, **options)
    baseline_results = {name: evaluate_predictor(predict, splits, **options) for name, predict in baselines.items()}
    verdicts = gates(model_results, thresholds)
    ridge = baselines.get("ridge")
    return {
        "ridge": {"lambda": getattr(ridge, "ridge_lambda", None),
                  "gcv": {str(k): v for k, v in (getattr(ridge, "gcv", None) or {}).items()}},
        "model": model_results,
        "baselines": baseline_results,
        "generalisation": generalisation_gaps(model_results),
        "gates": verdicts,
        "gate_counts": gate_counts(verdicts),
        "thresholds": thresholds,
        "beats_baselines": beats_baselines(model_results, baseline_results),
        "dominance": dominance_verdicts(model_results, baseline_results),
        "settings": settings.received,
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = args.settings
    seed = settings.seed
    seed_everything(seed)
    splits = load_splits(args.split, settings.max_samples, seed, args.encoder)
    train_bank = load_bank(args.train_embeddings, args.train_index, encoder_dir=args.encoder)
    train = load_windows(args.train_windows, train_bank)
    fraction = float(settings.train_fraction)  # a learning-curve run: ridge sees the same share
    if fraction < 1.0:
        train = subsample(train, max(1, round(fraction * len(train))), seed)
    train = subsample(train, settings.ridge_max_samples, seed)
    baselines = build_baselines(train.contexts(train_bank), train.targets(train_bank), settings.ridge_lambda,
                                settings.ridge_lambdas)
    device = pick_device(settings.device)
    model = model_predictor(args.model, device, settings.batch_size)
    report = run_fivecat(model, baselines, splits, settings)
    plot_offsets({"model": report["model"], **report["baselines"]}, args.out_plot)
    write_results(args.out_json, report)
    print(_summary_line(report), flush=True)
    return 0


def _summary_line(report: dict) -> str:
    parts = [f"{split}: c0={m['c0']:.3f} margin={format_metric(m['margin'])} peak_k={m['peak_k']} r1={format_metric(m['r1'])}"
             for split, m in report["model"].items()]
    gate = report["gate_counts"]
    verdicts = " | ".join(v["line"] for v in report.get("dominance", {}).values())
    return f"[vecflow] 5CAT {'; '.join(parts)}; gates {gate['passed']}/{gate['total']} passed\n[vecflow] {verdicts}"


# ---------------------------------------------------------------------------------------------- learning curve
CURVE_METRICS = ("c0", "mrr", "margin", "r1", "r5")


def learning_curve(points: list[dict]) -> dict:
    """Rows {run, train_windows, split, predictor, c0, mrr, margin, r1, r5} from each run's 5CAT report and
    training summary (``points``: [{"run", "fivecat": report, "summary": summary}]), sorted by windows."""
    rows = []
    for point in sorted(points, key=lambda p: p["summary"].get("train_windows", 0)):
        report = point["fivecat"]
        contenders = {"model": report.get("model", {}), **report.get("baselines", {})}
        for predictor, splits in contenders.items():
            for split, metrics in splits.items():
                rows.append({"run": point["run"], "train_windows": point["summary"].get("train_windows"),
                             "train_fraction": point["summary"].get("train_fraction", 1.0), "split": split,
                             "predictor": predictor, **{m: metrics.get(m) for m in CURVE_METRICS}})
    verdicts = {p["run"]: {s: v["line"] for s, v in p["fivecat"].get("dominance", {}).items()} for p in points}
    return {"rows": rows, "dominance": verdicts}


def plot_learning_curve(curve: dict, out_path: str | Path) -> None:
    """c_0, MRR and margin against training windows (log x), one row of panels per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = curve["rows"]
    splits = sorted({r["split"] for r in rows}, key=lambda s: ("val", "ood").index(s) if s in ("val", "ood") else 9)
    metrics = ("c0", "mrr", "margin")
    fig, axes = plt.subplots(len(splits), len(metrics), figsize=(4.2 * len(metrics), 3.4 * len(splits)),
                             squeeze=False)
    for i, split in enumerate(splits):
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            for predictor in dict.fromkeys(r["predictor"] for r in rows):
                points = [(r["train_windows"], r[metric]) for r in rows
                          if r["split"] == split and r["predictor"] == predictor and r[metric] is not None]
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, marker="o", label=predictor, linewidth=2.5 if predictor == "model" else 1.0,
                            linestyle="-" if predictor in ("model", "ridge") else "--")
            ax.set(xscale="log", title=f"{split}: {metric}", xlabel="training windows")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out_path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main_curve(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow lvm-curve",
                                     description="LVM learning curve: 5CAT of one recipe against training windows")
    parser.add_argument("--point", action="append", required=True, metavar="RUN=FIVECAT_JSON,MODEL_DIR",
                        help="one trained run (repeat): its 5CAT report and its model folder (summary.json)")
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--out-plot", required=True)
    args = parser.parse_args(argv)
    points = []
    for text in args.point:
        run, sep, paths = text.partition("=")
        parts = paths.split(",")
        if not sep or not run or len(parts) != 2:
            raise VecflowError(f"--point '{text}': expected RUN=FIVECAT_JSON,MODEL_DIR")
        summary_path = Path(parts[1]) / "summary.json"
        if not summary_path.is_file():
            raise VecflowError(f"{summary_path}: file not found (not a trained LVM folder)")
        points.append({"run": run, "fivecat": read_results(parts[0]), "summary": read_json(summary_path)})
    curve = learning_curve(points)
    plot_learning_curve(curve, args.out_plot)
    write_json(args.out_json, curve)
    print(f"[vecflow] learning curve over {len(points)} runs -> {args.out_json}", flush=True)
    return 0
