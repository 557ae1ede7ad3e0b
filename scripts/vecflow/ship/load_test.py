"""``vecflow load-test``: a bounded loopback run of the one load client (``vecflow.ship.loadgen``) against a
server started on a bundle, in one of three modes:

    vecflow load-test --bundle results/deploy/vecflow-demo --requests 1000 --clients 8 --malformed 0.2 [--json]
    vecflow load-test --bundle results/deploy/vecflow-demo --burst 50 --path /summarize [--json]
    vecflow load-test --bundle results/deploy/vecflow-demo --latency 50 [--json]

- closed loop (the default): N requests from C concurrent keep-alive clients, a share of them malformed (lone
  surrogates, NaN, wrong dimensions, blank or over-long texts, broken JSON, wrong types, a body over the size
  limit, a text/plain body, a missing or wrong API key); well-formed ones cycle through every endpoint;
- ``--burst N``: N requests to ``--path`` at once, each a different input unless ``--same``, while /health is
  probed from a process of its own; every one must be answered 200 or 503 with Retry-After;
- ``--latency N``: N requests one after the other to /predict-next and to /summarize (after one warm-up each,
  not counted: models load on first use); p50/p95 per endpoint.

The server is started on a free 127.0.0.1 port (``vecflow serve``; with an API key except in ``--latency``) and
stopped at the end. Reports count ``server_errors`` (500, a 503 without Retry-After) apart from ``overloaded``
(503 with Retry-After: the full model queue's intended answer). The exit status is 1 when a request got a
server error or lost its connection, and in the closed loop also on a 503 of back-pressure (C clients, a queue of
C or more: one is a defect); ``--latency`` fails (2) on any answer but 200. The soak test (``make soak``,
``vecflow.ship.soak``) and ``vecflow bench serve`` use the same client.
"""

from __future__ import annotations

import argparse
import json
import secrets
import time
from pathlib import Path

from vecflow.core.errors import VecflowError
from vecflow.ship import loadgen

PATHS = ("/summarize", "/encode", "/predict-next", "/chat")
LATENCY_PATHS = ("/predict-next", "/summarize")


def time_requests(client, call: loadgen.Call, n: int) -> dict:
    """Warm up once, then time ``n`` requests one after the other; p50/p95 in milliseconds."""
    results = [loadgen.send(client, call, None) for _ in range(n + 1)]
    bad = [r for r in results if r.status != 200]
    if bad:
        raise VecflowError(f"{call.path}: HTTP {bad[0].status or bad[0].error}")
    stats = loadgen.latency_stats([r.seconds for r in results[1:]])
    return {"n": n, "p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"]}


def run_latency(args: argparse.Namespace) -> tuple[dict, bool]:
    calls = {c.path: c for c in loadgen.good_calls(*loadgen.bundle_dims(args.bundle))}
    with loadgen.Server(args.bundle, args.device or "auto", start_timeout_s=args.start_timeout) as server:
        with loadgen.http_client(server.url, 120) as client:
            report = {path: time_requests(client, calls[path], args.latency) for path in LATENCY_PATHS}
    return report, True


def run_load(args: argparse.Namespace) -> tuple[dict, bool]:
    """The closed loop or the burst; returns (report, every goal met)."""
    dim, context_length = loadgen.bundle_dims(args.bundle)
    good = loadgen.good_calls(dim, context_length, args.seed)
    key = secrets.token_urlsafe(24)
    extra = ["--max-body-bytes", str(args.max_body_bytes)]
    extra += ["--max-queue", str(args.max_queue)] if args.max_queue else []
    with loadgen.Server(args.bundle, args.device or "cpu", api_key=key, extra=extra,
                        start_timeout_s=args.start_timeout) as server:
        with loadgen.http_client(server.url, 300) as client:
            for call in good:  # warm-up: models load on first use (not counted)
                loadgen.send(client, call, key)
        if args.burst:
            calls = loadgen.burst_calls(args.path, args.burst, dim, context_length, distinct=not args.same)
            report = loadgen.burst(server.url, calls, key)
            report["max_queue"] = args.max_queue  # None: the server's default
            answered = (set(report["status"]) <= {"200", "503"} and report["server_errors"] == 0
                        and report["health_failures"] == 0)
        else:
            calls = loadgen.call_stream(good, loadgen.malformed_calls(dim, context_length, args.max_body_bytes, True),
                                        args.malformed, args.seed, limit=args.requests)
            start = time.perf_counter()
            report = loadgen.summarize(loadgen.run_clients(server.url, calls, args.clients, key))
            seconds = time.perf_counter() - start
            report.update(requests=args.requests, clients=args.clients, seconds=round(seconds, 2),
                          requests_per_s=round(args.requests / seconds, 1))
            answered = report["server_errors"] == 0 and report["overloaded"] == 0
        report["server_alive"] = server.alive()
    return report, answered and report["dropped"] == 0 and report["server_alive"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vecflow load-test", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--burst", type=int, default=0, help="send N requests to --path at once")
    mode.add_argument("--latency", type=int, default=0, metavar="N",
                      help="time N sequential requests each to /predict-next and /summarize (1..10000)")
    parser.add_argument("--requests", type=int, default=1000, help="closed loop: requests in all")
    parser.add_argument("--clients", type=int, default=8, help="closed loop: concurrent clients")
    parser.add_argument("--malformed", type=float, default=0.2, help="closed loop: share of malformed requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="the server's --device (default: cpu; auto for --latency)")
    parser.add_argument("--max-body-bytes", type=int, default=256 * 1024)
    parser.add_argument("--max-queue", type=int, default=None, help="the server's --max-queue (default: its own)")
    parser.add_argument("--path", default="/summarize", choices=PATHS, help="--burst: the endpoint")
    parser.add_argument("--same", action="store_true",
                        help="--burst: N copies of one body (equal queued inputs share a model call) instead of N "
                             "different ones")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="seconds to wait for /health")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.latency and not 1 <= args.latency <= 10000:
        parser.error("--latency must be in 1..10000")
    if not args.latency and not args.burst and (args.clients < 1 or args.requests < 1):
        parser.error("--clients and --requests must be at least 1 (a closed loop with none measures nothing)")
    report, ok = run_latency(args) if args.latency else run_load(args)
    if args.json:
        print(json.dumps(report))
    elif args.latency:
        for path, stats in report.items():
            print(f"{path:15s} n={stats['n']:5d}  p50 {stats['p50_ms']:8.2f} ms  p95 {stats['p95_ms']:8.2f} ms")
    else:
        for key_name, value in report.items():
            print(f"{key_name}: {value}")
    return 0 if ok else 1
