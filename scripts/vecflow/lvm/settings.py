"""The settings of the LVM commands, one typed model per command, validated once where the command starts.

Each model mirrors what its rule in ``workflow/rules/lvm.smk`` sends: a config section (``SCHEMA_SECTIONS``)
or single keys (``SCHEMA_FIELDS``), plus the global ``seed``, ``device`` and ``tracking`` every job gets.
Field names, types and defaults are those of ``workflow/schemas/config.schema.yaml``
(``tests/test_settings_models.py`` checks them), so the code restates no default of its own.

- ``EmbedSettings`` (``vecflow embed``), ``WindowsSettings`` (``vecflow windows``),
  ``DiagnosticsSettings`` (``vecflow diagnose``), ``FivecatSettings`` (``vecflow fivecat``),
- ``LvmTrainSettings`` (``vecflow train-lvm`` and each LVM study trial): ``lvm.train`` with the run's entry
  (``lvm.runs.<run>``: preset, arch, loss overrides, any ``lvm.train`` key) laid over it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, NonNegativeInt, PositiveInt

from vecflow.core.settings import JobSettings, Number, SettingsModel
from vecflow.lvm.baselines import DEFAULT_LAMBDA_GRID

Fraction = Annotated[Number, Field(ge=0, le=1)]
GatedMetric = Literal["c0", "margin", "r1", "r5", "mrr", "rollout"]


class EmbedSettings(JobSettings):
    """``vecflow embed``: the encoder's batch size and the rows per written shard of the bank."""

    SCHEMA_FIELDS = {**JobSettings.SCHEMA_FIELDS, "embed_batch_size": "lvm.embed_batch_size",
                     "embed_shard_rows": "lvm.embed_shard_rows"}

    embed_batch_size: PositiveInt = 64
    embed_shard_rows: PositiveInt = 32768


class WindowsSettings(JobSettings):
    """``vecflow windows``: C, the context chunks before each target."""

    SCHEMA_FIELDS = {**JobSettings.SCHEMA_FIELDS, "context_length": "lvm.context_length"}

    context_length: PositiveInt = 5


class DiagnosticsSettings(JobSettings):
    """``vecflow diagnose``: the direction gate (``lvm.diagnostics``)."""

    SCHEMA_SECTIONS = ("lvm.diagnostics",)

    min_coherence: Number = 0.40
    min_signal: Number = 0.05
    require_monotonic: bool = False
    waive_gate: bool = False

    def thresholds(self) -> dict:
        """The gate's thresholds as ``check_gate`` reads them (and direction.json records them)."""
        return {"min_coherence": self.min_coherence, "min_signal": self.min_signal,
                "require_monotonic": self.require_monotonic}


class FivecatThresholds(SettingsModel):
    """``lvm.fivecat.thresholds``: the gates per split and the largest VAL/OOD gap."""

    val: dict[GatedMetric, Number] = {"c0": 0.50, "margin": 0.12, "r1": 0.60, "r5": 0.95, "mrr": 0.80,
                                      "rollout": 0.45}
    ood: dict[GatedMetric, Number] = {"c0": 0.48, "margin": 0.10, "r1": 0.55, "r5": 0.92, "mrr": 0.75,
                                      "rollout": 0.42}
    max_generalisation_gap: Annotated[Number, Field(ge=0)] = 0.05


class FivecatSettings(JobSettings):
    """``vecflow fivecat``: ``lvm.fivecat``, plus the run's ``train_fraction`` (a learning-curve run's ridge
    baseline is fitted on the same share of the training windows as the model)."""

    SCHEMA_SECTIONS = ("lvm.fivecat",)
    SCHEMA_FIELDS = {**JobSettings.SCHEMA_FIELDS, "train_fraction": "lvm.train.train_fraction"}

    max_samples: NonNegativeInt = 5000  # 0 = every window
    rollout_steps: PositiveInt = 3
    ca_negatives: PositiveInt = 256
    ridge_lambda: Union[Annotated[Number, Field(gt=0)], Literal["auto"]] = "auto"
    ridge_lambdas: list[Annotated[Number, Field(gt=0)]] = [0.01, 0.0316, 0.1, 0.316, 1, 3.16, 10, 31.6, 100, 316,
                                                           1000, 3162, 10000]
    ridge_max_samples: NonNegativeInt = 20000
    min_article_chunks: Annotated[int, Field(ge=2)] = 6
    batch_size: PositiveInt = 256
    thresholds: FivecatThresholds = FivecatThresholds()
    train_fraction: Annotated[Number, Field(gt=0, le=1)] = 1.0


class ContrastSettings(SettingsModel):
    """``lvm.train.contrast``: the context contrast chosen after training."""

    enabled: bool = False
    alphas: list[Annotated[Number, Field(ge=0)]] = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
                                                    0.55, 0.6]
    slots: list[PositiveInt] = [3, 5]


class LvmTrainSettings(JobSettings):
    """``vecflow train-lvm``: ``lvm.train`` with the run's entry laid over it, the context length and the
    selection split's leakage rule (``lvm.split.short_duplicate_tokens``), and the mini-5CAT's article filter
    (``lvm.fivecat.min_article_chunks``). ``preset``, ``arch``, ``epochs``, ``batch_size`` and
    ``learning_rate`` have no default here: the rule always sends them, and a direct call must say them."""

    SCHEMA_SECTIONS = ("lvm.train", "lvm.runs.*")
    SCHEMA_FIELDS = {**JobSettings.SCHEMA_FIELDS, "context_length": "lvm.context_length",
                     "short_duplicate_tokens": "lvm.split.short_duplicate_tokens",
                     "min_article_chunks": "lvm.fivecat.min_article_chunks"}
    NOT_IN_SCHEMA = frozenset({"run", "run_name", "params_file", "stop_after_epoch", "ridge_lambdas"})

    # the run entry (lvm.runs.<run>)
    preset: Literal["P1", "P3", "P4"]
    arch: Literal["transformer", "gru", "lstm", "amn", "mlp"]
    losses: dict[str, Any] | None = None  # loss overrides: lvm.train's, then the run's (vecflow.lvm.presets)
    params_from_study: bool = False  # read by the rule (the study's best_params.yaml arrives as --params)
    # lvm.train
    epochs: PositiveInt
    batch_size: PositiveInt
    learning_rate: Annotated[float, Field(ge=0)]  # 0 (nothing learnt) is allowed here: tests of selection
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    d_model: PositiveInt = 256
    layers: PositiveInt = 4
    heads: PositiveInt = 4
    dropout: Annotated[Number, Field(ge=0, lt=1)] = 0.1
    grad_clip: Annotated[float, Field(ge=0)] = 1.0
    selection_metric: Literal["dominance", "forward", "val_margin", "val_cos", "val_loss"] = "dominance"
    selection_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    residual: Union[bool, Literal["mean", "ridge"]] = True
    train_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    ridge_max_samples: NonNegativeInt = 20000
    early_stop_patience: NonNegativeInt = 5
    contrast: ContrastSettings = ContrastSettings()
    mini5cat_samples: PositiveInt = 2000
    # single keys from other sections
    context_length: PositiveInt = 5
    short_duplicate_tokens: NonNegativeInt = 0
    min_article_chunks: Annotated[int, Field(ge=2)] = 6
    # not config keys
    run: str | None = None  # the lvm.runs name (the rule's wildcard)
    run_name: str | None = None  # the tracking run's name (a study trial's); default lvm-<run>
    params_file: str | None = None  # the study's best_params.yaml the run was trained with (--params)
    stop_after_epoch: NonNegativeInt = 0  # stop (resumably) after this epoch: tests of resuming
    ridge_lambdas: list[Annotated[Number, Field(gt=0)]] = list(DEFAULT_LAMBDA_GRID)  # the mini-5CAT's ridge grid

    def model_sizes(self) -> dict:
        """The sizes ``vecflow.lvm.models.build_model`` reads (and config.json records)."""
        return {"d_model": self.d_model, "layers": self.layers, "heads": self.heads, "dropout": self.dropout,
                "residual": self.residual}

    def tracking_name(self) -> str:
        return self.run_name or f"lvm-{self.run or self.preset + '-' + self.arch}"
