"""``vecflow bench fivecat``: ``vecflow.lvm.fivecat.evaluate_split`` vs ``reference_fivecat``, a
one-window-at-a-time evaluator written the way the old evaluator worked (windows/s; every number compared), on
synthetic coherent articles."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vecflow.bench.common import compare_numbers, cpu_ratio, record, timed


def synthetic_split(n_windows: int, dim: int = 384, context: int = 5, chunks_per_article: int = 40,
                    seed: int = 0) -> dict:
    """Articles of coherent unit vectors (a random walk per article) and every window over them.

    Returns the bank arrays (embeddings, article_ids, chunk_indices) and the fivecat ``Windows``.
    """
    from vecflow.lvm.bank import ChunkBank
    from vecflow.lvm.baselines import normalise
    from vecflow.lvm.windows import make_windows

    rng = np.random.default_rng(seed)
    per_article = chunks_per_article - context
    articles = math.ceil(n_windows / per_article)
    steps = rng.standard_normal((articles, chunks_per_article, dim)).astype(np.float32)
    walk = np.cumsum(steps * np.float32(0.6), axis=1) + rng.standard_normal((articles, 1, dim)).astype(np.float32) * 3
    vectors = normalise(walk).reshape(-1, dim)
    article_ids = np.repeat(np.arange(articles, dtype=np.int64) * 7 + 3, chunks_per_article)  # sparse ids
    chunk_indices = np.tile(np.arange(chunks_per_article, dtype=np.int64), articles)
    bank = ChunkBank(vectors, article_ids, chunk_indices, source="synthetic bank")
    windows = make_windows(bank, context).subset(np.arange(n_windows))  # windows are bank rows
    return {"embeddings": vectors, "article_ids": article_ids, "chunk_indices": chunk_indices, "windows": windows}


def reference_fivecat(predict, windows, embeddings: np.ndarray, article_ids: np.ndarray, chunk_indices: np.ndarray,
                      rollout_steps: int = 3, min_article_chunks: int = 6, seed: int = 0,
                      ca_negatives: int = 256) -> dict:
    """The 5CAT numbers computed the straightforward way: a dict of chunks, then one window at a time, one
    model call per window and ablation. Only the random draws (other-article donors, shuffled slot orders, the
    uniforms that pick CA's out-of-article candidates) are taken as ``vecflow.lvm.fivecat`` makes them, so that
    both evaluate the same ablated contexts and candidates."""
    from vecflow.lvm.fivecat import (CA_CANDIDATES, CA_TIE, OFFSETS, PAR_DEFINITION, PAR_VS_TARGET_DEFINITION,
                                     ca_generator, other_article_donors)

    def unit(v):
        v = np.asarray(v, dtype=np.float32)
        return v / np.maximum(np.linalg.norm(v), 1e-12)

    def cos(a, b):
        return np.float32(np.dot(unit(a), unit(b)))

    def predict_one(context):
        return predict(np.ascontiguousarray(context[None]))[0]

    def mean(values):
        return float(np.mean(np.array(values, dtype=np.float32))) if values else None

    chunk = {(int(a), int(c)): embeddings[i] for i, (a, c) in enumerate(zip(article_ids, chunk_indices))}
    article_chunks: dict[int, list[int]] = {}
    for i, (a, c) in sorted(enumerate(zip(article_ids.tolist(), chunk_indices.tolist())), key=lambda x: x[1]):
        article_chunks.setdefault(a, []).append(i)
    contexts, targets = embeddings[windows.rows[:, :-1]], embeddings[windows.rows[:, -1]]
    n, slots = contexts.shape[:2]
    rng = np.random.default_rng(seed)
    donors = other_article_donors(windows.article_ids, rng)
    shuffle_keys = rng.random((n, slots))
    by_article = np.lexsort((chunk_indices, article_ids))  # every row in (article, chunk) order
    ca_draws = ca_generator(seed).random((n, ca_negatives))
    ca_shares: dict[str, list[float]] = {"all": [], "out": [], "in": []}
    in_candidates, par_num, par_den = [], [], []

    offsets = {k: [] for k in OFFSETS}
    available = {k: 0 for k in OFFSETS}
    per_window_offsets, ranks, base = [], [], []
    loo = [[] for _ in range(slots)]
    ablated = {"shuffled": [], "reversed": [], "last_repeated": [], "other_article": []}
    roll = [[] for _ in range(rollout_steps)]
    predictions = []
    for i in range(n):
        article, t = int(windows.article_ids[i]), int(windows.target_indices[i])
        ctx = contexts[i]
        p = unit(predict_one(ctx))
        predictions.append(p)
        base.append(cos(p, targets[i]))
        # A
        row = {}
        for k in OFFSETS:
            if (article, t + k) in chunk:
                available[k] += 1
                row[k] = cos(p, chunk[(article, t + k)])
        per_window_offsets.append(row)
        # B
        members = article_chunks.get(article, [])
        if len(members) >= min_article_chunks:
            candidates = embeddings[members]
            scores = candidates @ unit(p)
            true = scores[[chunk_indices[m] for m in members].index(t)]
            ranks.append(int((scores >= true).sum()))
        # LCM: CA over sampled other-article chunks and the article's chunks but t-1, t, t+1; PAR
        outside = by_article[article_ids[by_article] != article]
        out = ([cos(p, embeddings[outside[min(int(u * len(outside)), len(outside) - 1)]]) for u in ca_draws[i]]
               if len(outside) else [])
        inside = [cos(p, embeddings[m]) for m in members if abs(int(chunk_indices[m]) - t) > 1]
        far_out = sum(bool(s < base[i] - CA_TIE) for s in out)
        far_in = sum(bool(s < base[i] - CA_TIE) for s in inside)
        if out:
            ca_shares["out"].append(far_out / len(out))
        if inside:
            ca_shares["in"].append(far_in / len(inside))
            in_candidates.append(len(inside))
        if out or inside:
            ca_shares["all"].append((far_out + far_in) / (len(out) + len(inside)))
        par_num.append(max(cos(p, c) for c in ctx))
        par_den.append(max(cos(targets[i], c) for c in ctx))
        # C
        for slot in range(slots):
            others = np.delete(ctx, slot, axis=0)
            changed = ctx.copy()
            changed[slot] = unit(others.mean(axis=0))
            loo[slot].append(cos(predict_one(changed), targets[i]) - base[i])
        order = np.argsort(shuffle_keys[i])
        if (order == np.arange(slots)).all():
            order = np.roll(order, 1)
        ablated["shuffled"].append(cos(predict_one(ctx[order]), targets[i]) - base[i])
        ablated["reversed"].append(cos(predict_one(ctx[::-1]), targets[i]) - base[i])
        ablated["last_repeated"].append(cos(predict_one(np.repeat(ctx[-1:], slots, axis=0)), targets[i]) - base[i])
        if donors[i] >= 0:
            ablated["other_article"].append(cos(predict_one(contexts[donors[i]]), targets[i]) - base[i])
        # D
        rolled, q = ctx, p
        for h in range(1, rollout_steps + 1):
            if h > 1:
                rolled = np.concatenate([rolled[1:], q[None]], axis=0)
                q = unit(predict_one(rolled))
            if (article, t + h - 1) in chunk:
                roll[h - 1].append(cos(q, chunk[(article, t + h - 1)]))

    complete = [row for row in per_window_offsets if len(row) == len(OFFSETS)]
    same = bool(complete)
    sweep = {}
    for k in OFFSETS:
        values = [row[k] for row in (complete if same else per_window_offsets) if k in row]
        sweep[str(k)] = {"c": mean(values), "n": len(values), "n_available": available[k]}
    scored = {int(k): v["c"] for k, v in sweep.items() if v["c"] is not None}
    others = [c for k, c in scored.items() if k != 0]
    kept_articles = {int(windows.article_ids[i]) for i in range(n)
                     if len(article_chunks.get(int(windows.article_ids[i]), [])) >= min_article_chunks}
    retrieval = {"r1": float(np.mean([r <= 1 for r in ranks])) if ranks else None,
                 "r5": float(np.mean([r <= 5 for r in ranks])) if ranks else None,
                 "mrr": float(np.mean([1.0 / r for r in ranks])) if ranks else None,
                 "n": len(ranks), "n_articles": len(kept_articles), "min_article_chunks": min_article_chunks}
    per_slot = [mean(values) for values in loo]
    ablations = {"shuffled": mean(ablated["shuffled"]), "reversed": mean(ablated["reversed"]),
                 "leave_one_out": float(np.mean(per_slot)), "last_repeated": mean(ablated["last_repeated"]),
                 "other_article": mean(ablated["other_article"])}
    deltas = [v for v in ablations.values() if v is not None]
    ablations.update({"leave_one_out_per_slot": per_slot, "other_article_n": len(ablated["other_article"]),
                      "loses_under_all": bool(deltas) and all(v < 0 for v in deltas)})
    per_step = [mean(values) for values in roll]
    scored_steps = [c for c in per_step if c is not None]

    def ratios(numerators, denominators, with_mean=True):
        kept = [float(a) / float(b) for a, b in zip(numerators, denominators) if b > 0]
        return {**({"mean": float(np.mean(kept)) if kept else None} if with_mean else {}),
                "median": float(np.median(kept)) if kept else None,
                "share_above_1": float(np.mean([r > 1 + CA_TIE for r in kept])) if kept else None,
                "n": len(kept), "excluded_nonpositive": len(numerators) - len(kept)}

    def average(values):
        return float(np.mean(values)) if values else None

    par = ratios(par_num, par_den)
    return {
        "n_windows": n, "cos_target": mean(base), "c0": scored[0],
        "margin": scored[0] - max(others) if others else None, "peak_k": max(scored, key=scored.get),
        "r1": retrieval["r1"], "r5": retrieval["r5"], "mrr": retrieval["mrr"],
        "rollout": float(np.mean(scored_steps)) if scored_steps else None,
        "ca": average(ca_shares["all"]), "ca_out": average(ca_shares["out"]), "ca_in": average(ca_shares["in"]),
        "par": par["mean"], "par_median": par["median"],
        "ca_detail": {"n": len(ca_shares["all"]), "n_out": len(ca_shares["out"]), "n_in": len(ca_shares["in"]),
                      "mean_in_candidates": average(in_candidates),
                      "candidates": {"out_of_article": ca_negatives, "seed": seed, **CA_CANDIDATES}},
        "par_detail": {"definition": PAR_DEFINITION, **par,
                       "vs_target": {"definition": PAR_VS_TARGET_DEFINITION, **ratios(par_num, base, with_mean=False)}},
        "offsets": sweep, "retrieval": retrieval, "ablations": ablations,
        "rollout_detail": {"rollout": float(np.mean(scored_steps)) if scored_steps else None, "per_step": per_step,
                           "n_per_step": [len(values) for values in roll]},
    }


def lvm_predictor(dim: int, context: int, seed: int = 0, batch_size: int = 2048):
    """The default transformer LVM (the config's lvm.train sizes), seeded random weights, non-residual (an
    untrained residual model would only return the context mean)."""
    import torch

    from vecflow.lvm.models import build_model, predict

    torch.manual_seed(seed)
    model = build_model("transformer", dim, context, {"d_model": 64, "layers": 2, "heads": 4, "dropout": 0.1,
                                                      "residual": False}).eval()
    return lambda contexts: predict(model, contexts, batch_size, "cpu")


def bench_fivecat(size: str, out_dir: Path | None, windows_total: int | None = None,
                  reference_windows: int | None = None, **_) -> dict:
    from vecflow.lvm.bank import ChunkBank
    from vecflow.lvm.fivecat import evaluate_split

    total = windows_total or (20000 if size == "full" else 300)
    ref_n = reference_windows or (2000 if size == "full" else 60)
    dim = 384 if size == "full" else 32
    data = synthetic_split(total, dim=dim, context=5, chunks_per_article=40, seed=0)
    bank = ChunkBank(data["embeddings"], data["article_ids"], data["chunk_indices"], source="synthetic bank")
    predict = lvm_predictor(dim, 5)
    options = {"rollout_steps": 3, "min_article_chunks": 6, "seed": 0, "ca_negatives": 256}
    sub = data["windows"].subset(np.arange(min(ref_n, total)))
    ref_seconds, ref = timed(lambda: reference_fivecat(predict, sub, data["embeddings"], data["article_ids"],
                                                          data["chunk_indices"], **options))
    ours_sub = evaluate_split(predict, sub, bank, **options)
    ours_seconds, _ = timed(lambda: evaluate_split(predict, data["windows"], bank, **options))
    check = compare_numbers(ours_sub, ref)
    check["identical"] = not check["mismatched"] and check["max_abs_diff"] <= 1e-6
    return record("fivecat", workload={
        "windows": total, "reference_windows": len(sub), "dim": dim, "context": 5, "chunks_per_article": 40,
        "bank_chunks": len(data["embeddings"]), "predictor": "default transformer LVM (d_model 64, 2 layers, 4 heads)",
        "predictor_batch": "2048 (ours); 1 (reference: one window at a time)",
        "data": "synthetic coherent random-walk articles (seed 0)", **options,
        "note": "ours is timed on all windows, the reference on the first reference_windows (windows/s); the "
                "numbers are compared on those reference windows"},
        unit="windows/s", peer="reference_fivecat (one window at a time)", peer_value=len(sub) / ref_seconds,
        ours="vecflow.lvm.fivecat.evaluate_split", ours_value=total / ours_seconds, goal=50.0, check=check,
        extra={"seconds": {"reference": ref_seconds, "ours": ours_seconds}}, out_dir=out_dir,
        cpu=cpu_ratio(ref_seconds, ours_seconds, len(sub), total))
