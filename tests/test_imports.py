"""The server imports inference code only (issue 12): no optimizer loop, no Optuna, no training module.

Each check runs in a fresh interpreter, so what another test imported cannot hide or fake a dependency.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TRAINING_MODULES = {
    "optuna",
    "vecflow.hpo.study",
    "vecflow.hpo.elm_worker",
    "vecflow.hpo.lvm_worker",
    "vecflow.summary.loop",
    "vecflow.summary.seq2seq",
    "vecflow.summary.causal",
    "vecflow.summary.elm_train",
    "vecflow.summary.elm_losses",
    "vecflow.lvm.train",
    "vecflow.lvm.train_data",
    "vecflow.lvm.train_loop",
    "vecflow.lvm.train_scoring",
    "vecflow.lvm.train_state",
    "vecflow.lvm.losses",
}

# Import the server, then every module it loads for a bundle of each summarizer family (what it imports at
# start-up, Bundle.required_modules, and lazily per request), and report what is loaded.
PROBE = r"""
import importlib, json, sys, types
from pathlib import Path

import vecflow.ship.serve as serve

modules = set()
for family in ("seq2seq", "causal", "elm"):
    bundle = types.SimpleNamespace(summarizer_family=family, root=Path("/nonexistent-bundle"))
    modules.update(serve.Bundle.required_modules(bundle))
for name in sorted(modules):
    importlib.import_module(name)
loaded = sorted(sys.modules)
sources = {name: getattr(module, "__file__", None) for name, module in sys.modules.items()
           if name.startswith("vecflow") and getattr(module, "__file__", None)}
print(json.dumps({"required": sorted(modules), "loaded": loaded, "sources": sources}))
"""


def probe() -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_serve_imports_no_training_module():
    found = probe()
    assert "vecflow.summary.elm" in found["required"] and "vecflow.summary.infer" in found["required"]
    assert {"vecflow.ship.serve", "vecflow.summary.elm", "vecflow.summary.infer"} <= set(found["loaded"])
    assert not TRAINING_MODULES & set(found["loaded"]), sorted(TRAINING_MODULES & set(found["loaded"]))
    # and no vecflow module it loads runs an optimizer (a training module under a new name would)
    for name, path in found["sources"].items():
        text = Path(path).read_text(encoding="utf-8")
        assert "torch.optim" not in text and ".backward(" not in text, f"{name} ({path}) holds training code"


def test_the_probe_sees_a_training_import():
    """The check can fail: importing the ELM training module loads its loss module and the optimizer loop."""
    code = "import json, sys; import vecflow.summary.elm_train; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert {"vecflow.summary.elm_train", "vecflow.summary.elm_losses"} <= loaded


# The commands of the DAG's light jobs: their modules leave torch to the functions that need it, so such a job
# does not pay torch's 1.5-2 s import (hpo-best did, through vecflow.summary.elm; issue 25).
LIGHT_COMMANDS = ["chunk-articles", "split-articles", "ingest-dialogues", "filter-summary", "windows", "diagnose",
                  "hpo-best", "predict-retrieval", "deploy", "report", "resolve-config", "gpu-check"]


def test_light_commands_do_not_import_torch():
    code = """
import json, subprocess, sys
from vecflow.cli import COMMANDS
names = json.loads(sys.argv[1]) + ["train-lvm"]  # train-lvm: the probe sees torch where a module imports it
probes = {name: subprocess.Popen([sys.executable, "-c", f"import sys, {COMMANDS[name].split(':')[0]}; "
                                  "print('torch' in sys.modules)"], stdout=subprocess.PIPE, text=True)
          for name in names}
print(json.dumps({name: probe.communicate()[0].strip() for name, probe in probes.items()}))
"""
    result = subprocess.run([sys.executable, "-c", code, json.dumps(LIGHT_COMMANDS)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    loads = json.loads(result.stdout.strip().splitlines()[-1])
    assert loads.pop("train-lvm") == "True"
    assert loads == dict.fromkeys(LIGHT_COMMANDS, "False")


# ------------------------------------------------------------------------------------- declared dependencies
REPO = Path(__file__).resolve().parents[1]
# import name -> distribution name where they differ
DISTRIBUTION = {"yaml": "pyyaml", "bert_score": "bert-score", "rouge_score": "rouge-score",
                "huggingface_hub": "huggingface-hub", "sentence_transformers": "sentence-transformers",
                "mlflow": "mlflow-skinny", "faiss": "faiss-cpu"}
# declared but not imported by the package, each for a reason (see the comments in pyproject.toml); snakemake
# is imported by the workflow's .smk files (not Python that ast can read) and runs every rule
NOT_IMPORTED = {"snakemake", "gguf", "accelerate", "snakemake-executor-plugin-slurm",
                "snakemake-executor-plugin-cluster-generic", "snakefmt", "schemathesis", "hypothesis", "pytest",
                "mlflow", "httptools", "uvloop"}


def _third_party_imports(paths) -> set[str]:
    import ast

    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    local = {path.stem for path in (REPO / "tests").glob("*.py")}  # the tests' helpers (bench --size tiny)
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("vecflow", "__future__")
            and n not in local}


def _requirement_name(text: str) -> str:
    import re

    return re.split(r"[<>=!~\[ ;]", text.strip(), maxsplit=1)[0].lower()


def test_every_import_is_declared_and_every_dependency_is_used():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {_requirement_name(r) for group in project["optional-dependencies"].values() for r in group}
    imported = {DISTRIBUTION.get(n, n).replace("_", "-").lower()
                for n in _third_party_imports((REPO / "scripts" / "vecflow").rglob("*.py"))}
    assert imported - core - extras == set(), "imported but not declared"
    assert core - imported - NOT_IMPORTED == set(), "declared but never imported"


def test_the_conda_env_installs_the_core_dependencies():
    import tomllib

    import yaml

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "envs" / "vecflow.yaml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    # snakemake runs the rules; it is not installed inside their environment
    assert sorted(r for r in pip if not r.startswith("-e")) == sorted(
        r for r in project["dependencies"] if not r.startswith("snakemake"))
