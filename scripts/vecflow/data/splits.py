"""Article-based train/val/ood splits with a leakage proof (``vecflow split-articles``).

Random chunk-level splits leak (seed 002): here whole articles go to one split, either by seeded fractions of
the article ids or by explicit inclusive id ranges. With fractions, ``pinned: {split: [[low, high], ...]}``
sends the ids in those ranges to that split first (e.g. DialogSum dev dialogues, ids >= 1,000,000, to OOD) and
divides the rest by the fractions (e.g. a VAL carved from the train dialogues by id). Before anything is written the split is checked: no
article id may be in two splits, and no (whitespace-normalised) chunk text may appear in two splits. Leakage
is an error unless ``drop_duplicate_chunks`` is set, which drops the repeated chunks from the later split
(order train, val, ood) and reports them, or ``drop_leaking_articles`` is set, which drops every article of a
later split that shares a chunk text with an earlier split (a whole duplicated dialogue, not a gap in it).
Texts of at most ``short_duplicate_tokens`` whitespace tokens (``#Person2#: Thank you.``) are generic, not
leakage: they are counted in the report but allowed.

Writes ``DIR/{train,val,ood}.jsonl`` (chunk rows), ``DIR/ids.json`` and ``DIR/leakage.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vecflow.core.errors import VecflowError, where
from vecflow.core.io import iter_jsonl, require_fields, write_json, write_jsonl
from vecflow.data.settings import SplitSettings

SPLITS = ("train", "val", "ood")
CHUNK_FIELDS = {"article_id": int, "title": str, "chunk_index": int, "text": str}
MAX_EXAMPLES = 5


def read_chunks(path: str | Path) -> list[dict]:
    """Chunk rows, validated: fields and types, and ordered by (article, chunk) without repeats."""
    rows, previous = [], None
    for lineno, row in iter_jsonl(path):
        require_fields(row, CHUNK_FIELDS, path, lineno)
        key = (row["article_id"], row["chunk_index"])
        if previous is not None and key <= previous:
            raise VecflowError(
                f"{where(path, lineno)}: chunk (article {key[0]}, chunk {key[1]}) is out of order "
                f"after (article {previous[0]}, chunk {previous[1]}); rows must be sorted by (article, chunk)"
            )
        previous = key
        rows.append(row)
    if not rows:
        raise VecflowError(f"{path}: no chunks")
    return rows


# ------------------------------------------------------------------------------------- assigning ids
def assign_by_fractions(article_ids: list[int], fractions: dict, seed: int) -> dict[str, list[int]]:
    """Seeded shuffle of the article ids, cut by fractions; train takes the remainder when they sum to 1."""
    missing = [name for name in SPLITS if name not in fractions]
    if missing:
        raise VecflowError(f"settings: split.fractions: missing {', '.join(missing)}")
    values = {name: float(fractions[name]) for name in SPLITS}
    if any(v < 0 for v in values.values()) or sum(values.values()) > 1 + 1e-6:
        raise VecflowError(f"settings: split.fractions must be >= 0 and sum to at most 1 (got {values})")
    shuffled = np.random.default_rng(seed).permutation(sorted(article_ids)).tolist()
    n = len(shuffled)
    n_val, n_ood = round(values["val"] * n), round(values["ood"] * n)
    n_train = n - n_val - n_ood if abs(sum(values.values()) - 1) < 1e-6 else round(values["train"] * n)
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "ood": sorted(shuffled[n_train + n_val : n_train + n_val + n_ood]),
    }


def parse_ranges(ranges: dict) -> dict[str, list[tuple[int, int]]]:
    """``{split: [[low, high], ...]}`` validated; ranges of different splits must not overlap."""
    parsed: dict[str, list[tuple[int, int]]] = {}
    for name in SPLITS:
        if name not in ranges:
            raise VecflowError(f"settings: split.ranges: missing '{name}'")
        parsed[name] = []
        for i, pair in enumerate(ranges[name]):
            ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(v, int) for v in pair)
            if not ok or pair[0] > pair[1]:
                raise VecflowError(
                    f"settings: split.ranges.{name}[{i}]: expected [low, high] integers with low <= high, got {pair!r}"
                )
            parsed[name].append((pair[0], pair[1]))
    for a_index, a in enumerate(SPLITS):
        for b in SPLITS[a_index + 1 :]:
            for low_a, high_a in parsed[a]:
                for low_b, high_b in parsed[b]:
                    if low_a <= high_b and low_b <= high_a:
                        raise VecflowError(
                            f"settings: split.ranges: {a} [{low_a}, {high_a}] overlaps {b} [{low_b}, {high_b}]"
                        )
    return parsed


def assign_by_ranges(article_ids: list[int], ranges: dict) -> dict[str, list[int]]:
    """Each article id goes to the split whose inclusive range contains it; ids in no range are left out."""
    parsed = parse_ranges(ranges)
    return {
        name: sorted(a for a in article_ids if any(low <= a <= high for low, high in parsed[name]))
        for name in SPLITS
    }


def assign_pinned_then_fractions(article_ids: list[int], fractions: dict, pinned: dict, seed: int
                                 ) -> dict[str, list[int]]:
    """Ids inside a ``pinned`` split's ranges go to that split; the others are divided by ``fractions``."""
    ranges = parse_ranges({name: pinned.get(name, []) for name in SPLITS})
    pinned_to = {a: name for name in SPLITS for a in article_ids if any(lo <= a <= hi for lo, hi in ranges[name])}
    assigned = assign_by_fractions([a for a in article_ids if a not in pinned_to], fractions, seed)
    return {name: sorted(assigned[name] + [a for a, pin in pinned_to.items() if pin == name]) for name in SPLITS}


def assign_articles(article_ids: list[int], split: SplitSettings, seed: int) -> dict[str, list[int]]:
    method = split.method
    if split.pinned and method != "fractions":
        raise VecflowError("settings: split.pinned: only used with method fractions (ranges already say where ids go)")
    if method == "fractions":
        assigned = assign_pinned_then_fractions(article_ids, split.fractions, split.pinned, seed)
    else:
        assigned = assign_by_ranges(article_ids, split.ranges)
    empty = [name for name in SPLITS if not assigned[name]]
    if empty:
        raise VecflowError(
            f"split by {method}: {', '.join(empty)} would have 0 articles (of {len(article_ids)} articles; "
            f"sizes {', '.join(f'{n}={len(assigned[n])}' for n in SPLITS)})"
        )
    return assigned


# ---------------------------------------------------------------------------------------- leakage
def normalise_text(text: str) -> str:
    return " ".join(text.split())


def find_leakage(split_rows: dict[str, list[dict]], short_tokens: int = 0) -> dict:
    """Article ids in two splits, and chunk texts (whitespace-normalised) found in more than one split; texts of
    at most ``short_tokens`` tokens are counted apart (``short_duplicate_texts``) and are not leakage."""
    id_splits: dict[int, set[str]] = {}
    text_splits: dict[str, set[str]] = {}
    for name, rows in split_rows.items():
        for row in rows:
            id_splits.setdefault(row["article_id"], set()).add(name)
            text_splits.setdefault(normalise_text(row["text"]), set()).add(name)
    shared_ids = sorted(a for a, names in id_splits.items() if len(names) > 1)
    shared = [(t, sorted(names, key=SPLITS.index)) for t, names in text_splits.items() if len(names) > 1]
    shared_texts = [(t, names) for t, names in shared if len(t.split()) > short_tokens]
    return {
        "article_ids_in_two_splits": shared_ids,
        "duplicate_chunk_texts": {
            "count": len(shared_texts),
            "examples": [{"text": t[:200], "splits": names} for t, names in shared_texts[:MAX_EXAMPLES]],
        },
        "short_duplicate_texts": {"count": len(shared) - len(shared_texts), "max_tokens": short_tokens},
    }


def drop_leaking_articles(split_rows: dict[str, list[dict]], short_tokens: int = 0
                          ) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """Drop every article of a split that shares a (longer than ``short_tokens``) chunk text with an earlier
    split (train, val, ood order); returns the kept rows and the number of articles dropped per split."""
    seen_before: set[str] = set()
    kept, dropped = {}, {}
    for name in SPLITS:
        leaking = {row["article_id"] for row in split_rows[name]
                   if len(row["text"].split()) > short_tokens and normalise_text(row["text"]) in seen_before}
        kept[name] = [row for row in split_rows[name] if row["article_id"] not in leaking]
        dropped[name] = len(leaking)
        seen_before |= {normalise_text(row["text"]) for row in kept[name]}
    return kept, dropped


def drop_cross_split_duplicates(split_rows: dict[str, list[dict]], short_tokens: int = 0
                                ) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """Drop a chunk from a split when the same text is already in an earlier split (train, val, ood order);
    generic texts of at most ``short_tokens`` tokens are kept (they are not leakage)."""
    seen_before: set[str] = set()
    kept, dropped = {}, {}
    for name in SPLITS:
        texts_here = set()
        kept[name] = []
        for row in split_rows[name]:
            text = normalise_text(row["text"])
            if text in seen_before and len(text.split()) > short_tokens:
                continue
            kept[name].append(row)
            texts_here.add(text)
        dropped[name] = len(split_rows[name]) - len(kept[name])
        seen_before |= texts_here
    return kept, dropped


def split_counts(split_rows: dict[str, list[dict]]) -> dict[str, dict[str, int]]:
    return {
        name: {"articles": len({row["article_id"] for row in rows}), "chunks": len(rows)}
        for name, rows in split_rows.items()
    }


def leakage_message(path, leakage: dict) -> str:
    parts = []
    if leakage["article_ids_in_two_splits"]:
        ids = leakage["article_ids_in_two_splits"]
        parts.append(f"{len(ids)} article ids in two splits (e.g. {ids[:MAX_EXAMPLES]})")
    duplicates = leakage["duplicate_chunk_texts"]
    if duplicates["count"]:
        example = duplicates["examples"][0]
        parts.append(
            f"{duplicates['count']} identical chunk texts in two splits (e.g. {example['text'][:60]!r} in "
            f"{' and '.join(example['splits'])}); set lvm.split.drop_duplicate_chunks: true to drop them, or drop_leaking_articles: true to drop "
            f"the articles that contain them"
        )
    return f"{path}: split leaks: " + "; ".join(parts)


def split_chunks(rows: list[dict], split: SplitSettings, seed: int, source="chunks") -> tuple[dict, dict, dict]:
    """Return ``(split_rows, ids, leakage_report)``; raise VecflowError when the split leaks."""
    article_ids = sorted({row["article_id"] for row in rows})
    ids = assign_articles(article_ids, split, seed)
    split_of = {a: name for name in SPLITS for a in ids[name]}
    split_rows = {name: [row for row in rows if split_of.get(row["article_id"]) == name] for name in SPLITS}
    short_tokens = split.short_duplicate_tokens
    leakage = find_leakage(split_rows, short_tokens)
    dropped = {name: 0 for name in SPLITS}
    dropped_articles = {name: 0 for name in SPLITS}
    if leakage["duplicate_chunk_texts"]["count"] and split.drop_leaking_articles:
        split_rows, dropped_articles = drop_leaking_articles(split_rows, short_tokens)
    if leakage["duplicate_chunk_texts"]["count"] and split.drop_duplicate_chunks:
        split_rows, dropped = drop_cross_split_duplicates(split_rows, short_tokens)
    emptied = [name for name in SPLITS if not split_rows[name]]
    if emptied:
        raise VecflowError(f"{source}: dropping duplicates leaves {', '.join(emptied)} empty")
    remaining = find_leakage(split_rows, short_tokens)
    if remaining["article_ids_in_two_splits"] or remaining["duplicate_chunk_texts"]["count"]:
        raise VecflowError(leakage_message(source, remaining))
    report = {
        "method": split.method,
        "article_ids_in_two_splits": remaining["article_ids_in_two_splits"],
        "duplicate_chunk_texts": {**leakage["duplicate_chunk_texts"], "dropped": dropped,
                                  "dropped_articles": dropped_articles},
        "short_duplicate_texts": remaining["short_duplicate_texts"],
        "counts": split_counts(split_rows),
        "unassigned_articles": len(article_ids) - len(split_of),
    }
    return split_rows, ids, report


# ------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow split-articles", description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", required=True, help="chunks JSONL from chunk-articles")
    parser.add_argument("--settings", required=True, type=SplitSettings.from_json, help="lvm.split as JSON")
    parser.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)

    rows = read_chunks(args.chunks)
    settings: SplitSettings = args.settings
    split_rows, ids, report = split_chunks(rows, settings, settings.seed, args.chunks)
    out_dir = Path(args.out_dir)
    for name in SPLITS:
        write_jsonl(out_dir / f"{name}.jsonl", split_rows[name])
    write_json(out_dir / "ids.json", ids)
    write_json(out_dir / "leakage.json", report)
    sizes = ", ".join(f"{n}: {c['articles']} articles / {c['chunks']} chunks" for n, c in report["counts"].items())
    print(f"[vecflow] split {args.chunks} by {report['method']} -> {sizes}", flush=True)
    return 0
