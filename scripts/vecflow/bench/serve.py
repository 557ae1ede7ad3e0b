"""``vecflow bench serve``: ``/predict-next`` and ``/encode`` of a real ``vecflow serve`` process with
concurrent loopback clients vs the same functions called in-process (requests/s, p50/p95/p99). The server is
started and driven by ``vecflow.ship.loadgen``, the server's one load client."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from vecflow.bench.common import MODELS, record
from vecflow.bench.inputs import chunk_texts, tiny_texts
from vecflow.core.errors import VecflowError


def bench_bundle(out: Path, encoder_dir: Path, bank_texts: list[str], context: int = 5, seed: int = 0) -> Path:
    """A deployment bundle (``vecflow.ship.deploy.build_bundle``): the encoder, the default transformer LVM with
    seeded random weights, a bank of ``bank_texts`` encoded by that encoder; the encoder doubles as summarizer
    folder (the server loads it only for /summarize, which is not measured)."""
    import torch

    from vecflow.ship.deploy import build_bundle
    from vecflow.core.encoder import SentenceEncoder
    from vecflow.core.io import save_tensors, write_jsonl
    from vecflow.lvm.models import build_model, model_config, save_lvm

    parts_dir = out.parent / f"{out.name}.parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    encoder = SentenceEncoder(encoder_dir, device="cpu")
    sizes = {"d_model": 64, "layers": 2, "heads": 4, "dropout": 0.1, "residual": True}
    torch.manual_seed(seed)
    save_lvm(parts_dir / "lvm", build_model("transformer", encoder.dim, context, sizes),
             model_config("transformer", encoder.dim, context, sizes))
    save_tensors(parts_dir / "bank.safetensors", {"embeddings": encoder.encode(bank_texts)})
    write_jsonl(parts_dir / "bank.index.jsonl", [{"article_id": 0, "chunk_index": i, "text": t}
                                                 for i, t in enumerate(bank_texts)])
    decision = {"name": "bench", "deploy": True, "summarizer": {"family": "seq2seq"}}
    spec = {"kind": "seq2seq", "max_source_length": 64, "max_target_length": 16}
    build_bundle(out, "bench", decision, {"lvm": parts_dir / "lvm", "encoder": Path(encoder_dir),
                                          "summarizer": Path(encoder_dir), "bank_embeddings": parts_dir / "bank.safetensors",
                                          "bank_index": parts_dir / "bank.index.jsonl"}, [], fallback_spec=spec)
    return out


def percentiles(latencies: list[float]) -> dict:
    ms = np.array(latencies) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "requests": len(ms)}


def load_test(url: str, bodies: list[dict], clients: int) -> tuple[float, list[float]]:
    """``clients`` threads, each with its own keep-alive connection, send ``bodies`` (the server's one load
    client, ``vecflow.ship.loadgen``); returns (requests/s over the whole run, per-request latencies). Any
    non-200 answer fails the run.

    The bodies are JSON-encoded before the clock starts (as httpx's ``json=`` encodes them): the clients share
    the machine's cores with the server, and encoding a 5x384 context costs them about as much CPU as the
    server's HTTP parsing of it."""
    from urllib.parse import urlsplit

    from vecflow.ship import loadgen

    parts = urlsplit(url)
    calls = [loadgen.Call("POST", parts.path, json.dumps(body, ensure_ascii=False, separators=(",", ":"),
                                                         allow_nan=False).encode()) for body in bodies]
    start = time.perf_counter()
    results = loadgen.run_clients(f"{parts.scheme}://{parts.netloc}", iter(calls), clients, timeout_s=60.0)
    rate = len(bodies) / (time.perf_counter() - start)
    bad = [r for r in results if r.status != 200]
    if bad:
        raise VecflowError(f"{url}: HTTP {bad[0].status or bad[0].error} ({len(bad)} of {len(results)} not 200)")
    return rate, [r.seconds for r in results]


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far, all its threads (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_serve(size: str, out_dir: Path | None, minilm: Path | None = None, requests: int | None = None,
                clients: int = 8, chunks_file: Path | None = None, **_) -> list[dict]:
    """/predict-next and /encode over loopback (a real ``vecflow serve`` process started by
    ``vecflow.ship.loadgen.Server``, 8 concurrent clients) vs the same functions called in-process one request
    at a time."""
    from vecflow.ship import loadgen, serve

    full = size == "full"
    encoder_dir = Path(minilm or MODELS / "minilm")
    count = requests or (400 if full else 24)
    texts = chunk_texts(chunks_file, count) if full else tiny_texts(count)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = bench_bundle(Path(tmp) / "bundle", encoder_dir, texts[:64])
        bundle = serve.Bundle(root, device="cpu")
        rng = np.random.default_rng(0)
        contexts = rng.standard_normal((count, bundle.context_length, bundle.dim)).astype(np.float32)
        workloads = {
            "predict-next": ([{"context": c.tolist()} for c in contexts], lambda i: serve.predict_next(bundle, contexts[i])),
            "encode": ([{"texts": [t]} for t in texts], lambda i: bundle.encoder.encode([texts[i]])),
        }
        with loadgen.Server(root, device="cpu") as server:  # started on a free port, stopped on the way out
            base = server.url
            for name, (bodies, local) in workloads.items():
                load_test(f"{base}/{name}", bodies[:clients], clients)  # lazy model loads + warm-up
                local(0)
                latencies_local = []
                start = time.perf_counter()
                for i in range(count):
                    t0 = time.perf_counter()
                    local(i)
                    latencies_local.append(time.perf_counter() - t0)
                local_rate = count / (time.perf_counter() - start)
                cpu_before, load_before = process_cpu_seconds(server.proc.pid), os.getloadavg()[0]
                rate, latencies = load_test(f"{base}/{name}", bodies, clients)
                cpu_after = process_cpu_seconds(server.proc.pid)
                served = percentiles(latencies)
                if cpu_before is not None and cpu_after is not None:  # the server's CPU per request, all threads
                    served["server_cpu_ms_per_request"] = (cpu_after - cpu_before) * 1e3 / count
                served["load_average_1min"] = [load_before, os.getloadavg()[0]]  # before, after the run
                extra = {"server": served, "in_process": percentiles(latencies_local)}
                if name == "predict-next":
                    extra.update(goal_p99_ms=50.0, goal_met=served["p99_ms"] <= 50.0)
                results.append(record(f"serve_{name.replace('-', '_')}", workload={
                    "endpoint": f"POST /{name}", "requests": count, "clients": clients, "transport": "loopback HTTP "
                    "(httpx keep-alive, one connection per client) to a vecflow serve process (uvicorn)",
                    "model": "default transformer LVM (random weights)" if name == "predict-next" else encoder_dir.name,
                    "body": f"one context {bundle.context_length}x{bundle.dim}" if name == "predict-next" else "one text",
                    "in_process": "the same function called in this process, one request at a time"},
                    unit="requests/s", peer="in-process call", peer_value=local_rate, ours="vecflow serve",
                    ours_value=rate, goal=None, check={"all_200": True}, extra=extra, out_dir=out_dir))
    for result in results:
        print(f"[bench {result['benchmark']}] latency server {result['server']} in-process {result['in_process']}")
    return results
