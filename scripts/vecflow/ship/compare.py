"""Every headline metric of two pipeline runs side by side, with deltas (like ``dvc metrics diff``).

    vecflow compare RESULTS_A RESULTS_B [--all] [--json OUT] [--html OUT]

A results folder is what a run's ``results_dir`` holds. Its headline files are found by the pipeline's own
layout: ``lvm/fivecat/RUN.json`` (5CAT, read by ``vecflow.lvm.fivecat_results``), ``eval/FAMILY/scores.json``
(summary scores, fields named as the deploy decision names them) and ``deploy/NAME.decision.json``. Headline metrics: per LVM run and split the model's c_0,
margin, MRR, R@1, R@5 and whether it beats every baseline, the baselines' c_0, margin, MRR and R@5 (of the
first full-data run), the gates passed; per summary family ROUGE-1/2/L/Lsum, BERTScore F1 and input
dependence; the deploy verdict, the chosen summarizer and the failed gates. Δ is B − A. The text table lists
the metrics that differ first, then the unchanged ones (``--all``; by default they are counted, not listed).
The report shows the same table (``report.compare_with``). Only those files are read; no model is loaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vecflow.core.errors import VecflowError
from vecflow.core.io import read_json_object, write_json, write_text
from vecflow.ship.page import delta_cell, git_revision, is_number, render_html, table
from vecflow.ship.report_artifacts import dig

FIVECAT_GLOB, SCORES_GLOB, DECISION_GLOB = "lvm/fivecat/*.json", "eval/*/scores.json", "deploy/*.decision.json"
MODEL_METRICS = ("c0", "margin", "mrr", "r1", "r5")
BASELINE_METRICS = ("c0", "margin", "mrr", "r5")
LVM_SPLITS = ("val", "ood")
INPUT_DEPENDENCE = {"distinct_ratio": "input_dependence.distinct_ratio", "own_minus_shuffled_r1": "input_dependence.margin"}


def discover(results_dir: str | Path) -> dict:
    """The headline files of a results folder: {"fivecat": {run: path}, "scores": {family: path}, "decision"}."""
    root = Path(results_dir)
    if not root.is_dir():
        raise VecflowError(f"{root}: not a folder (give a run's results_dir, e.g. results/wikitext)")
    files = {
        "fivecat": {p.stem: p for p in sorted(root.glob(FIVECAT_GLOB))},
        "scores": {p.parent.name: p for p in sorted(root.glob(SCORES_GLOB))},
        "decision": next(iter(sorted(root.glob(DECISION_GLOB))), None),
    }
    if not files["fivecat"] and not files["scores"] and files["decision"] is None:
        raise VecflowError(f"{root}: no headline metric file ({FIVECAT_GLOB}, {SCORES_GLOB}, {DECISION_GLOB}): "
                           "is it a pipeline results folder?")
    return files



def headline_from_files(files: dict) -> dict:
    """``headline`` of the files ``discover`` found (each read once)."""
    from vecflow.lvm.fivecat_results import read_results

    return headline({run: read_results(p) for run, p in files["fivecat"].items()},
                    {family: read_json_object(p) for family, p in files["scores"].items()},
                    read_json_object(files["decision"]) if files.get("decision") else None)


def _full_data(report: dict) -> bool:
    fraction = dig(report, "settings.train_fraction")
    return not isinstance(fraction, (int, float)) or fraction >= 1.0


def headline(fivecat: dict[str, dict], scores: dict[str, dict], decision: dict | None) -> dict:
    """Metric name -> value (number, bool or text), in a stable order: LVM runs, baselines, families, deploy."""
    from vecflow.ship.deploy import METRIC_FIELDS, chosen_family

    metrics: dict[str, object] = {}
    for run, report in sorted(fivecat.items()):
        for split in LVM_SPLITS:
            for metric in MODEL_METRICS:
                metrics[f"lvm/{run}/{split}/{metric}"] = dig(report, f"model.{split}.{metric}")
            metrics[f"lvm/{run}/{split}/beats_all_baselines"] = dig(report, f"dominance.{split}.dominates")
        metrics[f"lvm/{run}/gates_passed"] = dig(report, "gate_counts.passed")
        metrics[f"lvm/{run}/gates_total"] = dig(report, "gate_counts.total")
    reference = next((r for _, r in sorted(fivecat.items()) if _full_data(r)), None)
    for name, baseline in sorted(((reference or {}).get("baselines") or {}).items()):
        for split in LVM_SPLITS:
            for metric in BASELINE_METRICS:
                metrics[f"lvm/baseline/{name}/{split}/{metric}"] = dig(baseline, f"{split}.{metric}")
    fields = {**METRIC_FIELDS, **INPUT_DEPENDENCE}
    for family, score in sorted(scores.items()):
        for name, field in fields.items():
            metrics[f"summary/{family}/{name}"] = dig(score, field)
    if decision is not None:
        metrics["deploy/deploy"] = decision.get("deploy")
        metrics["deploy/summarizer"] = chosen_family(decision) if decision.get("summarizer") else None
        metrics["deploy/failed_gates"] = ", ".join(map(str, decision.get("failed") or [])) or "none"
    return {k: v for k, v in metrics.items() if v is not None}


def delta(a, b):
    """B − A for two numbers; "changed" for other values that differ; "" when equal; None when one is missing."""
    if a is None or b is None:
        return None
    if is_number(a) and is_number(b):
        return b - a
    return "" if a == b else "changed"


def comparison_rows(a: dict, b: dict) -> list[tuple[str, object, object, object]]:
    """(metric, A, B, Δ) for the union of both runs' metrics, in A's order then B's new ones."""
    keys = list(dict.fromkeys([*a, *b]))
    return [(key, a.get(key), b.get(key), delta(a.get(key), b.get(key))) for key in keys]


def changed(row) -> bool:
    _, a, b, d = row
    return a is None or b is None or (d not in ("", 0, 0.0))


def _text(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _delta_text(value) -> str:
    if value is None:
        return "—"
    if is_number(value):
        return f"{value:+.4f}" if isinstance(value, float) else f"{value:+d}"
    return str(value)


def format_text(rows: list[tuple], label_a: str, label_b: str, show_all: bool = False) -> str:
    """A plain-text table (changed metrics first; unchanged listed only with ``show_all``)."""
    differ = [r for r in rows if changed(r)]
    same = [r for r in rows if not changed(r)]
    shown = differ + (same if show_all else [])
    header = ("metric", label_a, label_b, "Δ (B − A)")
    body = [(key, _text(a), _text(b), _delta_text(d)) for key, a, b, d in shown]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(4)]
    lines = ["  ".join(text.ljust(width) if i == 0 else text.rjust(width) for i, (text, width) in
                       enumerate(zip(row, widths))).rstrip() for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(f"{len(rows)} metrics: {len(differ)} differ or exist in one run only, {len(same)} equal"
                 + ("" if show_all or not same else " (--all lists them)"))
    return "\n".join(lines) + "\n"


def html_page(rows: list[tuple], label_a: str, label_b: str) -> str:
    """The comparison as a self-contained page, through the report's own table and template (``vecflow.ship.page``)."""
    from datetime import datetime, timezone

    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    block = table(["metric", label_a, label_b, "Δ (B − A)"], [[k, a, b, delta_cell(d)] for k, a, b, d in rows],
                  caption=f"{len(rows)} headline metrics, {sum(map(changed, rows))} differ")
    sections = [{"id": "summary", "title": f"{label_a} → {label_b}", "folded": False, "blocks": [block]}]
    return render_html(f"vecflow compare: {label_a} vs {label_b}", sections, git_revision(), generated, None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vecflow compare",
                                     description="Headline metrics of two results folders, with deltas (B − A).")
    parser.add_argument("results_a", help="a results folder (e.g. results/wikitext)")
    parser.add_argument("results_b", help="another results folder")
    parser.add_argument("--all", action="store_true", help="also list the metrics that are equal")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    parser.add_argument("--html", help="also write the table as a self-contained HTML page to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    a = headline_from_files(discover(args.results_a))
    b = headline_from_files(discover(args.results_b))
    rows = comparison_rows(a, b)
    print(format_text(rows, args.results_a, args.results_b, show_all=args.all), end="", flush=True)
    if args.json:
        write_json(args.json, {"a": str(args.results_a), "b": str(args.results_b),
                               "rows": [{"metric": k, "a": va, "b": vb, "delta": d} for k, va, vb, d in rows]})
    if args.html:
        write_text(args.html, html_page(rows, str(args.results_a), str(args.results_b)))
    return 0
