"""The embedding bank: one split's chunk vectors and their index, written, read and checked here only.

On disk (``vecflow embed``):
- ``F.safetensors``: tensor ``embeddings`` (M x D float32, every row L2-normalised); metadata ``encoder``,
  ``dim``, ``count``. Readers memory-map it, so opening a bank costs no RAM until rows are touched.
- ``F.index.jsonl``: one row ``{article_id, chunk_index, text}`` per embedding row, in the same order; each
  (article_id, chunk_index) once.
- A sharded bank, a folder with ``manifest.json`` and ``shard-NNNNN.safetensors`` / ``shard-NNNNN.index.jsonl``
  (what the export writes as it goes, in ``F.safetensors.partial/``), reads the same way: ``open_embeddings``
  and ``load_bank`` take either.

``load_bank(..., encoder_dir=E)`` also refuses a bank that is not of the encoder the config names (its row width
differs from E's hidden size, or its metadata names another encoder folder).

``ChunkBank`` answers "which row is chunk t+k of article a" (``rows``) for every stage: windows, training,
diagnostics and 5CAT all use it, so the rule (same article, exact chunk index, -1 where absent; never wrapped
into a neighbouring article) has one implementation.

``ShardedBankWriter`` is the export: fixed-size shards, the manifest rewritten after each complete shard, a
killed job resumes after the last complete one, and ``finish`` streams the shards into ``F.safetensors`` +
``F.index.jsonl`` (atomically, one shard in memory at a time) and removes the partial folder.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from vecflow.core.errors import VecflowError, where
from vecflow.core.io import atomic_path, iter_jsonl, require_fields, save_tensors, write_json

EMBEDDINGS_KEY = "embeddings"
INDEX_FIELDS = {"article_id": int, "chunk_index": int, "text": str}
NORM_TOLERANCE = 1e-3
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "vecflow-bank-shards/1"
BLOCK_ROWS = 1 << 16  # rows per block when a whole bank is scanned (checks, copies)


# ---------------------------------------------------------------------------------------------- the bank
class ChunkBank:
    """Every chunk embedding of one split, addressable by (article_id, chunk_index) without wrapping.

    ``rows(articles, chunks)`` returns bank rows (-1 where the chunk does not exist), and ``article_table``
    holds each article's rows in chunk order (padded with -1), both built with vectorised numpy.
    ``embeddings`` may be a read-only memory map.
    """

    def __init__(self, embeddings: np.ndarray, article_ids: np.ndarray, chunk_indices: np.ndarray,
                 source: str = "bank"):
        self.embeddings = embeddings if embeddings.dtype == np.float32 else np.asarray(embeddings, np.float32)
        self.source = source
        self.article_ids = np.asarray(article_ids, dtype=np.int64)
        self.chunk_indices = np.asarray(chunk_indices, dtype=np.int64)
        self.articles, codes = np.unique(self.article_ids, return_inverse=True)
        self._stride = int(self.chunk_indices.max()) + 1
        keys = codes * self._stride + self.chunk_indices
        self._order = np.argsort(keys, kind="stable")
        self._sorted_keys = keys[self._order]
        self.article_sizes = np.bincount(codes, minlength=len(self.articles))
        self.article_table = self._build_article_table(codes[self._order])

    def __len__(self) -> int:
        return len(self.article_ids)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def _build_article_table(self, sorted_codes: np.ndarray) -> np.ndarray:
        starts = np.concatenate([[0], np.cumsum(self.article_sizes)[:-1]])
        position = np.arange(len(sorted_codes)) - starts[sorted_codes]
        table = np.full((len(self.articles), int(self.article_sizes.max())), -1, dtype=np.int64)
        table[sorted_codes, position] = self._order
        return table

    def article_codes(self, article_ids: np.ndarray) -> np.ndarray:
        """Dense code of each article id (-1 for an article the bank does not hold)."""
        pos = np.searchsorted(self.articles, article_ids)
        pos_clipped = np.minimum(pos, len(self.articles) - 1)
        return np.where(self.articles[pos_clipped] == article_ids, pos_clipped, -1)

    def rows(self, article_ids: np.ndarray, chunk_indices: np.ndarray) -> np.ndarray:
        """Bank row of each (article_id, chunk_index), or -1 where that chunk is not in the bank: "chunk t+k
        of article a" is ``rows(a, t + k)``."""
        codes = self.article_codes(np.asarray(article_ids))
        chunk_indices = np.asarray(chunk_indices)
        valid = (codes >= 0) & (chunk_indices >= 0) & (chunk_indices < self._stride)
        keys = np.where(valid, codes * self._stride + chunk_indices, -1)
        pos = np.minimum(np.searchsorted(self._sorted_keys, keys), len(self._sorted_keys) - 1)
        found = valid & (self._sorted_keys[pos] == keys)
        return np.where(found, self._order[pos], -1)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """float32 vectors of bank ``rows`` (any shape of row indices, all >= 0), read from memory or the map."""
        rows = np.asarray(rows)
        return np.asarray(self.embeddings[rows.ravel()], dtype=np.float32).reshape(*rows.shape, self.dim)

    def nbytes(self) -> int:
        return int(self.embeddings.shape[0]) * self.dim * 4


def resident_bank(bank: ChunkBank, device, max_fraction: float = 0.5):
    """The bank as a torch tensor on ``device`` when it fits in ``max_fraction`` of the device's free memory
    (copied there block by block, never a second full host copy), else in host memory (one copy, which the
    ``bank`` then shares, so a memory map is not held beside it); training and evaluation gather window
    vectors from it by index."""
    import torch

    device = torch.device(device)
    rows, dim = bank.embeddings.shape
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if bank.nbytes() <= max_fraction * free:
            tensor = torch.empty((rows, dim), dtype=torch.float32, device=device)
            for start in range(0, rows, BLOCK_ROWS):
                block = np.ascontiguousarray(bank.embeddings[start:start + BLOCK_ROWS], dtype=np.float32)
                tensor[start:start + len(block)] = torch.from_numpy(block).to(device)
            return tensor
        print(f"[vecflow] bank {bank.source}: {bank.nbytes() / 2**30:.2f} GiB does not fit in "
              f"{max_fraction:.0%} of the free GPU memory; kept in host memory", flush=True)
    if not isinstance(bank.embeddings, np.memmap) and bank.embeddings.flags.writeable:
        return torch.from_numpy(np.ascontiguousarray(bank.embeddings))
    resident = np.empty(bank.embeddings.shape, dtype=np.float32)  # one host copy, read from the map in blocks
    for start in range(0, rows, BLOCK_ROWS):
        resident[start:start + BLOCK_ROWS] = bank.embeddings[start:start + BLOCK_ROWS]
    bank.embeddings = resident  # the bank now reads from the same copy and the map is released
    return torch.from_numpy(resident)


# ---------------------------------------------------------------------------------------------- reading
def read_index(path: str | Path) -> list[dict]:
    """Rows ``{article_id, chunk_index, text}`` (extra fields such as ``title`` are dropped), validated."""
    return list(iter_index(path))


def iter_index(path: str | Path) -> Iterator[dict]:
    for lineno, row in iter_jsonl(path):
        require_fields(row, INDEX_FIELDS, path, lineno)
        yield {key: row[key] for key in INDEX_FIELDS}


def read_index_keys(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(article_ids, chunk_indices) of an index, checked: integers, chunk_index >= 0, no key twice."""
    article_ids, chunk_indices, linenos = [], [], []
    for lineno, record in iter_jsonl(path):
        require_fields(record, {"article_id": int, "chunk_index": int}, path, lineno)
        if record["chunk_index"] < 0:
            raise VecflowError(f"{where(path, lineno, 'chunk_index')}: must be >= 0, got {record['chunk_index']}")
        article_ids.append(record["article_id"])
        chunk_indices.append(record["chunk_index"])
        linenos.append(lineno)
    if not article_ids:
        raise VecflowError(f"{path}: no rows")
    article_ids, chunk_indices = np.array(article_ids, np.int64), np.array(chunk_indices, np.int64)
    order = np.lexsort((np.arange(len(article_ids)), chunk_indices, article_ids))
    same = (np.diff(article_ids[order]) == 0) & (np.diff(chunk_indices[order]) == 0)
    if same.any():
        repeats = np.flatnonzero(same)
        second = repeats[np.argmin(order[repeats + 1])]  # the earliest line that repeats a key
        first_row, row = order[second], order[second + 1]
        while second > 0 and same[second - 1]:  # the first occurrence of that key
            second -= 1
            first_row = order[second]
        raise VecflowError(f"{where(path, linenos[row])}: duplicate (article_id={article_ids[row]}, "
                           f"chunk_index={chunk_indices[row]}), first on line {linenos[first_row]}")
    return article_ids, chunk_indices


def safetensors_header(path: str | Path) -> tuple[dict, int]:
    """(header JSON, byte offset of the data section) of a safetensors file, read without loading tensors."""
    path = Path(path)
    if not path.is_file():
        raise VecflowError(f"{path}: file not found")
    try:
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > 100_000_000:
                raise ValueError(f"header length {length}")
            header = json.loads(fh.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise VecflowError(f"{path}: not a readable safetensors file ({exc})") from None
    return header, 8 + length


def map_tensor(path: str | Path, key: str = EMBEDDINGS_KEY) -> np.ndarray:
    """Memory-map one float32 tensor of a safetensors file (read-only); nothing is read until used."""
    path = Path(path)
    if not path.is_file():
        raise VecflowError(f"{path}: file not found")
    header, data_start = safetensors_header(path)
    if key not in header:
        names = ", ".join(sorted(k for k in header if k != "__metadata__")) or "none"
        raise VecflowError(f"{path}: missing tensor '{key}' (has: {names})")
    info = header[key]
    shape, (begin, end) = tuple(info["shape"]), info["data_offsets"]
    if info["dtype"] != "F32" or len(shape) != 2:
        raise VecflowError(f"{path}: tensor '{key}' must be a 2-D float32 array, got {info['dtype']} {list(shape)}")
    if end - begin != shape[0] * shape[1] * 4 or data_start + end > path.stat().st_size:
        raise VecflowError(f"{path}: tensor '{key}' is truncated ({end - begin} bytes for shape {list(shape)}); "
                           f"re-run vecflow embed")
    if shape[0] == 0:
        return np.zeros(shape, np.float32)
    return np.memmap(path, dtype=np.float32, mode="r", offset=data_start + begin, shape=shape)


def tensor_metadata(path: str | Path) -> dict:
    return safetensors_header(Path(path))[0].get("__metadata__", {}) or {}


def read_manifest(folder: Path) -> dict:
    manifest = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise VecflowError(f"{folder / MANIFEST}: field 'format': expected {MANIFEST_FORMAT!r}, "
                           f"got {manifest.get('format')!r}")
    return manifest


def open_embeddings(path: str | Path) -> np.ndarray:
    """The bank's M x D vectors: a memory map of ``F.safetensors``, or a sharded folder's shards (in
    manifest order) joined into one array."""
    path = Path(path)
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise VecflowError(f"{path}: a folder without {MANIFEST}: not a sharded bank")
        manifest = read_manifest(path)
        shards = [map_tensor(path / shard["name"]) for shard in manifest["shards"]]
        if not shards:
            raise VecflowError(f"{path / MANIFEST}: no complete shards")
        return np.concatenate(shards)
    return map_tensor(path)


def check_unit_rows(embeddings: np.ndarray, source, tolerance: float = NORM_TOLERANCE) -> None:
    """Every row finite and L2-normalised (retrieval and c_k compare raw dot products), checked block by block
    so a mapped bank is never held twice; names the first bad row."""
    for start in range(0, len(embeddings), BLOCK_ROWS):
        block = np.asarray(embeddings[start:start + BLOCK_ROWS], dtype=np.float64)
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = start + int(np.flatnonzero(~finite)[0])
            raise VecflowError(f"{source}: row {row} is not finite (NaN or infinity): the file is corrupt; "
                               f"re-run vecflow embed (no gate can waive this)")
        norms = np.linalg.norm(block, axis=1)
        bad = np.flatnonzero(~(np.abs(norms - 1.0) <= tolerance))
        if len(bad):
            row = start + int(bad[0])
            raise VecflowError(f"{source}: row {row} has norm {norms[bad[0]]:.4f}, not 1 (rows must be "
                               f"L2-normalised); re-run vecflow embed, which normalises every row")


def index_of(path: str | Path) -> Path:
    """The index that belongs to an embeddings path: ``F.index.jsonl`` beside ``F.safetensors``."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".safetensors") + ".index.jsonl")


def encoder_dim(encoder_dir: str | Path) -> int:
    """The vector width of the sentence encoder in ``encoder_dir`` (what ``SentenceEncoder.dim`` is), read from
    its ``config.json`` without loading weights."""
    config_path = Path(encoder_dir) / "config.json"
    if not config_path.is_file():
        raise VecflowError(f"{encoder_dir}: not an HF encoder folder (no config.json); pass the encoder folder "
                           f"the config names to --encoder")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VecflowError(f"{config_path}: not readable JSON ({exc})") from None
    dim = config.get("hidden_size") if isinstance(config, dict) else None
    if dim is None:  # a model type that names it otherwise (dim, d_model): transformers maps it
        from transformers import AutoConfig

        dim = getattr(AutoConfig.from_pretrained(str(encoder_dir)), "hidden_size", None)
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise VecflowError(f"{config_path}: field 'hidden_size': expected a positive integer, got {dim!r}")
    return dim


def bank_metadata(path: str | Path) -> dict:
    """What ``vecflow embed`` recorded about a bank (``encoder``, ``dim``, ``count``): the safetensors
    metadata, or a sharded folder's manifest ``metadata``; empty for older files without it."""
    path = Path(path)
    if path.is_dir():
        return dict(read_manifest(path).get("metadata") or {})
    return dict(tensor_metadata(path))


def check_bank_encoder(embeddings_path: str | Path, width: int, encoder_dir: str | Path) -> None:
    """The bank at ``embeddings_path`` (rows ``width`` wide) must come from the encoder in ``encoder_dir``: same
    dimension, and, where the bank's metadata names its encoder (older files do not), the same encoder."""
    dim, name = encoder_dim(encoder_dir), Path(encoder_dir).name or Path(encoder_dir).resolve().name
    made_with = bank_metadata(embeddings_path).get("encoder") or None
    if width == dim and made_with in (None, name):
        return
    made = f"was made with encoder '{made_with}' (D={width})" if made_with else f"has rows of dimension {width}"
    raise VecflowError(f"{embeddings_path}: the bank {made} but the config names encoder '{name}' ({encoder_dir}, "
                       f"D={dim}); re-run vecflow embed with encoder {encoder_dir}, or set encoder: in the config "
                       f"to the one the bank was made with" + (f" ('{made_with}')" if made_with else ""))


def load_bank(embeddings_path: str | Path, index_path: str | Path | None = None,
              encoder_dir: str | Path | None = None) -> ChunkBank:
    """Open a bank (``F.safetensors`` + ``F.index.jsonl``, or a sharded folder), check it and index it.

    Checks: 2-D float32, every row finite and of unit norm, one index row per embedding row, each
    (article_id, chunk_index) once with chunk_index >= 0; with ``encoder_dir`` (the encoder the config names)
    also ``check_bank_encoder``. The vectors stay memory-mapped.
    """
    embeddings_path = Path(embeddings_path)
    embeddings = open_embeddings(embeddings_path)
    if encoder_dir is not None:
        check_bank_encoder(embeddings_path, int(embeddings.shape[1]), encoder_dir)
    if embeddings_path.is_dir():
        article_ids, chunk_indices = _sharded_keys(embeddings_path)
        index_path = embeddings_path / MANIFEST
    else:
        index_path = Path(index_path) if index_path is not None else index_of(embeddings_path)
        article_ids, chunk_indices = read_index_keys(index_path)
    if len(article_ids) != len(embeddings):
        raise VecflowError(f"{index_path}: {len(article_ids)} rows but {embeddings_path} has "
                           f"{len(embeddings)} embeddings; re-run vecflow embed (both are written together)")
    check_unit_rows(embeddings, embeddings_path)
    return ChunkBank(embeddings, article_ids, chunk_indices, source=str(embeddings_path))


def bank_index_rows(embeddings_path: str | Path, index_path: str | Path | None = None) -> Iterator[dict]:
    """The index rows (``article_id, chunk_index, text``) of a bank, in row order: ``F.index.jsonl`` or, for a
    sharded folder, each shard's index in manifest order."""
    embeddings_path = Path(embeddings_path)
    if embeddings_path.is_dir():
        for shard in read_manifest(embeddings_path)["shards"]:
            yield from iter_index(embeddings_path / shard["index"])
    else:
        yield from iter_index(Path(index_path) if index_path is not None else index_of(embeddings_path))


def _sharded_keys(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_index_keys(folder / shard["index"]) for shard in read_manifest(folder)["shards"]]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_embeddings(path: str | Path, index_path: str | Path) -> tuple[np.ndarray, list[dict]]:
    """The vectors (checked, memory-mapped) and the index rows with their texts: for consumers that need
    the texts (the server's retrieval, deploy)."""
    bank = load_bank(path, index_path)
    return bank.embeddings, read_index(index_path)


# ---------------------------------------------------------------------------------------------- writing
def partial_dir(out: str | Path) -> Path:
    return Path(str(out) + ".partial")


class ShardedBankWriter:
    """Write a bank as fixed-size shards in ``OUT.partial/``, resumable, then publish ``OUT`` + its index.

    ``source`` identifies what is being embedded (input file size/mtime, encoder, ...): a partial folder
    written for another source is discarded rather than resumed.
    """

    def __init__(self, out: str | Path, index_out: str | Path, shard_rows: int, source: dict):
        if shard_rows < 1:
            raise VecflowError(f"settings: field 'shard_rows': expected a positive integer, got {shard_rows}")
        self.out, self.index_out = Path(out), Path(index_out)
        self.folder = partial_dir(self.out)
        self.shard_rows = shard_rows
        self.manifest = {"format": MANIFEST_FORMAT, "shard_rows": shard_rows, "source": source, "shards": [],
                         "dim": None}
        if (self.folder / MANIFEST).is_file():
            try:
                old = read_manifest(self.folder)
            except (VecflowError, ValueError) as exc:
                print(f"[vecflow] ignoring unreadable {self.folder / MANIFEST} ({exc})", flush=True)
                old = None
            if old and old.get("source") == source and old.get("shard_rows") == shard_rows:
                self.manifest = old
            else:
                print(f"[vecflow] {self.folder} belongs to other inputs or settings: starting over", flush=True)
                shutil.rmtree(self.folder)

    @property
    def rows_done(self) -> int:
        return sum(shard["rows"] for shard in self.manifest["shards"])

    def add_shard(self, vectors: np.ndarray, rows: list[dict], metadata: dict) -> None:
        """Write one complete shard (vectors + index rows), then record it in the manifest."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(rows):
            raise VecflowError(f"{self.folder}: shard of {vectors.shape} vectors for {len(rows)} rows")
        if self.manifest["dim"] not in (None, vectors.shape[1]):
            raise VecflowError(f"{self.folder}: shard has dimension {vectors.shape[1]}, earlier shards "
                               f"{self.manifest['dim']}")
        number = len(self.manifest["shards"])
        name = f"shard-{number:05d}"
        self.folder.mkdir(parents=True, exist_ok=True)  # created with the first shard: a bad input leaves nothing
        save_tensors(self.folder / f"{name}.safetensors", {EMBEDDINGS_KEY: vectors}, metadata=metadata)
        _write_index(self.folder / f"{name}.index.jsonl", rows)
        self.manifest["dim"] = int(vectors.shape[1])
        self.manifest["metadata"] = metadata
        self.manifest["shards"].append({"name": f"{name}.safetensors", "index": f"{name}.index.jsonl",
                                        "rows": len(rows)})
        write_json(self.folder / MANIFEST, self.manifest)

    def finish(self, keep_partial: bool = False) -> int:
        """Stream the shards into ``OUT`` (safetensors) and ``INDEX``; both appear only when complete. The partial
        folder is removed unless ``keep_partial`` (a multi-split export removes it once every split is out)."""
        shards = self.manifest["shards"]
        if not shards:
            raise VecflowError(f"{self.folder}: no shards to publish")
        total, dim = self.rows_done, self.manifest["dim"]
        metadata = {**self.manifest.get("metadata", {}), "count": str(total), "dim": str(dim)}
        header = {"__metadata__": metadata,
                  EMBEDDINGS_KEY: {"dtype": "F32", "shape": [total, dim], "data_offsets": [0, total * dim * 4]}}
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)  # data section 8-byte aligned, as safetensors writes it
        with atomic_path(self.index_out, suffix=".jsonl") as index_tmp, \
                atomic_path(self.out, suffix=".safetensors") as vectors_tmp:
            with open(vectors_tmp, "wb") as out, open(index_tmp, "wb") as index:
                out.write(struct.pack("<Q", len(text)) + text)
                for shard in shards:
                    vectors = map_tensor(self.folder / shard["name"])
                    if vectors.shape != (shard["rows"], dim):
                        raise VecflowError(f"{self.folder / shard['name']}: shape {vectors.shape}, the manifest "
                                           f"says ({shard['rows']}, {dim}); delete {self.folder} and re-run")
                    for start in range(0, len(vectors), BLOCK_ROWS):
                        out.write(np.ascontiguousarray(vectors[start:start + BLOCK_ROWS]).tobytes())
                    with open(self.folder / shard["index"], "rb") as part:
                        shutil.copyfileobj(part, index)
                out.flush()
                os.fsync(out.fileno())
        if not keep_partial:
            self.discard()
        return total

    def discard(self) -> None:
        """Remove the partial folder (after publishing)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _write_index(path: Path, rows: list[dict]) -> None:
    with atomic_path(path, suffix=".jsonl") as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({key: row[key] for key in INDEX_FIELDS}, ensure_ascii=False) + "\n")


def batched(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def export_bank(rows: Iterable[dict], encode: Callable[[list[str]], np.ndarray], writer: ShardedBankWriter,
                metadata: dict) -> int:
    """Encode ``rows`` (an iterator: only one shard of texts is ever held) shard by shard after the rows the
    writer already holds, then publish. Returns the number of rows in the finished bank."""
    write_shards(rows, encode, writer, metadata)
    return writer.finish()


def write_shards(rows: Iterable[dict], encode: Callable[[list[str]], np.ndarray], writer: ShardedBankWriter,
                 metadata: dict) -> int:
    """``export_bank`` without the publishing: every row in complete shards of ``writer``'s partial folder (rows
    it already holds are skipped, not encoded). Returns the rows held."""
    skip = writer.rows_done
    if skip:
        print(f"[vecflow] resuming the export after {skip} rows ({len(writer.manifest['shards'])} complete "
              f"shards in {writer.folder})", flush=True)
    remaining = (row for i, row in enumerate(rows) if i >= skip)
    for shard_rows in batched(remaining, writer.shard_rows):
        vectors = encode([row["text"] for row in shard_rows])
        writer.add_shard(vectors, shard_rows, metadata)
        print(f"[vecflow] shard {len(writer.manifest['shards'])}: {writer.rows_done} rows", flush=True)
    return writer.rows_done
