"""Scoped memo of the gguf package's pure-Python parsing, for ``fetch.convert_gguf``.

Why: loading one GGUF causal LM through transformers (``AutoTokenizer`` then ``AutoModelForCausalLM``) calls
``load_gguf_checkpoint`` three times (tokenizer, config, weights), and each builds a new ``gguf.GGUFReader``
whose ``_build_fields`` walks every metadata field in Python (~6 s for a 49k-token vocabulary). The weight
pass then calls ``get_gguf_hf_weights_map`` once per submodule (hundreds of times), and each call rebuilds
the same ``gguf.get_tensor_name_map(arch, n_blocks)`` (~20 ms each). Both results are read-only for
transformers, so within one conversion the first result can be handed out again: transformers still does
the whole conversion, it just stops re-parsing the same bytes.

transformers imports both names from the ``gguf`` package at call time (``from gguf import GGUFReader``),
so replacing the package attributes for the duration of the ``with`` block is enough; they are restored
afterwards, also on error. A gguf version without one of the attributes is simply not memoised.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def memoised_gguf_parsing() -> Iterator[None]:
    """Within the block, same-path ``gguf.GGUFReader`` and same-args ``gguf.get_tensor_name_map`` are parsed once."""
    try:
        import gguf
    except ImportError:  # transformers will report the missing package itself
        yield
        return
    originals = {name: getattr(gguf, name) for name in ("GGUFReader", "get_tensor_name_map") if hasattr(gguf, name)}
    wrappers = {"GGUFReader": _memo_reader, "get_tensor_name_map": _memo_name_map}
    try:
        for name, original in originals.items():
            setattr(gguf, name, wrappers[name](original))
        yield
    finally:
        # Restore even if the conversion failed, so no cached reader (and its memmap) outlives the block.
        for name, original in originals.items():
            setattr(gguf, name, original)


def _memo_reader(original: Callable) -> Callable:
    """Wrap the ``GGUFReader`` class so read-only readers of the same file are built once.

    Only read-only (``mode="r"``) readers of a path are shared: a writable reader's memmap could be changed
    by its caller, so those are always built afresh.
    """
    cache: dict[str, object] = {}

    def reader(path, mode="r", *args, **kwargs):
        if mode != "r" or args or kwargs or not isinstance(path, (str, os.PathLike)):
            return original(path, mode, *args, **kwargs)
        key = os.path.realpath(path)  # "dir/x.gguf" and "dir/./x.gguf" are the same file
        if key not in cache:
            cache[key] = original(path, mode)
        return cache[key]

    return reader


def _memo_name_map(original: Callable) -> Callable:
    """Wrap ``get_tensor_name_map`` so each ``(arch, n_blocks)`` map is built once (callers only look it up)."""
    cache: dict[tuple, object] = {}

    def name_map(arch, n_blocks):
        key = (arch, n_blocks)
        if key not in cache:
            cache[key] = original(arch, n_blocks)
        return cache[key]

    return name_map
