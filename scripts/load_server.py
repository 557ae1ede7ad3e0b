"""Bounded loopback load test of a vecflow server: N requests from C concurrent keep-alive clients, a share of
them malformed; counts status codes, 5xx and dropped connections, and times the requests.

    python scripts/load_server.py --bundle results/deploy/vecflow-demo --requests 1000 --clients 8 \
        --malformed 0.2 [--json]

The server is started on a free 127.0.0.1 port (``vecflow serve``) and stopped at the end. The exit status is 1
when any request got a 5xx or lost its connection. Well-formed requests cycle through /encode, /predict-next,
/chat, /summarize and /health; malformed ones are lone surrogates, NaN, wrong dimensions, blank texts,
over-long texts, broken JSON, wrong types and a body over the size limit.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

DIALOGUE = "#Person1#: Hello, I'd like to book a room for two nights. #Person2#: Of course. Which dates?"


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(bundle: Path, port: int, device: str, max_body_bytes: int) -> subprocess.Popen:
    scripts = str(Path(__file__).resolve().parent)
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [scripts, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "vecflow.cli", "serve", "--bundle", str(bundle), "--host", "127.0.0.1",
               "--port", str(port), "--device", device, "--max-body-bytes", str(max_body_bytes)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"server did not answer /health within {timeout_s:.0f} s")


def request_plan(n: int, malformed: float, dim: int, context_length: int, max_body_bytes: int,
                 seed: int) -> list[tuple[str, str, bytes, bool]]:
    """``(method, path, body, is_malformed)`` for every request, seeded."""
    rng = random.Random(seed)
    vectors = np.random.default_rng(seed).normal(size=(context_length, dim))
    context = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).tolist()
    good = [
        ("POST", "/encode", {"texts": ["the cat sat on the mat", "hello there"]}),
        ("POST", "/predict-next", {"context": context}),
        ("POST", "/chat", {"texts": [f"text number {i}" for i in range(context_length)], "top_k": 3}),
        ("POST", "/summarize", {"dialogue": DIALOGUE}),
        ("GET", "/health", None),
    ]
    bad = [
        ("/encode", b'{"texts": ["\\ud800"]}'),
        ("/chat", json.dumps({"texts": ["a", "\ud800"] + ["c"] * (context_length - 2)}).encode()),
        ("/summarize", b'{"dialogue": "#Person1#: \\udfff hi"}'),
        ("/predict-next", json.dumps({"context": [[float("nan")] * dim] * context_length}).encode()),
        ("/predict-next", json.dumps({"context": [[0.1] * (dim + 1)] * context_length}).encode()),
        ("/predict-next", json.dumps({"context": [["x"] * dim] * context_length}).encode()),
        ("/encode", b'{"texts": ["   "]}'),
        ("/encode", json.dumps({"texts": ["word " * 5000]}).encode()),
        ("/encode", b'{"texts": ["unterminated'),
        ("/summarize", b'{"dialogue": 12}'),
        ("/chat", json.dumps({"texts": ["only one"]}).encode()),
        ("/encode", b'{"texts": ["' + b"y" * (max_body_bytes + 10) + b'"]}'),
    ]
    plan = []
    for i in range(n):
        if rng.random() < malformed:
            path, body = rng.choice(bad)
            plan.append(("POST", path, body, True))
        else:
            method, path, body = good[i % len(good)]
            plan.append((method, path, b"" if body is None else json.dumps(body).encode(), False))
    return plan


def run_load(url: str, plan: list, clients: int) -> dict:
    jobs: queue.Queue = queue.Queue()
    for item in plan:
        jobs.put(item)
    status, dropped, latencies, lock = Counter(), [], [], threading.Lock()

    def worker():
        client = httpx.Client(base_url=url, timeout=120, headers={"content-type": "application/json"})
        while True:
            try:
                method, path, body, _ = jobs.get_nowait()
            except queue.Empty:
                break
            start = time.perf_counter()
            try:
                response = client.request(method, path, content=body or None)
                code = response.status_code
            except httpx.TransportError as exc:
                with lock:
                    dropped.append(f"{path}: {type(exc).__name__}")
                client.close()
                client = httpx.Client(base_url=url, timeout=120, headers={"content-type": "application/json"})
                continue
            with lock:
                status[str(code)] += 1
                latencies.append(time.perf_counter() - start)
        client.close()

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    ms = sorted(1000 * x for x in latencies)
    return {
        "requests": len(plan), "clients": clients, "malformed": sum(1 for p in plan if p[3]),
        "status": dict(sorted(status.items())), "server_errors": sum(n for code, n in status.items() if code >= "500"),
        "dropped": len(dropped), "dropped_examples": dropped[:5], "seconds": round(seconds, 2),
        "requests_per_s": round(len(plan) / seconds, 1),
        "p50_ms": round(ms[len(ms) // 2], 1) if ms else None, "p95_ms": round(ms[int(len(ms) * 0.95)], 1) if ms else None,
        "max_ms": round(ms[-1], 1) if ms else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--malformed", type=float, default=0.2, help="share of malformed requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-body-bytes", type=int, default=256 * 1024)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
    args = parser.parse_args(argv)

    manifest = json.loads((args.bundle / "manifest.json").read_text())
    lvm = json.loads((args.bundle / "lvm" / "config.json").read_text())
    dim = int(lvm.get("dim") or manifest["components"]["bank"]["dim"])
    plan = request_plan(args.requests, args.malformed, dim, int(lvm["context_length"]), args.max_body_bytes,
                        args.seed)
    port = free_loopback_port()
    proc = start_server(args.bundle, port, args.device, args.max_body_bytes)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        for method, path, body, _ in plan[:10]:  # warm-up: models load on first use (not counted)
            httpx.request(method, f"{url}{path}", content=body or None, timeout=300,
                          headers={"content-type": "application/json"})
        report = run_load(url, plan, args.clients)
        report["server_alive"] = proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0 if report["server_errors"] == 0 and report["dropped"] == 0 and report["server_alive"] else 1


if __name__ == "__main__":
    sys.exit(main())
