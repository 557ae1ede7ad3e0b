"""The LVM real-data configs and the LVM HPO target build a DAG (rulegraph dry-runs, no job runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from workflow_api import REPO

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def rules_of(*configfiles) -> str:
    result = subprocess.run([SNAKEMAKE, "--cores", "1", "-n", "--nolock", "--rulegraph", "--configfile", *configfiles],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_dialogsum_lvm_config_has_the_learning_curve():
    graph = rules_of("config/dialogsum-lvm.yaml")
    for rule in ("chunk_articles", "split_articles", "train_lvm", "fivecat", "lvm_learning_curve", "report"):
        assert f'label = "{rule}"' in graph, rule
    config = yaml.safe_load((REPO / "config" / "dialogsum-lvm.yaml").read_text())
    assert config["lvm"]["articles"]["format"] == "dialogues"
    assert config["lvm"]["diagnostics"]["require_monotonic"] is False


def test_hpo_target_lvm_swaps_the_worker_rule(tmp_path):
    overlay = tmp_path / "hpo.yaml"
    overlay.write_text(yaml.safe_dump({
        "tracks": {"lvm": True, "summary": False, "elm": False, "hpo": True, "deploy": False},
        "hpo": {"study": "lvm-test", "target": "lvm", "workers": 2,
                "lvm_search_space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True}}},
    }))
    graph = rules_of("config/dialogsum-lvm.yaml", str(overlay))
    assert 'label = "hpo_lvm_worker"' in graph and 'label = "hpo_best"' in graph
    assert 'label = "hpo_worker"' not in graph
    assert 'label = "hpo_worker"' in rules_of("config/config.yaml")  # the ELM target is the default
