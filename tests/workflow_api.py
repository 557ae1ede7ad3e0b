"""Drive the workflow through the Snakemake Python API (snakemake.api), as the tests need it."""

from __future__ import annotations

from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings,
    DAGSettings,
    ExecutionSettings,
    OutputSettings,
    ResourceSettings,
)

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"


def _workflow(api: SnakemakeApi, workdir: Path, configfiles, config, cores: int):
    return api.workflow(
        resource_settings=ResourceSettings(cores=cores, resources={"gpu": 1}),
        config_settings=ConfigSettings(configfiles=[Path(c) for c in configfiles], config=config or {}),
        snakefile=SNAKEFILE,
        workdir=Path(workdir),
    )


def rulegraph(workdir, configfiles=(), config=None, targets=()) -> str:
    """The DOT rule graph of the DAG (printed to stdout; capture it with capsys)."""
    with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
        workflow = _workflow(api, workdir, configfiles, config, cores=1)
        workflow.dag(DAGSettings(targets=set(targets), print_dag_as="dot")).printrulegraph()


def dry_run(workdir, configfiles=(), config=None, targets=()) -> None:
    with SnakemakeApi(OutputSettings(dryrun=True, quiet={"all"})) as api:
        workflow = _workflow(api, workdir, configfiles, config, cores=1)
        workflow.dag(DAGSettings(targets=set(targets))).execute_workflow(executor="dryrun")


def run(workdir, configfiles=(), config=None, targets=(), cores: int = 2) -> None:
    with SnakemakeApi(OutputSettings(quiet={"all"}, show_failed_logs=True)) as api:
        workflow = _workflow(api, workdir, configfiles, config, cores=cores)
        workflow.dag(DAGSettings(targets=set(targets))).execute_workflow(
            executor="local", execution_settings=ExecutionSettings(keep_incomplete=False)
        )
