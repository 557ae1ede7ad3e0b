"""The model server: a FastAPI app over a deployment bundle (see ``vecflow.ship.deploy``).

    vecflow serve --bundle results/deploy/vecflow-demo --host 127.0.0.1 --port 8000

At start-up every file listed in the bundle's ``manifest.json`` is hashed and compared; a mismatch stops the
server with an error naming the file. The modules each bundled model needs are imported then too, so a broken
install fails start-up loudly (a request for a component the bundle does not have is a 422). Models load on first use
(one lock per bundle), so start-up is quick.

Endpoints: ``GET /health``, ``GET /info``, ``POST /encode``, ``POST /predict-next``, ``POST /chat``,
``POST /summarize``; the OpenAPI schema is at ``/openapi.json``. No input gives a 5xx: bodies over
``--max-body-bytes`` get 413; a body that is not declared JSON gets 415; wrong shapes, empty or whitespace texts,
texts over ``MAX_TEXT_CHARS``, lone surrogates, NaN/infinity and contexts for which the model's output is not
finite get 422 with a message that never echoes the input back.

Every model call goes through one model thread behind a bounded queue (``vecflow.ship.model_queue``: a full
queue is a 503 with Retry-After at once; /health and /info never wait for it). ``--api-key`` (or
``$VECFLOW_API_KEY``) puts every endpoint but /health behind a bearer token; a non-loopback ``--host`` without a
key refuses to start unless ``--no-auth`` (``vecflow.ship.auth``). The HTTP guards are in
``vecflow.ship.http_guards``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field, StringConstraints, model_validator

from vecflow.core.errors import VecflowError
from vecflow.core.io import read_json, sha256_file
from vecflow.ship.auth import check_bind, require_key, resolve_api_key
from vecflow.ship.http_guards import (BodyLimit, CatchAll, JSONRoute, json_content_type, loads_json,  # noqa: F401
                                      validation_details)
from vecflow.ship.model_queue import (DEFAULT_MAX_QUEUE, MAX_BATCH, ModelQueue, default_model_threads,  # noqa: F401
                                      grouped)

MAX_ITEMS = 1024  # texts or vectors per request
MAX_TEXT_CHARS = 20_000  # characters per text given to /encode or /chat
MAX_DIALOGUE_CHARS = 50_000  # characters of a dialogue given to /summarize
MAX_DIM = 8192  # numbers per vector
MAX_BODY_BYTES = 4 * 1024 * 1024  # request bodies above this get 413 (vecflow serve --max-body-bytes)


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
# batches of queued requests: one model call per group whose answers a shared call cannot change


def token_lengths(tokenizer, texts: list[str], max_length: int) -> list[int]:
    return [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]


def encode_batch(bundle: Bundle, requests: list[list[str]]) -> list:
    """Each /encode request's vectors. Requests whose texts all have the same token count share one encoder call
    with the others of that count (no padding in either call, so the rows are those of a single call, bit for
    bit: padding a text changes its vector in the last bits); any other request is its own call."""
    encoder = bundle.encoder
    lengths = token_lengths(encoder.tokenizer, [t for texts in requests for t in texts], encoder.max_length)
    keys, at = [], 0
    for i, texts in enumerate(requests):
        own = set(lengths[at:at + len(texts)])
        keys.append(("tokens", own.pop()) if len(own) == 1 else ("alone", i))
        at += len(texts)

    def call(group: list[int]) -> list[np.ndarray]:
        vectors = encoder.encode([t for i in group for t in requests[i]])
        bounds = np.cumsum([0] + [len(requests[i]) for i in group])
        return [vectors[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    return grouped(list(range(len(requests))), lambda i: keys[i], call)


def summary_key(request: tuple[str, object]) -> tuple:
    """What makes two /summarize requests the same input (their batcher shares a call between equal keys only)."""
    kind, value = request
    return kind, tuple(value) if isinstance(value, list) else value


def summarize_batch(bundle: Bundle, requests: list[tuple[str, object]]) -> list:
    """Each /summarize request's summary (``("dialogue", text)`` or ``("embedding", vector)``), or its own 422.

    Identical queued inputs are computed once; each distinct input is its own model call (the server's batcher
    hands this one key at a time, so each summary is answered as soon as it is generated). (Batched generation
    is not kept: with a KV cache every decoding step multiplies B rows at once, and one row alone takes another
    kernel than several rows together, so the scores of a batched call differ from the single call's in the last
    bits, which is enough to flip a tie; measured on the tiny BERT2BERT with equal source lengths.)"""

    def call(group: list[int]) -> list[str]:
        kind, value = requests[group[0]]
        summary = summarize_dialogue(bundle, value) if kind == "dialogue" else summarize_embedding(bundle, value)
        return [summary] * len(group)

    keys = [summary_key(request) for request in requests]
    return grouped(list(range(len(requests))), lambda i: keys[i], call)


# ----------------------------------------------------------------------------------------------------------
# the app


def bundle_info(bundle: Bundle) -> dict:
    """What ``GET /info`` answers: read once at start-up (the files were verified against the manifest then)."""
    metrics_dir = bundle.root / "metrics"
    return {
        "name": bundle.name,
        "components": bundle.manifest.get("components", {}),
        "dims": {"dim": bundle.dim, "context_length": bundle.context_length},
        "metrics": {p.name: read_json(p) for p in sorted(metrics_dir.glob("*.json"))},
        "manifest_sha256": bundle.manifest_sha256,
    }


def create_app(bundle_dir: str | Path, device: str = "auto", max_body_bytes: int = MAX_BODY_BYTES,
               model_threads: int = 0, max_queue: int = DEFAULT_MAX_QUEUE, api_key: str | None = None) -> FastAPI:
    """The FastAPI app over one bundle (verified now, with the modules its models need; models load on use).

    ``model_threads``: torch threads of the one thread that runs the models (0: ``default_model_threads()``);
    ``max_queue``: requests that may wait for it (one more gets 503); ``api_key``: every endpoint but /health
    needs ``Authorization: Bearer <api_key>`` (None: no authentication)."""
    bundle = Bundle(bundle_dir, device=device)
    for module in bundle.required_modules():
        importlib.import_module(module)  # an ImportError here is a broken install: fail start-up, loudly
    from vecflow.core.search import backend_for

    backend_for(int(bundle.manifest.get("components", {}).get("bank", {}).get("rows", 0)), bank_faiss_min_rows(bundle))
    info_body = bundle_info(bundle)
    app = FastAPI(title=f"vecflow: {bundle.name}", version=bundle.manifest_sha256[:12],
                  description="Next-vector prediction, retrieval chat and dialogue summaries from a vecflow bundle.")
    app.state.bundle = bundle
    app.router.route_class = JSONRoute
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(CatchAll)  # outermost: also catches what BodyLimit raises
    queue = app.state.model_queue = ModelQueue(model_threads or default_model_threads(), max_queue)
    app.state.model_thread = queue.thread
    app.state.predict_batcher = queue.batcher(lambda contexts: predict_next_batch(bundle, contexts))
    app.state.encode_batcher = queue.batcher(lambda requests: encode_batch(bundle, requests))
    app.state.summarize_batcher = queue.batcher(lambda requests: summarize_batch(bundle, requests), key=summary_key)
    keyed = [Depends(require_key(api_key))] if api_key else []
    post = {"dependencies": keyed + [Depends(json_content_type)]}

    @app.exception_handler(VecflowError)
    async def bundle_error(request: Request, exc: VecflowError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": f"bundle component failed to load: {exc}"})

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": validation_details(exc)})

    # every endpoint is async: /health and /info answer on the event loop, never behind a model call; the model
    # calls of the others go through the bounded queue to the one model thread
    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "bundle": bundle.name}

    @app.get("/info", dependencies=keyed)
    async def info() -> dict:
        return info_body

    def chat_top(texts: list[str], top_k: int) -> list[dict]:
        return nearest_chunks(bundle, predict_next(bundle, bundle.encoder.encode(texts)), top_k)

    @app.post("/encode", response_model=EncodeResponse, **post)
    async def encode(request: EncodeRequest) -> EncodeResponse:
        vectors = await app.state.encode_batcher.submit(request.texts)
        return EncodeResponse(vectors=vectors.tolist(), dim=int(vectors.shape[1]))

    @app.post("/predict-next", response_model=PredictResponse, **post)
    async def predict_next_vector(request: PredictRequest) -> PredictResponse:
        context = check_vectors(request.context, bundle.context_length, bundle.dim, "context")
        vector = await app.state.predict_batcher.submit(context)  # with the others queued now, in one model call
        return PredictResponse(vector=vector.tolist(), norm=float(np.linalg.norm(vector)))

    @app.post("/chat", response_model=ChatResponse, **post)
    async def chat(request: ChatRequest) -> ChatResponse:
        if len(request.texts) != bundle.context_length:
            raise unprocessable(f"texts: expected exactly {bundle.context_length} texts, got {len(request.texts)}")
        top = await queue.run(chat_top, request.texts, request.top_k)
        return ChatResponse(next_text=top[0]["text"], similarity=top[0]["similarity"], top=top)

    @app.post("/summarize", response_model=SummarizeResponse, **post)
    async def summarize(request: SummarizeRequest) -> SummarizeResponse:
        item = ("dialogue", request.dialogue) if request.dialogue is not None else ("embedding", request.embedding)
        return SummarizeResponse(summary=await app.state.summarize_batcher.submit(item))

    return app


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vecflow serve", description="Serve a vecflow deployment bundle over HTTP.")
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder written by 'vecflow deploy bundle'")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: loopback only; any other needs --api-key or --no-auth)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto", help="auto | cuda | mps | cpu")
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, help="larger request bodies get 413")
    parser.add_argument("--model-threads", type=int, default=0,
                        help="torch threads for the models (default: usable cores - 1, at least 1; one core is "
                             "left to HTTP and JSON)")
    parser.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                        help=f"requests that may wait for the model thread (default {DEFAULT_MAX_QUEUE}); one "
                             f"more gets 503 with Retry-After")
    parser.add_argument("--api-key", default=None,
                        help="every endpoint but /health needs 'Authorization: Bearer KEY' (default: "
                             "$VECFLOW_API_KEY; prefer the variable: a flag shows in the process list)")
    parser.add_argument("--no-auth", action="store_true",
                        help="serve a non-loopback --host without a key (every endpoint open to the network)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model_threads < 0:
        parser.error("--model-threads: must be 0 (automatic) or more")
    if args.max_queue < 1:
        parser.error("--max-queue: must be 1 or more")
    api_key = resolve_api_key(args.api_key, os.environ)
    check_bind(args.host, api_key, args.no_auth)  # before the bundle is read: a refused start is immediate
    import uvicorn

    app = create_app(args.bundle, device=args.device, max_body_bytes=args.max_body_bytes,
                     model_threads=args.model_threads, max_queue=args.max_queue, api_key=api_key)
    auth = "API key required" if api_key else "no authentication"
    print(f"[serve] {app.state.bundle.name} on http://{args.host}:{args.port} (docs at /docs; {auth}; "
          f"model queue {args.max_queue})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
