# The config, checked before any job runs: each file strictly (YAML syntax with its line, duplicate keys),
# then the schema (one line naming the key and file, defaults filled in), then the checks the schema cannot
# express (references, fractions, local model folders). Every problem is one line, never a traceback.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from snakemake.utils import validate
from vecflow.core.config_checks import (
    check_config,
    check_config_files,
    merge_order,
    schema_error,
    validation_error_from,
)
from vecflow.core.errors import VecflowError

DEFAULT_CONFIGFILE = "config/config.yaml"

# merge order: the default file first, then each --configfile (each file read once, before Snakemake reads it)
try:
    CONFIG_FILES = check_config_files(
        merge_order(workflow.configfiles, DEFAULT_CONFIGFILE)
    )
except VecflowError as exc:
    raise WorkflowError(str(exc)) from None


configfile: DEFAULT_CONFIGFILE


try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as exc:
    error = validation_error_from(exc)
    if error is None:
        raise
    raise WorkflowError(schema_error(error, CONFIG_FILES)) from None

try:
    check_config(config)
except VecflowError as exc:
    raise WorkflowError(str(exc)) from None
