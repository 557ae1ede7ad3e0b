"""The model server: a real uvicorn process on a loopback port, called over HTTP with httpx.

The bundle is built by ``vecflow.ship.deploy`` from tiny parts: the tiny encoder, a tiny transformer LVM, a tiny
BERT2BERT summarizer, a 12-chunk bank and (when ``vecflow.summary.elm`` is importable) a random ELM adapter on the
tiny causal LM.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from test_deploy import CONTEXT_LENGTH, SPEC, make_bundle_parts, make_tiny_summarizer
from vecflow.ship import deploy
from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError
from vecflow.core.io import read_json, read_jsonl, sha256_file, write_json

pytest.importorskip("vecflow.lvm.models")
REPO = Path(__file__).resolve().parents[1]
DIM = 32  # the tiny encoder's hidden size
START_TIMEOUT_S = 180


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_tiny_elm_adapter(out_dir: Path, lm_dir: Path, embed_dim: int) -> Path:
    """A random adapter in the layout ``vecflow.summary.elm.write_adapter`` produces."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoTokenizer

    elm = pytest.importorskip("vecflow.summary.elm")
    torch.manual_seed(0)
    from vecflow.summary.settings import ElmPredictSettings

    settings = ElmPredictSettings(soft_tokens=2, hidden_dim=16, dropout=0.0, residual_scale=0.1)
    config = elm.adapter_config(settings, embed_dim, AutoConfig.from_pretrained(lm_dir).hidden_size)
    adapter = elm.build_adapter(config)
    out_dir.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, str(out_dir / "adapter.safetensors"))
    # at least 3 tokens that decode to visible text, so that an empty summary can only be a server defect
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    invisible = [i for i in range(len(tokenizer)) if not tokenizer.decode([i], skip_special_tokens=True).strip()]
    write_json(out_dir / "adapter_config.json", {
        **config, "templates": ["Summarize the dialogue: <EMB>"],
        "generation": {"num_beams": 1, "max_new_tokens": 5, "min_new_tokens": 3, "suppress_tokens": invisible},
    })
    return out_dir


def build_test_bundle(tmp: Path, tiny_encoder: Path, tiny_causal_lm: Path | None) -> Path:
    """A seq2seq bundle, or with ``tiny_causal_lm`` an ELM bundle (the decision chose elm: no seq2seq inside)."""
    summarizer = None if tiny_causal_lm is not None else make_tiny_summarizer(tiny_encoder, tmp / "summarizer")
    parts = make_bundle_parts(tmp, tiny_encoder, summarizer=summarizer)
    decision = read_json(parts.pop("decision"))
    if tiny_causal_lm is not None:
        parts["summarizer"] = None
        parts["elm"] = make_tiny_elm_adapter(tmp / "adapter", tiny_causal_lm, DIM)
        parts["lm"] = tiny_causal_lm
        decision["summarizer"] = {**decision["summarizer"], "family": "elm", "choice": "elm"}
    metrics = parts.pop("metrics")
    deploy.build_bundle(tmp / "bundle", "tiny-bundle", decision, parts, metrics, fallback_spec=SPEC)
    return tmp / "bundle"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_encoder) -> Path:
    return build_test_bundle(tmp_path_factory.mktemp("serve"), tiny_encoder, tiny_causal_lm=None)


@pytest.fixture(scope="module")
def elm_bundle(tmp_path_factory, tiny_encoder, tiny_causal_lm) -> Path:
    return build_test_bundle(tmp_path_factory.mktemp("serve-elm"), tiny_encoder, tiny_causal_lm)


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
    assert set(info["components"]) == {"lvm", "encoder", "summarizer", "bank"}
    assert info["components"]["summarizer"] == {"path": "summarizer/", "family": "seq2seq", "max_source_length": 64}
    assert info["metrics"]["scores.json"]["bertscore"]["f1"] == 0.86


def test_openapi_lists_every_endpoint(server):
    paths = httpx.get(f"{server}/openapi.json").json()["paths"]
    assert {"/health", "/info", "/encode", "/predict-next", "/chat", "/summarize"} <= set(paths)


# ---- encode / predict-next / chat ---------------------------------------------------------------------------


def test_encode_returns_the_bundled_encoders_unit_vectors(server, bundle):
    from vecflow.core.encoder import SentenceEncoder

    texts = ["the doctor asks about lunch", "python module data"]
    response = post(server, "/encode", {"texts": texts})
    assert response.status_code == 200
    body = response.json()
    assert body["dim"] == DIM and len(body["vectors"]) == 2
    expected = SentenceEncoder(bundle / "encoder", device="cpu").encode(texts)
    np.testing.assert_allclose(np.array(body["vectors"]), expected, atol=1e-5)


def test_predict_next_matches_the_lvm(server, bundle):
    from vecflow.lvm.models import load_lvm, predict

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


def test_the_elm_bundle_summarizes_embeddings_and_dialogues(elm_bundle):
    from fastapi.testclient import TestClient

    from vecflow.ship.serve import create_app

    with TestClient(create_app(elm_bundle, device="cpu")) as client:
        vector = random_unit_vectors(1)[0]
        first = client.post("/summarize", json={"embedding": vector})
        assert first.status_code == 200
        summary = first.json()["summary"]
        assert summary.strip(), "the ELM wrote nothing"
        assert client.post("/summarize", json={"embedding": [10 * x for x in vector]}).json()["summary"] == summary
        by_dialogue = client.post("/summarize", json={"dialogue": "#Person1#: hi there . #Person2#: hello ."})
        assert by_dialogue.status_code == 200 and by_dialogue.json()["summary"].strip()
        wrong = client.post("/summarize", json={"embedding": [0.5] * (DIM + 1)})
        assert wrong.status_code == 422
        assert f"embedding[0]: expected dimension {DIM}, got {DIM + 1}" in wrong.json()["detail"]
        components = client.get("/info").json()["components"]
        assert components["summarizer"]["family"] == "elm" and "lm" in components


@pytest.mark.parametrize(
    "body, message",
    [({}, "exactly one of 'dialogue' or 'embedding'"),
     ({"dialogue": "#Person1#: hi", "embedding": [0.1] * DIM}, "exactly one of 'dialogue' or 'embedding'"),
     ({"dialogue": "   "}, "is empty or only whitespace")],
    ids=["neither", "both", "blank-dialogue"],
)
def test_summarize_rejects_bad_bodies_with_422(server, body, message):
    response = post(server, "/summarize", body)
    assert response.status_code == 422
    assert message in json.dumps(response.json())


# ---- in-process app: missing ELM, tampered bundles ----------------------------------------------------------


def test_bundle_without_elm_answers_422_for_embeddings(bundle):
    from fastapi.testclient import TestClient

    from vecflow.ship.serve import create_app

    with TestClient(create_app(bundle, device="cpu")) as client:
        response = client.post("/summarize", json={"embedding": [0.1] * DIM})
        assert response.status_code == 422  # a request this bundle cannot serve: never a 5xx
        assert "summarizer is seq2seq and it has no ELM adapter" in response.json()["detail"]
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
    from vecflow.ship.serve import create_app

    broken = copy_bundle(bundle, tmp_path / "broken")
    (broken / "bank.index.jsonl").unlink()
    with pytest.raises(VecflowError, match=r"bank.index.jsonl: listed in .*manifest.json but missing"):
        create_app(broken)
    (broken / "manifest.json").unlink()
    with pytest.raises(VecflowError, match=r"manifest.json: file not found \(not a vecflow bundle\)"):
        create_app(broken)


@pytest.mark.slow
def test_load_test_latency_reports_percentiles(bundle):
    result = subprocess.run(
        [sys.executable, "-m", "vecflow.cli", "load-test", "--bundle", str(bundle), "--latency", "3", "--json"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO / "scripts")},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) == {"/predict-next", "/summarize"}
    for stats in report.values():
        assert stats["n"] == 3 and 0 < stats["p50_ms"] <= stats["p95_ms"]


# ---- hostile input: no 5xx, no echo, no dropped connections (issue 11) -------------------------------------

SURROGATE_BODIES = [
    ("/encode", '{"texts": ["\\ud800"]}'),
    ("/chat", '{"texts": ["a", "\\ud800", "c"]}'),
    ("/summarize", '{"dialogue": "#Person1#: \\udfff"}'),
]


@pytest.mark.parametrize("path, body", SURROGATE_BODIES, ids=[p for p, _ in SURROGATE_BODIES])
def test_a_lone_surrogate_is_a_422_and_the_connection_stays_usable(server, path, body):
    with httpx.Client(base_url=server, timeout=60) as client:  # one keep-alive connection
        for _ in range(10):
            response = client.post(path, content=body, headers={"content-type": "application/json"})
            assert response.status_code == 422, response.text
            assert "unicode" in response.text.lower()  # pydantic: "unable to parse raw data as a unicode string"
            assert client.get("/health").status_code == 200


def test_huge_finite_context_gives_a_finite_prediction_or_a_422(server):
    context = random_unit_vectors(CONTEXT_LENGTH, seed=3)
    plain = post(server, "/predict-next", {"context": context}).json()["vector"]
    for scale in (1e30, 1e300):
        response = post(server, "/predict-next", {"context": [[x * scale for x in v] for v in context]})
        assert response.status_code == 200
        vector = response.json()["vector"]
        assert all(v is not None and math.isfinite(v) for v in vector)
        assert np.allclose(vector, plain, atol=1e-5)  # the direction of each context vector is what counts
    zero = [[0.0] * DIM] + context[1:]
    response = post(server, "/predict-next", {"context": zero})
    assert response.status_code == 422 and "context[0]: is a zero vector" in response.json()["detail"]


def test_a_non_finite_model_output_is_a_422_never_a_200(bundle, monkeypatch):
    from fastapi.testclient import TestClient

    from vecflow.lvm import models as lvm_models
    from vecflow.ship.serve import create_app

    monkeypatch.setattr(lvm_models, "predict", lambda model, context, **kw: np.full((1, DIM), np.nan, np.float32))
    with TestClient(create_app(bundle, device="cpu")) as client:
        response = client.post("/predict-next", json={"context": random_unit_vectors(CONTEXT_LENGTH)})
    assert response.status_code == 422
    assert "not finite" in response.json()["detail"]


def test_a_bug_is_a_json_500_and_the_connection_serves_the_next_request(bundle, monkeypatch):
    from fastapi.testclient import TestClient

    from vecflow.ship import serve

    def broken(bundle, contexts):
        raise RuntimeError("a bug in the model code")

    monkeypatch.setattr(serve, "predict_next_batch", broken)
    with TestClient(serve.create_app(bundle, device="cpu")) as client:
        for _ in range(3):
            response = client.post("/predict-next", json={"context": random_unit_vectors(CONTEXT_LENGTH)})
            assert response.status_code == 500
            assert response.json() == {"detail": "internal error (logged by the server)"}
            assert client.get("/health").status_code == 200
        assert client.post("/predict-next", json={"context": [[0.1] * (DIM - 1)]}).status_code == 422


@pytest.mark.parametrize("model_threads", [1, 3])
def test_every_model_call_runs_on_one_thread_with_the_set_torch_threads(bundle, monkeypatch, model_threads):
    """Concurrent requests queue for one model thread instead of running torch in many threadpool threads at
    once on the same cores (oversubscription); its torch thread count is --model-threads."""
    import concurrent.futures
    import threading

    import torch
    from fastapi.testclient import TestClient

    from vecflow.core.encoder import SentenceEncoder
    from vecflow.lvm import models as lvm_models
    from vecflow.ship.serve import create_app

    calls, running, overlaps = [], [0], []
    lock = threading.Lock()

    def watched(fn):
        def call(*args, **kwargs):
            with lock:
                running[0] += 1
                overlaps.append(running[0])
                calls.append((threading.get_ident(), torch.get_num_threads(), fn.__name__, len(args[1])))
            try:
                time.sleep(0.01)  # widen the window in which a second call could overlap
                return fn(*args, **kwargs)
            finally:
                with lock:
                    running[0] -= 1
        return call

    from vecflow.summary.infer import Summarizer

    monkeypatch.setattr(lvm_models, "predict", watched(lvm_models.predict))
    monkeypatch.setattr(SentenceEncoder, "encode", watched(SentenceEncoder.encode))
    monkeypatch.setattr(Summarizer, "summarize", watched(Summarizer.summarize))
    context = {"context": random_unit_vectors(CONTEXT_LENGTH)}
    requests = [("/predict-next", context), ("/encode", {"texts": ["a text"]}),
                ("/chat", {"texts": ["a", "b", "c"]}), ("/summarize", {"dialogue": "#Person1#: hi there ."})] * 4
    with TestClient(create_app(bundle, device="cpu", model_threads=model_threads)) as client:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda r: client.post(r[0], json=r[1]).status_code, requests))
    assert statuses == [200] * len(requests)
    # texts encoded: 4 x 1 (/encode) + 4 x 3 (/chat); contexts predicted: 4 (/chat) + 4 (/predict-next); queued
    # requests of one kind may share a call, so calls are counted by what they carry
    assert sum(n for *_, name, n in calls if name == "encode") == 16
    assert sum(n for *_, name, n in calls if name == "predict") == 8
    assert 1 <= sum(1 for *_, name, _ in calls if name == "summarize") <= 4  # identical dialogues: computed once
    assert len({ident for ident, *_ in calls}) == 1 and calls[0][0] != threading.get_ident()
    assert {threads for _, threads, *_ in calls} == {model_threads}
    assert max(overlaps) == 1


def wait_for(condition, what: str, timeout_s: float = 120.0) -> None:
    """Poll ``condition`` (a guard against a hang, not a timing check: it fails only if it never holds)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.005)


def queued_together(app, client, bodies: list[dict]) -> list:
    """POST /predict-next for every body while the model thread is held, so that all of them are queued when it
    is free: a first request goes alone (nothing was queued when it came), then ``bodies`` wait together."""
    import concurrent.futures
    import threading

    release = threading.Event()
    batcher = app.state.predict_batcher
    app.state.model_thread._executor.submit(release.wait)  # the model thread is busy until released
    with concurrent.futures.ThreadPoolExecutor(len(bodies) + 1) as pool:
        first = pool.submit(client.post, "/predict-next", json=bodies[0])
        wait_for(lambda: batcher.running, "the first request's model call was queued")
        rest = [pool.submit(client.post, "/predict-next", json=body) for body in bodies]
        wait_for(lambda: len(batcher.pending) == len(bodies), "every request waits for the model thread")
        release.set()
        return [first.result()] + [future.result() for future in rest]


def test_queued_predictions_are_one_model_call_with_the_answers_of_single_calls(bundle, monkeypatch):
    from fastapi.testclient import TestClient

    from vecflow.lvm import models as lvm_models
    from vecflow.ship.serve import create_app

    sizes, real = [], lvm_models.predict

    def counted(model, contexts, **kwargs):
        sizes.append(len(contexts))
        return real(model, contexts, **kwargs)

    monkeypatch.setattr(lvm_models, "predict", counted)
    bodies = [{"context": random_unit_vectors(CONTEXT_LENGTH, seed=seed)} for seed in range(7)]
    app = create_app(bundle, device="cpu")
    with TestClient(app) as client:
        together = queued_together(app, client, bodies)
        assert sizes == [1, 7]  # the first alone, then the 7 queued ones in one model call
        alone = [client.post("/predict-next", json=body) for body in [bodies[0]] + bodies]
    assert sizes[2:] == [1] * 8
    assert [r.status_code for r in together] == [200] * 8
    # bit-identical: the same JSON numbers as each request alone (float32 values, printed exactly)
    assert [r.json() for r in together] == [r.json() for r in alone]
    assert len({json.dumps(r.json()) for r in together[1:]}) == 7  # 7 different contexts, 7 different answers


def test_a_bad_context_in_a_batch_gets_its_422_and_the_others_their_200(bundle, monkeypatch):
    from fastapi.testclient import TestClient

    from vecflow.lvm import models as lvm_models
    from vecflow.ship.serve import create_app

    sizes, real = [], lvm_models.predict
    marker = [[1.0] + [0.0] * (DIM - 1)] * CONTEXT_LENGTH  # the model's answer for it is made NaN below

    def nan_for_the_marker(model, contexts, **kwargs):
        sizes.append(len(contexts))
        out = real(model, contexts, **kwargs)
        out[np.all(contexts == np.array(marker, dtype=np.float32), axis=(1, 2))] = np.nan
        return out

    monkeypatch.setattr(lvm_models, "predict", nan_for_the_marker)
    good = [{"context": random_unit_vectors(CONTEXT_LENGTH, seed=seed)} for seed in range(4)]
    zero = {"context": [[0.0] * DIM] + random_unit_vectors(CONTEXT_LENGTH - 1)}
    bodies = [good[0], good[1], {"context": marker}, good[2], zero, good[3]]
    app = create_app(bundle, device="cpu")
    with TestClient(app) as client:
        together = queued_together(app, client, bodies)
        alone = [client.post("/predict-next", json=body) for body in [bodies[0]] + bodies]
    assert sizes[:2] == [1, 5]  # the zero context never reaches the model; the marker does, with the others
    statuses = [r.status_code for r in together]
    assert statuses == [r.status_code for r in alone] == [200, 200, 200, 422, 200, 422, 200]
    assert "not finite" in together[3].json()["detail"]
    assert "context[0]: is a zero vector" in together[5].json()["detail"]
    assert [r.json() for r in together] == [r.json() for r in alone]


def test_model_threads_default_leaves_a_core_to_the_event_loop(monkeypatch):
    from vecflow.ship import serve

    for cores, threads in [(1, 1), (2, 1), (8, 7)]:
        monkeypatch.setattr(serve.os, "sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        assert serve.default_model_threads() == threads


def test_a_body_over_the_limit_is_413_without_parsing_it(server):
    huge = b'{"texts": ["' + b"x" * (60 * 1024 * 1024) + b'"]}'
    try:
        response = httpx.post(f"{server}/encode", content=huge, headers={"content-type": "application/json"},
                              timeout=60)
        assert response.status_code == 413
        assert len(response.content) < 200
    except httpx.WriteError:
        pass  # the server answered 413 and closed before the client finished writing 60 MB
    assert httpx.get(f"{server}/health").status_code == 200


@pytest.mark.parametrize(
    "path, body, message",
    [("/encode", {"texts": ["word " * 5000]}, "at most 20000 characters"),
     ("/encode", {"texts": ["fine", "   "]}, "is empty or only whitespace"),
     ("/encode", {"texts": [""]}, "is empty or only whitespace"),
     ("/chat", {"texts": ["a", "\t\n", "c"]}, "is empty or only whitespace"),
     ("/summarize", {"dialogue": "#Person1#: " + "hello " * 10000}, "at most 50000 characters"),
     ("/predict-next", {"context": [["secret-looking-input"] * DIM] * CONTEXT_LENGTH}, "valid number")],
    ids=["long-text", "blank-text", "empty-text", "blank-chat", "long-dialogue", "strings-as-numbers"],
)
def test_errors_name_the_problem_and_never_echo_the_input(server, path, body, message):
    response = post(server, path, body)
    assert response.status_code == 422
    text = response.text
    assert message in text
    assert len(text) < 2000, "the error must not carry the input back"
    for probe in ("word word", "hello hello", "secret-looking-input"):
        assert probe not in text


def test_the_server_truncates_as_training_did(bundle):
    """max_source_length comes from the bundle (64 here, from the training settings), not a fixed 512."""
    from vecflow.ship.serve import Bundle

    served = Bundle(bundle, device="cpu")
    assert served.summarizer_spec["max_source_length"] == 64
    summarizer = served.summarizer
    if hasattr(summarizer, "max_source_length"):  # vecflow.summary.infer
        assert summarizer.max_source_length == 64
    long_dialogue = "#Person1#: " + " ".join(["book"] * 200)
    from vecflow.ship.serve import summarize_dialogue

    tail_changed = long_dialogue + " and something else entirely at the very end ."
    assert summarize_dialogue(served, long_dialogue) == summarize_dialogue(served, tail_changed)


def test_a_broken_import_fails_start_up(elm_bundle, bundle, monkeypatch):
    import sys as _sys

    from vecflow.ship.serve import create_app

    monkeypatch.setitem(_sys.modules, "vecflow.summary.elm", None)  # importing it now raises ImportError
    with pytest.raises(ImportError):
        create_app(elm_bundle, device="cpu")
    create_app(bundle, device="cpu")  # a seq2seq bundle does not need vecflow.summary.elm


def test_a_causal_bundle_serves_dialogues_with_its_trained_settings(tmp_path, tiny_encoder, tiny_causal_lm):
    """deploy.summarizer chose causal: the bundle's summarizer/ is the causal LM with its spec, served through
    vecflow.summary.infer (chat template, the trained source length)."""
    import shutil

    from fastapi.testclient import TestClient

    from vecflow.ship.serve import create_app

    pytest.importorskip("vecflow.summary.infer")
    causal = tmp_path / "causal"
    shutil.copytree(tiny_causal_lm, causal)
    write_json(causal / "vecflow_summarizer.json", {"kind": "causal", "max_source_length": 24,
                                                    "max_target_length": 6, "system_message": None})
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(causal)
    invisible = [i for i in range(len(tokenizer)) if not tokenizer.decode([i], skip_special_tokens=True).strip()]
    GenerationConfig(max_new_tokens=4, min_new_tokens=2, suppress_tokens=invisible, do_sample=False,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id).save_pretrained(causal)
    parts = make_bundle_parts(tmp_path, tiny_encoder, summarizer=causal)
    decision = read_json(parts.pop("decision"))
    decision["summarizer"] = {**decision["summarizer"], "family": "causal", "choice": "best"}
    deploy.build_bundle(tmp_path / "bundle", "causal-bundle", decision, parts, parts.pop("metrics"))
    with TestClient(create_app(tmp_path / "bundle", device="cpu")) as client:
        response = client.post("/summarize", json={"dialogue": "#Person1#: hello there . #Person2#: hi ."})
        assert response.status_code == 200 and response.json()["summary"].strip()  # visible tokens only
        served = client.app.state.bundle
        assert served.summarizer_family == "causal"
        assert served.summarizer.kind == "causal" and served.summarizer.max_source_length == 24
        assert client.post("/summarize", json={"embedding": [0.1] * DIM}).status_code == 422


# ---- the load client's /health probe and burst (vecflow.ship.loadgen) ------------------------------------------


def test_the_health_probe_is_a_process_of_its_own_and_keeps_its_last_results(server):
    from vecflow.ship import loadgen

    with loadgen.HealthProbe(server, every_s=0.01) as probe:
        assert probe._proc.pid != os.getpid()
        first = probe.take()
        wait_for(lambda: len(probe._kept) >= 3, "three more probes")
    assert probe._proc.returncode == 0  # stopped by closing its stdin
    results = first + probe.take()
    assert len(results) >= 4 and probe.take() == []
    assert all(r.path == "/health" and r.status == 200 and 0 < r.seconds < 60 for r in results)
    assert [r.at for r in results] == sorted(r.at for r in results)


def test_the_health_probe_reports_a_refused_connection_as_dropped():
    from vecflow.ship import loadgen

    with loadgen.HealthProbe(f"http://127.0.0.1:{free_loopback_port()}", every_s=0.01) as probe:
        wait_for(lambda: len(probe._kept) >= 2, "two probes")
    results = probe.take()
    assert results and all(r.status is None and r.error == "ConnectionRefusedError" for r in results)
    assert loadgen.summarize(results)["dropped"] == len(results)


def test_a_burst_of_distinct_summaries_is_answered_and_health_probed_meanwhile(server):
    from vecflow.ship import loadgen

    calls = loadgen.burst_calls("/summarize", 16, DIM, CONTEXT_LENGTH)
    assert len({c.body for c in calls}) == 16 and loadgen.burst_calls("/summarize", 3, DIM, CONTEXT_LENGTH,
                                                                      distinct=False)[0].body == calls[0].body
    report = loadgen.burst(server, calls, probe_every_s=0.01)
    assert report["status"] == {"200": 16} and report["requests"] == report["distinct_bodies"] == 16, report
    assert report["server_errors"] == report["overloaded"] == report["dropped"] == 0
    assert report["health_failures"] == 0
