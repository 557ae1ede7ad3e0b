"""The verdicts 5CAT writes beside its numbers: gates against ``lvm.fivecat.thresholds``, and the model against
its baselines (``dominance``: better on c_0, MRR and margin at once; ``beats_baselines``: c_0 and margin).

Each takes the per-split metrics ``vecflow.lvm.fivecat`` computes (``{split: metrics}`` for the model, and
``{name: {split: metrics}}`` for the baselines) and returns plain dicts of booleans and lines of text, which
the results file records (``fivecat_results``) and deploy and the report read.
"""

from __future__ import annotations

from vecflow.lvm.fivecat import generalisation_gaps

GATED_METRICS = ("c0", "margin", "r1", "r5", "mrr", "rollout")


def gates(results: dict, thresholds: dict) -> dict:
    """{split: {metric: passed}} for every split with thresholds, plus {"generalisation": {metric: passed}}.

    Only dicts of booleans, so readers (deploy, report) can walk every section the same way.
    """
    verdicts: dict = {}
    for split, metrics in results.items():
        limits = thresholds.get(split)
        if not isinstance(limits, dict):
            continue
        verdicts[split] = {m: metrics.get(m) is not None and metrics[m] >= limits[m] for m in GATED_METRICS
                           if m in limits}
    max_gap = thresholds.get("max_generalisation_gap")
    gaps = generalisation_gaps(results)
    if max_gap is not None and gaps:
        verdicts["generalisation"] = {m: gap is not None and gap <= max_gap for m, gap in gaps.items()}
    return verdicts


def gate_counts(verdicts: dict) -> dict:
    """How many of the gates passed: {passed, total, all_passed}."""
    flags = [ok for group in verdicts.values() for ok in group.values()]
    return {"passed": sum(flags), "total": len(flags), "all_passed": bool(flags) and all(flags)}


DOMINANCE_METRICS = ("c0", "mrr", "margin")


def beats(a, b) -> bool:
    """A metric of the model beats a baseline's: strictly higher (a tie is not a win); a missing model value never
    wins, a missing baseline value is beaten."""
    return a is not None and (b is None or a > b)


def dominance_verdicts(model: dict, baselines: dict) -> dict:
    """Per split: does the model beat every baseline on c_0, MRR and margin at once? The one-line verdict names
    the baseline and metric it loses to (a tie is not a win)."""
    verdicts = {}
    for split, metrics in model.items():
        lost = [(name, metric, scores[split].get(metric)) for name, scores in baselines.items()
                for metric in DOMINANCE_METRICS if split in scores
                and not beats(metrics.get(metric), scores[split].get(metric))]
        if not lost:
            line = f"{split}: the model dominates every baseline ({', '.join(baselines)}) on c0, MRR and margin"
        else:
            parts = [f"{name} on {metric} ({format_metric(metrics.get(metric))} vs {format_metric(value)})" for name, metric, value in lost]
            line = f"{split}: the model does NOT dominate: it loses to " + "; ".join(parts)
        verdicts[split] = {"dominates": not lost, "loses_to": [f"{n}:{m}" for n, m, _ in lost], "line": line}
    return verdicts


def beats_baselines(model: dict, baselines: dict) -> dict:
    """Per split and baseline: True when the model's c_0 AND margin are both higher than the baseline's."""
    return {
        split: {name: beats(metrics["c0"], scores[split]["c0"]) and beats(metrics["margin"], scores[split]["margin"])
                for name, scores in baselines.items()}
        for split, metrics in model.items()
    }


def format_metric(value) -> str:
    """A metric with three decimals, or n/a where it is undefined (None)."""
    return "n/a" if value is None else f"{value:.3f}"
