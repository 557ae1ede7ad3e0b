"""Latency of a vecflow server: start ``vecflow serve`` on a bundle (loopback only), time N requests each to
/predict-next and /summarize, print p50/p95, stop the server.

    python scripts/bench_server.py --bundle results/deploy/vecflow-demo --requests 50 [--json]

The first request to each endpoint (model loading) is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

DIALOGUE = ("#Person1#: Hello, I'd like to book a room for two nights. #Person2#: Of course. "
            "Which dates? #Person1#: Friday and Saturday. #Person2#: That's fine, a double room is free.")


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(bundle: Path, port: int, device: str) -> subprocess.Popen:
    scripts = str(Path(__file__).resolve().parent)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(filter(None, [scripts, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "vecflow.cli", "serve", "--bundle", str(bundle), "--host", "127.0.0.1",
               "--port", str(port), "--device", device]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def wait_until_healthy(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server did not answer /health within {timeout_s:.0f} s")


def time_requests(client: httpx.Client, path: str, body: dict, n: int) -> dict:
    """Warm up once, then time ``n`` requests; p50/p95 in milliseconds."""
    client.post(path, json=body).raise_for_status()
    latencies = []
    for _ in range(n):
        start = time.perf_counter()
        client.post(path, json=body).raise_for_status()
        latencies.append((time.perf_counter() - start) * 1000)
    p50, p95 = np.percentile(latencies, [50, 95])
    return {"n": n, "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2)}


def benchmark(url: str, n: int) -> dict:
    with httpx.Client(base_url=url, timeout=120) as client:
        info = client.get("/info").json()
        dim, context_length = info["dims"]["dim"], info["dims"]["context_length"]
        rng = np.random.default_rng(0)
        context = rng.normal(size=(context_length, dim))
        context /= np.linalg.norm(context, axis=1, keepdims=True)
        return {
            "/predict-next": time_requests(client, "/predict-next", {"context": context.tolist()}, n),
            "/summarize": time_requests(client, "/summarize", {"dialogue": DIALOGUE}, n),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=50, help="timed requests per endpoint (1..10000)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="seconds to wait for /health")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 10000:
        parser.error("--requests must be in 1..10000")
    port = free_loopback_port()
    proc = start_server(args.bundle, port, args.device)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(url, proc, args.start_timeout)
        report = benchmark(url, args.requests)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    if args.json:
        print(json.dumps(report))
    else:
        for path, stats in report.items():
            print(f"{path:15s} n={stats['n']:5d}  p50 {stats['p50_ms']:8.2f} ms  p95 {stats['p95_ms']:8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
