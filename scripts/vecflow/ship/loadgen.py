"""The one load client of the server: start ``vecflow serve`` on a free loopback port, send a seeded mix of
well-formed and malformed requests from C concurrent keep-alive clients, count status codes, 5xx and dropped
connections, time the requests.

Used by ``vecflow load-test`` (``vecflow.ship.load_test``: a bounded run, the burst check of N requests at once
while /health is probed, latency per endpoint), the soak test (``vecflow.ship.soak``, ``make soak``) and
``vecflow bench serve``.

Two things keep the client from measuring itself (both seen on 2 cores): every ``httpx.Client`` shares one SSL
context (httpx otherwise loads the CA bundle for each, and the clients of a burst would spend the cores on it
while the server is being measured: BENCHMARKS.md, server under load), and /health is probed from a process of
its own (``HealthProbe``), never a thread of the load client, whose clock would also count the client's GIL
waits.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import random
import socket
import ssl
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


_SSL_LOCK = threading.Lock()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def shared_ssl_context() -> ssl.SSLContext:
    """One SSL context for every client of this process (the loopback URLs are plain HTTP: it is never used,
    but httpx builds one per client unless given one, loading the CA bundle each time). Built under a lock: 50
    threads asking at once would otherwise each build one."""
    with _SSL_LOCK:
        return _ssl_context()


def http_client(url: str, timeout_s: float):
    """A keep-alive ``httpx.Client`` of ``url`` (about 1 ms to build, not 36: the SSL context is shared)."""
    import httpx

    return httpx.Client(base_url=url, timeout=timeout_s, verify=shared_ssl_context())


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
    at: float = 0.0  # when it was sent (time.time(): comparable across processes)

    @property
    def overloaded(self) -> bool:
        """A 503 with Retry-After: the model queue was full (back-pressure, by design; not a server error)."""
        return self.status == 503 and self.retry_after is not None

    @property
    def server_error(self) -> bool:
        """A 5xx that is not back-pressure: a bug, or a component that failed (a 503 without Retry-After)."""
        return self.status is not None and self.status >= 500 and not self.overloaded


def send(client, call: Call, api_key: str | None) -> Result:
    """One request on ``client`` (an ``httpx.Client``); a transport error is a dropped connection."""
    import httpx

    headers = dict(JSON_HEADERS)
    if api_key and call.auth:
        headers["authorization"] = f"Bearer {api_key}"
    headers.update(dict(call.headers))
    at, start = time.time(), time.perf_counter()
    try:
        response = client.request(call.method, call.path, content=call.body or None, headers=headers)
    except httpx.TransportError as exc:
        return Result(call.path, None, time.perf_counter() - start, call.malformed, type(exc).__name__, at=at)
    return Result(call.path, response.status_code, time.perf_counter() - start, call.malformed,
                  retry_after=response.headers.get("retry-after"), at=at)


def run_clients(url: str, calls: Iterator[Call], clients: int, api_key: str | None = None,
                deadline: float | None = None, record: Callable[[Result], None] | None = None,
                timeout_s: float = 120) -> list[Result]:
    """``clients`` threads, each with its own keep-alive connection, take the next call from ``calls`` until it
    is exhausted or ``time.monotonic()`` passes ``deadline``; they start together, once every client is built.
    Every result goes to ``record`` when given (then nothing is kept here: a long soak holds no list), else into
    the returned list."""
    lock, kept = threading.Lock(), []
    sink = record or kept.append
    ready = threading.Barrier(max(1, clients))

    def next_call() -> Call | None:
        if deadline is not None and time.monotonic() >= deadline:
            return None
        with lock:
            return next(calls, None)

    def worker() -> None:
        client = http_client(url, timeout_s)
        try:
            ready.wait(timeout=timeout_s)
            while (call := next_call()) is not None:
                result = send(client, call, api_key)
                with lock:
                    sink(result)
                if result.status is None:  # a fresh connection after a dropped one
                    client.close()
                    client = http_client(url, timeout_s)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return kept


def probe_loop(host: str, port: int, every_s: float, timeout_s: float, stop: threading.Event, emit) -> None:
    """GET /health every ``every_s`` on one keep-alive connection (the standard library's: the probe's own
    overhead is what a load balancer's would be) until ``stop`` is set; ``emit(result)`` for each."""
    import http.client

    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        while not stop.is_set():
            at, start = time.time(), time.perf_counter()
            try:
                connection.request("GET", "/health")
                response = connection.getresponse()
                response.read()
                emit(Result("/health", response.status, time.perf_counter() - start, False, at=at))
            except (OSError, http.client.HTTPException) as exc:
                emit(Result("/health", None, time.perf_counter() - start, False, type(exc).__name__, at=at))
                connection.close()  # a fresh connection after a dropped one
            stop.wait(every_s)
    finally:
        connection.close()


class HealthProbe:
    """``GET /health`` every ``every_s`` from a process of its own (``with HealthProbe(url) as probe:``), as a
    load balancer's liveness probe would: its clock counts the server's time and the network's, never a wait for
    the load client's GIL. ``take()`` returns the results that came in since the last ``take()``; after ``stop()``
    (or on the way out) the last ones are kept for a final ``take()``.

    The process is ``python -m vecflow.ship.loadgen probe``: one JSON line per probe on its stdout, until its
    stdin is closed."""

    def __init__(self, url: str, every_s: float = 0.05, timeout_s: float = 120):
        self.url, self.every_s, self.timeout_s = url, every_s, timeout_s
        self._lock = threading.Lock()
        self._kept: list[Result] = []
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> "HealthProbe":
        scripts = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [scripts, os.environ.get("PYTHONPATH")]))}
        self._proc = subprocess.Popen([sys.executable, "-m", "vecflow.ship.loadgen", "probe", self.url,
                                       "--every", str(self.every_s), "--timeout", str(self.timeout_s)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.timeout_s
        while not self._kept:  # the first answer: the probe runs (a hang guard, not a timing check)
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"the /health probe of {self.url} never answered")
            time.sleep(0.02)
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            fields = json.loads(line)
            with self._lock:
                self._kept.append(Result(**fields))

    def take(self) -> list[Result]:
        with self._lock:
            taken, self._kept = self._kept, []
        return taken

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """No more probes; the last results stay for ``take()`` (a second call does nothing)."""
        if self._proc is None or self._proc.stdin.closed:
            return
        self._proc.stdin.close()  # the probe's signal to stop
        try:
            self._proc.wait(timeout=self.timeout_s + 10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join()


def _probe_main(argv: list[str]) -> int:
    """``python -m vecflow.ship.loadgen probe URL [--every S] [--timeout S]``: the process of a ``HealthProbe``."""
    import argparse
    import dataclasses
    from urllib.parse import urlsplit

    parser = argparse.ArgumentParser(prog="python -m vecflow.ship.loadgen probe")
    parser.add_argument("url")
    parser.add_argument("--every", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args(argv)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()  # stdin closed: stop
    parts = urlsplit(args.url)

    def emit(result: Result) -> None:
        try:
            print(json.dumps(dataclasses.asdict(result)), flush=True)
        except BrokenPipeError:
            stop.set()

    probe_loop(parts.hostname, parts.port or 80, args.every, args.timeout, stop, emit)
    return 0


def burst_calls(path: str, n: int, dim: int, context_length: int, distinct: bool = True) -> list[Call]:
    """``n`` well-formed requests to ``path``: each a different input (``distinct``), or ``n`` copies of one (equal
    queued inputs share a model call, so copies measure the queue, not the model)."""
    rng = np.random.default_rng(0)

    def body(i: int) -> dict:
        if path == "/summarize":
            return {"dialogue": f"#Person1#: Hello, I'd like to book a room for {i + 1} nights. "
                                f"#Person2#: Of course. For how many guests? #Person1#: {i % 4 + 1}, please."}
        if path == "/encode":
            return {"texts": [f"request {i}: the cat sat on the mat", "hello there"]}
        if path == "/chat":
            return {"texts": [f"request {i} text number {j}" for j in range(context_length)], "top_k": 3}
        if path == "/predict-next":
            vectors = rng.normal(size=(context_length, dim))
            return {"context": (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).tolist()}
        raise ValueError(f"no burst body for {path}")

    bodies = [body(i) for i in range(n)] if distinct else [body(0)] * n
    return [Call("POST", path, json.dumps(b).encode()) for b in bodies]


def burst(url: str, calls: list[Call], api_key: str | None = None, probe_every_s: float = 0.05,
          timeout_s: float = 600) -> dict:
    """Every call in ``calls`` sent at once (one connection each, started together) while /health is probed
    every ``probe_every_s`` by a ``HealthProbe``: every answer's status, and the /health latencies of the probes
    sent while the burst ran."""
    with HealthProbe(url, probe_every_s, timeout_s) as probe:
        start = time.time()
        results = run_clients(url, iter(calls), len(calls), api_key, timeout_s=timeout_s)
        end = time.time()
    health = [r for r in probe.take() if start <= r.at <= end]
    report = summarize(results)
    report.update(seconds=round(end - start, 2), requests=len(calls), path=calls[0].path,
                  distinct_bodies=len({c.body for c in calls}),
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
    """Status counts, server errors, 503s of back-pressure, dropped connections and latencies of a list of
    results. ``overloaded``: 503 with Retry-After, the full model queue's intended answer; ``server_errors``:
    every other 5xx (a 500, a 503 without Retry-After from a component that failed to load)."""
    status = Counter("dropped" if r.status is None else str(r.status) for r in results)
    dropped = [f"{r.path}: {r.error}" for r in results if r.status is None]
    return {
        "status": dict(sorted(status.items())),
        "server_errors": sum(1 for r in results if r.server_error),
        "overloaded": sum(1 for r in results if r.overloaded),
        "dropped": len(dropped), "dropped_examples": dropped[:5],
        "malformed": sum(1 for r in results if r.malformed),
        "malformed_refused_4xx": sum(1 for r in results if r.malformed and r.status and 400 <= r.status < 500),
        "latency": latency_stats([r.seconds for r in results if r.status is not None]),
    }


if __name__ == "__main__":
    if sys.argv[1:2] != ["probe"]:
        sys.exit("usage: python -m vecflow.ship.loadgen probe URL [--every S] [--timeout S]")
    sys.exit(_probe_main(sys.argv[2:]))
