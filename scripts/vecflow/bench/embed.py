"""``vecflow bench embed``: ``vecflow.lvm.embeddings.embed_chunks`` vs ``SentenceTransformer.encode``
(chunks/s; max |diff|), on the chunk texts of ``--chunks`` or tiny generated texts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vecflow.bench.common import MODELS, cpu_ratio, record, timed
from vecflow.bench.inputs import chunk_texts, tiny_texts


def bench_embed(size: str, out_dir: Path | None, minilm: Path | None = None, chunks: int | None = None,
                chunks_file: Path | None = None, **_) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from vecflow.lvm.embeddings import embed_chunks

    model_dir = Path(minilm or MODELS / "minilm")
    count = chunks or (5000 if size == "full" else 40)
    texts = chunk_texts(chunks_file, count) if size == "full" else tiny_texts(count)
    rows = [{"article_id": 0, "chunk_index": i, "text": t} for i, t in enumerate(texts)]
    batch = 64

    def peer(texts=texts):
        model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        if size != "full":  # the tiny encoder folder has no sentence-transformers config: pool + normalise
            model.max_seq_length = 128
        vectors = model.encode(texts, batch_size=batch, convert_to_numpy=True, normalize_embeddings=True,
                               show_progress_bar=False)
        return vectors, model.max_seq_length

    torch.manual_seed(0)
    peer(texts[:2])  # imports and first-call set-up, outside the timing of both sides
    embed_chunks(rows[:2], model_dir, batch, "cpu")
    peer_seconds, (theirs, peer_max_len) = timed(peer)
    ours_seconds, (mine, _) = timed(lambda: embed_chunks(rows, model_dir, batch, "cpu"))
    diff = float(np.max(np.abs(theirs.astype(np.float32) - mine)))

    def ours_bf16():  # not the default: bf16 autocast over the same code, reported with its difference
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            return embed_chunks(rows, model_dir, batch, "cpu")

    bf16_seconds, (mine_bf16, _) = timed(ours_bf16)
    bf16_diff = float(np.max(np.abs(theirs.astype(np.float32) - mine_bf16)))
    bf16_cos = float(np.min(np.einsum("nd,nd->n", theirs.astype(np.float32), mine_bf16)))
    return record("embed", workload={"chunks": count, "model": model_dir.name, "batch_size": batch,
                                     "max_seq_length": peer_max_len, "data": "WikiText-2 chunks (results/wikitext, "
                                     "cycled to the count)" if size == "full" else "tiny random words",
                                     "timing": "model load + encode on both sides"},
                  unit="chunks/s", peer="SentenceTransformer.encode", peer_value=count / peer_seconds,
                  ours="vecflow.lvm.embeddings.embed_chunks", ours_value=count / ours_seconds, goal=1.5,
                  check={"max_abs_diff": diff, "equal_within_1e-5": diff <= 1e-5},
                  extra={"seconds": {"peer": peer_seconds, "ours": ours_seconds, "ours_bf16": bf16_seconds},
                         "ours_bf16": {"chunks_per_s": count / bf16_seconds, "ratio": peer_seconds / bf16_seconds,
                                       "cpu_time_ratio": cpu_ratio(peer_seconds, bf16_seconds),
                                       "max_abs_diff": bf16_diff, "min_cosine_to_fp32_peer": bf16_cos}},
                  out_dir=out_dir, cpu=cpu_ratio(peer_seconds, ours_seconds))
