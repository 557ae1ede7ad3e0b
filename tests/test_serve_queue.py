"""The server under load and on a network (issue 23): one model thread behind a bounded queue (503 with
Retry-After when full, /health and /info never behind it), micro-batched /encode and /summarize whose answers are
those of single calls bit for bit, the API key, and the refusal to serve a non-loopback address without one.

In process (FastAPI's TestClient) with the model thread held by the test, so that what is queued when is decided
by the test, never by timing.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from test_serve import CONTEXT_LENGTH, DIM, REPO, bundle, random_unit_vectors, wait_for  # noqa: F401 (fixture)
from vecflow.core.errors import VecflowError
from vecflow.ship import auth
from vecflow.ship.serve import create_app

KEY = "test-key-0123456789abcdef"


def held(app):
    """The model thread busy with a wait until the returned event is set."""
    release = threading.Event()
    app.state.model_thread._executor.submit(release.wait)
    return release


def queued_then_released(app, client, calls: list[tuple[str, dict]]) -> list:
    """POST every call while the model thread is held, the first one alone first (a request that finds no batch
    running goes at once, alone), the others once it is queued; release the thread when all are in the model
    queue; return the responses in order."""
    release = held(app)
    queue = app.state.model_queue
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(client.post, calls[0][0], json=calls[0][1])]
        wait_for(lambda: queue.queued == 1, "the first request is queued")
        futures += [pool.submit(client.post, path, json=body) for path, body in calls[1:]]
        wait_for(lambda: queue.queued == len(calls), "every request is queued")
        release.set()
        return [future.result() for future in futures]


# ---- the bounded queue ---------------------------------------------------------------------------------------


def test_a_full_queue_is_503_with_retry_after_at_once_and_health_never_waits(bundle):
    from fastapi.testclient import TestClient

    app = create_app(bundle, device="cpu", max_queue=3)
    queue = app.state.model_queue
    dialogue = {"dialogue": "#Person1#: a table for two ? #Person2#: sure ."}
    with TestClient(app) as client:
        assert client.post("/summarize", json=dialogue).status_code == 200  # models loaded
        release = held(app)
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            waiting = [pool.submit(client.post, "/summarize", json=dialogue) for _ in range(3)]
            wait_for(lambda: queue.queued == 3, "three requests wait for the held model thread")
            # the queue is full: every model endpoint answers 503 now, while the model thread is still held
            refused = [client.post("/summarize", json=dialogue), client.post("/encode", json={"texts": ["a"]}),
                       client.post("/predict-next", json={"context": random_unit_vectors(CONTEXT_LENGTH)}),
                       client.post("/chat", json={"texts": ["a", "b", "c"]})]
            for response in refused:
                assert response.status_code == 503, response.text
                assert int(response.headers["retry-after"]) >= 1
                assert "--max-queue" in response.json()["detail"]
            # /health and /info answer while the model thread is busy (they never wait for it)
            assert client.get("/health").json()["status"] == "ok"
            assert client.get("/info").json()["name"] == "tiny-bundle"
            assert not any(future.done() for future in waiting)  # still held: nothing above waited for them
            release.set()
            assert [future.result().status_code for future in waiting] == [200] * 3
        assert queue.queued == 0 and queue.refused == 4
        assert client.post("/summarize", json=dialogue).status_code == 200  # room again


def test_invalid_requests_never_take_a_place_in_the_queue(bundle):
    from fastapi.testclient import TestClient

    app = create_app(bundle, device="cpu", max_queue=1)
    with TestClient(app) as client:
        release = held(app)
        try:
            for path, body in [("/encode", {"texts": [" "]}), ("/summarize", {"dialogue": ""}),
                               ("/predict-next", {"context": [[0.1] * (DIM + 1)]})]:
                assert client.post(path, json=body).status_code == 422
            assert app.state.model_queue.queued == 0
        finally:
            release.set()


# ---- micro-batches answer what single calls answer ------------------------------------------------------------


def test_queued_encodes_share_calls_and_get_the_vectors_of_single_calls(bundle, monkeypatch):
    from fastapi.testclient import TestClient

    from vecflow.core.encoder import SentenceEncoder

    calls, real = [], SentenceEncoder.encode

    def counted(self, texts, *args, **kwargs):
        calls.append(len(texts))
        return real(self, texts, *args, **kwargs)

    monkeypatch.setattr(SentenceEncoder, "encode", counted)
    # single texts of equal token counts (they can share a call), texts of other counts, a request mixing counts
    bodies = [{"texts": [text]} for text in ["red cat", "big dog", "old map", "the cat sat", "a dog ran", "hello"]]
    bodies += [{"texts": ["one", "two words here", "three"]}, {"texts": ["red cat", "big dog"]}]
    app = create_app(bundle, device="cpu")
    with TestClient(app) as client:
        client.post("/encode", json={"texts": ["warm up"]})
        calls.clear()
        together = queued_then_released(app, client, [("/encode", body) for body in bodies])
        shared_calls = len(calls)
        alone = [client.post("/encode", json=body) for body in bodies]
    assert [r.status_code for r in together] == [200] * len(bodies)
    assert [r.json() for r in together] == [r.json() for r in alone]  # the same JSON numbers, bit for bit
    assert shared_calls < len(bodies)  # some requests did share a model call
    vectors = [tuple(v) for r in alone for v in r.json()["vectors"]]
    assert len(set(vectors)) == len({t for body in bodies for t in body["texts"]})  # not vacuous


def test_queued_identical_summaries_are_computed_once_and_distinct_ones_alone(bundle, monkeypatch):
    """Distinct dialogues are never generated together (a batched generate differs from single calls in the last
    bits of its scores); identical queued ones share one call; every answer is the single call's."""
    from fastapi.testclient import TestClient

    from vecflow.summary.infer import Summarizer

    calls, real = [], Summarizer.summarize

    def counted(self, dialogues):
        calls.append(list(dialogues))
        return real(self, dialogues)

    monkeypatch.setattr(Summarizer, "summarize", counted)
    dialogues = [f"#Person1#: a table for {n} ." for n in ("two", "four", "two", "six", "two", "four")]
    app = create_app(bundle, device="cpu")
    with TestClient(app) as client:
        client.post("/summarize", json={"dialogue": "#Person1#: warm up ."})
        calls.clear()
        together = queued_then_released(app, client, [("/summarize", {"dialogue": d}) for d in dialogues])
        shared = list(calls)
        alone = [client.post("/summarize", json={"dialogue": d}) for d in dialogues]
    assert [r.status_code for r in together] == [200] * len(dialogues)
    assert [r.json() for r in together] == [r.json() for r in alone]
    # the first request alone, then one call per distinct dialogue of the others
    assert sorted(map(tuple, shared)) == sorted([(dialogues[0],)] + [(d,) for d in set(dialogues[1:])])


def test_one_bad_item_in_a_batch_gets_its_422_and_the_others_their_answers(bundle):
    from fastapi.testclient import TestClient

    app = create_app(bundle, device="cpu")
    good = {"dialogue": "#Person1#: hello there ."}
    with TestClient(app) as client:
        client.post("/summarize", json=good)
        together = queued_then_released(app, client, [("/summarize", good), ("/summarize", {"embedding": [0.1] * DIM}),
                                                      ("/summarize", good)])
        assert [r.status_code for r in together] == [200, 422, 200]
        assert "no ELM" in together[1].json()["detail"]
        assert together[0].json() == together[2].json() == client.post("/summarize", json=good).json()


# ---- the API key -----------------------------------------------------------------------------------------------


def test_with_a_key_every_endpoint_but_health_needs_it(bundle):
    from fastapi.testclient import TestClient

    calls = [("GET", "/info", None), ("POST", "/encode", {"texts": ["a"]}),
             ("POST", "/predict-next", {"context": random_unit_vectors(CONTEXT_LENGTH)}),
             ("POST", "/chat", {"texts": ["a", "b", "c"]}), ("POST", "/summarize", {"dialogue": "#Person1#: hi ."})]
    with TestClient(create_app(bundle, device="cpu", api_key=KEY)) as client:
        assert client.get("/health").status_code == 200
        for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"},
                        {"Authorization": f"Bearer {KEY}x"}, {"Authorization": KEY}]:
            for method, path, body in calls:
                response = client.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (path, headers, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                assert KEY not in response.text
        for method, path, body in calls:
            response = client.request(method, path, json=body, headers={"Authorization": f"Bearer {KEY}"})
            assert response.status_code == 200, (path, response.text)
        schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": auth.SCHEME.model.description}
    for path in ["/info", "/encode", "/predict-next", "/chat", "/summarize"]:
        (operation,) = schema["paths"][path].values()
        assert operation["security"] == [{"apiKey": []}], path
    assert "security" not in schema["paths"]["/health"]["get"]


def test_without_a_key_the_schema_claims_no_security(bundle):
    from fastapi.testclient import TestClient

    with TestClient(create_app(bundle, device="cpu")) as client:
        schema = client.get("/openapi.json").json()
        assert client.post("/encode", json={"texts": ["a"]}).status_code == 200
    assert "securitySchemes" not in schema.get("components", {})


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True),
                                             ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                             ("::", False), ("192.168.1.20", False), ("10.0.0.1", False),
                                             ("no-such-host.invalid", False)])
def test_loopback_addresses(host, loopback):
    assert auth.is_loopback(host) is loopback


def test_a_non_loopback_bind_needs_a_key_or_no_auth():
    auth.check_bind("127.0.0.1", None, False)
    auth.check_bind("0.0.0.0", KEY, False)
    auth.check_bind("0.0.0.0", None, True)
    with pytest.raises(VecflowError, match=r"^--host 0\.0\.0\.0: not a loopback address and no API key.*--api-key "
                                           r"KEY \(or set \$VECFLOW_API_KEY\), or --no-auth to accept the risk"):
        auth.check_bind("0.0.0.0", None, False)
    with pytest.raises(VecflowError, match="contradict"):
        auth.check_bind("0.0.0.0", KEY, True)
    assert auth.resolve_api_key(None, {"VECFLOW_API_KEY": KEY}) == KEY
    assert auth.resolve_api_key(None, {"VECFLOW_API_KEY": ""}) is None
    assert auth.resolve_api_key("flag-key", {"VECFLOW_API_KEY": KEY}) == "flag-key"
    with pytest.raises(VecflowError, match="--api-key: empty"):
        auth.resolve_api_key("  ", {})


@pytest.mark.parametrize("extra", [[], ["--api-key", KEY, "--no-auth"]], ids=["no-key", "key-and-no-auth"])
def test_vecflow_serve_on_all_addresses_without_a_key_refuses_to_start_in_one_line(bundle, extra):
    env = {k: v for k, v in os.environ.items() if k != auth.API_KEY_ENV}
    result = subprocess.run([sys.executable, "-m", "vecflow.cli", "serve", "--bundle", str(bundle), "--host",
                             "0.0.0.0", "--port", "1", *extra], capture_output=True, text=True, timeout=120,
                            env={**env, "PYTHONPATH": str(REPO / "scripts")})
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vecflow serve: error: "), result.stderr
    assert "--no-auth" in lines[0] and ("--api-key" in lines[0] or "API key" in lines[0])
    assert "[serve]" not in result.stdout  # never got as far as serving


def test_retry_after_is_the_queued_requests_at_the_recent_median_time_per_request():
    from vecflow.ship.model_queue import ModelQueue

    queue = ModelQueue(threads=1, max_queue=64)
    try:
        assert queue.retry_after_s() == 1  # nothing measured yet
        queue._per_request_s.extend([9.0, 0.5, 0.5, 0.4])  # the first call loaded the model
        queue.queued = 10
        assert queue.retry_after_s() == 5
        queue.queued = 1000
        assert queue.retry_after_s() == 60  # capped
    finally:
        queue.close()


def test_a_keyed_batcher_answers_each_key_as_soon_as_its_own_call_is_done():
    """/summarize's batcher shares a call between equal inputs only, one key per call in arrival order, so a
    request's answer never waits for the calls of other queued inputs (with one batch for every queued dialogue,
    the first of 50 distinct ones was answered only after the 50th was generated)."""
    import asyncio

    from vecflow.ship.model_queue import ModelQueue

    calls, hold, b_running, b_release = [], threading.Event(), threading.Event(), threading.Event()

    def model(items: list[str]) -> list[str]:
        calls.append(list(items))
        if "b" in items:
            b_running.set()
            assert b_release.wait(120), "the test never released b's call"
        return [item.upper() for item in items]

    async def scenario() -> None:
        queue = ModelQueue(threads=1, max_queue=8)
        batcher = queue.batcher(model, key=lambda item: item)
        try:
            queue.thread._executor.submit(hold.wait)  # the model thread is busy until the items are queued
            tasks = {}
            for name, item in [("x", "x"), ("a1", "a"), ("b", "b"), ("a2", "a"), ("c", "c")]:
                tasks[name] = asyncio.ensure_future(batcher.submit(item))
                await asyncio.sleep(0)  # each request reaches the batcher in this order
            assert queue.queued == 5 and batcher.running
            hold.set()
            assert await asyncio.to_thread(b_running.wait, 120), "b's call never started"
            # both "a" requests are answered while b's call still runs: their own call is done
            await asyncio.wait_for(asyncio.gather(tasks["x"], tasks["a1"], tasks["a2"]), timeout=120)
            assert not tasks["b"].done() and not tasks["c"].done()
            b_release.set()
            answers = {name: await task for name, task in tasks.items()}
        finally:
            hold.set()
            b_release.set()
            queue.close()
        assert answers == {"x": "X", "a1": "A", "b": "B", "a2": "A", "c": "C"}
        assert calls == [["x"], ["a", "a"], ["b"], ["c"]]  # equal items share a call, the others keep their order
        assert queue.queued == 0

    asyncio.run(scenario())


def test_an_unkeyed_batcher_still_takes_every_queued_item_in_one_call():
    import asyncio

    from vecflow.ship.model_queue import ModelQueue

    calls, hold = [], threading.Event()

    async def scenario() -> dict:
        queue = ModelQueue(threads=1, max_queue=8)
        batcher = queue.batcher(lambda items: (calls.append(list(items)), items)[1], cap=3)
        try:
            queue.thread._executor.submit(hold.wait)
            tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(6)]
            await asyncio.sleep(0)
            hold.set()
            return await asyncio.gather(*tasks)
        finally:
            hold.set()
            queue.close()

    assert asyncio.run(scenario()) == list(range(6))
    assert calls == [[0], [1, 2, 3], [4, 5]]  # the first alone, then at most cap per call
