"""Reading and writing artifacts: atomic writes, JSONL with file:line errors, safetensors, hashes.

Every writer here writes to a temporary file next to the target and renames it into place, so an
interrupted job never leaves a half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from vecflow.errors import VecflowError, where


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get normal permissions
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
                n += 1
    return n


def _json_default(obj: Any):
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise VecflowError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise VecflowError(f"{where(path, exc.lineno)}: invalid JSON: {exc.msg}") from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line; bad JSON raises naming file:line."""
    path = Path(path)
    if not path.exists():
        raise VecflowError(f"{path}: file not found")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise VecflowError(f"{where(path, lineno)}: invalid JSON: {exc.msg}") from None
            if not isinstance(record, dict):
                raise VecflowError(f"{where(path, lineno)}: expected a JSON object, got {type(record).__name__}")
            yield lineno, record


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return [record for _, record in iter_jsonl(path)]


def require_fields(record: dict, fields: dict[str, type | tuple], path, lineno) -> None:
    """Check that ``record`` has each field with the given type; raise naming file:line and field."""
    for name, kind in fields.items():
        if name not in record:
            raise VecflowError(f"{where(path, lineno, name)}: missing")
        if not isinstance(record[name], kind):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise VecflowError(
                f"{where(path, lineno, name)}: expected {expected}, got {type(record[name]).__name__}"
            )


def save_tensors(path: str | os.PathLike, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    """Save numpy arrays or torch tensors as safetensors, atomically."""
    from safetensors.numpy import save_file

    arrays = {}
    for key, value in tensors.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        arrays[key] = np.ascontiguousarray(value)
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(arrays, str(tmp), metadata=metadata)


def load_tensors(path: str | os.PathLike, required: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Load a safetensors file as numpy arrays; a missing file or key is a VecflowError."""
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.exists():
        raise VecflowError(f"{path}: file not found")
    try:
        arrays = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise VecflowError(f"{path}: not a readable safetensors file ({exc})") from None
    for key in required:
        if key not in arrays:
            raise VecflowError(f"{path}: missing tensor '{key}' (has: {', '.join(sorted(arrays)) or 'none'})")
    return arrays


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(root: str | os.PathLike, exclude: Iterable[str] = ()) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative posix paths, sorted), skipping names in ``exclude``."""
    root = Path(root)
    skip = set(exclude)
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in skip or path.name.startswith("."):
            continue
        out[rel] = sha256_file(path)
    return out
