"""Synthesis data: the one module for its format (reader, writer, checks) and ``vecflow synthesize``.

A synthesis split is two files in one folder (seed 003's layout):

- ``{split}_synthesis.jsonl``: one record per line, ``{task_type, input_prompt_template, embedding_index,
  target_text?, source_id?, variation?, temperature?, top_p?, token_count?}``;
- ``{split}_embeddings.safetensors``: key ``embeddings``, N x D float, rows L2-normalised; record r's input is
  row ``r.embedding_index``.

Three stages touch it, all through this module: ``synthesize`` writes it (below: for dialogue i, row i is the
sentence-encoder vector of its text; each reference summary gives one ``summary`` record and a topic, when
there is one, a ``topic`` record), ``vecflow.data.filtering`` reads any task's records (``read_records``) and
writes the summary-only split, and the ELM (train and predict) reads that split with ``load_summary_split``,
which also checks what the filter guarantees: task ``summary``, exactly one ``<EMB>`` (where the ELM puts the
soft tokens made from the vector), a non-empty ``target_text`` and a ``source_id``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vecflow.core.errors import VecflowError, where
from vecflow.core.io import check_embeddings, iter_jsonl, load_tensors, require_fields, save_tensors, write_jsonl
from vecflow.core.settings import seed_everything
from vecflow.data.dialogues import load_dialogues, parse_split_args
from vecflow.data.settings import SynthesisSettings

EMB = "<EMB>"
NORM_TOLERANCE = 1e-3  # allowed |L2 norm - 1| of an embedding row (config: summary.norm_tolerance)
REQUIRED_FIELDS = {"task_type": str, "input_prompt_template": str, "embedding_index": int}
OPTIONAL_FIELDS = {
    "target_text": (str, type(None)),
    "source_id": str,
    "variation": int,
    "temperature": (int, float),
    "top_p": (int, float),
    "token_count": int,
}
DEFAULT_TEMPLATES = {
    "summary": "Summarize the conversation encoded here: <EMB>\nSummary:",
    "topic": "Name the topic of the conversation encoded here in a few words: <EMB>\nTopic:",
}


# --------------------------------------------------------------------------------------------- format


def split_paths(folder: str | Path, split: str) -> tuple[Path, Path]:
    """``(records, embeddings)`` paths of one split in ``folder``."""
    folder = Path(folder)
    return folder / f"{split}_synthesis.jsonl", folder / f"{split}_embeddings.safetensors"


def read_embeddings(path: Path, tolerance: float | None = NORM_TOLERANCE) -> np.ndarray:
    """The ``embeddings`` matrix: 2-D, non-empty, floating point, finite, every row of L2 norm 1 within
    ``tolerance`` (``None``: norms are not checked)."""
    matrix = load_tensors(path, required=["embeddings"])["embeddings"]
    if matrix.ndim != 2:
        raise VecflowError(f"{path}: tensor 'embeddings': expected a non-empty N x D matrix, got shape {matrix.shape}")
    return check_embeddings(matrix, path, tolerance=tolerance)


def check_record(record: dict, path: Path, lineno: int, num_embeddings: int) -> None:
    """Field types of one record (any task), and an ``embedding_index`` inside the matrix."""
    for field in ("embedding_index", "variation", "token_count"):
        if isinstance(record.get(field), bool):  # JSON true/false would pass isinstance(..., int)
            raise VecflowError(f"{where(path, lineno, field)}: expected int, got bool")
    require_fields(record, REQUIRED_FIELDS, path, lineno)
    require_fields(record, {k: kind for k, kind in OPTIONAL_FIELDS.items() if k in record}, path, lineno)
    index = record["embedding_index"]
    if not 0 <= index < num_embeddings:
        raise VecflowError(
            f"{where(path, lineno, 'embedding_index')}: {index} is out of range (the embeddings have {num_embeddings} rows)"
        )


def read_records(path: Path, num_embeddings: int) -> list[tuple[int, dict]]:
    """``(line number, record)`` for every line, each checked by ``check_record`` (any task type)."""
    rows = []
    for lineno, record in iter_jsonl(path):
        check_record(record, path, lineno, num_embeddings)
        rows.append((lineno, record))
    return rows


@dataclass(frozen=True)
class SynthesisRow:
    """One record of a summary-only split, as the ELM uses it."""

    template: str
    embedding_index: int
    target_text: str
    source_id: str


def summary_row(record: dict, path: Path, lineno: int) -> SynthesisRow:
    """A checked record of a summary-only split (``filter-summary``'s output) as a ``SynthesisRow``."""
    require_fields(record, {"target_text": str, "source_id": str}, path, lineno)
    if record["task_type"] != "summary":
        raise VecflowError(f"{where(path, lineno, 'task_type')}: expected 'summary', got '{record['task_type']}'; "
                           f"run filter-summary on the synthesis data first")
    if record["input_prompt_template"].count(EMB) != 1:
        raise VecflowError(f"{where(path, lineno, 'input_prompt_template')}: must contain '{EMB}' exactly once")
    if not record["target_text"].strip():
        raise VecflowError(f"{where(path, lineno, 'target_text')}: empty")
    return SynthesisRow(record["input_prompt_template"], record["embedding_index"], record["target_text"],
                        record["source_id"])


def source_vectors(records_path: str | Path) -> dict[str, np.ndarray]:
    """``source_id -> embedding`` of a synthesis split given by its ``{split}_synthesis.jsonl`` path (the
    embeddings file beside it); every record of a source shares its row."""
    records_path = Path(records_path)
    if not records_path.name.endswith("_synthesis.jsonl"):
        raise VecflowError(f"{records_path}: expected a {{split}}_synthesis.jsonl file")
    embeddings = read_embeddings(records_path.with_name(records_path.name.replace("_synthesis.jsonl",
                                                                                  "_embeddings.safetensors")))
    out: dict[str, np.ndarray] = {}
    for lineno, record in read_records(records_path, len(embeddings)):
        if "source_id" in record:
            out.setdefault(record["source_id"], embeddings[record["embedding_index"]].astype(np.float32))
    return out


def load_summary_split(folder: str | Path, split: str) -> tuple[list[SynthesisRow], np.ndarray]:
    """Rows and embeddings (float32) of a summary-only split ``folder/{split}_*``, every check applied."""
    rows_path, embeddings_path = split_paths(folder, split)
    embeddings = read_embeddings(embeddings_path)
    rows = [summary_row(record, rows_path, lineno) for lineno, record in read_records(rows_path, len(embeddings))]
    if not rows:
        raise VecflowError(f"{rows_path}: no rows")
    return rows, embeddings.astype(np.float32)


def write_split(rows_path: Path, embeddings_path: Path, records: list[dict], embeddings: np.ndarray,
                metadata: dict[str, str] | None = None) -> None:
    """Write records and their embeddings (float32, key ``embeddings``); every index must point into the matrix."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    for i, record in enumerate(records, start=1):  # a writer bug, never a user error: fail before writing
        check_record(record, rows_path, i, len(embeddings))
    write_jsonl(rows_path, records)
    save_tensors(embeddings_path, {"embeddings": embeddings}, metadata=metadata)


# ----------------------------------------------------------------------------------- vecflow synthesize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow synthesize",
                                     description="Synthesis records and one embedding per dialogue, for every split.")
    parser.add_argument("--split", required=True, action="append", metavar="NAME=PATH",
                        help="a split name and its dialogues JSONL; repeat for each split (one encoder load for all)")
    parser.add_argument("--encoder", required=True, help="sentence-encoder HF folder")
    parser.add_argument("--settings", required=True, type=SynthesisSettings.from_json,
                        help="the summary config section as JSON (vecflow.data.settings.SynthesisSettings)")
    parser.add_argument("--out-dir", required=True,
                        help="writes DIR/{split}_synthesis.jsonl and DIR/{split}_embeddings.safetensors")
    args = parser.parse_args(argv)
    counts = synthesize(parse_split_args(args.split), Path(args.encoder), args.settings, Path(args.out_dir))
    for split, count in counts.items():
        print(f"[vecflow] {split}: {count['records']} records over {count['embeddings']} dialogue embeddings",
              flush=True)
    return 0


def synthesize(splits: dict[str, Path], encoder_dir: Path, settings: SynthesisSettings | dict,
               out_dir: Path) -> dict[str, dict]:
    """Every split's records and embeddings in ``out_dir`` (``split_paths``), the encoder loaded once.

    All dialogue files are read and checked before the encoder loads or anything is written; each split is
    encoded on its own, so its vectors do not depend on the other splits. ``settings`` as a dict (a direct
    call) is validated here.
    """
    settings = settings if isinstance(settings, SynthesisSettings) else SynthesisSettings.parse(settings)
    seed_everything(settings.seed)
    templates = prompt_templates(settings)
    dialogues = {split: load_dialogues(path) for split, path in splits.items()}
    encoder = load_encoder(encoder_dir, settings)
    counts = {}
    for split, rows in dialogues.items():
        records = build_records(rows, templates)
        embeddings = embed_dialogues(rows, encoder, settings)
        write_split(*split_paths(out_dir, split), records, embeddings,
                    metadata={"encoder": str(encoder_dir), "dialogues": str(splits[split])})
        counts[split] = {"records": len(records), "embeddings": len(embeddings)}
    return counts


def prompt_templates(settings: SynthesisSettings) -> dict[str, str]:
    """Default templates overridden by ``settings.templates`` (the schema checks the tasks and ``<EMB>``)."""
    return {**DEFAULT_TEMPLATES, **(settings.templates or {})}


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


def load_encoder(encoder_dir: Path, settings: SynthesisSettings):
    """The sentence encoder the dialogues are embedded with (``settings``: device, input length)."""
    from vecflow.core.encoder import SentenceEncoder

    return SentenceEncoder(encoder_dir, device=settings.device, max_length=settings.encoder_max_length)


def embed_dialogues(dialogues: list[dict], encoder, settings: SynthesisSettings) -> np.ndarray:
    """Row i = the L2-normalised encoder vector of dialogue i's text (float32, N x D)."""
    texts = [dialogue["dialogue"] for dialogue in dialogues]
    return encoder.encode(texts, batch_size=settings.embed_batch_size, progress=True).astype(np.float32)
