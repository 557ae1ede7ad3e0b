"""The report's plot cache (issue 10 item 7): a regeneration redraws only the plots whose inputs changed, and
never shows a plot drawn from other inputs or by other plotting code."""

import json
import re
from pathlib import Path

import pytest

import vecflow.ship.report_plots as report_plots
from vecflow.ship.report import build_report
from vecflow.ship.report_artifacts import collect_artifacts
from vecflow.ship.report_plots import PlotCache
from vecflow.ship.settings import ReportSettings

IMAGE = re.compile(r'<figure>\s*<img src="(data:image/png;base64,[^"]+)"[^>]*>\s*<figcaption>([^<]*)', re.S)


def history(path: Path, losses: list[float]) -> Path:
    """An LVM training log (loss terms and validation metrics: two plots) with the given train/mse values."""
    path.write_text("".join(json.dumps({"epoch": i + 1, "train/mse": loss, "val/mse": loss + 0.1, "val/c0": 0.4 + i / 10,
                                        "val/margin": 0.01 * i, "val/r1": 0.2}) + "\n"
                            for i, loss in enumerate(losses)))
    return path


def summarizer_history(path: Path, rouge1: list[float]) -> Path:
    path.write_text("".join(json.dumps({"step": 10 * i, "samples_seen": 40 * i, "loss": 3.0 - i,
                                        "val/rouge1": r, "val/rougeL": r - 0.05}) + "\n"
                            for i, r in enumerate(rouge1)))
    return path


@pytest.fixture
def run(tmp_path):
    """Two LVM logs and a scored summarizer's log (its learning curve is drawn from the log: a third kind of
    plot)."""
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"n": 6, "rouge": {"rouge1": {"f": 0.3}, "rougeL": {"f": 0.25}}}))
    return {"history:lvm-a": history(tmp_path / "a.jsonl", [0.9, 0.5, 0.3]),
            "history:lvm-b": history(tmp_path / "b.jsonl", [1.2, 0.8]),
            "history:causal": summarizer_history(tmp_path / "causal.jsonl", [0.2, 0.3, 0.35]),
            "scores:causal": scores}


@pytest.fixture
def draws(monkeypatch):
    """Every real drawing, by title (the cache calls report_plots.plot_panels only on a miss)."""
    drawn: list[str] = []
    real = report_plots.plot_panels

    def counting(panels, title, x_key, columns=3):
        drawn.append(title)
        return real(panels, title, x_key, columns)

    monkeypatch.setattr(report_plots, "plot_panels", counting)
    return drawn


def page(files: dict, cache: PlotCache | None) -> dict[str, str]:
    """{figure caption: its data URI} of the page built from ``files``."""
    html = build_report(collect_artifacts([f"{key}={path}" for key, path in files.items()]), ReportSettings(),
                        plot_cache=cache)
    return {caption.strip(): uri for uri, caption in IMAGE.findall(html)}


TITLES = ["a: loss terms", "a: validation", "b: loss terms", "b: validation", "causal: loss terms",
          "causal: validation", "summarizer learning curves"]


def test_unchanged_inputs_are_not_redrawn_and_the_page_is_the_same(tmp_path, run, draws):
    uncached = page(run, None)
    assert sorted(draws) == sorted(TITLES) and len(uncached) == len(TITLES)
    draws.clear()
    cache = PlotCache(tmp_path / "cache")
    first = page(run, cache)
    assert sorted(draws) == sorted(TITLES)  # an empty cache draws everything ...
    assert len(list((tmp_path / "cache").glob("*.png"))) == len(TITLES)
    draws.clear()
    again = PlotCache(tmp_path / "cache")  # a new report job on the same folder
    second = page(run, again)
    assert draws == [] and sorted(again.reused) == sorted(TITLES) and again.drawn == []  # ... a rerun nothing
    assert second == first == uncached  # the same images as drawing them


def test_a_changed_input_redraws_its_plots_only(tmp_path, run, draws):
    cache_dir = tmp_path / "cache"
    before = page(run, PlotCache(cache_dir))
    history(run["history:lvm-a"], [0.9, 0.5, 0.2])  # one value of run a's log changes
    summarizer_history(run["history:causal"], [0.2, 0.3, 0.4])
    draws.clear()
    cache = PlotCache(cache_dir)
    after = page(run, cache)
    assert sorted(draws) == ["a: loss terms", "a: validation", "causal: loss terms", "causal: validation",
                             "summarizer learning curves"]
    assert sorted(cache.reused) == ["b: loss terms", "b: validation"]
    changed = {caption for caption in after if after[caption] != before[caption]}
    assert any(c.startswith("a: loss") for c in changed) and any(c.startswith("learning curve") for c in changed)
    assert not any(c.startswith("b: ") for c in changed), changed
    assert after == page(run, None)  # what a fresh drawing of the new inputs gives, never the old plot
    # the plots of the old inputs are gone from the folder: it holds this page's plots only
    assert len(list(cache_dir.glob("*.png"))) == len(TITLES)


def test_a_changed_input_file_redraws_even_when_the_drawn_values_are_the_same(tmp_path, run, draws):
    page(run, PlotCache(tmp_path / "cache"))
    with open(run["history:lvm-b"], "a") as fh:  # a record with no drawn series: same panels, another file
        fh.write(json.dumps({"note": "resumed"}) + "\n")
    draws.clear()
    page(run, PlotCache(tmp_path / "cache"))
    assert sorted(draws) == ["b: loss terms", "b: validation"]


def test_changed_plotting_code_redraws_everything(tmp_path, run, draws, monkeypatch):
    page(run, PlotCache(tmp_path / "cache"))
    monkeypatch.setattr(PlotCache, "code_version", staticmethod(lambda: "another plot_panels"))
    draws.clear()
    page(run, PlotCache(tmp_path / "cache"))
    assert sorted(draws) == sorted(TITLES)


def test_the_code_version_follows_the_module_source_and_matplotlib():
    version = PlotCache.code_version()
    source = Path(report_plots.__file__).read_bytes()
    import hashlib

    assert hashlib.sha256(source).hexdigest() in version and "matplotlib=" in version


def test_a_damaged_cached_plot_is_redrawn_not_shown(tmp_path, run, draws):
    cache_dir = tmp_path / "cache"
    good = page(run, PlotCache(cache_dir))
    for path in cache_dir.glob("*.png"):  # a half-written file and one that is not a PNG at all
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if path.stat().st_size % 2 else b"not a png")
    draws.clear()
    again = page(run, PlotCache(cache_dir))
    assert sorted(draws) == sorted(TITLES) and again == good


def test_the_cli_uses_the_cache_folder(tmp_path, run, capsys):
    from vecflow.cli import main as cli_main

    argv = ["report", *sum((["--artifact", f"{k}={p}"] for k, p in run.items()), []), "--settings", "{}",
            "--plot-cache", str(tmp_path / "plots"), "--out", str(tmp_path / "index.html")]
    assert cli_main(argv) == 0
    assert f"{len(TITLES)} drawn, 0 from the cache" in capsys.readouterr().out
    (tmp_path / "plots" / "README").write_text("kept")  # not a cached plot: the pruning leaves it alone
    assert cli_main(argv) == 0
    assert f"0 drawn, {len(TITLES)} from the cache" in capsys.readouterr().out
    assert len(list((tmp_path / "plots").glob("*.png"))) == len(TITLES)
    assert (tmp_path / "plots" / "README").read_text() == "kept"
