"""``vecflow bench``: run one benchmark or all of them, rewrite BENCHMARKS.md's table, or summarise a profile.

    vecflow bench NAME|all [--size tiny|full] [--out-dir results/bench] [--count N]
                  [--dialogsum DIR] [--chunks FILE] [--minilm DIR] [--smollm2 DIR] [--workdir RUN]
    vecflow bench table --out-dir results/bench --markdown BENCHMARKS.md
    vecflow bench profile --raw FILE [--within FUNCTION]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vecflow.bench.bertscore import bench_bertscore
from vecflow.bench.common import BENCHMARKS, DEFAULT_OUT, REPO
from vecflow.bench.embed import bench_embed
from vecflow.bench.fivecat import bench_fivecat
from vecflow.bench.generate import bench_generate
from vecflow.bench.lvm import bench_lvm
from vecflow.bench.pipeline import bench_pipeline
from vecflow.bench.profile import profile_summary
from vecflow.bench.serve import bench_serve
from vecflow.bench.startup import bench_startup
from vecflow.bench.table import update_markdown
from vecflow.bench.train import bench_train
from vecflow.core.errors import VecflowError
from vecflow.core.io import write_json

RUNNERS = {"fivecat": bench_fivecat, "bertscore": bench_bertscore, "embed": bench_embed, "generate": bench_generate,
           "train": bench_train, "lvm": bench_lvm, "serve": bench_serve, "startup": bench_startup,
           "pipeline": bench_pipeline}
# --count is the size of each benchmark's workload under this keyword
COUNT_OPTION = {"fivecat": "windows_total", "bertscore": "pairs", "embed": "chunks", "generate": "dialogues",
                "serve": "requests"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vecflow bench", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=[*BENCHMARKS, "all", "table", "profile"],
                        help="a benchmark, all of them, 'table' (rewrite --markdown's table from --out-dir) or "
                             "'profile' (summarise a py-spy raw file: --raw, --within)")
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md", help="for 'table'")
    parser.add_argument("--raw", type=Path, help="for 'profile': a `py-spy record -f raw` output")
    parser.add_argument("--within", help="for 'profile': count only stacks through this function")
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT))
    parser.add_argument("--minilm", type=Path, help="encoder folder (default resources/models/minilm)")
    parser.add_argument("--smollm2", type=Path, help="causal LM folder (default resources/models/smollm2)")
    parser.add_argument("--dialogsum", type=Path, metavar="DIR",
                        help="bertscore, generate, train at --size full: a DialogSum folder with dev.jsonl and "
                             "train.jsonl (resources/data/dialogsum after fetch_data, or your own copy)")
    parser.add_argument("--chunks", type=Path, metavar="FILE",
                        help="embed, serve at --size full: a chunks.jsonl (the wikitext config's chunk_articles "
                             "writes results/wikitext/lvm/chunks.jsonl)")
    parser.add_argument("--families", default="seq2seq,causal", help="generate/train: seq2seq,causal")
    parser.add_argument("--count", type=int, help="the workload's size instead of --size's (windows, pairs, "
                                                  "chunks, dialogues or requests)")
    parser.add_argument("--workdir", type=Path, help="pipeline: a finished run of the demo DAG (default: the "
                                                     "repository's at --size full; a tiny one built at --size tiny)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.name == "profile":
        if args.raw is None or not args.raw.is_file():
            raise VecflowError(f"--raw: {args.raw}: py-spy raw file not found")
        summary = profile_summary(args.raw, args.within)
        print(json.dumps(summary, indent=1))
        write_json(Path(args.out_dir) / f"profile-{args.raw.stem}.json", summary)
        return 0
    if args.name == "table":
        update_markdown(args.markdown, Path(args.out_dir))
        print(f"[bench] {args.markdown}: table rewritten from {args.out_dir}")
        return 0
    names = BENCHMARKS if args.name == "all" else (args.name,)
    failed = []
    for name in names:
        options = {COUNT_OPTION[name]: args.count} if args.count and name in COUNT_OPTION else {}
        try:
            RUNNERS[name](args.size, Path(args.out_dir), minilm=args.minilm, smollm2=args.smollm2,
                          families=tuple(args.families.split(",")), workdir=args.workdir,
                          dialogsum=args.dialogsum, chunks_file=args.chunks, **options)
        except Exception as exc:  # noqa: BLE001 - one failed benchmark must not cost the others' figures
            if len(names) == 1:
                raise
            failed.append(name)
            print(f"[bench {name}] FAILED: {type(exc).__name__}: {exc}", flush=True)
    if failed:
        print(f"[bench] failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0
