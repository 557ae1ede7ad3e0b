"""What every benchmark shares: recording a result (printed and ``OUT_DIR/NAME.json``), comparing two nested
results number by number, and timing a call in wall and CPU seconds."""

from __future__ import annotations

import json
import time
from pathlib import Path

from vecflow.core.io import write_json
from vecflow.core.machine import machine

REPO = Path(__file__).resolve().parents[3]
DEFAULT_OUT = REPO / "results" / "bench"
MODELS = REPO / "resources" / "models"
BENCHMARKS = ("fivecat", "bertscore", "embed", "generate", "train", "serve", "lvm", "startup", "pipeline")


def record(name: str, *, workload: dict, unit: str, peer: str, peer_value: float, ours: str, ours_value: float,
           goal: float | None, check: dict, dtype: str = "float32", extra: dict | None = None,
           out_dir: Path | None = None, cpu: float | None = None) -> dict:
    """Print the comparison and write ``OUT_DIR/NAME.json``; ratio = ours / peer (higher = ours faster)."""
    ratio = ours_value / peer_value if peer_value > 0 else float("inf")
    result = {"benchmark": name, "unit": unit, "peer": {"name": peer, "value": peer_value},
              "ours": {"name": ours, "value": ours_value}, "ratio": ratio, "goal_ratio": goal,
              "goal_met": None if goal is None else bool(ratio >= goal), "cpu_time_ratio": cpu,
              "check": check, "workload": workload,
              "machine": machine(dtype), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              **(extra or {})}
    goal_text = "" if goal is None else f" (goal >= {goal:g}x: {'met' if result['goal_met'] else 'MISSED'})"
    print(f"[bench {name}] peer  {peer}: {peer_value:.4g} {unit}\n"
          f"[bench {name}] ours  {ours}: {ours_value:.4g} {unit}\n"
          f"[bench {name}] ratio {ratio:.2f}x{goal_text}"
          f"{'' if cpu is None else f'; CPU-time ratio {cpu:.2f}x'}\n"
          f"[bench {name}] check {json.dumps(check, default=str)}\n"
          f"[bench {name}] workload {json.dumps(workload, default=str)}\n"
          f"[bench {name}] machine {json.dumps(result['machine'])}", flush=True)
    if out_dir is not None:
        write_json(Path(out_dir) / f"{name}.json", result)
    return result


def flatten(value, prefix: str = "") -> dict:
    """Nested dicts/lists -> {dotted.key: leaf}."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    if isinstance(value, (list, tuple)):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): value}


def compare_numbers(a: dict, b: dict) -> dict:
    """Max |a - b| over every numeric leaf, the keys that differ in kind or are missing, and exact int/bool/None."""
    fa, fb = flatten(a), flatten(b)
    mismatched = sorted(set(fa) ^ set(fb))
    max_diff, worst = 0.0, None
    for key in sorted(set(fa) & set(fb)):
        x, y = fa[key], fb[key]
        if isinstance(x, bool) or isinstance(y, bool) or x is None or y is None or isinstance(x, str):
            if x != y:
                mismatched.append(key)
        elif isinstance(x, int) and isinstance(y, int):
            if x != y:
                mismatched.append(key)
        else:
            diff = abs(float(x) - float(y))
            if not diff <= max_diff:  # NaN counts as a mismatch through max_diff = nan
                max_diff, worst = diff, key
    return {"numbers": len(fa), "max_abs_diff": max_diff, "worst_key": worst, "mismatched": mismatched}


class Seconds(float):
    """Wall-clock seconds that also carry ``cpu``: the process's CPU seconds (all its threads) over the same
    span. On a shared machine the CPU-time ratio is the steadier one: waiting for a core does not count."""

    cpu: float

    def __new__(cls, wall: float, cpu: float):
        value = super().__new__(cls, wall)
        value.cpu = cpu
        return value


def timed(fn):
    """``(Seconds, fn())``: the wall and CPU seconds of one call, and its result."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return Seconds(time.perf_counter() - start, time.process_time() - cpu), out


def cpu_ratio(peer: Seconds, ours: Seconds, peer_items: int = 1, ours_items: int = 1) -> float:
    """(ours items per CPU second) / (peer items per CPU second)."""
    return (ours_items / max(ours.cpu, 1e-9)) / (peer_items / max(peer.cpu, 1e-9))
