"""Reading and writing artifacts: atomic writes, JSONL with file:line errors, safetensors, hashes.

Every writer here writes to a temporary file next to the target and renames it into place, so an
interrupted job never leaves a half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from vecflow.core.errors import VecflowError, where


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname().split(".")[0]) or "host"


def _temp_tag() -> str:
    """``host-pid``: written into every temporary name, so that a later job can tell a dead writer's leftovers."""
    return f"{_host()}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


LEGACY_TEMP_MAX_AGE_S = 3600  # temporaries without a host-pid tag (or from another host) older than this are stale


def clean_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Remove temporaries of ``target`` that a killed job left (SIGKILL skips every ``finally``).

    A temporary is ``.{name}.{host}-{pid}.XXXXXXXX{suffix}`` beside the target; it is stale when its writer ran on
    this host and is no longer alive. Untagged ones (or another host's) are stale after an hour. A live writer's
    temporary is never touched. Returns the paths removed.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    removed, now, host = [], time.time(), _host()
    for entry in target.parent.glob(f".{glob.escape(target.name)}.*"):
        rest = entry.name[len(target.name) + 2:]
        tagged = re.match(r"^([A-Za-z0-9_]+)-(\d+)\.", rest)
        try:
            age = now - entry.lstat().st_mtime
        except FileNotFoundError:
            continue
        if tagged:
            same_host = tagged.group(1) == host
            stale = (same_host and not _pid_alive(int(tagged.group(2)))) or (
                not same_host and age > LEGACY_TEMP_MAX_AGE_S)
        elif re.match(r"^[a-z0-9_]{8}(\.[A-Za-z0-9]+)?$", rest):  # mkstemp's name before tags existed
            stale = age > LEGACY_TEMP_MAX_AGE_S
        else:
            continue
        if stale:
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed.append(entry)
            print(f"[vecflow] removed {entry}: a temporary left by an interrupted job", flush=True)
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    Temporaries that an earlier, killed writer of the same target left behind are removed first.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{_temp_tag()}.", suffix=suffix or ".tmp", dir=target.parent)
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
    clean_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_temp_tag()}.", dir=target.parent))
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
    np = sys.modules.get("numpy")  # not imported here: the report and config jobs never load numpy for JSON
    if np is None:
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


REENCODE_HINT = "re-encode it as UTF-8, e.g. iconv -f latin1 -t utf-8 IN > OUT"


NUL = b"\x00"


def _binary(path, lineno: int, offset: int) -> VecflowError:
    return VecflowError(f"{where(path, lineno)}: NUL byte at byte offset {offset}: this is a binary file, not "
                        f"UTF-8 text; give the text file instead")


def require_file(path: str | os.PathLike, what: str = "") -> Path:
    """``path`` as a Path when it is an existing file; else one line saying what it is instead (missing, a folder)."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    if path.is_dir():
        raise VecflowError(f"{label}: is a folder, expected a file; give the file's path")
    if not path.exists():
        raise VecflowError(f"{label}: file not found")
    return path


def iter_text_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, line)`` of a UTF-8 text file (a leading BOM is dropped; line endings kept).

    Bytes that are not UTF-8 raise a VecflowError naming file, line and byte offset, with a hint to re-encode.
    """
    path = require_file(path)
    offset = 0
    with open(path, "rb") as fh:
        head = fh.read(8192)  # a NUL in the first 8 KiB: a binary file (image, archive, tensor), not text
        if NUL in head:
            at = head.index(NUL)
            raise _binary(path, head[:at].count(b"\n") + 1, at)
        fh.seek(0)
        for lineno, raw in enumerate(fh, start=1):
            start = 3 if lineno == 1 and raw.startswith(b"\xef\xbb\xbf") else 0
            if NUL in raw:
                raise _binary(path, lineno, offset + raw.index(NUL))
            try:
                text = raw[start:].decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = offset + start + exc.start
                raise VecflowError(f"{where(path, lineno)}: not UTF-8 (byte 0x{raw[start + exc.start]:02x} at byte "
                                   f"offset {bad}); {REENCODE_HINT}") from None
            offset += len(raw)
            yield lineno, text


class open_utf8:  # noqa: N801 - used like open(): ``with open_utf8(path) as fh: for line in fh``
    """A read-only text file whose lines are checked as UTF-8 (see ``iter_text_lines``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lines = iter_text_lines(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._lines.close()

    def __iter__(self) -> Iterator[str]:
        return (line for _, line in self._lines)


def read_text_utf8(path: str | os.PathLike) -> str:
    """The whole text of a UTF-8 file (BOM dropped), or a VecflowError naming the undecodable byte."""
    return "".join(line for _, line in iter_text_lines(path))


def json_error(path, lineno: int, line: str, exc: json.JSONDecodeError) -> VecflowError:
    """A one-line message for a line that is not JSON, saying what to do (truncated lines are named as such)."""
    stripped = line.rstrip()
    truncated = exc.msg.startswith("Unterminated string") or exc.pos >= len(stripped)
    if truncated:
        return VecflowError(f"{where(path, lineno)}: invalid JSON: the line is truncated (it ends at column "
                            f"{len(stripped)} before the JSON value is closed); complete or remove the line")
    hint = ""
    if stripped.startswith("{'") or "': " in stripped:
        hint = " (single quotes: this looks like a Python dict; write JSON with double quotes)"
    return VecflowError(f"{where(path, lineno)}: invalid JSON at column {exc.colno}: {exc.msg}{hint}; "
                        f"each line must be one complete JSON object")


class DuplicateKey(ValueError):
    """A JSON object names one key twice (``json.loads`` would silently keep the last value)."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


def loads_strict(text: str) -> Any:
    """``json.loads`` that refuses an object with a key given twice (``DuplicateKey``); too deep a nesting raises
    ``RecursionError`` (callers turn both into one-line errors)."""
    return json.loads(text, object_pairs_hook=_unique_keys)


def _shown_key(key: str) -> str:
    shown = json.dumps(key)[1:-1]  # ASCII, escapes visible
    return shown if len(shown) <= 60 else shown[:57] + "..."


def duplicate_key_error(path, lineno: int, key: str) -> VecflowError:
    return VecflowError(f"{where(path, lineno)}: key '{_shown_key(key)}' is given twice in one JSON object (only "
                        f"one value can count); remove one of them")


def too_deep_error(path, lineno: int | None) -> VecflowError:
    return VecflowError(f"{where(path, lineno)}: JSON nested too deeply to read (thousands of levels); "
                        f"this is not a vecflow record: write plain objects with a few levels at most")


def _line_of_second(text: str, key: str) -> int | None:
    """The line of the second ``"key":`` in ``text`` (where a duplicate key is), if it can be found."""
    import re

    found = [m.start() for m in re.finditer(re.escape(json.dumps(key)) + r"\s*:", text)]
    if len(found) < 2:
        found = [m.start() for m in re.finditer(re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:", text)]
    return text.count("\n", 0, found[1]) + 1 if len(found) >= 2 else None


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    text = read_text_utf8(path)
    try:
        return loads_strict(text)
    except json.JSONDecodeError as exc:
        if exc.msg.startswith("Unterminated string") or exc.pos >= len(text.rstrip()):
            raise VecflowError(f"{where(path, exc.lineno)}: invalid JSON: the file is truncated (it ends before the "
                               f"JSON value is closed); write the file again") from None
        raise VecflowError(f"{where(path, exc.lineno)}: invalid JSON at column {exc.colno}: {exc.msg}; "
                           f"fix the JSON there") from None
    except DuplicateKey as exc:
        raise duplicate_key_error(path, _line_of_second(text, exc.key), exc.key) from None
    except RecursionError:
        raise too_deep_error(path, None) from None


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON file whose top level must be an object (metrics, scores, decisions, summaries)."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise VecflowError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def read_params_yaml(path: str | os.PathLike, what: str, known) -> dict:
    """A flat YAML mapping of settings (hpo-best's best_params.yaml) whose every key satisfies ``known(key)``."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise VecflowError(f"{path}: file not found")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise VecflowError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(params, dict):
        raise VecflowError(f"{path}: expected a mapping of {what}")
    for key in params:
        if not known(key):
            raise VecflowError(f"{path}: key '{key}': not {what}")
    return params


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, record)`` for each non-blank line; bad JSON or bytes raise naming file:line."""
    path = Path(path)
    for lineno, line in iter_text_lines(path):
        if not line.strip():
            continue
        try:
            record = loads_strict(line)
        except json.JSONDecodeError as exc:
            raise json_error(path, lineno, line, exc) from None
        except DuplicateKey as exc:
            raise duplicate_key_error(path, lineno, exc.key) from None
        except RecursionError:
            raise too_deep_error(path, lineno) from None
        if not isinstance(record, dict):
            raise VecflowError(f"{where(path, lineno)}: expected a JSON object, got {type(record).__name__}; "
                               f"each line must be one JSON object {{...}}")
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
    import numpy as np
    from safetensors.numpy import save_file

    arrays = {}
    for key, value in tensors.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        arrays[key] = np.ascontiguousarray(value)
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(arrays, str(tmp), metadata=metadata)
        if metadata and len(metadata) > 1:
            sort_safetensors_metadata(tmp)


def sort_safetensors_metadata(path: str | os.PathLike) -> None:
    """Rewrite a safetensors header with its ``__metadata__`` keys sorted, in place.

    safetensors writes the metadata from a Rust hash map, so the same tensors and metadata come out in a different
    key order in every process: equal files would differ byte for byte. The header is re-serialised the way
    safetensors writes it (compact JSON, tensors in their order) and padded with spaces to its former length, which
    the format allows; the tensor data is not touched.
    """
    import struct

    with open(path, "r+b") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length).decode("utf-8"), object_pairs_hook=dict)
        meta = header.pop("__metadata__", None)
        if not meta:
            return
        ordered = {"__metadata__": dict(sorted(meta.items())), **header}
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > length:  # cannot happen for a reordering; never grow the header over the data
            raise VecflowError(f"{path}: re-serialised safetensors header is longer than the original")
        fh.seek(8)
        fh.write(text.ljust(length, b" "))


def load_tensors(path: str | os.PathLike, required: Iterable[str] = ()) -> "dict[str, np.ndarray]":
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


def check_embeddings(array: np.ndarray, path, key: str = "embeddings", dim: int | None = None,
                     tolerance: float | None = 1e-3, encoder: str | None = None) -> np.ndarray:
    """Check an embeddings tensor (N x D, or N x C x D for windows) as every reader must; returns it.

    Floating point, non-empty, every vector finite, of dimension ``dim`` (the encoder's) when given, and of L2
    norm 1 within ``tolerance`` (``None``: norms are not checked). Each failure is a VecflowError naming the file,
    the tensor and the first bad row; non-finite data is called corrupt, never something to waive.
    """
    import numpy as np

    name = f"{path}: tensor '{key}'"
    if array.ndim < 2 or 0 in array.shape:
        raise VecflowError(f"{name}: expected a non-empty N x D matrix, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise VecflowError(f"{name}: expected floating point, got {array.dtype}")
    rows = array.reshape(-1, array.shape[-1])
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise VecflowError(f"{name}: row {int(bad[0])} is not finite (NaN or infinity in {bad.size} of {len(rows)} "
                           f"rows): the file is corrupt; re-run the step that wrote it (no gate can waive this)")
    if dim is not None and array.shape[-1] != int(dim):
        source = f"the encoder '{encoder}'" if encoder else "the encoder"
        raise VecflowError(f"{name}: dimension {array.shape[-1]}, but {source} gives {dim}; the embeddings come "
                           f"from another encoder: re-embed them with the configured one")
    if tolerance is not None:
        norms = np.linalg.norm(rows.astype(np.float64), axis=1)
        off = np.flatnonzero(np.abs(norms - 1.0) > tolerance)
        if off.size:
            row = int(off[0])
            raise VecflowError(f"{name}: row {row} has L2 norm {norms[row]:.4f}, expected 1 +- {tolerance:g} "
                               f"({off.size} rows not normalised); normalise them or re-embed")
    return array


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
