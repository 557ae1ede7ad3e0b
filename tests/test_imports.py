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
    "vecflow.summary.loop",
    "vecflow.summary.seq2seq",
    "vecflow.summary.causal",
    "vecflow.summary.elm_train",
    "vecflow.summary.elm_losses",
    "vecflow.lvm.train",
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
