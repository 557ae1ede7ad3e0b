"""lvm-seeds: one recipe over several seeds, 5CAT mean ± sd, the forward verdicts made on the mean (issue 21)."""

import json

import pytest

from vecflow.cli import main
from vecflow.core.errors import VecflowError
from vecflow.lvm.seeds import aggregate


def report(c0, margin, mrr):
    split = {"c0": c0, "margin": margin, "mrr": mrr, "r1": 0.1, "r5": 0.5, "cos_target": c0}
    baselines = {"copy_last": {"val": {"c0": 0.47, "margin": -0.52, "mrr": 0.23}},
                 "context_mean": {"val": {"c0": 0.59, "margin": -0.18, "mrr": 0.14}},
                 "ridge": {"val": {"c0": 0.62, "margin": -0.06, "mrr": 0.30}}}
    return {"model": {"val": split}, "baselines": baselines}


def test_mean_and_sd_over_seeds_and_the_verdict_is_on_the_mean():
    record = aggregate({"a": report(0.60, 0.010, 0.31), "b": report(0.62, -0.004, 0.33), "c": report(0.61, 0.003, 0.32)})
    val = record["splits"]["val"]
    assert val["model"]["c0"]["mean"] == pytest.approx(0.61) and val["model"]["c0"]["sd"] == pytest.approx(0.01)
    assert val["model"]["margin"]["mean"] == pytest.approx(0.003)
    assert val["verdict"]["margin_positive"] and val["verdict"]["c0_at_least_context_mean"]
    assert val["verdict"]["mrr_above_ridge"] and val["verdict"]["met"]
    assert "± " in val["verdict"]["line"]
    backward = aggregate({"a": report(0.63, -0.05, 0.33), "b": report(0.63, 0.01, 0.33)})["splits"]["val"]
    assert backward["verdict"]["margin_positive"] is False and backward["verdict"]["met"] is False
    low_mrr = aggregate({"a": report(0.63, 0.02, 0.29)})["splits"]["val"]
    assert low_mrr["verdict"]["mrr_above_ridge"] is False and low_mrr["verdict"]["met"] is False


def test_cli_writes_the_record_and_refuses_bad_reports(tmp_path, capsys):
    paths = []
    for name, margin in (("a", 0.01), ("b", 0.02)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(report(0.6, margin, 0.31)))
        paths.append(f"{name}={path}")
    out = tmp_path / "seeds.json"
    assert main(["lvm-seeds", *(x for p in paths for x in ("--report", p)), "--out-json", str(out)]) == 0
    assert json.loads(out.read_text())["seeds"] == 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"not": "5cat"}))
    code = main(["lvm-seeds", "--report", f"x={bad}", "--out-json", str(tmp_path / "never.json")])
    assert code != 0 and not (tmp_path / "never.json").exists()
    assert "bad.json: field 'model': missing" in capsys.readouterr().err
    with pytest.raises(VecflowError, match="no 5CAT reports"):
        aggregate({})
