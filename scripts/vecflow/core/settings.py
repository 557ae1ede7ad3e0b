"""Settings passed from Snakemake rules: one config section as a JSON string (``--settings``), read as an
untyped dict (``settings_arg``) or validated into a typed model (``JobSettings``)."""

from __future__ import annotations

import argparse
import copy
import json
import random
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from vecflow.core.errors import VecflowError


def settings_arg(text: str) -> dict:
    """argparse ``type=`` for ``--settings``: a JSON object, or an error naming the problem."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--settings is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--settings must be a JSON object")
    return value


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) so that reruns produce the same numbers."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# ---------------------------------------------------------------------------------------------- typed settings
# A command's settings as one pydantic model, validated once where the command starts; the code reads
# attributes. The config schema (workflow/schemas/config.schema.yaml) is the source of every field that comes
# from the config: a model names the schema sections and keys its fields mirror (SCHEMA_SECTIONS,
# SCHEMA_FIELDS), and tests/test_settings_models.py checks that their names, types and defaults agree.

Number = Union[int, float]  # a schema "number": kept as given, so an int in the config stays an int in the outputs


def _location(loc: tuple, data: Any = None, missing: bool = False) -> str:
    """The dotted key of an error's ``loc``, as the user wrote it. Given the validated ``data``, the parts that are
    no key or index of it are left out: pydantic adds a label per member it tried of a union (``residual.bool``),
    per validator and for a mapping's keys (``[key]``); a ``missing`` key keeps its last part (it is not in the
    data)."""
    if data is None:
        return ".".join(str(part) for part in loc)
    parts, node = [], data
    for position, part in enumerate(loc):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif not (missing and position == len(loc) - 1):
            continue
        parts.append(str(part))
    return ".".join(parts)


def describe_validation_error(exc: ValidationError, data: Any = None) -> str:
    """The first problem of a pydantic ValidationError as one line naming the key (``data``: what was validated,
    so that pydantic's own labels in the error's location are left out of the key)."""
    error = exc.errors()[0]
    key = _location(error["loc"], data, missing=error["type"] == "missing")
    if error["type"] == "missing":
        return f"settings: missing key '{key}'"
    if error["type"] == "literal_error":
        choices = error["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        return f"settings: field '{key}': {error['input']!r} is not one of {choices}"
    if error["type"] == "extra_forbidden":
        return f"settings: unknown key '{key}' (not a setting of this command: a typo, or a key the rule and " \
               f"the code name differently)"
    return f"settings: field '{key}': {error['msg']}, got {error.get('input')!r}"


class SettingsModel(BaseModel):
    """A nested settings object: unknown keys are errors, values cannot be changed after validation."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class JobSettings(SettingsModel):
    """The settings of one ``vecflow`` command, as the rule sends them (``--settings`` JSON).

    ``SCHEMA_SECTIONS``: dotted schema paths of config sections whose every key is a field here (the rule sends
    the whole section); ``SCHEMA_FIELDS``: field -> dotted schema path for single keys taken from elsewhere
    (``seed``, ``device``, ``tracking`` are the global keys every job gets: ``job_globals``);
    ``NOT_IN_SCHEMA``: fields that are no config key (a run's name, a test-only stop), each with its default here;
    ``SCHEMA_OMITTED``: dotted keys of those sections that the rule leaves out (no field here). With several
    sections, a later one is laid over the earlier ones (``summarizer``, then ``summarizer.causal``): a key takes
    its type from the last section that has it, and its default from the last one that gives a default.
    """

    SCHEMA_SECTIONS: ClassVar[tuple[str, ...]] = ()
    SCHEMA_OMITTED: ClassVar[frozenset[str]] = frozenset()
    SCHEMA_FIELDS: ClassVar[dict[str, str]] = {"seed": "seed", "device": "device", "tracking": "tracking"}
    NOT_IN_SCHEMA: ClassVar[frozenset[str]] = frozenset()

    seed: int = 1234
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    tracking: dict[str, Any] = {}

    _received: dict = PrivateAttr(default_factory=dict)

    @classmethod
    def parse(cls, data: Mapping) -> "JobSettings":
        """Validate ``data`` (a decoded ``--settings`` object); a problem is a VecflowError naming the key."""
        try:
            model = cls.model_validate(dict(data))
        except ValidationError as exc:
            raise VecflowError(describe_validation_error(exc, data)) from None
        model._received = copy.deepcopy(dict(data))
        return model

    @classmethod
    def from_json(cls, text: str) -> "JobSettings":
        """argparse ``type=`` for ``--settings``: JSON text -> the validated model."""
        return cls.parse(settings_arg(text))

    @property
    def received(self) -> dict:
        """The settings exactly as the rule sent them (what a job records as its settings)."""
        return copy.deepcopy(self._received)


def job_globals(config: Mapping) -> dict:
    """The keys every job's settings carry besides its own section: the global seed, device and tracking."""
    return {"seed": config["seed"], "device": config["device"], "tracking": config["tracking"]}


def settings_json(values: Mapping) -> str:
    """A job's ``--settings`` as the rules send it: one JSON object with sorted keys (the same text for the same
    settings, so Snakemake's params trigger reruns only on a real change)."""
    return json.dumps(values, sort_keys=True)
