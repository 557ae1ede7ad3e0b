"""``vecflow.core.gguf_memo``: within ``memoised_gguf_parsing()`` a GGUF file is parsed once, and only there.

The gguf package's reader and name-map builder are replaced by counting fakes (monkeypatch restores the real
ones), so these tests are fast and need no GGUF file except the end-to-end one, which writes a tiny one.
"""

from __future__ import annotations

import pytest

gguf = pytest.importorskip("gguf")

from vecflow.core import fetch  # noqa: E402
from vecflow.core.gguf_memo import memoised_gguf_parsing  # noqa: E402


class _CountingReader:
    """Stands in for ``gguf.GGUFReader``: records every construction instead of parsing a file."""

    built: list[tuple[str, str]] = []

    def __init__(self, path, mode="r"):
        self.path, self.mode = str(path), mode
        _CountingReader.built.append((str(path), mode))


@pytest.fixture
def fake_gguf(monkeypatch):
    """Install counting fakes as ``gguf.GGUFReader`` / ``gguf.get_tensor_name_map``; yield their call logs."""
    _CountingReader.built = []
    maps: list[tuple] = []
    monkeypatch.setattr(gguf, "GGUFReader", _CountingReader)
    monkeypatch.setattr(gguf, "get_tensor_name_map", lambda arch, n_blocks: maps.append((arch, n_blocks)) or object())
    return _CountingReader.built, maps


def test_same_file_is_parsed_once_within_the_scope(fake_gguf, tmp_path):
    built, _ = fake_gguf
    path = tmp_path / "m.gguf"
    with memoised_gguf_parsing():
        first = gguf.GGUFReader(path)
        again = gguf.GGUFReader(str(tmp_path / "." / "m.gguf"))  # same file, other spelling
        other = gguf.GGUFReader(tmp_path / "other.gguf")
    assert again is first and other is not first
    assert [p for p, _ in built] == [str(path), str(tmp_path / "other.gguf")]


def test_writable_readers_are_never_shared(fake_gguf, tmp_path):
    built, _ = fake_gguf
    with memoised_gguf_parsing():
        first = gguf.GGUFReader(tmp_path / "m.gguf", "r+")
        second = gguf.GGUFReader(tmp_path / "m.gguf", "r+")
    assert first is not second and len(built) == 2


def test_memo_is_removed_after_the_scope(fake_gguf, tmp_path):
    built, maps = fake_gguf
    with memoised_gguf_parsing():
        inside = gguf.GGUFReader(tmp_path / "m.gguf")
        gguf.get_tensor_name_map("llama", 2)
    assert gguf.GGUFReader is _CountingReader  # the real attribute is back
    after = gguf.GGUFReader(tmp_path / "m.gguf")
    gguf.get_tensor_name_map("llama", 2)
    assert after is not inside and len(built) == 2 and len(maps) == 2


def test_memo_is_removed_when_the_conversion_fails(fake_gguf, tmp_path):
    name_map = gguf.get_tensor_name_map
    with pytest.raises(RuntimeError, match="boom"):
        with memoised_gguf_parsing():
            gguf.GGUFReader(tmp_path / "m.gguf")
            raise RuntimeError("boom")
    assert gguf.GGUFReader is _CountingReader and gguf.get_tensor_name_map is name_map


def test_name_map_is_built_once_per_arch_and_block_count(fake_gguf):
    _, maps = fake_gguf
    with memoised_gguf_parsing():
        first = gguf.get_tensor_name_map("llama", 30)
        assert gguf.get_tensor_name_map("llama", 30) is first
        assert gguf.get_tensor_name_map("llama", 2) is not first
    assert maps == [("llama", 30), ("llama", 2)]


def test_a_gguf_without_one_of_the_names_still_memoises_the_other(fake_gguf, tmp_path, monkeypatch):
    built, _ = fake_gguf
    monkeypatch.delattr(gguf, "get_tensor_name_map")
    with memoised_gguf_parsing():
        assert not hasattr(gguf, "get_tensor_name_map")
        assert gguf.GGUFReader(tmp_path / "m.gguf") is gguf.GGUFReader(tmp_path / "m.gguf")
    assert not hasattr(gguf, "get_tensor_name_map") and len(built) == 1


def test_convert_gguf_parses_the_file_once(tiny_causal_lm, tmp_path, monkeypatch):
    """End to end: transformers asks for a reader three times (tokenizer, config, weights); one parse."""
    from test_fetch import _write_tiny_llama_gguf

    gguf_file = tmp_path / "Tiny.F32.gguf"
    _write_tiny_llama_gguf(tiny_causal_lm, gguf_file)
    real_reader, parsed = gguf.GGUFReader, []

    def counting_reader(path, mode="r"):
        parsed.append(str(path))
        return real_reader(path, mode)

    monkeypatch.setattr(gguf, "GGUFReader", counting_reader)
    fetch.convert_gguf(gguf_file, tmp_path / "out")
    assert parsed == [str(gguf_file)]
    assert gguf.GGUFReader is counting_reader  # and the memo is gone again
    assert (tmp_path / "out" / "model.safetensors").is_file()
