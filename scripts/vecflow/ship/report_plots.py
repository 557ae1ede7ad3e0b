"""The report's drawn plots: training logs classified into panels, drawn with matplotlib, kept in a plot cache.

A training log (``history.jsonl``) is split into loss terms, validation metrics, other changing series and
constant ones (``classify_history``); ``plot_panels`` draws panels as one PNG (matplotlib's object API: no
pyplot state, no GUI backend). ``draw_plot`` goes through the ``PlotCache`` while a report is built with
``--plot-cache`` (``plot_cache_in_use``), so a regeneration redraws only the plots whose inputs or plotting code
changed. ``history_blocks`` turns one log into the page's figures and tables.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import re
from pathlib import Path

from vecflow.core.io import atomic_path, sha256_file
from vecflow.ship.page import cell, image, is_number, note, table
from vecflow.ship.report_artifacts import PNG_END, PNG_SIGNATURE, png_bytes_uri

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


@contextlib.contextmanager
def plot_cache_in_use(cache: PlotCache | None):
    """``draw_plot`` goes through ``cache`` (None: draws every plot) while the block runs, and draws directly
    again after it, also when building the page fails."""
    global _plot_cache
    _plot_cache = cache
    try:
        yield
    finally:
        _plot_cache = None


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
