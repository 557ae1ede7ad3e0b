"""Bounded loopback load test of a vecflow server: N requests from C concurrent keep-alive clients, a share of
them malformed; counts status codes, 5xx and dropped connections, and times the requests.

    python scripts/load_server.py --bundle results/deploy/vecflow-demo --requests 1000 --clients 8 \
        --malformed 0.2 [--json]
    python scripts/load_server.py --bundle results/deploy/vecflow-demo --burst 50 --path /summarize [--json]

The server is started on a free 127.0.0.1 port (``vecflow serve``, with an API key) and stopped at the end. The
report counts ``server_errors`` (500, a 503 without Retry-After) apart from ``overloaded`` (503 with Retry-After:
the full model queue's intended answer). The exit status is 1 when any request got a server error or lost its
connection, and, in the closed-loop run, also on a 503 of back-pressure (C clients, a queue of C or more: one is
a defect); with ``--burst N`` the N requests go at once, each a different input unless ``--same`` (/health is
probed meanwhile from a process of its own), and every one must be answered 200 or 503 with Retry-After.
Well-formed requests cycle through every endpoint; malformed ones are lone surrogates, NaN, wrong dimensions,
blank texts, over-long texts, broken JSON, wrong types, a body over the size limit, a text/plain body and a
missing or wrong API key. The client is ``vecflow.ship.loadgen`` (the soak test's too).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from pathlib import Path

import httpx

from vecflow.ship import loadgen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--malformed", type=float, default=0.2, help="share of malformed requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-body-bytes", type=int, default=256 * 1024)
    parser.add_argument("--max-queue", type=int, default=None, help="the server's --max-queue (default: its own)")
    parser.add_argument("--burst", type=int, default=0, help="send N requests to --path at once instead")
    parser.add_argument("--path", default="/summarize", choices=["/summarize", "/encode", "/predict-next", "/chat"])
    parser.add_argument("--same", action="store_true",
                        help="burst N copies of one body (equal queued inputs share a model call) instead of N "
                             "different ones")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON line")
    args = parser.parse_args(argv)

    dim, context_length = loadgen.bundle_dims(args.bundle)
    good = loadgen.good_calls(dim, context_length, args.seed)
    key = secrets.token_urlsafe(24)
    extra = ["--max-body-bytes", str(args.max_body_bytes)]
    extra += ["--max-queue", str(args.max_queue)] if args.max_queue else []
    with loadgen.Server(args.bundle, args.device, api_key=key, extra=extra) as server:
        with httpx.Client(base_url=server.url, timeout=300) as client:
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
    if args.json:
        print(json.dumps(report))
    else:
        for key_name, value in report.items():
            print(f"{key_name}: {value}")
    ok = answered and report["dropped"] == 0 and report["server_alive"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
