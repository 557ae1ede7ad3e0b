"""``vecflow bench startup``: the per-job start-up floor, ``vecflow CMD --help`` in a fresh process for every
command, next to ``import torch`` / ``import transformers`` alone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from vecflow.core.errors import VecflowError
from vecflow.core.io import write_json
from vecflow.core.machine import machine


def bench_startup(size: str, out_dir: Path | None, **_) -> dict:
    """Per-job start-up floor: ``vecflow CMD --help`` in a fresh process for every command (imports its module
    and parses arguments), next to ``import torch`` / ``import transformers`` alone. No peer: seconds."""
    import subprocess
    import sys

    from vecflow.cli import COMMANDS

    def run(argv):
        start = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise VecflowError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
        return seconds

    commands = list(COMMANDS) if size == "full" else ["fivecat", "report", "score"]
    floor = {"python": run([sys.executable, "-c", "pass"]),
             "import numpy": run([sys.executable, "-c", "import numpy"]),
             "import torch": run([sys.executable, "-c", "import torch"]),
             "import transformers": run([sys.executable, "-c", "import torch, transformers"])}
    per_command = {name: run([sys.executable, "-m", "vecflow.cli", name, "--help"]) for name in commands}
    slowest = max(per_command, key=per_command.get)
    print(f"[bench startup] floor {json.dumps({k: round(v, 2) for k, v in floor.items()})}")
    print(f"[bench startup] per command {json.dumps({k: round(v, 2) for k, v in per_command.items()})}")
    result = {"benchmark": "startup", "unit": "s", "floor_s": floor, "per_command_s": per_command,
              "slowest": slowest, "mean_command_s": float(np.mean(list(per_command.values()))),
              "workload": {"commands": len(commands), "how": "subprocess `python -m vecflow.cli CMD --help`, once each"},
              "machine": machine(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if out_dir is not None:
        write_json(Path(out_dir) / "startup.json", result)
    return result
