"""``make demo``: a server, a Redis when one is installed, three workers, a batch of tasks.

worker-1 serves the ``frontend`` codebase, worker-2 the ``backend`` codebase (both pinned: worker
affinity), worker-3 a global codebase. The batch has tasks for each; the demo shows their progress,
then what each worker did, the routing, and the server's ``GET /v1/agent/workers`` view. Everything
it starts is stopped at the end, on Ctrl-C too. Exit status 1 when a task did not complete.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import httpx

from codetether_contract.client import CodetetherClient
from codetether_contract.models import Task, TaskCreate, TaskStatus

BIN = Path(sys.executable).parent
EXAMPLE_AGENT = BIN / "codetether-example-agent"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _say(text: str = "") -> None:
    print(text, flush=True)


@dataclass
class Started:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


class Processes:
    """Everything the demo starts, stopped in reverse order (SIGTERM, then SIGKILL)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[Started] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Started:
        log = self.folder / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops them in order
            )
        started = Started(name, process, log)
        self.started.append(started)
        return started

    def stop_all(self) -> None:
        for item in reversed(self.started):
            if item.process.poll() is None:
                item.process.terminate()
        deadline = time.monotonic() + 20
        for item in reversed(self.started):
            try:
                item.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                item.process.kill()
                item.process.wait()


def _wait_http(url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with status {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready after {timeout:g}s")


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("redis-server exited")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError("redis-server did not open its port")


def start_stack(processes: Processes, folder: Path, use_redis: bool) -> tuple[str, str | None, list[Started]]:
    redis_url: str | None = None
    redis_bin = shutil.which("redis-server") if use_redis else None
    if redis_bin:
        port = _free_port()
        redis = processes.start(
            "redis",
            [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        )
        _wait_port(port, redis.process)
        redis_url = f"redis://127.0.0.1:{port}/0"
        _say(f"  redis     {redis_url} (reactive delivery)")
    else:
        _say("  redis     not installed: the workers poll every second")

    server_port = _free_port()
    server_env = {"A2A_HOST": "127.0.0.1", "A2A_PORT": str(server_port), "A2A_STORAGE": "memory"}
    if redis_url:
        server_env["A2A_REDIS_URL"] = redis_url
    server = processes.start("server", [sys.executable, "-m", "codetether_server"], server_env)
    server_url = f"http://127.0.0.1:{server_port}"
    _wait_http(f"{server_url}/readyz", server.process, "the server")
    _say(f"  server    {server_url} (in-memory storage)")

    layouts: dict[str, list[str]] = {
        "worker-1": ["--codebase", f"frontend:{folder / 'frontend'}"],
        "worker-2": ["--codebase", f"backend:{folder / 'backend'}"],
        "worker-3": ["--global-codebase", str(folder / "shared")],
    }
    workers: list[Started] = []
    for name, codebase_args in layouts.items():
        health_port = _free_port()
        argv = [
            sys.executable, "-m", "codetether_worker",
            "--server", server_url, "--name", name,
            "--agent-bin", str(EXAMPLE_AGENT),
            "--redis-url", redis_url or "none",
            "--poll-interval", "1", "--heartbeat-interval", "2", "--session-sync-interval", "2",
            "--max-concurrent-tasks", "2",
            "--health-host", "127.0.0.1", "--health-port", str(health_port),
            "--agent-storage", str(folder / f"{name}-agent-storage"),
            *codebase_args,
        ]  # fmt: skip
        started = processes.start(name, argv, {"A2A_AUTH_TOKEN": ""})
        workers.append(started)
        _wait_http(f"http://127.0.0.1:{health_port}/readyz", started.process, name)
        _say(f"  {name}  ready: {' '.join(codebase_args[1:])}")
    return server_url, redis_url, workers


def batch(codebase_ids: dict[str, str], size: int) -> list[TaskCreate]:
    """``size`` tasks per codebase; each writes a file, some take a moment so progress shows."""
    tasks: list[TaskCreate] = []
    for number in range(1, size + 1):
        tasks.append(
            TaskCreate(
                title=f"frontend component {number}",
                prompt=f"Create component {number}\n@sleep 0.{number % 4 + 2}\n"
                f"@write src/component_{number}.js export const c{number} = () => 'component {number}';",
                codebase_id=codebase_ids["frontend"],
            )
        )
        tasks.append(
            TaskCreate(
                title=f"backend endpoint {number}",
                prompt=f"Add endpoint {number}\n@sleep 0.{number % 3 + 3}\n"
                f"@write api/endpoint_{number}.py def handler_{number}(): return {number}",
                codebase_id=codebase_ids["backend"],
            )
        )
        tasks.append(
            TaskCreate(
                title=f"global report {number}",
                prompt=f"Collect report {number}\n@sleep 0.3\n@append reports.txt report {number} done",
                codebase_id="global",
            )
        )
    return tasks


async def _progress(client: CodetetherClient, ids: list[str], wait_seconds: float) -> list[Task]:
    deadline = time.monotonic() + wait_seconds
    interactive = sys.stdout.isatty()
    last_line = ""
    while True:
        tasks = [await client.get_task(task_id) for task_id in ids]
        counts = Counter(task.status.value for task in tasks)
        line = "  " + "  ".join(
            f"{status} {counts.get(status, 0):>2}" for status in ("pending", "running", "completed", "failed")
        )
        if line != last_line:
            print(("\r" + line) if interactive else line, end="" if interactive else "\n", flush=True)
            last_line = line
        if all(task.status.is_final for task in tasks) or time.monotonic() > deadline:
            if interactive:
                print(flush=True)
            return tasks
        await asyncio.sleep(0.3)


async def run_demo(processes: Processes, use_redis: bool, size: int, wait_seconds: float) -> int:
    folder = processes.folder
    main_task = asyncio.current_task()
    if main_task is not None:  # SIGTERM stops the demo as Ctrl-C does: everything started is stopped
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    for name in ("frontend", "backend", "shared"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    try:
        _say(f"Starting (work folder {folder})")
        server_url, _, _ = await asyncio.to_thread(start_stack, processes, folder, use_redis)
        async with CodetetherClient(server_url) as client:
            codebases = {cb.name: cb for cb in await client.list_codebases()}
            ids = {name: codebases[name].id for name in ("frontend", "backend")}
            requests = batch(ids, size)
            _say(f"\nSubmitting {len(requests)} tasks: {size} per codebase (frontend, backend, global)")
            created = [await client.create_task(request) for request in requests]
            tasks = await _progress(client, [t.id for t in created], wait_seconds)
            workers = await client.list_workers()
        rules = {
            cb.name: f"pinned to {cb.worker_id}"
            for cb in codebases.values()
            if cb.worker_id and not cb.is_global
        }
        serving_global = sorted(cb.worker_id or "?" for cb in codebases.values() if cb.is_global)
        rules["global"] = f"any worker with a global codebase: {', '.join(serving_global) or 'none'}"
        report(tasks, {cb.id: name for name, cb in codebases.items()}, rules, folder)
        _say("\nGET /v1/agent/workers")
        for worker in sorted(workers, key=lambda w: w.id):
            view = {
                "id": worker.id,
                "status": worker.status.value,
                "last_heartbeat": worker.last_heartbeat.isoformat(timespec="seconds"),
                "codebases": worker.codebases,
                "tasks_completed": worker.tasks_completed,
            }
            _say(f"  {json.dumps(view)}")
        unfinished = [t for t in tasks if t.status is not TaskStatus.COMPLETED]
        if unfinished:
            _say(f"\n{len(unfinished)} task(s) did not complete; logs in {folder}")
            for task in unfinished[:5]:
                _say(f"  {task.title}: {task.status.value} {task.error or ''}")
            return 1
        _say(f"\nAll {len(tasks)} tasks completed.")
        return 0
    finally:
        _say("Stopping everything the demo started...")
        await asyncio.to_thread(processes.stop_all)


def report(tasks: list[Task], codebases_by_id: dict[str, str], rules: dict[str, str], folder: Path) -> None:
    per_worker: dict[str, list[Task]] = defaultdict(list)
    routing: dict[str, Counter[str]] = defaultdict(Counter)
    for task in tasks:
        per_worker[task.worker_id or "(nobody)"].append(task)
        codebase = codebases_by_id.get(task.codebase_id, task.codebase_id)
        routing[codebase][task.worker_id or "(nobody)"] += 1

    _say("\nResults per worker")
    for worker_id in sorted(per_worker):
        done = per_worker[worker_id]
        statuses = Counter(t.status.value for t in done)
        _say(
            f"  {worker_id}: {len(done)} task(s) "
            + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        )
        for task in done[:3]:
            _say(
                f"      {task.title}: {(task.result or task.error or '').splitlines()[0] if (task.result or task.error) else ''}"
            )
        if len(done) > 3:
            _say(f"      ... and {len(done) - 3} more")

    _say("\nRouting (codebase: rule -> where its tasks ran)")
    for codebase in sorted(routing):
        spread = ", ".join(f"{worker} x{count}" for worker, count in sorted(routing[codebase].items()))
        _say(f"  {codebase:<9} ({rules.get(codebase, 'any worker')}) -> {spread}")

    written = sorted(
        str(p.relative_to(folder)) for p in folder.glob("*/**/*") if p.is_file() and "storage" not in str(p)
    )
    _say(f"\nFiles the agents wrote: {len(written)} (e.g. {', '.join(written[:3])})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="codetether-demo", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument("--tasks-per-codebase", type=int, default=4)
    parser.add_argument("--no-redis", action="store_true", help="do not start Redis: the workers poll")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the batch")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (codebases, logs)")
    args = parser.parse_args(argv)
    if not EXAMPLE_AGENT.exists():
        print(
            f"codetether-demo: {EXAMPLE_AGENT} is missing; install the project (pip install -e .)",
            file=sys.stderr,
        )
        return 2
    folder = Path(tempfile.mkdtemp(prefix="codetether-demo-"))
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    # A second Ctrl-C while stopping must not leave processes behind: ignore it until we are done.
    code = 130
    processes = Processes(folder)
    try:
        code = asyncio.run(run_demo(processes, not args.no_redis, args.tasks_per_codebase, args.timeout))
    except (KeyboardInterrupt, asyncio.CancelledError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _say("\nInterrupted.")
    except RuntimeError as exc:
        _say(f"\nThe demo could not start: {exc}; logs in {folder}")
        args.keep = True
        code = 1
    finally:
        processes.stop_all()  # already done unless the loop was torn down early; harmless twice
        if args.keep or code != 0:
            _say(f"Work folder kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
