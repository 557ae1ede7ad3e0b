"""The one load client of the server: start ``vecflow serve`` on a free loopback port, send a seeded mix of
well-formed and malformed requests from C concurrent keep-alive clients, count status codes, 5xx and dropped
connections, time the requests.

Used by ``scripts/load_server.py`` (a bounded run), ``scripts/bench_server.py`` (latency per endpoint), the soak
test (``vecflow.ship.soak``, ``make soak``) and the burst check (N requests at once while /health is probed).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

DIALOGUE = "#Person1#: Hello, I'd like to book a room for two nights. #Person2#: Of course. Which dates?"
JSON_HEADERS = {"content-type": "application/json"}


# ---------------------------------------------------------------------------------------------- the server


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``vecflow serve`` in a subprocess on a free 127.0.0.1 port (``with Server(...) as server:``); its log goes
    to ``log_path`` (or is dropped), ``api_key`` travels in ``$VECFLOW_API_KEY`` (not in the process list)."""

    def __init__(self, bundle: Path, device: str = "cpu", api_key: str | None = None, extra: Iterable[str] = (),
                 log_path: Path | None = None, start_timeout_s: float = 180):
        self.bundle, self.device, self.api_key, self.extra = Path(bundle), device, api_key, list(extra)
        self.log_path, self.start_timeout_s = log_path, start_timeout_s
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Server":
        scripts = str(Path(__file__).resolve().parents[2])
        env = {k: v for k, v in os.environ.items() if k != "VECFLOW_API_KEY"}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [scripts, os.environ.get("PYTHONPATH")])))
        if self.api_key:
            env["VECFLOW_API_KEY"] = self.api_key
        command = [sys.executable, "-m", "vecflow.cli", "serve", "--bundle", str(self.bundle), "--host", "127.0.0.1",
                   "--port", str(self.port), "--device", self.device, *self.extra]
        self._log = open(self.log_path, "w") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:] if self.log_path and self.log_path.exists() else ""

    def wait_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server did not answer /health within {self.start_timeout_s:.0f} s: {self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_bytes(self) -> int | None:
        """The server process's resident memory now (Linux ``/proc``; None elsewhere or once it has exited)."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except (OSError, AttributeError):
            return None
        return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log_path and self._log is not subprocess.DEVNULL:
            self._log.close()


def bundle_dims(bundle: Path) -> tuple[int, int]:
    """``(dim, context_length)`` of a bundle, from its files (no model loaded)."""
    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    lvm = json.loads((Path(bundle) / "lvm" / "config.json").read_text())
    return int(lvm.get("dim") or manifest["components"]["bank"]["dim"]), int(lvm["context_length"])


# ---------------------------------------------------------------------------------------------- the requests


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: bytes = b""
    malformed: bool = False
    headers: tuple = ()  # extra or replaced headers, e.g. (("content-type", "text/plain"),)
    auth: bool = True  # send the API key (when there is one)


def good_calls(dim: int, context_length: int, seed: int = 0) -> list[Call]:
    """One well-formed request per endpoint (every endpoint, /info included)."""
    vectors = np.random.default_rng(seed).normal(size=(context_length, dim))
    context = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).tolist()
    bodies = [("POST", "/encode", {"texts": ["the cat sat on the mat", "hello there"]}),
              ("POST", "/predict-next", {"context": context}),
              ("POST", "/chat", {"texts": [f"text number {i}" for i in range(context_length)], "top_k": 3}),
              ("POST", "/summarize", {"dialogue": DIALOGUE}),
              ("GET", "/health", None), ("GET", "/info", None)]
    return [Call(method, path, b"" if body is None else json.dumps(body).encode()) for method, path, body in bodies]


def malformed_calls(dim: int, context_length: int, max_body_bytes: int, with_key: bool = False) -> list[Call]:
    """Requests that must get a 4xx: lone surrogates, NaN, wrong dimensions, blank and over-long texts, broken
    JSON, wrong types, a body over the size limit, a text/plain body; with a key, none or a wrong one."""
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
    calls = [Call("POST", path, body, malformed=True) for path, body in bad]
    calls.append(Call("POST", "/encode", b'{"texts": ["plain"]}', True, (("content-type", "text/plain"),)))
    if with_key:
        calls.append(Call("POST", "/encode", b'{"texts": ["no key"]}', True, auth=False))
        calls.append(Call("GET", "/info", b"", True, (("authorization", "Bearer wrong-key"),)))
    return calls


def call_stream(good: list[Call], bad: list[Call], malformed: float, seed: int,
                limit: int | None = None) -> Iterator[Call]:
    """Seeded calls: a share ``malformed`` drawn from ``bad``, the rest cycling through ``good``."""
    rng = random.Random(seed)
    for i in itertools.count() if limit is None else range(limit):
        yield rng.choice(bad) if rng.random() < malformed else good[i % len(good)]


# ---------------------------------------------------------------------------------------------- the clients


@dataclass
class Result:
    path: str
    status: int | None  # None: the connection was dropped (no answer)
    seconds: float
    malformed: bool
    error: str = ""
    retry_after: str | None = None


def send(client, call: Call, api_key: str | None) -> Result:
    """One request on ``client`` (an ``httpx.Client``); a transport error is a dropped connection."""
    import httpx

    headers = dict(JSON_HEADERS)
    if api_key and call.auth:
        headers["authorization"] = f"Bearer {api_key}"
    headers.update(dict(call.headers))
    start = time.perf_counter()
    try:
        response = client.request(call.method, call.path, content=call.body or None, headers=headers)
    except httpx.TransportError as exc:
        return Result(call.path, None, time.perf_counter() - start, call.malformed, type(exc).__name__)
    return Result(call.path, response.status_code, time.perf_counter() - start, call.malformed,
                  retry_after=response.headers.get("retry-after"))


def run_clients(url: str, calls: Iterator[Call], clients: int, api_key: str | None = None,
                deadline: float | None = None, record: Callable[[Result], None] | None = None,
                timeout_s: float = 120) -> list[Result]:
    """``clients`` threads, each with its own keep-alive connection, take the next call from ``calls`` until it
    is exhausted or ``time.monotonic()`` passes ``deadline``. Every result goes to ``record`` when given
    (then nothing is kept here: a long soak holds no list), else into the returned list."""
    import httpx

    lock, kept = threading.Lock(), []
    sink = record or kept.append

    def next_call() -> Call | None:
        if deadline is not None and time.monotonic() >= deadline:
            return None
        with lock:
            return next(calls, None)

    def worker() -> None:
        client = httpx.Client(base_url=url, timeout=timeout_s)
        try:
            while (call := next_call()) is not None:
                result = send(client, call, api_key)
                with lock:
                    sink(result)
                if result.status is None:  # a fresh connection after a dropped one
                    client.close()
                    client = httpx.Client(base_url=url, timeout=timeout_s)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return kept


def burst(url: str, call: Call, n: int, api_key: str | None = None, probe_every_s: float = 0.05,
          timeout_s: float = 600) -> dict:
    """``n`` copies of ``call`` sent at once (one connection each) while /health is probed every
    ``probe_every_s`` on its own connection: every answer's status, and /health latencies during the burst."""
    import httpx

    done = threading.Event()
    health: list[Result] = []

    def probe() -> None:
        with httpx.Client(base_url=url, timeout=timeout_s) as client:
            while not done.is_set():
                health.append(send(client, Call("GET", "/health"), api_key))
                done.wait(probe_every_s)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    start = time.perf_counter()
    results = run_clients(url, iter([call] * n), n, api_key, timeout_s=timeout_s)
    seconds = time.perf_counter() - start
    done.set()
    prober.join()
    report = summarize(results)
    report.update(seconds=round(seconds, 2), requests=n, path=call.path,
                  retry_after=sorted({r.retry_after for r in results if r.retry_after}),
                  health=latency_stats([r.seconds for r in health if r.status == 200]),
                  health_failures=sum(1 for r in health if r.status != 200))
    return report


# ---------------------------------------------------------------------------------------------- the figures


def latency_stats(seconds: list[float]) -> dict:
    if not seconds:
        return {"n": 0}
    ms = np.asarray(seconds) * 1e3
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"n": len(ms), "p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2),
            "p99_ms": round(float(p99), 2), "max_ms": round(float(ms.max()), 2)}


def summarize(results: list[Result]) -> dict:
    """Status counts, 5xx, dropped connections and latencies of a list of results."""
    status = Counter("dropped" if r.status is None else str(r.status) for r in results)
    dropped = [f"{r.path}: {r.error}" for r in results if r.status is None]
    return {
        "status": dict(sorted(status.items())),
        "server_errors": sum(1 for r in results if r.status is not None and r.status >= 500),
        "dropped": len(dropped), "dropped_examples": dropped[:5],
        "malformed": sum(1 for r in results if r.malformed),
        "malformed_refused_4xx": sum(1 for r in results if r.malformed and r.status and 400 <= r.status < 500),
        "latency": latency_stats([r.seconds for r in results if r.status is not None]),
    }
