"""One self-contained HTML report from the pipeline's metric and plot files (never from models).

    vecflow report --artifact config=config/config.yaml --artifact history:p4=results/lvm/p4/history.jsonl \
        --artifact scores:seq2seq=results/eval/seq2seq/scores.json ... --settings '{"title": "..."}' --out report.html

Each ``--artifact`` is ``KEY=PATH`` or, for keys that can repeat, ``KEY:NAME=PATH`` (see ``ARTIFACT_KEYS``).
Every key is optional: a section with none of its artifacts says "not run". The page has inline CSS, PNGs
inlined as ``data:image/png;base64`` URIs, no JavaScript and no external URL. Text is HTML-escaped by the
template (jinja2 autoescape). Only the files named on the command line are read (plus the template).
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

from vecflow.core.errors import VecflowError, where
from vecflow.core.io import iter_jsonl, read_json, sha256_file, write_text
from vecflow.core.settings import settings_arg

# key -> True when it repeats as KEY:NAME (one per run/model), False when it appears at most once
ARTIFACT_KEYS = {
    "config": False, "manifest": True, "data": True,
    "ingest_stats": False, "filter_stats": False, "leakage": False, "split_ids": False,
    "direction": False, "direction_plot": False,
    "history": True, "tracking": True,
    "fivecat": True, "fivecat_plot": True, "lvm_curve": False, "lvm_curve_plot": False,
    "scores": True, "examples": True, "train_summary": True,
    "hpo_trials": False, "hpo_importance": False, "hpo_params": False,
    "decision": False,
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SPLIT_ORDER = ("train", "val", "ood")
FIVECAT_METRICS = ("c0", "margin", "peak_k", "r1", "r5", "mrr", "rollout")
NOT_PLOTTED = {"epoch", "step", "time"}
MAX_TABLE_ROWS = 200
MAX_LIST_ITEMS = 8


# ------------------------------------------------------------------------------------ artifact arguments
def parse_artifact(text: str) -> tuple[str, str | None, Path]:
    """``KEY=PATH`` or ``KEY:NAME=PATH`` -> (key, name, path); a bad spec or a missing file is a VecflowError."""
    spec, sep, path = text.partition("=")
    if not sep or not spec or not path:
        raise VecflowError(f"--artifact '{text}': expected KEY=PATH or KEY:NAME=PATH")
    key, _, name = spec.partition(":")
    if key not in ARTIFACT_KEYS:
        raise VecflowError(f"--artifact '{text}': unknown key '{key}' (known: {', '.join(ARTIFACT_KEYS)})")
    if ARTIFACT_KEYS[key] and not name:
        raise VecflowError(f"--artifact '{text}': key '{key}' needs a name, e.g. {key}:NAME=PATH")
    if not ARTIFACT_KEYS[key] and name:
        raise VecflowError(f"--artifact '{text}': key '{key}' takes no :NAME")
    if not Path(path).is_file():
        raise VecflowError(f"--artifact '{text}': {path}: file not found")
    return key, name or None, Path(path)


def collect_artifacts(specs: list[str]) -> dict[str, dict[str | None, Path]]:
    """All ``--artifact`` specs as ``{key: {name: path}}`` (name None for single keys); duplicates are errors."""
    artifacts: dict[str, dict[str | None, Path]] = {}
    for text in specs:
        key, name, path = parse_artifact(text)
        runs = artifacts.setdefault(key, {})
        if name in runs:
            raise VecflowError(f"--artifact '{text}': {key}{':' + name if name else ''} given twice")
        runs[name] = path
    return artifacts


def specs_from_json(path: str | Path) -> list[str]:
    """``--artifacts-json F``: a JSON object ``{"KEY[:NAME]": "PATH"}`` turned into ``KEY=PATH`` specs."""
    mapping = read_json(path)
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise VecflowError(f"{path}: expected a JSON object of \"KEY[:NAME]\": \"PATH\"")
    return [f"{key}={value}" for key, value in mapping.items()]


def one(artifacts: dict, key: str) -> Path | None:
    return artifacts.get(key, {}).get(None)


def named(artifacts: dict, key: str) -> dict[str, Path]:
    return dict(sorted(artifacts.get(key, {}).items()))


# --------------------------------------------------------------------------------------------- readers
def read_yaml(path: Path):
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise VecflowError(f"{where(path, None if line is None else line + 1)}: invalid YAML") from None


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise VecflowError(f"{path}: empty CSV (no header)")
    return rows[0], rows[1:]


def read_json_object(path: Path) -> dict:
    value = read_json(path)
    if not isinstance(value, dict):
        raise VecflowError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def png_data_uri(path: Path) -> str:
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise VecflowError(f"{path}: not a PNG file")
    return png_bytes_uri(data)


def png_bytes_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------------------------- cells and blocks
@dataclass(frozen=True)
class Cell:
    text: str
    cls: str = ""


def cell(value, cls: str = "") -> Cell:
    """One table cell: formatted text plus a CSS class (numbers right-aligned, booleans pass/fail)."""
    if isinstance(value, bool):
        return Cell("pass" if value else "fail", "pass" if value else "fail")
    if isinstance(value, (int, float)):
        return Cell(str(value) if isinstance(value, int) else format_number(value), cls or "num")
    if value is None:
        return Cell("—", cls)
    if isinstance(value, list):
        return Cell(describe_list(value), cls)
    if isinstance(value, dict):
        return Cell(json.dumps(value, sort_keys=True)[:300], cls)
    return Cell(str(value), cls)


def format_number(value: float) -> str:
    if value != value or abs(value) == float("inf"):
        return str(value)
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3g}"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"


def describe_list(items: list) -> str:
    shown = ", ".join(str(item) for item in items[:MAX_LIST_ITEMS])
    more = ", …" if len(items) > MAX_LIST_ITEMS else ""
    return f"{len(items)} items" + (f": {shown}{more}" if items else "")


def table(columns: list[str], rows: list[list], heading: str = "", caption: str = "") -> dict:
    cells = [[value if isinstance(value, Cell) else cell(value) for value in row] for row in rows]
    if len(cells) > MAX_TABLE_ROWS:
        caption = f"{caption} (first {MAX_TABLE_ROWS} of {len(cells)} rows)".strip()
        cells = cells[:MAX_TABLE_ROWS]
    return {"kind": "table", "heading": heading, "caption": caption, "columns": columns, "rows": cells}


def image(data_uri: str, caption: str, heading: str = "") -> dict:
    return {"kind": "image", "heading": heading, "caption": caption, "data_uri": data_uri}


def details(summary: str, text: str, heading: str = "") -> dict:
    return {"kind": "details", "heading": heading, "summary": summary, "text": text}


def banner(text: str, passed: bool) -> dict:
    return {"kind": "banner", "heading": "", "text": text, "cls": "pass" if passed else "fail"}


def not_run(what: str) -> dict:
    return {"kind": "not_run", "heading": "", "text": f"{what}: not run"}


def flatten(obj, prefix: str = "") -> list[tuple[str, object]]:
    """Nested dicts as (dotted key, leaf value) pairs, in key order; lists stay leaves."""
    if not isinstance(obj, dict):
        return [(prefix or "value", obj)]
    pairs = []
    for key, value in obj.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        pairs += flatten(value, dotted) if isinstance(value, dict) and value else [(dotted, value)]
    return pairs


def key_value_table(obj, heading: str) -> dict:
    return table(["key", "value"], [[key, value] for key, value in flatten(obj)], heading=heading)


def dig(obj, dotted: str):
    """``obj['a']['b']`` for ``'a.b'``, or None when any part is missing."""
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


# ------------------------------------------------------------------------------------------- sections
def lineage_section(artifacts: dict, settings: dict, git_revision: str, generated: str) -> list[dict]:
    blocks = [table(["item", "value"], [
        ["generated", generated], ["git revision", git_revision],
        ["config hash (settings)", settings.get("config_hash")],
    ], heading="Run")]
    config = one(artifacts, "config")
    if config is None:
        blocks.append(not_run("config"))
    else:
        blocks.append(table(["file", "sha256"], [[str(config), sha256_file(config)]], heading="Config"))
        blocks.append(details(f"show {config.name}", config.read_text(encoding="utf-8")))
    manifests = named(artifacts, "manifest")
    if manifests:
        rows = [manifest_row(name, path) for name, path in manifests.items()]
        blocks.append(table(["name", "model", "source", "files", "sha256 of file hashes"], rows, heading="Models"))
    data_files = named(artifacts, "data")
    if data_files:
        rows = [[name, str(path), path.stat().st_size, sha256_file(path)] for name, path in data_files.items()]
        blocks.append(table(["name", "path", "bytes", "sha256"], rows, heading="Input data"))
    tracked = named(artifacts, "tracking")
    if tracked:
        rows = [row for name, path in tracked.items() for row in tracking_rows(name, path)]
        blocks.append(table(["training", "backend", "run name", "run id", "where"], rows,
                            heading="Experiment tracking",
                            caption="W&B offline runs upload later with `wandb sync DIR` (see README)"))
    return blocks


def tracking_rows(name: str, path: Path) -> list[list]:
    """One row per W&B / MLflow run named by a training folder's tracking.json (vecflow.core.tracking)."""
    runs = read_json_object(path).get("runs")
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise VecflowError(f"{path}: field 'runs': expected a list of objects (written by vecflow.core.tracking)")
    rows = []
    for run in runs:
        if run.get("backend") == "wandb":
            where_text = f"{run.get('dir')} (mode {run.get('mode')}, project {run.get('project')})"
        else:
            where_text = (f"{run.get('tracking_uri')}, experiment {run.get('experiment')} "
                          f"(id {run.get('experiment_id')})")
        rows.append([name, run.get("backend"), run.get("run_name"), run.get("run_id"), where_text])
    return rows


def manifest_row(name: str, path: Path) -> list:
    manifest = read_json_object(path)
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise VecflowError(f"{path}: field 'files': expected an object of path -> sha256")
    listing = "".join(f"{rel} {digest}\n" for rel, digest in sorted(files.items()))
    source = manifest.get("source", {})
    source_text = source if isinstance(source, str) else ", ".join(f"{k}={v}" for k, v in source.items() if v)
    return [name, manifest.get("name", name), source_text, len(files), hashlib.sha256(listing.encode()).hexdigest()]


def data_section(artifacts: dict) -> list[dict]:
    labels = {"ingest_stats": "Ingest stats", "filter_stats": "Filter stats",
              "leakage": "Split leakage check", "split_ids": "Split ids"}
    blocks = []
    for key, label in labels.items():
        path = one(artifacts, key)
        blocks.append(not_run(label) if path is None else key_value_table(read_json(path), label))
    return blocks


def diagnostics_section(artifacts: dict) -> list[dict]:
    blocks = []
    path = one(artifacts, "direction")
    if path is None:
        blocks.append(not_run("direction diagnostics"))
    else:
        direction = read_json_object(path)
        passed = dig(direction, "gate.passed")
        if isinstance(passed, bool):
            blocks.append(banner("data-direction gate passed" if passed else "data-direction gate FAILED", passed))
        blocks.append(key_value_table(direction, "Data direction"))
    plot = one(artifacts, "direction_plot")
    blocks.append(not_run("direction plot") if plot is None else image(png_data_uri(plot), "cosine by context slot"))
    return blocks


def training_section(artifacts: dict) -> list[dict]:
    blocks = []
    for name, path in named(artifacts, "history").items():
        records = [record for _, record in iter_jsonl(path)]
        x_key, terms = history_axes(records)
        if not terms:
            blocks.append({"kind": "note", "heading": name, "text": f"{path}: no numeric terms to plot"})
            continue
        png = plot_history(records, x_key, terms, title=name)
        blocks.append(image(png_bytes_uri(png), f"{name}: {len(terms)} terms vs {x_key}", heading=name))
        last = records[-1]
        blocks.append(table(["term", f"last ({x_key} {last.get(x_key, len(records))})"],
                            [[term, last.get(term)] for term in terms]))
    return blocks


def history_axes(records: list[dict]) -> tuple[str, list[str]]:
    """The x axis (epoch, else step, else record number) and every numeric term worth plotting."""
    x_key = next((k for k in ("epoch", "step") if any(k in r for r in records)), "record")
    terms: list[str] = []
    for record in records:
        for key, value in record.items():
            wanted = key.startswith(("train/", "val/")) or key not in NOT_PLOTTED
            if wanted and _is_number(value) and key != x_key and key not in terms:
                terms.append(key)
    return x_key, terms


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def plot_history(records: list[dict], x_key: str, terms: list[str], title: str) -> bytes:
    """One PNG: a small panel per term against ``x_key`` (records without ``x_key`` are skipped)."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    columns = min(3, len(terms))
    rows = -(-len(terms) // columns)
    fig = Figure(figsize=(4.2 * columns, 2.8 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, term in zip(axes.flat, terms):
        points = [(r.get(x_key, i), r[term]) for i, r in enumerate(records)
                  if _is_number(r.get(term)) and (x_key == "record" or x_key in r)]
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=3)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel(x_key, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(terms):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    return buffer.getvalue()


def fivecat_section(artifacts: dict) -> list[dict]:
    blocks = []
    runs, plots = named(artifacts, "fivecat"), named(artifacts, "fivecat_plot")
    for run in sorted(set(runs) | set(plots)):
        if run in runs:
            blocks += fivecat_tables(run, read_json_object(runs[run]))
        if run in plots:
            blocks.append(image(png_data_uri(plots[run]), f"{run}: offset sweep c_k", heading=f"{run}: plot"))
    return blocks + learning_curve_blocks(artifacts)


def dominance_banners(run: str, report: dict) -> list[dict]:
    """One line per split: does the model beat every baseline on c0, MRR and margin, else what it loses to."""
    verdicts = report.get("dominance") or {}
    return [banner(f"{run} — {v.get('line', split)}", bool(v.get("dominates")))
            for split, v in sorted(verdicts.items(), key=lambda item: _split_rank(item[0]))
            if isinstance(v, dict)]


def _split_rank(split: str):
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def learning_curve_blocks(artifacts: dict) -> list[dict]:
    """The LVM learning curve: a table (windows x predictor x split) and its plot."""
    blocks = []
    curve_path, plot_path = one(artifacts, "lvm_curve"), one(artifacts, "lvm_curve_plot")
    if curve_path:
        curve = read_json_object(curve_path)
        metrics = ["c0", "mrr", "margin", "r1", "r5"]
        rows = [[r.get("train_windows"), r.get("split"), r.get("predictor"), *(r.get(m) for m in metrics)]
                for r in sorted(curve.get("rows", []), key=lambda r: (_split_rank(r.get("split", "")),
                                                                       r.get("predictor", ""), r.get("train_windows") or 0))]
        blocks.append(table(["train windows", "split", "predictor", *metrics], rows, heading="LVM learning curve",
                            caption="the selected recipe on shares of the training windows; baselines alongside"))
    if plot_path:
        blocks.append(image(png_data_uri(plot_path), "c0, MRR and margin against training windows",
                            heading="LVM learning curve: plot"))
    return blocks


def fivecat_tables(run: str, report: dict) -> list[dict]:
    """Model vs baselines per split (headline metrics, offsets, ablations), then gates and thresholds."""
    model = report.get("model", {}) or {}
    baselines = report.get("baselines", {}) or {}
    gates = report.get("gates", {}) or {}
    thresholds = report.get("thresholds", {}) or {}
    contenders = {"model": model, **baselines}
    blocks = dominance_banners(run, report)
    splits = {s for c in contenders.values() if isinstance(c, dict) for s, v in c.items() if isinstance(v, dict)}
    for split in sorted(splits, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s)):
        by_name = {name: c[split] for name, c in contenders.items()
                   if isinstance(c, dict) and isinstance(c.get(split), dict)}
        blocks += fivecat_split_tables(run, split, by_name, gates.get(split, {}), thresholds.get(split, {}))
    if gates:
        blocks.append(key_value_table(gates, f"{run}: gates"))
    if thresholds:
        blocks.append(key_value_table(thresholds, f"{run}: thresholds"))
    return blocks


def fivecat_split_tables(run: str, split: str, by_name: dict, gates: dict, thresholds: dict) -> list[dict]:
    scalars = [m for m in FIVECAT_METRICS if any(m in v for v in by_name.values())]
    scalars += sorted({k for v in by_name.values() for k, x in v.items()
                       if k not in scalars and _is_number(x)})
    gates = gates if isinstance(gates, dict) else {}
    rows = [[name, *(gated_cell(values.get(m), gates.get(m)) if name == "model" else values.get(m) for m in scalars)]
            for name, values in by_name.items()]
    if isinstance(thresholds, dict) and thresholds:
        rows.append(["threshold"] + [thresholds.get(metric) for metric in scalars])
    blocks = [table(["", *scalars], rows, heading=f"{run}: {split}")]
    for part in ("offsets", "ablations"):
        blocks += nested_metric_table(f"{run}: {split} {part}", {n: v.get(part) for n, v in by_name.items()})
    return blocks


def gated_cell(value, verdict):
    """A model metric coloured by its gate verdict when the gates give one (True/False)."""
    return cell(value, "num pass" if verdict else "num fail") if isinstance(verdict, bool) else value


def nested_metric_table(heading: str, by_name: dict) -> list[dict]:
    """Rows per contender, columns the union of keys of a nested dict such as offsets {k: c_k}."""
    present = {name: dict(flatten(value)) for name, value in by_name.items() if isinstance(value, dict) and value}
    if not present:
        return []
    columns = sorted({k for v in present.values() for k in v}, key=_offset_order)
    rows = [[name, *(values.get(c) for c in columns)] for name, values in present.items()]
    return [table(["", *columns], rows, heading=heading)]


def _offset_order(key: str):
    try:
        return (0, int(key), "")
    except ValueError:
        return (1, 0, key)


def summaries_section(artifacts: dict) -> list[dict]:
    blocks = []
    scores = named(artifacts, "scores")
    if scores:
        loaded = {name: read_json_object(path) for name, path in scores.items()}
        blocks.append(family_comparison(loaded, named(artifacts, "train_summary"), named(artifacts, "history")))
        blocks.append(scores_table(loaded))
        curve = selection_curve_plot(named(artifacts, "history"))
        if curve is not None:
            blocks.append(curve)
    for name, path in named(artifacts, "examples").items():
        blocks.append(examples_table(name, read_json_object(path)))
    return blocks


SCORE_COLUMNS = {
    "n": "n", "ROUGE-1 F": "rouge.rouge1.f", "ROUGE-2 F": "rouge.rouge2.f", "ROUGE-L F": "rouge.rougeL.f",
    "ROUGE-Lsum F": "rouge.rougeLsum.f", "BERTScore F1": "bertscore.f1", "F1 std": "bertscore.f1_std",
    "BERTScore P": "bertscore.p", "BERTScore R": "bertscore.r", "empty": "empty_predictions",
    "pred words": "mean_pred_words", "ref words": "mean_ref_words",
    "tag rate pred": "speaker_tag_rate.predictions", "tag rate ref": "speaker_tag_rate.references",
}


COMPARISON_COLUMNS = {
    "ROUGE-1": "rouge.rouge1.f", "ROUGE-2": "rouge.rouge2.f", "ROUGE-L": "rouge.rougeL.f",
    "ROUGE-Lsum": "rouge.rougeLsum.f", "BERTScore F1": "bertscore.f1", "mean words": "mean_pred_words",
    "with speaker tags": "speaker_tag_rate.predictions", "distinct": "input_dependence.distinct_ratio",
    "own − shuffled R-1": "input_dependence.margin",
}


def family_comparison(scores: dict[str, dict], train_summaries: dict[str, Path], histories: dict[str, Path]) -> dict:
    """One table: every summary family of the run on the same dialogues and scorer, the best ROUGE-L marked."""
    best = max(scores, key=lambda name: dig(scores[name], "rouge.rougeL.f") or -1.0)
    rows = []
    for name, s in scores.items():
        minutes, samples, rate = training_cost(name, train_summaries.get(name), histories.get(name))
        label = f"{name} (best ROUGE-L)" if name == best and len(scores) > 1 else name
        rows.append([label, dig(s, "n"), *(dig(s, path) for path in COMPARISON_COLUMNS.values()),
                     minutes, samples, rate])
    return table(["family", "n", *COMPARISON_COLUMNS, "train minutes", "samples seen", "samples/s"], rows,
                 heading="Summary families compared",
                 caption="every family trained in this run, scored on the same dialogues with the same scorer; "
                         "distinct = share of distinct predictions; own − shuffled R-1 = ROUGE-1 against the own "
                         "references minus against other dialogues' (≤ 0: the model ignores its input)")


def training_cost(name: str, summary_path: Path | None, history_path: Path | None) -> tuple:
    """(minutes, samples seen, samples/s) from a summarizer's summary.json, or from an ELM history's step times."""
    if summary_path is not None and summary_path.exists():
        summary = read_json_object(summary_path)
        minutes, samples = summary.get("train_minutes"), summary.get("samples_seen")
        rate = samples / (minutes * 60) if minutes and samples else None
        return minutes, samples, rate
    if history_path is not None and history_path.exists():
        records = [r for _, r in iter_jsonl(history_path)]
        seconds = sum(float(r.get("time/step_s", 0.0)) for r in records if _is_number(r.get("time/step_s")))
        if seconds:
            return seconds / 60, None, None
    return None, None, None


def selection_curve_plot(histories: dict[str, Path]) -> dict | None:
    """Selection ROUGE-1/ROUGE-L against samples seen, one line per summarizer family (the learning curve)."""
    curves = {}
    for name, path in histories.items():
        if not path.exists():
            continue
        points = [r for _, r in iter_jsonl(path) if _is_number(r.get("samples_seen")) and _is_number(r.get("val/rouge1"))]
        if points:
            curves[name] = points
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=100)
    for name, points in curves.items():
        xs = [p["samples_seen"] for p in points]
        ax.plot(xs, [p["val/rouge1"] for p in points], marker="o", label=f"{name} ROUGE-1")
        ax.plot(xs, [p["val/rougeL"] for p in points], marker=".", linestyle="--", label=f"{name} ROUGE-L")
    ax.set_xlabel("training samples seen")
    ax.set_ylabel("selection split score")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return image(png_bytes_uri(buffer.getvalue()), "learning curve: selection split (carved from train) score "
                 "against samples seen, per summarizer family", heading="Summarizer learning curves")


def scores_table(scores: dict[str, dict]) -> dict:
    rows = [[name, *(dig(s, path) for path in SCORE_COLUMNS.values())] for name, s in scores.items()]
    backbone = {f"{dig(s, 'bertscore.model')} (layers {dig(s, 'bertscore.num_layers')})" for s in scores.values()}
    return table(["model", *SCORE_COLUMNS], rows, heading="Scores",
                 caption="BERTScore backbone: " + "; ".join(sorted(backbone)))


def examples_table(name: str, examples: dict) -> dict:
    rows = []
    for group in ("best", "worst"):
        for example in examples.get(group, []) or []:
            scores = example.get("scores", {}) or {}
            rows.append([group, example.get("id"), scores.get("rougeL"), scores.get("bertscore_f1"),
                         example.get("prediction"), " | ".join(map(str, example.get("references", []) or []))])
    ranked = examples.get("ranked_by", "rougeL.f")
    return table(["", "id", "ROUGE-L F", "BERTScore F1", "prediction", "references"], rows,
                 heading=f"{name}: examples", caption=f"best and worst by {ranked}")


def hpo_section(artifacts: dict) -> list[dict]:
    blocks = []
    trials = one(artifacts, "hpo_trials")
    if trials is None:
        blocks.append(not_run("trials"))
    else:
        columns, rows = read_csv(trials)
        blocks.append(table(columns, [[_number_or_text(v) for v in row] for row in rows], heading="Trials"))
    plot = one(artifacts, "hpo_importance")
    blocks.append(not_run("importance plot") if plot is None else image(png_data_uri(plot), "parameter importance"))
    params = one(artifacts, "hpo_params")
    if params is None:
        blocks.append(not_run("best parameters"))
    else:
        blocks.append(key_value_table(read_yaml(params) or {}, "Best parameters"))
    return blocks


def _number_or_text(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def deploy_section(artifacts: dict) -> list[dict]:
    path = one(artifacts, "decision")
    if path is None:
        return []
    decision = read_json_object(path)
    gates = [g for g in decision.get("gates", []) or [] if isinstance(g, dict)]
    deploy = bool(decision.get("deploy"))
    name = decision.get("name", "")
    blocks = [banner(f"DEPLOY {name}" if deploy else f"NOT DEPLOYED {name}", deploy),
              {"kind": "note", "heading": "", "text": deciding_gate(decision, gates)}]
    rows = [[g.get("component"), g.get("gate"), g.get("value"), g.get("threshold"), g.get("passed")] for g in gates]
    blocks.append(table(["component", "gate", "value", "threshold", "passed"], rows, heading="Gates"))
    return blocks


def deciding_gate(decision: dict, gates: list[dict]) -> str:
    """The first failed gate with its value and threshold, or that all gates passed."""
    failed = decision.get("failed") or [g for g in gates if g.get("passed") is False]
    if not failed:
        return f"all {len(gates)} gates passed"
    first = failed[0] if isinstance(failed[0], dict) else find_gate(str(failed[0]), gates)
    text = str(failed[0]) if first is None else (
        f"{first.get('component', '')} {first.get('gate', '')}: value {first.get('value')}, "
        f"threshold {first.get('threshold')}"
    )
    return f"deciding gate: {text}" + (f" (and {len(failed) - 1} more failed)" if len(failed) > 1 else "")


def find_gate(label: str, gates: list[dict]) -> dict | None:
    """The gate named ``label`` as ``gate`` or ``component.gate``, if the list has it."""
    for gate in gates:
        if label in (gate.get("gate"), f"{gate.get('component')}.{gate.get('gate')}"):
            return gate
    return None


SECTIONS = (  # id, title, the keys that belong to it
    ("lineage", "Lineage", ("config", "manifest", "data", "tracking")),
    ("data", "Data", ("ingest_stats", "filter_stats", "leakage", "split_ids")),
    ("diagnostics", "Data-direction diagnostics", ("direction", "direction_plot")),
    ("training", "Training curves", ("history",)),
    ("fivecat", "5CAT", ("fivecat", "fivecat_plot", "lvm_curve", "lvm_curve_plot")),
    ("summaries", "Summaries", ("scores", "examples")),
    ("hpo", "HPO", ("hpo_trials", "hpo_importance", "hpo_params")),
    ("deploy", "Deploy", ("decision",)),
)


def build_sections(artifacts: dict, settings: dict, git_revision: str, generated: str) -> list[dict]:
    builders = {
        "lineage": lambda: lineage_section(artifacts, settings, git_revision, generated),
        "data": lambda: data_section(artifacts),
        "diagnostics": lambda: diagnostics_section(artifacts),
        "training": lambda: training_section(artifacts),
        "fivecat": lambda: fivecat_section(artifacts),
        "summaries": lambda: summaries_section(artifacts),
        "hpo": lambda: hpo_section(artifacts),
        "deploy": lambda: deploy_section(artifacts),
    }
    sections = []
    for section_id, title, keys in SECTIONS:
        ran = section_id == "lineage" or any(key in artifacts for key in keys)
        sections.append({"id": section_id, "title": title, "blocks": builders[section_id]() if ran else []})
    return sections


# ------------------------------------------------------------------------------------------ rendering
def git_revision(cwd: str | Path = ".") -> str:
    """``git rev-parse HEAD`` in ``cwd`` (marked when the tree has uncommitted changes), else "unknown"."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")


def render_html(title: str, sections: list[dict], git_rev: str, generated: str, config_hash: str | None) -> str:
    import jinja2

    template_text = resources.files("vecflow.ship").joinpath("report_template.html").read_text(encoding="utf-8")
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(template_text).render(
        title=title, sections=sections, git_revision=git_rev, generated=generated, config_hash=config_hash
    )


def build_report(artifacts: dict, settings: dict, cwd: str | Path = ".") -> str:
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    git_rev = git_revision(cwd)
    sections = build_sections(artifacts, settings, git_rev, generated)
    return render_html(settings.get("title", "vecflow report"), sections, git_rev, generated,
                       settings.get("config_hash"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vecflow report", description="Self-contained HTML report.")
    parser.add_argument("--artifact", action="append", default=[], metavar="KEY[:NAME]=PATH",
                        help=f"a metric/plot file; keys: {', '.join(ARTIFACT_KEYS)}")
    parser.add_argument("--artifacts-json", help="optional JSON object {\"KEY[:NAME]\": \"PATH\"} (more artifacts)")
    parser.add_argument("--settings", required=True, type=settings_arg, help="the 'report' config section")
    parser.add_argument("--out", required=True, help="output HTML file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    specs = list(args.artifact) + (specs_from_json(args.artifacts_json) if args.artifacts_json else [])
    artifacts = collect_artifacts(specs)
    html_text = build_report(artifacts, args.settings)
    write_text(args.out, html_text)
    print(f"[vecflow] report with {sum(map(len, artifacts.values()))} artifacts -> {args.out}", flush=True)
    return 0
