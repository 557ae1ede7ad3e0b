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

This module is the command and the page's assembly; the parts live beside it: ``report_artifacts`` (the
``--artifact`` files and their readers), ``report_summary`` (the opening section), ``report_lvm`` and
``report_sections`` (the folded detail sections), ``report_plots`` (training-log plots and the plot cache) and
``page`` (cells, blocks and the HTML template, shared with ``vecflow compare --html``).
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from vecflow.core.io import write_text
from vecflow.ship.page import git_revision, render_html
from vecflow.ship.report_artifacts import (
    ARTIFACT_KEYS,
    LVM_HISTORY_PREFIX,
    benchmark_specs,
    collect_artifacts,
    load_run,
    specs_from_json,
)
from vecflow.ship.report_lvm import lvm_section
from vecflow.ship.report_plots import PlotCache, plot_cache_in_use
from vecflow.ship.report_sections import (
    compare_section,
    data_section,
    deploy_section,
    diagnostics_section,
    hpo_section,
    lineage_section,
    runtime_section,
    summaries_section,
)
from vecflow.ship.report_summary import summary_section
from vecflow.ship.settings import ReportSettings


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


def build_sections(artifacts: dict, settings: ReportSettings, git_revision: str, generated: str) -> list[dict]:
    run = load_run(artifacts)
    has_lvm_history = any(n.startswith(LVM_HISTORY_PREFIX) for n in run["histories"])
    has_other_history = any(not n.startswith(LVM_HISTORY_PREFIX) for n in run["histories"])
    builders = {
        "lineage": lambda: lineage_section(artifacts, settings.config_hash, git_revision, generated),
        "data": lambda: data_section(run),
        "diagnostics": lambda: diagnostics_section(run, artifacts),
        "lvm": lambda: lvm_section(run, artifacts),
        "hpo": lambda: hpo_section(artifacts),
        "summaries": lambda: summaries_section(run, artifacts),
        "deploy": lambda: deploy_section(run),
        "runtime": lambda: runtime_section(run),
    }
    sections = [{"id": "summary", "title": "Summary", "folded": False, "blocks": summary_section(run)}]
    previous = settings.compare_with
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
def build_report(artifacts: dict, settings: ReportSettings, cwd: str | Path = ".", plot_cache: PlotCache | None = None) -> str:
    """The page as HTML; with ``plot_cache``, plots whose inputs and code did not change are not redrawn (the
    cache then keeps only this page's plots)."""
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    git_rev = git_revision(cwd)
    with plot_cache_in_use(plot_cache):
        sections = build_sections(artifacts, settings, git_rev, generated)
    if plot_cache is not None:
        plot_cache.prune()
    return render_html(settings.title, sections, git_rev, generated, settings.config_hash)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vecflow report", description="Self-contained HTML report.")
    parser.add_argument("--artifact", action="append", default=[], metavar="KEY[:NAME]=PATH",
                        help=f"a metric/plot file; keys: {', '.join(ARTIFACT_KEYS)}")
    parser.add_argument("--artifacts-json", help="optional JSON object {\"KEY[:NAME]\": \"PATH\"} (more artifacts)")
    parser.add_argument("--benchmarks", metavar="DIR",
                        help="Snakemake benchmark folder: every *.tsv under it (absent folder: none)")
    parser.add_argument("--settings", required=True, type=ReportSettings.from_json,
                        help="the 'report' config section and config_hash")
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
