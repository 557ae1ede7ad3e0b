"""The LVM scale test (``make scale-test``, issue 13 item 6): a synthetic corpus through the real LVM commands.

    python -m vecflow.lvm.scale bank --chunks N --dim D --chunks-per-article K --seed S --out F --index F
    python -m vecflow.lvm.scale table --bank F.safetensors --benchmark STAGE=TSV ... --out-json F --out-md F

``bank`` writes a bank of unit vectors with article structure (each article a random walk, so the
windows have a real temporal signal) through the same sharded writer as ``vecflow embed``, one shard in
memory at a time. ``workflow/scale/Snakefile`` runs windows -> diagnose -> one training epoch -> 5CAT on it,
each rule with a Snakemake ``benchmark:`` file; ``table`` turns those into one table: wall time and peak
RSS per stage next to the bank's size, and whether peak RSS stays within 2.5 x the bank.
"""

from __future__ import annotations

import argparse
import csv

import numpy as np

from vecflow.core.errors import VecflowError
from vecflow.core.io import write_json, write_text
from vecflow.lvm.bank import ShardedBankWriter, map_tensor

RSS_GOAL = 2.5  # peak RSS per stage, in multiples of the (training) bank's size


def synthetic_shard(first_article: int, articles: int, length: int, dim: int, seed: int) -> tuple:
    """``articles`` random-walk articles of ``length`` unit vectors: (vectors, index rows)."""
    rng = np.random.default_rng([seed, first_article])
    steps = rng.standard_normal((articles, length, dim), dtype=np.float32) * np.float32(0.8 / np.sqrt(dim))
    walk = np.cumsum(steps, axis=1) + rng.standard_normal((articles, 1, dim), dtype=np.float32) / np.sqrt(dim)
    vectors = walk.reshape(-1, dim)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rows = [{"article_id": first_article + a, "chunk_index": c, "text": f"synthetic {first_article + a}/{c}"}
            for a in range(articles) for c in range(length)]
    return vectors, rows


def write_synthetic_bank(out, index, chunks: int, dim: int, chunks_per_article: int, seed: int,
                         shard_rows: int = 32768) -> int:
    """A bank of ``chunks`` rows (whole articles of ``chunks_per_article``; the last one may be shorter)."""
    if chunks < 1 or dim < 1 or chunks_per_article < 2:
        raise VecflowError(f"scale-bank: need chunks >= 1, dim >= 1, chunks_per_article >= 2; got {chunks}, {dim}, "
                           f"{chunks_per_article}")
    per_shard = max(1, shard_rows // chunks_per_article)
    writer = ShardedBankWriter(out, index, per_shard * chunks_per_article,
                               {"synthetic": [chunks, dim, chunks_per_article, seed]})
    article, written = writer.rows_done // chunks_per_article, writer.rows_done
    while written < chunks:
        count = min(per_shard, -(-(chunks - written) // chunks_per_article))
        vectors, rows = synthetic_shard(article, count, chunks_per_article, dim, seed)
        keep = min(len(rows), chunks - written)
        writer.add_shard(vectors[:keep], rows[:keep], {"encoder": "synthetic"})
        article, written = article + count, written + keep
    return writer.finish()


def read_benchmark(path) -> dict:
    """The last row of a Snakemake benchmark TSV: wall seconds ``s`` and peak RSS ``max_rss`` (MB)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows or "s" not in rows[-1] or "max_rss" not in rows[-1]:
        raise VecflowError(f"{path}: not a Snakemake benchmark file (columns s, max_rss)")
    row = rows[-1]

    def number(key):
        try:
            return float(row[key])
        except (TypeError, ValueError):
            return None  # Snakemake writes NA where it could not measure

    return {"wall_s": number("s"), "max_rss_mb": number("max_rss")}


def scale_table(bank_path, benchmarks: dict[str, str]) -> dict:
    vectors = map_tensor(bank_path)
    bank_mb = vectors.nbytes / 2**20
    stages = []
    for stage, path in benchmarks.items():
        numbers = read_benchmark(path)
        rss = numbers["max_rss_mb"]
        stages.append({"stage": stage, **numbers, "rss_over_bank": None if rss is None else rss / bank_mb})
    ratios = [s["rss_over_bank"] for s in stages if s["rss_over_bank"] is not None]
    return {"bank": {"path": str(bank_path), "rows": int(vectors.shape[0]), "dim": int(vectors.shape[1]),
                     "mb": bank_mb},
            "stages": stages, "rss_goal": RSS_GOAL, "goal_met": bool(ratios) and max(ratios) <= RSS_GOAL}


def markdown(table: dict) -> str:
    bank = table["bank"]
    lines = [f"Scale test: bank {bank['rows']:,} x {bank['dim']} float32 = {bank['mb']:.1f} MB; goal peak RSS <= "
             f"{table['rss_goal']} x bank per stage: {'met' if table['goal_met'] else 'NOT met'}", "",
             "| stage | wall time (s) | peak RSS (MB) | RSS / bank |", "|---|---|---|---|"]
    fmt = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    for s in table["stages"]:
        lines.append(f"| {s['stage']} | {fmt(s['wall_s'], '.1f')} | {fmt(s['max_rss_mb'], '.0f')} | "
                     f"{fmt(s['rss_over_bank'], '.2f')} |")
    return "\n".join(lines) + "\n"


def main_bank(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vecflow.lvm.scale bank", description="A synthetic bank for the scale test")
    parser.add_argument("--chunks", type=int, required=True)
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--chunks-per-article", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--index", required=True)
    args = parser.parse_args(argv)
    total = write_synthetic_bank(args.out, args.index, args.chunks, args.dim, args.chunks_per_article, args.seed)
    print(f"[vecflow] {args.out}: {total} synthetic chunks x {args.dim}", flush=True)
    return 0


def main_table(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vecflow.lvm.scale table", description="The scale test's table")
    parser.add_argument("--bank", required=True, help="the training bank (its size is the RSS yardstick)")
    parser.add_argument("--benchmark", action="append", required=True, metavar="STAGE=TSV")
    parser.add_argument("--out-json", required=True)
    parser.add_argument("--out-md", required=True)
    args = parser.parse_args(argv)
    benchmarks = {}
    for text in args.benchmark:
        stage, sep, path = text.partition("=")
        if not sep or not stage or not path:
            raise VecflowError(f"--benchmark '{text}': expected STAGE=TSV")
        benchmarks[stage] = path
    table = scale_table(args.bank, benchmarks)
    write_json(args.out_json, table)
    write_text(args.out_md, markdown(table))
    print(markdown(table), flush=True)
    return 0



def main(argv: list[str] | None = None) -> int:
    """``python -m vecflow.lvm.scale bank|table ...``: a test harness, so not a ``vecflow`` pipeline command."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"bank": main_bank, "table": main_table}
    if not argv or argv[0] not in commands:
        print("usage: python -m vecflow.lvm.scale bank|table ...", file=sys.stderr)
        return 2
    try:
        return commands[argv[0]](argv[1:])
    except VecflowError as exc:
        print(f"vecflow scale {argv[0]}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
