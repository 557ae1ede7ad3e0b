"""vecflow compare: every headline metric of two results folders with deltas, as text, JSON and HTML."""

import json
import re
from pathlib import Path

import pytest

from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError
from vecflow.ship.compare import comparison_rows, delta, discover, format_text, headline, headline_from_files


def split_metrics(c0, margin=0.1, mrr=0.5, r1=0.3, r5=0.8):
    return {"c0": c0, "margin": margin, "mrr": mrr, "r1": r1, "r5": r5, "n_windows": 10}


def fivecat(c0, dominates=False, fraction=1.0):
    return {"model": {"val": split_metrics(c0), "ood": split_metrics(c0 - 0.05)},
            "baselines": {"copy_last": {"val": split_metrics(0.4), "ood": split_metrics(0.35)}},
            "dominance": {"val": {"dominates": dominates, "line": "..."}},
            "gate_counts": {"passed": 5, "total": 15}, "settings": {"train_fraction": fraction}}


def scores(r1):
    return {"n": 10, "rouge": {m: {"f": r1} for m in ("rouge1", "rouge2", "rougeL", "rougeLsum")},
            "bertscore": {"f1": 0.6}, "input_dependence": {"distinct_ratio": 1.0, "margin": 0.2}}


def results_dir(root: Path, runs: dict, families: dict, decision: dict | None = None) -> Path:
    """A results folder laid out as the pipeline writes it, with a model file beside (never read)."""
    (root / "lvm" / "fivecat").mkdir(parents=True)
    for run, report in runs.items():
        (root / "lvm" / "fivecat" / f"{run}.json").write_text(json.dumps(report))
    for family, score in families.items():
        (root / "eval" / family).mkdir(parents=True)
        (root / "eval" / family / "scores.json").write_text(json.dumps(score))
    if decision is not None:
        (root / "deploy").mkdir()
        (root / "deploy" / "demo.decision.json").write_text(json.dumps(decision))
    (root / "lvm" / "models" / "p4").mkdir(parents=True)
    (root / "lvm" / "models" / "p4" / "model.safetensors").write_bytes(b"\0")
    return root


@pytest.fixture
def two_runs(tmp_path):
    a = results_dir(tmp_path / "a", {"p4": fivecat(0.60), "p4-lc10": fivecat(0.40, fraction=0.1)},
                    {"causal": scores(0.40)},
                    {"deploy": False, "failed": ["lvm.min_c0"], "summarizer": {"family": "causal"}})
    b = results_dir(tmp_path / "b", {"p4": fivecat(0.65, dominates=True), "ctxres": fivecat(0.7)},
                    {"causal": scores(0.42), "elm": scores(0.2)},
                    {"deploy": True, "failed": [], "summarizer": {"family": "elm"}})
    return a, b


def test_headline_metrics_of_a_results_folder(two_runs):
    a, _ = two_runs
    files = discover(a)
    assert set(files["fivecat"]) == {"p4", "p4-lc10"} and set(files["scores"]) == {"causal"}
    metrics = headline_from_files(files)
    assert metrics["lvm/p4/val/c0"] == 0.60 and metrics["lvm/p4/ood/c0"] == pytest.approx(0.55)
    assert metrics["lvm/p4/val/beats_all_baselines"] is False and "lvm/p4/ood/beats_all_baselines" not in metrics
    assert metrics["lvm/p4/gates_passed"] == 5 and metrics["lvm/p4/gates_total"] == 15
    assert metrics["lvm/baseline/copy_last/val/c0"] == 0.4  # from the full-data run, not the curve run
    assert metrics["summary/causal/rouge1"] == 0.40 and metrics["summary/causal/bertscore_f1"] == 0.6
    assert metrics["summary/causal/own_minus_shuffled_r1"] == 0.2
    assert metrics["deploy/deploy"] is False and metrics["deploy/summarizer"] == "causal"
    assert metrics["deploy/failed_gates"] == "lvm.min_c0"
    assert list(metrics).index("lvm/p4/val/c0") < list(metrics).index("summary/causal/rouge1")


def test_rows_have_deltas_and_name_metrics_of_one_run_only(two_runs):
    a, b = (headline_from_files(discover(d)) for d in two_runs)
    rows = {key: (va, vb, d) for key, va, vb, d in comparison_rows(a, b)}
    assert rows["lvm/p4/val/c0"][2] == pytest.approx(0.05)
    assert rows["summary/causal/rouge1"][2] == pytest.approx(0.02)
    assert rows["lvm/p4/val/beats_all_baselines"] == (False, True, "changed")
    assert rows["lvm/p4/gates_passed"] == (5, 5, 0)
    assert rows["lvm/ctxres/val/c0"] == (None, 0.7, None) and rows["lvm/p4-lc10/val/c0"] == (0.40, None, None)
    assert rows["summary/elm/rouge1"] == (None, 0.2, None)
    assert rows["deploy/summarizer"] == ("causal", "elm", "changed")
    assert delta(1, 1) == 0 and delta("x", "x") == "" and delta(None, 2) is None


def test_text_lists_what_differs_first(two_runs):
    a, b = (headline_from_files(discover(d)) for d in two_runs)
    rows = comparison_rows(a, b)
    text = format_text(rows, "A", "B")
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "A", "B", "Δ", "(B", "−", "A)"]
    assert re.search(r"^lvm/p4/val/c0\s+0\.6000\s+0\.6500\s+\+0\.0500$", text, re.M)
    assert re.search(r"^lvm/ctxres/val/c0\s+—\s+0\.7000\s+—$", text, re.M)
    assert re.search(r"^deploy/deploy\s+no\s+yes\s+changed$", text, re.M)
    assert "lvm/p4/gates_passed" not in text  # equal: counted, listed only with --all
    assert f"{len(rows)} metrics:" in lines[-1] and "(--all lists them)" in lines[-1]
    assert re.search(r"^lvm/p4/gates_passed\s+5\s+5\s+\+0$", format_text(rows, "A", "B", show_all=True), re.M)


def test_cli_prints_the_table_and_writes_json_and_html(two_runs, tmp_path, capsys):
    a, b = two_runs
    out_json, out_html = tmp_path / "diff.json", tmp_path / "diff.html"
    assert cli_main(["compare", str(a), str(b), "--json", str(out_json), "--html", str(out_html)]) == 0
    printed = capsys.readouterr().out
    assert "lvm/p4/val/c0" in printed and "+0.0500" in printed
    rows = {r["metric"]: r for r in json.loads(out_json.read_text())["rows"]}
    assert rows["lvm/p4/val/c0"]["a"] == 0.6 and rows["lvm/p4/val/c0"]["delta"] == pytest.approx(0.05)
    page = out_html.read_text()
    assert "<script" not in page and "lvm/p4/val/c0" in page and 'class="num up">+0.0500' in page


def test_not_a_results_folder_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VecflowError, match=r"empty: no headline metric file .*is it a pipeline results folder"):
        discover(tmp_path / "empty")
    assert cli_main(["compare", str(tmp_path / "empty"), str(tmp_path / "nowhere")]) == 2
    assert "vecflow compare: error:" in capsys.readouterr().err
    with pytest.raises(VecflowError, match="nowhere: not a folder"):
        discover(tmp_path / "nowhere")
    bad = results_dir(tmp_path / "bad", {"p4": {"model": {"val": {"c0": "high"}}}}, {})
    with pytest.raises(VecflowError, match=r"p4.json.*model.val.c0"):
        headline_from_files(discover(bad))


def test_headline_without_deploy_or_lvm():
    metrics = headline({}, {"seq2seq": scores(0.3)}, None)
    assert set(metrics) == {f"summary/seq2seq/{m}" for m in ("rouge1", "rouge2", "rougeL", "rougeLsum",
                                                              "bertscore_f1", "distinct_ratio",
                                                              "own_minus_shuffled_r1")}
