"""The report's opening section: the answer first.

The deploy decision and its deciding gate, one table per track (the LVM runs beside their baselines from the
5CAT results, every summary family on the same dialogues), each column's best marked with a star, the data sizes
per split and the wall time per Snakemake rule. ``family_table`` is shared with the Summaries section's
comparison of families.
"""

from __future__ import annotations

import json

from vecflow.ship.page import Cell, banner, best_of, cell, hms, is_number, note, table, winner_cell
from vecflow.ship.report_artifacts import dig, split_rank

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
                    key=split_rank)
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
             for _, v in sorted((rep.get("dominance") or {}).items(), key=lambda item: split_rank(item[0]))
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


def family_order(name: str):
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
    names = sorted(scores, key=family_order)
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
    splits = sorted({s for values in rows.values() for s in values}, key=split_rank)
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
