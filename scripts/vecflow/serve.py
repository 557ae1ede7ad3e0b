"""The model server: a FastAPI app over a deployment bundle (see ``vecflow.deploy``).

    vecflow serve --bundle results/deploy/vecflow-demo --host 127.0.0.1 --port 8000

At start-up every file listed in the bundle's ``manifest.json`` is hashed and compared; a mismatch stops the
server with an error naming the file. Models load on first use (one lock per bundle), so start-up is quick.

Endpoints: ``GET /health``, ``GET /info``, ``POST /encode``, ``POST /predict-next``, ``POST /chat``,
``POST /summarize``; the OpenAPI schema is at ``/openapi.json``. Requests with wrong shapes or empty lists get
422 with a message, never 500.
"""

from __future__ import annotations

import argparse
import math
import threading
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from vecflow.errors import VecflowError
from vecflow.io import read_json, read_jsonl, load_tensors, sha256_file

MAX_ITEMS = 1024  # texts or vectors per request


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
        from vecflow.devices import pick_device

        return self._once("device", lambda: pick_device(self.device_request))

    @property
    def encoder(self):
        from vecflow.encoder import SentenceEncoder

        device = str(self.device)
        return self._once("encoder", lambda: SentenceEncoder(self.root / "encoder", device=device))

    @property
    def lvm(self):
        from vecflow.lvm_models import load_lvm

        device = self.device
        return self._once("lvm", lambda: load_lvm(self.root / "lvm", device))

    @property
    def bank(self) -> tuple[np.ndarray, list[dict]]:
        def load():
            vectors = load_tensors(self.root / "bank.safetensors", required=["embeddings"])["embeddings"]
            return vectors.astype(np.float32), read_jsonl(self.root / "bank.index.jsonl")

        return self._once("bank", load)

    @property
    def summarizer(self):
        """(model, tokenizer) of the seq2seq summarizer; ``generate`` uses its saved generation config."""
        from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, EncoderDecoderModel

        folder, device = self.root / "summarizer", self.device

        def load():
            config = AutoConfig.from_pretrained(folder)
            loader = EncoderDecoderModel if config.model_type == "encoder-decoder" else AutoModelForSeq2SeqLM
            return loader.from_pretrained(folder).to(device).eval(), AutoTokenizer.from_pretrained(folder)

        return self._once("summarizer", load)

    @property
    def elm(self) -> dict:
        """The ELM adapter, its config and the frozen LM (via ``vecflow.elm``); HTTP 501 when unavailable."""
        if not (self.root / "elm").is_dir():
            raise HTTPException(501, "this bundle has no ELM adapter: /summarize accepts only 'dialogue'")
        try:
            from vecflow import elm
        except ImportError:
            raise HTTPException(501, "vecflow.elm is not installed: /summarize accepts only 'dialogue'") from None
        device = self.device

        def load():
            adapter, config = elm.load_adapter(self.root / "elm", device)
            lm, tokenizer = elm.load_frozen_lm(self.root / "lm", device)
            return {"adapter": adapter, "config": config, "lm": lm, "tokenizer": tokenizer}

        return self._once("elm", load)


# ----------------------------------------------------------------------------------------------------------
# request and response bodies


class EncodeRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=MAX_ITEMS, description="texts to embed")


class EncodeResponse(BaseModel):
    vectors: list[list[float]]
    dim: int


class PredictRequest(BaseModel):
    context: list[list[float]] = Field(min_length=1, max_length=MAX_ITEMS,
                                       description="exactly C context vectors of dimension D, oldest first")


class PredictResponse(BaseModel):
    vector: list[float]
    norm: float


class ChatRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=MAX_ITEMS, description="exactly C texts, oldest first")
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
    dialogue: str | None = Field(None, description="a dialogue with #PersonN# speaker tags")
    embedding: list[float] | None = Field(None, description="a sentence embedding to verbalise (ELM)")

    @model_validator(mode="after")
    def exactly_one_input(self):
        if (self.dialogue is None) == (self.embedding is None):
            raise ValueError("give exactly one of 'dialogue' or 'embedding'")
        if self.dialogue is not None and not self.dialogue.strip():
            raise ValueError("'dialogue' is empty")
        if self.embedding is not None and not self.embedding:
            raise ValueError("'embedding' is empty")
        return self


class SummarizeResponse(BaseModel):
    summary: str


# ----------------------------------------------------------------------------------------------------------
# the work behind each endpoint


def unprocessable(message: str) -> HTTPException:
    return HTTPException(status_code=422, detail=message)


def check_vectors(vectors: list[list[float]], count: int, dim: int, field: str) -> np.ndarray:
    """``vectors`` as an array, or a 422 naming what is wrong (count, dimension, non-finite values)."""
    if count and len(vectors) != count:
        raise unprocessable(f"{field}: expected exactly {count} vectors, got {len(vectors)}")
    for i, vector in enumerate(vectors):
        if len(vector) != dim:
            raise unprocessable(f"{field}[{i}]: expected dimension {dim}, got {len(vector)}")
        if not all(math.isfinite(x) for x in vector):
            raise unprocessable(f"{field}[{i}]: contains NaN or infinity")
    return np.asarray(vectors, dtype=np.float32)


def predict_next(bundle: Bundle, context: np.ndarray) -> np.ndarray:
    """The LVM's (L2-normalised) next vector for one context (C, D)."""
    from vecflow.lvm_models import predict

    norms = np.linalg.norm(context, axis=1, keepdims=True)
    context = context / np.maximum(norms, 1e-12)
    return predict(bundle.lvm, context[None], batch_size=1, device=bundle.device)[0]


def nearest_chunks(bundle: Bundle, vector: np.ndarray, top_k: int) -> list[dict]:
    """The ``top_k`` bank chunks with the highest cosine similarity to ``vector``."""
    vectors, rows = bundle.bank
    similarities = vectors @ (vector / max(float(np.linalg.norm(vector)), 1e-12))
    order = np.argsort(-similarities, kind="stable")[:top_k]
    return [
        {
            "text": rows[i]["text"],
            "similarity": float(similarities[i]),
            "article_id": int(rows[i]["article_id"]),
            "chunk_index": int(rows[i]["chunk_index"]),
        }
        for i in order
    ]


def summarize_dialogue(bundle: Bundle, dialogue: str) -> str:
    import torch

    model, tokenizer = bundle.summarizer
    max_length = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 512)
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
    from vecflow import elm

    parts = bundle.elm
    config = parts["config"]
    vector = check_vectors([embedding], 1, int(config["embed_dim"]), "embedding")
    vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
    source = elm.Source("request", summary_template(config.get("templates", [])), 0, [])
    generation = config.get("generation") or {"num_beams": 1, "max_new_tokens": 48}
    texts = elm.generate_texts(parts["lm"], parts["tokenizer"], parts["adapter"], [source],
                               torch.from_numpy(vector), generation, batch_size=1)
    return texts[0]


# ----------------------------------------------------------------------------------------------------------
# the app


def create_app(bundle_dir: str | Path, device: str = "auto") -> FastAPI:
    """The FastAPI app over one bundle (verified now; models load on first use)."""
    bundle = Bundle(bundle_dir, device=device)
    app = FastAPI(title=f"vecflow: {bundle.name}", version=bundle.manifest_sha256[:12],
                  description="Next-vector prediction, retrieval chat and dialogue summaries from a vecflow bundle.")
    app.state.bundle = bundle

    @app.exception_handler(VecflowError)
    def bundle_error(request: Request, exc: VecflowError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": f"bundle component failed to load: {exc}"})

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

    @app.post("/encode", response_model=EncodeResponse)
    def encode(request: EncodeRequest) -> EncodeResponse:
        vectors = bundle.encoder.encode(request.texts)
        return EncodeResponse(vectors=vectors.tolist(), dim=int(vectors.shape[1]))

    @app.post("/predict-next", response_model=PredictResponse)
    def predict_next_vector(request: PredictRequest) -> PredictResponse:
        context = check_vectors(request.context, bundle.context_length, bundle.dim, "context")
        vector = predict_next(bundle, context)
        return PredictResponse(vector=vector.tolist(), norm=float(np.linalg.norm(vector)))

    @app.post("/chat", response_model=ChatResponse)
    def chat(request: ChatRequest) -> ChatResponse:
        if len(request.texts) != bundle.context_length:
            raise unprocessable(f"texts: expected exactly {bundle.context_length} texts, got {len(request.texts)}")
        vector = predict_next(bundle, bundle.encoder.encode(request.texts))
        top = nearest_chunks(bundle, vector, request.top_k)
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
    args = parser.parse_args(argv)
    import uvicorn

    app = create_app(args.bundle, device=args.device)
    print(f"[serve] {app.state.bundle.name} on http://{args.host}:{args.port} (docs at /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
