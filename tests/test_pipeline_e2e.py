"""The whole DAG for real with tiny random models, then the report regenerated from cached artifacts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_workflow import tiny_config, write_workdir
from workflow_api import REPO, run

pytestmark = pytest.mark.slow

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def snapshot(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_encoder, tiny_causal_lm) -> Path:
    """A workdir with its own copy of the Snakefile and workflow/, after one complete run."""
    workdir = tmp_path_factory.mktemp("e2e")
    shutil.copy(REPO / "Snakefile", workdir / "Snakefile")
    shutil.copytree(REPO / "workflow", workdir / "workflow")
    config = tiny_config(tiny_encoder, tiny_causal_lm)
    config["hpo"].update({"workers": 2, "trials_per_worker": 1, "metric": "rougeL"})
    config["deploy"]["name"] = "tiny"
    # random tiny summarizers write near-constant text: only the input-dependence gates are relaxed here
    config["deploy"]["gates"]["summarizer"].update({"min_distinct_ratio": 0.0, "min_input_margin": -1.0})
    write_workdir(workdir, config)
    run(workdir, cores=2)
    return workdir


def dry_run_jobs(workdir: Path, *extra: str) -> str:
    result = subprocess.run(
        [SNAKEMAKE, "-s", str(workdir / "Snakefile"), "-d", str(workdir), "--cores", "1", "-n",
         "--resources", "gpu=1", *extra],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def test_every_stage_leaves_its_artifact(finished_run):
    results = finished_run / "results"
    for path in [
        "summary/filtered/stats.json", "summarizer/model/config.json", "eval/seq2seq/scores.json",
        "summary/dialogues/selection.jsonl", "causal/model/config.json", "eval/causal/scores.json",
        "eval/elm/scores.json", "hpo/elm-demo/best_params.yaml", "hpo/elm-demo/trials.csv",
        "elm/adapter/adapter.safetensors", "lvm/diagnostics/direction.json", "lvm/fivecat/p1.json",
        "lvm/fivecat/p4.json", "lvm/models/p4/model.safetensors", "deploy/tiny.decision.json",
        "deploy/tiny/manifest.json", "report/index.html",
    ]:
        assert (results / path).exists(), path
    decision = json.loads((results / "deploy/tiny.decision.json").read_text())
    assert decision["deploy"] is True
    trials = (results / "hpo/elm-demo/trials.csv").read_text().strip().splitlines()
    assert len(trials) == 1 + 2  # header + one trial per worker


def test_artifacts_hold_real_numbers_and_the_decision_gates_what_is_bundled(finished_run):
    """Not only that files exist: scores are ROUGE/BERTScore in range, 5CAT numbers are finite, every bundled
    model has a gate, and the bundle carries exactly the summarizer the decision chose."""
    import math

    results = finished_run / "results"
    compared = {}
    for family in ("seq2seq", "causal", "elm"):
        scores = json.loads((results / f"eval/{family}/scores.json").read_text())
        assert scores["n"] > 0
        assert 0.0 <= scores["rouge"]["rouge1"]["f"] <= 1.0 and -1.0 <= scores["bertscore"]["f1"] <= 1.0
        assert 0.0 <= scores["input_dependence"]["distinct_ratio"] <= 1.0
        compared[family] = scores["rouge"]["rouge1"]["f"]
    fivecat = json.loads((results / "lvm/fivecat/p4.json").read_text())
    assert all(math.isfinite(fivecat["model"][split][m]) for split in ("val", "ood") for m in ("c0", "margin"))
    decision = json.loads((results / "deploy/tiny.decision.json").read_text())
    chosen = decision["summarizer"]
    assert chosen["choice"] == "best" and chosen["compared"] == pytest.approx(compared)
    assert chosen["family"] == max(compared, key=lambda f: (compared[f], f == "seq2seq"))
    gated = {g["component"] for g in decision["gates"]}
    assert gated == {"lvm", "summarizer"}
    assert {g["gate"] for g in decision["gates"] if g["component"] == "summarizer"} >= {
        "distinct_ratio", "input_margin"}
    manifest = json.loads((results / "deploy/tiny/manifest.json").read_text())
    assert manifest["components"]["summarizer"]["family"] == chosen["family"]
    has_seq2seq = any(rel.startswith("summarizer/") for rel in manifest["files"])
    has_elm = any(rel.startswith("elm/") for rel in manifest["files"])
    assert (has_seq2seq, has_elm) == (chosen["family"] != "elm", chosen["family"] == "elm")


def test_summarizers_select_on_the_selection_split_and_read_their_input(finished_run):
    """Checkpoints are chosen on the selection split (carved from train, id-disjoint from the scored val split),
    and what the scorer says about input dependence is what the predictions show (issue 14). Random tiny models
    write near-constant text, so whether a model reads its input is checked in test_summary_train and on real
    models; here the pipeline must measure it right and hand it to the deploy gate."""
    results = finished_run / "results"
    ids = {split: {json.loads(line)["id"] for line in (results / f"summary/dialogues/{split}.jsonl").open()}
           for split in ("train", "selection", "val")}
    assert len(ids["selection"]) == 4 and not ids["selection"] & (ids["train"] | ids["val"])
    decision = json.loads((results / "deploy/tiny.decision.json").read_text())
    for family in ("seq2seq", "causal"):
        predictions = [json.loads(line)["prediction"] for line in (results / f"eval/{family}/predictions.jsonl").open()]
        assert len(predictions) == len(ids["val"])
        scores = json.loads((results / f"eval/{family}/scores.json").read_text())
        distinct = len({" ".join(p.lower().split()) for p in predictions}) / len(predictions)
        assert scores["input_dependence"]["distinct_ratio"] == pytest.approx(distinct)
    chosen = decision["summarizer"]["family"]
    gate = next(g for g in decision["gates"] if g["component"] == "summarizer" and g["gate"] == "distinct_ratio")
    chosen_scores = json.loads((results / f"eval/{chosen}/scores.json").read_text())
    assert gate["value"] == pytest.approx(chosen_scores["input_dependence"]["distinct_ratio"])
    for family in ("seq2seq", "causal"):
        history = [json.loads(line) for line in (results / f"{'summarizer' if family == 'seq2seq' else 'causal'}"
                                                           f"/model/history.jsonl").open()]
        assert all("val/input_dependence/distinct_ratio" in record for record in history)


def test_second_run_has_nothing_to_do(finished_run):
    assert "Nothing to be done" in dry_run_jobs(finished_run)


def test_the_default_config_given_again_is_the_same_run(finished_run):
    """`make demo` once passed --configfile config/config.yaml on top of the default: same run, one source."""
    again = str(finished_run / "config" / "config.yaml")
    assert "Nothing to be done" in dry_run_jobs(finished_run, "--configfile", again)
    resolved = (finished_run / "results" / "config.resolved.yaml").read_text()
    assert resolved.count("# config file: ") == 1, resolved[:500]


def test_report_is_rebuilt_from_cache_alone(finished_run):
    results = finished_run / "results"
    report = results / "report" / "index.html"
    report.unlink()
    before = snapshot(results)
    plan = dry_run_jobs(finished_run)
    assert "report" in plan
    for rule in ("train_lvm", "fivecat", "train_summarizer", "train_elm", "score_summaries", "embed_chunks"):
        assert f"rule {rule}:" not in plan, rule
    run(finished_run, cores=1)
    assert report.exists()
    after = snapshot(results)
    changed = {p for p in after if before.get(p) != after[p]}
    assert changed <= {report, results / "logs" / "report.log"}, sorted(map(str, changed))


def test_editing_report_captions_does_not_invalidate_results(finished_run):
    caption = finished_run / "workflow" / "report" / "fivecat.rst"
    caption.write_text(caption.read_text() + "\nEdited caption.\n")
    assert "Nothing to be done" in dry_run_jobs(finished_run)


def test_snakemake_report_zip_builds(finished_run):
    result = subprocess.run(
        [SNAKEMAKE, "-s", str(finished_run / "Snakefile"), "-d", str(finished_run), "--cores", "1",
         "--report", str(finished_run / "report.zip")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (finished_run / "report.zip").stat().st_size > 10_000


def test_bundle_manifest_covers_every_file(finished_run):
    bundle = finished_run / "results" / "deploy" / "tiny"
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    files = {f for f in files if not f.startswith(".")} - {"manifest.json"}  # Snakemake's .snakemake_timestamp
    assert files == set(manifest["files"])
    assert yaml.safe_load((finished_run / "config" / "config.yaml").read_text())["deploy"]["name"] == "tiny"


def test_pipeline_report_renders_in_a_real_browser(finished_run, tmp_path):
    from test_report_browser import CHROMIUM, check_in_browser

    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium not installed (make test installs it where it can)")
    page = finished_run / "results" / "report" / "index.html"
    result = check_in_browser(page, tmp_path)
    assert result["screenshot_rc"] == 0 and result["screenshot_bytes"] > 10_000
    assert 'data-images="loaded"' in result["body"], result
    assert int(result["body"].split('data-image-count="')[1].split('"')[0]) >= 6  # direction, 5CAT, curves, HPO
    assert result["console"] == [] and result["network"] == []
    kept = REPO / "results" / "report-screenshot.png"  # kept for people to look at (results/ is git-ignored)
    kept.parent.mkdir(exist_ok=True)
    shutil.copy(tmp_path / "page.png", kept)
