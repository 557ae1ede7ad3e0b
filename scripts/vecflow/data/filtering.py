"""``vecflow filter-summary``: keep the summary task of multi-task synthesis data (seed 003's filter).

For each split, reads ``{split}_synthesis.jsonl`` and ``{split}_embeddings.safetensors`` (key ``embeddings``,
N x D float, rows L2-normalised), keeps records with ``task_type == "summary"`` and a non-empty
``target_text``, keeps only the embedding rows those records use (in order of first use) and rewrites
``embedding_index`` to point into the new, dense matrix. A template's placeholder may be ``<EMB>`` or
seed 003's ``{text}`` (``"Summarize the following text:\n\n{text}\n\nSummary:"``); ``{text}`` is rewritten
to ``<EMB>``, so that every output template has exactly one ``<EMB>``. Dropped rows are counted by reason; an
``embedding_index`` outside the matrix is an error, never a silent drop. Nothing is written unless every
split is valid. The files' format (reader, writer, checks) is ``vecflow.data.synthesis``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from vecflow.core.errors import VecflowError, where
from vecflow.core.io import write_json
from vecflow.data.settings import FilterSettings
from vecflow.data.synthesis import EMB, read_embeddings, read_records, split_paths, write_split

KEEP_TASK = "summary"
# seed-003 files write the placeholder as a format field; it is normalised to <EMB> on the way in
TEXT_PLACEHOLDER = "{text}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow filter-summary", description=__doc__.splitlines()[0])
    parser.add_argument("--in-dir", required=True, help="folder with {split}_synthesis.jsonl + {split}_embeddings.safetensors")
    parser.add_argument("--splits", required=True, help="comma-separated split names, e.g. train,val")
    parser.add_argument("--settings", required=True, type=FilterSettings.from_json,
                        help="the summary config section as JSON (vecflow.data.settings.FilterSettings)")
    parser.add_argument("--out-dir", required=True, help="writes the filtered files with the same names")
    parser.add_argument("--stats", required=True, help="stats JSON path")
    args = parser.parse_args(argv)
    stats = filter_summary(Path(args.in_dir), parse_splits(args.splits), args.settings, Path(args.out_dir),
                           Path(args.stats))
    for split, numbers in stats["splits"].items():
        print(f"[vecflow] {split}: kept {numbers['rows_kept']} of {numbers['rows_in']} rows", flush=True)
    return 0


def parse_splits(text: str) -> list[str]:
    splits = [part.strip() for part in text.split(",")]
    if not all(splits):
        raise VecflowError(f"--splits '{text}': empty split name")
    if len(set(splits)) != len(splits):
        raise VecflowError(f"--splits '{text}': a split is named twice")
    return splits


def filter_summary(in_dir: Path, splits: list[str], settings: FilterSettings | dict, out_dir: Path,
                   stats_path: Path) -> dict:
    """Filter every split in memory first, then write all outputs (nothing is written on an error).
    ``settings`` as a dict (a direct call) is validated here."""
    settings = settings if isinstance(settings, FilterSettings) else FilterSettings.parse(settings)
    tolerance = float(settings.norm_tolerance)
    for split in splits:
        for path in split_paths(in_dir, split):
            if not path.is_file():
                raise VecflowError(f"{path}: file not found (split '{split}')")
    results = {split: filter_split(*split_paths(in_dir, split), tolerance) for split in splits}
    for split, (records, embeddings, _) in results.items():
        write_split(*split_paths(out_dir, split), records, embeddings)
    stats = {"task_type": KEEP_TASK, "norm_tolerance": tolerance,
             "splits": {split: split_stats for split, (_, _, split_stats) in results.items()}}
    write_json(stats_path, stats)
    return stats


def filter_split(synthesis_path: Path, embeddings_path: Path, tolerance: float) -> tuple[list[dict], np.ndarray, dict]:
    """Return the kept records (re-indexed), their dense embedding matrix and the split's stats."""
    embeddings = read_embeddings(embeddings_path, tolerance)
    kept, dropped, rows_in, normalised = [], Counter(), 0, 0
    for lineno, record in read_records(synthesis_path, num_embeddings=len(embeddings)):
        rows_in += 1
        reason = drop_reason(record)
        if reason:
            dropped[reason] += 1
        else:
            template = normalise_template(record["input_prompt_template"], synthesis_path, lineno)
            normalised += template != record["input_prompt_template"]
            record["input_prompt_template"] = template
            # seed-003 records carry no source id: the original embedding row identifies the source text
            record.setdefault("source_id", f"{synthesis_path.stem}:{record['embedding_index']}")
            kept.append(record)
    if not kept:
        found = ", ".join(f"{reason} x{n}" for reason, n in sorted(dropped.items())) or "empty file"
        raise VecflowError(f"{synthesis_path}: no usable '{KEEP_TASK}' rows (dropped: {found})")
    records, used_rows = reindex(kept)
    stats = {
        "rows_in": rows_in,
        "rows_kept": len(records),
        "rows_dropped": rows_in - len(records),
        "dropped": dropped_by_reason(dropped),
        "embeddings_in": int(embeddings.shape[0]),
        "embeddings_kept": len(used_rows),
        "dim": int(embeddings.shape[1]),
        "templates_normalised": normalised,
    }
    return records, embeddings[used_rows].astype(np.float32), stats


def normalise_template(template: str, path: Path, lineno: int) -> str:
    """The template with ``{text}`` written as ``<EMB>``; exactly one placeholder must remain."""
    normalised = template.replace(TEXT_PLACEHOLDER, EMB)
    count = normalised.count(EMB)
    if count != 1:
        found = "none" if count == 0 else f"{count}"
        raise VecflowError(
            f"{where(path, lineno, 'input_prompt_template')}: needs exactly one placeholder '{EMB}' or "
            f"'{TEXT_PLACEHOLDER}' (found {found}); put one where the dialogue's embedding goes"
        )
    return normalised


def drop_reason(record: dict) -> str | None:
    """Why a record is not kept (``task_type:<name>``, ``missing_target_text``, ``empty_target_text``), or None."""
    if record["task_type"] != KEEP_TASK:
        return f"task_type:{record['task_type']}"
    if record.get("target_text") is None:
        return "missing_target_text"
    if not record["target_text"].strip():
        return "empty_target_text"
    return None


def reindex(records: list[dict]) -> tuple[list[dict], list[int]]:
    """Point ``embedding_index`` into a dense matrix holding only the rows used, in order of first use."""
    new_index: dict[int, int] = {}
    out = []
    for record in records:
        old = record["embedding_index"]
        new_index.setdefault(old, len(new_index))
        out.append({**record, "embedding_index": new_index[old]})
    return out, list(new_index)


def dropped_by_reason(dropped: Counter) -> dict:
    """``{"task_type": {name: n}, "missing_target_text": n, "empty_target_text": n}``."""
    other_tasks = {reason.split(":", 1)[1]: n for reason, n in sorted(dropped.items()) if reason.startswith("task_type:")}
    return {
        "task_type": other_tasks,
        "missing_target_text": dropped.get("missing_target_text", 0),
        "empty_target_text": dropped.get("empty_target_text", 0),
    }
