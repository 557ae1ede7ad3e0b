"""The settings of the dialogue data commands, one typed model per command, validated once where the command
starts (``--settings``: argparse ``type=Model.from_json``); the code reads attributes.

Their rules in ``workflow/rules/data.smk`` send the whole ``summary`` section (plus the global ``seed``,
``device`` and ``tracking``), so each model has every key of it; names, types and defaults are the schema's
(``tests/test_summary_settings.py`` checks them):

- ``IngestSettings`` (``vecflow ingest-dialogues``): ``max_dialogues``, ``selection_dialogues``,
  ``leakage_prefix_chars``;
- ``SynthesisSettings`` (``vecflow synthesize``): ``templates``, ``embed_batch_size``, ``encoder_max_length``;
- ``FilterSettings`` (``vecflow filter-summary``): ``norm_tolerance``.

The article commands' rules send one ``lvm`` part each (``tests/test_settings_models.py`` checks them):

- ``ChunkSettings`` (``vecflow chunk-articles``): ``lvm.articles``, with ``lvm.chunking`` as ``chunking``;
- ``SplitSettings`` (``vecflow split-articles``): ``lvm.split``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from vecflow.core.settings import JobSettings, Number, SettingsModel


class SummaryDataSettings(JobSettings):
    """The ``summary`` section, as the data rules send it."""

    SCHEMA_SECTIONS = ("summary",)

    splits: dict[str, str] | None = None  # the dialogue file per split (the commands get them as arguments)
    max_dialogues: dict[str, NonNegativeInt] = {}  # 0 = every dialogue
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


# ---------------------------------------------------------------------------------------------- articles
SplitName = Literal["train", "val", "ood"]
IdRanges = dict[SplitName, list[list[int]]]  # {split: [[low, high], ...]}, checked by vecflow.data.splits


class ChunkingSettings(SettingsModel):
    """``lvm.chunking``: sentences are packed into chunks of about ``target_tokens`` words, none under
    ``min_tokens``."""

    target_tokens: Annotated[int, Field(ge=4)] = 60
    min_tokens: PositiveInt = 8


class ChunkSettings(JobSettings):
    """``vecflow chunk-articles``: ``lvm.articles`` (``input``, ``format`` and ``ood_input`` are read by the rule,
    which passes them as arguments) and the chunk sizes (``chunking``)."""

    SCHEMA_SECTIONS = ("lvm.articles",)
    SCHEMA_FIELDS = {**JobSettings.SCHEMA_FIELDS, "chunking": "lvm.chunking"}

    input: str = "pydoc"
    format: Literal["wikitext", "jsonl", "pydoc", "dialogues"] = "pydoc"
    ood_input: str = ""
    max_articles: NonNegativeInt = 0  # 0 = every article
    pydoc_min_words: PositiveInt = 50
    chunking: ChunkingSettings = ChunkingSettings()


class SplitSettings(JobSettings):
    """``vecflow split-articles``: ``lvm.split``, how article ids go to train/val/ood and what leakage is
    allowed."""

    SCHEMA_SECTIONS = ("lvm.split",)

    method: Literal["fractions", "ranges"] = "fractions"
    fractions: dict[SplitName, Number] = {"train": 0.8, "val": 0.1, "ood": 0.1}
    ranges: IdRanges = {}
    pinned: IdRanges = {}  # fractions only: ids in these ranges go to that split first
    drop_duplicate_chunks: bool = False
    drop_leaking_articles: bool = False
    short_duplicate_tokens: NonNegativeInt = 0
