"""Scoring generated summaries: ROUGE (rouge-score) and BERTScore (bert-score on a local model folder).

    vecflow score --predictions preds.jsonl --eval-split results/summary/dialogues/val.jsonl \
        --bertscore-model resources/models/minilm \
        --settings '{"bertscore": {"num_layers": 6, "batch_size": 16}, "examples": 3, "seed": 1, "device": "auto"}' \
        --out-scores scores.json --out-examples examples.json

Conventions (documented here because they change the numbers):
- ROUGE uses rouge-score's default tokenizer with the Porter stemmer: it lower-cases and replaces every
  non-alphanumeric character by a space, so the speaker tag ``#Person1#`` is scored as the word ``person1``.
- rougeLsum needs one sentence per line. NLTK's punkt is not available offline, so ``split_sentences``
  (``vecflow.data.articles``, the one splitter) splits on ``.``, ``!``, ``?`` followed by whitespace (not after
  an abbreviation) and on line breaks; only rougeLsum sees that text.
- Several references (DialogSum's test split has three): each metric takes, per sample, the reference with
  the best F-measure (rouge-score's ``score_multi``); BERTScore takes the max over references (bert-score's
  list-of-lists mode).
- BERTScore runs on a LOCAL folder only (never a hub id), without baseline rescaling (no baseline files
  offline). An empty prediction gets BERTScore 0 (bert-score cannot encode an empty string with
  transformers 5) and is counted in ``empty_predictions``.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import statistics
from pathlib import Path
from typing import NamedTuple

from vecflow.core.errors import VecflowError, where
from vecflow.core.io import iter_jsonl, require_fields, write_json
from vecflow.core.settings import seed_everything
from vecflow.summary.settings import ScoreSettings
from vecflow.data.articles import split_sentences
from vecflow.summary.pairing import check_pairs, unique_ids

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
SPEAKER_TAG = re.compile(r"#Person\d+#", re.IGNORECASE)


# ----------------------------------------------------------------------------------------------- inputs
def read_predictions(path: str | Path, eval_split: str | Path | None = None) -> list[dict]:
    """Read predictions JSONL ``{id, prediction, references: [str, ...]}``; errors name file:line and field.

    Each id once; with ``eval_split`` (the file the predict step read), the ids one-to-one with its dialogues and
    each row's references that dialogue's (``vecflow.summary.pairing``)."""
    rows, lines = [], []
    for lineno, record in iter_jsonl(path):
        require_fields(record, {"id": (str, int), "prediction": str, "references": list}, path, lineno)
        references = record["references"]
        if not references:
            raise VecflowError(f"{where(path, lineno, 'references')}: empty list (need at least one reference)")
        for i, reference in enumerate(references):
            if not isinstance(reference, str) or not reference.strip():
                raise VecflowError(f"{where(path, lineno, 'references')}: item {i} is not a non-empty string")
        rows.append({"id": str(record["id"]), "prediction": record["prediction"], "references": references})
        lines.append(lineno)
    if not rows:
        raise VecflowError(f"{path}: no predictions (empty file)")
    pairs = [(line, row["id"], row["references"]) for line, row in zip(lines, rows)]
    if eval_split is None:
        unique_ids(pairs, path)
    else:
        check_pairs(pairs, path, eval_split)
    return rows


# ------------------------------------------------------------------------------------------------ ROUGE
def _one_sentence_per_line(text: str) -> str:
    return "\n".join(split_sentences(text))


def rouge_scores(predictions: list[str], references_list: list[list[str]]) -> dict:
    """ROUGE-1/2/L/Lsum with stemming; best reference per metric per sample.

    Returns ``{"mean": {metric: {"f", "p", "r"}}, "per_sample": [{metric: {"f", "p", "r"}}, ...]}``.
    """
    from rouge_score import rouge_scorer

    plain = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    summary_level = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    per_sample = []
    for prediction, references in zip(predictions, references_list, strict=True):
        scores = plain.score_multi(references, prediction)
        scores |= summary_level.score_multi(
            [_one_sentence_per_line(r) for r in references], _one_sentence_per_line(prediction)
        )
        per_sample.append(
            {name: {"f": s.fmeasure, "p": s.precision, "r": s.recall} for name, s in scores.items()}
        )
    mean = {
        name: {part: statistics.fmean(sample[name][part] for sample in per_sample) for part in ("f", "p", "r")}
        for name in ROUGE_TYPES
    }
    return {"mean": mean, "per_sample": per_sample}


# -------------------------------------------------------------------------------------------- BERTScore
def check_bertscore_model(model_dir: str | Path, num_layers: int) -> Path:
    """A local HF folder with config.json whose depth allows ``num_layers``; anything else is a VecflowError."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise VecflowError(f"{model_dir}: not a local model folder (no config.json); BERTScore never uses the hub")
    depth = json.loads(config_path.read_text(encoding="utf-8")).get("num_hidden_layers")
    if not isinstance(num_layers, int) or num_layers < 1 or (depth is not None and num_layers > depth):
        raise VecflowError(
            f"settings: field 'bertscore.num_layers': {num_layers!r} must be between 1 and {depth} for {model_dir}"
        )
    return model_dir.resolve()


@functools.lru_cache(maxsize=4)
def load_bertscorer(model_dir: str, num_layers: int, device: str = "cpu"):
    """One ``BERTScorer`` per (folder, layers, device), reused by every call in this process."""
    import bert_score

    scorer = bert_score.BERTScorer(model_type=model_dir, num_layers=num_layers, device=device)
    # bert-score truncates at tokenizer.model_max_length; cap it by the position embeddings so that a folder
    # without model_max_length (transformers' "very large" default) cannot overflow them.
    tokenizer = scorer._tokenizer
    max_positions = getattr(scorer._model.config, "max_position_embeddings", 512)
    tokenizer.model_max_length = min(tokenizer.model_max_length, max_positions)
    return scorer


def bertscore(scorer, predictions: list[str], references_list: list[list[str]], batch_size: int = 16) -> dict:
    """BERTScore P/R/F1 (max over references). Returns means, F1 std and the per-sample F1 list."""
    scored = [i for i, prediction in enumerate(predictions) if prediction.strip()]
    p = [0.0] * len(predictions)
    r = [0.0] * len(predictions)
    f1 = [0.0] * len(predictions)
    if scored:
        P, R, F = scorer.score(
            [predictions[i] for i in scored], [references_list[i] for i in scored], batch_size=batch_size
        )
        for j, i in enumerate(scored):
            p[i], r[i], f1[i] = float(P[j]), float(R[j]), float(F[j])
    return {
        "p": statistics.fmean(p),
        "r": statistics.fmean(r),
        "f1": statistics.fmean(f1),
        "f1_std": statistics.pstdev(f1),
        "per_sample_f1": f1,
    }


# ----------------------------------------------------------------------------------- input dependence
def input_dependence(predictions: list[str], references_list: list[list[str]], shifts: int = 3,
                     seed: int = 0) -> dict:
    """Does a summarizer read its input? Distinct predictions, and ROUGE-1 against the own references minus
    ROUGE-1 against other dialogues' references (``shifts`` seeded cyclic shifts: never the own row).

    A model that writes one summary for every dialogue has ``distinct_ratio`` 1/n and a margin near 0,
    however good its ROUGE looks.
    """
    import random

    from rouge_score import rouge_scorer

    n = len(predictions)
    distinct = len({" ".join(p.lower().split()) for p in predictions}) / n if n else 0.0
    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)

    def rouge1(prediction: str, references: list[str]) -> float:
        return scorer.score_multi(references, prediction)["rouge1"].fmeasure

    own = statistics.fmean(rouge1(p, r) for p, r in zip(predictions, references_list, strict=True)) if n else 0.0
    if n < 2:
        return {"n": n, "distinct_ratio": distinct, "own_rouge1": own, "shuffled_rouge1": own, "margin": 0.0}
    offsets = random.Random(seed).sample(range(1, n), min(shifts, n - 1))
    shuffled = statistics.fmean(
        rouge1(predictions[i], references_list[(i + k) % n]) for k in offsets for i in range(n)
    )
    return {"n": n, "distinct_ratio": distinct, "own_rouge1": own, "shuffled_rouge1": shuffled,
            "margin": own - shuffled}


def selection_scores(predictions: list[str], references_list: list[list[str]]) -> dict:
    """What trainers log and select on per evaluation: ROUGE F1, speaker tags, length, input dependence.

    ``per_sample`` holds each metric's per-dialogue F1 (for the selection rule's standard error); trainers
    take it out before logging.
    """
    rouge = rouge_scores(predictions, references_list)
    scores = {name: rouge["mean"][name]["f"] for name in ROUGE_TYPES}
    scores["speaker_tag_rate"] = statistics.fmean(bool(SPEAKER_TAG.search(p)) for p in predictions)
    scores |= length_stats(predictions, references_list)
    scores["per_sample"] = {name: [sample[name]["f"] for sample in rouge["per_sample"]] for name in ROUGE_TYPES}
    scores["input_dependence"] = input_dependence(predictions, references_list)
    return scores


# ------------------------------------------------------------------------------------------ text stats
def text_stats(predictions: list[str], references_list: list[list[str]]) -> dict:
    """Empty predictions, mean word counts, and how often speaker tags (#PersonN#) appear."""
    return {
        "empty_predictions": sum(1 for p in predictions if not p.strip()),
        **length_stats(predictions, references_list),
        "speaker_tag_rate": {
            "predictions": statistics.fmean(bool(SPEAKER_TAG.search(p)) for p in predictions),
            "references": statistics.fmean(
                any(SPEAKER_TAG.search(r) for r in references) for references in references_list
            ),
        },
    }


def length_stats(predictions: list[str], references_list: list[list[str]]) -> dict:
    """Mean words of the predictions and of the references (every reference counted), and their ratio:
    a summarizer that writes 30 words against references of 18 loses ROUGE precision, whatever it says."""
    pred = statistics.fmean(len(p.split()) for p in predictions)
    ref = statistics.fmean(len(r.split()) for references in references_list for r in references)
    return {"mean_pred_words": pred, "mean_ref_words": ref, "length_ratio": pred / ref if ref else float("nan")}


def pick_examples(rows: list[dict], rouge: dict, bert: dict, count: int) -> dict:
    """The ``count`` best and worst samples by rougeL F (ties keep file order), with their scores."""

    def example(i: int) -> dict:
        sample = rouge["per_sample"][i]
        scores = {name: sample[name]["f"] for name in ROUGE_TYPES} | {"bertscore_f1": bert["per_sample_f1"][i]}
        return {**rows[i], "scores": scores}

    order = sorted(range(len(rows)), key=lambda i: (-rouge["per_sample"][i]["rougeL"]["f"], i))
    worst = sorted(range(len(rows)), key=lambda i: (rouge["per_sample"][i]["rougeL"]["f"], i))
    return {
        "ranked_by": "rougeL.f",
        "best": [example(i) for i in order[:count]],
        "worst": [example(i) for i in worst[:count]],
    }


# ---------------------------------------------------------------------------------- semantic consistency
def source_targets(rows: list[dict], vectors: dict, sources: str | Path):
    """The dialogue embedding of each prediction's id (``vectors``: ``source_vectors(sources)``); a VecflowError
    naming ``sources`` when one is missing."""
    import numpy as np

    missing = [row["id"] for row in rows if row["id"] not in vectors]
    if missing:
        raise VecflowError(f"{sources}: no embedding for id '{missing[0]}' ({len(missing)} of {len(rows)} "
                           f"predictions); give the synthesis split of the eval dialogues")
    return np.stack([vectors[row["id"]] for row in rows])


def semantic_consistency(rows: list[dict], encoder, sources: str | Path, batch_size: int = 32,
                         vectors: dict | None = None) -> dict:
    """Cosine between the sentence embedding of each prediction and the embedding of its dialogue (the
    synthesis split ``sources``, the ELM's input), and the same for the first reference: the ceiling to read it
    against. A summary that says what its dialogue says sits near it in the encoder's space. ``vectors``: the
    split's embeddings when already read (``source_vectors(sources)``)."""
    from vecflow.data.synthesis import source_vectors

    targets = source_targets(rows, source_vectors(sources) if vectors is None else vectors, sources)
    predicted = encoder.encode([row["prediction"] for row in rows], batch_size=batch_size)
    reference = encoder.encode([row["references"][0] for row in rows], batch_size=batch_size)
    pred = (predicted * targets).sum(1)
    ref = (reference * targets).sum(1)
    return {"prediction": float(pred.mean()), "reference": float(ref.mean()),
            "ratio": float(pred.mean() / ref.mean()) if ref.mean() else float("nan"),
            "encoder": str(getattr(encoder, "name", "")), "sources": str(sources)}


# ------------------------------------------------------------------------------------------------- main
def score_predictions(rows: list[dict], model_dir: str | Path, settings: ScoreSettings | dict) -> tuple[dict, dict]:
    """Everything ``vecflow score`` computes: (scores JSON, examples JSON). ``settings`` as a dict (a direct
    call) is validated here."""
    settings = settings if isinstance(settings, ScoreSettings) else ScoreSettings.parse(settings)
    num_layers = settings.bertscore.num_layers
    given = str(model_dir)  # recorded as given: an absolute path would make equal runs in two folders differ
    model_dir = check_bertscore_model(model_dir, num_layers)
    predictions = [row["prediction"] for row in rows]
    references_list = [row["references"] for row in rows]

    rouge = rouge_scores(predictions, references_list)
    scorer = load_bertscorer(str(model_dir), num_layers, _device_name(settings.device))
    bert = bertscore(scorer, predictions, references_list, batch_size=settings.bertscore.batch_size)

    scores = {
        "n": len(rows),
        "rouge": rouge["mean"],
        "bertscore": {
            "p": bert["p"], "r": bert["r"], "f1": bert["f1"], "f1_std": bert["f1_std"],
            "model": given, "num_layers": num_layers, "rescaled_with_baseline": False,
        },
        **text_stats(predictions, references_list),
        "input_dependence": input_dependence(predictions, references_list, seed=settings.seed),
    }
    examples = pick_examples(rows, rouge, bert, settings.examples)
    return scores, examples


def _device_name(requested: str) -> str:
    from vecflow.core.devices import pick_device

    return str(pick_device(requested))


class Family(NamedTuple):
    """One family to score: its predictions, the eval split they are for, and where its two JSON files go."""

    name: str
    predictions: str
    eval_split: str
    out_scores: str
    out_examples: str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vecflow score", description="ROUGE + BERTScore for predictions JSONL: one family (--predictions ... "
        "--out-examples) or several (--family ... --out-dir), the models loaded once for all.")
    parser.add_argument("--family", nargs=3, action="append", default=[],
                        metavar=("NAME", "PREDICTIONS", "EVAL_SPLIT"),
                        help="a family to score (repeat for each): its predictions JSONL and the eval split they "
                             "are for; writes OUT_DIR/NAME/scores.json and OUT_DIR/NAME/examples.json")
    parser.add_argument("--out-dir", default=None, help="with --family: the folder of the families' folders")
    parser.add_argument("--predictions", default=None, help="one family: predictions JSONL {id, prediction, "
                                                            "references}")
    parser.add_argument("--eval-split", default=None,
                        help="the eval split the predictions are for (dialogues JSONL, or the ELM's summary-only "
                             "synthesis JSONL): ids must be one-to-one with it, with its references")
    parser.add_argument("--bertscore-model", required=True, help="local HF model folder for BERTScore")
    parser.add_argument("--settings", required=True, type=ScoreSettings.from_json,
                        help="the 'evaluation' config section (vecflow.summary.settings.ScoreSettings)")
    parser.add_argument("--encoder", default=None, help="sentence encoder folder: adds semantic consistency")
    parser.add_argument("--sources", default=None,
                        help="synthesis JSONL of the eval dialogues (with its _embeddings.safetensors): the "
                             "dialogue embeddings semantic consistency compares with; needs --encoder")
    parser.add_argument("--out-scores", default=None, help="one family: scores JSON")
    parser.add_argument("--out-examples", default=None, help="one family: best/worst examples JSON")
    return parser


def families_of(args: argparse.Namespace) -> list[Family]:
    """The families the command line names: each --family under --out-dir, or the one-family form."""
    single = [args.predictions, args.eval_split, args.out_scores, args.out_examples]
    if args.family:
        if any(value is not None for value in single) or args.out_dir is None:
            raise VecflowError("--family goes with --out-dir, not with --predictions/--eval-split/--out-scores/"
                               "--out-examples")
        families = [Family(name, predictions, eval_split, str(Path(args.out_dir) / name / "scores.json"),
                           str(Path(args.out_dir) / name / "examples.json"))
                    for name, predictions, eval_split in args.family]
        for family in families:
            if not family.name or family.name in (".", "..") or "/" in family.name or "\\" in family.name:
                raise VecflowError(f"--family {family.name!r}: NAME must be a folder name")
        names = [family.name for family in families]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise VecflowError(f"--family {twice[0]!r} given twice")
        return families
    if None in single or args.out_dir is not None:
        raise VecflowError("give --family NAME PREDICTIONS EVAL_SPLIT (repeated) with --out-dir, or all of "
                           "--predictions, --eval-split, --out-scores and --out-examples")
    return [Family("", *single)]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    families = families_of(args)
    if (args.encoder is None) != (args.sources is None):
        raise VecflowError("--encoder and --sources go together (semantic consistency needs both)")
    # every family's input is checked before anything is scored, and nothing is written before all are scored:
    # one bad family leaves no family's files
    rows = [read_predictions(family.predictions, family.eval_split) for family in families]
    vectors = encoder = None
    if args.encoder is not None:
        from vecflow.data.synthesis import source_vectors

        vectors = source_vectors(args.sources)
        for family_rows in rows:
            source_targets(family_rows, vectors, args.sources)
    results = []
    for family, family_rows in zip(families, rows, strict=True):
        seed_everything(args.settings.seed)  # each family as if scored alone
        scores, examples = score_predictions(family_rows, args.bertscore_model, args.settings)
        if args.encoder is not None:
            if encoder is None:
                from vecflow.core.encoder import SentenceEncoder

                encoder = SentenceEncoder(args.encoder, _device_name(args.settings.device))
                encoder.name = Path(args.encoder).name
            scores["semantic_consistency"] = semantic_consistency(family_rows, encoder, args.sources,
                                                                  vectors=vectors)
        results.append((family, scores, examples))
    for family, scores, examples in results:
        write_json(family.out_scores, scores)
        write_json(family.out_examples, examples)
        rouge = scores["rouge"]
        print(
            f"[vecflow] {family.name + ': ' if family.name else ''}scored {scores['n']} predictions: rouge1 "
            f"{rouge['rouge1']['f']:.4f} rougeL {rouge['rougeL']['f']:.4f} bertscore f1 "
            f"{scores['bertscore']['f1']:.4f} distinct {scores['input_dependence']['distinct_ratio']:.2f} "
            f"own-vs-shuffled rouge1 {scores['input_dependence']['margin']:+.4f}",
            flush=True,
        )
    return 0
