"""Dialogues JSONL: the one reader (and the ``vecflow ingest-dialogues`` writer) of this format.

Accepted input records (one JSON object per line):

- vecflow:   ``{"id", "dialogue", "summary": str | "summaries": [str, ...], "topic"?}``
- DialogSum: ``{"fname", "dialogue", "summary", "topic"}``; its test split has ``summary1..3`` (and ``topic1..3``).

Every record becomes ``{"id", "dialogue", "summaries": [...], "topic": str | None}``. Texts are stripped and
line endings normalised; speaker tags (``#Person1#`` ... ``#PersonN#``) are kept verbatim. An id may appear
only once per split and in one split only. ``max_dialogues: {split: N}`` keeps a seeded subset of N dialogues
in file order.

``ingest-dialogues`` validates the users' files and writes them normalised (``{split}.jsonl``); every later
stage (synthesis, the summarizers' train and predict, dialogues as LVM articles, the benchmarks) reads those
files with ``load_dialogues`` here, so the checks and their file:line messages are the same everywhere.
``need_summaries=False`` accepts records without summaries (``summaries: []``): dialogues to summarize.
"""

from __future__ import annotations

import argparse
import random
import re
from collections import Counter
from pathlib import Path

from vecflow.core.errors import VecflowError, where
from vecflow.core.io import iter_jsonl, write_json, write_jsonl
from vecflow.data.settings import IngestSettings

SPEAKER_AT_LINE_START = re.compile(r"^\s*(#Person\d+#)\s*:", re.MULTILINE)
NUMBERED_SUMMARY = re.compile(r"^summary(\d+)$")
SPLIT_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
TOP_TOPICS = 20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow ingest-dialogues", description=__doc__.splitlines()[0])
    parser.add_argument("--split", required=True, action="append", metavar="NAME=PATH",
                        help="a split name and its JSONL file; repeat for each split")
    parser.add_argument("--settings", required=True, type=IngestSettings.from_json,
                        help="the summary config section as JSON (vecflow.data.settings.IngestSettings)")
    parser.add_argument("--out-dir", required=True, help="writes DIR/{split}.jsonl")
    parser.add_argument("--stats", required=True, help="stats JSON path")
    args = parser.parse_args(argv)
    stats = ingest_dialogues(parse_split_args(args.split), args.settings, Path(args.out_dir), Path(args.stats))
    for split, numbers in stats["splits"].items():
        print(f"[vecflow] {split}: {numbers['dialogues']} of {numbers['dialogues_in_file']} dialogues", flush=True)
    return 0


def parse_split_args(values: list[str]) -> dict[str, Path]:
    """``["train=a.jsonl", "val=b.jsonl"]`` -> ``{"train": Path("a.jsonl"), ...}`` (order kept)."""
    splits: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not SPLIT_NAME.match(name) or not path:
            raise VecflowError(f"--split '{value}': expected NAME=PATH with NAME made of letters, digits, _ or -")
        if name in splits:
            raise VecflowError(f"--split: split '{name}' given twice")
        splits[name] = Path(path)
    return splits


def ingest_dialogues(split_paths: dict[str, Path], settings: IngestSettings | dict, out_dir: Path,
                     stats_path: Path) -> dict:
    """Load and check every split, then write ``out_dir/{split}.jsonl`` and the stats (nothing on error).
    ``settings`` as a dict (a direct call) is validated here."""
    settings = settings if isinstance(settings, IngestSettings) else IngestSettings.parse(settings)
    caps = _max_dialogues(settings, split_paths)
    seed = settings.seed
    loaded = {split: read_dialogues(path) for split, path in split_paths.items()}
    check_no_shared_ids(loaded, split_paths)
    in_file = {split: len(rows) for split, rows in loaded.items()}
    leakage = None
    if "train" in loaded and len(loaded) > 1:
        loaded["train"], leakage = drop_repeated_dialogues(loaded, settings.leakage_prefix_chars)
        if not loaded["train"]:
            raise VecflowError(f"{split_paths['train']}: every training dialogue repeats an eval dialogue")
    kept = {split: seeded_subset([r for _, r in rows], caps.get(split), seed, split) for split, rows in loaded.items()}
    selection = settings.selection_dialogues
    if selection:
        kept["train"], kept["selection"] = carve_selection(kept["train"], selection, seed, split_paths["train"])
        in_file["selection"], split_paths = in_file["train"], {**split_paths, "selection": split_paths["train"]}
    stats = {
        "splits": {split: dialogue_stats(rows, in_file[split], split_paths[split]) for split, rows in kept.items()},
        "seed": seed,
        "max_dialogues": caps,
        "selection": {"from": "train", "dialogues": selection, "id_disjoint": True} if selection else None,
        "leakage": leakage,
    }
    for split, rows in kept.items():
        write_jsonl(out_dir / f"{split}.jsonl", rows)
    write_json(stats_path, stats)
    return stats


def dialogue_key(text: str, prefix_chars: int) -> str:
    """What counts as the same dialogue: its first ``prefix_chars`` characters, lower-cased, whitespace collapsed
    (0 = the whole text). DialogSum repeats dialogues across splits with different ids and trailing edits."""
    key = " ".join(text.lower().split())
    return key[:prefix_chars] if prefix_chars > 0 else key


def drop_repeated_dialogues(loaded: dict[str, list[tuple[int, dict]]], prefix_chars: int):
    """Training rows without the dialogues that an eval split repeats, and the counts for ``stats.json``: per
    eval split, how many of its dialogues repeat a training dialogue; how many training rows were dropped."""
    eval_keys: dict[str, set[str]] = {
        split: {dialogue_key(r["dialogue"], prefix_chars) for _, r in rows}
        for split, rows in loaded.items() if split != "train"
    }
    train_keys = {dialogue_key(r["dialogue"], prefix_chars) for _, r in loaded["train"]}
    every_eval = set().union(*eval_keys.values())
    kept = [(n, r) for n, r in loaded["train"] if dialogue_key(r["dialogue"], prefix_chars) not in every_eval]
    repeats = {
        split: sum(dialogue_key(r["dialogue"], prefix_chars) in train_keys for _, r in loaded[split])
        for split in eval_keys
    }
    return kept, {"key": f"first {prefix_chars or 'all'} characters, lower-cased, whitespace collapsed",
                  "eval_dialogues_repeating_train": repeats,
                  "train_dialogues_dropped": len(loaded["train"]) - len(kept)}


# -------------------------------------------------------------------------------------- reading


def load_dialogues(path: str | Path, need_summaries: bool = True) -> list[dict]:
    """All dialogues of one file, validated and normalised to ``{id, dialogue, summaries, topic}``."""
    return [record for _, record in read_dialogues(Path(path), need_summaries)]


def read_dialogues(path: Path, need_summaries: bool = True) -> list[tuple[int, dict]]:
    """``(line number, normalised record)`` for each line; duplicate ids are an error naming both lines."""
    rows: list[tuple[int, dict]] = []
    first_line_of: dict[str, int] = {}
    for lineno, raw in iter_jsonl(path):
        record = normalise_dialogue(raw, path, lineno, need_summaries)
        if record["id"] in first_line_of:
            raise VecflowError(
                f"{where(path, lineno, 'id')}: duplicate id '{record['id']}' (first at line {first_line_of[record['id']]})"
            )
        first_line_of[record["id"]] = lineno
        rows.append((lineno, record))
    if not rows:
        raise VecflowError(f"{path}: no dialogues in file")
    return rows


def normalise_dialogue(raw: dict, path, lineno: int, need_summaries: bool = True) -> dict:
    """One input record (vecflow or DialogSum) -> ``{id, dialogue, summaries, topic}``, or a VecflowError."""
    id_field = "id" if "id" in raw else "fname" if "fname" in raw else "id"
    return {
        "id": _text(raw, id_field, path, lineno),
        "dialogue": _text(raw, "dialogue", path, lineno),
        "summaries": _summaries(raw, path, lineno, need_summaries),
        "topic": _topic(raw, path, lineno),
    }


def _summaries(raw: dict, path, lineno: int, required: bool = True) -> list[str]:
    numbered = sorted((int(m.group(1)), key) for key in raw if (m := NUMBERED_SUMMARY.match(key)))
    present = [key for key in ("summary", "summaries") if key in raw] + (["summary1.."] if numbered else [])
    if len(present) > 1:
        raise VecflowError(f"{where(path, lineno)}: give only one of {', '.join(present)}")
    if not present and not required:
        return []
    if "summaries" in raw:
        value = raw["summaries"]
        if value == [] and not required:
            return []
        if not isinstance(value, list) or not value:
            raise VecflowError(f"{where(path, lineno, 'summaries')}: expected a non-empty list of strings")
        return [_clean_text(item, path, lineno, f"summaries[{i}]") for i, item in enumerate(value)]
    if numbered:
        return [_text(raw, key, path, lineno) for _, key in numbered]
    if "summary" not in raw:
        raise VecflowError(f"{where(path, lineno, 'summary')}: missing (give 'summary' or 'summaries')")
    return [_text(raw, "summary", path, lineno)]


def _topic(raw: dict, path, lineno: int) -> str | None:
    key = "topic" if "topic" in raw else "topic1" if "topic1" in raw else None
    if key is None or raw[key] is None:
        return None
    if not isinstance(raw[key], str):
        raise VecflowError(f"{where(path, lineno, key)}: expected str or null, got {type(raw[key]).__name__}")
    return raw[key].strip() or None


def _text(raw: dict, field: str, path, lineno: int) -> str:
    if field not in raw:
        raise VecflowError(f"{where(path, lineno, field)}: missing")
    return _clean_text(raw[field], path, lineno, field)


def _clean_text(value, path, lineno: int, field: str) -> str:
    if not isinstance(value, str):
        raise VecflowError(f"{where(path, lineno, field)}: expected str, got {type(value).__name__}")
    text = value.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        raise VecflowError(f"{where(path, lineno, field)}: empty")
    return text


# -------------------------------------------------------------------------------- splits and subsets


def check_no_shared_ids(loaded: dict[str, list[tuple[int, dict]]], split_paths: dict[str, Path]) -> None:
    """An id in two splits is leakage: fail naming both files and lines."""
    seen: dict[str, tuple[str, int]] = {}
    for split, rows in loaded.items():
        for lineno, record in rows:
            if record["id"] in seen:
                other_split, other_line = seen[record["id"]]
                raise VecflowError(
                    f"id '{record['id']}' is in two splits: {where(split_paths[other_split], other_line)} "
                    f"({other_split}) and {where(split_paths[split], lineno)} ({split})"
                )
        for lineno, record in rows:
            seen[record["id"]] = (split, lineno)


def seeded_subset(rows: list, limit: int | None, seed: int, split: str) -> list:
    """``limit`` rows drawn with a seed per split, returned in their file order (all rows if no limit).
    Also the ELM's ``max_train_samples`` subset of synthesis rows."""
    if limit is None or limit >= len(rows):
        return list(rows)
    chosen = random.Random(f"{seed}:{split}").sample(range(len(rows)), limit)
    return [rows[i] for i in sorted(chosen)]


def carve_selection(train: list[dict], count: int, seed: int, train_path: Path) -> tuple[list[dict], list[dict]]:
    """``count`` seeded train dialogues become the selection split (checkpoints and decoding are chosen on it,
    so the scored split is never looked at before scoring); both keep file order and share no id."""
    if count >= len(train):
        raise VecflowError(
            f"settings: 'selection_dialogues': {count} would leave no training dialogues ({train_path} has "
            f"{len(train)} after max_dialogues); lower selection_dialogues or raise max_dialogues.train"
        )
    chosen = set(random.Random(f"{seed}:selection").sample(range(len(train)), count))
    kept = [row for i, row in enumerate(train) if i not in chosen]
    selection = [row for i, row in enumerate(train) if i in chosen]
    assert not {r["id"] for r in kept} & {r["id"] for r in selection}
    return kept, selection


def _max_dialogues(settings: IngestSettings, split_paths: dict[str, Path]) -> dict[str, int]:
    """``max_dialogues`` naming only splits given here; a count of 0 (every dialogue) is no cap."""
    caps = settings.max_dialogues
    for split in caps:
        if split not in split_paths:
            raise VecflowError(f"settings: 'max_dialogues.{split}': no such split (have: {', '.join(split_paths)})")
    return {split: count for split, count in caps.items() if count}


# -------------------------------------------------------------------------------------------- stats


def dialogue_stats(rows: list[dict], rows_in_file: int, path: Path) -> dict:
    summaries = [s for r in rows for s in r["summaries"]]
    topics = Counter(r["topic"] for r in rows if r["topic"])
    speakers = {tag for r in rows for tag in SPEAKER_AT_LINE_START.findall(r["dialogue"])}
    return {
        "source": str(path),
        "dialogues_in_file": rows_in_file,
        "dialogues": len(rows),
        "summaries": len(summaries),
        "mean_dialogue_words": _mean_words([r["dialogue"] for r in rows]),
        "mean_summary_words": _mean_words(summaries),
        "mean_turns": _mean([len(SPEAKER_AT_LINE_START.findall(r["dialogue"])) for r in rows]),
        "speakers": sorted(speakers, key=lambda tag: int(re.sub(r"\D", "", tag))),
        "with_topic": sum(1 for r in rows if r["topic"]),
        "distinct_topics": len(topics),
        "top_topics": dict(sorted(topics.items(), key=lambda item: (-item[1], item[0]))[:TOP_TOPICS]),
    }


def _mean_words(texts: list[str]) -> float:
    return _mean([len(text.split()) for text in texts])


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 3) if values else 0.0
