"""Predictions paired with the right references: one prediction per eval dialogue, never two, never one for a
dialogue outside the eval split, with that dialogue's own references (issue 23).

A predictions file whose ids are all the same, or whose references are shifted by one row, still gives ROUGE
numbers (even an own-vs-shuffled margin that passes a gate); ``vecflow score --eval-split`` refuses it here, and
the predict steps check what they write with ``paired_rows``. Every refusal is one line naming the file, the line
and the id.

The eval split is the file the predict step read: a dialogues JSONL (``ingest-dialogues``' output: ``id``,
``summaries``) or, for the ELM, a summary-only synthesis split (``source_id``, ``target_text``: one line per
reference, read by ``vecflow.data.synthesis``).
"""

from __future__ import annotations

from pathlib import Path

from vecflow.core.errors import VecflowError, where
from vecflow.core.io import iter_jsonl


def eval_split_references(path: str | Path) -> dict[str, tuple[int, list[str]]]:
    """``id -> (first line, references)`` of an eval split, in file order."""
    path = Path(path)
    first = next(iter_jsonl(path), None)
    if first is None:
        raise VecflowError(f"{path}: no rows (an empty eval split)")
    split: dict[str, tuple[int, list[str]]] = {}
    if "source_id" in first[1]:  # a summary-only synthesis split (the ELM's)
        from vecflow.data.synthesis import REQUIRED_FIELDS, summary_row
        from vecflow.core.io import require_fields

        for lineno, record in iter_jsonl(path):
            require_fields(record, REQUIRED_FIELDS, path, lineno)
            row = summary_row(record, path, lineno)
            split.setdefault(row.source_id, (lineno, []))[1].append(row.target_text)
        return split
    from vecflow.data.dialogues import read_dialogues  # refuses duplicate ids itself, naming both lines

    for lineno, record in read_dialogues(path):
        split[record["id"]] = (lineno, record["summaries"])
    return split


def unique_ids(rows: list[tuple[int, str, list[str]]], path: str | Path) -> dict[str, int]:
    """{id: line} of ``(line, id, references)`` rows; an id given twice is one line naming file, line and id."""
    seen: dict[str, int] = {}
    for lineno, row_id, _ in rows:
        if row_id in seen:
            raise VecflowError(f"{where(path, lineno, 'id')}: duplicate id '{row_id}' (first at line {seen[row_id]}); "
                               f"each eval dialogue needs exactly one prediction: re-run the predict step")
        seen[row_id] = lineno
    return seen


def check_pairs(rows: list[tuple[int, str, list[str]]], path: str | Path, split_path: str | Path) -> None:
    """``rows`` = ``(line, id, references)`` of a predictions file: each id once, each one of the eval split with
    that id's references, and every eval-split id present; else one line naming file, line and id."""
    split = eval_split_references(split_path)
    seen = unique_ids(rows, path)
    for lineno, row_id, references in rows:
        if row_id not in split:
            raise VecflowError(f"{where(path, lineno, 'id')}: id '{row_id}' is not in the eval split {split_path}; "
                               f"score predictions of that split's dialogues only")
        split_line, expected = split[row_id]
        if list(references) != list(expected):
            raise VecflowError(f"{where(path, lineno, 'references')}: id '{row_id}': not that dialogue's references "
                               f"(see {split_path}:{split_line}): predictions and references are paired wrongly; "
                               f"re-run the predict step")
    missing = [(line, split_id) for split_id, (line, _) in split.items() if split_id not in seen]
    if missing:
        line, split_id = missing[0]
        raise VecflowError(f"{where(split_path, line, 'id')}: id '{split_id}' has no prediction in {path} "
                           f"({len(missing)} of {len(split)} eval dialogues have none); re-run the predict step")


def paired_rows(ids: list[str], predictions: list[str], references: list[list[str]], source: str | Path) -> list[dict]:
    """The predictions JSONL rows a predict step writes, checked first: as many predictions as eval dialogues
    (``zip`` would silently drop the rest) and every id once."""
    if not len(ids) == len(predictions) == len(references):
        raise VecflowError(f"{source}: {len(ids)} eval dialogues but {len(predictions)} predictions and "
                           f"{len(references)} reference lists: not one-to-one, nothing written")
    seen: set[str] = set()
    for row_id in ids:
        if row_id in seen:
            raise VecflowError(f"{source}: id '{row_id}' twice among the eval dialogues: not one-to-one, nothing "
                               f"written; give each dialogue its own id")
        seen.add(row_id)
    return [{"id": i, "prediction": p, "references": r} for i, p, r in zip(ids, predictions, references)]
