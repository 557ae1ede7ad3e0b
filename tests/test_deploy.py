"""Deployment gates (``vecflow deploy decide``) and the hashed bundle (``vecflow deploy bundle``)."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from vecflow.ship import deploy
from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError
from vecflow.core.io import read_json, save_tensors, sha256_file, write_json, write_jsonl
from vecflow.ship.settings import DeployGates

CONTEXT_LENGTH = 3

FIVECAT = {
    "model": {
        "val": {"c0": 0.62, "margin": 0.15, "r1": 0.7, "r5": 0.97, "mrr": 0.82, "rollout": 0.5},
        "ood": {"c0": 0.58, "margin": 0.11, "r1": 0.50, "r5": 0.93, "mrr": 0.77, "rollout": 0.44},
    },
    "baselines": {
        "copy_last": {"val": {"c0": 0.40, "margin": -0.2}, "ood": {"c0": 0.39, "margin": -0.2}},
        "context_mean": {"val": {"c0": 0.55, "margin": 0.05}, "ood": {"c0": 0.52, "margin": 0.04}},
        "ridge": {"val": {"c0": 0.57, "margin": 0.08}, "ood": {"c0": 0.55, "margin": 0.07}},
    },
    "gates": {
        "val": {"c0": True, "margin": True, "r1": True},
        "ood": {"c0": True, "margin": True, "r1": False},
        "generalisation": {"c0": True},
    },
    "thresholds": {
        "val": {"c0": 0.50, "margin": 0.12, "r1": 0.60},
        "ood": {"c0": 0.48, "margin": 0.10, "r1": 0.55},
        "max_generalisation_gap": 0.05,
    },
}
INPUT_DEPENDENT = {"distinct_ratio": 0.97, "own_rouge1": 0.31, "shuffled_rouge1": 0.12, "margin": 0.19, "n": 40}
SCORES = {"rouge": {"rouge1": {"f": 0.31, "p": 0.3, "r": 0.32}, "rougeL": {"f": 0.25}}, "bertscore": {"f1": 0.86},
          "input_dependence": INPUT_DEPENDENT}
# every gate the schema has, each as lenient as it can be (a gate a config leaves out has the schema's threshold)
LENIENT = {
    "lvm": {"use_fivecat_thresholds": False, "min_c0": 0.0, "min_margin": -1.0, "beat_baselines": False},
    "summarizer": {"min_rouge1": 0.0, "min_bertscore_f1": 0.0, "min_distinct_ratio": 0.0, "min_input_margin": -1.0},
}


SPEC = {"max_source_length": 64, "max_target_length": 16}  # the summarizer training settings (legacy folders)


def deploy_settings(gates=None, name="demo-bundle", **extra) -> dict:
    """``deploy decide``'s settings (DeploySettings); ``deploy bundle`` gets the training lengths (SPEC) too."""
    return {"name": name, "seed": 1, "device": "cpu", "gates": copy.deepcopy(LENIENT if gates is None else gates),
            **extra}


def write_eval_files(tmp_path: Path, fivecat=None, scores=None) -> tuple[Path, Path]:
    fivecat_path, scores_path = tmp_path / "eval" / "fivecat.json", tmp_path / "eval" / "scores.json"
    write_json(fivecat_path, fivecat or FIVECAT)
    write_json(scores_path, scores or SCORES)
    return fivecat_path, scores_path


def run_decide(tmp_path: Path, gates=None, fivecat=None, scores=None, families=None, **settings) -> dict:
    """``deploy decide`` through the CLI; ``families`` maps extra families to their scores JSON content."""
    fivecat_path, scores_path = write_eval_files(tmp_path, fivecat, scores)
    out = tmp_path / "decision.json"
    argv = ["deploy", "decide", "--settings", json.dumps(deploy_settings(gates, **settings)), "--fivecat",
            str(fivecat_path), "--scores", str(scores_path), "--out", str(out)]
    for family, data in (families or {}).items():
        write_json(tmp_path / "eval" / family / "scores.json", data)
        argv += ["--scores", f"{family}={tmp_path / 'eval' / family / 'scores.json'}"]
    code = cli_main(argv)
    assert code == 0
    return read_json(out)


# ---- tiny parts for a bundle (also used by test_serve.py) -------------------------------------------------


def make_tiny_lvm(out_dir: Path, dim: int, context_length: int = CONTEXT_LENGTH, seed: int = 0) -> Path:
    from vecflow.lvm.models import build_model, model_config, save_lvm
    import torch

    torch.manual_seed(seed)
    sizes = {"d_model": 16, "layers": 1, "heads": 2, "dropout": 0.0}
    model = build_model("transformer", dim, context_length, sizes)
    save_lvm(out_dir, model, model_config("transformer", dim, context_length, sizes))
    (out_dir / "state.pt").write_bytes(b"resume state the bundle must not carry")
    (out_dir / "history.jsonl").write_text('{"epoch": 1}\n')
    return out_dir


def make_tiny_summarizer(encoder_dir: Path, out_dir: Path) -> Path:
    """A BERT2BERT EncoderDecoderModel warm-started from the tiny encoder, with tokenizer and generation config."""
    from transformers import AutoTokenizer, EncoderDecoderModel, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(str(encoder_dir), str(encoder_dir))
    model.config.decoder_start_token_id = tokenizer.cls_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.sep_token_id
    model.generation_config = GenerationConfig(
        decoder_start_token_id=tokenizer.cls_token_id, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id, num_beams=1, max_new_tokens=6, do_sample=False,
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def make_bank(out_dir: Path, encoder_dir: Path, texts_per_article: int = 4) -> tuple[Path, Path]:
    from vecflow.core.encoder import SentenceEncoder

    rows = [
        {"article_id": article, "chunk_index": chunk, "text": f"article {article} chunk {chunk} about python data"}
        for article in range(3)
        for chunk in range(texts_per_article)
    ]
    vectors = SentenceEncoder(encoder_dir, device="cpu").encode([r["text"] for r in rows])
    embeddings, index = out_dir / "bank.safetensors", out_dir / "bank.index.jsonl"
    save_tensors(embeddings, {"embeddings": vectors})
    write_jsonl(index, rows)
    return embeddings, index


def make_bundle_parts(tmp_path: Path, encoder_dir: Path, summarizer: Path | None = None) -> dict:
    from transformers import AutoConfig

    dim = AutoConfig.from_pretrained(encoder_dir).hidden_size
    embeddings, index = make_bank(tmp_path, encoder_dir)
    fivecat_path, scores_path = write_eval_files(tmp_path)
    decision = deploy.decide("demo-bundle", FIVECAT, fivecat_path, {"seq2seq": (SCORES, scores_path)},
                             DeployGates.model_validate(LENIENT))
    write_json(tmp_path / "decision.json", decision)
    return {
        "decision": tmp_path / "decision.json",
        "lvm": make_tiny_lvm(tmp_path / "lvm", dim),
        "encoder": encoder_dir,
        "summarizer": summarizer or encoder_dir,
        "bank_embeddings": embeddings,
        "bank_index": index,
        "metrics": [fivecat_path, scores_path],
    }


def bundle_argv(parts: dict, out: Path) -> list[str]:
    argv = ["deploy", "bundle", "--decision", str(parts["decision"]), "--settings", json.dumps({**deploy_settings(), **SPEC}),
            "--lvm", str(parts["lvm"]), "--encoder", str(parts["encoder"]),
            "--bank-embeddings", str(parts["bank_embeddings"]), "--bank-index", str(parts["bank_index"]),
            "--summarizer", str(parts["summarizer"]), "--out", str(out)]
    for path in parts["metrics"]:
        argv += ["--metrics", str(path)]
    return argv


# ---- decide -------------------------------------------------------------------------------------------------


def test_lenient_gates_deploy_and_list_every_gate(tmp_path):
    decision = run_decide(tmp_path)
    assert decision["deploy"] is True
    assert decision["failed"] == []
    assert decision["name"] == "demo-bundle"
    names = [(g["component"], g["gate"]) for g in decision["gates"]]
    assert names == [("lvm", "val_c0"), ("lvm", "val_margin"), ("summarizer", "rouge1_f"), ("summarizer", "bertscore_f1"),
                     ("summarizer", "distinct_ratio"), ("summarizer", "input_margin")]
    assert decision["gates"][0] == {"component": "lvm", "gate": "val_c0", "value": 0.62, "threshold": 0.0, "passed": True}
    assert decision["reason"] == "deployed: all 6 gates passed (summarizer: seq2seq)"
    assert decision["summarizer"]["family"] == "seq2seq"


def test_failing_minimum_is_written_with_numbers_in_the_reason(tmp_path):
    gates = copy.deepcopy(LENIENT)
    gates["lvm"]["min_c0"] = 0.7
    decision = run_decide(tmp_path, gates=gates)
    assert decision["deploy"] is False
    assert decision["failed"] == ["lvm.val_c0"]
    assert decision["reason"] == "not deployed: lvm.val_c0 = 0.6200 (needs >= 0.7000)"
    assert "\n" not in decision["reason"]


def test_beat_baselines_compares_with_copy_last_and_context_mean(tmp_path):
    gates = copy.deepcopy(LENIENT)
    gates["lvm"]["beat_baselines"] = True
    fivecat = copy.deepcopy(FIVECAT)
    fivecat["baselines"]["context_mean"]["val"]["margin"] = 0.2  # above the model's 0.15
    decision = run_decide(tmp_path, gates=gates, fivecat=fivecat)
    beats = {g["gate"]: g for g in decision["gates"] if "_beats_" in g["gate"]}
    assert set(beats) == {"val_c0_beats_copy_last", "val_margin_beats_copy_last",
                          "val_c0_beats_context_mean", "val_margin_beats_context_mean"}
    assert beats["val_c0_beats_copy_last"]["threshold"] == 0.40
    assert decision["failed"] == ["lvm.val_margin_beats_context_mean"]
    assert decision["deploy"] is False


def test_fivecat_thresholds_use_the_reports_gates_with_their_numbers(tmp_path):
    gates = copy.deepcopy(LENIENT)
    gates["lvm"]["use_fivecat_thresholds"] = True
    decision = run_decide(tmp_path, gates=gates)
    by_name = {g["gate"]: g for g in decision["gates"]}
    assert by_name["fivecat_ood_r1"] == {"component": "lvm", "gate": "fivecat_ood_r1", "value": 0.5,
                                         "threshold": 0.55, "passed": False}
    assert by_name["fivecat_generalisation_c0"]["value"] == pytest.approx(0.04)
    assert by_name["fivecat_generalisation_c0"]["threshold"] == 0.05
    assert decision["failed"] == ["lvm.fivecat_ood_r1"]
    assert "fivecat_ood_r1 = 0.5000 (needs >= 0.5500)" in decision["reason"]


def test_summarizer_gates_read_rouge1_f_and_bertscore_f1(tmp_path):
    gates = copy.deepcopy(LENIENT)
    gates["summarizer"] = {"min_rouge1": 0.35, "min_bertscore_f1": 0.9}
    decision = run_decide(tmp_path, gates=gates)
    assert decision["failed"] == ["summarizer.rouge1_f", "summarizer.bertscore_f1"]
    assert "summarizer.rouge1_f = 0.3100 (needs >= 0.3500)" in decision["reason"]


def test_missing_score_names_file_and_field_and_writes_nothing(tmp_path, capsys):
    scores = {"rouge": {"rouge2": {"f": 0.1}}, "bertscore": {"f1": 0.8}}
    fivecat_path, scores_path = write_eval_files(tmp_path, scores=scores)
    out = tmp_path / "decision.json"
    code = cli_main(["deploy", "decide", "--settings", json.dumps(deploy_settings()), "--fivecat", str(fivecat_path),
                     "--scores", str(scores_path), "--out", str(out)])
    assert code == 2
    assert f"{scores_path}: field 'rouge.rouge1.f': missing" in capsys.readouterr().err
    assert not out.exists()


def test_non_numeric_fivecat_value_is_an_error(tmp_path):
    fivecat = copy.deepcopy(FIVECAT)
    fivecat["model"]["val"]["c0"] = "high"
    fivecat_path, scores_path = write_eval_files(tmp_path, fivecat=fivecat)
    argv = ["decide", "--settings", json.dumps(deploy_settings()), "--fivecat", str(fivecat_path),
            "--scores", str(scores_path), "--out", str(tmp_path / "decision.json")]
    with pytest.raises(VecflowError, match=r"fivecat.json: field 'model.val.c0': expected a number, got str"):
        deploy.main(argv)


# ---- bundle -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parts(tmp_path_factory, tiny_encoder) -> dict:
    return make_bundle_parts(tmp_path_factory.mktemp("parts"), tiny_encoder)


def test_bundle_holds_every_part_with_a_manifest_of_hashes(parts, tmp_path):
    out = tmp_path / "bundle"
    assert cli_main(bundle_argv(parts, out)) == 0
    assert sorted(p.name for p in (out / "lvm").iterdir()) == ["config.json", "model.safetensors"]
    assert (out / "encoder" / "config.json").exists() and (out / "encoder" / "vocab.txt").exists()
    assert (out / "summarizer" / "model.safetensors").exists()
    assert (out / "bank.index.jsonl").read_text() == parts["bank_index"].read_text()
    assert read_json(out / "metrics" / "fivecat.json") == FIVECAT
    assert read_json(out / "metrics" / "scores.json") == SCORES
    manifest = read_json(out / "manifest.json")
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert sorted(manifest["files"]) == [p for p in on_disk if p != "manifest.json"]
    for rel, digest in manifest["files"].items():
        assert sha256_file(out / rel) == digest
    assert manifest["components"]["lvm"]["context_length"] == CONTEXT_LENGTH
    assert manifest["components"]["bank"] == {"path": "bank.safetensors", "rows": 12, "dim": 32}
    assert not list(tmp_path.glob(".bundle.*")), "no temporary folder left behind"


def test_large_files_are_hard_linked_on_one_filesystem(parts, tmp_path):
    out = tmp_path / "bundle"
    assert cli_main(bundle_argv(parts, out)) == 0
    assert os.stat(out / "bank.safetensors").st_ino == os.stat(parts["bank_embeddings"]).st_ino
    assert os.stat(out / "lvm" / "model.safetensors").st_ino == os.stat(parts["lvm"] / "model.safetensors").st_ino


def test_a_model_folder_of_relative_symlinks_is_bundled_as_real_files(parts, tmp_path):
    # link_model installs a fetched model as relative symlinks (resources/models/<name>/x -> ../.fetched/<name>/x);
    # the bundle must hold the files, not links that dangle once inside it (the demo bundle's encoder did)
    fetched = tmp_path / "models" / ".fetched" / "enc"
    shutil.copytree(parts["encoder"], fetched)
    linked = tmp_path / "models" / "enc"
    for path in sorted(p for p in fetched.rglob("*") if p.is_file()):
        rel = path.relative_to(fetched)
        (linked / rel).parent.mkdir(parents=True, exist_ok=True)
        (linked / rel).symlink_to(os.path.relpath(path, (linked / rel).parent))
    out = tmp_path / "bundle"
    assert cli_main(bundle_argv({**parts, "encoder": linked}, out)) == 0
    bundled = sorted(p for p in (out / "encoder").rglob("*") if not p.is_dir())
    assert bundled and not [p for p in bundled if p.is_symlink()]
    assert (out / "encoder" / "config.json").read_bytes() == (fetched / "config.json").read_bytes()
    manifest = read_json(out / "manifest.json")
    assert "encoder/config.json" in manifest["files"]
    moved = tmp_path / "elsewhere" / "bundle"
    shutil.move(str(out), str(moved))
    assert (moved / "encoder" / "config.json").is_file()


def test_a_broken_link_in_a_model_folder_is_an_error_and_leaves_no_bundle(parts, tmp_path, capsys):
    linked = tmp_path / "enc"
    shutil.copytree(parts["encoder"], linked)
    (linked / "extra.bin").symlink_to(tmp_path / "gone.bin")  # its target was removed after link_model ran
    out = tmp_path / "bundle"
    assert cli_main(bundle_argv({**parts, "encoder": linked}, out)) == 2
    err = capsys.readouterr().err
    assert "extra.bin: broken link to " in err and "gone.bin: run fetch_model and link_model" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".bundle.*"))


def test_copy_when_hard_links_fail(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    src = tmp_path / "a.bin"
    src.write_bytes(b"weights")
    deploy.link_or_copy(src, tmp_path / "sub" / "b.bin")
    assert (tmp_path / "sub" / "b.bin").read_bytes() == b"weights"
    assert os.stat(tmp_path / "sub" / "b.bin").st_ino != os.stat(src).st_ino


def test_model_card_names_contents_metrics_gates_and_how_to_serve(parts, tmp_path):
    out = tmp_path / "bundle"
    assert cli_main(bundle_argv(parts, out)) == 0
    card = (out / "README.md").read_text()
    for heading in ("# demo-bundle", "## What is inside", "## Deployment gates", "## Metrics", "## Intended use",
                    "## Limits", "## How to serve"):
        assert heading in card
    assert "| model.val.c0 | 0.6200 |" in card
    assert "| summarizer | rouge1_f | 0.3100 | 0.0000 | yes |" in card
    assert "vecflow serve --bundle" in card


def test_bundle_is_refused_when_the_decision_says_no(parts, tmp_path, capsys):
    decision = read_json(parts["decision"])
    decision.update(deploy=False, failed=["lvm.val_c0"], reason="not deployed: lvm.val_c0 = 0.2000 (threshold 0.5000)")
    refused = dict(parts, decision=tmp_path / "no.json")
    write_json(refused["decision"], decision)
    out = tmp_path / "bundle"
    assert cli_main(bundle_argv(refused, out)) == 2
    err = capsys.readouterr().err
    assert "deployment refused by gate(s) lvm.val_c0" in err and "0.2000 (threshold 0.5000)" in err
    assert not out.exists()


def test_bank_index_must_match_the_embeddings(parts, tmp_path):
    short_index = tmp_path / "short.index.jsonl"
    short_index.write_text("\n".join(parts["bank_index"].read_text().splitlines()[:-1]) + "\n")
    out = tmp_path / "bundle"
    with pytest.raises(VecflowError, match=r"short.index.jsonl: 11 rows but .* has 12 embeddings"):
        deploy.main(bundle_argv(dict(parts, bank_index=short_index), out)[1:])
    assert not out.exists()


def test_bank_index_row_without_text_names_the_line(parts, tmp_path):
    bad_index = tmp_path / "bad.index.jsonl"
    lines = parts["bank_index"].read_text().splitlines()
    lines[2] = json.dumps({"article_id": 0, "chunk_index": 2})
    bad_index.write_text("\n".join(lines) + "\n")
    with pytest.raises(VecflowError, match=r"bad.index.jsonl:3: field 'text': missing"):
        deploy.main(bundle_argv(dict(parts, bank_index=bad_index), tmp_path / "bundle")[1:])


def test_lvm_dimension_must_match_the_bank(parts, tmp_path):
    lvm = make_tiny_lvm(tmp_path / "lvm16", dim=16)
    with pytest.raises(VecflowError, match=r"lvm16/config.json: field 'dim': 16 but the bank .* has D=32"):
        deploy.main(bundle_argv(dict(parts, lvm=lvm), tmp_path / "bundle")[1:])


def test_elm_adapter_needs_its_lm(parts, tmp_path):
    argv = bundle_argv(parts, tmp_path / "bundle")[1:] + ["--elm-adapter", str(parts["lvm"])]
    with pytest.raises(VecflowError, match="--elm-adapter and --lm go together"):
        deploy.main(argv)


def fake_adapter(folder: Path) -> Path:
    folder.mkdir()
    save_tensors(folder / "adapter.safetensors", {"w": np.zeros((2, 2), dtype=np.float32)})
    (folder / "adapter_config.json").write_text("{}")
    return folder


def elm_decision(parts: dict, tmp_path: Path) -> Path:
    decision = read_json(parts["decision"])
    decision["summarizer"] = {**decision["summarizer"], "family": "elm", "choice": "elm"}
    write_json(tmp_path / "elm-decision.json", decision)
    return tmp_path / "elm-decision.json"


def test_an_elm_decision_bundles_the_adapter_and_its_lm_and_no_seq2seq(parts, tmp_path, tiny_causal_lm):
    out = tmp_path / "bundle"
    argv = bundle_argv(dict(parts, decision=elm_decision(parts, tmp_path)), out)
    argv = argv[: argv.index("--summarizer")] + argv[argv.index("--summarizer") + 2:]
    argv += ["--elm-adapter", str(fake_adapter(tmp_path / "adapter")), "--lm", str(tiny_causal_lm)]
    assert cli_main(argv) == 0
    manifest = read_json(out / "manifest.json")
    assert "elm/adapter.safetensors" in manifest["files"] and "lm/config.json" in manifest["files"]
    assert not any(rel.startswith("summarizer/") for rel in manifest["files"])
    assert set(manifest["components"]) == {"lvm", "encoder", "summarizer", "bank", "lm"}
    assert manifest["components"]["summarizer"] == {"path": "elm/", "family": "elm", "lm": "lm/"}


def test_only_the_chosen_summarizer_is_bundled(parts, tmp_path, tiny_causal_lm):
    adapter = fake_adapter(tmp_path / "adapter")
    with_elm = bundle_argv(parts, tmp_path / "b1")[1:] + ["--elm-adapter", str(adapter), "--lm", str(tiny_causal_lm)]
    with pytest.raises(VecflowError, match="chose the seq2seq summarizer: --elm-adapter/--lm must not be given"):
        deploy.main(with_elm)
    elm_without_adapter = bundle_argv(dict(parts, decision=elm_decision(parts, tmp_path)), tmp_path / "b2")[1:]
    with pytest.raises(VecflowError, match="chose the elm summarizer: give --elm-adapter and --lm"):
        deploy.main(elm_without_adapter)
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b2").exists()


def test_the_bundle_carries_the_trained_source_length(parts, tmp_path):
    """A legacy folder without vecflow_summarizer.json gets one from the training settings (no serve skew)."""
    out = tmp_path / "bundle"
    assert cli_main(bundle_argv(parts, out)) == 0
    spec = read_json(out / "summarizer" / "vecflow_summarizer.json")
    assert spec["kind"] == "seq2seq" and spec["max_source_length"] == 64
    assert read_json(out / "manifest.json")["components"]["summarizer"]["max_source_length"] == 64
    no_spec = bundle_argv(parts, tmp_path / "b2")  # settings without the lengths: the schema's defaults
    no_spec[no_spec.index("--settings") + 1] = json.dumps({"name": "x", "gates": LENIENT})
    assert cli_main(no_spec) == 0
    assert read_json(tmp_path / "b2" / "summarizer" / "vecflow_summarizer.json")["max_source_length"] == 512


def test_a_causal_folder_without_its_spec_is_an_error(parts, tmp_path):
    """Only a legacy seq2seq folder gets its spec from the settings; a causal one must have been trained again."""
    decision = read_json(parts["decision"])
    decision["summarizer"] = {**decision["summarizer"], "family": "causal", "choice": "causal"}
    write_json(tmp_path / "causal-decision.json", decision)
    argv = bundle_argv(dict(parts, decision=tmp_path / "causal-decision.json"), tmp_path / "bundle")
    with pytest.raises(VecflowError, match=r"vecflow_summarizer\.json: file not found; re-run the causal training"):
        deploy.main(argv[1:])


# ---- decide: the summarizer choice and the gates that every bundled model needs -----------------------------

CONSTANT_OUTPUT = {"distinct_ratio": 0.05, "own_rouge1": 0.2, "shuffled_rouge1": 0.2, "margin": 0.0, "n": 40}
INPUT_GATES = {**LENIENT, "summarizer": {"min_rouge1": 0.0, "min_distinct_ratio": 0.9, "min_input_margin": 0.0}}


def test_every_bundled_model_has_gates_the_schemas_unless_set(tmp_path):
    """Gates a config leaves out have the schema's thresholds (no gate is switched off by omission); only the
    BERTScore minimum, which has no default, is off until set."""
    decision = run_decide(tmp_path, gates={"lvm": {}, "summarizer": {}})
    by_name = {g["gate"]: g for g in decision["gates"]}
    assert {"val_c0", "val_margin", "val_c0_beats_context_mean", "fivecat_val_c0", "rouge1_f", "distinct_ratio",
            "input_margin"} <= set(by_name) and "bertscore_f1" not in by_name
    assert by_name["rouge1_f"]["threshold"] == 0.2 and by_name["distinct_ratio"]["threshold"] == 0.9
    assert decision["failed"] == ["lvm.fivecat_ood_r1"]  # the 5CAT report's own failed gate


def test_input_dependence_gates_pass_an_input_dependent_summarizer(tmp_path):
    decision = run_decide(tmp_path, gates=INPUT_GATES, scores={**SCORES, "input_dependence": INPUT_DEPENDENT})
    assert decision["deploy"] is True
    by_name = {g["gate"]: g for g in decision["gates"]}
    assert by_name["distinct_ratio"]["value"] == 0.97 and by_name["input_margin"]["value"] == 0.19


def test_a_summarizer_that_ignores_its_input_is_not_deployed(tmp_path):
    decision = run_decide(tmp_path, gates=INPUT_GATES, scores={**SCORES, "input_dependence": CONSTANT_OUTPUT})
    assert decision["deploy"] is False
    assert decision["failed"] == ["summarizer.distinct_ratio", "summarizer.input_margin"]
    assert "summarizer.input_margin = 0.0000 (needs > 0.0000)" in decision["reason"]  # strictly greater


def test_missing_input_dependence_fails_the_gate_asking_to_rescore(tmp_path):
    decision = run_decide(tmp_path, gates=INPUT_GATES, scores={k: v for k, v in SCORES.items() if k != "input_dependence"})
    assert decision["deploy"] is False
    assert "summarizer.distinct_ratio" in decision["failed"]
    assert "has no 'input_dependence': re-run score_summaries for seq2seq" in decision["reason"]


def test_best_picks_the_family_with_the_highest_metric_and_names_the_scores(tmp_path):
    causal = {**SCORES, "rouge": {"rouge1": {"f": 0.40}, "rougeL": {"f": 0.20}}, "bertscore": {"f1": 0.80}}
    elm = {**SCORES, "rouge": {"rouge1": {"f": 0.10}, "rougeL": {"f": 0.30}}, "bertscore": {"f1": 0.90}}
    decision = run_decide(tmp_path, families={"causal": causal, "elm": elm}, summarizer="best")
    assert decision["summarizer"] == {"family": "causal", "choice": "best", "metric": "rouge1",
                                      "field": "rouge.rouge1.f", "compared": {"seq2seq": 0.31, "causal": 0.40,
                                                                               "elm": 0.10}}
    assert all(g["family"] == "causal" for g in decision["gates"] if g["component"] == "summarizer")
    by_bertscore = run_decide(tmp_path, families={"causal": causal, "elm": elm}, summarizer_metric="bertscore_f1")
    assert by_bertscore["summarizer"]["family"] == "elm"
    explicit = run_decide(tmp_path, families={"causal": causal, "elm": elm}, summarizer="seq2seq")
    assert explicit["summarizer"]["family"] == "seq2seq"


def test_an_explicit_family_without_scores_is_an_error(tmp_path):
    fivecat_path, scores_path = write_eval_files(tmp_path)
    argv = ["decide", "--settings", json.dumps(deploy_settings(summarizer="elm")), "--fivecat", str(fivecat_path),
            "--scores", f"seq2seq={scores_path}", "--out", str(tmp_path / "d.json")]
    with pytest.raises(VecflowError, match=r"field 'summarizer': 'elm' has no --scores \(given: seq2seq\)"):
        deploy.main(argv)
    assert not (tmp_path / "d.json").exists()


def test_metrics_with_the_same_file_name_are_kept_apart(tmp_path):
    a, b = tmp_path / "seq2seq" / "scores.json", tmp_path / "elm" / "scores.json"
    names = deploy.metrics_names([a, b])
    assert names == {"scores.json": a, "elm_scores.json": b}
