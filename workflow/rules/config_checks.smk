# Config checks that the schema cannot express (beam-only flags with num_beams 1, fractions, references).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from vecflow.config_checks import check_config
from vecflow.errors import VecflowError

try:
    check_config(config)
except VecflowError as exc:
    raise WorkflowError(str(exc)) from None
