"""Server throughput per storage backend: create -> claim -> complete, from several client processes.

    python tests/bench/bench_server.py [--seconds 8] [--processes 4] [--concurrency 8]

For each backend (memory, Redis, PostgreSQL) one server process runs (uvicorn + httptools, events
published on Redis), and ``--processes`` load processes each run ``--concurrency`` loops of
create task -> claim -> complete status, each process with its own HTTP client. Printed and written
to tests/bench/results/server.json: tasks/s, claim latency p50/p99, and the CPU the clients and
the server used (on a small machine the clients compete with the server for the same cores).
Numbers only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.support.server import ServerProcess  # noqa: E402
from tests.support.services import PostgresServer, RedisServer, create_database, drop_database  # noqa: E402

RESULTS = ROOT / "tests" / "bench" / "results" / "server.json"


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _load(
    url: str, worker_id: str, codebase_id: str, concurrency: int, start_at: float, stop_at: float
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        (await http.post("/v1/agent/workers/register", json={"worker_id": worker_id})).raise_for_status()
        claim_ms: list[float] = []
        cycle_ms: list[float] = []
        errors = 0

        async def loop() -> None:
            nonlocal errors
            while time.time() < stop_at:
                began = time.perf_counter()
                created = await http.post(
                    "/v1/agent/tasks", json={"title": "bench", "prompt": "p", "codebase_id": codebase_id}
                )
                if created.status_code != 200:
                    errors += 1
                    continue
                task_id = created.json()["id"]
                claim_began = time.perf_counter()
                claimed = await http.post(
                    "/v1/worker/tasks/claim", json={"task_id": task_id}, headers={"X-Worker-ID": worker_id}
                )
                claim_ms.append((time.perf_counter() - claim_began) * 1000)
                done = await http.put(
                    f"/v1/agent/tasks/{task_id}/status",
                    json={"status": "completed", "worker_id": worker_id, "result": "ok"},
                )
                if claimed.status_code != 200 or done.status_code != 200:
                    errors += 1
                    continue
                cycle_ms.append((time.perf_counter() - began) * 1000)

        await asyncio.sleep(max(0.0, start_at - time.time()))
        cpu_before = os.times()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        cpu_after = os.times()
    return {
        "completed": len(cycle_ms),
        "errors": errors,
        "claim_ms": claim_ms,
        "cycle_ms": cycle_ms,
        "cpu_s": (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system),
    }


def _load_process(args: tuple[str, str, str, int, float, float], results: Any) -> None:
    results.put(asyncio.run(_load(*args)))


def _server_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drive(
    server: ServerProcess, codebase: str, processes: int, concurrency: int, seconds: float, tag: str
) -> dict[str, Any]:
    """Run the load processes against ``server`` for ``seconds``; the summed outcome."""
    assert server.process is not None
    start_at = time.time() + 2.0  # every process imports and connects first
    stop_at = start_at + seconds
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    workers = [
        ctx.Process(
            target=_load_process,
            args=((server.url, f"bench-{tag}-{i}", codebase, concurrency, start_at, stop_at), queue),
        )
        for i in range(processes)
    ]
    for process in workers:
        process.start()
    time.sleep(max(0.0, start_at - time.time()))
    server_cpu_before = _server_cpu_seconds(server.process.pid)
    outcomes = [queue.get(timeout=seconds + 60) for _ in workers]
    server_cpu = _server_cpu_seconds(server.process.pid) - server_cpu_before
    for process in workers:
        process.join(10)
    completed = sum(o["completed"] for o in outcomes)
    claims = [ms for o in outcomes for ms in o["claim_ms"]]
    cycles = [ms for o in outcomes for ms in o["cycle_ms"]]
    client_cpu = sum(o["cpu_s"] for o in outcomes)
    return {
        "seconds": seconds,
        "client_processes": processes,
        "concurrency_per_process": concurrency,
        "tasks_completed": completed,
        "errors": sum(o["errors"] for o in outcomes),
        "tasks_per_second": round(completed / seconds, 1),
        "requests_per_second": round(3 * completed / seconds, 1),
        "claim_ms_p50": round(_percentile(claims, 0.50), 2),
        "claim_ms_p99": round(_percentile(claims, 0.99), 2),
        "cycle_ms_p50": round(_percentile(cycles, 0.50), 2),
        "cycle_ms_mean": round(statistics.fmean(cycles), 2) if cycles else None,
        "client_cpu_seconds": round(client_cpu, 2),
        "client_cpu_ms_per_task": round(1000 * client_cpu / completed, 2) if completed else None,
        "server_cpu_seconds": round(server_cpu, 2),
        "server_cpu_ms_per_task": round(1000 * server_cpu / completed, 2) if completed else None,
    }


def run_backend(
    name: str, env: dict[str, str], seconds: float, processes: int, concurrency: int, idle_seconds: float
) -> dict[str, Any]:
    """Loaded run (throughput), then one client alone (latency without queueing)."""
    server = ServerProcess(env={**env, "A2A_LOG_LEVEL": "warning", "A2A_DB_POOL_SIZE": "20"})
    server.start()
    try:
        with httpx.Client(base_url=server.url) as http:
            http.post("/v1/agent/workers/register", json={"worker_id": "bench-owner"}).raise_for_status()
            answer = http.post("/v1/agent/codebases", json={"name": "bench", "path": "/bench"})
            codebase = answer.json()["codebase"]["id"]
        loaded = _drive(server, codebase, processes, concurrency, seconds, "loaded")
        alone = _drive(server, codebase, 1, 1, idle_seconds, "alone")
    finally:
        server.stop()
    return {"backend": name, "loaded": loaded, "single_client": alone}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per backend")
    parser.add_argument("--processes", type=int, default=4, help="load-generating processes")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent loops per process")
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="seconds of the single-client run")
    parser.add_argument("--backends", default="memory,redis,postgres")
    args = parser.parse_args()

    # Other work on the machine skews every figure: record how busy it was.
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at start: {load_at_start}", flush=True)
    redis_server = postgres_server = None
    redis_url = os.environ.get("REDIS_URL")
    admin_url = os.environ.get("DATABASE_URL")
    database = f"ctbench_{uuid.uuid4().hex[:8]}"
    results: list[dict[str, Any]] = []
    try:
        if not redis_url:
            redis_server = RedisServer().start()
            redis_url = redis_server.url
        if not admin_url:
            postgres_server = PostgresServer().start()
            admin_url = postgres_server.url
        database_url = create_database(admin_url, database)
        prefix = f"ctbench-{uuid.uuid4().hex[:6]}"
        common = {"A2A_REDIS_URL": redis_url, "A2A_REDIS_PREFIX": prefix}
        envs = {
            "memory": {**common, "A2A_STORAGE": "memory"},
            "redis": {**common, "A2A_STORAGE": "redis"},
            "postgres": {**common, "A2A_STORAGE": "postgres", "DATABASE_URL": database_url},
        }
        for name in args.backends.split(","):
            result = run_backend(
                name, envs[name], args.seconds, args.processes, args.concurrency, args.idle_seconds
            )
            results.append(result)
            for label, run in (("loaded", result["loaded"]), ("1 client", result["single_client"])):
                print(
                    f"{name:9s} {label:8s} {run['tasks_per_second']:7.1f} tasks/s  "
                    f"claim p50 {run['claim_ms_p50']:6.2f} ms  p99 {run['claim_ms_p99']:7.2f} ms  "
                    f"client CPU {run['client_cpu_ms_per_task']} ms/task  "
                    f"server CPU {run['server_cpu_ms_per_task']} ms/task  errors {run['errors']}",
                    flush=True,
                )
        drop_database(admin_url, database)
    finally:
        if postgres_server is not None:
            postgres_server.destroy()
        if redis_server is not None:
            redis_server.stop()

    report = {
        "benchmark": "server: create -> claim -> complete",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "max_rss_mib_bench": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "load_average_at_start": load_at_start,
        },
        "notes": (
            "One server process per backend, events published on Redis for every backend. Load from "
            "several processes with one httpx client each; client and server share the machine's cores. "
            "'loaded': processes x concurrency loops; 'single_client': one loop alone (latency without "
            "queueing). requests_per_second counts the three calls of each task."
        ),
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
