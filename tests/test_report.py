import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError
from vecflow.ship.page import git_revision
from vecflow.ship.report import build_report
from vecflow.ship.report_artifacts import benchmark_specs, collect_artifacts, parse_artifact, read_benchmark
from vecflow.ship.report_plots import classify_history
from vecflow.ship.settings import ReportSettings

SETTINGS = {"title": "demo <report>", "config_hash": "abc123", "seed": 1, "device": "cpu"}


def tiny_png(width=3, height=2) -> bytes:
    """A valid RGB PNG written by hand (no plotting library needed)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\x80\x20\x20" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def make_artifacts(root: Path) -> dict[str, Path]:
    """One small file per report key, shaped like the pipeline's outputs; returns {spec key: path}."""
    root.mkdir(parents=True, exist_ok=True)

    def put(name, content):
        path = root / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(json.dumps(content))
        return path

    history = "".join(json.dumps(r) + "\n" for r in [
        {"epoch": 1, "train/mse": 0.9, "val/mse": 1.0, "train/nce": 4.0, "val/c0": 0.4, "val/margin": 0.01,
         "val/r1": 0.2, "lambda/mse": 1.0, "lr": 5e-4},
        {"epoch": 2, "train/mse": 0.5, "val/mse": 0.7, "train/nce": 4.0, "val/c0": 0.5, "val/margin": 0.05,
         "val/r1": 0.3, "lambda/mse": 1.0, "lr": 2e-4},
    ])
    split_metrics = {"c0": 0.61, "margin": 0.14, "peak_k": 0, "offsets": {"-1": 0.4, "0": 0.61, "1": 0.3},
                     "r1": 0.7, "r5": 0.97, "mrr": 0.82, "rollout": 0.5,
                     "ablations": {"shuffled": -0.05, "reversed": -0.07}}
    copy_last = {"c0": 0.41, "margin": -0.5, "peak_k": -1, "offsets": {"-1": 1.0, "0": 0.41, "1": 0.2}, "r1": 0.3}
    return {
        "config": put("config.yaml", "seed: 1234\nreport:\n  title: <demo>\n"),
        "manifest:minilm": put("manifest.json", {"name": "minilm", "source": {"source": "pypi", "version": "0.1.0"},
                                                 "files": {"config.json": "aa" * 32, "model.safetensors": "bb" * 32}}),
        "data:train": put("train.jsonl", '{"id": "1"}\n'),
        "ingest_stats": put("ingest.json", {"seed": 3, "splits": {
            "train": {"dialogues": 40, "top_topics": {"shopping": 9, "job interview": 12, "travel": 2, "a": 1,
                                                      "b": 1, "c": 1}, "speakers": ["#Person1#", "#Person2#"]},
            "val": {"dialogues": 8, "top_topics": {"weather": 3}}}}),
        "filter_stats": put("filter.json", {"splits": {"train": {"rows_kept": 40, "dropped": {"task_type": {"topic": 40}}}}}),
        "leakage": put("leakage.json", {"counts": {"train": {"articles": 7, "chunks": 70}, "val": {"articles": 2,
                                                                                              "chunks": 20}},
                                        "article_ids_in_two_splits": []}),
        "split_ids": put("ids.json", {"train": [0, 1, 2, 3, 4, 5, 6], "val": [7, 8]}),
        "direction": put("direction.json", {"coherence": 0.46, "signal": 0.12, "pos": [0.3, 0.35, 0.5],
                                            "n_windows": 60, "gate": {"passed": True, "waived": False}}),
        "direction_plot": put("direction.png", tiny_png()),
        "history:lvm-p4": put("history.jsonl", history),
        "fivecat:p4": put("fivecat.json", {
            "model": {"val": split_metrics, "ood": split_metrics},
            "baselines": {"copy_last": {"val": copy_last, "ood": copy_last},
                          "context_mean": {"val": {**copy_last, "c0": 0.66, "margin": -0.2},
                                           "ood": {**copy_last, "c0": 0.5}}},
            "gates": {"val": {"c0": True, "margin": True, "r5": False}, "generalisation": {"c0": True}},
            "thresholds": {"val": {"c0": 0.5, "margin": 0.12}},
        }),
        "fivecat_plot:p4": put("fivecat.png", tiny_png()),
        "scores:seq2seq": put("scores.json", {
            "n": 8, "rouge": {m: {"f": 0.3, "p": 0.3, "r": 0.3} for m in ("rouge1", "rouge2", "rougeL", "rougeLsum")},
            "bertscore": {"p": 0.6, "r": 0.6, "f1": 0.61, "f1_std": 0.05, "model": "minilm", "num_layers": 6},
            "empty_predictions": 0, "mean_pred_words": 12.0, "mean_ref_words": 15.5,
            "speaker_tag_rate": {"predictions": 0.5, "references": 0.9}}),
        "examples:seq2seq": put("examples.json", {
            "ranked_by": "rougeL.f",
            "best": [{"id": "d1", "prediction": "<b>#Person1#</b> buys", "references": ["#Person1# buys"],
                      "scores": {"rougeL": 0.9, "bertscore_f1": 0.8}}],
            "worst": [{"id": "d2", "prediction": "", "references": ["r"], "scores": {"rougeL": 0.0}}]}),
        "hpo_trials": put("trials.csv", "number,value,params_learning_rate,state\n0,0.61,0.001,COMPLETE\n"),
        "hpo_importance": put("importance.png", tiny_png()),
        "hpo_params": put("best.yaml", "learning_rate: 0.001\nresidual_scale: 0.2\n"),
        "decision": put("decision.json", {
            "deploy": False, "name": "vecflow-demo",
            "gates": [{"gate": "min_c0", "value": 0.3, "threshold": 0.5, "passed": False, "component": "lvm"},
                      {"gate": "min_rouge1", "value": 0.3, "threshold": 0.0, "passed": True,
                       "component": "summarizer"}],
            "failed": ["lvm.min_c0"]}),
        "benchmark:train_lvm/p4": put("train_lvm_p4.tsv", BENCHMARK_TSV.format(s=3725.5, cpu=7000.25)),
        "benchmark:fivecat/p4": put("fivecat_p4.tsv", BENCHMARK_TSV.format(s=60.0, cpu=100.0)),
    }


BENCHMARK_TSV = ("s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
                 "{s}\t1:02:05\t812.5\t900.0\t800.0\t805.0\t1.0\t2.0\t150.0\t{cpu}\n")


def specs(artifacts: dict[str, Path]) -> list[str]:
    return [f"{key}={path}" for key, path in artifacts.items()]


def render(tmp_path, artifacts: dict[str, Path], settings=SETTINGS) -> str:
    out = tmp_path / "out" / "report.html"
    assert cli_main(["report", *sum((["--artifact", s] for s in specs(artifacts)), []),
                     "--settings", json.dumps(settings), "--out", str(out)]) == 0
    return out.read_text()


def section(html_text: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', html_text, re.S)
    assert match, f"section {section_id} missing"
    return match.group(1)


SECTION_IDS = ("summary", "lineage", "data", "diagnostics", "lvm", "hpo", "summaries", "deploy", "runtime")


# ---------------------------------------------------------------------------------------- full page
@pytest.fixture(scope="module")
def full_page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    artifacts = make_artifacts(tmp / "artifacts")
    return render(tmp, artifacts), artifacts


def test_full_page_has_every_section_with_content(full_page):
    html_text, artifacts = full_page
    for section_id in SECTION_IDS:
        assert "not run" not in section(html_text, section_id), section_id
    assert "<title>demo &lt;report&gt;</title>" in html_text
    lineage = section(html_text, "lineage")
    from vecflow.core.io import sha256_file

    assert sha256_file(artifacts["config"]) in lineage and "<details>" in lineage
    assert "title: &lt;demo&gt;" in lineage  # config content, escaped
    assert "abc123" in lineage and "minilm" in lineage and sha256_file(artifacts["data:train"]) in lineage
    assert ">0, 1, 2, 3, 4, 5, 6</td>" in section(html_text, "data")
    assert "data-direction gate passed" in section(html_text, "diagnostics")
    lvm = section(html_text, "lvm")
    assert "p4: loss terms that change (mse) by epoch" in lvm and "p4: val/c0, val/margin, val/r1 by epoch" in lvm
    assert "lambda/mse = 1.0000" in lvm and "train/nce = 4.0000" in lvm  # constant: listed, not drawn
    assert "copy_last" in lvm and "threshold" in lvm and "shuffled" in lvm and "k = -1" in lvm
    assert 'class="num fail">0.9700' in lvm  # r5 gate failed on val
    summaries = section(html_text, "summaries")
    assert "0.6100" in summaries and "&lt;b&gt;#Person1#&lt;/b&gt; buys" in summaries
    assert "params_learning_rate" in section(html_text, "hpo") and "residual_scale" in section(html_text, "hpo")
    summary = section(html_text, "summary")
    assert "NOT DEPLOYED vecflow-demo" in summary and "deciding gate: lvm min_c0: value 0.3, threshold 0.5" in summary
    assert "min_c0" in section(html_text, "deploy")
    assert "1:03:06" in summary and "train_lvm" in summary  # wall time per rule, from the benchmark files
    assert "train_lvm/p4" in section(html_text, "runtime")


def test_page_is_self_contained(full_page):
    html_text, _ = full_page
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", html_text)
    assert "http://" not in html_text and "https://" not in html_text
    assert "<script" not in html_text.lower() and "<link" not in html_text.lower()
    sources = re.findall(r'<img src="([^"]+)"', html_text)
    assert len(sources) == 5  # direction, LVM loss terms, LVM validation metrics, 5CAT plot, HPO importance
    assert all(s.startswith("data:image/png;base64,") for s in sources)


def test_text_is_escaped(tmp_path):
    root = tmp_path / "a"
    root.mkdir()
    evil = root / "ingest.json"
    evil.write_text(json.dumps({"<script>alert(1)</script>": "<img src=x onerror=alert(1)>"}))
    html_text = render(tmp_path, {"ingest_stats": evil})
    assert "<script>alert" not in html_text and "<img src=x" not in html_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text


def test_missing_sections_say_not_run(tmp_path):
    artifacts = make_artifacts(tmp_path / "a")
    html_text = render(tmp_path, {"scores:seq2seq": artifacts["scores:seq2seq"]}, settings={"title": "t"})
    for section_id in ("data", "diagnostics", "lvm", "hpo", "deploy", "runtime"):
        assert '<p class="not-run">not run</p>' in section(html_text, section_id), section_id
    assert "config: not run" in section(html_text, "lineage")
    assert "not run" not in section(html_text, "summaries")
    hpo_only_trials = render(tmp_path, {"hpo_trials": artifacts["hpo_trials"]})
    assert "importance plot: not run" in section(hpo_only_trials, "hpo")


def test_history_is_split_into_loss_terms_metrics_other_and_constant():
    lvm = [{"epoch": e, "train/mse": 1.0 / e, "val/mse": 2.0 / e, "train/cos": 0.5, "val/cos": 0.4 + e / 10,
            "val/c0": 0.3 + e / 10, "val/margin": 0.01, "val/r1": 0.1, "lambda/mse": 1.0, "lambda/dir": e / 10,
            "val/loses_to": ["x"], "val/dominates": False} for e in (1, 2, 3)]
    h = classify_history(lvm)
    assert h["x"] == "epoch" and list(h["panels"]) == ["mse", "cos"]  # cos: train constant, val changes
    assert set(h["panels"]["mse"]) == {"train", "val"} and h["panels"]["mse"]["val"][-1] == (3, 2.0 / 3)
    assert h["metrics"] == ["val/c0", "val/margin", "val/r1"] and h["other"] == ["lambda/dir"]
    assert h["constant"] == {"lambda/mse": 1.0}  # val/margin and val/r1 are drawn with val/c0
    elm = [{"epoch": 1, "step": s, "loss/total": 3.0 - s, "loss/guard": 0.1, "time/step_s": 30.0 + s} for s in (1, 2)]
    h = classify_history(elm)
    assert h["x"] == "step" and list(h["panels"]) == ["loss/total"] and h["other"] == ["time/step_s"]
    assert h["constant"] == {"loss/guard": 0.1} and h["metrics"] == []
    single = classify_history([{"epoch": 1, "train/mse": 0.2, "val/c0": 0.5}])
    assert single["panels"] == {} and single["metrics"] == [] and set(single["constant"]) == {"train/mse", "val/c0"}


def test_git_revision_in_and_outside_a_repo(tmp_path):
    assert git_revision(tmp_path) == "unknown"
    repo_rev = git_revision(Path(__file__).resolve().parents[1])
    assert repo_rev == "unknown" or re.match(r"^[0-9a-f]{40}", repo_rev)


# -------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "spec, message",
    [
        ("config", r"--artifact 'config': expected KEY=PATH"),
        ("nonsense=x", r"unknown key 'nonsense'"),
        ("history={path}", r"key 'history' needs a name"),
        ("config:x={path}", r"key 'config' takes no :NAME"),
        ("config=/no/such/file.yaml", r"--artifact 'config=/no/such/file.yaml': /no/such/file.yaml: file not found"),
    ],
)
def test_malformed_artifact_args_name_the_argument(tmp_path, spec, message):
    path = tmp_path / "f.json"
    path.write_text("{}")
    with pytest.raises(VecflowError, match=message):
        parse_artifact(spec.format(path=path))


def test_duplicate_artifact_is_an_error(tmp_path):
    path = tmp_path / "f.json"
    path.write_text("{}")
    with pytest.raises(VecflowError, match="scores:a given twice"):
        collect_artifacts([f"scores:a={path}", f"scores:a={path}"])


def test_bad_files_are_named(tmp_path):
    bad_png = tmp_path / "plot.png"
    bad_png.write_text("not a png")
    with pytest.raises(VecflowError, match=r"plot.png: not a PNG file"):
        build_report(collect_artifacts([f"direction_plot={bad_png}"]), ReportSettings())
    bad_jsonl = tmp_path / "history.jsonl"
    bad_jsonl.write_text('{"epoch": 1}\n{oops\n')
    with pytest.raises(VecflowError, match=r"history.jsonl:2: invalid JSON"):
        build_report(collect_artifacts([f"history:r={bad_jsonl}"]), ReportSettings())


def test_cli_error_exits_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "report.html"
    code = cli_main(["report", "--artifact", "scores:m=/missing/scores.json", "--settings", "{}", "--out", str(out)])
    assert code == 2
    assert "--artifact 'scores:m=/missing/scores.json': /missing/scores.json: file not found" in capsys.readouterr().err
    assert not out.exists()


def test_artifacts_json_is_merged(tmp_path):
    artifacts = make_artifacts(tmp_path / "a")
    mapping = tmp_path / "artifacts.json"
    mapping.write_text(json.dumps({"decision": str(artifacts["decision"])}))
    out = tmp_path / "r.html"
    assert cli_main(["report", "--artifacts-json", str(mapping), "--artifact", f"config={artifacts['config']}",
                     "--settings", "{}", "--out", str(out)]) == 0
    html_text = out.read_text()
    assert "NOT DEPLOYED" in section(html_text, "summary") and "config: not run" not in html_text


# ------------------------------------------------------------------------------- reads only its inputs
def test_report_reads_only_the_files_it_is_given(tmp_path):
    """Run the report in a fresh interpreter with an audit hook: every file opened under tmp_path must be an
    artifact passed on the command line (a model folder lying beside them is never touched), and neither
    torch nor transformers is imported."""
    artifacts = make_artifacts(tmp_path / "artifacts")
    model_dir = tmp_path / "artifacts" / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.safetensors").write_bytes(b"\0" * 16)
    benchmarks = tmp_path / "benchmarks" / "train_lvm"  # read as a folder (--benchmarks)
    benchmarks.mkdir(parents=True)
    (benchmarks / "p1.tsv").write_text(BENCHMARK_TSV.format(s=1.0, cpu=1.0))
    previous = tmp_path / "previous"  # report.compare_with: only its headline files are read
    (previous / "lvm" / "fivecat").mkdir(parents=True)
    (previous / "lvm" / "fivecat" / "p4.json").write_text(artifacts["fivecat:p4"].read_text())
    (previous / "lvm" / "models" / "p4").mkdir(parents=True)
    (previous / "lvm" / "models" / "p4" / "history.jsonl").write_text('{"epoch": 1}\n')
    out = tmp_path / "report.html"
    settings = json.dumps({"compare_with": str(previous)})
    argv = sum((["--artifact", s] for s in specs(artifacts)), []) + [
        "--benchmarks", str(tmp_path / "benchmarks"), "--settings", settings, "--out", str(out)]
    script = f"""
import json, sys
root = {str(tmp_path)!r}
opened = set()
def hook(event, args):
    if event == "open" and isinstance(args[0], str) and args[0].startswith(root):
        opened.add(args[0])
sys.addaudithook(hook)
from vecflow.ship.report import main
main({json.dumps(argv)})
print(json.dumps({{"opened": sorted(opened), "torch": "torch" in sys.modules,
                   "transformers": "transformers" in sys.modules}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    allowed = {str(p) for p in artifacts.values()}
    allowed |= {str(benchmarks / "p1.tsv"), str(previous / "lvm" / "fivecat" / "p4.json")}
    reads = {p for p in report["opened"] if not Path(p).name.startswith(".report.html")}
    assert reads == allowed, reads ^ allowed  # each artifact read, nothing else (the hook works)
    assert not any(str(model_dir) in p for p in report["opened"])
    assert not report["torch"] and not report["transformers"]
    assert out.exists()


def test_fivecat_tolerates_partial_structures_and_names_a_bad_file(tmp_path):
    partial = tmp_path / "fivecat.json"  # no OOD, one baseline, no thresholds, a gate that is a bare verdict
    partial.write_text(json.dumps({"model": {"val": {"c0": 0.5, "extra_metric": 2.0}},
                                   "baselines": {"ridge": {"val": {"c0": 0.4}}},
                                   "gates": {"val": {"c0": True}, "generalisation": True}}))
    html_text = render(tmp_path, {"fivecat:r": partial})
    fivecat = section(html_text, "lvm")
    assert "extra_metric" in fivecat and "ridge" in fivecat and 'class="num pass">0.5000' in fivecat
    assert "0.5000 ★" in section(html_text, "summary")  # the model beats ridge on VAL c_0
    bad = tmp_path / "bad.json"  # the 5CAT results reader (vecflow.lvm.fivecat_results) checks the file
    bad.write_text(json.dumps({"model": {"val": {"c0": "high"}}}))
    with pytest.raises(VecflowError, match=r"bad.json.*model.val.c0.*expected a number"):
        build_report(collect_artifacts([f"fivecat:r={bad}"]), ReportSettings())


def test_lvm_dominance_line_per_split_and_learning_curve(tmp_path):
    from vecflow.lvm.fivecat_cli import learning_curve, plot_learning_curve

    def fivecat_report(model_c0):
        model = {"val": {"c0": model_c0, "mrr": 0.4, "margin": -0.01}, "ood": {"c0": 0.7, "mrr": 0.4, "margin": 0.0}}
        baselines = {"context_mean": {"val": {"c0": 0.6, "mrr": 0.2, "margin": -0.1},
                                      "ood": {"c0": 0.6, "mrr": 0.2, "margin": -0.1}}}
        from vecflow.lvm.fivecat_verdicts import dominance_verdicts

        return {"model": model, "baselines": baselines, "dominance": dominance_verdicts(model, baselines)}

    small, full = fivecat_report(0.55), fivecat_report(0.65)
    curve = learning_curve([{"run": "r-lc10", "fivecat": small, "summary": {"train_windows": 100}},
                            {"run": "r", "fivecat": full, "summary": {"train_windows": 1000}}])
    (tmp_path / "curve.json").write_text(json.dumps(curve))
    plot_learning_curve(curve, tmp_path / "curve.png")
    (tmp_path / "small.json").write_text(json.dumps(small))
    html_text = render(tmp_path, {"fivecat:r-lc10": tmp_path / "small.json", "lvm_curve": tmp_path / "curve.json",
                                  "lvm_curve_plot": tmp_path / "curve.png"})
    fivecat = section(html_text, "lvm")
    assert "val: the model does NOT dominate: it loses to context_mean on c0 (0.550 vs 0.600)" in fivecat
    assert "ood: the model dominates every baseline (context_mean)" in fivecat
    assert "LVM learning curve" in fivecat and "train windows" in fivecat and "data:image/png" in fivecat
    assert [r["train_windows"] for r in curve["rows"] if r["predictor"] == "model"] == [100, 100, 1000, 1000]


# ------------------------------------------------------------------------------------ summary first
def test_summary_comes_first_and_details_fold_in_dag_order_with_a_matching_toc(full_page):
    html_text, _ = full_page
    ids = re.findall(r'<section id="([^"]+)">', html_text)
    assert tuple(ids) == SECTION_IDS  # summary, then the DAG: lineage, data, diagnostics, LVM, HPO, summaries, ...
    nav = re.search(r"<nav[^>]*>(.*?)</nav>", html_text, re.S).group(1)
    assert re.findall(r'href="#([^"]+)"', nav) == ids  # the table of contents names the same sections
    assert html_text.index("<nav") < html_text.index('<section id="summary">')
    summary = section(html_text, "summary")
    assert "<details" not in summary.split("<table", 1)[0]  # the summary is open, its first table up front
    for section_id in SECTION_IDS[1:]:
        body = section(html_text, section_id).strip()
        assert body.startswith('<details class="section"><summary><h2>') and body.endswith("</details>"), section_id


def test_lvm_summary_marks_the_best_of_model_and_baselines(full_page):
    html_text, _ = full_page
    summary = section(html_text, "summary")
    lvm_table = summary[summary.index("Next-vector models"):].split("</table>", 1)[0]
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<tr><td class="(?:model|baseline)">([^<]+)</td>(.*?)</tr>',
                                                        lvm_table)}
    assert list(rows) == ["p4", "copy-last", "context-mean"]
    cells = {name: re.findall(r'<td class="([^"]*)">([^<]*)</td>', row) for name, row in rows.items()}
    assert cells["p4"][1] == ("num win", "0.1400 ★")  # VAL margin: the model's 0.14 beats -0.5 and -0.2
    assert cells["context-mean"][0] == ("num win", "0.6600 ★") and cells["p4"][0] == ("num", "0.6100")
    assert cells["copy-last"][0] == ("num", "0.4100")
    assert "VAL c_0" in lvm_table and "OOD R@5" in lvm_table


def test_lvm_summary_groups_runs_by_their_baselines_and_leaves_curve_runs_to_the_details():
    from vecflow.ship.report_summary import lvm_summary

    def report(model_c0, ridge_c0, fraction=1.0):
        split = lambda c0: {"c0": c0, "margin": 0.0, "mrr": 0.1, "r5": 0.2}  # noqa: E731
        return {"model": {"val": split(model_c0)}, "baselines": {"ridge": {"val": split(ridge_c0)}},
                "settings": {"train_fraction": fraction}}

    blocks = lvm_summary({"a": report(0.5, 0.4), "b": report(0.3, 0.4), "a-lc10": report(0.9, 0.2, 0.1)})
    rows = [[c.text for c in row] for row in blocks[0]["rows"]]
    assert [r[0] for r in rows] == ["a", "b", "ridge"]  # a and b share one ridge row; a-lc10 is a curve run
    assert rows[0][1] == "0.5000 ★" and rows[2][1] == "0.4000"
    assert "a-lc10" in blocks[0]["caption"]
    blocks = lvm_summary({"a": report(0.5, 0.4), "b": report(0.3, 0.6)})  # different data: one group each
    assert [[c.text for c in row][0] for row in blocks[0]["rows"]] == ["a", "ridge (data of a)", "b", "ridge (data of b)"]
    assert [[c.text for c in row][1] for row in blocks[0]["rows"]] == ["0.5000 ★", "0.4000", "0.3000", "0.6000 ★"]
    only_curve = lvm_summary({"a-lc10": report(0.9, 0.2, 0.1)})  # no full run: the curve runs are the summary
    assert [[c.text for c in row][0] for row in only_curve[0]["rows"]] == ["a-lc10", "ridge"]


def test_stats_read_as_tables_not_dotted_keys(full_page):
    html_text, _ = full_page
    data = section(html_text, "data")
    assert "job interview (12), shopping (9), travel (2), a (1), b (1), … (6 in all)" in data  # top topics, short
    assert "top_topics.job" not in data and "splits.train" not in data
    assert "dropped › task_type" in data and "topic (40)" in data
    assert "<th>train</th><th>val</th>" in data  # splits as columns
    summary = section(html_text, "summary")
    sizes = summary[summary.index("Data sizes"):].split("</table>", 1)[0]
    assert re.search(r"<td[^>]*>articles</td><td[^>]*>7</td><td[^>]*>2</td>", sizes)
    assert re.search(r"<td[^>]*>dialogues</td><td[^>]*>40</td><td[^>]*>8</td>", sizes)
    assert re.search(r"<td[^>]*>windows</td><td[^>]*>60</td>", sizes)  # train windows from the diagnostics
    assert "ctx[-1]" in section(html_text, "diagnostics") and ">no</td>" in section(html_text, "diagnostics")


# ------------------------------------------------------------------------------------ benchmarks
def test_benchmark_files_are_read_and_summed_per_rule(tmp_path):
    folder = tmp_path / "benchmarks"
    (folder / "train_lvm").mkdir(parents=True)
    (folder / "train_lvm" / "p4.tsv").write_text(BENCHMARK_TSV.format(s=100.0, cpu=150.0))
    (folder / "train_lvm" / "p1.tsv").write_text(BENCHMARK_TSV.format(s=50.0, cpu="-"))
    (folder / "resolved_config.tsv").write_text(BENCHMARK_TSV.format(s=1.0, cpu=1.0))
    specs = benchmark_specs(folder)
    assert specs == [f"benchmark:resolved_config={folder / 'resolved_config.tsv'}",
                     f"benchmark:train_lvm/p1={folder / 'train_lvm' / 'p1.tsv'}",
                     f"benchmark:train_lvm/p4={folder / 'train_lvm' / 'p4.tsv'}"]
    assert benchmark_specs(tmp_path / "absent") == []
    assert read_benchmark(folder / "train_lvm" / "p1.tsv") == {"s": 50.0, "max_rss_mb": 812.5, "cpu_s": None,
                                                               "repeats": 1}
    from vecflow.ship.report_summary import wall_time_rows

    benches = {spec.split("=")[0].split(":")[1]: read_benchmark(Path(spec.split("=", 1)[1])) for spec in specs}
    assert wall_time_rows(benches) == [("train_lvm", 2, 150.0, 150.0, 812.5), ("resolved_config", 1, 1.0, 1.0, 812.5)]
    out = tmp_path / "r.html"
    assert cli_main(["report", "--benchmarks", str(folder), "--settings", "{}", "--out", str(out)]) == 0
    assert "0:02:30" in section(out.read_text(), "summary") and "train_lvm/p1" in section(out.read_text(), "runtime")


def test_a_bad_benchmark_file_is_named(tmp_path):
    bad = tmp_path / "b.tsv"
    bad.write_text("s\th:m:s\ncheap\t0:00:01\n")
    with pytest.raises(VecflowError, match=r"b.tsv:2: column 's': 'cheap' is not a number"):
        read_benchmark(bad)
    bad.write_text("seconds\n1\n")
    with pytest.raises(VecflowError, match=r"b.tsv: not a Snakemake benchmark file"):
        read_benchmark(bad)


# ------------------------------------------------------------------------------------ compare_with
def test_report_compares_with_a_previous_results_folder(tmp_path):
    artifacts = make_artifacts(tmp_path / "artifacts")
    previous = tmp_path / "previous"
    (previous / "lvm" / "fivecat").mkdir(parents=True)
    report = json.loads(artifacts["fivecat:p4"].read_text())
    report["model"]["val"]["c0"] = 0.51
    (previous / "lvm" / "fivecat" / "p4.json").write_text(json.dumps(report))
    html_text = render(tmp_path, artifacts, settings={**SETTINGS, "compare_with": str(previous)})
    compare = section(html_text, "compare")
    assert re.search(r"lvm/p4/val/c0</td><td[^>]*>0.5100</td><td[^>]*>0.6100</td><td[^>]*>\+0.1000</td>", compare)
    assert "summary/seq2seq/rouge1" in compare  # only in this run: shown, no delta
    assert re.findall(r'href="#([^"]+)"', html_text)[:2] == ["summary", "compare"]
    with pytest.raises(VecflowError, match="no headline metric file"):
        build_report(collect_artifacts([]), ReportSettings(compare_with=str(tmp_path / "artifacts")))
