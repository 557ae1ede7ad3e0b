"""Deployment: a gate decision from the evaluation numbers, then a self-contained, hashed model bundle.

    vecflow deploy decide --settings S --fivecat 5cat.json --scores seq2seq=scores.json [--scores elm=...] \
        --out decision.json
    vecflow deploy bundle --decision decision.json --settings S --lvm DIR --encoder DIR \
        --bank-embeddings F --bank-index F (--summarizer DIR | --elm-adapter DIR --lm DIR) \
        --metrics F [--metrics F ...] --out DIR

``decide`` picks the summarizer to ship (``deploy.summarizer``: a family, or ``best`` by
``deploy.summarizer_metric`` among the families trained), applies the gates and always writes its decision
(``deploy: true|false``), because it is a Snakemake checkpoint output. Every bundled model has at least one
gate; no gate means not deployed. ``bundle`` refuses to build anything unless the decision says
``deploy: true``, and bundles only the chosen summarizer. The bundle holds every model
the server needs, the retrieval bank, the metrics, a model card and a manifest with the sha256 of every file.
"""

from __future__ import annotations

import argparse
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from vecflow.core.errors import VecflowError, where
from vecflow.core.io import (
    atomic_dir,
    read_json,
    sha256_file,
    sha256_tree,
    write_json,
)
from vecflow.lvm.fivecat_results import read_results
from vecflow.ship.settings import DeployBundleSettings, DeployGates, DeploySettings, LvmGates, SummarizerGates

BASELINES_TO_BEAT = ("copy_last", "context_mean")
# training leftovers that a served model never needs
SKIP_IN_MODEL_DIRS = ("state.pt", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")


# ----------------------------------------------------------------------------------------------------------
# decide


def number_at(data: dict, dotted: str, path) -> float:
    """The number at ``a.b.c`` in ``data`` (a JSON file's content), or an error naming the file and field."""
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise VecflowError(f"{where(path, field=dotted)}: missing")
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise VecflowError(f"{where(path, field=dotted)}: expected a number, got {type(node).__name__}")
    return float(node)


def gate(component: str, name: str, value: float | None, threshold: float | None, passed: bool) -> dict:
    return {"component": component, "gate": name, "value": value, "threshold": threshold, "passed": bool(passed)}


def lvm_gates(fivecat: dict, fivecat_path, settings: LvmGates) -> list[dict]:
    """Gates on the LVM's 5CAT numbers: fixed minima, the 5CAT thresholds, and beating the baselines."""
    gates = []
    c0 = number_at(fivecat, "model.val.c0", fivecat_path)
    margin = number_at(fivecat, "model.val.margin", fivecat_path)
    threshold = float(settings.min_c0)
    gates.append(gate("lvm", "val_c0", c0, threshold, c0 >= threshold))
    threshold = float(settings.min_margin)
    gates.append(gate("lvm", "val_margin", margin, threshold, margin >= threshold))
    if settings.use_fivecat_thresholds:
        gates += fivecat_threshold_gates(fivecat, fivecat_path)
    if settings.beat_baselines:
        for baseline in BASELINES_TO_BEAT:
            for metric, value in (("c0", c0), ("margin", margin)):
                base = number_at(fivecat, f"baselines.{baseline}.val.{metric}", fivecat_path)
                gates.append(gate("lvm", f"val_{metric}_beats_{baseline}", value, base, value > base))
    return gates


def fivecat_threshold_gates(fivecat: dict, fivecat_path) -> list[dict]:
    """One gate per boolean in the 5CAT report's ``gates`` section (val, ood, generalisation)."""
    sections = fivecat.get("gates")
    if not isinstance(sections, dict) or not sections:
        raise VecflowError(f"{where(fivecat_path, field='gates')}: missing (needed by use_fivecat_thresholds)")
    thresholds = fivecat.get("thresholds", {}) or {}
    gates = []
    for split in sorted(sections):
        checks = sections[split]
        if isinstance(checks, bool):  # a single overall verdict for this split
            gates.append(gate("lvm", f"fivecat_{split}", None, None, checks))
            continue
        if not isinstance(checks, dict):
            raise VecflowError(f"{where(fivecat_path, field=f'gates.{split}')}: expected an object of booleans")
        for metric in sorted(checks):
            passed = checks[metric]
            if not isinstance(passed, bool):
                raise VecflowError(f"{where(fivecat_path, field=f'gates.{split}.{metric}')}: expected true/false")
            value, threshold = fivecat_gate_numbers(fivecat, thresholds, split, metric)
            gates.append(gate("lvm", f"fivecat_{split}_{metric}", value, threshold, passed))
    return gates


def fivecat_gate_numbers(fivecat: dict, thresholds: dict, split: str, metric: str) -> tuple:
    """The value and threshold behind one 5CAT gate, where the report has them (None otherwise)."""
    def plain_number(x):
        return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None

    if split.startswith("generalisation"):
        val = plain_number(fivecat.get("model", {}).get("val", {}).get(metric))
        ood = plain_number(fivecat.get("model", {}).get("ood", {}).get(metric))
        gap = abs(val - ood) if val is not None and ood is not None else None
        return gap, plain_number(thresholds.get("max_generalisation_gap"))
    value = plain_number(fivecat.get("model", {}).get(split, {}).get(metric))
    split_thresholds = thresholds.get(split, {})
    threshold = plain_number(split_thresholds.get(metric)) if isinstance(split_thresholds, dict) else None
    return value, threshold


# (SummarizerGates field, gate name, field in scores.json, strict ">" instead of ">="); a gate whose threshold is
# None (min_bertscore_f1 unless set) is off
QUALITY_GATES = [
    ("min_rouge1", "rouge1_f", "rouge.rouge1.f", False),
    ("min_bertscore_f1", "bertscore_f1", "bertscore.f1", False),
]
INPUT_DEPENDENCE_GATES = [
    ("min_distinct_ratio", "distinct_ratio", "input_dependence.distinct_ratio", False),
    ("min_input_margin", "input_margin", "input_dependence.margin", True),
]


def threshold_gate(scores: dict, scores_path, threshold: float, name: str, field: str, strict: bool) -> dict:
    value = number_at(scores, field, scores_path)
    passed = value > threshold if strict else value >= threshold
    record = gate("summarizer", name, value, threshold, passed)
    return {**record, "rule": "value > threshold"} if strict else record


def summarizer_gates(scores: dict, scores_path, settings: SummarizerGates, family: str = "summarizer") -> list[dict]:
    """Quality (ROUGE-1, BERTScore) and input dependence of the summarizer to bundle.

    ``input_dependence`` (written by ``vecflow score``) must show distinct outputs (``distinct_ratio`` at
    least ``min_distinct_ratio``) that match their own dialogue's references better than shuffled ones
    (``margin`` strictly above ``min_input_margin``): a model that writes one summary for every input fails.
    """
    def wanted(table):
        return [(float(getattr(settings, key)), name, field, strict) for key, name, field, strict in table
                if getattr(settings, key) is not None]

    gates = [threshold_gate(scores, scores_path, *entry) for entry in wanted(QUALITY_GATES)]
    dependence = wanted(INPUT_DEPENDENCE_GATES)
    if dependence and not isinstance(scores.get("input_dependence"), dict):
        for threshold, name, _, _ in dependence:
            gates.append({**gate("summarizer", name, None, threshold, False),
                          "note": f"{scores_path} has no 'input_dependence': re-run score_summaries for {family} "
                                  f"(delete the file and run snakemake again)"})
        return gates
    return gates + [threshold_gate(scores, scores_path, *entry) for entry in dependence]


def describe_failure(g: dict) -> str:
    if g.get("note"):
        return f"{g['component']}.{g['gate']} failed: {g['note']}"
    if g["value"] is None or g["threshold"] is None:
        return f"{g['component']}.{g['gate']} failed"
    comparison = ">" if g.get("rule") == "value > threshold" else ">="
    return f"{g['component']}.{g['gate']} = {g['value']:.4f} (needs {comparison} {g['threshold']:.4f})"


FAMILIES = ("seq2seq", "causal", "elm")
METRIC_FIELDS = {"rouge1": "rouge.rouge1.f", "rouge2": "rouge.rouge2.f", "rougeL": "rouge.rougeL.f",
                 "rougeLsum": "rouge.rougeLsum.f", "bertscore_f1": "bertscore.f1"}


def choose_summarizer(scores: dict[str, tuple[dict, Path]], choice: str, metric: str) -> dict:
    """Which summarizer family to bundle: ``choice`` itself, or for ``best`` the family whose ``metric`` is
    highest (ties go to the earlier of seq2seq, causal, elm). Returns ``{family, choice, metric, compared}``."""
    if metric not in METRIC_FIELDS:
        raise VecflowError(f"settings: field 'summarizer_metric': '{metric}' is not one of {', '.join(METRIC_FIELDS)}")
    if not scores:
        raise VecflowError("deploy decide: no --scores given (one FAMILY=scores.json per trained summarizer)")
    compared = {family: number_at(data, METRIC_FIELDS[metric], path) for family, (data, path) in scores.items()}
    if choice == "best":
        order = sorted(compared, key=lambda f: (-compared[f], FAMILIES.index(f) if f in FAMILIES else len(FAMILIES)))
        family = order[0]
    elif choice in compared:
        family = choice
    else:
        raise VecflowError(f"settings: field 'summarizer': '{choice}' has no --scores (given: {', '.join(compared)})")
    return {"family": family, "choice": choice, "metric": metric, "field": METRIC_FIELDS[metric],
            "compared": compared}


def decide(name: str, fivecat: dict, fivecat_path, scores: dict[str, tuple[dict, Path]], gate_settings: DeployGates,
           choice: str = "best", metric: str = "rouge1") -> dict:
    """The deployment decision: the summarizer chosen, every gate with its numbers, the failed ones, a reason.

    Every bundled model needs at least one gate (the encoder is judged through the LVM's 5CAT numbers, which are
    measured on its embeddings); a model without any gate is a failure, so zero gates never deploy.
    """
    chosen = choose_summarizer(scores, choice, metric)
    family = chosen["family"]
    data, path = scores[family]
    gates = lvm_gates(fivecat, fivecat_path, gate_settings.lvm)
    gates += summarizer_gates(data, path, gate_settings.summarizer, family)
    for component in ("lvm", "summarizer"):
        if not any(g["component"] == component for g in gates):
            gates.append({**gate(component, "has_gates", 0, 1, False),
                          "note": f"no gate is set for the {component} (deploy.gates.{component}); a model is "
                                  f"deployed only with at least one gate"})
    for g in gates:
        if g["component"] == "summarizer":
            g["family"] = family
    failed = [f"{g['component']}.{g['gate']}" for g in gates if not g["passed"]]
    if failed:
        reason = "not deployed: " + "; ".join(describe_failure(g) for g in gates if not g["passed"])
    else:
        reason = f"deployed: all {len(gates)} gates passed (summarizer: {family})"
    return {"name": name, "deploy": not failed, "gates": gates, "failed": failed, "reason": reason,
            "summarizer": chosen}


def parse_scores_args(values: list[str]) -> dict[str, Path]:
    """``["seq2seq=a.json", "elm=b.json"]`` -> ``{family: path}``; a bare path is the seq2seq family."""
    out: dict[str, Path] = {}
    for value in values:
        family, sep, path = value.partition("=")
        if not sep:
            family, path = "seq2seq", value
        if family not in FAMILIES:
            raise VecflowError(f"--scores '{value}': family '{family}' is not one of {', '.join(FAMILIES)}")
        if family in out:
            raise VecflowError(f"--scores: family '{family}' given twice")
        out[family] = Path(path)
    return out


def run_decide(args: argparse.Namespace) -> None:
    settings: DeploySettings = args.settings
    fivecat = read_results(args.fivecat)  # the 5CAT results reader (vecflow.lvm.fivecat_results)
    score_paths = parse_scores_args(args.scores)
    scores = {family: (read_json(path), path) for family, path in score_paths.items()}
    decision = decide(settings.name, fivecat, args.fivecat, scores, settings.gates, choice=settings.summarizer,
                      metric=settings.summarizer_metric)
    decision["inputs"] = {"fivecat": str(args.fivecat), "scores": {f: str(p) for f, p in score_paths.items()}}
    write_json(args.out, decision)
    print(f"[deploy] {decision['reason']}", flush=True)


# ----------------------------------------------------------------------------------------------------------
# bundle


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` when both are on one filesystem (large weights cost nothing), else copy.

    A symlink is followed first (``link_model`` installs fetched models as relative symlinks into
    ``resources/models/.fetched/``): a hard link to the link itself would dangle inside the bundle."""
    target = Path(src).resolve()
    if not target.is_file():  # a link whose target is gone (e.g. resources/models/.fetched/ removed)
        raise VecflowError(f"{src}: broken link to {target}: run fetch_model and link_model again "
                           f"(snakemake --forcerun fetch_model)")
    src = target
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def copy_model_dir(src: Path, dst: Path, only: tuple[str, ...] | None = None) -> None:
    """Bring a model folder into the bundle: every file (or just ``only``), minus training leftovers."""
    if not src.is_dir():
        raise VecflowError(f"{src}: model folder not found")
    if only is not None:
        for name in only:
            if not (src / name).is_file():
                raise VecflowError(f"{src}: missing {name}")
            link_or_copy(src / name, dst / name)
        return
    if not (src / "config.json").exists() and not any(src.glob("*.safetensors")):
        raise VecflowError(f"{src}: not a model folder (no config.json or *.safetensors)")
    for path in sorted(p for p in src.rglob("*") if p.is_file() or p.is_symlink()):  # a broken link is an error
        rel = path.relative_to(src)
        if path.name in SKIP_IN_MODEL_DIRS or any(part.startswith(("checkpoint-", ".")) for part in rel.parts):
            continue
        link_or_copy(path, dst / rel)


def check_bank(embeddings_path: Path, index_path: Path) -> tuple[int, int]:
    """The retrieval bank, checked by its one reader (``vecflow.lvm.bank``): every row finite and of unit
    norm, one index row (article_id, chunk_index, text) per embedding row. Returns (rows, dim)."""
    from vecflow.lvm.bank import load_embeddings

    vectors, _ = load_embeddings(embeddings_path, index_path)
    return int(vectors.shape[0]), int(vectors.shape[1])


def check_dims(parts: dict, lvm_dim, encoder_dim, bank_dim: int) -> None:
    """The LVM, the encoder and the bank must all speak vectors of one dimension."""
    if lvm_dim is not None and int(lvm_dim) != bank_dim:
        raise VecflowError(f"{parts['lvm'] / 'config.json'}: field 'dim': {lvm_dim} but the bank "
                           f"{parts['bank_embeddings']} has D={bank_dim}")
    if encoder_dim is not None and int(encoder_dim) != bank_dim:
        raise VecflowError(f"{parts['encoder'] / 'config.json'}: field 'hidden_size': {encoder_dim} but the bank "
                           f"{parts['bank_embeddings']} has D={bank_dim}")


def metrics_names(paths: list[Path]) -> dict[str, Path]:
    """Bundle names for the metrics files: the file name, prefixed by its folders when two names clash."""
    names: dict[str, Path] = {}
    for path in paths:
        name = path.name
        parents = [p.name for p in path.resolve().parents if p.name]
        while name in names and parents:
            name = f"{parents.pop(0)}_{name}"
        if name in names:
            raise VecflowError(f"{path}: given twice as --metrics")
        names[name] = path
    return names


def flat_numbers(data, prefix: str = "", depth: int = 4) -> list[tuple[str, float]]:
    """(dotted key, number) pairs of a metrics JSON, for the model card's table."""
    if isinstance(data, bool):
        return []
    if isinstance(data, (int, float)):
        return [(prefix, float(data))]
    if isinstance(data, dict) and depth > 0:
        out = []
        for key in sorted(data):
            out += flat_numbers(data[key], f"{prefix}.{key}" if prefix else str(key), depth - 1)
        return out
    return []


def model_card(name: str, decision: dict, components: dict, metrics: dict[str, dict], max_rows: int = 40) -> str:
    """README.md for the bundle: contents, metrics, gates, intended use, limits and how to serve it."""
    lines = [f"# {name}", "", f"Built by vecflow on {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}.", ""]
    lines += ["## What is inside", "", "| component | folder | details |", "|---|---|---|"]
    for component, info in components.items():
        details = ", ".join(f"{k}={v}" for k, v in info.items() if k != "path")
        lines.append(f"| {component} | `{info['path']}` | {details} |")
    lines += ["", "`manifest.json` lists the sha256 of every file; the server refuses to start on a mismatch.", ""]
    lines += ["## Deployment gates", "", decision.get("reason", ""), ""]
    chosen = decision.get("summarizer")
    if chosen:
        compared = ", ".join(f"{family} {value:.4f}" for family, value in chosen.get("compared", {}).items())
        lines += [f"Summarizer: **{chosen['family']}** (deploy.summarizer: {chosen.get('choice')}; "
                  f"{chosen.get('metric')} compared: {compared}).", ""]
    lines += ["| component | gate | value | threshold | passed |", "|---|---|---|---|---|"]
    for g in decision.get("gates", []):
        value = "" if g.get("value") is None else f"{g['value']:.4f}"
        threshold = "" if g.get("threshold") is None else f"{g['threshold']:.4f}"
        lines.append(f"| {g['component']} | {g['gate']} | {value} | {threshold} | {'yes' if g['passed'] else 'no'} |")
    lines += ["", "## Metrics", ""]
    for file_name, data in metrics.items():
        rows = flat_numbers(data)
        lines += [f"### {file_name}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4f} |" for key, value in rows[:max_rows]]
        if len(rows) > max_rows:
            lines.append(f"| ... {len(rows) - max_rows} more in `metrics/{file_name}` | |")
        lines.append("")
    lines += [
        "## Intended use",
        "",
        "- `lvm/` predicts the next chunk embedding from a context of chunk embeddings (same encoder as `encoder/`);",
        "  `/chat` maps the prediction back to text by nearest neighbour in `bank.safetensors`.",
        "- `summarizer/` (seq2seq or causal) writes a short summary of a dialogue with `#PersonN#` speaker tags,",
        "  with the source length it was trained with (`summarizer/vecflow_summarizer.json`);",
        "  or `elm/` + `lm/` (when the ELM was chosen) turn a sentence embedding (or a dialogue's) into text.",
        "",
        "## Limits",
        "",
        "- Trained on the data named in the metrics; expect lower quality on other domains or languages.",
        "- `/chat` can only answer with chunks that are in the bank; it does not generate new text.",
        "- Summaries can omit or confuse facts; do not use them for decisions without a human check.",
        "- Embeddings must come from the bundled encoder; vectors from another encoder are meaningless here.",
        "",
        "## How to serve",
        "",
        "```",
        "vecflow serve --bundle <this folder> --host 127.0.0.1 --port 8000",
        "curl http://127.0.0.1:8000/info   # OpenAPI at /openapi.json, docs at /docs",
        "```",
        "",
    ]
    return "\n".join(lines)


def refuse_unless_deployable(decision: dict, decision_path) -> None:
    if "deploy" not in decision:
        raise VecflowError(f"{where(decision_path, field='deploy')}: missing")
    if decision["deploy"] is not True:
        failed = ", ".join(decision.get("failed", [])) or "unknown gate"
        raise VecflowError(f"{decision_path}: deployment refused by gate(s) {failed}: {decision.get('reason', '')}")


SUMMARIZER_SPEC = "vecflow_summarizer.json"  # the settings training used; the server repeats them


def chosen_family(decision: dict) -> str:
    """The summarizer family a decision chose (decisions written before the choice existed: seq2seq)."""
    family = (decision.get("summarizer") or {}).get("family", "seq2seq")
    if family not in FAMILIES:
        raise VecflowError(f"decision: field 'summarizer.family': '{family}' is not one of {', '.join(FAMILIES)}")
    return family


def check_summarizer_parts(family: str, parts: dict) -> None:
    """Only the chosen summarizer is bundled: its folder(s) must be given and no other summarizer."""
    if (parts.get("elm") is None) != (parts.get("lm") is None):
        raise VecflowError("--elm-adapter and --lm go together: give both or neither")
    if family == "elm":
        if parts.get("elm") is None:
            raise VecflowError("the decision chose the elm summarizer: give --elm-adapter and --lm")
        if parts.get("summarizer") is not None:
            raise VecflowError("the decision chose the elm summarizer: --summarizer must not be given "
                               "(only the chosen summarizer is bundled)")
        return
    if parts.get("summarizer") is None:
        raise VecflowError(f"the decision chose the {family} summarizer: give --summarizer (its model folder)")
    if parts.get("elm") is not None:
        raise VecflowError(f"the decision chose the {family} summarizer: --elm-adapter/--lm must not be given "
                           f"(only the chosen summarizer is bundled)")


def summarizer_spec(folder: Path, family: str, fallback: dict | None) -> dict:
    """The folder's ``vecflow_summarizer.json``; a legacy seq2seq folder gets one from the training settings."""
    path = folder / SUMMARIZER_SPEC
    if path.exists():
        spec = read_json(path)
        if spec.get("kind", "seq2seq") != family:
            raise VecflowError(f"{where(path, field='kind')}: '{spec.get('kind')}' but the decision chose {family}")
        if isinstance(spec.get("max_source_length"), bool) or not isinstance(spec.get("max_source_length"), int):
            raise VecflowError(f"{where(path, field='max_source_length')}: expected an integer")
        return spec
    if family != "seq2seq" or not fallback:
        raise VecflowError(f"{path}: file not found; re-run the {family} training rule (it writes the settings "
                           f"the server must repeat)")
    return {"kind": "seq2seq", "max_source_length": int(fallback["max_source_length"]),
            "max_target_length": int(fallback["max_target_length"]), "system_message": None}


def build_bundle(out: Path, name: str, decision: dict, parts: dict[str, Path | None], metrics_paths: list[Path],
                 fallback_spec: dict | None = None, serve: dict | None = None) -> dict:
    """Assemble the bundle folder atomically; returns its manifest. Only the chosen summarizer goes in."""
    family = chosen_family(decision)
    check_summarizer_parts(family, parts)
    metrics = {bundle_name: read_json(path) for bundle_name, path in metrics_names(metrics_paths).items()}
    bank_rows, bank_dim = check_bank(parts["bank_embeddings"], parts["bank_index"])
    lvm_config = read_json(parts["lvm"] / "config.json")
    encoder_dim = read_json(parts["encoder"] / "config.json").get("hidden_size")
    check_dims(parts, lvm_config.get("dim"), encoder_dim, bank_dim)
    components = {
        "lvm": {"path": "lvm/", **{k: lvm_config[k] for k in ("arch", "dim", "context_length") if k in lvm_config}},
        "encoder": {"path": "encoder/", "dim": encoder_dim},
        "bank": {"path": "bank.safetensors", "rows": bank_rows, "dim": bank_dim},
    }
    spec = None
    if family == "elm":
        components["summarizer"] = {"path": "elm/", "family": "elm", "lm": "lm/"}
        components["lm"] = {"path": "lm/"}
    else:
        if not parts["summarizer"].is_dir():
            raise VecflowError(f"{parts['summarizer']}: model folder not found")
        spec = summarizer_spec(parts["summarizer"], family, fallback_spec)
        components["summarizer"] = {"path": "summarizer/", "family": family,
                                    "max_source_length": int(spec["max_source_length"])}
    with atomic_dir(out) as tmp:
        copy_model_dir(parts["lvm"], tmp / "lvm", only=("model.safetensors", "config.json"))
        copy_model_dir(parts["encoder"], tmp / "encoder")
        if family == "elm":
            from vecflow.summary.elm import lm_folder

            copy_model_dir(parts["elm"], tmp / "elm")
            shutil.rmtree(tmp / "elm" / "lm", ignore_errors=True)  # bundled once, as lm/ (below)
            copy_model_dir(lm_folder(parts["elm"], parts["lm"]), tmp / "lm")  # the adapter's tuned LM if any
        else:
            copy_model_dir(parts["summarizer"], tmp / "summarizer")
            if not (tmp / "summarizer" / SUMMARIZER_SPEC).exists():
                write_json(tmp / "summarizer" / SUMMARIZER_SPEC, spec)
        link_or_copy(parts["bank_embeddings"], tmp / "bank.safetensors")
        link_or_copy(parts["bank_index"], tmp / "bank.index.jsonl")
        for bundle_name, data in metrics.items():
            write_json(tmp / "metrics" / bundle_name, data)
        write_json(tmp / "decision.json", decision)
        (tmp / "README.md").write_text(model_card(name, decision, components, metrics), encoding="utf-8")
        manifest = {
            "name": name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "components": components,
            "serve": dict(serve or {}),  # deploy.serve: how the server runs this bundle (e.g. faiss_min_rows)
            "files": sha256_tree(tmp, exclude=["manifest.json"]),
        }
        write_json(tmp / "manifest.json", manifest)
    return manifest


def run_bundle(args: argparse.Namespace) -> None:
    decision = read_json(args.decision)
    refuse_unless_deployable(decision, args.decision)
    settings: DeployBundleSettings = args.settings
    parts = {
        "lvm": args.lvm,
        "encoder": args.encoder,
        "summarizer": args.summarizer,
        "elm": args.elm_adapter,
        "lm": args.lm,
        "bank_embeddings": args.bank_embeddings,
        "bank_index": args.bank_index,
    }
    manifest = build_bundle(args.out, settings.name, decision, parts, args.metrics, settings.legacy_spec(),
                            serve=settings.serve.model_dump())
    print(f"[deploy] bundle {args.out}: {len(manifest['files'])} files, summarizer "
          f"{manifest['components']['summarizer']['family']}, manifest sha256 "
          f"{sha256_file(args.out / 'manifest.json')[:12]}", flush=True)


# ----------------------------------------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vecflow deploy", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)

    p = sub.add_parser("decide", help="apply the deployment gates; always writes the decision JSON")
    p.add_argument("--settings", type=DeploySettings.from_json, required=True,
                   help="the deploy config section as JSON (vecflow.ship.settings.DeploySettings)")
    p.add_argument("--fivecat", type=Path, required=True, help="5CAT JSON of the LVM run to deploy")
    p.add_argument("--scores", action="append", required=True, metavar="FAMILY=PATH",
                   help="scores JSON of one trained summarizer family (seq2seq, causal, elm); repeat per family")
    p.add_argument("--out", type=Path, required=True, help="decision JSON")
    p.set_defaults(run=run_decide)

    p = sub.add_parser("bundle", help="build the bundle folder (refused unless the decision says deploy)")
    p.add_argument("--decision", type=Path, required=True)
    p.add_argument("--settings", type=DeployBundleSettings.from_json, required=True,
                   help="the deploy section and the seq2seq training lengths (vecflow.ship.settings."
                        "DeployBundleSettings)")
    p.add_argument("--lvm", type=Path, required=True, help="trained LVM folder (model.safetensors, config.json)")
    p.add_argument("--encoder", type=Path, required=True, help="HF encoder folder")
    p.add_argument("--bank-embeddings", type=Path, required=True, help="chunk embeddings safetensors")
    p.add_argument("--bank-index", type=Path, required=True, help="chunk index JSONL (article_id, chunk_index, text)")
    p.add_argument("--summarizer", type=Path, default=None,
                   help="the chosen seq2seq or causal summarizer folder (not with an elm decision)")
    p.add_argument("--elm-adapter", type=Path, default=None, help="ELM adapter folder, when the decision chose elm")
    p.add_argument("--lm", type=Path, default=None, help="causal LM folder for the ELM adapter")
    p.add_argument("--metrics", type=Path, action="append", required=True, help="metrics JSON (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="bundle folder")
    p.set_defaults(run=run_bundle)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.run(args)
    return 0
