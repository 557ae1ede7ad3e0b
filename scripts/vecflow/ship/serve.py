"""The model server: a FastAPI app over a deployment bundle (see ``vecflow.ship.deploy``).

    vecflow serve --bundle results/deploy/vecflow-demo --host 127.0.0.1 --port 8000

At start-up every file listed in the bundle's ``manifest.json`` is hashed and compared; a mismatch stops the
server with an error naming the file. The modules each bundled model needs are imported then too, so a broken
install fails start-up loudly (a request for a component the bundle does not have is a 422). Models load on first use
(one lock per bundle), so start-up is quick.

Endpoints: ``GET /health``, ``GET /info``, ``POST /encode``, ``POST /predict-next``, ``POST /chat``,
``POST /summarize``; the OpenAPI schema is at ``/openapi.json``. No input gives a 5xx: bodies over
``--max-body-bytes`` get 413; wrong shapes, empty or whitespace texts, texts over ``MAX_TEXT_CHARS``, lone
surrogates, NaN/infinity and contexts for which the model's output is not finite get 422 with a message that
never echoes the input back.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import importlib
import importlib.util
import json
import logging
import os
import threading
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import AfterValidator, BaseModel, Field, StringConstraints, TypeAdapter, model_validator

from vecflow.core.errors import VecflowError
from vecflow.core.io import read_json, sha256_file

MAX_ITEMS = 1024  # texts or vectors per request
MAX_TEXT_CHARS = 20_000  # characters per text given to /encode or /chat
MAX_DIALOGUE_CHARS = 50_000  # characters of a dialogue given to /summarize
MAX_DIM = 8192  # numbers per vector
MAX_BODY_BYTES = 4 * 1024 * 1024  # request bodies above this get 413 (vecflow serve --max-body-bytes)
MAX_ERRORS_SHOWN = 10  # validation errors listed in one 422
MAX_BATCH = 64  # /predict-next contexts the model thread answers with one model call
LOG = logging.getLogger("vecflow.ship.serve")


# ----------------------------------------------------------------------------------------------------------
# the bundle on disk


def verify_bundle(root: Path) -> dict:
    """Check every file against ``manifest.json``; return the manifest or raise naming the first bad file."""
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        raise VecflowError(f"{manifest_path}: file not found (not a vecflow bundle)")
    manifest = read_json(manifest_path)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise VecflowError(f"{manifest_path}: field 'files': missing or empty")
    for rel, expected in sorted(files.items()):
        path = root / rel
        if not path.is_file():
            raise VecflowError(f"{path}: listed in {manifest_path} but missing")
        actual = sha256_file(path)
        if actual != expected:
            raise VecflowError(f"{path}: sha256 mismatch (manifest {expected[:12]}..., file {actual[:12]}...)")
    return manifest


class Bundle:
    """A verified bundle; each model is loaded once, on first use, under a lock."""

    def __init__(self, root: str | Path, device: str = "auto"):
        self.root = Path(root)
        self.manifest = verify_bundle(self.root)
        self.manifest_sha256 = sha256_file(self.root / "manifest.json")
        self.device_request = device
        self._lock = threading.Lock()
        self._loaded: dict = {}
        components = self.manifest.get("components", {})
        self.lvm_config = read_json(self.root / "lvm" / "config.json")
        self.context_length = int(self.lvm_config.get("context_length") or 0)
        self.dim = int(self.lvm_config.get("dim") or components.get("bank", {}).get("dim") or 0)
        if self.context_length < 1 or self.dim < 1:
            raise VecflowError(f"{self.root / 'lvm' / 'config.json'}: fields 'context_length' and 'dim' are needed")

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.root.name)

    def _once(self, key: str, load):
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = load()
            return self._loaded[key]

    @property
    def device(self):
        from vecflow.core.devices import pick_device

        return self._once("device", lambda: pick_device(self.device_request))

    @property
    def encoder(self):
        from vecflow.core.encoder import SentenceEncoder

        device = str(self.device)
        return self._once("encoder", lambda: SentenceEncoder(self.root / "encoder", device=device))

    @property
    def lvm(self):
        from vecflow.lvm.models import load_lvm

        device = self.device
        return self._once("lvm", lambda: load_lvm(self.root / "lvm", device))

    @property
    def bank(self) -> tuple[np.ndarray, list[dict]]:
        def load():
            from vecflow.lvm.bank import load_embeddings  # the bank's one reader (checks norms, rows, fields)

            vectors, rows = load_embeddings(self.root / "bank.safetensors", self.root / "bank.index.jsonl")
            return vectors, rows  # float32, memory-mapped

        return self._once("bank", load)

    @property
    def summarizer_family(self) -> str:
        """seq2seq | causal | elm: the one summarizer this bundle serves (bundles from before: seq2seq)."""
        family = self.manifest.get("components", {}).get("summarizer", {}).get("family")
        return family or ("seq2seq" if (self.root / "summarizer").is_dir() else "elm")

    @property
    def summarizer_spec(self) -> dict:
        """``summarizer/vecflow_summarizer.json``: the source length etc. that training used (no serve skew)."""
        path = self.root / "summarizer" / "vecflow_summarizer.json"
        if path.exists():
            return read_json(path)
        # a bundle built before the spec was bundled: the manifest's length, else the old fixed 512
        length = self.manifest.get("components", {}).get("summarizer", {}).get("max_source_length", 512)
        return {"kind": "seq2seq", "max_source_length": int(length)}

    def required_modules(self) -> list[str]:
        """The modules the bundled models need; imported at start-up so that a broken install fails there."""
        modules = ["torch", "transformers", "vecflow.core.devices", "vecflow.core.encoder", "vecflow.lvm.models"]
        if self.summarizer_family == "elm" or (self.root / "elm").is_dir():
            modules.append("vecflow.summary.elm")
        if self.summarizer_family != "elm" and _has_module("vecflow.summary.infer"):
            modules.append("vecflow.summary.infer")
        return modules

    @property
    def summarizer(self):
        """The seq2seq or causal summarizer with the settings it was trained with.

        Through ``vecflow.summary.infer`` (the same code that predicted the scored summaries); before that
        module existed, a seq2seq ``(model, tokenizer)`` pair truncated at the bundled ``max_source_length``.
        """
        folder, device = self.root / "summarizer", self.device
        if _has_module("vecflow.summary.infer"):
            from vecflow.summary.infer import load_summarizer

            return self._once("summarizer", lambda: load_summarizer(folder, device=device, batch_size=1))
        from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, EncoderDecoderModel

        def load():
            config = AutoConfig.from_pretrained(folder)
            loader = EncoderDecoderModel if config.model_type == "encoder-decoder" else AutoModelForSeq2SeqLM
            return loader.from_pretrained(folder).to(device).eval(), AutoTokenizer.from_pretrained(folder)

        return self._once("summarizer", load)

    @property
    def elm(self) -> dict:
        """The ELM adapter, its config and the frozen LM (via ``vecflow.summary.elm``); a 422 when not bundled (the
        request asks for something this bundle does not do: a client error, never a 5xx)."""
        if not (self.root / "elm").is_dir():
            raise HTTPException(422, f"this bundle's summarizer is {self.summarizer_family} and it has no ELM "
                                     f"adapter: /summarize accepts only 'dialogue'")
        from vecflow.summary import elm

        device = self.device

        def load():
            adapter, config = elm.load_adapter(self.root / "elm", device)
            lm, tokenizer = elm.load_frozen_lm(self.root / "lm", device)
            return {"adapter": adapter, "config": config, "lm": lm, "tokenizer": tokenizer}

        return self._once("elm", load)


def _has_module(name: str) -> bool:
    """Whether a module exists (not whether it imports: a module that exists but fails to import must fail)."""
    return importlib.util.find_spec(name) is not None


# ----------------------------------------------------------------------------------------------------------
# request and response bodies


def _valid_text(value: str) -> str:
    """Texts must be real Unicode (no lone surrogates, which no tokenizer can encode) and not blank."""
    if not value.strip():
        raise ValueError("is empty or only whitespace")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"has a lone surrogate at character {exc.start} (not valid Unicode); send UTF-8 text")
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS), AfterValidator(_valid_text)]
Dialogue = Annotated[str, StringConstraints(max_length=MAX_DIALOGUE_CHARS), AfterValidator(_valid_text)]
Vector = Annotated[list[float], Field(min_length=1, max_length=MAX_DIM)]


class EncodeRequest(BaseModel):
    texts: list[Text] = Field(min_length=1, max_length=MAX_ITEMS,
                              description=f"texts to embed (each non-blank, at most {MAX_TEXT_CHARS} characters)")


class EncodeResponse(BaseModel):
    vectors: list[list[float]]
    dim: int


class PredictRequest(BaseModel):
    context: list[Vector] = Field(min_length=1, max_length=MAX_ITEMS,
                                  description="exactly C context vectors of dimension D, oldest first")


class PredictResponse(BaseModel):
    vector: list[float]
    norm: float


class ChatRequest(BaseModel):
    texts: list[Text] = Field(min_length=1, max_length=MAX_ITEMS, description="exactly C texts, oldest first")
    top_k: int = Field(5, ge=1, le=50)


class Neighbour(BaseModel):
    text: str
    similarity: float
    article_id: int
    chunk_index: int


class ChatResponse(BaseModel):
    next_text: str
    similarity: float
    top: list[Neighbour]


class SummarizeRequest(BaseModel):
    dialogue: Dialogue | None = Field(None, description="a dialogue with #PersonN# speaker tags")
    embedding: Vector | None = Field(None, description="a sentence embedding to verbalise (ELM)")

    @model_validator(mode="after")
    def exactly_one_input(self):
        if (self.dialogue is None) == (self.embedding is None):
            raise ValueError("give exactly one of 'dialogue' or 'embedding'")
        return self


class SummarizeResponse(BaseModel):
    summary: str


# ----------------------------------------------------------------------------------------------------------
# the work behind each endpoint


def unprocessable(message: str) -> HTTPException:
    return HTTPException(status_code=422, detail=message)


def check_vectors(vectors: list[list[float]], count: int, dim: int, field: str) -> np.ndarray:
    """``vectors`` as float64 rows, or a 422 naming what is wrong (count, dimension, non-finite values)."""
    if count and len(vectors) != count:
        raise unprocessable(f"{field}: expected exactly {count} vectors, got {len(vectors)}")
    # the first row with a wrong dimension or a non-finite value, whichever comes first, is the one named
    wrong_dim = next((i for i, vector in enumerate(vectors) if len(vector) != dim), len(vectors))
    rows = np.asarray(vectors[:wrong_dim], dtype=np.float64).reshape(wrong_dim, dim)
    non_finite = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if non_finite.size:
        raise unprocessable(f"{field}[{int(non_finite[0])}]: contains NaN or infinity")
    if wrong_dim < len(vectors):
        raise unprocessable(f"{field}[{wrong_dim}]: expected dimension {dim}, got {len(vectors[wrong_dim])}")
    return rows


def unit_rows(vectors: np.ndarray, field: str) -> np.ndarray:
    """Each row scaled to L2 norm 1 without overflow (huge finite values are fine); a zero row is a 422."""
    scale = np.max(np.abs(vectors), axis=1, keepdims=True)
    zero = np.flatnonzero(scale[:, 0] == 0)
    if zero.size:
        raise unprocessable(f"{field}[{int(zero[0])}]: is a zero vector (it has no direction)")
    scaled = vectors / scale
    return (scaled / np.linalg.norm(scaled, axis=1, keepdims=True)).astype(np.float32)


def predict_next_batch(bundle: Bundle, contexts: list[np.ndarray]) -> list[np.ndarray | HTTPException]:
    """The LVM's next vector for each context (C, D) of any non-zero scale, or that context's own 422 (a zero
    vector, a non-finite output): one model call per context shape, each context's answer its own.

    The rows of a batched call are bit-identical to one-context calls (checked for 1 to 64 contexts and 1, 2, 4
    torch threads; tests/test_serve.py checks it over HTTP)."""
    from vecflow.lvm.models import predict

    answers: list = [None] * len(contexts)
    groups: dict[tuple, list[tuple[int, np.ndarray]]] = {}
    for i, context in enumerate(contexts):
        try:
            unit = unit_rows(np.asarray(context, dtype=np.float64), "context")
        except HTTPException as exc:
            answers[i] = exc
            continue
        groups.setdefault(unit.shape, []).append((i, unit))
    for members in groups.values():
        vectors = predict(bundle.lvm, np.stack([unit for _, unit in members]), batch_size=len(members),
                          device=bundle.device)
        for (i, _), vector in zip(members, vectors):
            finite = np.all(np.isfinite(vector))
            answers[i] = vector if finite else unprocessable(
                "context: the model's prediction for this context is not finite")
    return answers


def predict_next(bundle: Bundle, context: np.ndarray) -> np.ndarray:
    """The LVM's next vector for one context (C, D) of any non-zero scale; a non-finite output is a 422."""
    answer = predict_next_batch(bundle, [context])[0]
    if isinstance(answer, Exception):
        raise answer
    return answer


def bank_faiss_min_rows(bundle: Bundle) -> int:
    """From ``deploy.serve.faiss_min_rows`` rows on, the bank is searched with faiss (``vecflow.core.search``)."""
    from vecflow.core.search import FAISS_MIN_ROWS

    return bundle.manifest.get("serve", {}).get("faiss_min_rows", FAISS_MIN_ROWS)


def bank_search(bundle: Bundle):
    """The bank's exact top-k search (numpy or faiss by size: the same answers), built once per bundle."""
    from vecflow.core.search import BankSearch

    vectors, _ = bundle.bank
    source = str(bundle.root / "bank.safetensors")
    return bundle._once("search", lambda: BankSearch(vectors, bank_faiss_min_rows(bundle), source=source))


def nearest_chunks(bundle: Bundle, vector: np.ndarray, top_k: int) -> list[dict]:
    """The ``top_k`` bank chunks with the highest cosine similarity to ``vector`` (equal ones: lower bank row)."""
    _, rows = bundle.bank
    order, similarities = bank_search(bundle).search(vector / max(float(np.linalg.norm(vector)), 1e-12), top_k)
    return [
        {
            "text": rows[i]["text"],
            "similarity": float(similarity),
            "article_id": int(rows[i]["article_id"]),
            "chunk_index": int(rows[i]["chunk_index"]),
        }
        for i, similarity in zip(order, similarities)
    ]


def summarize_dialogue(bundle: Bundle, dialogue: str) -> str:
    """One summary from the bundled summarizer, truncating the source as training did."""
    if bundle.summarizer_family == "elm":  # the ELM summarizes the dialogue's sentence embedding
        return summarize_embedding(bundle, bundle.encoder.encode([dialogue])[0].tolist())
    summarizer = bundle.summarizer
    if hasattr(summarizer, "summarize"):
        return summarizer.summarize([dialogue])[0]
    import torch

    model, tokenizer = summarizer
    max_length = int(bundle.summarizer_spec["max_source_length"])
    inputs = tokenizer(dialogue, truncation=True, max_length=max_length, return_tensors="pt").to(bundle.device)
    with torch.inference_mode():
        output = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    return tokenizer.decode(output[0], skip_special_tokens=True).strip()


def summary_template(templates: list[str]) -> str:
    """The adapter's prompt for summaries: a training template that mentions a summary, else the first one."""
    if not templates:
        return "Summarize: <EMB>"
    return next((t for t in templates if "summar" in t.lower()), templates[0])


def summarize_embedding(bundle: Bundle, embedding: list[float]) -> str:
    """Text from one sentence embedding through the ELM adapter and its frozen LM."""
    import torch
    from vecflow.summary import elm

    parts = bundle.elm
    config = parts["config"]
    vector = unit_rows(check_vectors([embedding], 1, int(config["embed_dim"]), "embedding"), "embedding")
    source = elm.Source("request", summary_template(config.get("templates", [])), 0, [])
    generation = config.get("generation") or {"num_beams": 1, "max_new_tokens": 48}
    texts = elm.generate_texts(parts["lm"], parts["tokenizer"], parts["adapter"], [source],
                               torch.from_numpy(vector), generation, batch_size=1)
    return texts[0]


# ----------------------------------------------------------------------------------------------------------
# the app


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before anything parses it."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await self.reply(send, 400, "invalid Content-Length header")
            if int(length) > self.max_bytes:
                return await self.reply(send, 413, f"request body over {self.max_bytes} bytes")
        chunks, total = [], 0
        while True:  # read the whole (bounded) body, also when it comes chunked
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            total += len(chunks[-1])
            if total > self.max_bytes:
                return await self.reply(send, 413, f"request body over {self.max_bytes} bytes")
            if not message.get("more_body", False):
                break
        body, delivered = b"".join(chunks), False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    @staticmethod
    async def reply(send, status: int, detail: str) -> None:
        payload = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if status == 413:
            headers.append((b"connection", b"close"))  # the unread rest of the body is not waited for
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


ANY_JSON = TypeAdapter(Any)


def loads_json(body: bytes):
    """``json.loads(body)``, parsed by pydantic's JSON parser where it can (6x faster on a 5x384 context).

    That parser agrees with ``json.loads`` on every document it accepts (the same values, NaN, Infinity and big
    integers included) and refuses some that ``json.loads`` takes (lone surrogate escapes, a BOM, UTF-16 bodies);
    on any refusal ``json.loads`` parses the body, so every body gives what it gave before, errors included.
    """
    try:
        return ANY_JSON.validate_json(body)
    except ValueError:  # pydantic's ValidationError
        return json.loads(body)


class JSONRequest(Request):
    async def json(self):
        if not hasattr(self, "_json"):
            self._json = loads_json(await self.body())
        return self._json


class JSONRoute(APIRoute):
    """FastAPI's route with ``loads_json`` for request bodies (FastAPI's validation and errors unchanged)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route_handler(request: Request):
            return await handler(JSONRequest(request.scope, request.receive))

        return route_handler


class CatchAll:
    """ASGI middleware: a bug answers a JSON 500 and is logged; the connection stays usable for the next request.

    (A plain ASGI wrapper: Starlette's ``@app.middleware("http")`` spends a task group and memory streams on
    every request, a fifth of the event loop's time under load.)"""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:  # noqa: BLE001 - the last line of defence, logged with its traceback
            LOG.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if started:  # too late for a 500: the server closes the connection
                raise
            await JSONResponse(status_code=500, content={"detail": "internal error (logged by the server)"})(
                scope, receive, send)


def default_model_threads() -> int:
    """Torch threads for the model thread: one core is left to the event loop (HTTP, JSON, validation)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return max(1, cores - 1)


class InferenceThread:
    """One thread that runs every model call of /encode, /predict-next and /chat, one call at a time, with
    ``threads`` torch intra-op threads (torch's setting is per calling thread).

    Concurrent requests queue here instead of running torch in up to 40 threadpool threads at once, each with its
    own intra-op threads, on the same cores as the event loop: measured on 2 cores under load, the server spent
    3.3 ms of CPU per /predict-next that way and 2.2 ms this way, and a model thread with 2 torch threads
    next to a busy event loop spent 60 ms (its threads wait for each other at every operator)."""

    def __init__(self, threads: int):
        self.threads = threads
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="vecflow-model",
                                                               initializer=self._setup)

    def _setup(self) -> None:
        import torch

        torch.set_num_threads(self.threads)

    def submit(self, fn, *args) -> asyncio.Future:
        """``fn(*args)`` queued for the model thread now; an asyncio future of its result (call on the loop)."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run(self, fn, *args):
        return await self.submit(fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False)


class MicroBatcher:
    """Requests of one kind answered together: ``fn(items)`` runs on the model thread and returns one answer per
    item (a value, or an exception for that item alone).

    At most one batch is on the model thread at a time; the requests that arrive meanwhile wait here and go
    together, up to ``cap`` of them, as soon as it is done. Nothing waits for a batch to fill: a request that
    finds no batch running goes at once, alone. With 8 closed-loop clients this turns 8 model calls (each a
    Python dispatch of some 30 torch operators) into one. An error of the call itself (a model that fails to
    load, a bug) is every request's answer, as it would have been for each alone. Runs on the event loop only."""

    def __init__(self, model_thread: InferenceThread, fn, cap: int = MAX_BATCH):
        self.model_thread, self.fn, self.cap = model_thread, fn, cap
        self.pending: list[tuple[Any, asyncio.Future]] = []
        self.running = False
        self.batches = 0  # model calls so far (the tests read it)

    async def submit(self, item):
        future = asyncio.get_running_loop().create_future()
        self.pending.append((item, future))
        if not self.running:
            self._start()
        answer = await future
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _start(self) -> None:
        batch, self.pending = self.pending[:self.cap], self.pending[self.cap:]
        batch = [(item, future) for item, future in batch if not future.done()]  # a cancelled request: skipped
        if not batch:
            if self.pending:
                self._start()
            return
        self.running = True
        self.batches += 1
        try:
            call = self.model_thread.submit(self.fn, [item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - e.g. the model thread shut down: each request's error
            call = asyncio.get_running_loop().create_future()
            call.set_exception(exc)
        call.add_done_callback(lambda done: self._finish(batch, done))

    def _finish(self, batch, call: asyncio.Future) -> None:
        self.running = False
        try:
            if call.cancelled():
                answers = [None] * len(batch)
            elif call.exception() is not None:
                answers = [call.exception()] * len(batch)
            else:
                answers = call.result()
                if len(answers) != len(batch):
                    answers = [RuntimeError(f"{len(answers)} answers for {len(batch)} requests")] * len(batch)
            for (_, future), answer in zip(batch, answers):
                if future.done():
                    continue
                if call.cancelled():
                    future.cancel()
                else:
                    future.set_result(answer)  # an exception as answer: submit raises it for that request
        finally:
            if self.pending:
                self._start()


def validation_details(exc: RequestValidationError) -> list[dict]:
    """Where and what, never the input (it can be huge, or not even encodable as JSON)."""
    details = []
    for error in exc.errors()[:MAX_ERRORS_SHOWN]:
        loc = [part if isinstance(part, (int, str)) else str(part) for part in error.get("loc", ())]
        details.append({"loc": loc, "msg": str(error.get("msg", "invalid")), "type": str(error.get("type", ""))})
    return details


def create_app(bundle_dir: str | Path, device: str = "auto", max_body_bytes: int = MAX_BODY_BYTES,
               model_threads: int = 0) -> FastAPI:
    """The FastAPI app over one bundle (verified now, with the modules its models need; models load on use).

    ``model_threads``: torch threads of the one thread that runs the models (0: ``default_model_threads()``)."""
    bundle = Bundle(bundle_dir, device=device)
    for module in bundle.required_modules():
        importlib.import_module(module)  # an ImportError here is a broken install: fail start-up, loudly
    from vecflow.core.search import backend_for

    backend_for(int(bundle.manifest.get("components", {}).get("bank", {}).get("rows", 0)), bank_faiss_min_rows(bundle))
    app = FastAPI(title=f"vecflow: {bundle.name}", version=bundle.manifest_sha256[:12],
                  description="Next-vector prediction, retrieval chat and dialogue summaries from a vecflow bundle.")
    app.state.bundle = bundle
    app.router.route_class = JSONRoute
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(CatchAll)  # outermost: also catches what BodyLimit raises
    model_thread = app.state.model_thread = InferenceThread(model_threads or default_model_threads())
    predictions = app.state.predict_batcher = MicroBatcher(
        model_thread, lambda contexts: predict_next_batch(bundle, contexts))

    @app.exception_handler(VecflowError)
    def bundle_error(request: Request, exc: VecflowError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": f"bundle component failed to load: {exc}"})

    @app.exception_handler(RequestValidationError)
    def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": validation_details(exc)})

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "bundle": bundle.name}

    @app.get("/info")
    def info() -> dict:
        metrics_dir = bundle.root / "metrics"
        return {
            "name": bundle.name,
            "components": bundle.manifest.get("components", {}),
            "dims": {"dim": bundle.dim, "context_length": bundle.context_length},
            "metrics": {p.name: read_json(p) for p in sorted(metrics_dir.glob("*.json"))},
            "manifest_sha256": bundle.manifest_sha256,
        }

    def encode_texts(texts: list[str]) -> np.ndarray:
        return bundle.encoder.encode(texts)

    def chat_top(texts: list[str], top_k: int) -> list[dict]:
        return nearest_chunks(bundle, predict_next(bundle, bundle.encoder.encode(texts)), top_k)

    # async endpoints: FastAPI checks and serializes their answers on the event loop (a sync endpoint costs a
    # second threadpool hop for that); the model calls run on the one model thread
    @app.post("/encode", response_model=EncodeResponse)
    async def encode(request: EncodeRequest) -> EncodeResponse:
        vectors = await model_thread.run(encode_texts, request.texts)
        return EncodeResponse(vectors=vectors.tolist(), dim=int(vectors.shape[1]))

    @app.post("/predict-next", response_model=PredictResponse)
    async def predict_next_vector(request: PredictRequest) -> PredictResponse:
        context = check_vectors(request.context, bundle.context_length, bundle.dim, "context")
        vector = await predictions.submit(context)  # with the other requests queued now, in one model call
        return PredictResponse(vector=vector.tolist(), norm=float(np.linalg.norm(vector)))

    @app.post("/chat", response_model=ChatResponse)
    async def chat(request: ChatRequest) -> ChatResponse:
        if len(request.texts) != bundle.context_length:
            raise unprocessable(f"texts: expected exactly {bundle.context_length} texts, got {len(request.texts)}")
        top = await model_thread.run(chat_top, request.texts, request.top_k)
        return ChatResponse(next_text=top[0]["text"], similarity=top[0]["similarity"], top=top)

    @app.post("/summarize", response_model=SummarizeResponse)
    def summarize(request: SummarizeRequest) -> SummarizeResponse:
        if request.dialogue is not None:
            return SummarizeResponse(summary=summarize_dialogue(bundle, request.dialogue))
        return SummarizeResponse(summary=summarize_embedding(bundle, request.embedding))

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow serve", description="Serve a vecflow deployment bundle over HTTP.")
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder written by 'vecflow deploy bundle'")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto", help="auto | cuda | mps | cpu")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="larger request bodies get 413")
    parser.add_argument("--model-threads", type=int, default=0,
                        help="torch threads for the models (default: usable cores - 1, at least 1; one core is "
                             "left to HTTP and JSON)")
    args = parser.parse_args(argv)
    import uvicorn

    if args.model_threads < 0:
        parser.error("--model-threads: must be 0 (automatic) or more")
    app = create_app(args.bundle, device=args.device, max_body_bytes=args.max_body_bytes,
                     model_threads=args.model_threads)
    print(f"[serve] {app.state.bundle.name} on http://{args.host}:{args.port} (docs at /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
