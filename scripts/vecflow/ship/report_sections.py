"""The report's folded detail sections, other than the LVM one (``report_lvm``), in DAG order.

Lineage (config, model manifests, input data, experiment tracking), Data (per-split statistics of ingest,
filter and the article split), the data-direction diagnostics, Summaries (training logs, the families compared,
scores, learning curves, examples), HPO (trials, importance, best parameters, the c0/margin Pareto front),
Deploy gates, Run time (one row per benchmark file), and the comparison with a previous results folder
(``report.compare_with``). Each builder returns a list of page blocks (``vecflow.ship.page``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from vecflow.core.errors import VecflowError
from vecflow.core.io import iter_jsonl, read_json_object, sha256_file
from vecflow.ship.page import (
    banner,
    delta_cell,
    details,
    flatten,
    hms,
    image,
    is_counts,
    is_number,
    key_value_table,
    not_run,
    note,
    table,
    verdict,
)
from vecflow.ship.report_artifacts import (
    LVM_HISTORY_PREFIX,
    dig,
    named,
    one,
    png_bytes_uri,
    png_data_uri,
    read_csv,
    read_yaml,
    split_rank,
)
from vecflow.ship.report_plots import draw_plot, history_blocks
from vecflow.ship.report_summary import family_order, family_table


# ---------------------------------------------------------------------------- lineage, data, diagnostics
def lineage_section(artifacts: dict, config_hash: str | None, git_revision: str, generated: str) -> list[dict]:
    blocks = [table(["item", "value"], [
        ["generated", generated], ["git revision", git_revision],
        ["config hash (settings)", config_hash],
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
    names = sorted((s for s, v in splits.items() if isinstance(v, dict)), key=split_rank)
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
            sorted(ids.items(), key=lambda item: split_rank(item[0]))]
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
            for name, s in sorted(scores.items(), key=lambda item: family_order(item[0]))]
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


# ------------------------------------------------------------------------ HPO, deploy, run time, compare
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
