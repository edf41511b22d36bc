"""Worker benchmark: dispatch latency (reactive vs polling), throughput with 1/4/16 workers, idle RSS.

    python tests/bench/bench_worker.py            (make bench runs it)

Everything on loopback: a real server process (in-memory storage, events on a throwaway Redis), real
worker processes, the example agent. Dispatch latency is task creation (the server's created_at) to
the agent process starting (the first line the example agent prints carries its start time). Prints
the numbers and writes tests/bench/results/worker.json. Never asserts on time. Bounded to ~3 minutes.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from codetether_contract.client import CodetetherClient  # noqa: E402
from codetether_contract.models import CodebaseCreate, Task, TaskCreate  # noqa: E402
from tests.support.server import ServerProcess  # noqa: E402
from tests.support.services import RedisServer, free_port  # noqa: E402

EXAMPLE_AGENT = str(Path(sys.executable).parent / "codetether-example-agent")
RESULTS = REPO / "tests" / "bench" / "results" / "worker.json"

REACTIVE_SAMPLES = 60
POLLING_SAMPLES = 24
POLLING_WINDOW_SECONDS = 36.0
POLL_INTERVAL = 5.0  # the seed's default
THROUGHPUT_TASKS = {1: 80, 4: 200, 16: 320}


class Worker:
    def __init__(
        self, root: Path, name: str, server_url: str, redis_url: str | None, poll: float, prefix: str
    ):
        self.name = name
        self.health_port = free_port()
        argv = [
            sys.executable, "-m", "codetether_worker",
            "--server", server_url, "--name", name,
            "--agent-bin", EXAMPLE_AGENT,
            "--redis-url", redis_url or "none", "--redis-prefix", prefix,
            "--poll-interval", str(poll), "--heartbeat-interval", "5",
            "--session-sync-interval", "0",
            "--health-host", "127.0.0.1", "--health-port", str(self.health_port),
            "--agent-storage", str(root / f"{name}-storage"),
            "--log-level", "warning",
        ]  # fmt: skip
        with (root / f"{name}.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def wait_ready(workers: list[Worker], within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2.0) as http:
        for worker in workers:
            while True:
                if worker.process.poll() is not None:
                    raise RuntimeError(f"{worker.name} exited with {worker.process.returncode}")
                try:
                    if (await http.get(f"http://127.0.0.1:{worker.health_port}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{worker.name} not ready")
                await asyncio.sleep(0.1)


async def wait_reactive(worker: Worker) -> None:
    async with httpx.AsyncClient(timeout=2.0) as http:
        for _ in range(300):
            text = (await http.get(f"http://127.0.0.1:{worker.health_port}/metrics")).text
            if 'codetether_worker_delivery_mode{mode="reactive"} 1.0' in text:
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{worker.name} never became reactive")


async def wait_final(client: CodetetherClient, ids: list[str], within: float = 120.0) -> list[Task]:
    deadline = time.monotonic() + within
    pending = set(ids)
    done: dict[str, Task] = {}
    while pending and time.monotonic() < deadline:
        for task_id in list(pending):
            task = await client.get_task(task_id)
            if task.status.is_final:
                done[task_id] = task
                pending.discard(task_id)
        if pending:
            await asyncio.sleep(0.2)
    if pending:
        raise RuntimeError(f"{len(pending)} task(s) did not finish")
    return [done[task_id] for task_id in ids]


async def agent_start(client: CodetetherClient, task_id: str) -> float:
    for line in (await client.get_output(task_id)).output.splitlines():
        if line.startswith('{"type": "step_start"'):
            return float(json.loads(line)["time"])
    raise RuntimeError(f"no start line in the output of {task_id}")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: list[float]) -> dict[str, float]:
    millis = [v * 1000 for v in values]
    return {
        "samples": len(millis),
        "p50_ms": round(percentile(millis, 0.50), 2),
        "p99_ms": round(percentile(millis, 0.99), 2),
        "mean_ms": round(statistics.fmean(millis), 2),
        "max_ms": round(max(millis), 2),
    }


async def shared_codebase(client: CodetetherClient, root: Path, name: str) -> str:
    folder = root / name
    folder.mkdir(exist_ok=True)
    return (await client.register_codebase(CodebaseCreate(name=name, path=str(folder)))).id


async def latencies(
    client: CodetetherClient, codebase_id: str, count: int, spread: float
) -> tuple[list[float], list[float]]:
    """Create ``count`` no-op tasks one at a time, ``spread`` seconds apart on average (random phase).

    Returns (created -> agent started, created -> claimed) per task.
    """
    ids = []
    for _ in range(count):
        task = await client.create_task(TaskCreate(title="lat", prompt="@noop", codebase_id=codebase_id))
        ids.append(task.id)
        await asyncio.sleep(random.uniform(0.5, 1.5) * spread)
    tasks = await wait_final(client, ids)
    to_agent = [await agent_start(client, t.id) - t.created_at.timestamp() for t in tasks]
    to_claim = [(t.started_at - t.created_at).total_seconds() for t in tasks if t.started_at]
    return to_agent, to_claim


async def bench_latency(root: Path, redis: RedisServer) -> dict[str, Any]:
    prefix = f"bench-{os.getpid()}"
    server = ServerProcess(
        env={"A2A_STORAGE": "memory", "A2A_REDIS_URL": redis.url, "A2A_REDIS_PREFIX": prefix}, log_dir=root
    ).start()
    workers: list[Worker] = []
    try:
        async with CodetetherClient(server.url) as client:
            reactive = Worker(root, "lat-reactive", server.url, redis.url, POLL_INTERVAL, prefix)
            polling = Worker(root, "lat-polling", server.url, None, POLL_INTERVAL, prefix)
            workers += [reactive, polling]
            await wait_ready(workers)
            await wait_reactive(reactive)
            # Each worker gets its own pinned codebase, so each mode is measured on its own tasks.
            reactive_cb = (
                await client.register_codebase(
                    CodebaseCreate(name="lat-r", path=str(root / "lat-r"), worker_id="lat-reactive")
                )
            ).id
            polling_cb = (
                await client.register_codebase(
                    CodebaseCreate(name="lat-p", path=str(root / "lat-p"), worker_id="lat-polling")
                )
            ).id
            (root / "lat-r").mkdir(exist_ok=True)
            (root / "lat-p").mkdir(exist_ok=True)
            await asyncio.sleep(1.0)  # the workers learn their codebases (event / next heartbeat)
            print(
                f"  dispatch latency: {REACTIVE_SAMPLES} reactive and {POLLING_SAMPLES} polling samples ...",
                flush=True,
            )
            reactive_values, polling_values = await asyncio.gather(
                latencies(client, reactive_cb, REACTIVE_SAMPLES, 0.25),
                latencies(client, polling_cb, POLLING_SAMPLES, POLLING_WINDOW_SECONDS / POLLING_SAMPLES),
            )
            idle_rss = {"reactive": round(reactive.rss_mib(), 1), "polling": round(polling.rss_mib(), 1)}
    finally:
        for worker in workers:
            worker.stop()
        server.stop()
    return {
        "reactive": summary_ms(reactive_values[0]),
        f"polling_every_{POLL_INTERVAL:g}s": summary_ms(polling_values[0]),
        "reactive_created_to_claimed": summary_ms(reactive_values[1]),
        f"polling_every_{POLL_INTERVAL:g}s_created_to_claimed": summary_ms(polling_values[1]),
        "rss_after_latency_runs_mib": idle_rss,
    }


async def bench_idle_rss(root: Path, redis: RedisServer) -> dict[str, float]:
    prefix = f"bench-idle-{os.getpid()}"
    server = ServerProcess(
        env={"A2A_STORAGE": "memory", "A2A_REDIS_URL": redis.url, "A2A_REDIS_PREFIX": prefix}, log_dir=root
    ).start()
    workers = [
        Worker(root, "idle-reactive", server.url, redis.url, POLL_INTERVAL, prefix),
        Worker(root, "idle-polling", server.url, None, POLL_INTERVAL, prefix),
    ]
    try:
        await wait_ready(workers)
        await asyncio.sleep(3.0)
        return {"reactive_mib": round(workers[0].rss_mib(), 1), "polling_mib": round(workers[1].rss_mib(), 1)}
    finally:
        for worker in workers:
            worker.stop()
        server.stop()


async def bench_throughput(root: Path, redis: RedisServer, count: int, tasks: int) -> dict[str, Any]:
    prefix = f"bench-tp{count}-{os.getpid()}"
    server = ServerProcess(
        env={"A2A_STORAGE": "memory", "A2A_REDIS_URL": redis.url, "A2A_REDIS_PREFIX": prefix}, log_dir=root
    ).start()
    workers: list[Worker] = []
    try:
        async with CodetetherClient(server.url) as client:
            workers = [
                Worker(root, f"tp{count}-{n}", server.url, redis.url, POLL_INTERVAL, prefix)
                for n in range(count)
            ]
            await wait_ready(workers)
            for worker in workers:
                await wait_reactive(worker)
            codebase_id = await shared_codebase(client, root, f"tp{count}")
            cpu_before = os.times()
            started = time.monotonic()
            ids = [
                (await client.create_task(TaskCreate(title="tp", prompt="@noop", codebase_id=codebase_id))).id
                for _ in range(tasks)
            ]
            done = await wait_final(client, ids, within=150)
            wall = time.monotonic() - started
            cpu_after = os.times()
    finally:
        for worker in workers:
            worker.stop()
        server.stop()
    first_created = min(t.created_at for t in done)
    last_completed = max(t.completed_at for t in done if t.completed_at)
    span = (last_completed - first_created).total_seconds()
    per_worker: dict[str, int] = {}
    for task in done:
        per_worker[task.worker_id or "?"] = per_worker.get(task.worker_id or "?", 0) + 1
    return {
        "workers": count,
        "tasks": tasks,
        "completed": sum(1 for t in done if t.status.value == "completed"),
        "tasks_per_second": round(tasks / span, 2),
        "span_seconds": round(span, 2),
        "bench_wall_seconds": round(wall, 2),
        "bench_client_cpu_seconds": round(
            (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system), 2
        ),
        "tasks_per_worker_min_max": [min(per_worker.values()), max(per_worker.values())],
    }


async def main() -> dict[str, Any]:
    began = time.monotonic()
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "parameters": {
            "poll_interval_seconds": POLL_INTERVAL,
            "agent": "codetether-example-agent @noop (a Python process per task)",
            "server": "codetether_server, in-memory storage, events on Redis",
        },
    }
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as scratch:
        root = Path(scratch)
        redis = RedisServer().start()
        try:
            print("idle worker RSS ...", flush=True)
            results["idle_rss"] = await bench_idle_rss(root, redis)
            print(f"  {results['idle_rss']}", flush=True)
            print("dispatch latency (task created -> agent started) ...", flush=True)
            results["dispatch_latency"] = await bench_latency(root, redis)
            for mode, numbers in results["dispatch_latency"].items():
                print(f"  {mode}: {numbers}", flush=True)
            results["throughput"] = []
            for count, tasks in THROUGHPUT_TASKS.items():
                print(f"throughput with {count} worker(s), {tasks} no-op tasks ...", flush=True)
                numbers = await bench_throughput(root, redis, count, tasks)
                results["throughput"].append(numbers)
                print(f"  {numbers}", flush=True)
        finally:
            redis.stop()
    results["bench_seconds"] = round(time.monotonic() - began, 1)
    return results


if __name__ == "__main__":
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    outcome = asyncio.run(main())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(outcome, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(REPO)} in {outcome['bench_seconds']}s")
