"""What the benchmarks read: texts, dialogues and summaries from the data named on the command line
(``--dialogsum DIR``, ``--chunks FILE``) at ``--size full``, seeded generated ones at ``--size tiny``, and the
models as the pipeline loads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vecflow.core.errors import VecflowError


def dialogsum_file(dialogsum: Path | None, split: str, benchmark: str) -> Path:
    """``DIR/<split>.jsonl`` of the DialogSum folder given as ``--dialogsum``, or an error naming the option."""
    if dialogsum is None:
        raise VecflowError(f"--dialogsum: the {benchmark} benchmark at --size full reads DialogSum {split}.jsonl "
                           "from this folder (e.g. resources/data/dialogsum after fetch_data, or your own copy)")
    path = Path(dialogsum) / f"{split}.jsonl"
    if not path.is_file():
        raise VecflowError(f"{path}: file not found (the {benchmark} benchmark reads DialogSum {split})")
    return path


def dialogsum_pairs(dialogsum: Path | None, count: int) -> tuple[list[str], list[list[str]]]:
    """Candidates and references from DialogSum dev: candidate i = the summary of dialogue i+1, reference i =
    the summary of dialogue i (realistic lengths and vocabulary; the pairs are not matched)."""
    from vecflow.data.dialogues import load_dialogues

    rows = load_dialogues(dialogsum_file(dialogsum, "dev", "bertscore"))[: count + 1]
    return [rows[i + 1]["summaries"][0] for i in range(len(rows) - 1)], [r["summaries"] for r in rows[:-1]]


def tiny_pairs(count: int) -> tuple[list[str], list[list[str]]]:
    words = "the doctor asks person about work and the hotel room for dinner today".split()
    rng = np.random.default_rng(0)
    make = lambda: " ".join(rng.choice(words, size=int(rng.integers(4, 12))))  # noqa: E731
    return [make() for _ in range(count)], [[make()] for _ in range(count)]


def chunk_texts(chunks: Path | None, count: int) -> list[str]:
    """The first ``count`` chunk texts of a pipeline chunks.jsonl (``--chunks``; cycled when it has fewer)."""
    from vecflow.core.io import iter_jsonl

    if chunks is None:
        raise VecflowError("--chunks: at --size full this benchmark reads the chunk texts of a chunks.jsonl "
                           "(the wikitext config's chunk_articles writes results/wikitext/lvm/chunks.jsonl)")
    if not Path(chunks).is_file():
        raise VecflowError(f"{chunks}: file not found (run the wikitext config's chunk_articles first)")
    texts = [row["text"] for _, row in iter_jsonl(chunks)]
    return [texts[i % len(texts)] for i in range(count)]


def tiny_texts(count: int) -> list[str]:
    words = "the a data model train test value list string number file open read write print return".split()
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=int(rng.integers(3, 60)))) for _ in range(count)]


def dialogue_rows(dialogsum: Path | None, count: int, split: str = "dev", benchmark: str = "generate") -> list[dict]:
    from vecflow.data.dialogues import load_dialogues

    return load_dialogues(dialogsum_file(dialogsum, split, benchmark))[:count]


def tiny_dialogue_rows(count: int) -> list[dict]:
    words = "the doctor asks about work and the hotel room for dinner today yes no good".split()
    rng = np.random.default_rng(1)
    rows = []
    for i in range(count):
        turns = [f"#Person{1 + t % 2}#: " + " ".join(rng.choice(words, size=int(rng.integers(3, 12))))
                 for t in range(int(rng.integers(2, 6)))]
        rows.append({"id": str(i), "dialogue": "\n".join(turns), "summaries": [" ".join(rng.choice(words, size=6))]})
    return rows


def seq2seq_model(encoder_dir: Path, rows: list[dict], seed: int = 0):
    """BERT2BERT warm-started from the encoder folder exactly as the summarizer does (``load_base``)."""
    import torch

    from vecflow.summary.seq2seq import decoder_start_id, load_base

    torch.manual_seed(seed)
    model, tokenizer = load_base(encoder_dir, [r["dialogue"] for r in rows] + [r["summaries"][0] for r in rows])
    return model.eval(), tokenizer, decoder_start_id(model, tokenizer)


def causal_model(lm_dir: Path):
    from vecflow.summary.causal import load_base

    model, tokenizer = load_base(lm_dir)
    return model.eval(), tokenizer
