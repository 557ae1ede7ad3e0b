"""The machine a measurement ran on, recorded next to every benchmark figure (``vecflow bench``)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine(dtype: str = "float32") -> dict:
    """Cores, torch threads, dtype and the load at the time of the measurement."""
    import torch

    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": model or platform.machine(), "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "dtype": dtype,
            "load_average_1m": round(os.getloadavg()[0], 2)}
