"""Benchmarks: every hot path timed side by side with the tool a user would otherwise run (``vecflow bench``).

    vecflow bench NAME [--size tiny|full] [--out-dir results/bench]      # NAME: one of BENCHMARKS, or all

Each benchmark runs our code and its peer in ONE process on the same inputs, checks that the compared outputs
agree, prints peer figure, our figure, the ratio, the exact workload and the machine (cores, torch threads,
dtype, load average), and writes ``OUT_DIR/NAME.json``. The machine is shared and noisy, so the ratio is the
figure to read, not the absolute times. ``--size tiny`` runs each one in seconds on the tiny models the tests
make (``--minilm``/``--smollm2`` point at other folders); ``full`` is the workload ``make bench`` records in
BENCHMARKS.md.

- ``embed``: ``vecflow.lvm.embeddings.embed_chunks`` vs ``SentenceTransformer.encode`` (chunks/s; max |diff|).
- ``fivecat``: ``vecflow.lvm.fivecat.evaluate_split`` vs ``reference_fivecat``, a one-window-at-a-time evaluator
  written the way the old evaluator worked (windows/s; every number compared).
- ``bertscore``: ``vecflow.summary.scoring.bertscore`` vs ``bert_score.score`` (pairs/s, model load included in both).
- ``generate``: ``vecflow.summary.infer.generate_seq2seq`` / ``generate_causal`` (batched, left padding, KV
  cache) vs a plain one-dialogue-at-a-time ``model.generate`` loop (summaries/s; share of identical outputs).
- ``train``: ``vecflow.summary.loop.Loop.train_step`` vs HF ``Seq2SeqTrainer`` (BERT2BERT) and ``Trainer``
  (causal LM) on the same model, rows, batch and lengths, one length-grouped epoch each (samples/s).
- ``serve``: ``/predict-next`` and ``/encode`` of a real ``vecflow serve`` process with 8 concurrent loopback
  clients vs the same functions called in-process (requests/s, p50/p95/p99).
- ``lvm``: achieved FLOP/s of ``vecflow.lvm.train.train_one_epoch`` (matmul FLOPs counted: torch FlopCounterMode,
  whose forward count equals ``transformer_lvm_flops``) vs this
  machine's fp32 and bf16 matmul peak measured in the same run.
- ``startup``: the per-job start-up floor, ``vecflow CMD --help`` in a fresh process for every command.
- ``pipeline``: on a finished demo run (``--workdir``; ``--size tiny`` builds a tiny one): the no-op rerun, the
  report regenerated from cache, per-job start-up vs a bare interpreter and the report job's import profile
  (``vecflow.bench_pipeline``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from vecflow.core.errors import VecflowError
from vecflow.core.io import write_json
from vecflow.core.machine import machine

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "results" / "bench"
MODELS = REPO / "resources" / "models"
DATA = REPO.parent / "shared" / "data"
WIKITEXT_CHUNKS = REPO / "results" / "wikitext" / "lvm" / "chunks.jsonl"
BENCHMARKS = ("fivecat", "bertscore", "embed", "generate", "train", "serve", "lvm", "startup", "pipeline")


# ---------------------------------------------------------------------------------------------- reporting
def record(name: str, *, workload: dict, unit: str, peer: str, peer_value: float, ours: str, ours_value: float,
           goal: float | None, check: dict, dtype: str = "float32", extra: dict | None = None,
           out_dir: Path | None = None, cpu: float | None = None) -> dict:
    """Print the comparison and write ``OUT_DIR/NAME.json``; ratio = ours / peer (higher = ours faster)."""
    ratio = ours_value / peer_value if peer_value > 0 else float("inf")
    result = {"benchmark": name, "unit": unit, "peer": {"name": peer, "value": peer_value},
              "ours": {"name": ours, "value": ours_value}, "ratio": ratio, "goal_ratio": goal,
              "goal_met": None if goal is None else bool(ratio >= goal), "cpu_time_ratio": cpu,
              "check": check, "workload": workload,
              "machine": machine(dtype), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              **(extra or {})}
    goal_text = "" if goal is None else f" (goal >= {goal:g}x: {'met' if result['goal_met'] else 'MISSED'})"
    print(f"[bench {name}] peer  {peer}: {peer_value:.4g} {unit}\n"
          f"[bench {name}] ours  {ours}: {ours_value:.4g} {unit}\n"
          f"[bench {name}] ratio {ratio:.2f}x{goal_text}"
          f"{'' if cpu is None else f'; CPU-time ratio {cpu:.2f}x'}\n"
          f"[bench {name}] check {json.dumps(check, default=str)}\n"
          f"[bench {name}] workload {json.dumps(workload, default=str)}\n"
          f"[bench {name}] machine {json.dumps(result['machine'])}", flush=True)
    if out_dir is not None:
        write_json(Path(out_dir) / f"{name}.json", result)
    return result


def flatten(value, prefix: str = "") -> dict:
    """Nested dicts/lists -> {dotted.key: leaf}."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}{key}."))
        return out
    if isinstance(value, (list, tuple)):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): value}


def compare_numbers(a: dict, b: dict) -> dict:
    """Max |a - b| over every numeric leaf, the keys that differ in kind or are missing, and exact int/bool/None."""
    fa, fb = flatten(a), flatten(b)
    mismatched = sorted(set(fa) ^ set(fb))
    max_diff, worst = 0.0, None
    for key in sorted(set(fa) & set(fb)):
        x, y = fa[key], fb[key]
        if isinstance(x, bool) or isinstance(y, bool) or x is None or y is None or isinstance(x, str):
            if x != y:
                mismatched.append(key)
        elif isinstance(x, int) and isinstance(y, int):
            if x != y:
                mismatched.append(key)
        else:
            diff = abs(float(x) - float(y))
            if not diff <= max_diff:  # NaN counts as a mismatch through max_diff = nan
                max_diff, worst = diff, key
    return {"numbers": len(fa), "max_abs_diff": max_diff, "worst_key": worst, "mismatched": mismatched}


class Seconds(float):
    """Wall-clock seconds that also carry ``cpu``: the process's CPU seconds (all its threads) over the same
    span. On a shared machine the CPU-time ratio is the steadier one: waiting for a core does not count."""

    cpu: float

    def __new__(cls, wall: float, cpu: float):
        value = super().__new__(cls, wall)
        value.cpu = cpu
        return value


def _seconds(fn):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return Seconds(time.perf_counter() - start, time.process_time() - cpu), out


def cpu_ratio(peer: Seconds, ours: Seconds, peer_items: int = 1, ours_items: int = 1) -> float:
    """(ours items per CPU second) / (peer items per CPU second)."""
    return (ours_items / max(ours.cpu, 1e-9)) / (peer_items / max(peer.cpu, 1e-9))


# ---------------------------------------------------------------------------------------------- 3. 5CAT
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
    ref_seconds, ref = _seconds(lambda: reference_fivecat(predict, sub, data["embeddings"], data["article_ids"],
                                                          data["chunk_indices"], **options))
    ours_sub = evaluate_split(predict, sub, bank, **options)
    ours_seconds, _ = _seconds(lambda: evaluate_split(predict, data["windows"], bank, **options))
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


# ---------------------------------------------------------------------------------------------- 4. BERTScore
def dialogsum_pairs(count: int) -> tuple[list[str], list[list[str]]]:
    """Candidates and references from DialogSum dev: candidate i = the summary of dialogue i+1, reference i =
    the summary of dialogue i (realistic lengths and vocabulary; the pairs are not matched)."""
    from vecflow.data.dialogues import load_dialogues

    path = DATA / "dialogsum" / "dev.jsonl"
    if not path.is_file():
        raise VecflowError(f"{path}: file not found (the bertscore benchmark reads DialogSum dev)")
    rows = load_dialogues(path)[: count + 1]
    return [rows[i + 1]["summaries"][0] for i in range(len(rows) - 1)], [r["summaries"] for r in rows[:-1]]


def tiny_pairs(count: int) -> tuple[list[str], list[list[str]]]:
    words = "the doctor asks person about work and the hotel room for dinner today".split()
    rng = np.random.default_rng(0)
    make = lambda: " ".join(rng.choice(words, size=int(rng.integers(4, 12))))  # noqa: E731
    return [make() for _ in range(count)], [[make()] for _ in range(count)]


def bench_bertscore(size: str, out_dir: Path | None, minilm: Path | None = None, pairs: int | None = None,
                    repeats: int | None = None, **_) -> dict:
    import bert_score

    from vecflow.summary.scoring import bertscore, check_bertscore_model, load_bertscorer

    model_dir = check_bertscore_model(minilm or MODELS / "minilm", 6 if size == "full" else 2)
    layers = 6 if size == "full" else 2
    count = pairs or (500 if size == "full" else 12)
    cands, refs = dialogsum_pairs(count) if size == "full" else tiny_pairs(count)
    batch = 16
    repeats = repeats or (2 if size == "full" else 1)

    def peer():
        return bert_score.score(cands, refs, model_type=str(model_dir), num_layers=layers, batch_size=batch,
                                device="cpu")

    def ours():
        load_bertscorer.cache_clear()
        return bertscore(load_bertscorer(str(model_dir), layers, "cpu"), cands, refs, batch_size=batch)

    warm = (cands[:2], refs[:2])  # imports and first-call set-up, outside the timing of both sides
    bert_score.score(*warm, model_type=str(model_dir), num_layers=layers, device="cpu")
    bertscore(load_bertscorer(str(model_dir), layers, "cpu"), *warm)
    peer_seconds, (P, R, F) = _seconds(peer)
    ours_seconds, mine = _seconds(ours)
    for _ in range(repeats - 1):  # alternate, keep each side's best: the two are expected to be close
        peer_seconds = min(peer_seconds, _seconds(peer)[0], key=float)
        ours_seconds = min(ours_seconds, _seconds(ours)[0], key=float)
    warm_seconds, _ = _seconds(lambda: bertscore(load_bertscorer(str(model_dir), layers, "cpu"), cands, refs,
                                                 batch_size=batch))
    diff = max(abs(float(F.mean()) - mine["f1"]), abs(float(P.mean()) - mine["p"]), abs(float(R.mean()) - mine["r"]),
               float(np.max(np.abs(F.numpy() - np.array(mine["per_sample_f1"])))))
    return record("bertscore", workload={"pairs": len(cands), "references_per_pair": 1, "model": model_dir.name,
                                         "num_layers": layers, "batch_size": batch, "idf": False,
                                         "data": "DialogSum dev summaries" if size == "full" else "tiny words",
                                         "timing": "cold: each side loads the model once (what one scoring job "
                                                   "does); peer and ours alternate, best of `repeats` each",
                                         "repeats": repeats},
                  unit="pairs/s", peer="bert_score.score", peer_value=len(cands) / peer_seconds,
                  ours="vecflow.summary.scoring.bertscore (+ load_bertscorer)", ours_value=len(cands) / ours_seconds,
                  goal=1.0, check={"max_abs_diff_p_r_f1": diff, "equal_within_1e-4": diff <= 1e-4},
                  extra={"seconds": {"peer": peer_seconds, "ours": ours_seconds, "ours_warm": warm_seconds},
                         "ours_warm_pairs_per_s": len(cands) / warm_seconds}, out_dir=out_dir,
                  cpu=cpu_ratio(peer_seconds, ours_seconds))


# ---------------------------------------------------------------------------------------------- 1. embeddings
def chunk_texts(count: int) -> list[str]:
    """The first ``count`` WikiText chunk texts of the pipeline's chunks.jsonl (cycled when it has fewer)."""
    from vecflow.core.io import iter_jsonl

    if not WIKITEXT_CHUNKS.is_file():
        raise VecflowError(f"{WIKITEXT_CHUNKS}: file not found (run the wikitext config's chunk_articles first)")
    texts = [row["text"] for _, row in iter_jsonl(WIKITEXT_CHUNKS)]
    return [texts[i % len(texts)] for i in range(count)]


def tiny_texts(count: int) -> list[str]:
    words = "the a data model train test value list string number file open read write print return".split()
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=int(rng.integers(3, 60)))) for _ in range(count)]


def bench_embed(size: str, out_dir: Path | None, minilm: Path | None = None, chunks: int | None = None, **_) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    from vecflow.lvm.embeddings import embed_chunks

    model_dir = Path(minilm or MODELS / "minilm")
    count = chunks or (5000 if size == "full" else 40)
    texts = chunk_texts(count) if size == "full" else tiny_texts(count)
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
    peer_seconds, (theirs, peer_max_len) = _seconds(peer)
    ours_seconds, (mine, _) = _seconds(lambda: embed_chunks(rows, model_dir, batch, "cpu"))
    diff = float(np.max(np.abs(theirs.astype(np.float32) - mine)))

    def ours_bf16():  # not the default: bf16 autocast over the same code, reported with its difference
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            return embed_chunks(rows, model_dir, batch, "cpu")

    bf16_seconds, (mine_bf16, _) = _seconds(ours_bf16)
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


# ---------------------------------------------------------------------------------------------- 6. generation
def dialogue_rows(count: int, split: str = "dev") -> list[dict]:
    from vecflow.data.dialogues import load_dialogues

    path = DATA / "dialogsum" / f"{split}.jsonl"
    if not path.is_file():
        raise VecflowError(f"{path}: file not found (the benchmark reads DialogSum {split})")
    return load_dialogues(path)[:count]


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


def one_at_a_time_seq2seq(model, tokenizer, dialogues, generation_config, max_source_length):
    import torch

    out = []
    with torch.inference_mode():
        for dialogue in dialogues:
            batch = tokenizer(dialogue, max_length=max_source_length, truncation=True, return_tensors="pt",
                              return_token_type_ids=False)
            generated = model.generate(**batch, generation_config=generation_config)
            out.append(tokenizer.decode(generated[0], skip_special_tokens=True).strip())
    return out


def one_at_a_time_causal(model, tokenizer, dialogues, spec, generation_config):
    import torch

    from vecflow.summary.infer import prompt_ids

    out = []
    with torch.inference_mode():
        for dialogue in dialogues:
            ids = torch.tensor([prompt_ids(tokenizer, dialogue, spec)])
            generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                       generation_config=generation_config)
            out.append(tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True).strip())
    return out


def bench_generate(size: str, out_dir: Path | None, minilm: Path | None = None, smollm2: Path | None = None,
                   dialogues: int | None = None, families: tuple = ("seq2seq", "causal"), **_) -> list[dict]:
    import torch

    from vecflow.summary.generation import to_generation_config
    from vecflow.summary.infer import causal_generation_config, generate_causal, generate_seq2seq

    full = size == "full"
    rows = dialogue_rows(dialogues or 16) if full else tiny_dialogue_rows(dialogues or 6)
    texts = [r["dialogue"] for r in rows]
    batch_size, device, results = 8, torch.device("cpu"), []
    if "seq2seq" in families:
        model, tokenizer, start = seq2seq_model(Path(minilm or MODELS / "minilm"), rows)
        new_tokens = 32 if full else 8
        gen = {"num_beams": 2, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "no_repeat_ngram_size": 3,
               "early_stopping": True}
        config = to_generation_config(gen, tokenizer, start)
        src = 256
        one_at_a_time_seq2seq(model, tokenizer, texts[:1], config, src)  # warm-up, outside the timing
        generate_seq2seq(model, tokenizer, texts[:1], config, src, batch_size, device)
        peer_s, theirs = _seconds(lambda: one_at_a_time_seq2seq(model, tokenizer, texts, config, src))
        ours_s, mine = _seconds(lambda: generate_seq2seq(model, tokenizer, texts, config, src, batch_size, device))
        same = sum(a == b for a, b in zip(theirs, mine)) / len(rows)
        results.append(record("generate_seq2seq", workload={
            "dialogues": len(rows), "model": "BERT2BERT warm-started from " + Path(minilm or MODELS / "minilm").name
            + " (untrained cross-attention, seed 0)", "generation": gen, "max_source_length": src,
            "batch_size": batch_size, "data": "DialogSum dev" if full else "tiny dialogues",
            "note": "min_new_tokens = max_new_tokens: both sides write the same number of tokens"},
            unit="summaries/s", peer="model.generate one dialogue at a time", peer_value=len(rows) / peer_s,
            ours="vecflow.summary.infer.generate_seq2seq", ours_value=len(rows) / ours_s, goal=3.0,
            check={"identical_outputs": same}, extra={"seconds": {"peer": peer_s, "ours": ours_s}}, out_dir=out_dir,
            cpu=cpu_ratio(peer_s, ours_s)))
        del model
    if "causal" in families:
        model, tokenizer = causal_model(Path(smollm2 or MODELS / "smollm2"))
        new_tokens = 40 if full else 8
        gen = {"num_beams": 1, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
        config = causal_generation_config(gen, tokenizer)
        spec = {"kind": "causal", "max_source_length": 384 if full else 64, "max_target_length": 48,
                "system_message": None, "user_template": None}
        one_at_a_time_causal(model, tokenizer, texts[:1], spec, config)  # warm-up, outside the timing
        generate_causal(model, tokenizer, texts[:1], spec, config, batch_size, device)
        peer_s, theirs = _seconds(lambda: one_at_a_time_causal(model, tokenizer, texts, spec, config))
        ours_s, mine = _seconds(lambda: generate_causal(model, tokenizer, texts, spec, config, batch_size, device))
        same = sum(a == b for a, b in zip(theirs, mine)) / len(rows)
        results.append(record("generate_causal", workload={
            "dialogues": len(rows), "model": Path(smollm2 or MODELS / "smollm2").name + " (base weights)",
            "generation": gen, "max_source_length": spec["max_source_length"], "batch_size": batch_size,
            "data": "DialogSum dev" if full else "tiny dialogues",
            "note": "greedy, min_new_tokens = max_new_tokens; prompts through the chat template on both sides"},
            unit="summaries/s", peer="model.generate one dialogue at a time", peer_value=len(rows) / peer_s,
            ours="vecflow.summary.infer.generate_causal", ours_value=len(rows) / ours_s, goal=3.0,
            check={"identical_outputs": same}, extra={"seconds": {"peer": peer_s, "ours": ours_s}}, out_dir=out_dir,
            cpu=cpu_ratio(peer_s, ours_s)))
    return results


# ---------------------------------------------------------------------------------------------- 2. trainers
class _StepClock:
    """A TrainerCallback that stamps the end of every optimizer step."""

    def __init__(self):
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                clock.stamps.append((time.perf_counter(), time.process_time()))

        self.stamps: list[tuple[float, float]] = []
        self.callback = Callback()


def _rate(stamps: list[tuple[float, float]], samples_per_step: list[int]) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second) from the end of step 1 to the end of the last step
    (the first step is warm-up)."""
    samples = sum(samples_per_step[1:])
    return samples / (stamps[-1][0] - stamps[0][0]), samples / max(stamps[-1][1] - stamps[0][1], 1e-9)


def ours_train(model, tokenizer, features, collator, settings, forward=None) -> tuple[tuple, list[float]]:
    import torch

    from vecflow.summary.budget import fixed_plan
    from vecflow.summary.loop import Loop

    steps = math.ceil(len(features) / settings["batch_size"])
    with tempfile.TemporaryDirectory() as tmp:
        loop = Loop(model=model, tokenizer=tokenizer, features=features, collator=collator, validate=None,
                    settings=settings, out_dir=Path(tmp) / "model", fingerprint="bench", spec={}, device=torch.device("cpu"),
                    run_name="bench", resume=None, forward=forward)
        loop.plan = fixed_plan(steps, settings["warmup_ratio"], 1.0)
        stamps, samples, losses = [], [], []
        for step in range(steps):
            loss, count, _ = loop.train_step(step, False)
            stamps.append((time.perf_counter(), time.process_time()))
            samples.append(count)
            losses.append(loss)
    return _rate(stamps, samples), losses


def hf_train(model, features, collator, settings, seq2seq: bool) -> tuple[tuple, list[float]]:
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, TrainingArguments

    steps = math.ceil(len(features) / settings["batch_size"])
    clock = _StepClock()
    args_class, trainer_class = (Seq2SeqTrainingArguments, Seq2SeqTrainer) if seq2seq else (TrainingArguments, Trainer)
    with tempfile.TemporaryDirectory() as tmp:
        args = args_class(output_dir=tmp, per_device_train_batch_size=settings["batch_size"], max_steps=steps,
                          learning_rate=settings["learning_rate"], weight_decay=settings["weight_decay"],
                          warmup_steps=settings["warmup_ratio"], lr_scheduler_type="linear", max_grad_norm=1.0,
                          train_sampling_strategy="group_by_length", report_to="none", save_strategy="no", eval_strategy="no",
                          logging_strategy="steps", logging_steps=1, disable_tqdm=True, dataloader_num_workers=0,
                          use_cpu=True, seed=settings["seed"], remove_unused_columns=False)
        trainer = trainer_class(model=model, args=args, train_dataset=features, data_collator=collator,
                                callbacks=[clock.callback])
        trainer.train()
        losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    sizes = [settings["batch_size"]] * steps
    sizes[-1] = len(features) - settings["batch_size"] * (steps - 1)
    return _rate(clock.stamps, sizes), losses


def weights_digest(model) -> str:
    """A hash of every parameter, to check that both trainers start from the same weights."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def bench_train(size: str, out_dir: Path | None, minilm: Path | None = None, smollm2: Path | None = None,
                families: tuple = ("seq2seq", "causal"), **_) -> list[dict]:
    """Each side loads its own copy of the model (seeded: same weights, checked by hash), one after the other,
    so that only one model and its optimizer state are in memory at a time."""
    import gc

    import torch

    from vecflow.summary.causal import CausalCollator, loss_on_labels, tokenize_examples
    from vecflow.summary.seq2seq import loss_on_labels as seq2seq_loss, make_collator, tokenize_dialogues

    full = size == "full"
    results = []
    timing = "end of step 1 to end of the last step, one length-grouped epoch (the longest batch is step 1 on both)"

    def compare(name, load, features_of, collator_of, settings, workload, peer, forward=None, seq2seq=True):
        digests, rates, losses = {}, {}, {}
        for side in ("ours", "hf"):
            model, tokenizer, extra = load()
            digests[side] = weights_digest(model)
            features = features_of(tokenizer, extra)
            torch.manual_seed(0)
            if side == "ours":
                rates[side], losses[side] = ours_train(model.train(), tokenizer, features, collator_of(tokenizer, model),
                                                       settings, forward=forward)
            else:
                rates[side], losses[side] = hf_train(model.train(), features, collator_of(tokenizer, model), settings,
                                                     seq2seq=seq2seq)
            del model
            gc.collect()
        return record(name, workload={**workload, "rows": len(features), "precision": "fp32", "timing": timing,
                                      "steps": math.ceil(len(features) / settings["batch_size"]), **settings},
                      unit="samples/s", peer=peer, peer_value=rates["hf"][0], ours="vecflow.summary.loop.Loop.train_step",
                      ours_value=rates["ours"][0], goal=1.3, cpu=rates["ours"][1] / rates["hf"][1],
                      check={"ours_mean_loss": float(np.mean(losses["ours"])), "hf_mean_loss": float(np.mean(losses["hf"])),
                             "same_start_weights": digests["ours"] == digests["hf"]}, out_dir=out_dir)

    if "seq2seq" in families:
        rows = dialogue_rows(32, "train") if full else tiny_dialogue_rows(8)
        encoder = Path(minilm or MODELS / "minilm")
        settings = {"batch_size": 4, "learning_rate": 5e-4, "weight_decay": 0.01, "warmup_ratio": 0.1, "seed": 0,
                    "group_by_length": True}
        lengths = {"max_source_length": 128, "max_target_length": 48}
        results.append(compare(
            "train_seq2seq", lambda: seq2seq_model(encoder, rows),
            lambda tokenizer, start: tokenize_dialogues(rows, tokenizer, lengths["max_source_length"],
                                                        lengths["max_target_length"], start),
            make_collator, settings, {"model": f"BERT2BERT from {encoder.name}", **lengths,
                                      "data": "DialogSum train" if full else "tiny"},
            "transformers Seq2SeqTrainer", forward=seq2seq_loss))
    if "causal" in families:
        rows = dialogue_rows(16, "train") if full else tiny_dialogue_rows(8)
        lm = Path(smollm2 or MODELS / "smollm2")
        settings = {"batch_size": 2, "learning_rate": 5e-5, "weight_decay": 0.0, "warmup_ratio": 0.1, "seed": 0,
                    "group_by_length": True}
        spec = {"kind": "causal", "max_source_length": 128 if full else 48, "max_target_length": 48,
                "system_message": None, "user_template": None}
        results.append(compare(
            "train_causal", lambda: (*causal_model(lm), None), lambda tokenizer, _: tokenize_examples(rows, tokenizer, spec),
            lambda tokenizer, model: CausalCollator(tokenizer.pad_token_id), settings,
            {"model": f"{lm.name} (full fine-tune)", "max_source_length": spec["max_source_length"],
             "max_target_length": spec["max_target_length"], "data": "DialogSum train" if full else "tiny"},
            "transformers Trainer", forward=loss_on_labels, seq2seq=False))
    return results


# ---------------------------------------------------------------------------------------------- 5. LVM FLOP/s
def transformer_lvm_flops(batch: int, context: int, dim: int, d_model: int, layers: int) -> int:
    """Forward FLOPs of TransformerLVM (a multiply-add = 2 FLOPs; matmuls only): input projection, per layer
    QKV + output projection + 4x FFN (24·C·d²) and attention scores + weighted sum (4·C²·d), the output
    projection of the last position."""
    per_sample = (2 * context * dim * d_model + layers * (24 * context * d_model ** 2 + 4 * context ** 2 * d_model)
                  + 2 * d_model * dim)
    return batch * per_sample


def step_flops(model, contexts) -> int:
    """Matmul FLOPs of one forward + backward pass on ``contexts`` (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    with FlopCounterMode(display=False) as counter:
        model(contexts).square().sum().backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def matmul_peak(dtype, n: int = 1024, seconds: float = 1.0) -> float:
    """FLOP/s of repeated n×n matmuls in ``dtype`` (best of the timed repeats)."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def lvm_step_rate(dim: int, context: int, sizes: dict, batch: int, steps: int) -> dict:
    """Achieved matmul FLOP/s of ``train_one_epoch`` (one warm-up epoch, one timed epoch of ``steps`` steps)."""
    import torch

    from vecflow.lvm.models import build_model
    from vecflow.lvm.presets import DEFAULTS
    from vecflow.lvm.train import WindowTensors, epoch_generator, make_optimizer, train_one_epoch

    torch.manual_seed(0)
    model = build_model("transformer", dim, context, sizes)
    optimizer = make_optimizer(model, {"learning_rate": 5e-4, "weight_decay": 0.01}, "cpu")  # train-lvm's
    rows = batch * steps
    bank = torch.nn.functional.normalize(torch.randn(rows * (context + 1), dim), dim=-1)
    windows = WindowTensors(bank, torch.arange(rows * (context + 1)).reshape(rows, context + 1),
                            torch.full((rows, 2), -1, dtype=torch.long))  # windows gather from the bank by row
    run = {"batch_size": batch, "grad_clip": 1.0}
    train_one_epoch(model, optimizer, windows, dict(DEFAULTS), run, epoch_generator(0, 0), "cpu")  # warm-up
    seconds, _ = _seconds(lambda: train_one_epoch(model, optimizer, windows, dict(DEFAULTS), run,
                                                  epoch_generator(0, 1), "cpu"))
    flops_per_step = step_flops(model, bank[windows.rows[:batch, :-1]])
    return {"d_model": sizes["d_model"], "layers": sizes["layers"], "batch": batch, "steps": steps,
            "seconds": float(seconds),
            "flops_per_step": flops_per_step, "flops_per_s": flops_per_step * steps / seconds,
            "forward_flops": transformer_lvm_flops(batch, context, dim, sizes["d_model"], sizes["layers"])}


def schema_lvm_sizes() -> dict:
    """The transformer a user gets when the config sets nothing: ``lvm.train``'s defaults in the config schema."""
    import yaml

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    train = schema["properties"]["lvm"]["properties"]["train"]["properties"]
    sizes = {key: train[key]["default"] for key in ("d_model", "layers", "heads", "dropout", "residual")}
    sizes["residual"] = bool(sizes["residual"])
    return sizes


def bench_lvm(size: str, out_dir: Path | None, batch: int | None = None, **_) -> dict:
    """The schema's default transformer (d_model 256, 4 layers at the time of writing) at batch 256 (full); the
    size sweep shows where the fraction of peak comes from (the demo config's d_model 64 among them)."""
    import torch

    full = size == "full"
    batch = batch or (256 if full else 32)
    dim, context = (384 if full else 32), 5
    sizes = schema_lvm_sizes() if full else {"d_model": 64, "layers": 2, "heads": 4, "dropout": 0.1, "residual": True}
    main_run = lvm_step_rate(dim, context, sizes, batch, 20 if full else 3)
    sweep = [lvm_step_rate(dim, context, {**sizes, "d_model": d, "layers": 2}, b, 10 if full else 2)
             for d, b in ((64, batch), (64, 4 * batch), (512, batch))]  # where the fraction of peak comes from
    n = 1024 if full else 256
    peak32 = matmul_peak(torch.float32, n, 1.0 if full else 0.2)
    peak16 = matmul_peak(torch.bfloat16, n, 1.0 if full else 0.2)
    for point in sweep:
        point["fraction_of_fp32_peak"] = point["flops_per_s"] / peak32
    print(f"[bench lvm] size sweep (2 layers): " + "; ".join(f"d_model {p['d_model']} batch {p['batch']}: "
                                                 f"{p['fraction_of_fp32_peak']:.1%} of fp32 peak" for p in sweep))
    return record("lvm", workload={"arch": "transformer", **sizes, "dim": dim, "context": context, "batch": batch,
                                   "steps": main_run["steps"], "loss": "lvm_presets.DEFAULTS (MSE)",
                                   "optimizer": "AdamW", "flops_per_step": main_run["flops_per_step"],
                                   "analytic_forward_flops": main_run["forward_flops"],
                                   "flop_count": "matmul FLOPs of forward + backward (torch FlopCounterMode; its "
                                   "forward count equals transformer_lvm_flops)"},
                  unit="FLOP/s", peer=f"torch.matmul peak fp32 ({n}x{n})", peer_value=peak32,
                  ours="vecflow.lvm.train.train_one_epoch (fp32)", ours_value=main_run["flops_per_s"], goal=0.35,
                  check={"steps_per_s": main_run["steps"] / main_run["seconds"]},
                  extra={"peak_bf16_flops": peak16, "fraction_of_bf16_peak": main_run["flops_per_s"] / peak16,
                         "seconds": main_run["seconds"], "size_sweep": sweep}, out_dir=out_dir)


# ---------------------------------------------------------------------------------------------- 8. server
def bench_bundle(out: Path, encoder_dir: Path, bank_texts: list[str], context: int = 5, seed: int = 0) -> Path:
    """A deployment bundle (``vecflow.ship.deploy.build_bundle``): the encoder, the default transformer LVM with
    seeded random weights, a bank of ``bank_texts`` encoded by that encoder; the encoder doubles as summarizer
    folder (the server loads it only for /summarize, which is not measured)."""
    import torch

    from vecflow.ship.deploy import build_bundle
    from vecflow.core.encoder import SentenceEncoder
    from vecflow.core.io import save_tensors, write_jsonl
    from vecflow.lvm.models import build_model, model_config, save_lvm

    parts_dir = out.parent / f"{out.name}.parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    encoder = SentenceEncoder(encoder_dir, device="cpu")
    sizes = {"d_model": 64, "layers": 2, "heads": 4, "dropout": 0.1, "residual": True}
    torch.manual_seed(seed)
    save_lvm(parts_dir / "lvm", build_model("transformer", encoder.dim, context, sizes),
             model_config("transformer", encoder.dim, context, sizes))
    save_tensors(parts_dir / "bank.safetensors", {"embeddings": encoder.encode(bank_texts)})
    write_jsonl(parts_dir / "bank.index.jsonl", [{"article_id": 0, "chunk_index": i, "text": t}
                                                 for i, t in enumerate(bank_texts)])
    decision = {"name": "bench", "deploy": True, "summarizer": {"family": "seq2seq"}}
    spec = {"kind": "seq2seq", "max_source_length": 64, "max_target_length": 16}
    build_bundle(out, "bench", decision, {"lvm": parts_dir / "lvm", "encoder": Path(encoder_dir),
                                          "summarizer": Path(encoder_dir), "bank_embeddings": parts_dir / "bank.safetensors",
                                          "bank_index": parts_dir / "bank.index.jsonl"}, [], fallback_spec=spec)
    return out


def percentiles(latencies: list[float]) -> dict:
    ms = np.array(latencies) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "requests": len(ms)}


def load_test(url: str, bodies: list[dict], clients: int) -> tuple[float, list[float]]:
    """``clients`` threads, each with its own keep-alive connection, send ``bodies`` (the server's one load
    client, ``vecflow.ship.loadgen``); returns (requests/s over the whole run, per-request latencies). Any
    non-200 answer fails the run.

    The bodies are JSON-encoded before the clock starts (as httpx's ``json=`` encodes them): the clients share
    the machine's cores with the server, and encoding a 5x384 context costs them about as much CPU as the
    server's HTTP parsing of it."""
    from urllib.parse import urlsplit

    from vecflow.ship import loadgen

    parts = urlsplit(url)
    calls = [loadgen.Call("POST", parts.path, json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                                                         allow_nan=False).encode()) for body in bodies]
    start = time.perf_counter()
    results = loadgen.run_clients(f"{parts.scheme}://{parts.netloc}", iter(calls), clients, timeout_s=60.0)
    rate = len(bodies) / (time.perf_counter() - start)
    bad = [r for r in results if r.status != 200]
    if bad:
        raise VecflowError(f"{url}: HTTP {bad[0].status or bad[0].error} ({len(bad)} of {len(results)} not 200)")
    return rate, [r.seconds for r in results]


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far, all its threads (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_serve(size: str, out_dir: Path | None, minilm: Path | None = None, requests: int | None = None,
                clients: int = 8, **_) -> list[dict]:
    """/predict-next and /encode over loopback (a real ``vecflow serve`` process, 8 concurrent clients) vs the
    same functions called in-process one request at a time."""
    import socket
    import subprocess
    import sys

    import httpx

    from vecflow.ship import serve

    full = size == "full"
    encoder_dir = Path(minilm or MODELS / "minilm")
    count = requests or (400 if full else 24)
    texts = chunk_texts(count) if full else tiny_texts(count)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = bench_bundle(Path(tmp) / "bundle", encoder_dir, texts[:64])
        bundle = serve.Bundle(root, device="cpu")
        rng = np.random.default_rng(0)
        contexts = rng.standard_normal((count, bundle.context_length, bundle.dim)).astype(np.float32)
        workloads = {
            "predict-next": ([{"context": c.tolist()} for c in contexts], lambda i: serve.predict_next(bundle, contexts[i])),
            "encode": ([{"texts": [t]} for t in texts], lambda i: bundle.encoder.encode([texts[i]])),
        }
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        server = subprocess.Popen([sys.executable, "-m", "vecflow.cli", "serve", "--bundle", str(root), "--host",
                                   "127.0.0.1", "--port", str(port), "--device", "cpu"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.time() + 180
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.time() > deadline:
                    raise VecflowError(f"vecflow serve did not start on port {port}")
                time.sleep(0.5)
            for name, (bodies, local) in workloads.items():
                load_test(f"{base}/{name}", bodies[:clients], clients)  # lazy model loads + warm-up
                local(0)
                latencies_local = []
                start = time.perf_counter()
                for i in range(count):
                    t0 = time.perf_counter()
                    local(i)
                    latencies_local.append(time.perf_counter() - t0)
                local_rate = count / (time.perf_counter() - start)
                cpu_before, load_before = process_cpu_seconds(server.pid), os.getloadavg()[0]
                rate, latencies = load_test(f"{base}/{name}", bodies, clients)
                cpu_after = process_cpu_seconds(server.pid)
                served = percentiles(latencies)
                if cpu_before is not None and cpu_after is not None:  # the server's CPU per request, all threads
                    served["server_cpu_ms_per_request"] = (cpu_after - cpu_before) * 1e3 / count
                served["load_average_1min"] = [load_before, os.getloadavg()[0]]  # before, after the run
                extra = {"server": served, "in_process": percentiles(latencies_local)}
                if name == "predict-next":
                    extra.update(goal_p99_ms=50.0, goal_met=served["p99_ms"] <= 50.0)
                results.append(record(f"serve_{name.replace('-', '_')}", workload={
                    "endpoint": f"POST /{name}", "requests": count, "clients": clients, "transport": "loopback HTTP "
                    "(httpx keep-alive, one connection per client) to a vecflow serve process (uvicorn)",
                    "model": "default transformer LVM (random weights)" if name == "predict-next" else encoder_dir.name,
                    "body": f"one context {bundle.context_length}x{bundle.dim}" if name == "predict-next" else "one text",
                    "in_process": "the same function called in this process, one request at a time"},
                    unit="requests/s", peer="in-process call", peer_value=local_rate, ours="vecflow serve",
                    ours_value=rate, goal=None, check={"all_200": True}, extra=extra, out_dir=out_dir))
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    for result in results:
        print(f"[bench {result['benchmark']}] latency server {result['server']} in-process {result['in_process']}")
    return results


# ---------------------------------------------------------------------------------------------- 7. start-up
def bench_startup(size: str, out_dir: Path | None, **_) -> dict:
    """Per-job start-up floor: ``vecflow CMD --help`` in a fresh process for every command (imports its module
    and parses arguments), next to ``import torch`` / ``import transformers`` alone. No peer: seconds."""
    import subprocess
    import sys

    from vecflow.cli import COMMANDS

    def run(argv):
        start = time.perf_counter()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise VecflowError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()[-300:]}")
        return seconds

    commands = list(COMMANDS) if size == "full" else ["fivecat", "report", "score"]
    floor = {"python": run([sys.executable, "-c", "pass"]),
             "import numpy": run([sys.executable, "-c", "import numpy"]),
             "import torch": run([sys.executable, "-c", "import torch"]),
             "import transformers": run([sys.executable, "-c", "import torch, transformers"])}
    per_command = {name: run([sys.executable, "-m", "vecflow.cli", name, "--help"]) for name in commands}
    slowest = max(per_command, key=per_command.get)
    print(f"[bench startup] floor {json.dumps({k: round(v, 2) for k, v in floor.items()})}")
    print(f"[bench startup] per command {json.dumps({k: round(v, 2) for k, v in per_command.items()})}")
    result = {"benchmark": "startup", "unit": "s", "floor_s": floor, "per_command_s": per_command,
              "slowest": slowest, "mean_command_s": float(np.mean(list(per_command.values()))),
              "workload": {"commands": len(commands), "how": "subprocess `python -m vecflow.cli CMD --help`, once each"},
              "machine": machine(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if out_dir is not None:
        write_json(Path(out_dir) / "startup.json", result)
    return result


# ---------------------------------------------------------------------------------------------- 8. pipeline
def bench_pipeline(size: str, out_dir: Path | None, **options) -> dict:
    """No-op rerun, report regeneration and per-job start-up of a finished DAG (``vecflow.bench_pipeline``)."""
    from vecflow.bench_pipeline import bench_pipeline as run

    return run(size, out_dir, **options)


# ---------------------------------------------------------------------------------------------- CLI
RUNNERS = {"fivecat": bench_fivecat, "bertscore": bench_bertscore, "embed": bench_embed, "generate": bench_generate,
           "train": bench_train, "lvm": bench_lvm, "serve": bench_serve, "startup": bench_startup,
           "pipeline": bench_pipeline}


def profile_summary(raw_path: Path, within: str | None = None, top: int = 12) -> dict:
    """Where the time goes, from a ``py-spy record -f raw`` file: the share of samples per deepest vecflow frame
    and per leaf frame, counting only stacks that pass through ``within`` (e.g. ``embed_chunks``)."""
    from collections import Counter

    deepest, leaf, total = Counter(), Counter(), 0
    for line in Path(raw_path).read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or (within and not any(within in f for f in frames)):
            continue
        total += int(count)
        ours = [f for f in frames if "vecflow/" in f]
        deepest[ours[-1] if ours else "(outside vecflow)"] += int(count)
        leaf[frames[-1]] += int(count)
    share = lambda counter: [(name, round(n / max(total, 1), 3)) for name, n in counter.most_common(top)]  # noqa: E731
    return {"samples": total, "within": within, "deepest_vecflow_frame": share(deepest), "leaf_frame": share(leaf)}


COUNT_OPTION = {"fivecat": "windows_total", "bertscore": "pairs", "embed": "chunks", "generate": "dialogues",
                "serve": "requests"}
TABLE_BEGIN, TABLE_END = "<!-- bench-table:begin -->", "<!-- bench-table:end -->"


def _fmt_value(value: float, unit: str) -> str:
    if unit == "FLOP/s":
        return f"{value / 1e9:.1f} GFLOP/s"
    return f"{value:.3g} {unit}"


def render_table(out_dir: Path) -> str:
    """The figures of every ``OUT_DIR/*.json`` as a markdown table (the part of BENCHMARKS.md that
    ``vecflow bench table`` rewrites)."""
    rows = ["| benchmark | peer | ours | ratio (wall) | ratio (CPU time) | goal | check | machine, load |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    def priority(path: Path) -> tuple:
        stem = path.stem
        return (next((i for i, name in enumerate(BENCHMARKS) if stem.startswith(name)), len(BENCHMARKS)), stem)

    workloads = []
    for path in sorted(Path(out_dir).glob("*.json"), key=priority):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "benchmark" not in data:  # e.g. a profile summary
            continue
        workloads.append(f"- `{data.get('benchmark')}` ({data.get('measured_at')}): "
                         f"`{json.dumps(data.get('workload'), default=str)}`")
        m = data.get("machine", {})
        where = f"{m.get('cores')} cores, {m.get('torch_threads')} threads, {m.get('dtype')}, load {m.get('load_average_1m')}"
        if data.get("benchmark") == "startup":
            floor = ", ".join(f"{k} {v:.2f} s" for k, v in data["floor_s"].items())
            rows.append(f"| startup | {floor} | mean `vecflow CMD --help` {data['mean_command_s']:.2f} s, slowest "
                        f"{data['slowest']} {data['per_command_s'][data['slowest']]:.2f} s | | | | | {where} |")
            continue
        if data.get("benchmark") == "pipeline":
            from vecflow.bench_pipeline import table_row

            rows.append(table_row(data, where))
            continue
        unit = data["unit"]
        goal = data.get("goal_ratio")
        if "goal_p99_ms" in data:
            goal_text = f"p99 <= {data['goal_p99_ms']:g} ms: {'met' if data['goal_met'] else 'MISSED'} " \
                        f"(p50/p95/p99 {data['server']['p50_ms']:.1f}/{data['server']['p95_ms']:.1f}/" \
                        f"{data['server']['p99_ms']:.1f} ms)"
        elif "server" in data:
            goal_text = (f"p50/p95/p99 {data['server']['p50_ms']:.1f}/{data['server']['p95_ms']:.1f}/"
                         f"{data['server']['p99_ms']:.1f} ms")
        else:
            goal_text = "" if goal is None else f">= {goal:g}x: {'met' if data['goal_met'] else 'MISSED'}"
        check = ", ".join(f"{k} {v:.2g}" if isinstance(v, float) else f"{k} {v}" for k, v in data["check"].items()
                          if k not in ("worst_key", "mismatched"))
        cpu = data.get("cpu_time_ratio")
        rows.append(f"| {data['benchmark']} | {data['peer']['name']}: {_fmt_value(data['peer']['value'], unit)} | "
                    f"{data['ours']['name']}: {_fmt_value(data['ours']['value'], unit)} | {data['ratio']:.2f}x | "
                    f"{'' if cpu is None else f'{cpu:.2f}x'} | {goal_text} | {check} | {where} |")
    return "\n".join(rows + ["", "Workloads, exactly as run:", ""] + workloads)


def update_markdown(markdown: Path, out_dir: Path) -> None:
    """Replace the table between the bench-table markers of ``markdown`` with the figures in ``out_dir``."""
    from vecflow.core.io import write_text

    text = markdown.read_text(encoding="utf-8")
    if TABLE_BEGIN not in text or TABLE_END not in text:
        raise VecflowError(f"{markdown}: no {TABLE_BEGIN} ... {TABLE_END} section to fill")
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    write_text(markdown, f"{head}{TABLE_BEGIN}\n{render_table(out_dir)}\n{TABLE_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow bench", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=[*BENCHMARKS, "all", "table", "profile"],
                        help="a benchmark, all of them, 'table' (rewrite --markdown's table from --out-dir) or "
                             "'profile' (summarise a py-spy raw file: --raw, --within)")
    parser.add_argument("--markdown", type=Path, default=REPO / "BENCHMARKS.md", help="for 'table'")
    parser.add_argument("--raw", type=Path, help="for 'profile': a `py-spy record -f raw` output")
    parser.add_argument("--within", help="for 'profile': count only stacks through this function")
    parser.add_argument("--size", choices=["tiny", "full"], default="full")
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT))
    parser.add_argument("--minilm", type=Path, help="encoder folder (default resources/models/minilm)")
    parser.add_argument("--smollm2", type=Path, help="causal LM folder (default resources/models/smollm2)")
    parser.add_argument("--families", default="seq2seq,causal", help="generate/train: seq2seq,causal")
    parser.add_argument("--count", type=int, help="the workload's size instead of --size's (windows, pairs, "
                                                  "chunks, dialogues or requests)")
    parser.add_argument("--workdir", type=Path, help="pipeline: a finished run of the demo DAG (default: the "
                                                     "repository's at --size full; a tiny one built at --size tiny)")
    args = parser.parse_args(argv)
    if args.name == "profile":
        if args.raw is None or not args.raw.is_file():
            raise VecflowError(f"--raw: {args.raw}: py-spy raw file not found")
        summary = profile_summary(args.raw, args.within)
        print(json.dumps(summary, indent=1))
        write_json(Path(args.out_dir) / f"profile-{args.raw.stem}.json", summary)
        return 0
    if args.name == "table":
        update_markdown(args.markdown, Path(args.out_dir))
        print(f"[bench] {args.markdown}: table rewritten from {args.out_dir}")
        return 0
    names = BENCHMARKS if args.name == "all" else (args.name,)
    failed = []
    for name in names:
        options = {COUNT_OPTION[name]: args.count} if args.count and name in COUNT_OPTION else {}
        try:
            RUNNERS[name](args.size, Path(args.out_dir), minilm=args.minilm, smollm2=args.smollm2,
                          families=tuple(args.families.split(",")), workdir=args.workdir, **options)
        except Exception as exc:  # noqa: BLE001 - one failed benchmark must not cost the others' figures
            if len(names) == 1:
                raise
            failed.append(name)
            print(f"[bench {name}] FAILED: {type(exc).__name__}: {exc}", flush=True)
    if failed:
        print(f"[bench] failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0
