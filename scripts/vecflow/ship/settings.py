"""The settings of the deploy commands, one typed model per command, validated once where the command starts.

Each model mirrors what its rule in ``workflow/rules/ship.smk`` sends (``vecflow.ship.workflow`` builds it): the
``deploy`` section and the global ``seed``, ``device`` and ``tracking``. Field names, types and defaults are
those of ``workflow/schemas/config.schema.yaml`` (``tests/test_settings_hpo_deploy.py`` checks them), so the
code restates no default of its own.

- ``DeploySettings`` (``vecflow deploy decide``): ``deploy``; the gates (``DeployGates``) and the choice of
  the summarizer;
- ``DeployBundleSettings`` (``vecflow deploy bundle``): ``deploy``, and the seq2seq training lengths
  (``summarizer.max_source_length`` / ``max_target_length``) for a summarizer folder written before
  ``vecflow_summarizer.json`` existed (the server must truncate as training did).
- ``ReportSettings`` (``vecflow report``): ``report`` and the config's hash.

A gate whose threshold has no default (``gates.summarizer.min_bertscore_f1``) is off until it is set; every
other gate is on, with the schema's threshold, unless the config sets it otherwise.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt

from vecflow.core.settings import JobSettings, Number, SettingsModel


class LvmGates(SettingsModel):
    """``deploy.gates.lvm``: gates on the deployed LVM run's 5CAT numbers."""

    use_fivecat_thresholds: bool = True
    min_c0: Number = 0.0
    min_margin: Number = 0.0
    beat_baselines: bool = True


class SummarizerGates(SettingsModel):
    """``deploy.gates.summarizer``: gates on the chosen summarizer's scores (any family)."""

    min_rouge1: Number = 0.2
    min_bertscore_f1: Number | None = None  # None: no BERTScore gate
    min_distinct_ratio: Annotated[Number, Field(ge=0, le=1)] = 0.9
    min_input_margin: Number = 0.0


class DeployGates(SettingsModel):
    """``deploy.gates``."""

    lvm: LvmGates = LvmGates()
    summarizer: SummarizerGates = SummarizerGates()


class ServeSettings(SettingsModel):
    """``deploy.serve``: carried in the bundle's manifest.json for ``vecflow serve``."""

    faiss_min_rows: NonNegativeInt = 100000


class DeploySettings(JobSettings):
    """``vecflow deploy decide``: the deploy section."""

    SCHEMA_SECTIONS = ("deploy",)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")] = "vecflow"
    lvm_run: str = "p4"  # read by the rules (which 5CAT file and LVM folder)
    summarizer: Literal["best", "seq2seq", "causal", "elm"] = "best"
    summarizer_metric: Literal["rouge1", "rouge2", "rougeL", "rougeLsum", "bertscore_f1"] = "rouge1"
    serve: ServeSettings = ServeSettings()
    gates: DeployGates = DeployGates()


class DeployBundleSettings(DeploySettings):
    """``vecflow deploy bundle``: the deploy section and the seq2seq training lengths (a legacy summarizer folder's
    ``vecflow_summarizer.json`` is written from them)."""

    SCHEMA_FIELDS = {**DeploySettings.SCHEMA_FIELDS, "max_source_length": "summarizer.max_source_length",
                     "max_target_length": "summarizer.max_target_length"}

    max_source_length: Annotated[int, Field(ge=8)] = 512
    max_target_length: Annotated[int, Field(ge=4)] = 128

    def legacy_spec(self) -> dict:
        """The ``vecflow_summarizer.json`` of a seq2seq folder trained before the file existed."""
        return {"kind": "seq2seq", "max_source_length": self.max_source_length,
                "max_target_length": self.max_target_length, "system_message": None}


class ReportSettings(JobSettings):
    """``vecflow report``: the report section, and the hash of the config the run was made with (shown in the
    page's lineage)."""

    SCHEMA_SECTIONS = ("report",)
    NOT_IN_SCHEMA = frozenset({"config_hash"})

    title: str = "vecflow report"
    compare_with: str = ""  # a previous results folder whose headline metrics are shown beside this run's
    config_hash: str | None = None  # vecflow.core.workflow.config_hash of the run's config (the rule adds it)
