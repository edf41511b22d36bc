"""Real worker processes against a real server process, real Redis and real PostgreSQL.

Short intervals keep the suite quick: poll 0.5 s, heartbeat 1 s, server lease 3 s, sweep 0.5 s.
Every process a test starts is stopped by the fixtures, even when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from codetether_contract.client import CodetetherClient
from codetether_contract.models import Task, TaskCreate, TaskStatus
from tests.support.server import ServerProcess
from tests.support.services import free_port

T = TypeVar("T")

EXAMPLE_AGENT = str(Path(sys.executable).parent / "codetether-example-agent")
FAST_SERVER_ENV = {
    "A2A_STORAGE": "memory",
    "A2A_LEASE_SECONDS": "3",
    "A2A_LEASE_SWEEP_INTERVAL": "0.5",
    "A2A_WORKER_OFFLINE_SECONDS": "10",
}


async def wait_until(
    probe: Callable[[], Awaitable[T | None]], *, within: float = 30.0, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what} after {within}s (last: {last!r})")


@dataclass
class WorkerProcess:
    """``python -m codetether_worker`` as users run it; logs in the test's folder."""

    name: str
    server_url: str
    root: Path
    redis_url: str | None = None
    redis_prefix: str = "codetether"
    codebases: dict[str, Path] = field(default_factory=dict)
    global_codebase: Path | None = None
    poll_interval: float = 0.5
    max_concurrent_tasks: int = 1
    drain_timeout: float = 10.0
    task_timeout: float = 120.0
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    health_port: int = 0

    @property
    def storage(self) -> Path:
        return self.root / f"{self.name}-storage"

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.name}.log"

    def argv(self) -> list[str]:
        argv = [
            sys.executable, "-m", "codetether_worker",
            "--server", self.server_url,
            "--name", self.name,
            "--agent-bin", EXAMPLE_AGENT,
            "--poll-interval", str(self.poll_interval),
            "--heartbeat-interval", "1",
            "--session-sync-interval", "1",
            "--max-concurrent-tasks", str(self.max_concurrent_tasks),
            "--drain-timeout", str(self.drain_timeout),
            "--task-timeout", str(self.task_timeout),
            "--health-host", "127.0.0.1",
            "--health-port", str(self.health_port),
            "--agent-storage", str(self.storage),
            "--redis-url", self.redis_url or "none",
            "--redis-prefix", self.redis_prefix,
            "--log-level", "debug",
        ]  # fmt: skip
        for name, path in self.codebases.items():
            argv += ["--codebase", f"{name}:{path}"]
        if self.global_codebase is not None:
            argv += ["--global-codebase", str(self.global_codebase)]
        return argv + self.extra_args

    def start(self) -> WorkerProcess:
        self.health_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("A2A_")} | self.env
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(sig)

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def readyz(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                return (await client.get(f"{self.health_url}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_ready(self, within: float = 30.0) -> None:
        async def probe() -> bool:
            if not self.alive():
                raise AssertionError(f"worker {self.name} exited:\n{self.log()[-3000:]}")
            return await self.readyz()

        await wait_until(probe, within=within, what=f"worker {self.name} ready")

    async def metrics(self) -> dict[str, float]:
        """Samples of /metrics as ``name{labels}`` -> value."""
        async with httpx.AsyncClient(timeout=2.0) as client:
            text = (await client.get(f"{self.health_url}/metrics")).text
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples

    async def delivery_mode(self) -> str | None:
        try:
            samples = await self.metrics()
        except httpx.HTTPError:
            return None
        for mode in ("reactive", "polling"):
            if samples.get(f'codetether_worker_delivery_mode{{mode="{mode}"}}') == 1.0:
                return mode
        return None


class Fleet:
    """Starts workers for one test and stops all of them afterwards."""

    def __init__(self, server: ServerProcess, root: Path, redis_url: str | None, redis_prefix: str) -> None:
        self.server = server
        self.root = root
        self.redis_url = redis_url
        self.redis_prefix = redis_prefix
        self.workers: list[WorkerProcess] = []
        self.stray_agent_pids: list[int] = []

    def worker(self, name: str, *, reactive: bool | None = None, **options: Any) -> WorkerProcess:
        use_redis = (self.redis_url is not None) if reactive is None else reactive
        worker = WorkerProcess(
            name=name,
            server_url=self.server.url,
            root=self.root,
            redis_url=options.pop("redis_url", self.redis_url if use_redis else None),
            redis_prefix=self.redis_prefix,
            **options,
        )
        self.workers.append(worker)
        return worker.start()

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.signal(signal.SIGCONT)  # a paused worker would not act on SIGTERM
            worker.signal(signal.SIGTERM)
        for worker in self.workers:
            if worker.process is not None:
                try:
                    worker.process.wait(15)
                except subprocess.TimeoutExpired:
                    worker.kill()
        for pid in self.stray_agent_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


@dataclass
class Harness:
    server: ServerProcess
    client: CodetetherClient
    fleet: Fleet
    root: Path

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def task(self, prompt: str, codebase_id: str, title: str = "task", **fields: Any) -> Task:
        return await self.client.create_task(
            TaskCreate(title=title, prompt=prompt, codebase_id=codebase_id, **fields)
        )

    async def codebase_id(self, name: str, worker_id: str | None = None) -> str:
        async def probe() -> str | None:
            for codebase in await self.client.list_codebases():
                if codebase.name == name and (worker_id is None or codebase.worker_id == worker_id):
                    return codebase.id
            return None

        return await wait_until(probe, what=f"codebase {name} registered")

    async def finished(self, task_ids: list[str], within: float = 60.0) -> list[Task]:
        async def probe() -> list[Task] | None:
            tasks = [await self.client.get_task(task_id) for task_id in task_ids]
            return tasks if all(t.status.is_final for t in tasks) else None

        return await wait_until(probe, within=within, what=f"{len(task_ids)} task(s) finished")

    async def running_on(self, task_id: str, worker_id: str, within: float = 30.0) -> Task:
        async def probe() -> Task | None:
            task = await self.client.get_task(task_id)
            return task if task.status is TaskStatus.RUNNING and task.worker_id == worker_id else None

        return await wait_until(probe, within=within, what=f"task {task_id} running on {worker_id}")

    async def agent_pid(self, task_id: str) -> int:
        """The example agent's pid, from the first line it prints (streamed to the server)."""

        async def probe() -> int | None:
            for line in (await self.client.get_output(task_id)).output.splitlines():
                if line.startswith("{"):
                    event = json.loads(line)
                    if event.get("type") == "step_start":
                        return int(event["pid"])
            return None

        pid = await wait_until(probe, what=f"agent of {task_id} started")
        self.fleet.stray_agent_pids.append(pid)
        return pid


def start_server(env: dict[str, str], root: Path, port: int | None = None) -> ServerProcess:
    return ServerProcess(env={**FAST_SERVER_ENV, **env}, port=port, log_dir=root).start()


@pytest.fixture
def server_env(redis_base_url: str, redis_prefix: str) -> dict[str, str]:
    """In-memory storage; task events on the shared test Redis under this test's prefix."""
    return {"A2A_REDIS_URL": redis_base_url, "A2A_REDIS_PREFIX": redis_prefix}


@pytest.fixture
def server(server_env: dict[str, str], tmp_path: Path) -> Iterator[ServerProcess]:
    process = start_server(server_env, tmp_path)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def harness(
    server: ServerProcess, server_env: dict[str, str], tmp_path: Path
) -> AsyncIterator[Harness]:
    redis_url = server_env.get("A2A_REDIS_URL")
    fleet = Fleet(server, tmp_path, redis_url, server_env.get("A2A_REDIS_PREFIX", "codetether"))
    tokens = server_env.get("A2A_AUTH_TOKENS", "")
    client = CodetetherClient(server.url, retries=6, token=tokens.split(",")[0] or None)
    try:
        yield Harness(server=server, client=client, fleet=fleet, root=tmp_path)
    finally:
        await client.aclose()
        await asyncio.to_thread(fleet.stop_all)
