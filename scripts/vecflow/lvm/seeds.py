"""``vecflow lvm-seeds``: one LVM recipe trained with several seeds, its 5CAT as mean ± sd, verdicts on the mean.

    vecflow lvm-seeds --report forward=R/lvm/fivecat/forward.json --report forward-seed2=... --out-json F

A single seed can flip a verdict that rests on a lead of 0.001 (the DialogSum-turns c_0 lead over ridge), so the
forward question is asked of the mean over seeds, with the spread printed beside it:

- **forward**: 5CAT margin > 0 (c_0 minus the best other offset: closer to the next chunk than to any other);
- **c_0 ≥ the context mean's** (it is not worse at the target than averaging the context);
- **MRR > ridge's** (it ranks the target in its article better than the closed-form baseline).

The baselines are deterministic given the data (copy-last, context-mean; ridge is fitted on the same training
windows in every run), so they are reported from the first run and their spread is checked to be zero.
"""

from __future__ import annotations

import argparse
import math
import statistics

from vecflow.core.errors import VecflowError
from vecflow.core.io import read_json_object, write_json

METRICS = ("c0", "margin", "mrr", "r1", "r5", "cos_target", "ca", "par")


def mean_sd(values: list[float]) -> dict:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return {"mean": None, "sd": None, "n": 0, "values": []}
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd, "n": len(values), "values": values}


def _metric(split: dict, name: str):
    value = split.get(name)
    if isinstance(value, dict):  # e.g. {"mean": ..., ...} for a metric with details
        value = value.get("mean")
    return value


def aggregate(reports: dict[str, dict]) -> dict:
    """{split: {"model": {metric: mean_sd}, "baselines": {name: {metric: value}}, "verdict": {...}}}."""
    if not reports:
        raise VecflowError("lvm-seeds: no 5CAT reports given (--report NAME=PATH)")
    names = list(reports)
    first = reports[names[0]]
    splits = list(first["model"])
    out = {}
    for split in splits:
        for name in names:
            if split not in reports[name]["model"]:
                raise VecflowError(f"lvm-seeds: the 5CAT report of run '{name}' has no split '{split}'")
        model = {m: mean_sd([_metric(reports[n]["model"][split], m) for n in names]) for m in METRICS}
        baselines = {b: {m: _metric(first["baselines"][b][split], m) for m in METRICS}
                     for b in first.get("baselines", {})}
        out[split] = {"model": model, "baselines": baselines, "verdict": verdict(model, baselines)}
    return {"runs": names, "seeds": len(names), "splits": out}


def verdict(model: dict, baselines: dict) -> dict:
    """The forward question on the mean over seeds."""
    c0, margin, mrr = (model[m]["mean"] for m in ("c0", "margin", "mrr"))
    context_c0 = baselines.get("context_mean", {}).get("c0")
    ridge_mrr = baselines.get("ridge", {}).get("mrr")
    checks = {
        "margin_positive": margin is not None and margin > 0,
        "c0_at_least_context_mean": None if context_c0 is None else (c0 is not None and c0 >= context_c0),
        "mrr_above_ridge": None if ridge_mrr is None else (mrr is not None and mrr > ridge_mrr),
    }
    met = all(v is not False for v in checks.values()) and checks["margin_positive"]
    sd = model["margin"]["sd"]
    line = (f"margin {margin:+.4f} ± {sd:.4f} (mean ± sd of {model['margin']['n']} seeds): "
            f"{'forward' if checks['margin_positive'] else 'not forward'}; "
            f"c0 {c0:.4f} vs context mean {context_c0 if context_c0 is None else f'{context_c0:.4f}'}; "
            f"MRR {mrr:.4f} vs ridge {ridge_mrr if ridge_mrr is None else f'{ridge_mrr:.4f}'}"
            if None not in (margin, c0, mrr) else "incomplete 5CAT numbers")
    return {**checks, "met": met, "line": line}


def parse_report(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--report: expected NAME=PATH, got {text!r}")
    return name, path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow lvm-seeds", description=__doc__.split("\n")[0])
    parser.add_argument("--report", action="append", type=parse_report, required=True,
                        help="NAME=PATH of one seed's 5CAT JSON (repeat per seed)")
    parser.add_argument("--out-json", required=True, help="mean ± sd per split, metric and verdict")
    args = parser.parse_args(argv)
    reports = {}
    for name, path in args.report:
        if name in reports:
            raise VecflowError(f"lvm-seeds: run '{name}' given twice")
        report = read_json_object(path)
        if "model" not in report:
            raise VecflowError(f"{path}: field 'model': missing (not a 5CAT report)")
        reports[name] = report
    record = aggregate(reports)
    write_json(args.out_json, record)
    for split, result in record["splits"].items():
        print(f"[vecflow] {split}: {result['verdict']['line']}", flush=True)
    return 0
