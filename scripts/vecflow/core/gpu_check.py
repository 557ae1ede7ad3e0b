"""``vecflow gpu-check``: prove from the training jobs' logs that they ran on the accelerator, and report samples/s.

``make gpu-check`` trains every family briefly (``config/gpu-check.yaml``: the demo data, short budgets,
``device: cuda``); the ``gpu_check`` rule then calls this with each family's job log, model folder and Snakemake
benchmark file. Every ``[vecflow] device: X`` line of a log (``vecflow.core.devices.pick_device`` writes one per
model placement) must name an expected device type (``--expect``, default ``cuda,mps``; the test sets ``cpu``
through ``VECFLOW_GPU_CHECK_DEVICES``), and each log must have one. Throughput per family:

- seq2seq, causal, elm: ``samples_seen / train_seconds`` from the model folder's ``summary.json`` (the shared
  training loop only; for a two-stage ELM, its last stage);
- lvm: ``train_windows x epochs_run / train_time_s`` from ``summary.json`` (the epochs only).

Writes ``gpu_check.json`` and ``gpu_check.md`` only when every family passed; otherwise one line per failing
family on stderr and exit 2 (``VecflowError``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from vecflow.core.errors import VecflowError
from vecflow.core.io import read_json, write_json, write_text

DEVICE_LINE = re.compile(r"\[vecflow\] device: (\S+)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow gpu-check", description=__doc__.splitlines()[0])
    parser.add_argument("--families", required=True,
                        help='JSON {family: {"log": PATH, "model": DIR, "benchmark": TSV}}')
    parser.add_argument("--expect", default="cuda,mps", help="device types the jobs must have used (comma-separated)")
    parser.add_argument("--out-dir", required=True, help="gpu_check.json and gpu_check.md go here")
    args = parser.parse_args(argv)
    try:
        families = json.loads(args.families)
    except json.JSONDecodeError as exc:
        raise VecflowError(f"--families: not JSON ({exc.msg} at offset {exc.pos})") from None
    expected = [d.strip() for d in args.expect.split(",") if d.strip()]
    result = gpu_check(families, expected)
    out = Path(args.out_dir)
    write_json(out / "gpu_check.json", result)
    write_text(out / "gpu_check.md", markdown(result))
    for name, entry in result["families"].items():
        print(f"[vecflow] gpu-check {name}: {entry['device']}, {entry['samples_per_s']} samples/s ({entry['measured']})",
              flush=True)
    return 0


def devices_in_log(path: Path) -> list[tuple[int, str]]:
    """``(line number, device)`` for every ``[vecflow] device: X`` line of a job log."""
    if not path.is_file():
        raise VecflowError(f"{path}: job log not found")
    found = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            match = DEVICE_LINE.search(line)
            if match:
                found.append((lineno, match.group(1)))
    return found


def check_devices(name: str, log: Path, expected: list[str]) -> str:
    """The device the family's job used; raises naming the log and line when it is not an expected one."""
    found = devices_in_log(log)
    if not found:
        raise VecflowError(f"gpu-check {name}: {log}: no '[vecflow] device:' line (did the job train?)")
    for lineno, device in found:
        if device.split(":")[0] not in expected:
            raise VecflowError(f"gpu-check {name}: {log}:{lineno}: device {device}, expected {' or '.join(expected)}")
    return found[0][1]


def samples_per_second(name: str, model: Path, benchmark: Path | None) -> tuple[float | None, str]:
    """Training throughput of one family and how it was measured (see the module docstring)."""
    summary_path = model / "summary.json"
    summary = read_json(summary_path) if summary_path.is_file() else {}
    seconds = summary.get("train_seconds") or 60 * summary.get("train_minutes", 0)  # minutes: older summaries
    if name in ("seq2seq", "causal", "elm", "elm_rag") and seconds:  # the shared loop's
        return round(summary["samples_seen"] / seconds, 2), "training loop (summary.json)"
    if name.startswith("lvm") and summary.get("train_time_s"):
        samples = summary["train_windows"] * summary["epochs_run"]
        return round(samples / summary["train_time_s"], 2), "epochs only (summary.json)"
    return None, "not recorded"


def gpu_check(families: dict, expected: list[str]) -> dict:
    """Check every family's log, then measure; one VecflowError naming every failing family."""
    errors, rows = [], {}
    for name, paths in sorted(families.items()):
        try:
            device = check_devices(name, Path(paths["log"]), expected)
        except VecflowError as exc:
            errors.append(str(exc))
            continue
        benchmark = Path(paths["benchmark"]) if paths.get("benchmark") else None
        rate, how = samples_per_second(name, Path(paths["model"]), benchmark)
        rows[name] = {"device": device, "samples_per_s": rate, "measured": how, "log": paths["log"]}
    if errors:
        raise VecflowError("; ".join(errors))
    return {"expected_devices": expected, "accelerator": accelerator_name(), "families": rows}


def accelerator_name() -> str:
    """The card the check ran beside (the jobs ran on the same machine): CUDA name, 'mps' or 'cpu'."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def markdown(result: dict) -> str:
    lines = [f"# gpu-check on {result['accelerator']}", "", "| family | device | samples/s | measured |",
             "|---|---|---|---|"]
    for name, row in result["families"].items():
        rate = "n/a" if row["samples_per_s"] is None else f"{row['samples_per_s']:.1f}"
        lines.append(f"| {name} | {row['device']} | {rate} | {row['measured']} |")
    return "\n".join(lines) + "\n"
