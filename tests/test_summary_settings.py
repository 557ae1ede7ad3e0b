"""Typed settings of the summary track (issue 24 item 1): each summary / ELM / dialogue-data command's settings
model agrees with the config schema (names, types, defaults), the rules of summary.smk and data.smk send exactly
what the models accept, and the rule-side helpers (``vecflow.summary.workflow``) change nothing in the config.

The schema checks are those of ``tests/test_settings_models.py`` (``disagreements``); the rules are read from a
dry run of the demo config (tiny models, with a causal-only and a rag/re-ranking variant) and of
``config/dialogsum.yaml`` laid over ``config/config.yaml``.
"""

from __future__ import annotations

import json
import shlex
import shutil

import pytest

from test_settings_models import REPO, disagreements, validated
from vecflow.core.errors import VecflowError
from vecflow.data import settings as data_settings
from vecflow.summary import settings as summary_settings

S = summary_settings
MODELS = [S.Seq2SeqSettings, S.CausalSettings, S.ScoreSettings, S.ElmPredictSettings, S.ElmTrainSettings,
          data_settings.IngestSettings, data_settings.SynthesisSettings, data_settings.FilterSettings]
# the command each model is validated by, as the rules call it (predict-summarizer: the family's model)
COMMAND_MODEL = {"train-summarizer": S.Seq2SeqSettings.parse, "train-causal": S.CausalSettings.parse,
                 "predict-summarizer": S.predict_summarizer_settings, "score": S.ScoreSettings.parse,
                 "predict-elm": S.ElmPredictSettings.parse, "train-elm": S.ElmTrainSettings.parse,
                 "ingest-dialogues": data_settings.IngestSettings.parse,
                 "synthesize": data_settings.SynthesisSettings.parse,
                 "filter-summary": data_settings.FilterSettings.parse}


# ------------------------------------------------------------------------------------------- the schema
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_each_summary_settings_model_agrees_with_the_schema(model):
    assert disagreements(model) == []


def test_the_causal_family_is_the_shared_keys_with_its_own_laid_over_them():
    causal, seq2seq = S.CausalSettings(), S.Seq2SeqSettings()
    assert causal.base == "smollm2" and seq2seq.base == "minilm"
    assert causal.generation == {"num_beams": 1, "max_new_tokens": 64} and seq2seq.generation == {}
    assert causal.max_source_length == seq2seq.max_source_length == 512  # no causal default: the shared one
    assert not set(S.SEQ2SEQ_ONLY) & set(S.CausalSettings.model_fields)
    assert set(S.SEQ2SEQ_ONLY) == {"cross_attention_init", "encoder_lr_scale", "min_speakers"}
    with pytest.raises(VecflowError, match="settings: unknown key 'min_speakers'"):
        S.CausalSettings.parse({"min_speakers": 3})


def test_predict_summarizer_reads_the_family_from_the_keys():
    assert isinstance(S.predict_summarizer_settings({"batch_size": 2}), S.Seq2SeqSettings)
    assert isinstance(S.predict_summarizer_settings({"system_message": ""}), S.CausalSettings)
    with pytest.raises(VecflowError, match="settings: unknown key 'min_speakers'"):
        S.predict_summarizer_settings({"lora": {}, "min_speakers": 3})  # the causal model: no seq2seq-only key


def test_the_loop_reads_the_family_settings_and_the_elm_stage():
    loop = S.Seq2SeqSettings(max_minutes=5, evals=2).loop_settings()
    assert loop.max_minutes == 5 and loop.evals == 2 and loop.calibration_steps == 6
    elm = S.ElmTrainSettings(lm_training="lora", adapter_share=0.4, max_minutes=10)
    stage = elm.loop_settings(max_minutes=4.0, epochs=2)
    assert stage.max_minutes == 4.0 and stage.epochs == 2 and stage.bf16 == "auto" and stage.group_by_length
    assert stage.min_input_margin == 0.0 and stage.selection_metric == "rougeL"


def test_elm_study_parameters_are_validated_as_they_are_laid_over():
    run = S.ElmTrainSettings.parse({"learning_rate": 0.001, "variant": "rag"})
    tuned = run.with_params({"soft_tokens": 8})
    assert tuned.soft_tokens == 8 and tuned.learning_rate == 0.001 and tuned.variant == "rag"
    with pytest.raises(VecflowError, match="settings: elm.variants: not an elm setting"):
        run.with_params({"variants": ["rag"]})
    with pytest.raises(VecflowError, match="settings: field 'soft_tokens'"):
        run.with_params({"soft_tokens": 0})


# ------------------------------------------------------------------------------------------- the rules
def dry_run_commands(workdir, *args) -> list[list[str]]:
    from test_workflow import snakemake_cli

    result = snakemake_cli(workdir, "-n", "-p", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    commands = []
    for line in result.stdout.splitlines():
        if "vecflow" not in line:
            continue
        argv = shlex.split(line.removeprefix("Shell command: ").split(" > ")[0])
        if argv and argv[0] == "torchrun":
            argv = ["vecflow", *argv[argv.index("vecflow.cli") + 1:]]
        if len(argv) > 2 and argv[0] == "vecflow":
            commands.append(argv)
    return commands


def parsed_settings(commands: list[list[str]]) -> dict[str, list]:
    """Each summary-track command's --settings, parsed by its model (a key the rule and the model name
    differently fails here)."""
    seen: dict[str, list] = {}
    for argv in commands:
        if argv[1] in COMMAND_MODEL:
            sent = json.loads(argv[argv.index("--settings") + 1])
            seen.setdefault(argv[1], []).append(COMMAND_MODEL[argv[1]](sent))
    return seen


def scored_families(commands: list[list[str]]) -> list[str]:
    """The families of the one ``vecflow score`` job, each scored into --out-dir/NAME (fails on two jobs)."""
    [argv] = [argv for argv in commands if argv[1] == "score"]
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == "--family"]


def demo_config(tmp_path) -> dict:
    from test_workflow import tiny_config
    from tiny_models import make_tiny_causal_lm, make_tiny_encoder

    return tiny_config(make_tiny_encoder(tmp_path / "enc"), make_tiny_causal_lm(tmp_path / "lm"))


def test_the_summary_rules_send_what_each_model_accepts(tmp_path):
    """The demo config (both families, the plain ELM, the study) and a variant (the causal family alone with
    LoRA, no selection split, the rag ELM with re-ranking): every job's --settings parses with its command's
    model, and the models hold the config's values."""
    from test_workflow import write_workdir

    config = demo_config(tmp_path)
    commands = dry_run_commands(write_workdir(tmp_path / "demo", config))
    seen = parsed_settings(commands)
    assert scored_families(commands) == ["seq2seq", "causal", "retrieval", "elm"]  # one job scores them all
    assert set(seen) == set(COMMAND_MODEL)
    [seq2seq] = seen["train-summarizer"]
    [causal] = seen["train-causal"]
    assert seq2seq.base == "tiny" and causal.base == "tinylm" and causal.max_source_length == 64
    assert causal.batch_size == config["summarizer"]["causal"]["batch_size"] != seq2seq.batch_size
    assert {type(m) for m in seen["predict-summarizer"]} == {S.Seq2SeqSettings, S.CausalSettings}
    [elm] = seen["train-elm"]
    assert elm.variant == "plain" and elm.selection_split == "selection" and elm.bertscore_num_layers == 2
    assert seen["score"][0].bertscore.num_layers == 2 and seen["ingest-dialogues"][0].selection_dialogues == 4

    variant = json.loads(json.dumps(config))
    variant["summarizer"]["kind"] = "causal"
    variant["summarizer"]["causal"]["lora"] = {"enabled": True}
    variant["summary"]["selection_dialogues"] = 0
    variant["elm"].update({"variants": ["plain", "rag"], "rerank_candidates": 2})
    commands = dry_run_commands(write_workdir(tmp_path / "variant", variant))
    seen = parsed_settings(commands)
    assert scored_families(commands) == ["causal", "retrieval", "elm", "elm_rerank", "elm_rag", "elm_rag_rerank"]
    assert "train-summarizer" not in seen and seen["train-causal"][0].lora.enabled
    assert {m.variant for m in seen["train-elm"]} == {"plain", "rag"}
    assert {m.selection_split for m in seen["train-elm"]} == {"val"}
    assert {m.rerank_candidates for m in seen["predict-elm"]} == {2}


def test_the_dialogsum_config_sends_what_each_model_accepts(tmp_path):
    """config/dialogsum.yaml over config/config.yaml (the budgets, decoding candidates, length control)."""
    workdir = tmp_path / "dialogsum"
    (workdir / "config").mkdir(parents=True)
    for name in ("config.yaml", "dialogsum.yaml"):
        shutil.copy(REPO / "config" / name, workdir / "config" / name)
    seen = parsed_settings(dry_run_commands(workdir, "--configfile", "config/dialogsum.yaml"))
    assert set(seen) == set(COMMAND_MODEL)
    [causal] = seen["train-causal"]
    assert causal.length_control.mode == "instruction" and causal.decoding_candidates
    assert causal.selection_rule == "final_unless_significant" and causal.max_minutes == 45
    [seq2seq] = seen["train-summarizer"]
    assert seq2seq.encoder_lr_scale == 0.0 and seq2seq.max_minutes == 12
    assert {m.variant for m in seen["train-elm"]} == {"plain", "rag"}
    assert all(m.lm_training == "lora" and m.selection_split == "selection" for m in seen["train-elm"])
    assert seen["ingest-dialogues"][0].max_dialogues == {"train": 4000, "val": 0}  # val: the demo's cap lifted


# ------------------------------------------------------------------------------------------- the rule helpers
def test_the_rule_helpers_are_pure_functions_of_the_config(tmp_path):
    from vecflow.summary import workflow as summary_workflow

    config = validated(demo_config(tmp_path))
    before = json.dumps(config, sort_keys=True)
    R = config["results_dir"]
    assert summary_workflow.summarizer_kinds(config) == ["seq2seq", "causal"]
    assert summary_workflow.summarizer_kinds({**config, "summarizer": {**config["summarizer"], "kind": "causal"}}) \
        == ["causal"]
    assert summary_workflow.summarizer_dirs(config) == {"seq2seq": f"{R}/summarizer/model",
                                                        "causal": f"{R}/causal/model"}
    assert summary_workflow.summarizer_base(config, "causal") == "tinylm"
    assert summary_workflow.summarizer_base(config, "seq2seq") == "tiny"
    assert summary_workflow.dialogue_splits(config) == ["train", "val", "selection"]
    assert summary_workflow.selection_dialogues(config) == f"{R}/summary/dialogues/selection.jsonl"
    assert summary_workflow.synthesis_splits(config) == ["train", "val", "selection"]
    assert summary_workflow.elm_selection_split(config) == "selection"
    assert summary_workflow.synthesis_inputs(config)["val_embeddings"] == f"{R}/summary/synthesis/val_embeddings.safetensors"
    assert summary_workflow.elm_params_input(config) == [f"{R}/hpo/{config['hpo']['study']}/best_params.yaml"]
    seq2seq = S.Seq2SeqSettings.from_json(summary_workflow.summarizer_settings(config, "seq2seq"))
    causal = S.CausalSettings.from_json(summary_workflow.summarizer_settings(config, "causal"))
    assert seq2seq.received["max_source_length"] == 64 and causal.received["base"] == "tinylm"
    assert "min_speakers" in seq2seq.received and "min_speakers" not in causal.received
    rag = S.ElmTrainSettings.from_json(summary_workflow.elm_train_settings(config, "elm_rag"))
    assert rag.variant == "rag" and rag.selection_split == "selection" and rag.seed == config["seed"]
    assert S.ElmPredictSettings.from_json(summary_workflow.elm_predict_settings(config, "elm")).variant == "plain"
    assert S.ScoreSettings.from_json(summary_workflow.score_settings(config)).examples == config["evaluation"]["examples"]
    # what the one score_summaries job scores: the report shows each family's scores, the job writes them
    from vecflow.ship.workflow import report_inputs

    scored = summary_workflow.scored_families(config)
    assert scored == {"seq2seq": f"{R}/summary/dialogues/val.jsonl", "causal": f"{R}/summary/dialogues/val.jsonl",
                      "retrieval": f"{R}/summary/filtered/val_synthesis.jsonl",
                      "elm": f"{R}/summary/filtered/val_synthesis.jsonl"}
    assert {key.split("__")[1] for key in report_inputs(config) if key.startswith("scores__")} == set(scored)
    assert summary_workflow.score_family_args(config).split()[:4] == [
        "--family", "seq2seq", f"{R}/eval/seq2seq/predictions.jsonl", f"{R}/summary/dialogues/val.jsonl"]
    assert summary_workflow.scored_families({**config, "tracks": {**config["tracks"], "summary": False}}) == {}
    assert json.dumps(config, sort_keys=True) == before

    # no selection split carved (or an existing synthesis folder): checkpoints are chosen on val; no study
    config["summary"].update(selection_dialogues=0)
    config["tracks"]["hpo"] = False
    assert summary_workflow.dialogue_splits(config) == ["train", "val"]
    assert summary_workflow.selection_dialogues(config) == f"{R}/summary/dialogues/val.jsonl"
    assert summary_workflow.elm_selection_split(config) == "val" and summary_workflow.elm_params_input(config) == []
    config["summary"].update(selection_dialogues=4, synthesis_dir="/data/synthesis")
    assert summary_workflow.synthesis_splits(config) == ["train", "val"]
    assert summary_workflow.synthesis_inputs(config)["train_synthesis"] == "/data/synthesis/train_synthesis.jsonl"
