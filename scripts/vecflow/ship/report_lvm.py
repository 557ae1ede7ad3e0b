"""The report's "LVM runs and 5CAT" section: per run its training figures, 5CAT verdicts and tables.

Per LVM run: the training log's figures (``report_plots.history_blocks``), one banner per split saying whether
the model beats every baseline on c_0, MRR and margin, the offset-sweep plot, the gate table and the 5CAT tables
(model and baselines per split, offsets c_k, ablations) folded; then the recipe over seeds (``lvm-seeds``) and
the learning curve (``lvm-curve``).
"""

from __future__ import annotations

from vecflow.core.io import read_json_object
from vecflow.ship.page import banner, cell, fold, image, is_number, table, verdict
from vecflow.ship.report_artifacts import LVM_HISTORY_PREFIX, named, one, png_data_uri, split_rank
from vecflow.ship.report_plots import history_blocks

FIVECAT_METRICS = ("c0", "margin", "peak_k", "r1", "r5", "mrr", "ca", "par", "rollout")


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
            for split, v in sorted(verdicts.items(), key=lambda item: split_rank(item[0]))
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
    for split, result in sorted(record.get("splits", {}).items(), key=lambda item: split_rank(item[0])):
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
                for r in sorted(curve.get("rows", []), key=lambda r: (split_rank(r.get("split", "")),
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
    for split in sorted(splits, key=split_rank):
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
    for split, verdicts in sorted(gates.items(), key=lambda item: split_rank(item[0])):
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
