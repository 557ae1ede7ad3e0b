"""One self-contained HTML report from the pipeline's metric and plot files (never from models).

    vecflow report --artifact config=config/config.yaml --artifact history:lvm-p4=results/lvm/models/p4/history.jsonl \
        --artifact scores:seq2seq=results/eval/seq2seq/scores.json ... --benchmarks results/benchmarks \
        --settings '{"title": "...", "compare_with": ""}' --out report.html

Each ``--artifact`` is ``KEY=PATH`` or, for keys that can repeat, ``KEY:NAME=PATH`` (see ``ARTIFACT_KEYS``).
``--benchmarks DIR`` adds every Snakemake benchmark file under DIR (``benchmark:RULE[/WILDCARDS]``); the folder
is read when the report job runs, after every job upstream, so the rule does not declare those files as inputs
(that would re-run a finished training job only to get its benchmark file). Every key is optional: a section
with none of its artifacts says "not run".

The page opens on a summary (each track's models beside their baselines with the winner marked, the deploy
decision and its deciding gate, data sizes, wall time per rule), then the details folded in DAG order, with a
table of contents that names the same sections. ``settings.compare_with`` names a previous results folder: its
headline metrics (read by ``vecflow.ship.compare``) are shown beside this run's, with deltas.

The page has inline CSS, PNGs inlined as ``data:image/png;base64`` URIs, no JavaScript and no external URL. Text
is HTML-escaped by the template (jinja2 autoescape). Only the files named on the command line (and the
benchmark folder, and the compared run's headline files) are read, plus the template.
"""

from __future__ import annotations

import argparse
import base64
import csv
import functools
import hashlib
import io
import json
import re
from datetime import datetime, timezone
from pathlib import Path

from vecflow.core.errors import VecflowError, where
from vecflow.core.io import atomic_path, iter_jsonl, read_json, read_json_object, sha256_file, write_text
from vecflow.core.settings import settings_arg
from vecflow.lvm.fivecat_results import read_results
from vecflow.ship.page import (
    Cell,
    banner,
    cell,
    delta_cell,
    details,
    flatten,
    fold,
    git_revision,
    image,
    is_counts,
    is_number,
    key_value_table,
    not_run,
    note,
    render_html,
    table,
    verdict,
    winner_cell,
)

# key -> True when it repeats as KEY:NAME (one per run/model), False when it appears at most once
ARTIFACT_KEYS = {
    "config": False, "manifest": True, "data": True,
    "ingest_stats": False, "filter_stats": False, "leakage": False, "split_ids": False,
    "direction": False, "direction_plot": False,
    "history": True, "tracking": True,
    "fivecat": True, "fivecat_plot": True, "lvm_curve": False, "lvm_curve_plot": False,
    "scores": True, "examples": True, "train_summary": True,
    "hpo_trials": False, "hpo_importance": False, "hpo_params": False, "hpo_pareto": False, "hpo_pareto_plot": False,
    "lvm_seeds": False,
    "decision": False, "benchmark": True,
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk (type and CRC): a whole PNG ends with it
SPLIT_ORDER = ("train", "selection", "val", "ood")
FIVECAT_METRICS = ("c0", "margin", "peak_k", "r1", "r5", "mrr", "ca", "par", "rollout")
LVM_HISTORY_PREFIX = "lvm-"  # history:lvm-RUN is an LVM run's training log (common.smk artifact_args)


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


def benchmark_specs(folder: str | Path) -> list[str]:
    """``benchmark:NAME=PATH`` for every ``*.tsv`` under a Snakemake benchmark folder (NAME: the path below it
    without .tsv, e.g. ``predict_summarizer/causal``); an absent folder has none (no benchmarked job ran)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return [f"benchmark:{p.relative_to(root).with_suffix('').as_posix()}={p}" for p in sorted(root.rglob("*.tsv"))]


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


def read_csv(path: Path, delimiter: str = ",") -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter=delimiter))
    if not rows:
        raise VecflowError(f"{path}: empty CSV (no header)")
    return rows[0], rows[1:]


def read_benchmark(path: Path) -> dict:
    """A Snakemake benchmark TSV (one row per repeat: s, h:m:s, max_rss, ..., cpu_time) -> mean seconds, peak
    RSS in MB and mean CPU seconds; '-' or NA (not measured) reads as None."""
    header, rows = read_csv(path, delimiter="\t")
    if "s" not in header:
        raise VecflowError(f"{path}: not a Snakemake benchmark file (no 's' column in the header)")
    if not rows:
        raise VecflowError(f"{path}: benchmark file has a header but no row")

    def column(name: str) -> list[float]:
        if name not in header:
            return []
        at, values = header.index(name), []
        for lineno, row in enumerate(rows, start=2):
            text = row[at] if at < len(row) else ""
            if text in ("", "-", "NA", "nan"):
                continue
            try:
                values.append(float(text))
            except ValueError:
                raise VecflowError(f"{where(path, lineno)}: column '{name}': '{text}' is not a number") from None
        return values

    seconds, rss, cpu = column("s"), column("max_rss"), column("cpu_time")
    return {"s": sum(seconds) / len(seconds) if seconds else None, "max_rss_mb": max(rss) if rss else None,
            "cpu_s": sum(cpu) / len(cpu) if cpu else None, "repeats": len(rows)}


def png_data_uri(path: Path) -> str:
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise VecflowError(f"{path}: not a PNG file")
    return png_bytes_uri(data)


def png_bytes_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def dig(obj, dotted: str):
    """``obj['a']['b']`` for ``'a.b'``, or None when any part is missing."""
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _split_rank(split: str):
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def hms(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def best_of(values: list) -> float | None:
    numbers = [v for v in values if is_number(v)]
    return max(numbers) if len(numbers) > 1 else None  # a column of one has no winner to mark

# ---------------------------------------------------------------------------------------------- summary
SUMMARY_LVM_METRICS = {"c0": "c_0", "margin": "margin", "mrr": "MRR", "r5": "R@5", "ca": "CA", "par": "PAR"}
UNRANKED_LVM_METRICS = ("par",)  # no winner mark: PAR is not "higher is better"
BASELINE_ORDER = ("copy_last", "context_mean", "ridge")


def summary_section(run: dict) -> list[dict]:
    """The answer first: deploy decision, one table per track (winner marked), data sizes, wall time."""
    blocks = deploy_summary(run["decision"]) if run["decision"] is not None else []
    if run["fivecat"]:
        blocks += lvm_summary(run["fivecat"])
    if run["scores"]:
        blocks.append(family_table(run["scores"], heading="Summaries: every family on the same dialogues",
                                   caption="★ best in its column (higher is better); distinct = share of distinct "
                                           "predictions; own − shuffled R-1 = ROUGE-1 against the own references "
                                           "minus against other dialogues' (≤ 0: the model ignores its input)"))
    sizes = data_sizes_table(run)
    if sizes is not None:
        blocks.append(sizes)
    if run["benchmarks"]:
        blocks.append(wall_time_table(run["benchmarks"]))
    if not blocks:
        blocks.append(note("no headline metric among the artifacts (5CAT reports, summary scores, deploy decision)"))
    return blocks


def train_fraction(report: dict) -> float:
    fraction = dig(report, "settings.train_fraction")
    return float(fraction) if is_number(fraction) else 1.0


def lvm_summary(reports: dict[str, dict]) -> list[dict]:
    """One table: each LVM run's model beside its baselines on VAL and OOD (c_0, margin, MRR, R@5), the best of
    each column marked. Runs with the same baseline numbers share one set of baseline rows; learning-curve
    runs (a share of the training windows) are left to the details when a full run exists."""
    full = {r: rep for r, rep in reports.items() if train_fraction(rep) >= 1.0} or dict(reports)
    left_out = [r for r in reports if r not in full]
    splits = sorted({s for rep in full.values() for s, v in (rep.get("model") or {}).items() if isinstance(v, dict)},
                    key=_split_rank)
    groups: dict[str, list[str]] = {}
    for name, rep in full.items():
        groups.setdefault(baseline_signature(rep, splits), []).append(name)
    columns = ["model / baseline"] + [f"{s.upper()} {label}" for s in splits for label in SUMMARY_LVM_METRICS.values()]
    rows = []
    for runs in groups.values():
        baselines = {k: v for k, v in (full[runs[0]].get("baselines") or {}).items() if isinstance(v, dict)}
        names = [n for n in BASELINE_ORDER if n in baselines] + sorted(n for n in baselines if n not in BASELINE_ORDER)
        suffix = f" (data of {', '.join(runs)})" if len(groups) > 1 else ""
        contenders = [(run, full[run].get("model") or {}, "model") for run in runs]
        contenders += [(n.replace("_", "-") + suffix, baselines[n], "baseline") for n in names]
        values = [[dig(c, f"{s}.{m}") for s in splits for m in SUMMARY_LVM_METRICS] for _, c, _ in contenders]
        ranked = [m not in UNRANKED_LVM_METRICS for _ in splits for m in SUMMARY_LVM_METRICS]
        best = [best_of(list(column)) if rank else None for column, rank in zip(zip(*values), ranked)]
        for (label, _, kind), row in zip(contenders, values):
            rows.append([Cell(label, kind)] + [winner_cell(v, b is not None and v == b) for v, b in zip(row, best)])
    caption = ("★ best in its column among the models and their baselines (higher is better; PAR unmarked). c_0: "
               "mean cosine of the prediction to the true next chunk; margin: c_0 minus the best other offset c_k; "
               "MRR, R@5: rank of the true next chunk among its article's chunks; CA (contrastive accuracy, Large "
               "Concept Model): share of candidate chunks (a seeded sample outside the article, the article's own "
               "but t-1, t, t+1) farther from the prediction than the true next chunk; PAR: the prediction's highest "
               "cosine to a context chunk over the true next chunk's (> 1: closer to the context than the next "
               "chunk is)")
    if left_out:
        caption += f". Learning-curve runs ({', '.join(left_out)}) are in the details"
    blocks = [table(columns, rows, heading="Next-vector models (5CAT)", caption=caption, cls="summary")]
    lines = [f"{name}: {v.get('line')}" for name, rep in full.items()
             for _, v in sorted((rep.get("dominance") or {}).items(), key=lambda item: _split_rank(item[0]))
             if isinstance(v, dict) and v.get("line")]
    if lines:
        beaten = sum(1 for rep in full.values() for v in (rep.get("dominance") or {}).values()
                     if isinstance(v, dict) and v.get("dominates"))
        blocks.append({"kind": "list", "heading": "", "lines": lines,
                       "summary": f"beats every baseline on c_0, MRR and margin: {beaten} of {len(lines)} "
                                  "run × split (the verdicts)"})
    return blocks


def baseline_signature(report: dict, splits: list[str]) -> str:
    baselines = report.get("baselines") or {}
    numbers = {name: [dig(b, f"{s}.{m}") for s in splits for m in SUMMARY_LVM_METRICS]
               for name, b in baselines.items() if isinstance(b, dict)}
    return json.dumps(numbers, sort_keys=True, default=lambda v: round(v, 6))


# the baseline first, then the families, each ELM variant followed by its re-ranked predictions
FAMILY_ORDER = ("retrieval", "seq2seq", "causal", "elm", "elm_rerank", "elm_rag", "elm_rag_rerank")
BASELINES = {"retrieval": "retrieval (baseline: nearest training dialogue's summary)"}


def _family_order(name: str):
    return (FAMILY_ORDER.index(name) if name in FAMILY_ORDER else len(FAMILY_ORDER), name)


def family_metric_columns() -> dict[str, str]:
    """Column title -> dotted field of scores.json: the deploy decision's metric fields, then input dependence."""
    from vecflow.ship.deploy import METRIC_FIELDS

    titles = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum",
              "bertscore_f1": "BERTScore F1"}
    columns = {titles.get(metric, metric): field for metric, field in METRIC_FIELDS.items()}
    columns.update({"distinct": "input_dependence.distinct_ratio", "own − shuffled R-1": "input_dependence.margin",
                    "semantic consistency": "semantic_consistency.prediction"})
    return columns


def family_table(scores: dict[str, dict], heading: str, caption: str, extra: dict | None = None,
                 cost=None) -> dict:
    """One row per summary family (seq2seq, causal, elm), the best of each metric column marked; ``extra``
    columns (title -> field) and ``cost`` (family -> list of cells) are shown unmarked."""
    metrics, extra = family_metric_columns(), extra or {}
    names = sorted(scores, key=_family_order)
    best = {title: best_of([dig(scores[n], field) for n in names]) for title, field in metrics.items()}
    rows = []
    for name in names:
        s = scores[name]
        row = [BASELINES.get(name, name), *(dig(s, f) for f in extra.values())]
        row += [winner_cell(dig(s, field), best[t] is not None and dig(s, field) == best[t]) for t, field in metrics.items()]
        rows.append(row + (cost(name) if cost else []))
    columns = ["family", *extra, *metrics] + (["train minutes", "samples seen", "samples/s"] if cost else [])
    return table(columns, rows, heading=heading, caption=caption, cls="summary")


def deploy_summary(decision: dict) -> list[dict]:
    gates = [g for g in decision.get("gates", []) or [] if isinstance(g, dict)]
    deploy, name = bool(decision.get("deploy")), decision.get("name", "")
    blocks = [banner(f"DEPLOY {name}" if deploy else f"NOT DEPLOYED {name}", deploy),
              note(deciding_gate(decision, gates))]
    chosen = decision.get("summarizer") or {}
    if isinstance(chosen, dict) and chosen.get("family"):
        compared = chosen.get("compared") or {}
        among = ", ".join(f"{f} {cell(v).text}" for f, v in compared.items()) if isinstance(compared, dict) else ""
        blocks.append(note(f"summarizer: {chosen['family']} (deploy.summarizer {chosen.get('choice', '?')}, by "
                           f"{chosen.get('metric', '?')}{': ' + among if among else ''})"))
    return blocks


def data_sizes_table(run: dict) -> dict | None:
    """Articles, chunks, windows, dialogues and ELM rows per split, from the data stages' own reports."""
    rows: dict[str, dict] = {}
    leakage = run["json"].get("leakage")
    for split, counts in ((leakage or {}).get("counts") or {}).items():
        if isinstance(counts, dict):
            for key in ("articles", "chunks"):
                rows.setdefault(key, {})[split] = counts.get(key)
    direction = run["json"].get("direction")
    if direction and is_number(direction.get("n_windows")):
        rows.setdefault("windows", {})["train"] = direction["n_windows"]
    reports = [rep for rep in run["fivecat"].values() if train_fraction(rep) >= 1.0] or list(run["fivecat"].values())
    for split, metrics in ((reports[0].get("model") or {}) if reports else {}).items():
        if isinstance(metrics, dict) and is_number(metrics.get("n_windows")):
            rows.setdefault("windows", {})[split] = metrics["n_windows"]
    for key, label, field in (("ingest_stats", "dialogues", "dialogues"), ("filter_stats", "ELM rows", "rows_kept")):
        for split, stats in ((run["json"].get(key) or {}).get("splits") or {}).items():
            if isinstance(stats, dict) and field in stats:
                rows.setdefault(label, {})[split] = stats[field]
    if not rows:
        return None
    splits = sorted({s for values in rows.values() for s in values}, key=_split_rank)
    notes = {"windows": "windows: TRAIN as the direction diagnostics read them, VAL/OOD as 5CAT scored them "
                        "(after lvm.fivecat.max_samples)",
             "ELM rows": "ELM rows: summary-task rows kept by the filter"}
    return table(["data", *splits], [[label, *(values.get(s) for s in splits)] for label, values in rows.items()],
                 heading="Data sizes", cls="summary", caption="; ".join(notes[k] for k in notes if k in rows))


def wall_time_rows(benchmarks: dict[str, dict]) -> list[tuple[str, int, float, float | None, float | None]]:
    """(rule, jobs, wall s, CPU s, peak RSS MB) per rule from the benchmark files, slowest first."""
    per_rule: dict[str, list[dict]] = {}
    for name, bench in benchmarks.items():
        per_rule.setdefault(name.split("/")[0], []).append(bench)
    rows = []
    for rule, benches in per_rule.items():
        cpu = [b["cpu_s"] for b in benches if b["cpu_s"] is not None]
        rss = [b["max_rss_mb"] for b in benches if b["max_rss_mb"] is not None]
        rows.append((rule, len(benches), sum(b["s"] or 0.0 for b in benches), sum(cpu) if cpu else None,
                     max(rss) if rss else None))
    return sorted(rows, key=lambda row: -row[2])


def wall_time_table(benchmarks: dict[str, dict]) -> dict:
    rows = [[rule, jobs, hms(wall), hms(cpu), rss] for rule, jobs, wall, cpu, rss in wall_time_rows(benchmarks)]
    total = sum(b["s"] or 0.0 for b in benchmarks.values())
    rows.append([Cell("total", "total"), len(benchmarks), hms(total), None, None])
    return table(["rule", "jobs", "wall (h:m:s)", "CPU (h:m:s)", "peak RSS (MB)"], rows,
                 heading="Wall time per stage (Snakemake rule)", cls="summary",
                 caption="from Snakemake's benchmark files (results/benchmarks); rules without a benchmark: line "
                         "are not counted. Per job in the details")

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


def split_table(splits: dict, heading: str = "", caption: str = "") -> dict:
    """Rows: the fields of per-split statistics (nested keys joined with ' › '); columns: the splits."""
    names = sorted((s for s, v in splits.items() if isinstance(v, dict)), key=_split_rank)
    flat = {s: dict(flatten(splits[s], keep=is_counts)) for s in names}
    keys = list(dict.fromkeys(k for s in names for k in flat[s]))
    rows = [[k.replace(".", " › "), *(flat[s].get(k) for s in names)] for k in keys]
    return table(["", *names], rows, heading=heading, caption=caption)


def stats_blocks(stats, heading: str, split_key: str = "splits") -> list[dict]:
    """Per-split statistics as one table (splits as columns) and the remaining keys as a short key/value one."""
    if not isinstance(stats, dict) or not isinstance(stats.get(split_key), dict):
        return [key_value_table(stats, heading)]
    blocks = [split_table(stats[split_key], heading=heading)]
    rest = {k: v for k, v in stats.items() if k != split_key}
    if rest:
        blocks.append(key_value_table(rest, "", caption=f"{heading}: settings and checks"))
    return blocks


def split_ids_table(ids) -> dict:
    if not isinstance(ids, dict):
        return key_value_table(ids, "Split ids")
    rows = [[split, len(v) if isinstance(v, list) else None, v] for split, v in
            sorted(ids.items(), key=lambda item: _split_rank(item[0]))]
    return table(["split", "articles", "article ids"], rows, heading="Split ids")


def data_section(run: dict) -> list[dict]:
    blocks = []
    labels = {"ingest_stats": ("Dialogues (ingest)", "splits"), "filter_stats": ("ELM rows (summary filter)", "splits"),
              "leakage": ("Article split and leakage check", "counts")}
    for key, (label, split_key) in labels.items():
        stats = run["json"].get(key)
        blocks += [not_run(label)] if stats is None else stats_blocks(stats, label, split_key)
    ids = run["json"].get("split_ids")
    blocks.append(not_run("Split ids") if ids is None else split_ids_table(ids))
    return blocks


def diagnostics_section(run: dict, artifacts: dict) -> list[dict]:
    blocks = []
    direction = run["json"].get("direction")
    if direction is None:
        blocks.append(not_run("direction diagnostics"))
    else:
        passed = dig(direction, "gate.passed")
        if isinstance(passed, bool):
            blocks.append(banner("data-direction gate passed" if passed else "data-direction gate FAILED", passed))
        pos = direction.get("pos")
        if isinstance(pos, list) and pos:
            slots = [f"ctx[{i - len(pos)}]" for i in range(len(pos))]
            blocks.append(table(slots, [pos], heading="Mean cosine of each context slot to the target",
                                caption="should rise towards the last slot (ctx[-1])"))
        blocks.append(key_value_table({k: v for k, v in direction.items() if k != "pos"}, "Data direction"))
    plot = one(artifacts, "direction_plot")
    blocks.append(not_run("direction plot") if plot is None else image(png_data_uri(plot), "cosine by context slot"))
    return blocks


# ------------------------------------------------------------------------------------------- histories
LVM_VAL_METRICS = ("val/c0", "val/margin", "val/r1")
SUMMARY_VAL_METRICS = ("val/rouge1", "val/rouge2", "val/rougeL", "val/rougeLsum", "val/bertscore_f1",
                       "val/input_dependence/margin")
X_KEYS = ("step", "epoch")


def history_x(records: list[dict]) -> str:
    """The x axis: step when it changes between records, else epoch, else the record number."""
    for key in X_KEYS:
        values = [r[key] for r in records if is_number(r.get(key))]
        if len(set(values)) > 1:
            return key
    return next((k for k in ("epoch", "step") if any(k in r for r in records)), "record")


def classify_history(records: list[dict]) -> dict:
    """Split a training log's numeric series: loss panels (term -> lines), validation metrics, other series
    that change, and constant ones (listed, not drawn).

    An LVM log (it has val/c0) pairs train/T with val/T for each loss term T and draws val c_0, margin and
    R@1; a summarizer log draws every series named ``loss`` and the validation ROUGE / BERTScore."""
    x_key = history_x(records)
    series: dict[str, list[tuple[float, float]]] = {}
    for i, record in enumerate(records):
        x = i if x_key == "record" else record.get(x_key)
        if not is_number(x):
            continue
        for key, value in record.items():
            if key not in X_KEYS and is_number(value):
                series.setdefault(key, []).append((x, value))
    constant = {k: pts[0][1] for k, pts in series.items() if len({y for _, y in pts}) == 1}
    varying = [k for k in series if k not in constant]
    panels: dict[str, dict[str, list]] = {}
    if "val/c0" in series:
        for key in varying:
            if key.startswith(("train/", "val/")) and f"train/{key.split('/', 1)[1]}" in series:
                term = key.split("/", 1)[1]
                panels.setdefault(term, {})
                for side in ("train", "val"):
                    if f"{side}/{term}" in series:
                        panels[term][side] = series[f"{side}/{term}"]
        metrics = [k for k in LVM_VAL_METRICS if k in series]
    else:
        for key in varying:
            if "loss" in key.split("/"):
                panels[key] = {key: series[key]}
        metrics = [k for k in SUMMARY_VAL_METRICS if k in varying]
    if not any(k in varying for k in metrics):
        metrics = []
    drawn = {f"{side}/{term}" if side in ("train", "val") else side for term, p in panels.items() for side in p}
    drawn |= set(metrics)
    other = [k for k in varying if k not in drawn]
    constant = {k: v for k, v in constant.items() if k not in drawn}
    return {"x": x_key, "series": series, "panels": panels, "metrics": metrics, "other": other,
            "constant": constant, "records": len(records)}


def plot_panels(panels: dict[str, dict[str, list]], title: str, x_key: str, columns: int = 3) -> bytes:
    """One PNG: a panel per entry, one line per series in it (no pyplot: no global state, no GUI backend)."""
    from matplotlib.figure import Figure

    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    fig = Figure(figsize=(4.2 * columns, 2.9 * rows) if columns > 1 else (6.4, 3.4))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, (panel, lines) in zip(axes.flat, panels.items()):
        for label, points in lines.items():
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o", markersize=3, label=label)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel(x_key, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ plot cache
PLOT_KEY = re.compile(r"^[0-9a-f]{64}\.png$")


class PlotCache:
    """Drawn plots kept in a folder between report jobs, so a regeneration redraws only what changed.

    A plot's file is named by the SHA-256 of everything that decides its pixels: the plotting code (this
    module's source, which holds ``plot_panels`` and the history classification), the matplotlib version, the
    SHA-256 of each input file it was drawn from, and the exact data, titles and layout passed to
    ``plot_panels``. A changed input or plotting code gives a new name, so a plot drawn from old inputs is
    never found for new ones (it cannot be shown stale); writes are atomic, and a file that is not a whole PNG
    is redrawn. ``prune`` removes the plots this report did not use, so the folder holds one report's plots.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.used: set[str] = set()
        self.drawn: list[str] = []
        self.reused: list[str] = []
        self._file_hashes: dict[Path, str] = {}

    @staticmethod
    @functools.cache
    def code_version() -> str:
        """The plotting code's version: this module's source and matplotlib's version (without importing it)."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            matplotlib = version("matplotlib")
        except PackageNotFoundError:
            matplotlib = "absent"
        source = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
        return f"{source}:matplotlib={matplotlib}"

    def _hash(self, path: Path) -> str:
        path = Path(path)
        if path not in self._file_hashes:
            self._file_hashes[path] = sha256_file(path)
        return self._file_hashes[path]

    def key(self, spec: dict, sources: list[Path]) -> str:
        blob = json.dumps({"code": self.code_version(), "inputs": [self._hash(p) for p in sources], "plot": spec},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get_or_draw(self, spec: dict, sources: list[Path], draw) -> bytes:
        key = self.key(spec, sources)
        path = self.folder / f"{key}.png"
        self.used.add(path.name)
        data = path.read_bytes() if path.is_file() else b""
        if data.startswith(PNG_SIGNATURE) and data.endswith(PNG_END):
            self.reused.append(spec.get("title", ""))
            return data
        data = draw()
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        self.drawn.append(spec.get("title", ""))
        return data

    def prune(self) -> None:
        """Remove the cached plots this report did not use (older inputs' plots)."""
        if not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            if PLOT_KEY.match(path.name) and path.name not in self.used:
                path.unlink(missing_ok=True)


_plot_cache: PlotCache | None = None  # set by build_report while it builds a page with --plot-cache


def draw_plot(panels: dict[str, dict[str, list]], title: str, x_key: str, columns: int = 3,
              sources: tuple | list = ()) -> bytes:
    """``plot_panels``, through the plot cache when the report has one (``sources``: the input files)."""
    if _plot_cache is None:
        return plot_panels(panels, title, x_key, columns)
    spec = {"panels": panels, "title": title, "x": x_key, "columns": columns}
    return _plot_cache.get_or_draw(spec, [Path(p) for p in sources],
                                   lambda: plot_panels(panels, title, x_key, columns))


def history_blocks(name: str, path: Path, records: list[dict], heading: str = "") -> list[dict]:
    """A training log as at most two figures (loss terms that change; validation metrics), a table of the
    other series that change (first, last, min, max) and the constant ones listed."""
    if not records:
        return [note(f"{path}: empty training log", heading=heading)]
    h = classify_history(records)
    blocks = []
    if h["panels"]:
        png = draw_plot(h["panels"], f"{name}: loss terms", h["x"], sources=[path])
        blocks.append(image(png_bytes_uri(png), f"{name}: loss terms that change ({', '.join(h['panels'])}) "
                                                f"by {h['x']}"))
    if h["metrics"]:
        png = draw_plot({"validation": {k: h["series"][k] for k in h["metrics"]}}, f"{name}: validation",
                        h["x"], columns=1, sources=[path])
        blocks.append(image(png_bytes_uri(png), f"{name}: {', '.join(h['metrics'])} by {h['x']}"))
    if h["other"]:
        rows = [[k, pts[0][1], pts[-1][1], min(y for _, y in pts), max(y for _, y in pts)]
                for k in h["other"] for pts in [h["series"][k]]]
        blocks.append(table(["series", "first", "last", "min", "max"], rows,
                            caption=f"{name}: other series that change ({h['records']} records)"))
    if h["constant"]:
        lines = [f"{k} = {cell(v).text}" for k, v in h["constant"].items()]
        what = (f"{len(lines)} values of its one record (nothing to draw)" if h["records"] == 1 else
                f"{len(lines)} constant series, not drawn")
        blocks.append({"kind": "list", "heading": "", "lines": lines, "summary": f"{name}: {what}"})
    if blocks:
        blocks[0] = {**blocks[0], "heading": heading}
    return blocks

# ------------------------------------------------------------------------------------------------- LVM
def lvm_section(run: dict, artifacts: dict) -> list[dict]:
    """Per LVM run: its training figures, the 5CAT verdict and tables, the offset sweep (model and baselines on
    the same axes); then the learning curve."""
    plots = named(artifacts, "fivecat_plot")
    histories = {n[len(LVM_HISTORY_PREFIX):]: n for n in run["histories"] if n.startswith(LVM_HISTORY_PREFIX)}
    blocks = []
    for name in sorted(set(run["fivecat"]) | set(plots) | set(histories)):
        part = []
        if name in histories:
            history = histories[name]
            part += history_blocks(name, run["history_paths"][history], run["histories"][history])
        report = run["fivecat"].get(name)
        if report is not None:
            part += dominance_banners(name, report)
        if name in plots:
            part.append(image(png_data_uri(plots[name]), f"{name}: offset sweep c_k (k = 0: the true next chunk), "
                                                         "the model and the baselines on the same axes"))
        if report is not None:
            part += fivecat_tables(name, report)
        if part:
            part[0] = {**part[0], "heading": f"LVM run {name}"}
        blocks += part
    return blocks + seeds_blocks(artifacts) + learning_curve_blocks(artifacts)


def dominance_banners(run: str, report: dict) -> list[dict]:
    """One line per split: does the model beat every baseline on c0, MRR and margin, else what it loses to."""
    verdicts = report.get("dominance") or {}
    return [banner(f"{run} — {v.get('line', split)}", bool(v.get("dominates")), small=True)
            for split, v in sorted(verdicts.items(), key=lambda item: _split_rank(item[0]))
            if isinstance(v, dict)]


SEED_METRICS = ("c0", "margin", "mrr", "r1", "ca", "par")


def seeds_blocks(artifacts: dict) -> list[dict]:
    """One recipe over several seeds (lvm-seeds): the model's 5CAT as mean ± sd beside the baselines, and the
    forward verdicts made on the mean."""
    path = one(artifacts, "lvm_seeds")
    if not path:
        return []
    record = read_json_object(path)
    rows, verdicts = [], []
    for split, result in sorted(record.get("splits", {}).items(), key=lambda item: _split_rank(item[0])):
        model = result.get("model", {})
        rows.append([split, f"model (mean ± sd, {record.get('seeds')} seeds)",
                     *(_mean_sd_text(model.get(m)) for m in SEED_METRICS)])
        for name, base in result.get("baselines", {}).items():
            rows.append([split, name, *(base.get(m) for m in SEED_METRICS)])
        verdict = result.get("verdict", {})
        verdicts.append([split, "met" if verdict.get("met") else "missed", verdict.get("line", "")])
    runs = ", ".join(record.get("runs", []))
    return [table(["split", "predictor", *SEED_METRICS], rows, heading="LVM recipe over seeds",
                  caption=f"runs {runs}; CA = contrastive accuracy (share of candidates farther from the prediction than the target), PAR = the prediction's highest context cosine over the true next chunk's (> 1: it copies the context)"),
            table(["split", "forward (margin > 0, c0 >= context mean, MRR > ridge)", "on the mean"], verdicts,
                  heading="Forward verdicts")]


def _mean_sd_text(value) -> str:
    if not isinstance(value, dict) or value.get("mean") is None:
        return "n/a"
    return f"{value['mean']:.4f} ± {value.get('sd') or 0.0:.4f}"


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
    """Model vs baselines per split (headline metrics with thresholds, offsets, ablations), then the gates."""
    model = report.get("model", {}) or {}
    baselines = report.get("baselines", {}) or {}
    gates = report.get("gates", {}) or {}
    thresholds = report.get("thresholds", {}) or {}
    contenders = {"model": model, **baselines}
    blocks = []
    splits = {s for c in contenders.values() if isinstance(c, dict) for s, v in c.items() if isinstance(v, dict)}
    for split in sorted(splits, key=_split_rank):
        by_name = {name: c[split] for name, c in contenders.items()
                   if isinstance(c, dict) and isinstance(c.get(split), dict)}
        blocks += fivecat_split_tables(run, split, by_name, gates.get(split, {}), thresholds.get(split, {}))
    folded = [fold(f"{run}: 5CAT tables (model and baselines per split, offsets c_k, ablations)", blocks)]
    if isinstance(gates, dict) and gates:
        folded.insert(0, gates_table(run, gates, report.get("generalisation"), thresholds))
    return folded


def gates_table(run: str, gates: dict, gaps, thresholds: dict) -> dict:
    """Gate verdicts: rows per split (and the VAL−OOD generalisation gaps), columns per metric."""
    metrics = list(dict.fromkeys(m for v in gates.values() if isinstance(v, dict) for m in v))
    rows = []
    for split, verdicts in sorted(gates.items(), key=lambda item: _split_rank(item[0])):
        if isinstance(verdicts, dict):
            rows.append([split, *(verdict(verdicts.get(m)) for m in metrics)])
        else:
            rows.append([split, verdict(verdicts), *([None] * (len(metrics) - 1))])
    if isinstance(gaps, dict) and gaps:
        rows.append(["VAL − OOD gap", *(gaps.get(m) for m in metrics)])
    gap = thresholds.get("max_generalisation_gap") if isinstance(thresholds, dict) else None
    caption = f"{run}: gates (pass/fail against lvm.fivecat.thresholds" + (f"; max gap {gap}" if gap is not None else "")
    return table(["gate", *metrics], rows, caption=caption + ")")


def fivecat_split_tables(run: str, split: str, by_name: dict, gates: dict, thresholds: dict) -> list[dict]:
    scalars = [m for m in FIVECAT_METRICS if any(m in v for v in by_name.values())]
    scalars += sorted({k for v in by_name.values() for k, x in v.items()
                       if k not in scalars and is_number(x)})
    gates = gates if isinstance(gates, dict) else {}
    rows = [[name, *(gated_cell(values.get(m), gates.get(m)) if name == "model" else values.get(m) for m in scalars)]
            for name, values in by_name.items()]
    if isinstance(thresholds, dict) and thresholds:
        rows.append(["threshold"] + [thresholds.get(metric) for metric in scalars])
    blocks = [table(["", *scalars], rows, caption=f"{run}: {split.upper()}, model and baselines")]
    for part in ("offsets", "ablations"):
        blocks += nested_metric_table(f"{run}: {split.upper()} {part}", {n: v.get(part) for n, v in by_name.items()})
    return blocks


def gated_cell(value, verdict):
    """A model metric coloured by its gate verdict when the gates give one (True/False)."""
    return cell(value, "num pass" if verdict else "num fail") if isinstance(verdict, bool) else value


def nested_metric_table(caption: str, by_name: dict) -> list[dict]:
    """Rows per contender, columns the keys of a nested dict such as offsets {k: {c, n}} (shown as c)."""
    def leaf(value):
        return value.get("c") if isinstance(value, dict) and "c" in value else value

    present = {name: {k: leaf(v) for k, v in value.items()} for name, value in by_name.items()
               if isinstance(value, dict) and value}
    if not present:
        return []
    columns = sorted({k for v in present.values() for k in v}, key=_offset_order)
    rows = [[name, *(values.get(c) for c in columns)] for name, values in present.items()]
    titles = [f"k = {c}" if _offset_order(c)[0] == 0 else c for c in columns]
    return [table(["", *titles], rows, caption=caption)]


def _offset_order(key: str):
    try:
        return (0, int(key), "")
    except ValueError:
        return (1, 0, key)


# ------------------------------------------------------------------------------------------- summaries
SCORE_COLUMNS = {
    "n": "n", "ROUGE-1 F": "rouge.rouge1.f", "ROUGE-2 F": "rouge.rouge2.f", "ROUGE-L F": "rouge.rougeL.f",
    "ROUGE-Lsum F": "rouge.rougeLsum.f", "BERTScore F1": "bertscore.f1", "F1 std": "bertscore.f1_std",
    "BERTScore P": "bertscore.p", "BERTScore R": "bertscore.r", "empty": "empty_predictions",
    "pred words": "mean_pred_words", "ref words": "mean_ref_words", "length ratio": "length_ratio",
    "tag rate pred": "speaker_tag_rate.predictions", "tag rate ref": "speaker_tag_rate.references",
}
FAMILY_EXTRA_COLUMNS = {"n": "n", "mean words": "mean_pred_words", "ref words": "mean_ref_words",
                        "length ratio": "length_ratio", "with speaker tags": "speaker_tag_rate.predictions",
                        "reference's consistency": "semantic_consistency.reference"}


def summaries_section(run: dict, artifacts: dict) -> list[dict]:
    blocks = []
    for name, records in run["histories"].items():
        if not name.startswith(LVM_HISTORY_PREFIX):
            blocks += history_blocks(name, run["history_paths"][name], records, heading=f"{name}: training")
    scores = run["scores"]
    if scores:
        blocks.append(family_comparison(scores, named(artifacts, "train_summary"), run["history_paths"]))
        blocks.append(scores_table(scores))
        curve = selection_curve_plot(run["history_paths"])
        if curve is not None:
            blocks.append(curve)
    for name, path in named(artifacts, "examples").items():
        blocks.append(examples_table(name, read_json_object(path)))
    return blocks


def family_comparison(scores: dict[str, dict], train_summaries: dict[str, Path], histories: dict[str, Path]) -> dict:
    """The summary families of the run on the same dialogues and scorer, with length, tags and training cost."""
    def cost(name):
        return list(training_cost(name, train_summaries.get(name), histories.get(name)))

    return family_table(scores, heading="Summary families compared", extra=FAMILY_EXTRA_COLUMNS, cost=cost,
                        caption="every family trained in this run, scored on the same dialogues with the same "
                                "scorer, beside the retrieval baseline (the summary of the nearest training dialogue "
                                "by embedding: what the ELM sees); _rerank rows keep, of N candidates, the one whose "
                                "re-embedding is nearest the input; ★ best in its column; distinct = share of "
                                "distinct predictions; own − shuffled R-1 = ROUGE-1 against the own references "
                                "minus against other dialogues' (≤ 0: the model ignores its input); semantic "
                                "consistency = cosine between the prediction's and the dialogue's sentence "
                                "embeddings, read against the reference's")


def training_cost(name: str, summary_path: Path | None, history_path: Path | None) -> tuple:
    """(minutes, samples seen, samples/s) from a summarizer's summary.json, or from an ELM history's step times."""
    if summary_path is not None and summary_path.exists():
        summary = read_json_object(summary_path)
        minutes, samples = summary.get("train_minutes"), summary.get("samples_seen")
        rate = samples / (minutes * 60) if minutes and samples else None
        return minutes, samples, rate
    if history_path is not None and history_path.exists():
        records = [r for _, r in iter_jsonl(history_path)]
        seconds = sum(float(r.get("time/step_s", 0.0)) for r in records if is_number(r.get("time/step_s")))
        if seconds:
            return seconds / 60, None, None
    return None, None, None


def selection_curve_plot(histories: dict[str, Path]) -> dict | None:
    """Selection ROUGE-1/ROUGE-L against samples seen, one line per summarizer family (the learning curve)."""
    curves, sources = {}, []
    for name, path in histories.items():
        if not path.exists():
            continue
        points = [r for _, r in iter_jsonl(path) if is_number(r.get("samples_seen")) and is_number(r.get("val/rouge1"))]
        if points:
            curves[name] = points
            sources.append(path)
    if not curves:
        return None
    panels = {"selection split score": {}}
    for name, points in curves.items():
        xs = [p["samples_seen"] for p in points]
        panels["selection split score"][f"{name} ROUGE-1"] = list(zip(xs, [p["val/rouge1"] for p in points]))
        if all(is_number(p.get("val/rougeL")) for p in points):
            panels["selection split score"][f"{name} ROUGE-L"] = list(zip(xs, [p["val/rougeL"] for p in points]))
    png = draw_plot(panels, "summarizer learning curves", "training samples seen", columns=1, sources=sources)
    return image(png_bytes_uri(png), "learning curve: selection split (carved from train) score "
                 "against samples seen, per summarizer family", heading="Summarizer learning curves")


def scores_table(scores: dict[str, dict]) -> dict:
    rows = [[name, *(dig(s, path) for path in SCORE_COLUMNS.values())]
            for name, s in sorted(scores.items(), key=lambda item: _family_order(item[0]))]
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
    return blocks + pareto_blocks(artifacts)


def pareto_blocks(artifacts: dict) -> list[dict]:
    """An LVM [c0, margin] study: the front as a plot (baselines drawn on the same axes) and as a table."""
    blocks = []
    pareto, plot = one(artifacts, "hpo_pareto"), one(artifacts, "hpo_pareto_plot")
    if plot:
        blocks.append(image(png_data_uri(plot), "c0 against 5CAT margin on the selection split: trials, the Pareto "
                            "front, the chosen trial and the baselines", heading="c0 / margin trade-off"))
    if pareto:
        record = read_json_object(pareto)
        rows = [[p["trial"], p["c0"], p["margin"], p.get("mrr"), "★" if p["trial"] == record.get("chosen") else "",
                 ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(p["params"].items()))]
                for p in record.get("trials", []) if p.get("pareto")]
        rows += [[name, b.get("c0"), b.get("margin"), b.get("mrr"), "baseline", ""]
                 for name, b in record.get("baselines", {}).items()]
        blocks.append(table(["trial", "c0", "margin", "MRR", "chosen", "recipe"], rows, heading="Pareto front",
                            caption=f"chosen by {record.get('rule')}; {record.get('positive_margin_trials')} of "
                                    f"{len(record.get('trials', []))} trials reached a positive selection margin"))
    return blocks


def _number_or_text(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def deploy_section(run: dict) -> list[dict]:
    decision = run["decision"]
    if decision is None:
        return []
    gates = [g for g in decision.get("gates", []) or [] if isinstance(g, dict)]
    rows = [[g.get("component"), g.get("gate"), g.get("value"), g.get("threshold"), verdict(g.get("passed"))]
            for g in gates]
    blocks = [table(["component", "gate", "value", "threshold", "passed"], rows, heading="Gates")]
    if decision.get("reason"):
        blocks.append(note(str(decision["reason"])))
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


def runtime_section(run: dict) -> list[dict]:
    rows = [[name, b["s"], hms(b["s"]), b["cpu_s"], b["max_rss_mb"], b["repeats"]]
            for name, b in run["benchmarks"].items()]
    return [table(["job (rule/wildcards)", "wall s", "h:m:s", "CPU s", "peak RSS (MB)", "repeats"], rows,
                  caption="one row per Snakemake benchmark file; repeats are averaged")]


def compare_section(run: dict, previous: str) -> list[dict]:
    """This run's headline metrics beside those of a previous results folder (report.compare_with)."""
    from vecflow.ship.compare import changed, comparison_rows, discover, headline, headline_from_files

    ours = headline(run["fivecat"], run["scores"], run["decision"])
    theirs = headline_from_files(discover(previous))
    rows = comparison_rows(theirs, ours)
    cells = [[key, a, b, delta_cell(delta)] for key, a, b, delta in rows]
    return [table(["metric", f"previous ({previous})", "this run", "Δ"], cells, heading=f"Compared with {previous}",
                  caption=f"{len(rows)} headline metrics, {sum(map(changed, rows))} differ; Δ = this run − previous "
                          "(vecflow compare gives the same table as text)")]


# --------------------------------------------------------------------------------------------- assembly
SECTIONS = (  # id, title, the keys that belong to it; DAG order, after the summary
    ("lineage", "Lineage", ("config", "manifest", "data", "tracking")),
    ("data", "Data", ("ingest_stats", "filter_stats", "leakage", "split_ids")),
    ("diagnostics", "Data-direction diagnostics", ("direction", "direction_plot")),
    ("lvm", "LVM runs and 5CAT", ("fivecat", "fivecat_plot", "lvm_seeds", "lvm_curve", "lvm_curve_plot")),
    ("hpo", "HPO", ("hpo_trials", "hpo_importance", "hpo_params", "hpo_pareto", "hpo_pareto_plot")),
    ("summaries", "Summaries", ("scores", "examples")),
    ("deploy", "Deploy gates", ("decision",)),
    ("runtime", "Run time", ("benchmark",)),
)
JSON_KEYS = ("ingest_stats", "filter_stats", "leakage", "split_ids", "direction")


def load_run(artifacts: dict) -> dict:
    """Every metric file of the run read once: JSON stats, 5CAT reports, scores, the decision, training logs and
    benchmark files (plots stay paths: they are inlined as they are)."""
    histories = named(artifacts, "history")
    return {
        "json": {key: read_json(one(artifacts, key)) for key in JSON_KEYS if one(artifacts, key) is not None},
        "fivecat": {name: read_results(path) for name, path in named(artifacts, "fivecat").items()},
        "scores": {name: read_json_object(path) for name, path in named(artifacts, "scores").items()},
        "decision": read_json_object(one(artifacts, "decision")) if one(artifacts, "decision") else None,
        "histories": {name: [record for _, record in iter_jsonl(path)] for name, path in histories.items()},
        "history_paths": histories,
        "benchmarks": {name: read_benchmark(path) for name, path in named(artifacts, "benchmark").items()},
    }


def build_sections(artifacts: dict, settings: dict, git_revision: str, generated: str) -> list[dict]:
    run = load_run(artifacts)
    has_lvm_history = any(n.startswith(LVM_HISTORY_PREFIX) for n in run["histories"])
    has_other_history = any(not n.startswith(LVM_HISTORY_PREFIX) for n in run["histories"])
    builders = {
        "lineage": lambda: lineage_section(artifacts, settings, git_revision, generated),
        "data": lambda: data_section(run),
        "diagnostics": lambda: diagnostics_section(run, artifacts),
        "lvm": lambda: lvm_section(run, artifacts),
        "hpo": lambda: hpo_section(artifacts),
        "summaries": lambda: summaries_section(run, artifacts),
        "deploy": lambda: deploy_section(run),
        "runtime": lambda: runtime_section(run),
    }
    sections = [{"id": "summary", "title": "Summary", "folded": False, "blocks": summary_section(run)}]
    previous = settings.get("compare_with") or ""
    if previous:
        sections.append({"id": "compare", "title": "Compared with previous run", "folded": True,
                         "blocks": compare_section(run, previous)})
    for section_id, title, keys in SECTIONS:
        ran = section_id == "lineage" or any(key in artifacts for key in keys)
        ran = ran or (section_id == "lvm" and has_lvm_history) or (section_id == "summaries" and has_other_history)
        sections.append({"id": section_id, "title": title, "folded": True,
                         "blocks": builders[section_id]() if ran else []})
    return sections


# ------------------------------------------------------------------------------------------ rendering
def build_report(artifacts: dict, settings: dict, cwd: str | Path = ".", plot_cache: PlotCache | None = None) -> str:
    """The page as HTML; with ``plot_cache``, plots whose inputs and code did not change are not redrawn (the
    cache then keeps only this page's plots)."""
    global _plot_cache
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    git_rev = git_revision(cwd)
    _plot_cache = plot_cache
    try:
        sections = build_sections(artifacts, settings, git_rev, generated)
    finally:
        _plot_cache = None
    if plot_cache is not None:
        plot_cache.prune()
    return render_html(settings.get("title", "vecflow report"), sections, git_rev, generated,
                       settings.get("config_hash"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vecflow report", description="Self-contained HTML report.")
    parser.add_argument("--artifact", action="append", default=[], metavar="KEY[:NAME]=PATH",
                        help=f"a metric/plot file; keys: {', '.join(ARTIFACT_KEYS)}")
    parser.add_argument("--artifacts-json", help="optional JSON object {\"KEY[:NAME]\": \"PATH\"} (more artifacts)")
    parser.add_argument("--benchmarks", metavar="DIR",
                        help="Snakemake benchmark folder: every *.tsv under it (absent folder: none)")
    parser.add_argument("--settings", required=True, type=settings_arg, help="the 'report' config section")
    parser.add_argument("--plot-cache", metavar="DIR",
                        help="folder of drawn plots kept between reports: a plot whose input files and plotting "
                             "code did not change is reused, not redrawn (default: draw every plot)")
    parser.add_argument("--out", required=True, help="output HTML file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    specs = list(args.artifact) + (specs_from_json(args.artifacts_json) if args.artifacts_json else [])
    specs += benchmark_specs(args.benchmarks) if args.benchmarks else []
    artifacts = collect_artifacts(specs)
    cache = PlotCache(args.plot_cache) if args.plot_cache else None
    html_text = build_report(artifacts, args.settings, plot_cache=cache)
    write_text(args.out, html_text)
    plots = f"; plots: {len(cache.drawn)} drawn, {len(cache.reused)} from the cache" if cache else ""
    print(f"[vecflow] report with {sum(map(len, artifacts.values()))} artifacts -> {args.out}{plots}", flush=True)
    return 0
