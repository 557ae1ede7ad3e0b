"""The settings of the summary-track commands, one typed model per command, validated once where the command
starts (``--settings``: argparse ``type=Model.from_json``); the code reads attributes.

Each model mirrors what its rule in ``workflow/rules/summary.smk`` sends (``vecflow.summary.workflow`` builds
it): a config section (``SCHEMA_SECTIONS``, less the keys in ``SCHEMA_OMITTED``) or single keys
(``SCHEMA_FIELDS``), plus the global ``seed``, ``device`` and ``tracking``. Field names, types and defaults are
those of ``workflow/schemas/config.schema.yaml`` (``tests/test_summary_settings.py`` checks them), so the code
restates no default of its own.

- ``Seq2SeqSettings`` (``vecflow train-summarizer``): ``summarizer`` without ``kind`` and ``causal``;
- ``CausalSettings`` (``vecflow train-causal``): ``summarizer`` without the seq2seq-only keys, with
  ``summarizer.causal`` laid over it (so changing a seq2seq-only key does not retrain the causal model);
- ``predict-summarizer`` gets its family's settings: ``predict_summarizer_settings`` tells them apart;
- ``ScoreSettings`` (``vecflow score``): ``evaluation``;
- ``ElmPredictSettings`` (``vecflow predict-elm``): ``elm`` and the job's variant;
- ``ElmTrainSettings`` (``vecflow train-elm`` and each ELM study trial): ``elm``, the variant, the BERTScore
  model's layers and batch size (``evaluation.bertscore``) and the split checkpoints are chosen on.

``LoopSettings`` is no command's: it is what the shared training loop (``vecflow.summary.loop``) reads, made by
each family from its own model (``loop_settings()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeInt, PositiveInt

from vecflow.core.errors import VecflowError
from vecflow.core.settings import JobSettings, Number, SettingsModel, settings_arg

Probability = Annotated[Number, Field(ge=0, le=1)]
Bf16 = Literal[True, False, "auto"]  # auto: time both on this device, keep the faster
SelectionRule = Literal["best", "final_unless_significant"]
PositiveNumber = Annotated[Number, Field(gt=0)]
NonNegativeNumber = Annotated[Number, Field(ge=0)]


# ---------------------------------------------------------------------------------------------- the loop
class LoopSettings(SettingsModel):
    """What ``vecflow.summary.loop.Loop`` reads: every field is given by the family that runs the loop."""

    seed: int
    tracking: dict[str, Any]
    epochs: PositiveInt
    batch_size: PositiveInt
    grad_accum: PositiveInt
    learning_rate: PositiveNumber
    weight_decay: NonNegativeNumber
    max_grad_norm: NonNegativeNumber
    group_by_length: bool
    max_minutes: NonNegativeNumber
    evals: NonNegativeInt
    eval_at_start: bool
    bf16: Bf16
    calibration_steps: Annotated[int, Field(ge=2)]
    warmup_ratio: Probability
    decay_ratio: Probability
    min_lr_ratio: Probability
    reserve_seconds: NonNegativeNumber
    selection_metric: str
    selection_rule: SelectionRule
    min_distinct_ratio: Probability
    min_input_margin: Number
    # no config key: evaluations still to come reserve at most this share of a budget
    max_eval_share: Probability = 0.25


# ---------------------------------------------------------------------------------------------- summarizers
class LengthControl(SettingsModel):
    """``summarizer.causal.length_control``: the user turn ends with a length line ('Write about N words.')."""

    mode: Literal["none", "instruction"] = "none"
    round_to: PositiveInt = 5
    template: str = "Write about {words} words."


class LoraSettings(SettingsModel):
    """``summarizer.causal.lora``: LoRA adapters (peft) instead of every weight, merged on save."""

    enabled: bool = False
    r: PositiveInt = 16
    alpha: PositiveInt = 32
    dropout: Probability = 0.05
    target_modules: list[str] | None = None  # None: the attention projections (q, k, v, o)


class SummarizerSettings(JobSettings):
    """The keys both summarizer families read (the ``summarizer`` section's shared keys)."""

    SCHEMA_SECTIONS = ("summarizer",)
    SCHEMA_OMITTED = frozenset({"summarizer.kind", "summarizer.causal"})

    base: str = "minilm"
    max_minutes: NonNegativeNumber = 0
    evals: NonNegativeInt = 0
    eval_at_start: bool = False
    selection_metric: Literal["rouge1", "rouge2", "rougeL", "rougeLsum"] = "rougeL"
    selection_rule: SelectionRule = "best"
    min_distinct_ratio: Probability = 0.9
    min_input_margin: Number = 0.0
    decay_ratio: Probability = 0.2
    min_lr_ratio: Probability = 0.0
    calibration_steps: Annotated[int, Field(ge=2)] = 6
    reserve_seconds: NonNegativeNumber = 30
    group_by_length: bool = True
    max_source_length: Annotated[int, Field(ge=8)] = 512
    max_target_length: Annotated[int, Field(ge=4)] = 128
    epochs: PositiveInt = 3
    batch_size: PositiveInt = 8
    grad_accum: PositiveInt = 1
    learning_rate: PositiveNumber = 5.0e-05
    weight_decay: NonNegativeNumber = 0.01
    warmup_ratio: Probability = 0.1
    val_samples: PositiveInt = 64
    bf16: Bf16 = False
    max_grad_norm: NonNegativeNumber = 1.0
    eval_batch_size: PositiveInt | None = None  # None: batch_size
    log_examples: NonNegativeInt = 2
    generation: dict[str, Any] = {}  # checked by vecflow.summary.generation.check_generation_config

    @property
    def generate_batch_size(self) -> int:
        """The batch size of ``generate`` (selection and prediction)."""
        return self.eval_batch_size or self.batch_size

    def loop_settings(self) -> LoopSettings:
        return LoopSettings(**{name: getattr(self, name) for name in LoopSettings.model_fields
                               if name != "max_eval_share"})


class Seq2SeqSettings(SummarizerSettings):
    """``vecflow train-summarizer`` (and ``predict-summarizer`` of a seq2seq folder): ``summarizer`` without
    ``kind`` and ``causal``."""

    cross_attention_init: Literal["random", "zero", "self"] = "self"
    encoder_lr_scale: NonNegativeNumber = 1.0
    min_speakers: PositiveInt = 3


SEQ2SEQ_ONLY = tuple(name for name in Seq2SeqSettings.model_fields if name not in SummarizerSettings.model_fields)


class CausalSettings(SummarizerSettings):
    """``vecflow train-causal`` (and ``predict-summarizer`` of a causal folder): ``summarizer`` without the
    seq2seq-only keys, with ``summarizer.causal`` laid over it."""

    SCHEMA_SECTIONS = ("summarizer", "summarizer.causal")
    SCHEMA_OMITTED = frozenset({"summarizer.kind", "summarizer.causal",
                                *(f"summarizer.{name}" for name in SEQ2SEQ_ONLY)})

    base: str = "smollm2"
    system_message: str = ""  # '' = vecflow's default summarizer instruction
    user_template: str = ""  # '' = vecflow's default user turn
    length_control: LengthControl = LengthControl()
    decoding_candidates: list[dict[str, Any]] = []
    lora: LoraSettings = LoraSettings()
    generation: dict[str, Any] = {"num_beams": 1, "max_new_tokens": 64}


def predict_summarizer_settings(data: Mapping) -> Seq2SeqSettings | CausalSettings:
    """``vecflow predict-summarizer``: the rule sends the family's training settings; the causal family's are
    told by its own keys (the schema fills them in), anything else is read as the seq2seq family's."""
    causal_only = set(CausalSettings.model_fields) - set(SummarizerSettings.model_fields)
    model = CausalSettings if causal_only & set(data) else Seq2SeqSettings
    return model.parse(data)


def predict_summarizer_settings_arg(text: str) -> Seq2SeqSettings | CausalSettings:
    """argparse ``type=`` for predict-summarizer's ``--settings``."""
    return predict_summarizer_settings(settings_arg(text))


# ---------------------------------------------------------------------------------------------- scoring
class BertScoreSettings(SettingsModel):
    """``evaluation.bertscore``: the local model, the layer whose embeddings are compared, the batch size."""

    model: str = "minilm"
    num_layers: PositiveInt = 6
    batch_size: PositiveInt = 32


class ScoreSettings(JobSettings):
    """``vecflow score``: ``evaluation``."""

    SCHEMA_SECTIONS = ("evaluation",)

    bertscore: BertScoreSettings = BertScoreSettings()
    examples: NonNegativeInt = 3


# ---------------------------------------------------------------------------------------------- the ELM
ElmMetric = Literal["rouge1", "rouge2", "rougeL", "bertscore_f1"]
ELM_VARIANTS = {"plain": "elm", "rag": "elm_rag"}  # elm.variants -> the family (and folder) name


class ElmPredictSettings(JobSettings):
    """``vecflow predict-elm``: ``elm`` and the job's variant (``plain``: the embedding alone, ``rag``: plus the
    summaries of the nearest training dialogues)."""

    SCHEMA_SECTIONS = ("elm",)
    NOT_IN_SCHEMA = frozenset({"variant"})

    lm: str = "smollm2"
    soft_tokens: PositiveInt = 4
    hidden_dim: PositiveInt = 1024
    dropout: Probability = 0.1
    residual_scale: NonNegativeNumber = 0.1
    epochs: PositiveInt = 2
    batch_size: PositiveInt = 8
    grad_accum: PositiveInt = 1
    learning_rate: PositiveNumber = 0.0002
    max_target_length: Annotated[int, Field(ge=4)] = 96
    max_train_samples: NonNegativeInt = 0  # 0 = every row
    val_samples: PositiveInt = 32
    contrastive_weight: NonNegativeNumber = 0.0
    contrastive_temperature: PositiveNumber = 0.07
    weight_decay: NonNegativeNumber = 0.0
    max_grad_norm: NonNegativeNumber = 1.0
    encode_batch_size: PositiveInt = 32
    text_drift_weight: NonNegativeNumber = 0.03
    text_drift_target_similarity: Annotated[Number, Field(ge=-1, le=1)] = 0.75
    max_minutes: NonNegativeNumber = 0
    evals: NonNegativeInt = 0
    warmup_ratio: Probability = 0.05
    decay_ratio: Probability = 0.2
    bf16: Bf16 = "auto"
    selection_metric: ElmMetric = "rougeL"
    selection_rule: SelectionRule = "best"
    min_distinct_ratio: Probability = 0.9
    lm_training: Literal["none", "lora", "full"] = "none"
    adapter_share: Probability = 0.5
    lm_learning_rate: PositiveNumber = 0.0001
    lora_r: PositiveInt = 16
    lora_alpha: PositiveInt = 32
    retrieval_k: NonNegativeInt = 3
    retrieval_max_tokens: Annotated[int, Field(ge=4)] = 48
    rerank_candidates: PositiveInt = 1
    eval_batch_size: PositiveInt = 16
    variants: list[Literal["plain", "rag"]] = ["plain"]
    generation: dict[str, Any] = {}  # checked by vecflow.summary.generation.check_generation_config
    # not a config key
    variant: Literal["plain", "rag"] = "plain"

    @property
    def neighbours(self) -> int:
        """The retrieved summaries per prompt: ``retrieval_k`` for the rag variant; the plain ELM reads the
        embedding alone."""
        return self.retrieval_k if self.variant == "rag" else 0


# the elm keys train-elm reads, which a study may tune and a --params YAML (hpo-best's best_params.yaml) may set
ELM_TUNABLE = tuple(name for name in ElmPredictSettings.model_fields
                    if name not in ("variant", "variants", "lm", "encode_batch_size")
                    and name not in JobSettings.model_fields)

# the loop's keys that are no elm key: the ELM's are fixed
ELM_LOOP = {"group_by_length": True, "eval_at_start": False, "calibration_steps": 6, "min_lr_ratio": 0.0,
            "reserve_seconds": 30, "min_input_margin": 0.0}


class ElmTrainSettings(ElmPredictSettings):
    """``vecflow train-elm`` (and each trial of the ELM study): ``elm``, the variant, ``evaluation.bertscore``'s
    layers and batch size (selection by ``bertscore_f1``), the split checkpoints are chosen on and the tracking
    run's name."""

    SCHEMA_FIELDS = {**JobSettings.SCHEMA_FIELDS, "bertscore_num_layers": "evaluation.bertscore.num_layers",
                     "bertscore_batch_size": "evaluation.bertscore.batch_size"}
    NOT_IN_SCHEMA = frozenset({"variant", "selection_split", "run_name"})

    bertscore_num_layers: PositiveInt = 6
    bertscore_batch_size: PositiveInt = 32
    # not config keys
    selection_split: str = "val"  # the pipeline sends 'selection' when ingest carved one
    run_name: str | None = None  # the tracking run's name (a study trial's); default elm-<out folder>

    def with_params(self, params: Mapping) -> "ElmTrainSettings":
        """These settings with a study's best parameters laid over them, validated again."""
        unknown = sorted(key for key in params if key not in ELM_TUNABLE)
        if unknown:
            raise VecflowError(f"settings: elm.{unknown[0]}: not an elm setting")
        return type(self).parse({**self.model_dump(exclude_unset=True), **params})

    def loop_settings(self, max_minutes: float, epochs: int) -> LoopSettings:
        """The shared loop's settings for one stage: its budget and epochs, the rest from the elm section."""
        values = {name: getattr(self, name) for name in LoopSettings.model_fields
                  if name not in ELM_LOOP and name != "max_eval_share"}
        return LoopSettings(**{**values, **ELM_LOOP, "max_minutes": max_minutes, "epochs": epochs})
