"""BENCHMARKS.md's figures table: every ``OUT_DIR/*.json`` as one Markdown row, written between the
bench-table markers (``vecflow bench table``)."""

from __future__ import annotations

import json
from pathlib import Path

from vecflow.bench.common import BENCHMARKS
from vecflow.bench.pipeline import table_row
from vecflow.core.errors import VecflowError

TABLE_BEGIN, TABLE_END = "<!-- bench-table:begin -->", "<!-- bench-table:end -->"


def _fmt_value(value: float, unit: str) -> str:
    if unit == "FLOP/s":
        return f"{value / 1e9:.1f} GFLOP/s"
    return f"{value:.3g} {unit}"


def render_table(out_dir: Path) -> str:
    """The figures of every ``OUT_DIR/*.json`` as a markdown table (the part of BENCHMARKS.md that
    ``vecflow bench table`` rewrites)."""
    rows = ["| benchmark | peer | ours | ratio (wall) | ratio (CPU time) | goal | check | machine, load |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    def priority(path: Path) -> tuple:
        stem = path.stem
        return (next((i for i, name in enumerate(BENCHMARKS) if stem.startswith(name)), len(BENCHMARKS)), stem)

    workloads = []
    for path in sorted(Path(out_dir).glob("*.json"), key=priority):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "benchmark" not in data:  # e.g. a profile summary
            continue
        workloads.append(f"- `{data.get('benchmark')}` ({data.get('measured_at')}): "
                         f"`{json.dumps(data.get('workload'), default=str)}`")
        m = data.get("machine", {})
        where = f"{m.get('cores')} cores, {m.get('torch_threads')} threads, {m.get('dtype')}, load {m.get('load_average_1m')}"
        if data.get("benchmark") == "startup":
            floor = ", ".join(f"{k} {v:.2f} s" for k, v in data["floor_s"].items())
            rows.append(f"| startup | {floor} | mean `vecflow CMD --help` {data['mean_command_s']:.2f} s, slowest "
                        f"{data['slowest']} {data['per_command_s'][data['slowest']]:.2f} s | | | | | {where} |")
            continue
        if data.get("benchmark") == "pipeline":
            rows.append(table_row(data, where))
            continue
        unit = data["unit"]
        goal = data.get("goal_ratio")
        if "goal_p99_ms" in data:
            goal_text = f"p99 <= {data['goal_p99_ms']:g} ms: {'met' if data['goal_met'] else 'MISSED'} " \
                        f"(p50/p95/p99 {data['server']['p50_ms']:.1f}/{data['server']['p95_ms']:.1f}/" \
                        f"{data['server']['p99_ms']:.1f} ms)"
        elif "server" in data:
            goal_text = (f"p50/p95/p99 {data['server']['p50_ms']:.1f}/{data['server']['p95_ms']:.1f}/"
                         f"{data['server']['p99_ms']:.1f} ms")
        else:
            goal_text = "" if goal is None else f">= {goal:g}x: {'met' if data['goal_met'] else 'MISSED'}"
        check = ", ".join(f"{k} {v:.2g}" if isinstance(v, float) else f"{k} {v}" for k, v in data["check"].items()
                          if k not in ("worst_key", "mismatched"))
        cpu = data.get("cpu_time_ratio")
        rows.append(f"| {data['benchmark']} | {data['peer']['name']}: {_fmt_value(data['peer']['value'], unit)} | "
                    f"{data['ours']['name']}: {_fmt_value(data['ours']['value'], unit)} | {data['ratio']:.2f}x | "
                    f"{'' if cpu is None else f'{cpu:.2f}x'} | {goal_text} | {check} | {where} |")
    return "\n".join(rows + ["", "Workloads, exactly as run:", ""] + workloads)


def update_markdown(markdown: Path, out_dir: Path) -> None:
    """Replace the table between the bench-table markers of ``markdown`` with the figures in ``out_dir``."""
    from vecflow.core.io import write_text

    text = markdown.read_text(encoding="utf-8")
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise VecflowError(f"{markdown}: no {TABLE_BEGIN} ... {TABLE_END} section to fill")
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    write_text(markdown, f"{head}{TABLE_BEGIN}\n{render_table(out_dir)}\n{TABLE_END}{tail}")
