"""The model server: a real uvicorn process on a loopback port, called over HTTP with httpx.

The bundle is built by ``vecflow.deploy`` from tiny parts: the tiny encoder, a tiny transformer LVM, a tiny
BERT2BERT summarizer, a 12-chunk bank and (when ``vecflow.elm`` is importable) a random ELM adapter on the
tiny causal LM.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from test_deploy import CONTEXT_LENGTH, make_bundle_parts, make_tiny_summarizer
from vecflow import deploy
from vecflow.cli import main as cli_main
from vecflow.errors import VecflowError
from vecflow.io import read_json, read_jsonl, sha256_file, write_json

pytest.importorskip("vecflow.lvm_models")
REPO = Path(__file__).resolve().parents[1]
DIM = 32  # the tiny encoder's hidden size
START_TIMEOUT_S = 180


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_tiny_elm_adapter(out_dir: Path, lm_dir: Path, embed_dim: int) -> Path:
    """A random adapter in the layout ``vecflow.elm.write_adapter`` produces."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig

    elm = pytest.importorskip("vecflow.elm")
    torch.manual_seed(0)
    settings = {"soft_tokens": 2, "hidden_dim": 16, "dropout": 0.0, "residual_scale": 0.1}
    config = elm.adapter_config(settings, embed_dim, AutoConfig.from_pretrained(lm_dir).hidden_size)
    adapter = elm.build_adapter(config)
    out_dir.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, str(out_dir / "adapter.safetensors"))
    write_json(out_dir / "adapter_config.json", {
        **config, "templates": ["Summarize the dialogue: <EMB>"], "generation": {"num_beams": 1, "max_new_tokens": 5},
    })
    return out_dir


def build_test_bundle(tmp: Path, tiny_encoder: Path, tiny_causal_lm: Path | None) -> Path:
    summarizer = make_tiny_summarizer(tiny_encoder, tmp / "summarizer")
    parts = make_bundle_parts(tmp, tiny_encoder, summarizer=summarizer)
    if tiny_causal_lm is not None:
        parts["elm"] = make_tiny_elm_adapter(tmp / "adapter", tiny_causal_lm, DIM)
        parts["lm"] = tiny_causal_lm
    decision = read_json(parts.pop("decision"))
    metrics = parts.pop("metrics")
    deploy.build_bundle(tmp / "bundle", "tiny-bundle", decision, parts, metrics)
    return tmp / "bundle"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_encoder, tiny_causal_lm) -> Path:
    return build_test_bundle(tmp_path_factory.mktemp("serve"), tiny_encoder, tiny_causal_lm)


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory):
    """``vecflow serve`` in a subprocess on a free loopback port; yields its base URL, stops it afterwards."""
    port = free_loopback_port()
    log_path = tmp_path_factory.mktemp("serve-log") / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "scripts")}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vecflow.cli", "serve", "--bundle", str(bundle), "--host", "127.0.0.1",
             "--port", str(port), "--device", "cpu"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, proc, log_path)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_until_healthy(url: str, proc: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"server did not answer /health within {START_TIMEOUT_S} s:\n{log_path.read_text()}")


def post(url: str, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=120)


def random_unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> list[list[float]]:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).tolist()


# ---- start-up, health, info ---------------------------------------------------------------------------------


def test_health_and_info_describe_the_bundle(server, bundle):
    assert httpx.get(f"{server}/health").json() == {"status": "ok", "bundle": "tiny-bundle"}
    info = httpx.get(f"{server}/info").json()
    assert info["name"] == "tiny-bundle"
    assert info["manifest_sha256"] == sha256_file(bundle / "manifest.json")
    assert info["dims"] == {"dim": DIM, "context_length": CONTEXT_LENGTH}
    assert set(info["components"]) == {"lvm", "encoder", "summarizer", "bank", "elm", "lm"}
    assert info["metrics"]["scores.json"]["bertscore"]["f1"] == 0.86


def test_openapi_lists_every_endpoint(server):
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    assert {"/health", "/info", "/encode", "/predict-next", "/chat", "/summarize"} <= set(paths)


# ---- encode / predict-next / chat ---------------------------------------------------------------------------


def test_encode_returns_the_bundled_encoders_unit_vectors(server, bundle):
    from vecflow.encoder import SentenceEncoder

    texts = ["the doctor asks about lunch", "python module data"]
    response = post(server, "/encode", {"texts": texts})
    assert response.status_code == 200
    body = response.json()
    assert body["dim"] == DIM and len(body["vectors"]) == 2
    expected = SentenceEncoder(bundle / "encoder", device="cpu").encode(texts)
    np.testing.assert_allclose(np.array(body["vectors"]), expected, atol=1e-5)


def test_predict_next_matches_the_lvm(server, bundle):
    from vecflow.lvm_models import load_lvm, predict

    context = random_unit_vectors(CONTEXT_LENGTH)
    response = post(server, "/predict-next", {"context": context})
    assert response.status_code == 200
    body = response.json()
    assert len(body["vector"]) == DIM and body["norm"] == pytest.approx(1.0, abs=1e-5)
    expected = predict(load_lvm(bundle / "lvm"), np.array([context], dtype=np.float32), batch_size=1)[0]
    np.testing.assert_allclose(body["vector"], expected, atol=1e-5)


@pytest.mark.parametrize(
    "context, message",
    [
        (random_unit_vectors(CONTEXT_LENGTH - 1), f"context: expected exactly {CONTEXT_LENGTH} vectors, got 2"),
        (random_unit_vectors(CONTEXT_LENGTH, dim=DIM)[:1] * 2 + [[0.1] * (DIM - 1)],
         f"context[2]: expected dimension {DIM}, got {DIM - 1}"),
        ([], "at least 1 item"),
    ],
    ids=["too-few-vectors", "wrong-dimension", "empty"],
)
def test_predict_next_rejects_wrong_shapes_with_422(server, context, message):
    response = post(server, "/predict-next", {"context": context})
    assert response.status_code == 422
    assert message in json.dumps(response.json())


def test_chat_answers_with_the_nearest_bank_chunk(server, bundle):
    texts = ["article 0 chunk 0 about python data", "article 0 chunk 1 about python data",
             "article 0 chunk 2 about python data"]
    response = post(server, "/chat", {"texts": texts, "top_k": 4})
    assert response.status_code == 200
    body = response.json()
    bank_texts = {row["text"] for row in read_jsonl(bundle / "bank.index.jsonl")}
    assert len(body["top"]) == 4
    assert body["next_text"] == body["top"][0]["text"] and body["next_text"] in bank_texts
    assert body["similarity"] == body["top"][0]["similarity"]
    similarities = [hit["similarity"] for hit in body["top"]]
    assert similarities == sorted(similarities, reverse=True)
    assert {"article_id", "chunk_index"} <= set(body["top"][0])


def test_chat_needs_exactly_context_length_texts(server):
    response = post(server, "/chat", {"texts": ["only one text"]})
    assert response.status_code == 422
    assert f"texts: expected exactly {CONTEXT_LENGTH} texts, got 1" in response.json()["detail"]
    assert post(server, "/encode", {"texts": []}).status_code == 422


# ---- summarize ----------------------------------------------------------------------------------------------


def test_summarize_a_dialogue_with_the_bundled_seq2seq_model(server, bundle):
    import torch
    from transformers import AutoTokenizer, EncoderDecoderModel

    dialogue = "#Person1#: can you help me buy a book ? #Person2#: yes , today ."
    response = post(server, "/summarize", {"dialogue": dialogue})
    assert response.status_code == 200
    model = EncoderDecoderModel.from_pretrained(bundle / "summarizer").eval()
    tokenizer = AutoTokenizer.from_pretrained(bundle / "summarizer")
    with torch.inference_mode():
        ids = model.generate(**tokenizer(dialogue, return_tensors="pt"))
    assert response.json()["summary"] == tokenizer.decode(ids[0], skip_special_tokens=True).strip()


def test_summarize_an_embedding_through_the_elm(server):
    response = post(server, "/summarize", {"embedding": random_unit_vectors(1)[0]})
    assert response.status_code == 200
    assert isinstance(response.json()["summary"], str)
    wrong = post(server, "/summarize", {"embedding": [0.5] * (DIM + 1)})
    assert wrong.status_code == 422
    assert f"embedding[0]: expected dimension {DIM}, got {DIM + 1}" in wrong.json()["detail"]


@pytest.mark.parametrize(
    "body, message",
    [({}, "exactly one of 'dialogue' or 'embedding'"),
     ({"dialogue": "#Person1#: hi", "embedding": [0.1] * DIM}, "exactly one of 'dialogue' or 'embedding'"),
     ({"dialogue": "   "}, "'dialogue' is empty")],
    ids=["neither", "both", "blank-dialogue"],
)
def test_summarize_rejects_bad_bodies_with_422(server, body, message):
    response = post(server, "/summarize", body)
    assert response.status_code == 422
    assert message in json.dumps(response.json())


# ---- in-process app: missing ELM, tampered bundles ----------------------------------------------------------


def test_bundle_without_elm_answers_501_for_embeddings(tmp_path, tiny_encoder):
    from fastapi.testclient import TestClient

    from vecflow.serve import create_app

    bundle = build_test_bundle(tmp_path, tiny_encoder, tiny_causal_lm=None)
    with TestClient(create_app(bundle, device="cpu")) as client:
        response = client.post("/summarize", json={"embedding": [0.1] * DIM})
        assert response.status_code == 501
        assert "no ELM adapter" in response.json()["detail"]
        assert set(client.get("/info").json()["components"]) == {"lvm", "encoder", "summarizer", "bank"}


def copy_bundle(bundle: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(bundle, dst)
    return dst


def test_tampered_file_stops_the_server_naming_the_file(bundle, tmp_path, capsys):
    tampered = copy_bundle(bundle, tmp_path / "tampered")
    with open(tampered / "lvm" / "config.json", "a") as fh:
        fh.write(" ")
    assert cli_main(["serve", "--bundle", str(tampered), "--port", str(free_loopback_port())]) == 2
    err = capsys.readouterr().err
    assert f"{tampered / 'lvm' / 'config.json'}: sha256 mismatch" in err


def test_missing_file_or_manifest_is_a_clear_error(bundle, tmp_path):
    from vecflow.serve import create_app

    broken = copy_bundle(bundle, tmp_path / "broken")
    (broken / "bank.index.jsonl").unlink()
    with pytest.raises(VecflowError, match=r"bank.index.jsonl: listed in .*manifest.json but missing"):
        create_app(broken)
    (broken / "manifest.json").unlink()
    with pytest.raises(VecflowError, match=r"manifest.json: file not found \(not a vecflow bundle\)"):
        create_app(broken)


@pytest.mark.slow
def test_bench_script_reports_latency_percentiles(bundle):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_server.py"), "--bundle", str(bundle), "--requests", "3",
         "--json"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO / "scripts")},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) == {"/predict-next", "/summarize"}
    for stats in report.values():
        assert stats["n"] == 3 and 0 < stats["p50_ms"] <= stats["p95_ms"]
