"""The ``vecflow`` command line: one subcommand per pipeline step, each handled by one module.

Every Snakemake rule calls exactly one of these. A bad input raises ``VecflowError``; here it becomes one
line on stderr naming the file and line or field, and exit status 2.
"""

from __future__ import annotations

import importlib
import sys

from vecflow.core.errors import VecflowError

# subcommand -> "module:function"; each function takes the remaining argv and returns an exit code or None
COMMANDS = {
    "fetch-model": "vecflow.core.fetch:main",
    "fetch-data": "vecflow.data.fetch:main",
    "ingest-dialogues": "vecflow.data.dialogues:main",
    "synthesize": "vecflow.data.synthesis:main",
    "filter-summary": "vecflow.data.filtering:main",
    "chunk-articles": "vecflow.data.articles:main",
    "split-articles": "vecflow.data.splits:main",
    "embed": "vecflow.lvm.embeddings:main",
    "windows": "vecflow.lvm.windows:main",
    "diagnose": "vecflow.lvm.diagnostics:main",
    "train-lvm": "vecflow.lvm.train:main",
    "fivecat": "vecflow.lvm.fivecat_cli:main",
    "lvm-curve": "vecflow.lvm.fivecat_cli:main_curve",
    "lvm-seeds": "vecflow.lvm.seeds:main",
    "hpo-pareto": "vecflow.hpo.best:main_pareto",
    "train-summarizer": "vecflow.summary.seq2seq:main_train",
    "predict-summarizer": "vecflow.summary.seq2seq:main_predict",
    "train-causal": "vecflow.summary.causal:main_train",
    "train-elm": "vecflow.summary.elm_train:main_train",
    "predict-elm": "vecflow.summary.elm:main_predict",
    "predict-retrieval": "vecflow.summary.retrieval:main",
    "hpo-worker": "vecflow.hpo.study:main_worker",
    "hpo-best": "vecflow.hpo.best:main_best",
    "score": "vecflow.summary.scoring:main",
    "resolve-config": "vecflow.core.resolved_config:main",
    "config-docs": "vecflow.core.schema_docs:main",
    "report": "vecflow.ship.report:main",
    "compare": "vecflow.ship.compare:main",
    "deploy": "vecflow.ship.deploy:main",
    "serve": "vecflow.ship.serve:main",
    "load-test": "vecflow.ship.load_test:main",
    "bench": "vecflow.bench.cli:main",
    "gpu-check": "vecflow.core.gpu_check:main",
}


def _usage() -> str:
    lines = ["usage: vecflow <command> [options]", "", "commands:"]
    lines += [f"  {name}" for name in COMMANDS]
    lines += ["", "Run 'vecflow <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from vecflow import __version__

        print(__version__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"vecflow: error: unknown command '{command}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[command].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        code = func(rest)
    except VecflowError as exc:
        print(f"vecflow {command}: error: {exc}", file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
