"""The settings of the dialogue data commands, one typed model per command, validated once where the command
starts (``--settings``: argparse ``type=Model.from_json``); the code reads attributes.

Their rules in ``workflow/rules/data.smk`` send the whole ``summary`` section (plus the global ``seed``,
``device`` and ``tracking``), so each model has every key of it; names, types and defaults are the schema's
(``tests/test_summary_settings.py`` checks them):

- ``IngestSettings`` (``vecflow ingest-dialogues``): ``max_dialogues``, ``selection_dialogues``,
  ``leakage_prefix_chars``;
- ``SynthesisSettings`` (``vecflow synthesize``): ``templates``, ``embed_batch_size``, ``encoder_max_length``;
- ``FilterSettings`` (``vecflow filter-summary``): ``norm_tolerance``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from vecflow.core.settings import JobSettings, Number


class SummaryDataSettings(JobSettings):
    """The ``summary`` section, as the data rules send it."""

    SCHEMA_SECTIONS = ("summary",)

    splits: dict[str, str] | None = None  # the dialogue file per split (the commands get them as arguments)
    max_dialogues: dict[str, PositiveInt] = {}
    selection_dialogues: NonNegativeInt = 0
    leakage_prefix_chars: NonNegativeInt = 200
    synthesis_dir: str = ""
    embed_batch_size: PositiveInt = 32
    encoder_max_length: Annotated[int, Field(ge=8)] = 256
    norm_tolerance: Annotated[Number, Field(gt=0)] = 0.001
    templates: dict[Literal["summary", "topic"], str] | None = None  # None: vecflow's templates


class IngestSettings(SummaryDataSettings):
    """``vecflow ingest-dialogues``: the per-split caps, the selection split's size, the leakage rule."""


class SynthesisSettings(SummaryDataSettings):
    """``vecflow synthesize``: the prompt templates and the encoder's batch size and input length."""


class FilterSettings(SummaryDataSettings):
    """``vecflow filter-summary``: the allowed norm error of the synthesis embeddings."""
