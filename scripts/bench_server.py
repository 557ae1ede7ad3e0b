"""Latency of a vecflow server: start ``vecflow serve`` on a bundle (loopback only), time N requests each to
/predict-next and /summarize, print p50/p95, stop the server.

    python scripts/bench_server.py --bundle results/deploy/vecflow-demo --requests 50 [--json]

The first request to each endpoint (model loading) is a warm-up and is not counted. The client is
``vecflow.ship.loadgen`` (the load and soak tests' too).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx

from vecflow.ship import loadgen


def time_requests(client: httpx.Client, call: loadgen.Call, n: int) -> dict:
    """Warm up once, then time ``n`` requests one after the other; p50/p95 in milliseconds."""
    results = [loadgen.send(client, call, None) for _ in range(n + 1)]
    bad = [r for r in results if r.status != 200]
    if bad:
        raise SystemExit(f"{call.path}: HTTP {bad[0].status or bad[0].error}")
    stats = loadgen.latency_stats([r.seconds for r in results[1:]])
    return {"n": n, "p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"]}


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
    calls = {c.path: c for c in loadgen.good_calls(*loadgen.bundle_dims(args.bundle))}
    with loadgen.Server(args.bundle, args.device, start_timeout_s=args.start_timeout) as server:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            report = {path: time_requests(client, calls[path], args.requests) for path in ("/predict-next", "/summarize")}
    if args.json:
        print(json.dumps(report))
    else:
        for path, stats in report.items():
            print(f"{path:15s} n={stats['n']:5d}  p50 {stats['p50_ms']:8.2f} ms  p95 {stats['p95_ms']:8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
