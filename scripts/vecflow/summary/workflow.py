"""What the summary-track rules (``workflow/rules/summary.smk``, and the dialogue rules of ``data.smk``) ask of the
config: the families to train, the splits, where each family's model is, and each job's ``--settings``.

Pure functions of the (schema-validated) config: nothing here changes it. Each ``*_settings`` function returns
the JSON text its rule passes as ``--settings``: a config section with the global seed, device and tracking (and a
job's own values: the ELM's variant), whose fields are those of the command's model in
``vecflow.summary.settings`` (``vecflow.data.settings`` for the dialogue commands).
"""

from __future__ import annotations

from vecflow.core.config_checks import ELM_VARIANTS, elm_eval_families
from vecflow.core.settings import job_globals, settings_json
from vecflow.core.workflow import study_dir
from vecflow.summary.settings import SEQ2SEQ_ONLY

# where each summarizer family's trained model is, under results_dir
SUMMARIZER_FOLDERS = {"seq2seq": "summarizer/model", "causal": "causal/model"}


# ---------------------------------------------------------------------------------------------- families
def summarizer_kinds(config: dict) -> list[str]:
    """The summarizer families trained by train_summarizer / train_causal (summarizer.kind: one or a list)."""
    kind = config["summarizer"]["kind"]
    return [kind] if isinstance(kind, str) else list(kind)


def summarizer_dirs(config: dict) -> dict[str, str]:
    """Each summarizer family's model folder, {seq2seq: ..., causal: ...}."""
    return {family: f"{config['results_dir']}/{folder}" for family, folder in SUMMARIZER_FOLDERS.items()}


def summarizer_base(config: dict, family: str) -> str:
    """The model a seq2seq or causal summarizer starts from (a models: entry or an HF folder)."""
    section = config["summarizer"]
    return section["causal"]["base"] if family == "causal" else section["base"]


def scored_families(config: dict) -> dict[str, str]:
    """The families the one score_summaries job scores, each with the eval split its predictions are for: the
    trained summarizers (val dialogues), then the retrieval baseline and each ELM family scored (eval/<family>,
    eval/<family>_rerank; the val synthesis split). Empty when the summary track is off."""
    if not config["tracks"]["summary"]:
        return {}
    R = config["results_dir"]
    families = {family: f"{R}/summary/dialogues/val.jsonl" for family in summarizer_kinds(config)}
    for family in ["retrieval", *elm_eval_families(config)]:
        families[family] = f"{R}/summary/filtered/val_synthesis.jsonl"
    return families


def score_family_args(config: dict) -> str:
    """``vecflow score``'s --family NAME PREDICTIONS EVAL_SPLIT, one per scored family (outputs under
    results_dir/eval, the --out-dir)."""
    R = config["results_dir"]
    return " ".join(f"--family {family} {R}/eval/{family}/predictions.jsonl {split}"
                    for family, split in scored_families(config).items())


# ---------------------------------------------------------------------------------------------- splits
def dialogue_splits(config: dict) -> list[str]:
    """The splits ingest writes: one per input split, plus the selection split carved from train when asked."""
    carved = ["selection"] if config["summary"]["selection_dialogues"] else []
    return list(config["summary"]["splits"]) + carved


def selection_dialogues(config: dict) -> str:
    """The dialogues checkpoints are chosen on: the selection split when there is one, else val."""
    split = "selection" if config["summary"]["selection_dialogues"] else "val"
    return f"{config['results_dir']}/summary/dialogues/{split}.jsonl"


def synthesis_dir(config: dict) -> str:
    """The synthesis folder filter_summary reads: summary.synthesis_dir, or the pipeline's own."""
    return config["summary"]["synthesis_dir"] or f"{config['results_dir']}/summary/synthesis"


def synthesis_splits(config: dict) -> list[str]:
    """Splits the ELM data has: train and val, plus the selection split when ingest carved one (and the
    synthesis is the pipeline's own, not an existing folder given as summary.synthesis_dir)."""
    summary = config["summary"]
    carved = summary["selection_dialogues"] and not summary["synthesis_dir"]
    return ["train", "val"] + (["selection"] if carved else [])


def synthesis_inputs(config: dict) -> dict[str, str]:
    """filter_summary's inputs: {<split>_synthesis: .jsonl, <split>_embeddings: .safetensors} per split."""
    base = synthesis_dir(config)
    return {f"{split}_{kind.split('.')[0]}": f"{base}/{split}_{kind}"
            for split in synthesis_splits(config) for kind in ("synthesis.jsonl", "embeddings.safetensors")}


def elm_selection_split(config: dict) -> str:
    """The ELM (and its study) choose checkpoints and parameters on this split, never on val when possible."""
    return "selection" if "selection" in synthesis_splits(config) else "val"


# ---------------------------------------------------------------------------------------------- the ELM
def elm_study_on(config: dict) -> bool:
    """The ELM study runs (tracks.hpo and hpo.target elm): train_elm reads its best parameters."""
    return bool(config["tracks"]["hpo"] and config["hpo"]["target"] == "elm")


def elm_params_input(config: dict) -> list[str]:
    """The study's best_params.yaml that train_elm lays over the elm section (none without the study)."""
    if not elm_study_on(config):
        return []
    return [f"{study_dir(config)}/best_params.yaml"]


def elm_bertscore_settings(config: dict) -> dict:
    """What train-elm (and each study trial) gets besides the elm section: the BERTScore model's layers and
    batch size (selection by bertscore_f1) and the split it selects on."""
    bertscore = config["evaluation"]["bertscore"]
    return {"bertscore_num_layers": bertscore["num_layers"], "bertscore_batch_size": bertscore["batch_size"],
            "selection_split": elm_selection_split(config)}


# ---------------------------------------------------------------------------------------------- --settings
def dialogue_data_settings(config: dict) -> str:
    """``vecflow ingest-dialogues``, ``synthesize`` and ``filter-summary`` (vecflow.data.settings): the summary
    section."""
    return settings_json({**job_globals(config), **config["summary"]})


def summarizer_settings(config: dict, family: str) -> str:
    """``vecflow train-summarizer`` / ``train-causal`` (and ``predict-summarizer`` of the family): the shared
    summarizer keys, with summarizer.causal laid over them for causal (Seq2SeqSettings, CausalSettings). The
    seq2seq-only keys are left out of the causal job, so changing them does not retrain the causal model."""
    node = {key: value for key, value in config["summarizer"].items() if key not in ("kind", "causal")}
    if family == "causal":
        node = {key: value for key, value in node.items() if key not in SEQ2SEQ_ONLY}
        node.update(config["summarizer"]["causal"])
    return settings_json({**job_globals(config), **node})


def score_settings(config: dict) -> str:
    """``vecflow score`` (ScoreSettings): the evaluation section."""
    return settings_json({**job_globals(config), **config["evaluation"]})


def elm_predict_settings(config: dict, family: str) -> str:
    """``vecflow predict-elm`` (ElmPredictSettings) for an ELM family (elm, elm_rag): the elm section and the
    family's variant."""
    return settings_json({**job_globals(config), **config["elm"], "variant": ELM_VARIANTS[family]})


def elm_train_settings(config: dict, family: str) -> str:
    """``vecflow train-elm`` (ElmTrainSettings) for an ELM family: the elm section, the family's variant, the
    BERTScore settings and the selection split."""
    return settings_json({**job_globals(config), **config["elm"], "variant": ELM_VARIANTS[family],
                     **elm_bertscore_settings(config)})
