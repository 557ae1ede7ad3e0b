"""Benchmarks (``vecflow bench``): each runs on a tiny workload and the outputs it compares agree.

No timing is asserted (the figures are in BENCHMARKS.md); only that both sides of each comparison compute the
same thing, so a ratio is never bought with a different answer.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from vecflow.bench.bertscore import bench_bertscore
from vecflow.bench.common import compare_numbers
from vecflow.bench.embed import bench_embed
from vecflow.bench.fivecat import bench_fivecat, lvm_predictor, reference_fivecat, synthetic_split
from vecflow.bench.generate import bench_generate
from vecflow.bench.lvm import bench_lvm, transformer_lvm_flops
from vecflow.bench.pipeline import bench_pipeline
from vecflow.bench.profile import profile_summary
from vecflow.bench.serve import bench_serve
from vecflow.bench.startup import bench_startup
from vecflow.bench.table import TABLE_BEGIN, TABLE_END, render_table, update_markdown
from vecflow.bench.train import bench_train
from vecflow.core.io import read_json

pytestmark = pytest.mark.slow


def test_reference_fivecat_gives_every_number_of_evaluate_split(tmp_path):
    result = bench_fivecat("tiny", tmp_path, windows_total=120, reference_windows=40)
    check = result["check"]
    assert check["mismatched"] == []
    assert check["numbers"] > 40  # offsets, retrieval, ablations, rollout: the whole report is compared
    assert check["max_abs_diff"] <= 1e-6
    assert read_json(tmp_path / "fivecat.json")["ratio"] == result["ratio"]


def test_compare_numbers_sees_a_changed_number_and_a_changed_count():
    a = {"c0": 0.5, "retrieval": {"n": 10, "r1": 0.25}, "per_step": [0.1, None]}
    assert compare_numbers(a, a)["max_abs_diff"] == 0.0
    changed = compare_numbers(a, {"c0": 0.5 + 1e-3, "retrieval": {"n": 11, "r1": 0.25}, "per_step": [0.1, 0.2]})
    assert changed["max_abs_diff"] == pytest.approx(1e-3)
    assert changed["worst_key"] == "c0"
    assert changed["mismatched"] == ["per_step.1", "retrieval.n"]


def test_reference_fivecat_catches_a_wrong_offset(tmp_path):
    """The reference is independent of evaluate_split: evaluated on a bank whose vectors are rolled by one row, the
    numbers no longer agree (the comparison is not vacuous)."""
    from vecflow.lvm.fivecat import ChunkBank, evaluate_split

    data = synthetic_split(60, dim=16, context=5, chunks_per_article=20)
    predict = lvm_predictor(16, 5)
    ref = reference_fivecat(predict, data["windows"], data["embeddings"], data["article_ids"],
                            data["chunk_indices"])
    wrong = ChunkBank(np.roll(data["embeddings"], 1, axis=0), data["article_ids"], data["chunk_indices"])
    assert compare_numbers(evaluate_split(predict, data["windows"], wrong), ref)["max_abs_diff"] > 1e-3


def test_bertscore_matches_bert_score(tiny_encoder, tmp_path):
    result = bench_bertscore("tiny", tmp_path, minilm=tiny_encoder, pairs=6)
    assert result["check"]["max_abs_diff_p_r_f1"] <= 1e-4
    assert result["workload"]["pairs"] == 6


def test_embed_chunks_matches_sentence_transformers(tiny_encoder, tmp_path):
    pytest.importorskip("sentence_transformers")
    result = bench_embed("tiny", tmp_path, minilm=tiny_encoder, chunks=20)
    assert result["check"]["max_abs_diff"] <= 1e-5


def test_batched_generation_writes_what_one_at_a_time_writes(tiny_encoder, tiny_causal_lm, tmp_path):
    results = bench_generate("tiny", tmp_path, minilm=tiny_encoder, smollm2=tiny_causal_lm, dialogues=5)
    assert [r["benchmark"] for r in results] == ["generate_seq2seq", "generate_causal"]
    for result in results:
        assert result["check"]["identical_outputs"] == 1.0, result["benchmark"]
        assert (tmp_path / f"{result['benchmark']}.json").is_file()


def test_trainers_run_the_same_model_and_batches(tiny_encoder, tiny_causal_lm, tmp_path):
    results = bench_train("tiny", tmp_path, minilm=tiny_encoder, smollm2=tiny_causal_lm)
    assert [r["benchmark"] for r in results] == ["train_seq2seq", "train_causal"]
    for result in results:
        check = result["check"]
        assert check["same_start_weights"] is True
        assert math.isfinite(check["ours_mean_loss"]) and math.isfinite(check["hf_mean_loss"])
        # same start weights, same length-grouped epoch: the mean losses of the first epoch are close
        assert check["ours_mean_loss"] == pytest.approx(check["hf_mean_loss"], rel=0.05)
        assert result["ours"]["value"] > 0 and result["peer"]["value"] > 0


def test_lvm_flop_count_is_the_counted_matmuls(tmp_path):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vecflow.lvm.models import build_model

    model = build_model("transformer", 24, 5, {"d_model": 32, "layers": 3, "heads": 4, "residual": False}).train()
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(7, 5, 24))
    assert transformer_lvm_flops(7, 5, 24, 32, 3) == counter.get_total_flops()
    result = bench_lvm("tiny", tmp_path)
    assert result["workload"]["flops_per_step"] > 2 * result["workload"]["analytic_forward_flops"]
    assert result["peak_bf16_flops"] > 0 and result["ours"]["value"] > 0


def test_cli_runs_one_benchmark(tmp_path, capsys):
    from vecflow.cli import main

    assert main(["bench", "lvm", "--size", "tiny", "--out-dir", str(tmp_path)]) == 0
    assert "[bench lvm] ratio" in capsys.readouterr().out
    assert read_json(tmp_path / "lvm.json")["machine"]["cores"] >= 1


def test_full_size_data_comes_from_the_command_line(tmp_path):
    """No benchmark reads data from a fixed place: at --size full the DialogSum folder and the chunks file are
    options, and a missing one is an error naming the option."""
    from vecflow.bench.inputs import chunk_texts, dialogue_rows
    from vecflow.core.errors import VecflowError

    with pytest.raises(VecflowError, match="--dialogsum: the generate benchmark at --size full reads DialogSum"):
        dialogue_rows(None, 4)
    with pytest.raises(VecflowError, match=r"dev\.jsonl: file not found \(the generate benchmark reads DialogSum dev\)"):
        dialogue_rows(tmp_path, 4)
    with pytest.raises(VecflowError, match="--chunks: at --size full"):
        chunk_texts(None, 4)
    (tmp_path / "dev.jsonl").write_text(
        '{"id": "a", "dialogue": "#Person1#: Hi.\\n#Person2#: Hello.", "summary": "They greet."}\n')
    (tmp_path / "chunks.jsonl").write_text('{"article_id": 0, "chunk_index": 0, "text": "one"}\n')
    assert [r["id"] for r in dialogue_rows(tmp_path, 4)] == ["a"]
    assert chunk_texts(tmp_path / "chunks.jsonl", 3) == ["one", "one", "one"]


def test_server_answers_every_request_of_the_load_test(tiny_encoder, tmp_path):
    results = bench_serve("tiny", tmp_path, minilm=tiny_encoder, requests=16, clients=4)
    assert [r["benchmark"] for r in results] == ["serve_predict_next", "serve_encode"]
    for result in results:
        assert result["server"]["requests"] == 16 and result["in_process"]["requests"] == 16
        assert result["server"]["p50_ms"] <= result["server"]["p99_ms"]
    assert "goal_met" in results[0]


def test_startup_times_every_command_given(tmp_path):
    result = bench_startup("tiny", tmp_path)
    assert set(result["per_command_s"]) == {"fivecat", "report", "score"}
    assert result["floor_s"]["import torch"] > 0
    assert read_json(tmp_path / "startup.json")["slowest"] in result["per_command_s"]


def test_table_rewrites_only_the_marked_section(tmp_path):
    out = tmp_path / "bench"
    bench_lvm("tiny", out)
    markdown = tmp_path / "B.md"
    markdown.write_text(f"# Figures\nhand-written\n{TABLE_BEGIN}\nold\n{TABLE_END}\nprofiles\n")
    update_markdown(markdown, out)
    text = markdown.read_text()
    assert text.startswith("# Figures\nhand-written\n") and text.endswith(f"{TABLE_END}\nprofiles\n")
    assert "old" not in text and "| lvm | torch.matmul peak fp32" in text and "`lvm`" in text


def test_profile_summary_counts_only_stacks_through_the_function(tmp_path):
    raw = tmp_path / "p.txt"
    raw.write_text("main (x.py:1);encode (vecflow/core/encoder.py:9);linear (torch/nn/linear.py:2) 6\n"
                   "main (x.py:1);encode (vecflow/core/encoder.py:9);tokenize (tok.py:3) 2\n"
                   "main (x.py:1);peer (st.py:4) 10\n")
    summary = profile_summary(raw, within="encode")
    assert summary["samples"] == 8
    assert summary["deepest_vecflow_frame"] == [("encode (vecflow/core/encoder.py:9)", 1.0)]
    assert summary["leaf_frame"][0] == ("linear (torch/nn/linear.py:2)", 0.75)


IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |       numpy._core._multiarray_umath
import time:       400 |        500 |     numpy._core
import time:      1500 |       2000 |   numpy
import time:       300 |       2300 | vecflow.core.io
import time:        50 |         50 |     numpy.linalg
import time:       200 |        200 |   yaml
import time:      1000 |       1250 | vecflow.ship.report
"""


def test_importtime_summary_counts_each_package_once_where_it_is_first_reached():
    from vecflow.bench.pipeline import parse_importtime, summarise_importtime

    rows = parse_importtime(IMPORTTIME)
    assert rows[0] == ("numpy._core._multiarray_umath", 100e-6, 100e-6, 3)
    summary = summarise_importtime(rows, "vecflow.ship.report")
    # numpy's own cumulative (nested numpy modules are inside it), plus the numpy.linalg reached elsewhere
    assert summary["top"] == [["numpy", pytest.approx(2050e-6)], ["yaml", pytest.approx(200e-6)]]
    assert summary["vecflow_self_s"] == pytest.approx(1300e-6)
    assert summary["total_s"] == pytest.approx(2300e-6 + 1250e-6)
    assert summary["heavy_loaded"] == ["yaml", "numpy"]


def test_jobs_are_read_from_the_snakemake_log():
    from vecflow.bench.pipeline import jobs_run

    log = ("Building DAG of jobs...\nlocalrule resolved_config:\n    output: x\nrule report:\n    input: y\n"
           "localrule all:\n")
    assert jobs_run(log) == ["report", "resolved_config"]
    assert jobs_run("Nothing to be done (all requested files are present and up to date).") == []


SNAKEMAKE_LOG = """Building DAG of jobs...
[Fri Dec  4 20:00:05 2026]
localrule fetch_model:
    output: resources/models/smollm2/manifest.json
    jobid: 13
    wildcards: model=smollm2
[Fri Dec  4 20:00:06 2026]
rule embed_chunks:
    input: x
    jobid: 26
[Fri Dec  4 20:00:29 2026]
Finished jobid: 13 (Rule: fetch_model)
[Fri Dec  4 20:00:41 2026]
Finished jobid: 26 (Rule: embed_chunks)
[Fri Dec  4 20:00:41 2026]
localrule train_causal:
    jobid: 7
[Fri Dec  4 20:01:41 2026]
Finished jobid: 7 (Rule: train_causal)
[Fri Dec  4 20:01:42 2026]
localrule report:
    jobid: 1
"""


def test_pipeline_dag_timeline_is_read_from_the_snakemake_log(tmp_path):
    from vecflow.bench.pipeline import benchmark_cpu, dag_summary, job_timeline, last_full_run

    jobs = job_timeline(SNAKEMAKE_LOG)
    assert [(j["rule"], j["jobid"], j["start_s"], j["wall_s"]) for j in jobs] == [
        ("fetch_model", 13, 0.0, 24.0), ("embed_chunks", 26, 1.0, 35.0), ("train_causal", 7, 36.0, 60.0),
        ("report", 1, 97.0, None)]
    summary = dag_summary(jobs)
    assert summary["jobs"] == 3 and summary["unfinished"] == 1
    assert summary["dag_wall_s"] == 96.0 and summary["sum_job_wall_s"] == 119.0
    assert summary["top_jobs"][0] == ["train_causal", 7, 60.0]
    assert list(summary["per_rule"]) == ["train_causal", "embed_chunks", "fetch_model"]
    logs = tmp_path / ".snakemake" / "log"
    logs.mkdir(parents=True)
    (logs / "2026-12-04T200005.snakemake.log").write_text(SNAKEMAKE_LOG)
    (logs / "2026-12-04T210000.snakemake.log").write_text("Nothing to be done (all requested files are present).")
    assert last_full_run(tmp_path)["jobs"] == 3  # the full build, not a later no-op rerun
    bench_dir = tmp_path / "results" / "benchmarks" / "make_windows"
    bench_dir.mkdir(parents=True)
    (bench_dir / "train.tsv").write_text("s\th:m:s\tmax_rss\tcpu_time\n11.63\t0:00:11\t900\t17.04\n")
    assert benchmark_cpu(tmp_path / "results") == {"make_windows/train": {"wall_s": 11.63, "cpu_s": 17.04}}


def test_pipeline_overhead_on_a_tiny_finished_run(tiny_encoder, tiny_causal_lm, tmp_path):
    """Builds the tiny demo DAG, then the no-op rerun, the report regeneration and the start-up figures; only
    that each figure is there and positive, and that each rerun ran exactly the jobs it should."""
    result = bench_pipeline("tiny", tmp_path, minilm=tiny_encoder, smollm2=tiny_causal_lm)
    saved = read_json(tmp_path / "pipeline.json")
    assert saved["check"] == {"noop_ran_no_job": True, "report_ran_only_its_jobs": True,
                              "resolved_config+report_ran_only_its_jobs": True}
    assert saved["report_regeneration"]["resolved_config+report"]["jobs"] == ["report", "resolved_config"]
    figures = [saved["noop_rerun"], saved["full_dag"], *saved["report_regeneration"].values(),
               *saved["startup"].values()]
    for figure in figures:
        assert figure["wall_s"] > 0 and figure["cpu_s"] > 0, figure
    assert saved["full_dag"]["jobs"] > 10
    assert set(saved["importtime"]) == {"vecflow.cli", "vecflow.ship.report", "vecflow.core.resolved_config",
                                        "report job drawing"}
    assert "matplotlib" in saved["importtime"]["report job drawing"]["heavy_loaded"]
    for summary in saved["importtime"].values():
        assert summary["total_s"] > 0 and 0 < len(summary["top"]) <= 5
        assert all(seconds > 0 for _, seconds in summary["top"])
    assert saved["goals"]["noop_rerun"]["wall_s"] == result["noop_rerun"]["wall_s"]
    assert isinstance(saved["goals"]["report_regeneration"]["met"], bool)
    row = render_table(tmp_path).splitlines()[2]
    assert row.startswith("| pipeline | python -c pass ") and "no-op rerun" in row
