"""The soak test of the server (``make soak``; ``SOAK_SECONDS``, default 1800): ``vecflow serve`` on loopback with
an API key, 8 closed-loop keep-alive clients sending every endpoint (20 % malformed requests) plus a liveness
probe of /health every 0.5 s from a process of its own (``loadgen.HealthProbe``: the /health figures are the
probe's), bounded by time and by request count (it stops by itself), the server's RSS and the latencies sampled
every ``--sample-seconds`` (60), a table written to ``results/soak/soak.{md,json}``.

    python -m vecflow.ship.soak --bundle results/deploy/vecflow-demo --seconds 1800 --out-dir results/soak

Goals (printed, and in the table): 0 x 5xx, 0 dropped connections, /health p99 <= 50 ms in every window, RSS
after the first (warm-up) window grows <= 5 %. 5xx are counted in two kinds: server errors (a 500, a 503 without
Retry-After) and 503s of back-pressure (a full model queue, with Retry-After), which 8 clients cannot cause with
a queue of 8 or more (then one is a defect too). The exit status is 1 when a correctness goal fails (a 5xx, a
dropped connection, a malformed request served, the server gone); the timing goals are reported, never enforced
(they depend on the machine). The client is ``vecflow.ship.loadgen``.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from vecflow.core.io import write_json, write_text
from vecflow.ship import loadgen
from vecflow.ship.model_queue import DEFAULT_MAX_QUEUE

HEALTH_P99_GOAL_MS = 50.0
RSS_GROWTH_GOAL = 0.05
MAX_BODY_BYTES = 256 * 1024


class Window:
    """Results since the last sample (the clients add, the sampler takes; one lock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.results: list[loadgen.Result] = []

    def add(self, result: loadgen.Result) -> None:
        with self.lock:
            self.results.append(result)

    def take(self) -> list[loadgen.Result]:
        with self.lock:
            taken, self.results = self.results, []
        return taken


def window_row(index: int, elapsed_s: float, results: list[loadgen.Result], probes: list[loadgen.Result],
               rss: int | None) -> dict:
    """One window: the clients' ``results`` and the liveness ``probes`` counted together, /health latency from
    the probes alone (the clients' own /health calls are timed by a process busy with 8 clients)."""
    results = results + probes
    summary = loadgen.summarize(results)
    health = loadgen.latency_stats([r.seconds for r in probes if r.status == 200])
    return {"window": index, "elapsed_s": round(elapsed_s, 1), "requests": len(results), "probes": len(probes),
            "status": summary["status"], "server_errors": summary["server_errors"],
            "overloaded": summary["overloaded"], "dropped": summary["dropped"],
            "malformed": summary["malformed"], "malformed_refused_4xx": summary["malformed_refused_4xx"],
            "latency": summary["latency"], "health": health,
            "paths": dict(sorted(Counter(r.path for r in results).items())),
            "rss_mib": round(rss / 2**20, 1) if rss else None}


def goals(rows: list[dict], server_alive: bool, clients: int = 8, max_queue: int | None = None) -> dict:
    """The soak's goals over its windows: the correctness ones (enforced) and the timing ones (reported). A 503
    of back-pressure is a failure where ``clients`` cannot fill the queue (``max_queue`` >= clients), else
    reported only."""
    server_errors = sum(r["server_errors"] for r in rows)
    overloaded = sum(r["overloaded"] for r in rows)
    overload_possible = (max_queue or DEFAULT_MAX_QUEUE) < clients
    dropped = sum(r["dropped"] for r in rows)
    served_malformed = sum(r["malformed"] - r["malformed_refused_4xx"] for r in rows)
    health_p99 = max((r["health"].get("p99_ms", 0.0) for r in rows), default=None)
    rss = [r["rss_mib"] for r in rows if r["rss_mib"]]
    growth = (rss[-1] - rss[0]) / rss[0] if len(rss) >= 2 else None
    return {
        "server_errors": server_errors, "overloaded": overloaded, "overload_possible": overload_possible,
        "dropped": dropped, "malformed_not_refused": served_malformed, "server_alive": server_alive,
        "correct": (server_errors == 0 and (overloaded == 0 or overload_possible) and dropped == 0
                    and served_malformed == 0 and server_alive),
        "health_p99_ms_worst_window": health_p99,
        "health_p99_goal_met": health_p99 is not None and health_p99 <= HEALTH_P99_GOAL_MS,
        "rss_growth_after_warmup": None if growth is None else round(growth, 4),
        "rss_growth_goal_met": growth is not None and growth <= RSS_GROWTH_GOAL,
    }


def markdown(report: dict) -> str:
    g, rows = report["goals"], report["windows"]
    lines = [f"# Soak test: {report['bundle']}", "",
             f"{report['seconds']} s on loopback, {report['clients']} clients + a /health probe every "
             f"{report['probe_every_s']} s, {report['malformed_share']:.0%} malformed, --max-queue "
             f"{report['max_queue'] or DEFAULT_MAX_QUEUE}; {report['requests']} requests; measured "
             f"{report['measured_at']}.", "",
             "| window | elapsed s | requests | 2xx | 4xx | 5xx errors | 503 busy | dropped | p50 ms | p99 ms "
             "| /health p50 ms | /health p99 ms | RSS MiB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ok = sum(n for code, n in r["status"].items() if code.startswith("2"))
        client = sum(n for code, n in r["status"].items() if code.startswith("4"))
        lines.append(f"| {r['window']} | {r['elapsed_s']} | {r['requests']} | {ok} | {client} | "
                     f"{r['server_errors']} | {r['overloaded']} | {r['dropped']} | "
                     f"{r['latency'].get('p50_ms', '-')} | {r['latency'].get('p99_ms', '-')} | "
                     f"{r['health'].get('p50_ms', '-')} | {r['health'].get('p99_ms', '-')} | {r['rss_mib']} |")
    growth = g["rss_growth_after_warmup"]
    lines += ["", "| goal | value | met |", "|---|---:|:---:|",
              f"| 0 x 5xx (server errors: 500, 503 without Retry-After) | {g['server_errors']} | "
              f"{'yes' if g['server_errors'] == 0 else 'NO'} |",
              f"| 0 x 503 of back-pressure (Retry-After; {report['clients']} clients, queue "
              f"{report['max_queue'] or DEFAULT_MAX_QUEUE}) | {g['overloaded']} | "
              f"{'allowed (clients > queue)' if g['overload_possible'] else 'yes' if g['overloaded'] == 0 else 'NO'} |",
              f"| 0 dropped connections | {g['dropped']} | {'yes' if g['dropped'] == 0 else 'NO'} |",
              f"| every malformed request refused (4xx) | {g['malformed_not_refused']} not refused | "
              f"{'yes' if g['malformed_not_refused'] == 0 else 'NO'} |",
              f"| /health p99 <= {HEALTH_P99_GOAL_MS:.0f} ms (worst window) | {g['health_p99_ms_worst_window']} ms | "
              f"{'yes' if g['health_p99_goal_met'] else 'NO'} |",
              f"| RSS growth after warm-up <= {RSS_GROWTH_GOAL:.0%} | "
              f"{'-' if growth is None else f'{growth:+.2%}'} | {'yes' if g['rss_growth_goal_met'] else 'NO'} |", ""]
    return "\n".join(lines)


def soak(bundle: Path, seconds: float, out_dir: Path | None, sample_s: float = 60, clients: int = 8,
         malformed: float = 0.2, max_requests: int = 5_000_000, probe_every_s: float = 0.5, seed: int = 0,
         device: str = "cpu", max_queue: int | None = None, log_path: Path | None = None) -> dict:
    dim, context_length = loadgen.bundle_dims(bundle)
    good = loadgen.good_calls(dim, context_length, seed)
    key = secrets.token_urlsafe(24)
    bad = loadgen.malformed_calls(dim, context_length, MAX_BODY_BYTES, with_key=True)
    extra = ["--max-body-bytes", str(MAX_BODY_BYTES)] + (["--max-queue", str(max_queue)] if max_queue else [])
    window, rows, total = Window(), [], 0
    with loadgen.Server(bundle, device, api_key=key, extra=extra, log_path=log_path) as server:
        with httpx.Client(base_url=server.url, timeout=300) as client:
            for call in good:  # warm-up: the models load on first use (not counted)
                loadgen.send(client, call, key)
        # a liveness probe from its own process, on its own connection, as a load balancer would send
        with loadgen.HealthProbe(server.url, probe_every_s) as probe:
            start = time.monotonic()
            deadline = start + seconds
            calls = loadgen.call_stream(good, bad, malformed, seed, limit=max_requests)
            load = threading.Thread(target=loadgen.run_clients, daemon=True,
                                    args=(server.url, calls, clients, key, deadline, window.add))
            load.start()
            probe.take()  # the probes before the clients started
            index = 0
            while True:
                next_sample = start + (index + 1) * sample_s
                if next_sample >= deadline:  # the last window: until the clients' last answers are in
                    load.join()
                else:
                    load.join(timeout=max(0.0, next_sample - time.monotonic()))
                finished = not load.is_alive()
                if finished:
                    probe.stop()
                elif time.monotonic() < next_sample:
                    continue
                index += 1
                taken, probes = window.take(), probe.take()
                total += len(taken) + len(probes)
                rows.append(window_row(index, time.monotonic() - start, taken, probes, server.rss_bytes()))
                row = rows[-1]
                print(f"[soak] window {index}: {row['requests']} requests, 5xx {row['server_errors']}, 503 busy "
                      f"{row['overloaded']}, dropped {row['dropped']}, p99 {row['latency'].get('p99_ms')} ms, "
                      f"/health p50/p99 {row['health'].get('p50_ms')}/{row['health'].get('p99_ms')} ms, RSS "
                      f"{row['rss_mib']} MiB", flush=True)
                if finished:
                    break
        alive = server.alive()
    report = {"bundle": str(bundle), "seconds": seconds, "sample_s": sample_s, "clients": clients,
              "probe_every_s": probe_every_s, "malformed_share": malformed, "max_requests": max_requests,
              "max_queue": max_queue, "requests": total, "windows": rows,
              "goals": goals(rows, alive, clients, max_queue),
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if out_dir is not None:
        write_json(Path(out_dir) / "soak.json", report)
        write_text(Path(out_dir) / "soak.md", markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vecflow.ship.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=1800)
    parser.add_argument("--sample-seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--malformed", type=float, default=0.2)
    parser.add_argument("--max-requests", type=int, default=5_000_000)
    parser.add_argument("--max-queue", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out-dir", type=Path, default=Path("results/soak"))
    args = parser.parse_args(argv)
    if not (args.bundle / "manifest.json").exists():
        print(f"soak: error: {args.bundle}: not a bundle (no manifest.json); run 'make demo' first or give "
              f"SOAK_BUNDLE=<bundle folder>", file=sys.stderr)
        return 2
    report = soak(args.bundle, args.seconds, args.out_dir, args.sample_seconds, args.clients, args.malformed,
                  args.max_requests, device=args.device, max_queue=args.max_queue)
    print(markdown(report))
    print(f"[soak] table: {args.out_dir / 'soak.md'} and soak.json")
    return 0 if report["goals"]["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
