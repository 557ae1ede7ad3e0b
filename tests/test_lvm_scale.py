"""The scale test's machinery: the synthetic bank, the table from Snakemake benchmark files, and a small run of
workflow/scale/Snakefile (a few thousand chunks; ``make scale-test`` runs 600,000 x 768)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vecflow.core.io import load_tensors
from vecflow.lvm.bank import load_bank
from vecflow.lvm.scale import markdown, scale_table, write_synthetic_bank
from vecflow.lvm.windows import make_windows

REPO = Path(__file__).resolve().parents[1]
BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_synthetic_bank_has_whole_articles_of_unit_vectors_with_a_temporal_signal(tmp_path):
    total = write_synthetic_bank(tmp_path / "b.safetensors", tmp_path / "b.index.jsonl", chunks=250, dim=12,
                                 chunks_per_article=20, seed=0, shard_rows=60)  # several shards, a short last article
    bank = load_bank(tmp_path / "b.safetensors", tmp_path / "b.index.jsonl")  # unit rows, unique keys: checked
    assert total == len(bank) == 250 and bank.article_sizes.tolist() == [20] * 12 + [10]
    windows = make_windows(bank, 5)
    assert len(windows) == 12 * 15 + 5
    contexts, targets = windows.contexts(bank), windows.targets(bank)
    cos = np.einsum("ncd,nd->nc", contexts, targets).mean(axis=0)
    assert np.all(np.diff(cos) > 0)  # nearer chunks are more alike: article structure, not noise


def write_benchmark(path, seconds, rss):
    path.write_text(BENCHMARK_HEADER + f"{seconds}\t0:00:01\t{rss}\t1\t1\t1\t0\t0\t0\t1\n")
    return str(path)


def test_table_reads_benchmark_files_and_judges_rss_against_the_bank(tmp_path):
    write_synthetic_bank(tmp_path / "b.safetensors", tmp_path / "b.index.jsonl", 2**16, 16, 64, 0)  # 4 MiB
    stages = {"windows": write_benchmark(tmp_path / "w.tsv", 1.5, 6.0),
              "train": write_benchmark(tmp_path / "t.tsv", 9.0, 11.0)}
    table = scale_table(tmp_path / "b.safetensors", stages)
    assert table["bank"] == {"path": str(tmp_path / "b.safetensors"), "rows": 2**16, "dim": 16, "mb": 4.0}
    assert [s["rss_over_bank"] for s in table["stages"]] == [1.5, 2.75] and not table["goal_met"]
    assert "| train | 9.0 | 11 | 2.75 |" in markdown(table) and "NOT met" in markdown(table)


@pytest.mark.slow
def test_small_scale_run_goes_through_every_stage(tmp_path):
    snakemake = Path(sys.executable).with_name("snakemake")
    command = [str(snakemake), "-s", str(REPO / "workflow/scale/Snakefile"), "-d", str(tmp_path), "--cores", "2",
               "--config", "chunks=2000", "dim=16", "d_model=16", "device=cpu", "fivecat_samples=300", "-q"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = json.loads((tmp_path / "scale_table.json").read_text())
    assert [s["stage"] for s in table["stages"]] == ["bank_train", "windows_train", "diagnose", "train_one_epoch",
                                                     "fivecat"]
    assert table["bank"]["rows"] == 2000 and table["bank"]["dim"] == 16
    assert all(s["wall_s"] > 0 and s["max_rss_mb"] > 0 for s in table["stages"])
    assert set(load_tensors(tmp_path / "windows/train.safetensors")) == {"rows", "article_ids", "target_indices"}
    fivecat = json.loads((tmp_path / "fivecat.json").read_text())
    # val: 200 chunks = 5 articles of 40, C = 5: 175 windows, fewer than fivecat_samples: all scored
    assert set(fivecat["model"]) == {"val", "ood"} and fivecat["model"]["val"]["n_windows"] == 5 * 35
    history = [json.loads(line) for line in (tmp_path / "model/history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1]
