"""The report's inputs: the ``--artifact`` files it is given, and the readers of their formats.

``--artifact KEY=PATH`` / ``KEY:NAME=PATH`` (``ARTIFACT_KEYS`` says which keys repeat), ``--artifacts-json`` and
``--benchmarks DIR`` become one ``{key: {name: path}}`` mapping (``collect_artifacts``); ``load_run`` reads every
metric file of it once (JSON stats, 5CAT results, scores, the deploy decision, training logs, Snakemake
benchmark files). Plots stay paths until a section inlines them (``png_data_uri``). ``dig`` and ``split_rank``
are how the sections look into those files: a dotted field, and the splits in pipeline order.
"""

from __future__ import annotations

import base64
import csv
from pathlib import Path

from vecflow.core.errors import VecflowError, where
from vecflow.core.io import iter_jsonl, read_json, read_json_object
from vecflow.lvm.fivecat_results import read_results

# key -> True when it repeats as KEY:NAME (one per run/model), False when it appears at most once
ARTIFACT_KEYS = {
    "config": False, "manifest": True, "data": True,
    "ingest_stats": False, "filter_stats": False, "leakage": False, "split_ids": False,
    "direction": False, "direction_plot": False,
    "history": True, "tracking": True,
    "fivecat": True, "fivecat_plot": True, "lvm_curve": False, "lvm_curve_plot": False,
    "scores": True, "examples": True, "train_summary": True,
    "hpo_trials": False, "hpo_importance": False, "hpo_params": False, "hpo_pareto": False, "hpo_pareto_plot": False,
    "lvm_seeds": False,
    "decision": False, "benchmark": True,
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk (type and CRC): a whole PNG ends with it
SPLIT_ORDER = ("train", "selection", "val", "ood")
LVM_HISTORY_PREFIX = "lvm-"  # history:lvm-RUN is an LVM run's training log (vecflow.ship.workflow.artifact_args)


# ------------------------------------------------------------------------------------ artifact arguments
def parse_artifact(text: str) -> tuple[str, str | None, Path]:
    """``KEY=PATH`` or ``KEY:NAME=PATH`` -> (key, name, path); a bad spec or a missing file is a VecflowError."""
    spec, sep, path = text.partition("=")
    if not sep or not spec or not path:
        raise VecflowError(f"--artifact '{text}': expected KEY=PATH or KEY:NAME=PATH")
    key, _, name = spec.partition(":")
    if key not in ARTIFACT_KEYS:
        raise VecflowError(f"--artifact '{text}': unknown key '{key}' (known: {', '.join(ARTIFACT_KEYS)})")
    if ARTIFACT_KEYS[key] and not name:
        raise VecflowError(f"--artifact '{text}': key '{key}' needs a name, e.g. {key}:NAME=PATH")
    if not ARTIFACT_KEYS[key] and name:
        raise VecflowError(f"--artifact '{text}': key '{key}' takes no :NAME")
    if not Path(path).is_file():
        raise VecflowError(f"--artifact '{text}': {path}: file not found")
    return key, name or None, Path(path)


def collect_artifacts(specs: list[str]) -> dict[str, dict[str | None, Path]]:
    """All ``--artifact`` specs as ``{key: {name: path}}`` (name None for single keys); duplicates are errors."""
    artifacts: dict[str, dict[str | None, Path]] = {}
    for text in specs:
        key, name, path = parse_artifact(text)
        runs = artifacts.setdefault(key, {})
        if name in runs:
            raise VecflowError(f"--artifact '{text}': {key}{':' + name if name else ''} given twice")
        runs[name] = path
    return artifacts


def specs_from_json(path: str | Path) -> list[str]:
    """``--artifacts-json F``: a JSON object ``{"KEY[:NAME]": "PATH"}`` turned into ``KEY=PATH`` specs."""
    mapping = read_json(path)
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise VecflowError(f"{path}: expected a JSON object of \"KEY[:NAME]\": \"PATH\"")
    return [f"{key}={value}" for key, value in mapping.items()]


def benchmark_specs(folder: str | Path) -> list[str]:
    """``benchmark:NAME=PATH`` for every ``*.tsv`` under a Snakemake benchmark folder (NAME: the path below it
    without .tsv, e.g. ``predict_summarizer/causal``); an absent folder has none (no benchmarked job ran)."""
    root = Path(folder)
    if not root.is_dir():
        return []
    return [f"benchmark:{p.relative_to(root).with_suffix('').as_posix()}={p}" for p in sorted(root.rglob("*.tsv"))]


def one(artifacts: dict, key: str) -> Path | None:
    return artifacts.get(key, {}).get(None)


def named(artifacts: dict, key: str) -> dict[str, Path]:
    return dict(sorted(artifacts.get(key, {}).items()))


# --------------------------------------------------------------------------------------------- readers
def read_yaml(path: Path):
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise VecflowError(f"{where(path, None if line is None else line + 1)}: invalid YAML") from None


def read_csv(path: Path, delimiter: str = ",") -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter=delimiter))
    if not rows:
        raise VecflowError(f"{path}: empty CSV (no header)")
    return rows[0], rows[1:]


def read_benchmark(path: Path) -> dict:
    """A Snakemake benchmark TSV (one row per repeat: s, h:m:s, max_rss, ..., cpu_time) -> mean seconds, peak
    RSS in MB and mean CPU seconds; '-' or NA (not measured) reads as None."""
    header, rows = read_csv(path, delimiter="\t")
    if "s" not in header:
        raise VecflowError(f"{path}: not a Snakemake benchmark file (no 's' column in the header)")
    if not rows:
        raise VecflowError(f"{path}: benchmark file has a header but no row")

    def column(name: str) -> list[float]:
        if name not in header:
            return []
        at, values = header.index(name), []
        for lineno, row in enumerate(rows, start=2):
            text = row[at] if at < len(row) else ""
            if text in ("", "-", "NA", "nan"):
                continue
            try:
                values.append(float(text))
            except ValueError:
                raise VecflowError(f"{where(path, lineno)}: column '{name}': '{text}' is not a number") from None
        return values

    seconds, rss, cpu = column("s"), column("max_rss"), column("cpu_time")
    return {"s": sum(seconds) / len(seconds) if seconds else None, "max_rss_mb": max(rss) if rss else None,
            "cpu_s": sum(cpu) / len(cpu) if cpu else None, "repeats": len(rows)}


def png_data_uri(path: Path) -> str:
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise VecflowError(f"{path}: not a PNG file")
    return png_bytes_uri(data)


def png_bytes_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def dig(obj, dotted: str):
    """``obj['a']['b']`` for ``'a.b'``, or None when any part is missing."""
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def split_rank(split: str):
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


# ------------------------------------------------------------------------------------------- the run
JSON_KEYS = ("ingest_stats", "filter_stats", "leakage", "split_ids", "direction")


def load_run(artifacts: dict) -> dict:
    """Every metric file of the run read once: JSON stats, 5CAT reports, scores, the decision, training logs and
    benchmark files (plots stay paths: they are inlined as they are)."""
    histories = named(artifacts, "history")
    return {
        "json": {key: read_json(one(artifacts, key)) for key in JSON_KEYS if one(artifacts, key) is not None},
        "fivecat": {name: read_results(path) for name, path in named(artifacts, "fivecat").items()},
        "scores": {name: read_json_object(path) for name, path in named(artifacts, "scores").items()},
        "decision": read_json_object(one(artifacts, "decision")) if one(artifacts, "decision") else None,
        "histories": {name: [record for _, record in iter_jsonl(path)] for name, path in histories.items()},
        "history_paths": histories,
        "benchmarks": {name: read_benchmark(path) for name, path in named(artifacts, "benchmark").items()},
    }
