"""5CAT: the five-category evaluation of a next-vector (LVM) model, with baselines (docs/design.md §4).

Offsets are relative to the TRUE TARGET chunk: t = the target's own chunk index, so c_0 compares the
prediction with the target, c_-1 with ctx[-1] and c_+1 with the chunk after the target.

- A offset sweep: c_k = mean cos(ŷ, chunk[t+k]) for k = -3..+3, every c_k averaged over the SAME windows:
  those where all seven chunks exist in the same article (never wrapped into a neighbouring article), n
  reported; margin = c_0 - max_{k≠0} c_k; peak_k = argmax_k c_k. Only when no window has all seven offsets
  does each c_k fall back to the windows where chunk t+k exists (``same_windows: false``).
- B retrieval: rank of chunk[t] among all chunks of its article (articles with >= 6 chunks): R@1, R@5, MRR.
  Ties are ranked pessimistically: a candidate scoring the same as the target ranks above it.
- C ablations: Δ = cos(ŷ', y) - cos(ŷ, y) under shuffled, reversed, leave-one-out (each slot replaced by
  the normalised mean of the others, averaged over slots), last-slot-repeated and other-article contexts.
- D rollout: feed predictions back for H steps; mean over h of cos(ŷ_h, chunk[t+h-1]) where it exists.
- E generalisation: the same numbers on VAL and OOD; |VAL - OOD| for c_0, margin and R@1.
- The Large Concept Model's metrics (Barrault et al. 2024, Table 3), for comparison with published figures:
  CA = per window the share of candidates farther from ŷ than y (cos(ŷ, c) < cos(ŷ, y); ties are not
  farther), candidates 256 seeded chunks of the split outside the target's article plus the article's chunks
  other than t-1, t, t+1 (``ca_out``, ``ca_in`` each group alone); PAR = max_j cos(ŷ, ctx_j) / max_j cos(y, ctx_j)
  (> 1: the prediction is closer to the context than the true next chunk is), mean and median.

Everything works on a predictor ``predict(contexts (B, C, D)) -> (B, D)``, so a model, a baseline or an
oracle plug in the same way.

This module computes the numbers; ``fivecat_verdicts`` judges them (gates, dominance over the baselines),
``fivecat_cli`` is ``vecflow fivecat`` and ``vecflow lvm-curve`` (inputs, plots, the results file written through
``fivecat_results``).
"""

from __future__ import annotations

import numpy as np

from vecflow.core.errors import VecflowError
from vecflow.lvm.bank import ChunkBank
from vecflow.lvm.baselines import Predictor, normalise
from vecflow.lvm.windows import Windows, check_against_bank

OFFSETS = tuple(range(-3, 4))
GAP_METRICS = ("c0", "margin", "r1")


# ---------------------------------------------------------------------------------------------- metrics
def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a_n, b_n) for every row n (0 for a zero row), from dot products: no normalised copies of a and b."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    norms = np.sqrt(np.einsum("nd,nd->n", a, a)) * np.sqrt(np.einsum("nd,nd->n", b, b))
    return np.einsum("nd,nd->n", a, b) / np.maximum(norms, 1e-24)


def _mean_or_none(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def offset_sweep(predictions: np.ndarray, windows: Windows, bank: ChunkBank) -> dict:
    """A: c_k for k in OFFSETS over the windows where all seven chunks exist (``n``; per offset ``n`` is the
    windows averaged and ``n_available`` those where chunk t+k exists), margin = c_0 - max_{k≠0} c_k, peak_k."""
    rows = {k: bank.rows(windows.article_ids, windows.target_indices + k) for k in OFFSETS}
    common = np.logical_and.reduce([rows[k] >= 0 for k in OFFSETS])
    same_windows = bool(common.any())
    offsets = {}
    for k in OFFSETS:
        used = common if same_windows else rows[k] >= 0
        cosines = rowwise_cosine(predictions[used], bank.embeddings[rows[k][used]])
        offsets[str(k)] = {"c": _mean_or_none(cosines), "n": int(used.sum()), "n_available": int((rows[k] >= 0).sum())}
    scored = {int(k): v["c"] for k, v in offsets.items() if v["c"] is not None}
    others = [c for k, c in scored.items() if k != 0]
    margin = scored[0] - max(others) if others else None
    return {"offsets": offsets, "c0": scored[0], "margin": margin, "peak_k": max(scored, key=scored.get),
            "n": int(common.sum()) if same_windows else int((rows[0] >= 0).sum()), "same_windows": same_windows}


def retrieval(predictions: np.ndarray, windows: Windows, bank: ChunkBank, min_article_chunks: int = 6,
              batch_values: int = 1 << 24) -> dict:
    """B: rank of chunk[t] among all chunks of its article, for articles with >= ``min_article_chunks``."""
    codes = bank.article_codes(windows.article_ids)
    kept = np.flatnonzero(bank.article_sizes[codes] >= min_article_chunks)
    true_rows = bank.rows(windows.article_ids[kept], windows.target_indices[kept])
    ranks = article_ranks(normalise(predictions[kept]), codes[kept], true_rows, bank, batch_values)
    return {
        "r1": _mean_or_none(ranks <= 1), "r5": _mean_or_none(ranks <= 5), "mrr": _mean_or_none(1.0 / ranks),
        "n": int(len(ranks)), "n_articles": int(len(np.unique(windows.article_ids[kept]))),
        "min_article_chunks": min_article_chunks,
    }


def article_groups(codes: np.ndarray, bank: ChunkBank):
    """Yield ``(rows, members)`` per article: the query rows whose article code is the same (in row order) and
    that article's bank rows, so each article's chunks are scored by one matmul."""
    order = np.argsort(codes, kind="stable")
    for group in np.split(order, np.flatnonzero(np.diff(codes[order])) + 1):
        if not len(group):
            continue
        members = bank.article_table[codes[group[0]]]
        yield group, members[members >= 0]


def article_ranks(queries: np.ndarray, codes: np.ndarray, true_rows: np.ndarray, bank: ChunkBank,
                  batch_values: int = 1 << 24) -> np.ndarray:
    """Rank of each query's true row (``true_rows``) among the chunks of its article (``codes``): one matmul per
    article, at most ``batch_values`` scores at a time. Ties rank pessimistically (a candidate scoring the
    same as the true row ranks above it)."""
    ranks = np.zeros(len(queries), dtype=np.int64)
    for group, members in article_groups(codes, bank):
        candidates = bank.embeddings[members].T
        true_column = np.argmax(members == true_rows[group, None], axis=1)
        step = max(1, batch_values // len(members))
        for start in range(0, len(group), step):
            rows = slice(start, start + step)
            scores = queries[group[rows]] @ candidates
            true_score = np.take_along_axis(scores, true_column[rows, None], axis=1)
            ranks[group[rows]] = (scores >= true_score).sum(axis=1)
    return ranks


def shuffle_orders(n: int, slots: int, rng: np.random.Generator) -> np.ndarray:
    """(n, slots): for each window a seeded random slot order that is never the original order (when C > 1)."""
    order = np.argsort(rng.random((n, slots)), axis=1)
    identity = (order == np.arange(slots)).all(axis=1)
    order[identity] = np.roll(order[identity], 1, axis=1)
    return order


def shuffled_slots(contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each window's slots in a seeded random order that is never the original order (when C > 1)."""
    order = shuffle_orders(*contexts.shape[:2], rng)
    return np.take_along_axis(contexts, order[:, :, None], axis=1)


def leave_one_out(contexts: np.ndarray, slot: int) -> np.ndarray:
    """Replace ``slot`` by the normalised mean of the other slots."""
    others = np.delete(contexts, slot, axis=1)
    ablated = contexts.copy()
    ablated[:, slot] = normalise(others.mean(axis=1))
    return ablated


def other_article_donors(article_ids: np.ndarray, rng: np.random.Generator, tries: int = 100) -> np.ndarray:
    """For each window, a seeded random window of a different article (-1 where none exists)."""
    donors = rng.permutation(len(article_ids))
    for _ in range(tries):
        clash = np.flatnonzero(article_ids[donors] == article_ids)
        if not len(clash):
            break
        donors[clash] = rng.integers(0, len(article_ids), size=len(clash))
    donors[article_ids[donors] == article_ids] = -1
    return donors


def ablated_contexts(contexts: np.ndarray, orders: np.ndarray):
    """(name, contexts) for every ablation of these windows' own contexts: leave_one_out_<slot> for each slot,
    shuffled (by ``orders``, see ``shuffle_orders``), reversed, last_repeated; one at a time."""
    slots = contexts.shape[1]
    for slot in range(slots):
        yield f"leave_one_out_{slot}", leave_one_out(contexts, slot)
    yield "shuffled", np.take_along_axis(contexts, orders[:, :, None], axis=1)
    yield "reversed", np.ascontiguousarray(contexts[:, ::-1])  # torch refuses negative strides
    yield "last_repeated", np.repeat(contexts[:, -1:], slots, axis=1)


def ablation_cosines(predict: Predictor, contexts: np.ndarray, targets: np.ndarray, orders: np.ndarray) -> dict:
    """{ablation: cos(ŷ', y) per window}, one predictor call per ablation."""
    if len(contexts) == 0:
        return {name: np.zeros(0, dtype=np.float32) for name, _ in ablated_contexts(contexts, orders)}
    return {name: rowwise_cosine(predict(ablated), targets) for name, ablated in ablated_contexts(contexts, orders)}


def ablation_deltas(cosines: dict, base_cosine: np.ndarray, other_cosine: np.ndarray, swapped: np.ndarray) -> dict:
    """C from per-window cosines: Δ = mean(cos(ŷ', y) - cos(ŷ, y)) per ablation (None over no window);
    ``other_cosine`` is cos(ŷ', y) of the windows ``swapped`` to another article's context."""

    def delta(cosine: np.ndarray, rows: np.ndarray | slice = slice(None)) -> float | None:
        return _mean_or_none(cosine - base_cosine[rows])

    slots = sum(name.startswith("leave_one_out_") for name in cosines)
    per_slot = [delta(cosines[f"leave_one_out_{slot}"]) for slot in range(slots)]
    result = {
        "shuffled": delta(cosines["shuffled"]),
        "reversed": delta(cosines["reversed"]),
        "leave_one_out": float(np.mean(per_slot)),
        "last_repeated": delta(cosines["last_repeated"]),
        "other_article": delta(other_cosine, swapped),
    }
    deltas = [v for v in result.values() if v is not None]
    result.update({"leave_one_out_per_slot": per_slot, "other_article_n": int(len(swapped)),
                   "loses_under_all": bool(deltas) and all(v < 0 for v in deltas)})
    return result


def ablations(predict: Predictor, contexts: np.ndarray, targets: np.ndarray, article_ids: np.ndarray,
              base_cosine: np.ndarray, rng: np.random.Generator, predictions: np.ndarray | None = None) -> dict:
    """C: Δ = cos(ŷ', y) - cos(ŷ, y) for each context ablation (negative = the model used that information).

    ``predictions``: the predictor's answers on ``contexts``, when known. The other-article context of a window
    IS the context of its donor window, so its prediction is then read there instead of predicted again."""
    donors = other_article_donors(article_ids, rng)
    orders = shuffle_orders(*contexts.shape[:2], rng)
    swapped = np.flatnonzero(donors >= 0)
    other = (predictions[donors[swapped]] if predictions is not None
             else predict(contexts[donors[swapped]]) if len(swapped) else np.zeros((0, contexts.shape[2])))
    return ablation_deltas(ablation_cosines(predict, contexts, targets, orders), base_cosine,
                           rowwise_cosine(other, targets[swapped]), swapped)


def rollout_predictions(predict: Predictor, first_predictions: np.ndarray, contexts: np.ndarray,
                        steps: int) -> list[np.ndarray]:
    """ŷ_1..ŷ_steps: the predictions fed back into the context, one step at a time (ŷ_1 = first_predictions)."""
    predictions = [first_predictions]
    for _ in range(1, steps):
        contexts = np.concatenate([contexts[:, 1:], predictions[-1][:, None]], axis=1)
        predictions.append(normalise(predict(contexts)))
    return predictions[:steps]


def rollout_scores(step_predictions: list[np.ndarray], windows: Windows, bank: ChunkBank) -> dict:
    """D from the fed-back predictions: per step h the mean cos(ŷ_h, chunk[t+h-1]) where that chunk exists."""
    per_step, n_per_step = [], []
    for h, predictions in enumerate(step_predictions, start=1):
        rows = bank.rows(windows.article_ids, windows.target_indices + h - 1)
        present = rows >= 0
        per_step.append(_mean_or_none(rowwise_cosine(predictions[present], bank.embeddings[rows[present]])))
        n_per_step.append(int(present.sum()))
    scored = [c for c in per_step if c is not None]
    return {"rollout": float(np.mean(scored)) if scored else None, "per_step": per_step, "n_per_step": n_per_step}


def rollout(predict: Predictor, first_predictions: np.ndarray, contexts: np.ndarray, windows: Windows,
            bank: ChunkBank, steps: int) -> dict:
    """D: feed predictions back for ``steps`` steps; per-step mean cos(ŷ_h, chunk[t+h-1]) where it exists."""
    return rollout_scores(rollout_predictions(predict, first_predictions, contexts, steps), windows, bank)


# LCM metrics (Barrault et al. 2024, Table 3): contrastive accuracy and paraphrasing
CA_NEGATIVES = 256
CA_TIE = 1e-5  # a candidate whose cosine is within this of cos(ŷ, y) is a tie (float32 rounding): not farther
CA_STREAM = 0xCA  # the CA sample's own random stream, so the ablation draws stay what they were
CA_CANDIDATES = {  # what the JSON says about the candidates (beside their number and seed)
    "out_of_article_draw": "uniform with replacement over this split's chunks outside the target's article",
    "in_article": "every chunk of the target's article except t-1, t and t+1",
    "farther": f"cos(ŷ, c) < cos(ŷ, y) - {CA_TIE:g} (ties count as not farther)",
}
PAR_DEFINITION = "max_j cos(ŷ, ctx_j) / max_j cos(y, ctx_j)"
PAR_VS_TARGET_DEFINITION = "max_j cos(ŷ, ctx_j) / cos(ŷ, y)"


def ca_generator(seed: int) -> np.random.Generator:
    """The generator of the out-of-article CA sample: ``random((n, negatives))``, one row of uniforms per window
    in window order (drawn block by block, the same stream)."""
    return np.random.default_rng([int(seed), CA_STREAM])


def rows_by_article(bank: ChunkBank) -> tuple[np.ndarray, np.ndarray]:
    """Every bank row in (article, chunk) order, and each article's first position in that order."""
    table = bank.article_table
    return table[table >= 0], np.concatenate([[0], np.cumsum(bank.article_sizes)[:-1]])


def out_of_article_rows(codes: np.ndarray, draws: np.ndarray, ordered: np.ndarray, starts: np.ndarray,
                        sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map uniforms ``draws`` (n, K) in [0, 1) to bank rows outside each window's article (``codes``), uniformly:
    position floor(u · m) among the m rows of the other articles in (article, chunk) order. Returns the rows
    and, per window, whether any row lies outside its article."""
    outside = len(ordered) - sizes[codes]
    position = np.minimum((draws * outside[:, None]).astype(np.int64), np.maximum(outside - 1, 0)[:, None])
    position += np.where(position >= starts[codes][:, None], sizes[codes][:, None], 0)  # skip the own article
    return ordered[np.minimum(position, len(ordered) - 1)], outside > 0


def in_article_counts(queries: np.ndarray, true_scores: np.ndarray, codes: np.ndarray, target_indices: np.ndarray,
                      bank: ChunkBank, norms: np.ndarray, batch_values: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """Per window: how many chunks of its own article other than t-1, t, t+1 lie farther from the (unit) query than
    the target (cosine below ``true_scores`` - CA_TIE), and how many such chunks there are; one matmul per article."""
    farther = np.zeros(len(queries), dtype=np.int64)
    total = np.zeros(len(queries), dtype=np.int64)
    for group, members in article_groups(codes, bank):
        chunks = bank.chunk_indices[members]
        candidates = (bank.vectors(members) / np.maximum(norms[members], 1e-12)[:, None]).T
        step = max(1, batch_values // len(members))
        for start in range(0, len(group), step):
            rows = group[start:start + step]
            allowed = np.abs(chunks[None, :] - target_indices[rows, None]) > 1
            farther[rows] = ((queries[rows] @ candidates < true_scores[rows, None] - CA_TIE) & allowed).sum(axis=1)
            total[rows] = allowed.sum(axis=1)
    return farther, total


def _ratio_summary(numerator: np.ndarray, denominator: np.ndarray, mean: bool = True) -> dict:
    """Mean and median of numerator / denominator over the windows with a positive denominator (the others are
    counted, not averaged: a ratio over a cosine <= 0 means nothing); share_above_1 counts ratios above
    1 + CA_TIE (an oracle's 1.0 computed two ways is not above 1)."""
    kept = denominator > 0
    ratios = numerator[kept].astype(np.float64) / denominator[kept]
    summary = {"mean": _mean_or_none(ratios)} if mean else {}
    return {**summary, "median": float(np.median(ratios)) if len(ratios) else None,
            "share_above_1": _mean_or_none(ratios > 1 + CA_TIE), "n": int(kept.sum()),
            "excluded_nonpositive": int((~kept).sum())}


def lcm_metrics(predictions: np.ndarray, windows: Windows, bank: ChunkBank, negatives: int = CA_NEGATIVES,
                seed: int = 0, batch_values: int = 1 << 22) -> dict:
    """The Large Concept Model's CA and PAR (Barrault et al. 2024, Table 3) for these predictions.

    CA (contrastive accuracy), per window the share of candidates c with cos(ŷ, c) < cos(ŷ, y) (a tie, within
    CA_TIE, is not farther), averaged over windows. Candidates: ``negatives`` bank rows drawn uniformly (with
    replacement, ``ca_generator(seed)``) from this split's chunks outside the target's article, plus every chunk
    of the target's article except t-1, t and t+1; ``ca_out`` and ``ca_in`` are the two groups alone.
    PAR (paraphrasing) per window = max_j cos(ŷ, ctx_j) / max_j cos(y, ctx_j): > 1, the prediction is closer to
    the context than the true next chunk is; mean and median over windows whose denominator is > 0 (the rest
    counted). ``par_detail.vs_target`` is max_j cos(ŷ, ctx_j) / cos(ŷ, y) (> 1: closer to a context chunk than to
    y itself), median and share above 1 only: its denominator depends on the prediction and nears 0 for a poor
    one, so its mean is decided by a few windows (and by float rounding in them).
    Out-of-article candidates and contexts are gathered ``batch_values`` floats at a time, one matmul per block.
    """
    n, dim = len(windows), bank.dim
    queries = normalise(predictions)
    targets = windows.targets(bank)
    true_scores = rowwise_cosine(queries, targets)
    norms = np.sqrt(np.einsum("nd,nd->n", bank.embeddings, bank.embeddings))
    codes = bank.article_codes(windows.article_ids)
    ordered, starts = rows_by_article(bank)
    generator = ca_generator(seed)
    out_farther = np.zeros(n, dtype=np.int64)
    out_total = np.zeros(n, dtype=np.int64)
    context_pred = np.zeros(n, dtype=np.float32)
    context_true = np.zeros(n, dtype=np.float32)
    step = max(1, batch_values // (max(negatives, windows.context_length) * dim))
    for start in range(0, n, step):
        rows = slice(start, start + step)
        query = queries[rows, :, None]
        if negatives:
            negative_rows, valid = out_of_article_rows(codes[rows], generator.random((len(query), negatives)),
                                                       ordered, starts, bank.article_sizes)
            candidates = np.take(bank.embeddings, negative_rows, axis=0)  # (b, K, D): faster than [rows]
            scores = np.matmul(candidates, query)[..., 0] / np.maximum(norms[negative_rows], 1e-12)
            out_farther[rows] = np.where(valid, (scores < true_scores[rows, None] - CA_TIE).sum(axis=1), 0)
            out_total[rows] = np.where(valid, negatives, 0)
        context_rows = windows.context_rows[rows]
        contexts = bank.vectors(context_rows)
        context_norms = np.maximum(norms[context_rows], 1e-12)
        context_pred[rows] = (np.matmul(contexts, query)[..., 0] / context_norms).max(axis=1)
        target = targets[rows] / np.maximum(norms[windows.target_rows[rows]], 1e-12)[:, None]
        context_true[rows] = (np.matmul(contexts, target[:, :, None])[..., 0] / context_norms).max(axis=1)
    in_farther, in_total = in_article_counts(queries, true_scores, codes, windows.target_indices, bank, norms,
                                             batch_values)

    def share(farther, total):
        kept = total > 0
        return _mean_or_none(farther[kept] / total[kept]), int(kept.sum())

    ca, n_ca = share(out_farther + in_farther, out_total + in_total)
    ca_out, n_out = share(out_farther, out_total)
    ca_in, n_in = share(in_farther, in_total)
    par = _ratio_summary(context_pred, context_true)
    return {
        "ca": ca, "ca_out": ca_out, "ca_in": ca_in, "par": par["mean"], "par_median": par["median"],
        "ca_detail": {
            "n": n_ca, "n_out": n_out, "n_in": n_in,
            "mean_in_candidates": _mean_or_none(in_total[in_total > 0].astype(np.float64)),
            "candidates": {"out_of_article": negatives, "seed": int(seed), **CA_CANDIDATES},
        },
        "par_detail": {"definition": PAR_DEFINITION, **par,
                       "vs_target": {"definition": PAR_VS_TARGET_DEFINITION,
                                     **_ratio_summary(context_pred, true_scores, mean=False)}},
    }


def predict_blocks(predict: Predictor, windows: Windows, bank: ChunkBank, orders: np.ndarray, steps: int,
                   block: int) -> tuple[np.ndarray, dict, list[np.ndarray]]:
    """The predictor's work, ``block`` windows at a time (each block's contexts and their ablated and rolled
    copies stay small enough to be reused from the heap instead of freshly mapped): the predictions, the
    ablation cosines and the rollout predictions of every window."""
    n, dim = len(windows), bank.embeddings.shape[1]
    predictions = np.zeros((n, dim), dtype=np.float32)
    cosines: dict[str, np.ndarray] = {}
    later_steps = [np.zeros((n, dim), dtype=np.float32) for _ in range(1, steps)]
    for start in range(0, n, block):
        rows = slice(start, start + block)
        contexts = bank.vectors(windows.context_rows[rows])
        first = normalise(predict(contexts))
        if first.shape != (len(contexts), dim):
            raise VecflowError(f"predictor returned shape {first.shape} for {contexts.shape} contexts; "
                               f"expected {(len(contexts), dim)}")
        for name, cosine in ablation_cosines(predict, contexts, bank.vectors(windows.target_rows[rows]),
                                             orders[rows]).items():
            cosines.setdefault(name, np.zeros(n, dtype=np.float32))[rows] = cosine
        predictions[rows] = first
        for out, step in zip(later_steps, rollout_predictions(predict, first, contexts, steps)[1:]):
            out[rows] = step
    return predictions, cosines, ([predictions] + later_steps)[:steps]


def evaluate_split(predict: Predictor, windows: Windows, bank: ChunkBank, rollout_steps: int = 3,
                   min_article_chunks: int = 6, seed: int = 0, block: int = 2048,
                   ca_negatives: int = CA_NEGATIVES) -> dict:
    """All 5CAT numbers for one predictor on one split (headline numbers flat, details nested), the LCM metrics
    CA and PAR among them (``lcm_metrics``, ``ca_negatives`` out-of-article candidates per window); the predictor
    sees ``block`` windows' contexts (and as many of each ablation) at a time."""
    check_against_bank(windows, bank)
    rng = np.random.default_rng(seed)
    donors = other_article_donors(windows.article_ids, rng)
    orders = shuffle_orders(len(windows), windows.context_rows.shape[1], rng)
    targets = windows.targets(bank)
    predictions, cosines, step_predictions = predict_blocks(predict, windows, bank, orders, rollout_steps, block)
    base_cosine = rowwise_cosine(predictions, targets)
    swapped = np.flatnonzero(donors >= 0)
    other_cosine = rowwise_cosine(predictions[donors[swapped]], targets[swapped])  # the donor's own prediction
    sweep = offset_sweep(predictions, windows, bank)
    ranks = retrieval(predictions, windows, bank, min_article_chunks)
    roll = rollout_scores(step_predictions, windows, bank)
    lcm = lcm_metrics(predictions, windows, bank, ca_negatives, seed)
    return {
        "n_windows": len(windows), "cos_target": float(base_cosine.mean()),
        "c0": sweep["c0"], "margin": sweep["margin"], "peak_k": sweep["peak_k"],
        "r1": ranks["r1"], "r5": ranks["r5"], "mrr": ranks["mrr"], "rollout": roll["rollout"],
        "ca": lcm["ca"], "ca_out": lcm["ca_out"], "ca_in": lcm["ca_in"], "par": lcm["par"],
        "par_median": lcm["par_median"],
        "offsets": sweep["offsets"], "retrieval": ranks, "ca_detail": lcm["ca_detail"],
        "par_detail": lcm["par_detail"],
        "ablations": ablation_deltas(cosines, base_cosine, other_cosine, swapped),
        "rollout_detail": roll,
    }


def evaluate_predictor(predict: Predictor, splits: dict[str, tuple[Windows, ChunkBank]], **options) -> dict:
    """``evaluate_split`` on every split: {split: metrics}."""
    return {name: evaluate_split(predict, windows, bank, **options) for name, (windows, bank) in splits.items()}


# ---------------------------------------------------------------------------------------------- E
def generalisation_gaps(results: dict, first: str = "val", second: str = "ood") -> dict:
    """E: |first - second| for c_0, margin and R@1 (None when a split or number is missing)."""
    if first not in results or second not in results:
        return {}
    gaps = {}
    for metric in GAP_METRICS:
        a, b = results[first][metric], results[second][metric]
        gaps[metric] = None if a is None or b is None else abs(a - b)
    return gaps
