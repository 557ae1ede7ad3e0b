"""``vecflow fetch-data``: the data sets a config names under ``datasets:``, fetched from the HF hub or checked in place.

One entry per data set (``datasets.<name>``):

- ``source: hub``: download ``files`` (file names inside the hub data set repository ``id``) at ``revision``
  with ``huggingface_hub`` (needs network), convert CSV and parquet to JSONL (a parquet WikiText file, one line per
  row in its ``text`` column, to the text file; parquet needs ``pyarrow``: ``pip install -e '.[hub]'``), and
  write them to ``<data_dir>/<name>/<key><ext>`` (``.jsonl`` for dialogues and articles, ``.txt`` for WikiText).
  The commit the revision resolved to and the sha256 of every downloaded and written file go into
  ``<data_dir>/<name>/manifest.json``; a ``sha256:`` entry per key in the config must match the downloaded file.
- ``source: local``: ``files`` are the user's own paths, **read in place, never copied** (DialogSum is CC
  BY-NC-SA): only ``manifest.json`` is written, with each file's sha256 and record count.

Every file is format-checked first (``format: dialogues | wikitext | articles``: the readers the pipeline uses),
and nothing is written unless every file of every data set passes: a bad file is one line naming the file and
line or field. Config values ``data:<name>/<key>`` (``summary.splits.*``, ``lvm.articles.input``,
``lvm.articles.ood_input``) are replaced by the path this step reports (:func:`resolve_references`).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from vecflow.core.errors import VecflowError, where
from vecflow.core.io import _temp_tag, clean_stale_temps, sha256_file, write_json, write_jsonl
from vecflow.core.settings import settings_arg

SOURCES = ("hub", "local")
FORMATS = ("dialogues", "wikitext", "articles")
EXTENSION = {"dialogues": ".jsonl", "articles": ".jsonl", "wikitext": ".txt"}
HUB_SUFFIXES = (".jsonl", ".json", ".csv", ".txt", ".parquet")  # what a hub file may be (parquet needs pyarrow)
REFERENCE = re.compile(r"^data:([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+)$")
# config values that may be a data:<name>/<key> reference
REFERENCE_KEYS = (("summary", "splits", "*"), ("lvm", "articles", "input"), ("lvm", "articles", "ood_input"))
COMMIT = re.compile(r"^[0-9a-f]{40}$")
MANIFEST = "manifest.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow fetch-data", description=__doc__.splitlines()[0])
    parser.add_argument("--settings", required=True, type=settings_arg,
                        help="the config's datasets: section as JSON ({name: entry})")
    parser.add_argument("--data-dir", required=True, help="manifests (and hub downloads) go to DATA_DIR/<name>/")
    parser.add_argument("--only", action="append", default=[], help="fetch only this data set (repeatable)")
    args = parser.parse_args(argv)
    specs = {name: spec for name, spec in args.settings.items() if name not in ("seed", "device", "tracking")}
    if args.only:
        unknown = sorted(set(args.only) - set(specs))
        if unknown:
            raise VecflowError(f"--only {unknown[0]}: no such data set (datasets: has {', '.join(sorted(specs))})")
        specs = {name: specs[name] for name in args.only}
    manifests = fetch_datasets(specs, Path(args.data_dir))
    for name, manifest in manifests.items():
        files = ", ".join(f"{key}={entry['path']} ({entry['records']} records)" for key, entry in manifest["files"].items())
        print(f"[vecflow] data set {name} ({manifest['source']}, {manifest['format']}): {files}", flush=True)
    return 0


# ------------------------------------------------------------------------------------------ paths


def dataset_paths(name: str, spec: dict, data_dir: str | Path) -> dict[str, str]:
    """``{key: path}`` the data set's files have for the pipeline: in place (local) or under data_dir (hub)."""
    if spec["source"] == "local":
        return {key: str(path) for key, path in spec["files"].items()}
    ext = EXTENSION[spec["format"]]
    return {key: str(Path(data_dir, name, f"{key}{ext}")) for key in spec["files"]}


def manifest_path(name: str, data_dir: str | Path) -> str:
    return str(Path(data_dir, name, MANIFEST))


def hub_outputs(datasets: dict, data_dir: str | Path) -> list[str]:
    """Every file the hub data sets write (besides their manifests): the fetch_data rule's outputs."""
    return [path for name, spec in datasets.items() if spec["source"] == "hub"
            for path in dataset_paths(name, spec, data_dir).values()]


def local_inputs(datasets: dict) -> list[str]:
    """The user's files of the local data sets: the fetch_data rule checks them again when they change."""
    return [path for name, spec in datasets.items() if spec["source"] == "local"
            for path in dataset_paths(name, spec, "").values()]


def resolve_references(config: dict) -> dict[str, str]:
    """Replace every ``data:<name>/<key>`` config value by its path; return ``{dotted config key: data set}``.

    An unknown data set or key is one line naming the config key. Plain paths are left as they are.
    """
    datasets = config.get("datasets") or {}
    data_dir = config.get("data_dir", "resources/data")
    used: dict[str, str] = {}
    for section, sub, leaf in REFERENCE_KEYS:
        node = (config.get(section) or {}).get(sub) or {}
        keys = list(node) if leaf == "*" else [leaf]
        for key in keys:
            value = node.get(key)
            if not isinstance(value, str) or not value.startswith("data:"):
                continue
            dotted = f"{section}.{sub}.{key}"
            match = REFERENCE.match(value)
            if not match:
                raise VecflowError(f"config: {dotted}: '{value}' is not a data:<name>/<key> reference")
            name, file_key = match.groups()
            if name not in datasets:
                known = ", ".join(sorted(datasets)) or "none"
                raise VecflowError(f"config: {dotted}: '{value}' names no data set (datasets: {known})")
            if file_key not in datasets[name]["files"]:
                known = ", ".join(sorted(datasets[name]["files"]))
                raise VecflowError(f"config: {dotted}: data set '{name}' has no file '{file_key}' (files: {known})")
            node[key] = dataset_paths(name, datasets[name], data_dir)[file_key]
            used[dotted] = name
    return used


def manifests_for(paths, datasets: dict, data_dir: str | Path) -> list[str]:
    """The manifests of the data sets whose files are among ``paths``: a job reading them waits for the check."""
    wanted = {os.path.normpath(str(p)) for p in paths if p}
    return sorted({manifest_path(name, data_dir) for name, spec in datasets.items()
                   if wanted & {os.path.normpath(p) for p in dataset_paths(name, spec, data_dir).values()}})


# ---------------------------------------------------------------------------------------- the step


def fetch_datasets(specs: dict, data_dir: Path) -> dict[str, dict]:
    """Check (and for hub, download) every data set, then write all outputs; nothing is written on an error."""
    for name, spec in specs.items():
        check_spec(name, spec)
    data_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(data_dir / "fetch")  # a killed run's scratch folder
    with tempfile.TemporaryDirectory(prefix=f".fetch.{_temp_tag()}.", dir=data_dir) as scratch:
        staged = {name: stage_dataset(name, spec, data_dir, Path(scratch) / name) for name, spec in specs.items()}
        for name, (manifest, moves) in staged.items():  # every file passed: put them in place
            for tmp, target in moves:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
            write_json(manifest_path(name, data_dir), manifest)
    return {name: manifest for name, (manifest, _) in staged.items()}


def check_spec(name: str, spec: dict) -> None:
    """The entry has what its source needs (the schema checks types; this runs for the CLI alone too)."""
    if spec.get("source") not in SOURCES:
        raise VecflowError(f"datasets.{name}.source: '{spec.get('source')}' is not one of {', '.join(SOURCES)}")
    if spec.get("format") not in FORMATS:
        raise VecflowError(f"datasets.{name}.format: '{spec.get('format')}' is not one of {', '.join(FORMATS)}")
    files = spec.get("files")
    if not isinstance(files, dict) or not files:
        raise VecflowError(f"datasets.{name}.files: give at least one <key>: <file>")
    if spec["source"] == "hub":
        for key in ("id", "revision"):
            if not isinstance(spec.get(key), str) or not spec[key]:
                raise VecflowError(f"datasets.{name}.{key}: required for source: hub")
        for key, filename in files.items():
            if not str(filename).endswith(HUB_SUFFIXES):
                raise VecflowError(f"datasets.{name}.files.{key}: '{filename}' is not one of {', '.join(HUB_SUFFIXES)}")
            if str(filename).endswith(".parquet"):  # before any download: a missing pyarrow is one line, not a stack
                _parquet_module(f"datasets.{name}.files.{key}: '{filename}'")
    unknown = sorted(set(spec.get("sha256") or {}) - set(files))
    if unknown:
        raise VecflowError(f"datasets.{name}.sha256.{unknown[0]}: no such key in files")


def stage_dataset(name: str, spec: dict, data_dir: Path, scratch: Path) -> tuple[dict, list[tuple[Path, str]]]:
    """The manifest and the (temporary file, final path) moves of one data set; raises on any bad file."""
    fmt = spec["format"]
    manifest = {"name": name, "source": spec["source"], "format": fmt, "files": {}, "created_with": _versions()}
    moves: list[tuple[Path, str]] = []
    paths = dataset_paths(name, spec, data_dir)
    if spec["source"] == "local":
        for key, path in paths.items():
            if not Path(path).is_file():
                raise VecflowError(f"datasets.{name}.files.{key}: file '{path}' not found (relative paths start at "
                                   f"the working directory)")
            manifest["files"][key] = _file_entry(path, path, fmt, (spec.get("sha256") or {}).get(key), name, key)
        return manifest, moves
    commit = resolve_commit(name, spec["id"], spec["revision"])
    manifest.update(id=spec["id"], revision=spec["revision"], commit=commit)
    if not COMMIT.match(spec["revision"]):
        print(f"[vecflow] datasets.{name}.revision '{spec['revision']}' is not a commit: pin it to {commit}", flush=True)
    scratch.mkdir(parents=True)
    for key, filename in spec["files"].items():
        downloaded = download_file(name, spec["id"], filename, commit)
        source_sha = sha256_file(downloaded)
        expected = (spec.get("sha256") or {}).get(key)
        if expected and expected != source_sha:
            raise VecflowError(f"datasets.{name}.sha256.{key}: {spec['id']}/{filename}@{commit[:12]} has sha256 "
                               f"{source_sha}, the config pins {expected}")
        staged = scratch / Path(paths[key]).name
        convert_file(downloaded, staged, fmt, shown=f"{spec['id']}/{filename}")
        entry = _file_entry(staged, paths[key], fmt, None, name, key, shown=f"{spec['id']}/{filename}")
        entry.update(source_file=filename, source_sha256=source_sha)
        manifest["files"][key] = entry
        moves.append((staged, paths[key]))
    return manifest, moves


def _file_entry(path, reported: str, fmt: str, expected: str | None, name: str, key: str, shown=None) -> dict:
    records = check_format(Path(path), fmt, shown=shown)
    digest = sha256_file(path)
    if expected and expected != digest:
        raise VecflowError(f"datasets.{name}.sha256.{key}: '{reported}' has sha256 {digest}, the config pins {expected}")
    return {"path": reported, "sha256": digest, "bytes": Path(path).stat().st_size, "records": records}


# ------------------------------------------------------------------------------------- formats


def check_format(path: Path, fmt: str, shown=None) -> int:
    """Read the file with the pipeline's own reader for ``fmt``; return its record count (dialogues, articles).

    Errors name the file (``shown`` for a hub file read from a temporary copy) and the line or field.
    """
    from vecflow.data.articles import read_jsonl_articles, read_wikitext
    from vecflow.data.dialogues import read_dialogues

    try:
        if fmt == "dialogues":
            return len(read_dialogues(path))
        if fmt == "articles":
            articles = read_jsonl_articles(path)
            if not articles:
                raise VecflowError(f"{path}: no articles in file")
            return len(articles)
        articles = read_wikitext(path)
        if not articles:
            raise VecflowError(f"{path}: no ' = Title = ' heading: not a WikiText file")
        return len(articles)
    except VecflowError as exc:
        if shown is None:
            raise
        raise VecflowError(str(exc).replace(str(path), str(shown), 1)) from None


def convert_file(source: Path, target: Path, fmt: str, shown=None) -> None:
    """A downloaded hub file as the pipeline reads it: CSV and parquet rows become JSONL objects, a parquet WikiText
    file becomes raw text (:func:`parquet_to_wikitext`), other files are copied. ``shown`` names the file in errors."""
    shown = shown or source.name
    if source.suffix == ".parquet":
        if fmt == "wikitext":
            parquet_to_wikitext(source, target, shown)
        else:
            write_jsonl(target, parquet_rows(source, shown))
        return
    if source.suffix != ".csv":
        shutil.copyfile(source, target)
        return
    if fmt == "wikitext":
        raise VecflowError(f"{shown}: a CSV file cannot be WikiText (give the .txt or .parquet file)")
    with open(source, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        rows = []
        for row in reader:
            if None in row:  # more cells than header columns
                raise VecflowError(f"{where(shown, reader.line_num)}: more cells than the header has columns")
            rows.append({key: value for key, value in row.items() if value is not None})
    write_jsonl(target, rows)


def parquet_rows(source: Path, shown) -> list[dict]:
    """The rows of a parquet file as dicts, in file order; a null cell is left out, as a short CSV row's is."""
    table = _read_parquet(source, shown)
    return [{key: value for key, value in row.items() if value is not None} for row in table.to_pylist()]


def parquet_to_wikitext(source: Path, target: Path, shown) -> None:
    """A parquet WikiText file as the text file it was made from: the hub's ``Salesforce/wikitext`` holds one row
    per line of ``wiki.*.raw`` / ``wiki.*.tokens`` in column ``text``, a line with its newline, a blank line (`` \\n``
    in the original) as ``""``. The rows are written in order, a row without a newline gets one and an empty row is
    WikiText's blank line again, so the file reads line for line like the original (``read_wikitext``)."""
    table = _read_parquet(source, shown)
    if "text" not in table.column_names:
        raise VecflowError(f"{shown}: no 'text' column (columns: {', '.join(table.column_names) or 'none'}): "
                           f"not a WikiText parquet file")
    with open(target, "w", encoding="utf-8", newline="") as fh:
        for row, line in enumerate(table.column("text").to_pylist(), start=1):
            if not isinstance(line, str):
                raise VecflowError(f"{shown}: row {row}: column 'text': expected str, got {type(line).__name__}")
            fh.write(line if line.endswith("\n") else (line or " ") + "\n")


def _read_parquet(source: Path, shown):
    pq = _parquet_module(shown)
    try:
        return pq.read_table(source)
    except Exception as exc:  # pyarrow's ArrowInvalid/ArrowIOError: not a parquet file, truncated download
        raise VecflowError(f"{shown}: cannot read as parquet: {type(exc).__name__}: {_first_line(exc)}") from None


def _parquet_module(shown):
    """``pyarrow.parquet``, imported only when a parquet file is read (an optional dependency: the ``hub`` extra)."""
    try:
        import pyarrow.parquet
    except ImportError:
        raise VecflowError(f"{shown}: reading a .parquet file needs pyarrow: pip install pyarrow "
                           f"(or pip install -e '.[hub]')") from None
    return pyarrow.parquet


# ----------------------------------------------------------------------------------------- hub


def resolve_commit(name: str, repo_id: str, revision: str) -> str:
    """The commit ``revision`` names in the hub data set ``repo_id`` (what is downloaded and recorded)."""
    import huggingface_hub

    try:
        info = huggingface_hub.HfApi().dataset_info(repo_id, revision=revision)
    except Exception as exc:  # network, auth, offline mode, unknown repo: all end the same way for the user
        raise VecflowError(
            f"datasets.{name}.id: cannot reach '{repo_id}@{revision}' on the HF hub (offline or HF_HUB_OFFLINE=1? "
            f"use source: local with your own copy): {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    return info.sha or revision


def download_file(name: str, repo_id: str, filename: str, commit: str) -> Path:
    import huggingface_hub

    try:
        return Path(huggingface_hub.hf_hub_download(repo_id=repo_id, filename=filename, repo_type="dataset",
                                                    revision=commit))
    except Exception as exc:
        raise VecflowError(f"datasets.{name}.files: cannot download '{filename}' from '{repo_id}@{commit[:12]}': "
                           f"{type(exc).__name__}: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _versions() -> dict:
    from vecflow import __version__

    return {"vecflow": __version__, "huggingface_hub": metadata.version("huggingface_hub")}
