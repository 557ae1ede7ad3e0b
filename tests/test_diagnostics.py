import json
import re

import numpy as np
import pytest

from vecflow.cli import main as cli_main
from vecflow.lvm.diagnostics import check_gate, direction_stats
from vecflow.core.io import save_tensors, write_jsonl
from vecflow.lvm.bank import ChunkBank
from vecflow.lvm.windows import Windows, make_windows, save_windows

C = 5
GATE = {"min_coherence": 0.4, "min_signal": 0.05, "require_monotonic": True}


def random_walk_articles(n_articles=30, length=20, dim=32, step=0.5, seed=0):
    """Articles whose consecutive chunk vectors drift slowly: a strong forward temporal signal."""
    rng = np.random.default_rng(seed)
    vectors, article_ids, chunk_indices = [], [], []
    for article in range(n_articles):
        v = rng.normal(size=dim)
        for t in range(length):
            v = v / np.linalg.norm(v)
            vectors.append(v)
            article_ids.append(article)
            chunk_indices.append(t)
            v = v + step * rng.normal(size=dim) / np.sqrt(dim)
    return np.array(vectors, np.float32), np.array(article_ids), np.array(chunk_indices)


def shuffle_within_articles(vectors, article_ids, seed=0):
    rng = np.random.default_rng(seed)
    shuffled = vectors.copy()
    for article in np.unique(article_ids):
        rows = np.flatnonzero(article_ids == article)
        shuffled[rows] = vectors[rng.permutation(rows)]
    return shuffled


def split(vectors, article_ids, chunk_indices):
    bank = ChunkBank(vectors, article_ids, chunk_indices, source="bank")
    return make_windows(bank, C), bank


@pytest.fixture(scope="module")
def walk():
    return split(*random_walk_articles())


def shuffled_walk():
    vectors, article_ids, chunk_indices = random_walk_articles()
    return split(shuffle_within_articles(vectors, article_ids), article_ids, chunk_indices)


def test_random_walk_has_strong_monotonic_signal_and_passes(walk):
    stats = direction_stats(*walk)
    assert stats["n_windows"] == 30 * (20 - C)
    assert stats["signal"] > 0.2 and stats["monotonic"] and stats["coherence"] > 0.7
    assert stats["pos"][-1] == pytest.approx(stats["coherence"], abs=0.05)  # adjacent chunks either way
    assert stats["per_article"]["n_articles"] == 30 and stats["per_article"]["positive_signal_fraction"] == 1.0
    assert check_gate(stats, GATE) == {"passed": True, "failures": [], "waived": False}


def test_blocks_do_not_change_the_numbers(walk):
    whole, blocked = direction_stats(*walk), direction_stats(*walk, block_rows=7)
    for key in ("pos", "signal", "coherence"):
        assert blocked[key] == pytest.approx(whole[key], abs=1e-9)
    assert blocked["per_article"] == pytest.approx(whole["per_article"])


def test_shuffled_sequences_fail_the_signal_gate():
    vectors, article_ids, chunk_indices = random_walk_articles()
    stats = direction_stats(*split(shuffle_within_articles(vectors, article_ids), article_ids, chunk_indices))
    assert abs(stats["signal"]) < 0.05
    gate = check_gate(stats, GATE)
    assert not gate["passed"]
    assert any(f.startswith("temporal signal") and "< min_signal 0.05" in f for f in gate["failures"])


def test_reversed_context_gives_negative_signal(walk):
    windows, bank = walk
    forward = direction_stats(windows, bank)
    flipped = np.concatenate([windows.context_rows[:, ::-1], windows.target_rows[:, None]], axis=1)
    backward = direction_stats(Windows(flipped, windows.article_ids, windows.target_indices), bank)
    assert backward["signal"] == pytest.approx(-forward["signal"], abs=1e-6)
    assert backward["signal"] < -0.2 and not backward["monotonic"]


def test_gate_failure_messages_name_numbers_and_thresholds():
    stats = {"signal": 0.015, "coherence": 0.353, "monotonic": False, "pos": [0.30, 0.29, 0.315]}
    gate = check_gate(stats, GATE, waived=True)
    assert gate["failures"] == [
        "temporal signal +0.015 < min_signal 0.05",
        "coherence 0.353 < min_coherence 0.4",
        "pos_i not strictly increasing (0.300, 0.290, 0.315) with require_monotonic",
    ]
    assert gate == {"passed": False, "failures": gate["failures"], "waived": True}


def run_cli(tmp_path, split, diagnostics):
    windows, bank = split
    save_tensors(tmp_path / "e.safetensors", {"embeddings": bank.embeddings})
    write_jsonl(tmp_path / "e.index.jsonl", ({"article_id": int(a), "chunk_index": int(c), "text": "x"}
                                             for a, c in zip(bank.article_ids, bank.chunk_indices)))
    save_windows(tmp_path / "w.safetensors", windows, bank)
    settings = json.dumps({"seed": 1, "device": "cpu", **diagnostics})  # lvm.diagnostics, as the rule sends it
    out_json, out_plot = tmp_path / "out" / "direction.json", tmp_path / "out" / "direction.png"
    argv = ["diagnose", "--windows", str(tmp_path / "w.safetensors"), "--embeddings", str(tmp_path / "e.safetensors"),
            "--index", str(tmp_path / "e.index.jsonl"), "--settings", settings]
    return cli_main(argv + ["--out-json", str(out_json), "--out-plot", str(out_plot)]), out_json, out_plot


def test_cli_passing_gate_writes_json_and_png(tmp_path, walk):
    code, out_json, out_plot = run_cli(tmp_path, walk, GATE)
    assert code == 0
    report = json.loads(out_json.read_text())
    assert report["gate"] == {"passed": True, "failures": [], "waived": False}
    assert report["thresholds"] == GATE
    assert len(report["pos"]) == C and report["signal"] > 0.2 and report["n_windows"] == 450
    assert out_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_failing_gate_exits_2_with_numbers_and_writes_nothing(tmp_path, capsys):
    code, out_json, out_plot = run_cli(tmp_path, shuffled_walk(), GATE)
    assert code == 2
    err = capsys.readouterr().err
    assert "direction gate failed for" in err and re.search(r"w\.safetensors: temporal signal [+-]0\.0\d\d", err)
    assert "< min_signal 0.05" in err and "set lvm.diagnostics.waive_gate: true to train anyway" in err
    assert not out_json.exists() and not out_plot.exists()


def test_cli_waived_gate_writes_report_marked_waived(tmp_path):
    code, out_json, out_plot = run_cli(tmp_path, shuffled_walk(), {**GATE, "waive_gate": True})
    assert code == 0
    gate = json.loads(out_json.read_text())["gate"]
    assert gate["passed"] is False and gate["waived"] is True and gate["failures"][0].startswith("temporal signal")
    assert out_plot.exists()


def test_cli_bad_windows_file(tmp_path, walk, capsys):
    run_cli(tmp_path, walk, GATE)
    (tmp_path / "w.safetensors").write_bytes(b"not a safetensors file")
    settings = json.dumps({"seed": 1})
    argv = ["diagnose", "--windows", str(tmp_path / "w.safetensors"), "--embeddings", str(tmp_path / "e.safetensors"),
            "--index", str(tmp_path / "e.index.jsonl"), "--settings", settings,
            "--out-json", str(tmp_path / "d.json"), "--out-plot", str(tmp_path / "d.png")]
    assert cli_main(argv) == 2
    assert "w.safetensors: not a readable safetensors file" in capsys.readouterr().err


def test_cli_defaults_are_the_schemas_and_unknown_keys_are_refused(tmp_path, capsys):
    # the rule passes lvm.diagnostics flat (plus seed/device); with nothing given the schema's thresholds apply
    # (min_signal 0.05), so a shuffled-order dataset fails the gate
    code, out_json, _ = run_cli(tmp_path, shuffled_walk(), {})
    assert code == 2
    assert "< min_signal 0.05" in capsys.readouterr().err
    assert not out_json.exists()
    code, out_json, _ = run_cli(tmp_path, shuffled_walk(), {"min_signal": -1.0, "min_coherence": -1.0})
    assert code == 0
    assert json.loads(out_json.read_text())["thresholds"] == {"min_coherence": -1.0, "min_signal": -1.0,
                                                              "require_monotonic": False}
    code, _, _ = run_cli(tmp_path, shuffled_walk(), {"diagnostics": GATE})  # the whole lvm section is not it
    assert code == 2
    assert "settings: unknown key 'diagnostics'" in capsys.readouterr().err
