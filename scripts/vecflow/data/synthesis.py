"""``vecflow synthesize``: multi-task synthesis records (seed-003 format) plus one embedding per dialogue.

For dialogue i, row i of ``embeddings`` is the sentence-encoder vector of its text. Each reference summary
gives one ``summary`` record and a topic, when there is one, gives one ``topic`` record; all of them point at
row i through ``embedding_index``. The prompt templates contain ``<EMB>``, where the ELM puts the soft tokens
made from that vector.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vecflow.data.dialogues import load_dialogues
from vecflow.core.errors import VecflowError
from vecflow.core.io import save_tensors, write_jsonl
from vecflow.core.settings import seed_everything, settings_arg

EMB = "<EMB>"
DEFAULT_TEMPLATES = {
    "summary": "Summarize the conversation encoded here: <EMB>\nSummary:",
    "topic": "Name the topic of the conversation encoded here in a few words: <EMB>\nTopic:",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow synthesize", description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", required=True, help="dialogues JSONL (one split)")
    parser.add_argument("--encoder", required=True, help="sentence-encoder HF folder")
    parser.add_argument("--settings", required=True, type=settings_arg, help="the summary config section as JSON")
    parser.add_argument("--out-jsonl", required=True, help="synthesis JSONL")
    parser.add_argument("--out-embeddings", required=True, help="embeddings safetensors (key 'embeddings')")
    args = parser.parse_args(argv)
    count = synthesize(Path(args.dialogues), Path(args.encoder), args.settings, Path(args.out_jsonl),
                       Path(args.out_embeddings))
    print(f"[vecflow] {count['records']} records over {count['embeddings']} dialogue embeddings", flush=True)
    return 0


def synthesize(dialogues_path: Path, encoder_dir: Path, settings: dict, out_jsonl: Path, out_embeddings: Path) -> dict:
    seed_everything(int(settings.get("seed", 0)))
    templates = prompt_templates(settings)
    dialogues = load_dialogues(dialogues_path)
    records = build_records(dialogues, templates)
    embeddings = embed_dialogues(dialogues, encoder_dir, settings)
    write_jsonl(out_jsonl, records)
    save_tensors(out_embeddings, {"embeddings": embeddings},
                 metadata={"encoder": str(encoder_dir), "dialogues": str(dialogues_path)})
    return {"records": len(records), "embeddings": len(embeddings)}


def prompt_templates(settings: dict) -> dict[str, str]:
    """Default templates overridden by ``settings['templates']``; each must contain ``<EMB>``."""
    overrides = settings.get("templates") or {}
    if not isinstance(overrides, dict):
        raise VecflowError(f"settings: 'templates' must be a mapping task -> template, got {type(overrides).__name__}")
    unknown = sorted(set(overrides) - set(DEFAULT_TEMPLATES))
    if unknown:
        raise VecflowError(f"settings: 'templates.{unknown[0]}': unknown task (known: {', '.join(DEFAULT_TEMPLATES)})")
    templates = {**DEFAULT_TEMPLATES, **overrides}
    for task, template in templates.items():
        if not isinstance(template, str) or EMB not in template:
            raise VecflowError(f"settings: 'templates.{task}': must be a string containing '{EMB}'")
    return templates


def build_records(dialogues: list[dict], templates: dict[str, str]) -> list[dict]:
    """One ``summary`` record per reference summary and one ``topic`` record per topic, in dialogue order."""
    records = []
    for index, dialogue in enumerate(dialogues):
        for variation, summary in enumerate(dialogue["summaries"]):
            records.append(_record("summary", templates, index, summary, dialogue["id"], variation))
        if dialogue.get("topic"):
            records.append(_record("topic", templates, index, dialogue["topic"], dialogue["id"], 0))
    return records


def _record(task: str, templates: dict[str, str], index: int, target: str, source_id: str, variation: int) -> dict:
    return {
        "task_type": task,
        "input_prompt_template": templates[task],
        "embedding_index": index,
        "target_text": target,
        "source_id": source_id,
        "variation": variation,
    }


def embed_dialogues(dialogues: list[dict], encoder_dir: Path, settings: dict) -> np.ndarray:
    """Row i = the L2-normalised encoder vector of dialogue i's text (float32, N x D)."""
    from vecflow.core.encoder import SentenceEncoder

    batch_size = int(settings.get("embed_batch_size", 32))
    if batch_size < 1:
        raise VecflowError(f"settings: 'embed_batch_size': expected a positive integer, got {batch_size}")
    encoder = SentenceEncoder(encoder_dir, device=settings.get("device", "auto"),
                              max_length=int(settings.get("encoder_max_length", 256)))
    texts = [dialogue["dialogue"] for dialogue in dialogues]
    return encoder.encode(texts, batch_size=batch_size, progress=True).astype(np.float32)
