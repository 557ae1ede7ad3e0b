"""Write the configuration a run really used (all --configfile layers merged, schema defaults filled).

The report shows this file and its hash as the run's lineage, so a WikiText or DialogSum run is never
described by the demo config it was layered on.
"""

from __future__ import annotations

import argparse

import yaml

from vecflow.core.io import write_text
from vecflow.core.settings import settings_arg


def render(config: dict, sources: list[str]) -> str:
    header = "# vecflow: resolved configuration (written by the resolved_config rule; do not edit)\n"
    header += "# merged by Snakemake (--configfile files take precedence over the Snakefile's configfile:)\n"
    header += "".join(f"# config file: {source}\n" for source in sources)
    return header + yaml.safe_dump(config, sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow resolve-config", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, type=settings_arg, help="the resolved config as JSON")
    parser.add_argument("--source", action="append", default=[], help="a config file layer, in order")
    parser.add_argument("--out", required=True, help="YAML file to write")
    args = parser.parse_args(argv)
    write_text(args.out, render(args.config, args.source))
    return 0
